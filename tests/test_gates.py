"""Release gates: every check passing and failing, with its numbers recorded."""
from __future__ import annotations

import json

import pytest

from include.errors import ConfigError

from include.config import GateConfig, PipelineConfig
from include.gates import CHECK_NAMES, GateDecision, evaluate_gates


def entry(**kw):
    base = {"variant": "cpu", "precision": "int8", "map": 0.40, "reference_map": 0.43,
            "contract_passed": True, "latency_ms": 12.5, "edgetpu": None}
    base.update(kw)
    return base


def compiled(unmapped, on_cpu=1, total=267):
    return {"status": "compiled", "ops_total": total, "ops_on_tpu": total - on_cpu,
            "ops_on_cpu": on_cpu, "unmapped_ops": unmapped}


CFG = PipelineConfig()


def _json_roundtrip(decision: GateDecision) -> dict:
    data = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert GateDecision.from_dict(data) == decision
    return data


def test_all_pass_and_every_check_is_recorded():
    d = evaluate_gates(entry(), CFG, None)
    assert d.passed and d.reasons == []
    assert [c.name for c in d.checks] == list(CHECK_NAMES)
    data = _json_roundtrip(d)
    assert data["metric"] == "AP50" and data["map"] == 0.4
    drop = d.check("map_drop")
    assert (drop.value, drop.threshold, drop.status) == (0.03, 0.05, "pass")
    assert d.check("min_map").status == "pass"   # the default floor 0.01 is on
    assert d.check("latency").status == "off" and d.check("latency").value == 12.5
    assert d.check("edgetpu_mapping").status == "not_applicable"
    assert d.check("regression").status == "no_baseline"
    assert "first release" in d.check("regression").detail
    assert d.summary() == "cpu/int8: PASS"


def test_map_drop_fails_with_numbers():
    d = evaluate_gates(entry(map=0.30), CFG)
    c = d.check("map_drop")
    assert not d.passed and not c.passed
    assert (c.value, c.threshold, c.status) == (0.13, 0.05, "fail")
    assert "0.300" in c.detail and "0.430" in c.detail
    assert len(d.reasons) == 1 and "float32 reference" in d.reasons[0]
    assert "FAIL" in d.summary()


def test_map_drop_limit_per_precision():
    # float16: 0.01 allowed; float32 is the reference itself (limit 0.0)
    assert evaluate_gates(entry(precision="float16", map=0.425), CFG).passed
    assert not evaluate_gates(entry(precision="float16", map=0.41), CFG).passed
    ref = evaluate_gates(entry(precision="float32", map=0.43, reference_map=None), CFG)
    assert ref.passed and ref.check("map_drop").value == 0.0
    assert ref.check("map_drop").threshold == 0.0
    # exactly at the limit passes despite float rounding
    assert evaluate_gates(entry(precision="dynamic", map=0.41, reference_map=0.43), CFG).passed


def test_map_missing_or_reference_missing_fails():
    d = evaluate_gates(entry(map=None), CFG)
    assert not d.passed and d.map is None
    assert "no AP50 was measured" in d.check("map_drop").detail
    d = evaluate_gates(entry(map=float("nan")), CFG)
    assert not d.passed and d.map is None
    _json_roundtrip(d)
    d = evaluate_gates(entry(reference_map=None), CFG)
    assert not d.check("map_drop").passed and "reference" in d.check("map_drop").detail


def test_a_model_that_detects_nothing_is_rejected_by_default():
    """AP50 0.000 (an untrained or broken checkpoint) used to pass with min_map 0 and become
    `latest`; the default floor rejects it with a reason a person understands, and
    gates.min_map: 0 turns the floor off."""
    d = evaluate_gates(entry(map=0.0, reference_map=0.0), GateConfig(), None)
    assert not d.passed and d.check("min_map").status == "fail"
    assert any("detects nothing" in r and "untrained or broken checkpoint" in r
               for r in d.reasons), d.reasons
    assert evaluate_gates(entry(map=0.0, reference_map=0.0), GateConfig(min_map=0),
                          None).check("min_map").status == "off"


def test_min_map_pass_and_fail():
    gates = GateConfig(min_map=0.35)
    ok = evaluate_gates(entry(), gates).check("min_map")
    assert (ok.passed, ok.value, ok.threshold, ok.status) == (True, 0.4, 0.35, "pass")
    d = evaluate_gates(entry(map=0.39, reference_map=0.40), GateConfig(min_map=0.45))
    bad = d.check("min_map")
    assert (bad.passed, bad.value, bad.threshold) == (False, 0.39, 0.45)
    assert not d.passed and any("below the minimum" in r for r in d.reasons)


def test_contract_pass_fail_missing_and_off():
    assert evaluate_gates(entry(), CFG).check("contract").passed
    d = evaluate_gates(entry(contract_passed=False,
                             contract_failures=["boxes outside [0, 1]"]), CFG)
    c = d.check("contract")
    assert not d.passed and (c.value, c.threshold, c.status) == (False, True, "fail")
    assert "boxes outside [0, 1]" in c.detail
    assert not evaluate_gates(entry(contract_passed=None), CFG).check("contract").passed
    off = evaluate_gates(entry(contract_passed=False), GateConfig(require_contract=False))
    assert off.passed and off.check("contract").status == "off"


