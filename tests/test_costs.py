"""Stage costs and work done once, on one real DAG run (dag.test) of a tiny checkpoint.

* every task's wall time, CPU time and peak RSS, split into parts that add up to its wall time,
  are in report.json (`stages`) and in each published model's manifest entry (`metrics.costs`);
* each model is run through the interpreter for its evaluation once per run: the float
  reference is not evaluated again by the int8 check, and the evaluation images are decoded
  once per run (by the export), not in every check;
* the Edge TPU analysis runs once per model;
* the drop and agreement the gate reports from the stored detections are the ones
  `evaluate(model, reference=float32)` computes by running both models.
"""
from __future__ import annotations

import time

import pytest

from models import make_checkpoint

FAST = {"calibration_count": 4, "benchmark_runs": 3, "benchmark_warmup": 1, "threads": 2,
        "gates.min_map": 0}   # tiny one-step checkpoints detect nothing: the floor off
TASKS = {"plan", "export", "jobs", "convert", "check", "edgetpu", "gate", "publish", "report"}


# --------------------------------------------------------------------------------------------
# the meter itself
# --------------------------------------------------------------------------------------------

def test_meter_parts_add_up_split_and_nest():
    from include.pipeline.costs import Meter

    meter = Meter("convert", "edgetpu/int8", ckpt_id="c1", precision="int8").start()
    with meter.part("download"):
        time.sleep(0.05)
    with meter.part("conversion"):
        with meter.part("inner"):   # nested: counted inside the outer part only
            sum(i * i for i in range(300_000))      # CPU time
        time.sleep(0.05)
    with meter.part("download"):    # the same name adds up
        time.sleep(0.02)
    meter.split("conversion", {"calibration": 0.03})
    record = meter.stop()
    parts = {p["name"]: p for p in record["parts"]}
    assert set(parts) == {"download", "conversion", "calibration"}
    assert parts["download"]["count"] == 2 and parts["download"]["wall_s"] >= 0.07
    assert parts["calibration"]["wall_s"] == pytest.approx(0.03, abs=1e-3)
    assert record["cpu_s"] > 0 and record["peak_rss_mb"] > 10
    assert sum(p["wall_s"] for p in record["parts"]) == pytest.approx(record["wall_s"], rel=0.1)
    assert record["ckpt_id"] == "c1" and record["precision"] == "int8" and not record["failed"]


def test_failed_task_still_records_its_costs(tmp_path):
    from include.pipeline import costs
    from include.store import open_store

    settings = {"run_id": "r1", "config": {"store_uri": str(tmp_path / "store")}}
    with pytest.raises(ValueError):
        with costs.task_meter("check", settings, {"ckpt_id": "c1", "precision": "int8",
                                                  "name": "cpu/int8"}) as meter:
            with meter.part("evaluation"):
                raise ValueError("boom")
    [record] = costs.load(open_store(str(tmp_path / "store")), "r1")
    assert record["failed"] and "ValueError: boom" in record["error"]
    assert record["name"] == "cpu/int8" and record["parts"][0]["name"] == "evaluation"


# --------------------------------------------------------------------------------------------
# one DAG run
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dag_run(tmp_path_factory, airflow_db):
    """One dag.test run (float32 + int8 of a tiny EdgeTPU checkpoint), counting every
    evaluation pass and every Edge TPU analysis."""
    from include.data.synth import synthesize
    from include.edgetpu import analyze
    from include.deploy.airflow_env import run_dag
    from include.quality import evaluate as ev
    from include.quality.runner import read_conversion_json

    root = tmp_path_factory.mktemp("costs")
    synthesize(root / "data", 10, size=96, seed=0, val_fraction=0.4)
    ckpt = make_checkpoint(root / "edgetpu-float", variant="edgetpu")
    passes, evaluations, analyses = [], [], []
    real_detect, real_evaluate, real_analyze = ev._detect_all, ev.evaluate, analyze.analyze_model

    def detect_all(model_path, *args, **kwargs):
        passes.append({"precision": (read_conversion_json(model_path) or {}).get("precision"),
                       "decoded_once": (args[6] if len(args) > 6 else kwargs.get("inputs"))
                       is not None})
        return real_detect(model_path, *args, **kwargs)

    def evaluate(model, data, **kwargs):
        evaluations.append(kwargs.get("reference"))
        return real_evaluate(model, data, **kwargs)

    def analyze_model(model, *args, **kwargs):
        analyses.append(str(model))
        return real_analyze(model, *args, **kwargs)

    store = root / "store"
    conf = {"checkpoints": [str(ckpt)], "data": str(root / "data"), "store": str(store),
            "precisions": ["float32", "int8"], "overrides": dict(FAST)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "_detect_all", detect_all)
        mp.setattr(ev, "evaluate", evaluate)
        mp.setattr(analyze, "analyze_model", analyze_model)
        result = run_dag(conf)
    return {"root": root, "store": store, "result": result, "passes": passes,
            "evaluations": evaluations, "analyses": analyses}


