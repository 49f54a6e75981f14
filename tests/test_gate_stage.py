"""The gate step on what the real steps return, not on hand-made keys.

A tiny EdgeTPU checkpoint goes through the real plan, export, convert, check (pycocotools, Great
Expectations, LiteRT) and edgetpu stages; the gate then reads those outputs. Each scenario
asserts the reason a user reads: a passing model, a model that breaks its output contract, an
Edge TPU compiler that fails, one that times out, a task that failed, and the no-regression
baseline when the earlier release is not comparable.
"""
from __future__ import annotations

import json
import stat
import sys
import textwrap

import pytest

from models import make_tiny_inputs
from plans import changed, with_checkpoint, with_config

FAST = {"calibration_count": 4, "benchmark_runs": 2, "benchmark_warmup": 0, "threads": 1,
        "gates.min_map": 0}   # tiny one-step checkpoints detect nothing: the floor off


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from include.pipeline.steps.check import check
    from include.pipeline.steps.convert import convert
    from include.pipeline.steps.export import export
    from include.pipeline.steps.plan import jobs_of, plan

    root, ckpt = make_tiny_inputs(tmp_path_factory.mktemp("gate-stage"), images=8,
                                  val_fraction=0.5)
    settings = plan({"checkpoints": [str(ckpt)], "data": str(root / "data"),
                     "store": str(root / "store"), "precisions": ["float32", "int8"],
                     "overrides": FAST}, "gate-run")
    [c] = settings.checkpoints
    exported = export(settings, c)
    jobs = [j.to_dict() for j in jobs_of(settings, [exported])]
    models = {j["precision"]: convert(settings, j).to_dict() for j in jobs}
    checks = {p: check(settings, m) for p, m in models.items()}
    return root, settings, jobs, models, checks


def _compiler(tmp_path, monkeypatch, body: str):
    exe = tmp_path / "edgetpu_compiler"
    exe.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("EDGETPU_COMPILER", str(exe))


def _decide(settings, jobs, checks, edgetpu):
    from include.pipeline.steps.gate import gate
    return {d["precision"]: d for d in gate(settings, jobs, checks, edgetpu)}


def test_passing_models_and_the_prediction_deciding_without_a_compiler(converted, monkeypatch):
    from include.pipeline.steps.edgetpu import edgetpu

    monkeypatch.delenv("EDGETPU_COMPILER", raising=False)
    _, settings, jobs, models, checks = converted
    tpu = {p: edgetpu(settings, m) for p, m in models.items()}
    assert tpu["int8"]["status"] == "not_installed"
    assert tpu["int8"]["prediction"]["ops_total"] > 100
    out = _decide(settings, jobs, list(checks.values()), list(tpu.values()))
    assert out["float32"]["passed"], out["float32"]["decision"]["reasons"]
    mapping = next(c for c in out["int8"]["decision"]["checks"] if c["name"] == "edgetpu_mapping")
    assert "offline prediction" in mapping["detail"] and "not installed" in mapping["detail"]
    regression = next(c for c in out["float32"]["decision"]["checks"] if c["name"] == "regression")
    assert regression["status"] == "no_baseline" and "first release" in regression["detail"]


def test_calibrated_jobs_start_first_and_decisions_read_in_plan_order(converted):
    """The workers start mapped jobs in map-index order: the int8 calibration (the long
    conversion) comes first; the decisions still list the models as the plan does."""
    from include.pipeline.steps.gate import gate

    _, settings, jobs, _, checks = converted
    assert [j["precision"] for j in jobs] == ["int8", "float32"]
    decided = gate(settings, jobs, list(checks.values()), [])
    assert [d["precision"] for d in decided] == ["float32", "int8"]


def test_contract_breaking_model_names_the_broken_expectation(converted):
    """A recipe that promised a uint8 input (its conversion.json says int8) but produced a
    float model: the real contract check fails, and the gate's reason says which expectation
    and what was found, not just 'validation failed'."""
    from include.pipeline.steps.check import check
    from include.store import open_store

    _, settings, jobs, models, checks = converted
    store = open_store(settings.config.store_uri)
    float_model = models["float32"]
    conv = store.read_json(float_model["conversion_uri"].split("/store/", 1)[1])
    lie = store.write_json("runs/gate-run/lying/conversion.json", dict(conv, precision="int8"))
    broken = check(settings, dict(float_model, conversion_uri=lie))
    assert not broken["contract_passed"]
    out = _decide(settings, jobs, [broken, checks["int8"]], [])
    [reason] = [r for r in out["float32"]["decision"]["reasons"] if "contract" in r]
    assert "input_dtype" in reason and "float32" in reason, reason