def test_latency_pass_fail_missing():
    gates = GateConfig(max_latency_ms=20)
    ok = evaluate_gates(entry(latency_ms=19.9), gates).check("latency")
    assert (ok.passed, ok.value, ok.threshold) == (True, 19.9, 20.0)
    d = evaluate_gates(entry(latency_ms=31.25), gates)
    bad = d.check("latency")
    assert not d.passed and (bad.value, bad.threshold, bad.status) == (31.25, 20.0, "fail")
    assert "31.25 ms > limit 20.00 ms" in bad.detail
    assert not evaluate_gates(entry(latency_ms=None), gates).check("latency").passed


def test_edgetpu_only_postprocess_on_cpu_passes():
    tpu = compiled([{"op": "CUSTOM", "count": 1, "reason": "unsupported data type"}])
    d = evaluate_gates(entry(variant="edgetpu", edgetpu=tpu), CFG)
    c = d.check("edgetpu_mapping")
    assert d.passed and (c.value, c.threshold, c.status) == (0, 0, "pass")
    assert "266/267" in c.detail
    # names as plain strings and the TFLite op name work too
    tpu = compiled(["TFLite_Detection_PostProcess"])
    assert evaluate_gates(entry(variant="edgetpu", edgetpu=tpu), CFG).passed


def test_edgetpu_unmapped_ops_fail_with_names_and_counts():
    tpu = compiled([{"op": "CUSTOM", "count": 1}, {"op": "DEQUANTIZE", "count": 2},
                    {"name": "HARD_SWISH", "count": 3}], on_cpu=6)
    d = evaluate_gates(entry(variant="edgetpu", edgetpu=tpu), CFG)
    c = d.check("edgetpu_mapping")
    assert not d.passed and (c.value, c.threshold, c.status) == (5, 0, "fail")
    assert "DEQUANTIZE" in c.detail and "HARD_SWISH" in c.detail
    assert any(r.startswith("Edge TPU mapping") for r in d.reasons)
    # counts only (no op list): the post-process op is the one expected on the CPU
    counts_only = dict(tpu, unmapped_ops=None)
    assert evaluate_gates(entry(edgetpu=counts_only), CFG).check("edgetpu_mapping").value == 5
    # not required: recorded, does not fail
    off = evaluate_gates(entry(edgetpu=tpu), GateConfig(require_edgetpu_mapped=False))
    assert off.passed and off.check("edgetpu_mapping").status == "off"
    assert off.check("edgetpu_mapping").value == 5


def test_edgetpu_without_compiler_the_prediction_decides():
    good = {"ops_total": 127, "ops_on_tpu": 126, "ops_on_cpu": 1,
            "unmapped_ops": [{"op": "CUSTOM", "count": 1}]}
    bad = {"ops_total": 127, "ops_on_tpu": 124, "ops_on_cpu": 3,
           "unmapped_ops": [{"op": "CUSTOM", "count": 1}, {"op": "DEQUANTIZE", "count": 2}]}
    # auto (the default): no compiler here, so the offline prediction decides, and says so
    d = evaluate_gates(entry(variant="edgetpu", edgetpu={"status": "not_installed",
                                                         "prediction": good}), CFG)
    c = d.check("edgetpu_mapping")
    assert d.passed and c.status == "pass" and "126/127" in c.detail
    assert "offline prediction" in c.detail and "not installed" in c.detail
    d = evaluate_gates(entry(variant="edgetpu", edgetpu={"status": "not_installed",
                                                         "prediction": bad}), CFG)
    c = d.check("edgetpu_mapping")
    assert not d.passed and c.value == 2 and "DEQUANTIZE" in c.detail
    assert "offline prediction" in d.reasons[0]
    # without a prediction there is nothing to decide on: fail, never a silent pass
    assert not evaluate_gates(entry(edgetpu={"status": "not_installed"}), CFG).passed
    # prediction: decides even where the compiler ran
    compiled_ok = dict(compiled([{"op": "CUSTOM", "count": 1}]), prediction=bad)
    assert evaluate_gates(entry(edgetpu=compiled_ok), CFG).passed
    pred = evaluate_gates(entry(edgetpu=compiled_ok), GateConfig(edgetpu="prediction"))
    assert not pred.passed and "gates.edgetpu is 'prediction'" in pred.reasons[0]
    # compiler: a missing compiler fails (require_edgetpu_compiler is the old spelling)
    for strict in (GateConfig(edgetpu="compiler"), GateConfig(require_edgetpu_compiler=True)):
        d = evaluate_gates(entry(edgetpu={"status": "not_installed", "prediction": good}), strict)
        c = d.check("edgetpu_mapping")
        assert not d.passed and c.status == "not_installed" and "'compiler'" in c.detail
    # off
    off = evaluate_gates(entry(edgetpu={"status": "not_installed", "prediction": bad}),
                         GateConfig(edgetpu="off"))
    assert off.passed and off.check("edgetpu_mapping").status == "off"
    with pytest.raises(ConfigError, match="gates.edgetpu"):
        GateConfig(edgetpu="sometimes")


