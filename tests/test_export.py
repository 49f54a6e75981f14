"""The TFLite-ready export: frozen graph == Keras model, TFOD layout, bad checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from include.errors import CheckpointError
from include.mobiledet.checkpoint import load_checkpoint
from include.mobiledet.export import (OUTPUT_NAMES, export_checkpoint, load_frozen_graph,
                                      run_raw_graph)
from models import make_checkpoint, shared_export


@pytest.fixture(scope="module", params=[False, True], ids=["float", "qat"])
def exported(request, tmp_path_factory):
    # the checkpoint is the session's shared one; this export has its own settings
    ckpt = shared_export("edgetpu", qat=request.param).parent / "ckpt"
    out = tmp_path_factory.mktemp("export") / "export"
    info = export_checkpoint(ckpt, out, max_detections=7, iou_threshold=0.5)
    return request.param, ckpt, out, info


def test_frozen_graph_matches_keras(exported):
    qat, ckpt, export, _ = exported
    model, _ = load_checkpoint(ckpt, batch_size=1)
    x = np.random.default_rng(3).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    boxes, scores, anchors = run_raw_graph(export / "tflite_graph.pb", x)
    k_boxes, k_logits = model(x, training=False)
    assert np.abs(boxes - k_boxes.numpy()).max() < 1e-4
    assert np.abs(scores - tf.sigmoid(k_logits).numpy()).max() < 1e-4
    assert anchors.shape == (boxes.shape[1], 4)


def test_graph_layout_is_tfod(exported):
    qat, _, export, info = exported
    graph = load_frozen_graph(export / "tflite_graph.pb")
    nodes = {n.name: n for n in graph.node}
    assert nodes["normalized_input_image_tensor"].op == "Placeholder"
    assert nodes["anchors"].op == "Const"
    pp = nodes["TFLite_Detection_PostProcess"]
    assert list(pp.input) == ["raw_outputs/box_encodings", "raw_outputs/class_predictions", "anchors"]
    assert pp.attr["max_detections"].i == 7 and pp.attr["num_classes"].i == 3
    assert abs(pp.attr["nms_iou_threshold"].f - 0.5) < 1e-6
    assert pp.attr["_output_quantized"].b and pp.attr["_support_output_type_float_in_quantized_op"].b
    assert [pp.attr[k].f for k in ("y_scale", "x_scale", "h_scale", "w_scale")] == [10, 10, 5, 5]
    fake_quant = [n for n in graph.node if n.op.startswith("FakeQuantWithMinMaxVars")]
    assert bool(fake_quant) == qat and info["fake_quant_nodes"] == len(fake_quant)
    meta = json.loads((export / "export.json").read_text())
    assert meta["outputs"] == OUTPUT_NAMES and meta["qat"] == qat
    from include.convert.tfod import read_pipeline_config
    config = read_pipeline_config(export / "pipeline.config")
    assert config["variant"] == "edgetpu" and config["qat"] == qat and config["input_size"] == 64


def test_export_folder_reads_back_as_a_graph_source(exported):
    from include.convert.source import open_graph

    qat, _, export, _ = exported
    src = open_graph(export)
    assert src.kind == "export" and src.qat == qat and src.spec.variant == "edgetpu"


def test_checkpoint_without_metadata_is_refused(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "weights.h5").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="checkpoint.json"):
        export_checkpoint(tmp_path / "ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_weights_are_refused_and_nothing_written(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt", variant="cpu", num_classes=2)
    weights = ckpt / "weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        export_checkpoint(ckpt, tmp_path / "out")
    assert "weights.h5" in str(err.value) and "truncated" in str(err.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    (weights).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        export_checkpoint(ckpt, tmp_path / "out")