def test_compiler_failure_and_timeout_reach_the_reason(converted, tmp_path, monkeypatch):
    from include.pipeline.steps.edgetpu import edgetpu

    _, settings, jobs, models, checks = converted
    _compiler(tmp_path, monkeypatch, """
        import sys
        print("Edge TPU Compiler version 16.0.384591198")
        print("ERROR: Didn't find op for builtin opcode 'QUANTIZE' version '3'", file=sys.stderr)
        sys.exit(1)
    """)
    failed = edgetpu(settings, models["int8"])
    assert failed["status"] == "failed"
    out = _decide(settings, jobs, list(checks.values()), [failed])
    reason = " ".join(out["int8"]["decision"]["reasons"])
    assert "compiler failed" in reason and "Didn't find op for builtin opcode" in reason
    assert "no message" not in reason and "unknown status" not in reason

    _compiler(tmp_path, monkeypatch, """
        import time
        time.sleep(60)
    """)
    slow = with_config(settings, edgetpu_timeout_s=1.0)
    timed_out = edgetpu(slow, models["int8"])
    assert timed_out["status"] == "timeout"
    out = _decide(settings, jobs, list(checks.values()), [timed_out])
    reason = " ".join(out["int8"]["decision"]["reasons"])
    assert "timed out" in reason and "ran past 1 s" in reason


def test_failed_task_rejects_only_its_model_with_the_recorded_error(converted):
    from include.errors import DataError
    from include.pipeline.steps.failures import record_failure
    from include.pipeline.steps.report import result_rows

    _, settings, jobs, models, checks = converted
    int8 = next(j for j in jobs if j["precision"] == "int8")
    record_failure(settings, "check", int8,
                          DataError("image 7.jpg will not decode", where="data/val/7.jpg"))
    out = _decide(settings, jobs, [checks["float32"]], [])
    assert out["float32"]["passed"]
    assert not out["int8"]["passed"] and out["int8"]["failed"]
    assert out["int8"]["decision"]["reasons"] == [
        "the check task failed: DataError: data/val/7.jpg: image 7.jpg will not decode"]
    rows = result_rows(list(out.values()), "AP50")
    assert rows[1][-1].startswith("FAIL: the check task failed")


def test_edgetpu_stage_runs_in_the_check_task_and_its_failure_rejects_that_model(
        converted, monkeypatch):
    """The DAG's check task runs the Edge TPU stage for integer EdgeTPU models only; when that
    stage crashes the task fails, and the gate names the Edge TPU stage, not the checks."""
    from include.pipeline.steps import check, edgetpu
    from operators.pipeline import QualityCheckOperator

    _, settings, jobs, models, checks = converted
    settings = changed(settings, run_id="gate-run-tpu-crash")
    ran = []
    monkeypatch.setattr(check, "check", lambda s, m: checks[m.precision])

    def crash(s, m):
        ran.append(m.precision)
        raise RuntimeError("compiler wrapper crashed")

    monkeypatch.setattr(edgetpu, "edgetpu", crash)
    out = QualityCheckOperator(task_id="c1", plan=settings.to_dict(),
                               model=models["float32"]).run({})
    assert out["edgetpu"]["status"] == "not_applicable" and ran == []
    assert out["metrics"] == checks["float32"]["metrics"]
    with pytest.raises(RuntimeError, match="crashed"):
        QualityCheckOperator(task_id="c2", plan=settings.to_dict(),
                             model=models["int8"]).run({})
    assert ran == ["int8"]
    decided = _decide(settings, jobs, [out], [out["edgetpu"]])
    [reason] = decided["int8"]["decision"]["reasons"]
    assert reason.startswith("the Edge TPU stage of the check task failed: ") and \
        "compiler wrapper crashed" in reason, reason
    assert decided["float32"]["passed"]


def test_baseline_from_another_dataset_or_source_kind_is_not_comparable(converted):
    from include.pipeline.steps.publish import publish_run
    from include.store import comparable_baseline, open_store

    _, settings, jobs, models, checks = converted
    store = open_store(settings.config.store_uri)
    model_name = settings.config.model_name
    decided = _decide(settings, jobs, list(checks.values()), [])
    # an earlier release of the same variant/precision, evaluated on other data, from QAT
    other = with_checkpoint(changed(settings, run_id="other-run",
                                    evaluation_data_fingerprint="sha256:" + "9" * 64),
                            fingerprint="f" * 64, qat=True, created="2026-01-01T00:00:00Z")
    [pub] = publish_run(other, [dict(d, passed=True) for d in decided.values()
                                if d["precision"] == "float32"])
    assert pub["status"] == "published"
    found, why = comparable_baseline(store, model_name, "edgetpu", "float32", qat=False,
                                     data_fingerprint=settings.evaluation_data_fingerprint)
    assert found is None
    assert "QAT checkpoint" in why and "another dataset" in why and pub["version"] in why
    out = _decide(settings, jobs, list(checks.values()), [])
    regression = next(c for c in out["float32"]["decision"]["checks"] if c["name"] == "regression")
    assert regression["status"] == "no_baseline" and "no comparable baseline" in regression["detail"]
    # the same kind on the same dataset is the baseline
    same = with_checkpoint(changed(settings, run_id="same-run"), fingerprint="e" * 64,
                           created="2026-02-01T00:00:00Z")
    publish_run(same, [dict(d, passed=True) for d in decided.values()
                       if d["precision"] == "float32"])
    found, why = comparable_baseline(store, model_name, "edgetpu", "float32", qat=False,
                                     data_fingerprint=settings.evaluation_data_fingerprint)
    assert found and found["version"].endswith("eeeeeeee")
    json.dumps(out["float32"])