def test_edgetpu_timeout_and_compiler_message_reach_the_reason():
    msg = "the Edge TPU compiler ran past 180 s on model.tflite and was stopped"
    d = evaluate_gates(entry(edgetpu={"status": "timeout", "message": msg}), CFG)
    assert not d.passed and "timed out" in d.reasons[0] and msg in d.reasons[0]
    d = evaluate_gates(entry(edgetpu={"status": "failed", "message": "exit code 1: boom"}), CFG)
    assert not d.passed and "exit code 1: boom" in d.reasons[0]


def test_edgetpu_failed_and_skipped():
    failed = {"status": "failed", "error": "Model not quantized"}
    d = evaluate_gates(entry(edgetpu=failed), CFG)
    assert not d.passed and "Model not quantized" in d.check("edgetpu_mapping").detail
    skipped = {"status": "skipped", "reason": "float32 is not compiled for the Edge TPU"}
    d = evaluate_gates(entry(edgetpu=skipped), CFG)
    assert d.passed and d.check("edgetpu_mapping").status == "skipped"
    d = evaluate_gates(entry(edgetpu={"status": "exploded"}), CFG)
    assert not d.passed and "unknown Edge TPU status" in d.check("edgetpu_mapping").detail


def test_regression_against_last_release():
    base = {"version": "v20261101T000000Z-aaaaaaaa", "metric": "AP50", "map": 0.41}
    ok = evaluate_gates(entry(map=0.40), CFG, base).check("regression")
    assert (ok.passed, ok.value, ok.threshold, ok.status) == (True, 0.01, 0.02, "pass")
    assert "v20261101T000000Z-aaaaaaaa" in ok.detail
    d = evaluate_gates(entry(map=0.40), CFG, dict(base, map=0.45))
    bad = d.check("regression")
    assert not d.passed and (bad.value, bad.threshold, bad.status) == (0.05, 0.02, "fail")
    assert any("last release" in r for r in d.reasons)
    # a baseline measured with another metric is not compared
    other = evaluate_gates(entry(), CFG, dict(base, metric="AP", map=0.9)).check("regression")
    assert other.passed and other.status == "not_comparable"
    # a tighter or looser tolerance from the config
    assert evaluate_gates(entry(map=0.40), GateConfig(regression_tolerance=0.06),
                          dict(base, map=0.45)).passed


def test_several_failures_give_several_reasons():
    d = evaluate_gates(entry(map=0.2, contract_passed=False, latency_ms=99),
                       GateConfig(max_latency_ms=50, min_map=0.3),
                       {"version": "v1", "metric": "AP50", "map": 0.42})
    failed = [c.name for c in d.checks if not c.passed]
    assert failed == ["map_drop", "min_map", "contract", "latency", "regression"]
    assert len(d.reasons) == 5
    _json_roundtrip(d)


def test_numpy_values_become_plain_floats():
    np = pytest.importorskip("numpy")
    d = evaluate_gates(entry(map=np.float32(0.4), reference_map=np.float64(0.43),
                             latency_ms=np.float32(10.0)), GateConfig(max_latency_ms=20))
    data = _json_roundtrip(d)
    assert isinstance(data["map"], float) and data["passed"]


def test_integer_model_slower_than_float32_on_cpu_is_rejected_with_the_ratio():
    from include.gates import latency_ratio_check

    d = evaluate_gates(entry(latency_ratio_to_float32=6.63), CFG)
    c = d.check("latency_ratio")
    assert not d.passed and (c.status, c.value, c.threshold) == ("fail", 6.63, 1.0)
    assert "6.63x" in c.detail and any("6.63x" in r for r in d.reasons)
    ok = evaluate_gates(entry(latency_ratio_to_float32=0.6), CFG).check("latency_ratio")
    assert ok.passed and ok.status == "pass"
    # a looser limit from the config, or none at all
    assert latency_ratio_check(1.2, "cpu", "int8", GateConfig(max_latency_ratio=1.5)).passed
    off = latency_ratio_check(6.6, "gpu", "int8", GateConfig(max_latency_ratio=None))
    assert off.passed and off.status == "off"
    assert not latency_ratio_check(1.3, "gpu", "uint8", CFG).passed


def test_latency_ratio_is_reported_on_accelerators_and_not_measured_when_absent():
    from include.gates import latency_ratio_check

    for variant in ("edgetpu", "dsp"):
        c = latency_ratio_check(2.5, variant, "int8", CFG)
        assert c.passed and c.status == "reported" and "2.50x" in c.detail
    d = evaluate_gates(entry(), CFG)
    assert d.passed and d.check("latency_ratio").status == "not_measured"
    fp = latency_ratio_check(None, "cpu", "float16", CFG)
    assert fp.passed and fp.status == "not_applicable"
    _json_roundtrip(evaluate_gates(entry(variant="edgetpu", latency_ratio_to_float32=2.0), CFG))
