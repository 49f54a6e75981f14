"""TFOD (TF1) training checkpoints in, without TF1: the index reader, the name mapping of the
four variants, float and QAT imports down to the .tflite tensors, and the CLI.

The TF1 checkpoints are written by TF1's own tf.compat.v1.train.Saver under the names TF1's
variable scopes give (tests/tfod_tf1.py), with values the tests choose. The real TFOD
MobileDet-EdgeTPU QAT index (tests/fixtures/tfod/real/) checks the names against a checkpoint
TFOD itself wrote.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from include.mobiledet.spec import ModelSpec
from tfod_tf1 import TF1Model, tfod_config, write_checkpoint

HERE = Path(__file__).parent
REAL = HERE / "fixtures" / "tfod" / "real"
SPEC = dict(num_classes=3, input_size=64, depth_multiplier=0.25)
ROOT = "FeatureExtractor/MobileDetEdgeTPU"

# ranges the QAT test writes into the checkpoint and finds again in the uint8 model
RANGES = {
    f"{ROOT}/Conv/weights_quant": (-0.9, 0.7),                   # stem kernel (ReLU after)
    f"{ROOT}/Conv/act_quant": (0.0, 5.3),                        # stem output (after ReLU6)
    f"{ROOT}/TuckerConv/Conv_2/act_quant": (-3.7, 4.1),          # a linear projection
    f"{ROOT}/TuckerConv/Conv_2/weights_quant": (-0.41, 0.63),
    f"{ROOT}/FusedConv_1/post_activation_bypass_quant": (-3.1, 2.9),   # a residual add
    "BoxPredictor_2/ClassPredictor/act_quant": (-9.5, 2.5),      # a class head
}
LABELS = ["cat", "dog", "fish"]


def _overrides(ranges):
    return {f"{k}/{end}": v for k, (lo, hi) in ranges.items() for end, v in (("min", lo),
                                                                            ("max", hi))}


def _label_map_text(names):
    return "".join(f'item {{\n  id: {i}\n  name: "{n}"\n}}\n' for i, n in enumerate(names, 1))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "include.cli", *args], capture_output=True,
                          text=True, timeout=600)


# ---------------------------------------------------------------- shared imports (module scope)
@pytest.fixture(scope="module")
def edgetpu_qat(tmp_path_factory):
    """A TFOD EdgeTPU QAT training folder (label map where the config's absolute path does not
    exist, but beside it), imported, exported and converted to its default matrix."""
    from include.convert.converter import convert
    from include.mobiledet.export import export_checkpoint
    from include.tfod.importer import import_tfod

    root = tmp_path_factory.mktemp("tfod-edgetpu-qat")
    spec = ModelSpec("edgetpu", **SPEC)
    train = root / "train"
    config = tfod_config(spec, qat=True, label_map_path="/content/dataset/pets_label_map.pbtxt")
    prefix, tf1 = write_checkpoint(train, spec, qat=True, step=50000,
                                   overrides=_overrides(RANGES), config_text=config)
    (train / "pets_label_map.pbtxt").write_text(_label_map_text(LABELS))
    report = import_tfod(prefix, train / "pipeline.config", root / "ckpt")
    export_checkpoint(root / "ckpt", root / "export")
    models = {}
    for precision in ("float32", "uint8"):
        models[precision] = root / f"{precision}.tflite"
        convert(root / "export", precision, models[precision])
    return dict(root=root, prefix=prefix, tf1=tf1, report=report, models=models, spec=spec)


@pytest.fixture(scope="module")
def cpu_float(tmp_path_factory):
    """A TFOD CPU float checkpoint (Adam slots), imported, exported and converted to the CPU's
    default matrix (float32, dynamic, float16, int8)."""
    from include.config import default_precisions
    from include.convert.converter import convert
    from include.mobiledet.export import export_checkpoint
    from include.tfod.importer import import_tfod
    from models import make_image_folder

    root = tmp_path_factory.mktemp("tfod-cpu-float")
    spec = ModelSpec("cpu", **SPEC)
    prefix, tf1 = write_checkpoint(root / "train", spec, step=1234, seed=3, optimizer="adam")
    labels = root / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    report = import_tfod(prefix, root / "train" / "pipeline.config", root / "ckpt", labels=labels)
    export_checkpoint(root / "ckpt", root / "export")
    calib = make_image_folder(root / "calib", count=6)
    models = {}
    for precision in default_precisions("cpu", False):
        models[precision] = root / f"{precision}.tflite"
        convert(root / "export", precision, models[precision], calibration=calib,
                calibration_count=6)
    return dict(root=root, prefix=prefix, tf1=tf1, report=report, models=models, spec=spec)


# ---------------------------------------------------------------- the index and the names
def test_index_reader_reads_what_tensorflow_reads(cpu_float):
    import tensorflow as tf

    from include.tfod.checkpoint_index import read_index

    for prefix in (str(REAL / "model.ckpt-50000"), cpu_float["prefix"]):
        index = read_index(prefix)
        assert {n: list(e.shape) for n, e in index.entries.items()} == \
            dict(tf.train.list_variables(prefix))
    reader = tf.train.load_checkpoint(cpu_float["prefix"])
    dtypes = reader.get_variable_to_dtype_map()
    index = read_index(cpu_float["prefix"])
    assert {n: e.dtype for n, e in index.entries.items()} == \
        {n: d.name for n, d in dtypes.items()}
    data = Path(cpu_float["prefix"] + ".data-00000-of-00001")
    assert index.required_shard_sizes() == {0: data.stat().st_size}


@pytest.mark.parametrize("variant, qat", [("cpu", False), ("edgetpu", False), ("edgetpu", True),
                                          ("dsp", True), ("gpu", True)])
def test_names_are_the_ones_tf1_scopes_give(variant, qat):
    import tensorflow as tf

    from include.tfod.names import ignored_kind, layout

    spec = ModelSpec(variant, **SPEC)
    with tf.Graph().as_default():
        TF1Model(spec, qat=qat).build()
        tf.compat.v1.train.get_or_create_global_step()
        written = {v.op.name: tuple(v.shape.as_list()) for v in tf.compat.v1.global_variables()}
    model = {v.name: tuple(v.shape) for v in layout(spec).variables(qat)}
    assert {n: s for n, s in written.items() if ignored_kind(n) is None} == model


@pytest.mark.parametrize("variant", ["cpu", "edgetpu", "dsp", "gpu"])
def test_names_cover_every_weight_of_the_keras_model(variant):
    from include.mobiledet.ssd import build_detector
    from include.tfod.names import layout

    spec = ModelSpec(variant, **SPEC)
    model = build_detector(spec)
    keras = {}
    for layer in model.layers:
        for w in layer.weights:
            keras[(layer.name, w.name.rsplit("/", 1)[-1][:-2])] = tuple(w.shape)
    mapped = {(v.layer, v.attr): tuple(v.shape) for v in layout(spec).variables(False)}
    assert mapped == keras


def test_names_cover_every_range_of_the_qat_model(edgetpu_qat):
    from include.mobiledet.checkpoint import load_checkpoint
    from include.tfod.names import layout

    model, meta = load_checkpoint(edgetpu_qat["root"] / "ckpt")
    assert meta["qat_scheme"] == "all_kernels"
    ranges = {(l.name, w.name.rsplit("/", 1)[-1][:-2]) for l in model.layers for w in l.weights
              if w.name.endswith(("_min:0", "_max:0"))}
    mapped = {(v.layer, v.attr) for v in layout(edgetpu_qat["spec"]).variables(True)
              if v.kind == "range"}
    unmapped = ranges - mapped
    # TF1 has no range for the input (pinned to the uint8 input contract) or the two concats
    # (given their inputs' span)
    assert {name for name, _ in unmapped} == {
        next(l.name for l in model.layers if l.name.startswith("quantize_layer")),
        "quant_box_encodings", "quant_class_logits"}
    assert mapped <= ranges


def test_published_variable_totals():
    from include.tfod.names import layout

    def values(spec, qat):
        return sum(math.prod(v.shape) for v in layout(spec).variables(qat) if v.kind == "weight")

    assert values(ModelSpec("cpu", 90, 320, 1.0), False) == 4_205_423
    assert values(ModelSpec("edgetpu", 2, 320, 1.0), True) == 3_356_839


def test_real_tfod_qat_index_maps_completely():
    """The index TFOD's MobileDet-EdgeTPU QAT training wrote (public; see the fixture README):
    every variable mapped or ignored, every model variable found, from the .index alone."""
    r = _cli("import-tfod", "--checkpoint", str(REAL / "model.ckpt-50000"), "--config",
             str(REAL / "pipeline.config"), "--check", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["unmapped_checkpoint"] == [] and report["unmapped_model"] == []
    assert (report["variant"], report["qat"], report["step"]) == ("edgetpu", True, 50000)
    assert report["values"] == 3_356_839 and report["ranges"] == 402
    assert report["mapped"] + len(report["ignored"]) == 1531
    assert report["ignored_kinds"] == {"optimizer slot": 267, "global_step": 1,
                                       "quantization moving-average helper": 432}
    assert not (REAL / "model.ckpt-50000.data-00000-of-00001").exists()


# ---------------------------------------------------------------- float import
def _fold(tf1, conv, eps):
    w = tf1.values[f"{conv}/weights"]
    g, b = tf1.values[f"{conv}/BatchNorm/gamma"], tf1.values[f"{conv}/BatchNorm/beta"]
    m, v = (tf1.values[f"{conv}/BatchNorm/moving_mean"],
            tf1.values[f"{conv}/BatchNorm/moving_variance"])
    factor = g / np.sqrt(v + eps)
    return w * factor, b - m * factor


def test_stem_kernel_reaches_the_float32_tflite(cpu_float):
    from include.edgetpu.tflite_model import read_model

    kernel, bias = _fold(cpu_float["tf1"], "FeatureExtractor/MobileDetCPU/Conv", 0.01)
    model = read_model(cpu_float["models"]["float32"])
    stem = model.ops[0]
    assert stem.opcode == "CONV_2D"
    weights = model.constant_value(stem.inputs[1])          # TFLite: [out, kh, kw, in]
    np.testing.assert_allclose(weights, kernel.transpose(3, 0, 1, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.constant_value(stem.inputs[2]), bias, rtol=1e-5,
                               atol=1e-6)


def test_cpu_default_matrix_and_labels(cpu_float):
    from include.convert.recipes import conversion_json_path
    from include.edgetpu.tflite_model import read_model

    assert set(cpu_float["models"]) == {"float32", "dynamic", "float16", "int8"}
    for precision, path in cpu_float["models"].items():
        ops = read_model(path).op_histogram
        assert ops["RESHAPE"] == 13 and ops["CUSTOM"] == 1, (precision, ops)
        conversion = json.loads(conversion_json_path(path).read_text())
        assert conversion["source"]["label_map"]["0"]["name"] == "cat"
    meta = json.loads((cpu_float["root"] / "ckpt" / "checkpoint.json").read_text())
    assert [meta["label_map"][str(i)]["name"] for i in range(3)] == LABELS
    export = json.loads((cpu_float["root"] / "export" / "export.json").read_text())
    assert export["label_map"]["2"]["name"] == "fish"
    report = cpu_float["report"]
    assert report["ignored_kinds"]["optimizer slot"] > 0 and "beta1_power" in report["ignored"]
    assert meta["source"]["kind"] == "tfod" and meta["source"]["global_step"] == 1234
    assert meta["steps"] == 1234 and meta["qat"] is False


# ---------------------------------------------------------------- QAT import
def _expected(lo, hi, narrow):
    """scale and zero point FakeQuant (and so the converter) makes of [lo, hi], uint8."""
    qmin = 1 if narrow else 0
    scale = (hi - lo) / (255 - qmin)
    return scale, int(min(255, max(qmin, round(qmin - lo / scale))))


def _close(q, lo, hi, narrow=False):
    scale, zp = _expected(lo, hi, narrow)
    assert abs(q.zero_point[0] - zp) <= 1, (q, scale, zp)
    assert abs(q.scale[0] - scale) <= scale / 255, (q, scale, zp)


def _op(model, opcode, output_part):
    return next(op for op in model.ops if op.opcode == opcode
                and output_part in op.outputs[0].name)


def test_trained_ranges_reach_the_uint8_model(edgetpu_qat):
    from include.edgetpu.analyze import analyze_model
    from include.edgetpu.logparse import parse_operation_log
    from include.edgetpu.tflite_model import read_model

    model = read_model(edgetpu_qat["models"]["uint8"])
    # op for op what TFOD's own uint8 MobileDet-EdgeTPU has (its compiler log; 13 RESHAPE)
    log = parse_operation_log((REAL / "ssdlite_mobiledet_dog_vs_cat_edgetpu.log").read_text())
    assert model.op_histogram == {r["operator"]: r["count"] for r in log["operators"]}
    # and the offline Edge TPU prediction gives the compiler's own table for TFOD's model
    predicted = analyze_model(edgetpu_qat["models"]["uint8"])["operators"]
    assert sorted(map(json.dumps, predicted)) == sorted(map(json.dumps, log["operators"]))
    stem = model.ops[0]
    assert stem.inputs[1].dtype == "uint8"
    _close(stem.inputs[1].quantization, *RANGES[f"{ROOT}/Conv/weights_quant"], narrow=True)
    _close(stem.outputs[0].quantization, *RANGES[f"{ROOT}/Conv/act_quant"])
    project = _op(model, "CONV_2D", "edgetpu/C1/tucker_0/project/conv")
    _close(project.inputs[1].quantization,
           *RANGES[f"{ROOT}/TuckerConv/Conv_2/weights_quant"], narrow=True)
    _close(project.outputs[0].quantization, *RANGES[f"{ROOT}/TuckerConv/Conv_2/act_quant"])
    add = _op(model, "ADD", "edgetpu/C2/fused_1/add")
    _close(add.outputs[0].quantization, *RANGES[f"{ROOT}/FusedConv_1/post_activation_bypass_quant"])
    head = _op(model, "CONV_2D", "BoxPredictor_2/ClassPredictor/conv_1x1")
    _close(head.outputs[0].quantization, *RANGES["BoxPredictor_2/ClassPredictor/act_quant"])
    # the input contract stays: scale 1/128, zero point 128
    assert model.inputs[0].quantization.scale[0] == pytest.approx(1 / 128)
    assert model.inputs[0].quantization.zero_point[0] == 128


def test_qat_import_default_matrix_labels_and_lineage(edgetpu_qat):
    from include.convert.inspect import load_interpreter

    for path in edgetpu_qat["models"].values():
        interp = load_interpreter(path)
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
        interp.invoke()
    meta = json.loads((edgetpu_qat["root"] / "ckpt" / "checkpoint.json").read_text())
    assert [meta["label_map"][str(i)]["name"] for i in range(3)] == LABELS
    src = meta["source"]
    assert src["checkpoint"] == str(Path(edgetpu_qat["prefix"]).resolve())
    assert src["global_step"] == 50000 and meta["steps"] == 50000
    config = edgetpu_qat["root"] / "train" / "pipeline.config"
    import hashlib
    assert src["pipeline_config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert src["labels"].endswith("pets_label_map.pbtxt")
    assert meta["fingerprint"] == edgetpu_qat["report"]["fingerprint"]


def test_import_identity_is_stable(edgetpu_qat, tmp_path):
    from include.tfod.importer import import_tfod

    prefix = edgetpu_qat["prefix"]
    again = import_tfod(prefix, Path(prefix).parent / "pipeline.config", tmp_path / "again")
    first = edgetpu_qat["report"]
    assert (again["fingerprint"], again["created"]) == (first["fingerprint"], first["created"])


# ---------------------------------------------------------------- moving averages
def test_moving_average_shadows_are_used_when_the_config_evaluates_with_them(tmp_path):
    import tensorflow as tf

    from include.mobiledet.checkpoint import load_checkpoint
    from include.tfod.importer import import_tfod

    spec = ModelSpec("edgetpu", **SPEC)
    model = TF1Model(spec)
    v1 = tf.compat.v1
    train = tmp_path / "train"
    train.mkdir()
    with tf.Graph().as_default() as g:
        model.build()
        stem = f"{ROOT}/Conv/weights"
        shadow = np.full(model.values[stem].shape, 0.25, np.float32)
        with v1.variable_scope("", reuse=False):
            v1.get_variable(stem + "/ExponentialMovingAverage", initializer=shadow,
                            trainable=False)
        v1.train.get_or_create_global_step()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            prefix = v1.train.Saver().save(sess, str(train / "model.ckpt"), global_step=7)
    text = tfod_config(spec).replace("use_moving_averages: false", "use_moving_averages: true")
    (train / "pipeline.config").write_text(text)
    report = import_tfod(prefix, train / "pipeline.config", tmp_path / "ckpt")
    assert report["moving_averages"] == "used"
    keras, _ = load_checkpoint(tmp_path / "ckpt")
    np.testing.assert_array_equal(keras.get_layer("edgetpu/stem/conv").kernel.numpy(), shadow)
    # the BN statistics have no shadow: read as they are
    np.testing.assert_array_equal(keras.get_layer("edgetpu/stem/bn").moving_mean.numpy(),
                                  model.values[f"{ROOT}/Conv/BatchNorm/moving_mean"])


# ---------------------------------------------------------------- errors
def test_a_different_depth_multiplier_names_shapes_and_nearest_names(edgetpu_qat, tmp_path):
    from include.errors import CheckpointError
    from include.tfod.importer import check_tfod

    spec = ModelSpec("edgetpu", 3, 64, 0.5)
    config = tmp_path / "pipeline.config"
    config.write_text(tfod_config(spec, qat=True))
    with pytest.raises(CheckpointError) as info:
        check_tfod(edgetpu_qat["prefix"], config)
    text = str(info.value)
    assert "shape(s) differ" in text and f"{ROOT}/Conv/weights is [3, 3, 3, 8] in the " \
        "checkpoint but [3, 3, 3, 16] in the model" in text
    assert f"{ROOT}/C5_1_Conv2d_2_1x1_64/weights [1, 1, 96, 64] (nearest model name: " in text
    assert f"{ROOT}/C5_1_Conv2d_2_1x1_128/weights [1, 1, 192, 128] (Keras feature_map_2/reduce/" \
        "conv) (nearest checkpoint name: " in text
    r = _cli("import-tfod", "--checkpoint", edgetpu_qat["prefix"], "--config", str(config),
             "--check", "--json")
    assert r.returncode == 2 and "Fix:" in r.stderr
    report = json.loads(r.stdout)
    assert f"{ROOT}/C5_1_Conv2d_2_1x1_64/weights" in report["unmapped_checkpoint"]
    assert f"{ROOT}/C5_1_Conv2d_2_1x1_128/weights" in report["unmapped_model"]


def test_a_float_config_for_a_qat_checkpoint_is_refused(edgetpu_qat, tmp_path):
    from include.errors import CheckpointError
    from include.tfod.importer import check_tfod

    config = tmp_path / "pipeline.config"
    config.write_text(tfod_config(edgetpu_qat["spec"], qat=False))
    with pytest.raises(CheckpointError, match="holds quantization ranges"):
        check_tfod(edgetpu_qat["prefix"], config)


# ---------------------------------------------------------------- CLI with a training folder
def test_cli_imports_a_training_folder(edgetpu_qat, tmp_path):
    from include.tfod.training import newest_step

    train = edgetpu_qat["root"] / "train"
    r = _cli("import-tfod", "--checkpoint", str(train), "--out", str(tmp_path / "ckpt"),
             "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    step = newest_step(train)
    assert result["step"] == 50000 and result["fingerprint"] == step.fingerprint
    assert result["created"] == step.created
    assert json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())["qat"] is True


def test_a_tf2_checkpoint_is_named_as_such(tmp_path):
    import tensorflow as tf

    from include.errors import CheckpointError
    from include.tfod.importer import check_tfod

    prefix = tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(tmp_path / "ckpt-1"))
    config = tmp_path / "pipeline.config"
    config.write_text(tfod_config(ModelSpec("edgetpu", **SPEC)))
    with pytest.raises(CheckpointError, match="TF2 object-based checkpoint"):
        check_tfod(prefix, config)


def test_head_settings_of_the_published_configs_pass_and_others_are_named(edgetpu_qat, tmp_path):
    from include.convert.tfod import read_pipeline_config
    from include.errors import CheckpointError
    from include.tfod.importer import check_head_settings, check_tfod

    for path in sorted((HERE / "fixtures" / "tfod").glob("ssdlite_mobiledet_*.config")):
        check_head_settings(read_pipeline_config(path), str(path))
    text = tfod_config(edgetpu_qat["spec"], qat=True)
    for old, new, field in (("min_scale: 0.2", "min_scale: 0.1", "min_scale is 0.1"),
                            ("epsilon: 0.001", "epsilon: 0.01", "batch_norm.epsilon is 0.01"),
                            ("y_scale: 10.0", "y_scale: 5.0", "y_scale is 5.0")):
        assert old in text
        config = tmp_path / "pipeline.config"
        config.write_text(text.replace(old, new, 1))
        with pytest.raises(CheckpointError, match=field):
            check_tfod(edgetpu_qat["prefix"], config)