def test_regate_publishes_the_search_choice_only_after_its_own_gate(converted):
    """The search's choice is checked, analysed and gated like any model before it replaces
    the rejected int8 model; a search that found nothing keeps the rejection."""
    from include.pipeline.steps.edgetpu import edgetpu
    from include.pipeline.steps.gate import gate
    from include.pipeline.steps.plan import as_job
    from include.pipeline.steps.search import decide, merge, search_jobs

    _, settings, jobs, models, checks = converted
    strict = with_config(settings, search_budget=2, gates={"min_map": 0.99})
    tpu = [edgetpu(settings, models["int8"])]
    decided = gate(strict, jobs, list(checks.values()), tpu)
    assert [j.precision for j in search_jobs(strict, decided)] == ["int8"]
    job = next(j for j in search_jobs(strict, decided)).to_dict()
    summary = {"passed": True, "chosen": "per-tensor", "candidates": [
        {"candidate": "plain", "status": "fail", "drop": 0.2},
        {"candidate": "per-tensor", "status": "pass", "drop": 0.01}]}
    # the chosen model (here the int8 model itself) passes the default gates: published
    lenient = with_config(strict, gates=settings.config.gates.to_dict())
    # the search's model lives in its own folder (the search sets `key`), and checking it
    # writes there: the rejected int8 model's metrics stay as they were
    job_key = settings.model_key(as_job(job))
    key = job_key + "-search"
    original = settings.store.get_bytes(f"{job_key}/metrics.json")
    found = {"job": job, "search": summary,
             "model": dict(models["int8"], recipe="per-tensor", key=key)}
    final = {d["precision"]: d for d in merge(lenient, decided, [found])}
    assert final["int8"]["passed"] and final["int8"]["search"]["chosen"] == "per-tensor"
    assert final["int8"]["model_uri"] == models["int8"]["model_uri"]
    assert f"/{key}/metrics.json" in final["int8"]["metrics_uri"]
    assert settings.store.get_bytes(f"{job_key}/metrics.json") == original
    assert final["float32"] is next(d for d in decided if d["precision"] == "float32")
    # under the strict gates the choice fails its own gate: rejected, and said so
    final = {d["precision"]: d for d in merge(strict, decided, [found])}
    assert not final["int8"]["passed"]
    assert "recipe search chose 'per-tensor'" in final["int8"]["decision"]["reasons"][-1]
    # no search result at all (the task failed): rejected, the reason says so
    final = {d["precision"]: d for d in merge(strict, decided, [])}
    assert "did not finish" in final["int8"]["decision"]["reasons"][-1]
    # the DAG's search task decided its model already (decide, in parallel with the other
    # searches): the merge in the publish task takes that decision as it is
    decided_there = dict(decide(lenient, decided, found), by="search task")
    final = {d["precision"]: d for d in merge(
        strict, decided, [dict(found, decision=decided_there)])}
    assert final["int8"] is decided_there and final["int8"]["passed"]


def test_integer_model_is_benchmarked_against_its_float32_model(converted):
    """The check benchmarks an integer model together with the run's float32 model of the
    same checkpoint: its ratio and the delegate coverage reach the gate (reported, not gated,
    for the EdgeTPU variant)."""
    _, settings, jobs, models, checks = converted
    ratio = checks["int8"]["latency_ratio_to_float32"]
    assert isinstance(ratio, float) and ratio > 0
    assert checks["float32"]["latency_ratio_to_float32"] is None
    for c in checks.values():
        cov = c["delegate"]
        assert cov["ops_total"] >= cov["ops_delegated"] > 0 and cov["partitions"] >= 1
    from include.pipeline.steps.edgetpu import edgetpu

    # a run id of its own: another test records a failed int8 check under the shared one
    run = changed(settings, run_id="gate-run-ratio")
    out = _decide(run, jobs, list(checks.values()), [edgetpu(settings, models["int8"])])
    lr = next(c for c in out["int8"]["decision"]["checks"] if c["name"] == "latency_ratio")
    assert lr["status"] == "reported" and lr["value"] == round(ratio, 6)
    fp = next(c for c in out["float32"]["decision"]["checks"] if c["name"] == "latency_ratio")
    assert fp["status"] == "not_applicable"
