"""The offline Edge TPU analysis on real (tiny) MobileDet models of every variant."""
from __future__ import annotations

import json

import pytest

from include.convert.converter import convert
from include.edgetpu.analyze import analyze_model
from models import make_image_folder, shared_export


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("calib"), count=4)


@pytest.mark.parametrize("variant, qat, precision", [
    ("edgetpu", False, "int8"), ("edgetpu", True, "uint8"), ("dsp", False, "int8"),
    ("gpu", False, "int8")])
def test_integer_models_map_except_postprocess(variant, qat, precision, calibration, tmp_path):
    model = tmp_path / "m.tflite"
    convert(shared_export(variant, qat), precision, model, calibration=calibration,
            calibration_count=4)
    result = analyze_model(model)
    assert result["prediction"] is True and result["fully_integer"]
    assert result["all_mapped_except_postprocess"], result["cpu_ops"]
    assert result["ops_on_cpu"] == 1 and result["ops_on_tpu"] == result["total_ops"] - 1
    [cpu_op] = result["cpu_ops"]
    assert "TFLite_Detection_PostProcess" in str(cpu_op)


def test_cpu_variant_hard_swish_is_the_cut(calibration, tmp_path, monkeypatch):
    # MobileDet-CPU uses hard-swish; HARD_SWISH is not on the documented Edge TPU op list, so
    # the compiler would cut the graph at the stem's first activation ...
    import include.convert.converter as converter

    plain = tmp_path / "cpu-plain.tflite"
    with monkeypatch.context() as m:
        m.setattr(converter, "rewrite_for", lambda *a: False)   # the graph as exported
        convert(shared_export("cpu", False), "int8", plain, calibration=calibration,
                calibration_count=4)
    result = analyze_model(plain)
    assert result["fully_integer"] and not result["all_mapped_except_postprocess"]
    assert "HARD_SWISH" in str(result["first_unmapped_op"])
    # ... while the CPU int8 recipe's rewrite (x * relu6(x + 3), pools as Mean; "Integer models
    # on the CPU") leaves no HARD_SWISH, so that model would map whole, like the EdgeTPU variant
    model = tmp_path / "cpu.tflite"
    convert(shared_export("cpu", False), "int8", model, calibration=calibration,
            calibration_count=4)
    result = analyze_model(model)
    assert result["fully_integer"] and result["all_mapped_except_postprocess"], \
        result["cpu_ops"]
    assert "HARD_SWISH" not in json.dumps(result["operators"], default=str)


@pytest.mark.parametrize("precision", ["float32", "dynamic", "float16"])
def test_float_models_map_nothing_and_say_why(precision, tmp_path):
    model = tmp_path / "m.tflite"
    convert(shared_export("edgetpu", False), precision, model)
    result = analyze_model(model)
    assert result["ops_on_tpu"] == 0 and not result["fully_integer"]
    assert any("data type" in str(r["status"]) for r in result["operators"])