def _report(run):
    from include.store import open_store

    store = open_store(str(run["store"]))
    return store, store.read_json(f"runs/{run['result']['report']['run_id']}/report.json")


def test_report_and_manifest_carry_the_stage_costs(dag_run):
    store, report = _report(dag_run)
    stages = report["stages"]
    assert {s["stage"] for s in stages} == TASKS
    per_stage = {}
    for s in stages:
        per_stage[s["stage"]] = per_stage.get(s["stage"], 0) + 1
        assert s["wall_s"] >= 0 and s["cpu_s"] >= 0 and s["peak_rss_mb"] > 10, s
        assert s["parts"], s
        in_parts = sum(p["wall_s"] for p in s["parts"])
        # the parts add up to the task's wall time within 10% (and 20 ms for tiny tasks)
        assert abs(in_parts - s["wall_s"]) <= max(0.1 * s["wall_s"], 0.02), s
    assert per_stage["convert"] == per_stage["check"] == 2
    # the Edge TPU stage: only for the integer model, inside its check task
    [tpu] = [s for s in stages if s["stage"] == "edgetpu"]
    assert tpu["precision"] == "int8" and tpu["task_id"] == "model.check"
    names = {p["name"] for s in stages for p in s["parts"]}
    assert {"download", "tensorflow import", "export", "evaluation", "validation", "benchmark",
            "upload", "evaluation data", "analysis"} <= names
    assert "calibration and conversion" in {p["name"] for s in stages if s["stage"] == "convert"
                                            and s["precision"] == "int8" for p in s["parts"]}
    assert report["stage_totals"]["check"]["tasks"] == 2 and report["duration_s"] > 0
    assert "dag.test" in report["stages_note"]

    # the dashboard's runs page reads the same figures
    from include.dashboard.reader import StoreReader
    summary = StoreReader(store).run_summary(report["run_id"])
    assert len(summary["stages"]) == len(stages)
    assert all(r["wall_s"] is not None and r["peak_rss_mb"] is not None
               for r in summary["stages"])

    # the manifest: each model entry carries its own tasks' costs and the shared ones
    [pub] = dag_run["result"]["report"]["published"]
    manifest = store.read_json(f"mobiledet/{pub['version']}/manifest.json")
    entries = manifest["published"] + manifest["rejected"]
    assert len(entries) == 2
    for entry in entries:
        spent = entry["metrics"]["costs"]
        assert {"plan", "export", "convert", "check", "gate"} <= set(spent), spent
        assert spent["check"]["wall_s"] > 0 and "evaluation" in spent["check"]["parts"]
    int8 = next(e for e in entries if e["precision"] == "int8")
    assert "edgetpu" in int8["metrics"]["costs"]


def test_each_model_is_evaluated_once_and_images_decoded_once(dag_run):
    # one interpreter pass per model: the float reference only by its own check
    assert sorted(p["precision"] for p in dag_run["passes"]) == ["float32", "int8"]
    assert all(p["decoded_once"] for p in dag_run["passes"]), dag_run["passes"]
    assert dag_run["evaluations"] == [None, None]   # no check ran a reference model
    # the Edge TPU analysis: once, for the one integer EdgeTPU model
    assert len([a for a in dag_run["analyses"] if "mobiledet-edgetpu-" in a]) == 1
    store, report = _report(dag_run)
    run_id = report["run_id"]
    assert [k for k in store.list(f"runs/{run_id}/eval")] == [f"runs/{run_id}/eval/64.npz"]
    assert all(m["decoded_once"] for m in report["models"])


def test_drop_and_agreement_are_what_running_both_models_gives(dag_run, tmp_path):
    from include.quality.evaluate import evaluate
    from include.store import fetch

    store, report = _report(dag_run)
    int8 = next(m for m in report["models"] if m["precision"] == "int8")
    float32 = next(m for m in report["models"] if m["precision"] == "float32")
    paths = {}
    for m in (int8, float32):
        folder = tmp_path / m["precision"]
        paths[m["precision"]] = fetch(m["model_uri"], str(folder / "model.tflite"))
        fetch(m["conversion_uri"], str(folder / "conversion.json"))
    direct = evaluate(paths["int8"], dag_run["root"] / "data", reference=paths["float32"],
                      threads=2, show_progress=False)
    assert int8["drop"] == direct["drop"]
    for k in ("AP", "AP50", "AP75", "AR100", "reference_boxes", "score_threshold"):
        assert int8["agreement"][k] == pytest.approx(direct["agreement"][k], abs=1e-6), k
    # the gate's own decision still uses the float32 check's metric
    drop_check = next(c for c in int8["decision"]["checks"] if c["name"] == "map_drop")
    assert drop_check["value"] == pytest.approx(float32["metrics"]["AP50"]
                                                - int8["metrics"]["AP50"], abs=1e-3)
    # the published metrics.json holds the comparison, as when the check ran the reference
    doc = store.read_json(store.key_of(int8["metrics_uri"]))
    assert doc["evaluation"]["drop"] == direct["drop"]
    assert doc["evaluation"]["reference"]["metrics"] == direct["reference"]["metrics"]
