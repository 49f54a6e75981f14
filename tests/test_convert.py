"""Conversion recipes: every variant x default precision converts, loads and runs in LiteRT."""
from __future__ import annotations

import json

import numpy as np
import pytest

from include.config import default_precisions
from include.convert.inspect import inspect_tflite, load_interpreter
from include.convert.converter import convert
from include.convert.recipes import conversion_json_path
from include.errors import ConversionError, DataError
from models import make_image_folder, shared_export

CASES = [("cpu", False), ("edgetpu", False), ("edgetpu", True), ("dsp", False), ("dsp", True),
         ("gpu", False)]


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("calib"), count=6)


@pytest.fixture(scope="module")
def exports():
    return lambda variant, qat: shared_export(variant=variant, qat=qat)


def _run(model_path):
    interp = load_interpreter(model_path)
    inp = interp.get_input_details()[0]
    rng = np.random.default_rng(0)
    if inp["dtype"] == np.uint8:
        x = rng.integers(0, 256, inp["shape"], dtype=np.uint8)
    else:
        x = rng.uniform(-1, 1, inp["shape"]).astype(np.float32)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return inp, {o["name"]: interp.get_tensor(o["index"]) for o in interp.get_output_details()}


@pytest.mark.parametrize("variant, qat", CASES, ids=[f"{v}-{'qat' if q else 'float'}" for v, q in CASES])
def test_default_matrix_converts_and_runs(variant, qat, exports, calibration, tmp_path):
    export = exports(variant, qat)
    sizes = {}
    for precision in default_precisions(variant, qat):
        out = tmp_path / f"{precision}.tflite"
        report = convert(export, precision, out, calibration=calibration, calibration_count=6)
        assert out.is_file() and conversion_json_path(out).is_file()
        saved = json.loads(conversion_json_path(out).read_text())
        assert saved["sha256"] == report["sha256"] and saved["size_bytes"] == out.stat().st_size
        assert saved["recipe"]["settings"]["allow_custom_ops"] is True
        assert saved["source"]["fingerprint"] and saved["tensorflow_version"]
        inp, outputs = _run(out)
        assert len(outputs) == 4 and all(v.dtype == np.float32 for v in outputs.values())
        boxes = outputs["TFLite_Detection_PostProcess"]
        assert boxes.shape[-1] == 4 and outputs["TFLite_Detection_PostProcess:3"].shape == (1,)
        sizes[precision] = out.stat().st_size
        info = inspect_tflite(out)
        if precision in ("int8", "uint8"):
            assert inp["dtype"] == np.uint8
            # the only float tensors are the post-process op's outputs
            assert info["float_tensors_besides_io"] == [], info["float_tensors_besides_io"]
            assert "DEQUANTIZE" not in info["ops"]
        else:
            assert inp["dtype"] == np.float32
        if precision == "uint8":
            scale, zero_point = inp["quantization"]
            assert zero_point == 128 and abs(scale - 1 / 128) < 1e-6
        if precision == "float16":
            assert info["tensor_dtypes"].get("float16", 0) > 0
        if precision == "dynamic":
            assert info["tensor_dtypes"].get("int8", 0) > 0
    if "float16" in sizes:
        assert 0.4 < sizes["float16"] / sizes["float32"] < 0.65
    if "dynamic" in sizes:
        # At this tiny size many kernels are under the converter's 1024-weight threshold for
        # dynamic-range quantisation and stay float; the ~1/4 ratio at full size is measured by
        # bench/model_sizes.py (README table).
        assert sizes["dynamic"] < sizes["float16"] < sizes["float32"]


def test_accelerator_float_recipes_warn(exports, tmp_path):
    report = convert(exports("edgetpu", False), "float16", tmp_path / "m.tflite")
    assert any("full-integer" in w for w in report["warnings"])


def test_request_errors(exports, calibration, tmp_path):
    float_export, qat_export = exports("edgetpu", False), exports("edgetpu", True)
    cases = [
        (dict(graph=float_export, precision="uint8"), ConversionError, "quantization-aware"),
        (dict(graph=qat_export, precision="int8", calibration=calibration), ConversionError,
         "uint8 for QAT"),
        (dict(graph=float_export, precision="int8"), ConversionError, "representative data"),
        (dict(graph=float_export, precision="int8", calibration=calibration, output_type="uint8"),
         ConversionError, "post-process op"),
        (dict(graph=float_export, precision="int4"), ConversionError, "allowed values"),
    ]
    for kw, exc, text in cases:
        with pytest.raises(exc, match=text):
            convert(kw.pop("graph"), kw.pop("precision"), tmp_path / "x.tflite", **kw)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        convert(float_export, "int8", tmp_path / "x.tflite", calibration=empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="a.png"):
        convert(float_export, "int8", tmp_path / "x.tflite", calibration=broken)
    assert not (tmp_path / "x.tflite").exists()


def test_calibration_uses_the_one_preprocessing(tmp_path):
    from include.convert.calibration import representative_images
    from include.data.preprocess import preprocess

    folder = make_image_folder(tmp_path / "imgs", count=3, size=50)
    batch, info = representative_images(folder, 64, count=3)
    files = sorted(folder.iterdir())
    np.testing.assert_array_equal(batch[0], preprocess(files[0], 64))
    assert info["preprocessing"] == "include.data.preprocess.preprocess" and info["images"] == 3


def test_convert_cli_rejects_integer_output_type(exports, tmp_path):
    from include.cli import main

    rc = main(["convert", "--graph", str(exports("edgetpu", False)), "--precision", "float32",
               "--output-type", "uint8", "--out", str(tmp_path / "m.tflite")])
    assert rc == 2 and not (tmp_path / "m.tflite").exists()
