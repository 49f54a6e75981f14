"""The TFLite-ready export: a frozen GraphDef exactly as TFOD's export_tflite_ssd_graph writes it.

    normalized_input_image_tensor  float32 [1, S, S, 3] in [-1, 1]
      -> raw_outputs/box_encodings      [1, N, 4]
      -> raw_outputs/class_predictions  [1, N, C + 1]  (after sigmoid)
    anchors                             Const [N, 4] (ycenter, xcenter, h, w)
    TFLite_Detection_PostProcess        custom op node appended to the graph, consuming the three

QAT checkpoints keep their FakeQuantWithMinMaxVars nodes, which the uint8 recipe needs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from include import __version__
from include.errors import ConfigError
from include.mobiledet import box_coder

INPUT_NAME = "normalized_input_image_tensor"
BOX_ENCODINGS = "raw_outputs/box_encodings"
CLASS_PREDICTIONS = "raw_outputs/class_predictions"
ANCHORS = "anchors"
POSTPROCESS = "TFLite_Detection_PostProcess"
OUTPUT_NAMES = [POSTPROCESS, f"{POSTPROCESS}:1", f"{POSTPROCESS}:2", f"{POSTPROCESS}:3"]


def postprocess_attrs(num_classes, max_detections=10, score_threshold=1e-8, iou_threshold=0.6,
                      detections_per_class=100, use_regular_nms=False) -> dict:
    if not isinstance(max_detections, int) or max_detections < 1:
        raise ConfigError(f"max_detections must be a positive whole number, got {max_detections!r}.",
                          where="--max-detections", fix="use e.g. 10 (mobile) or 100.")
    if not 0.0 <= score_threshold < 1.0:
        raise ConfigError(f"score threshold must be in [0, 1), got {score_threshold!r}.",
                          where="--score-threshold", fix="use e.g. 1e-8 (keep all) or 0.3.")
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"IoU threshold must be in (0, 1], got {iou_threshold!r}.",
                          where="--iou-threshold", fix="use e.g. 0.6.")
    y, x, h, w = box_coder.SCALES
    return {
        "max_detections": int(max_detections),
        "max_classes_per_detection": 1,
        "detections_per_class": int(detections_per_class),
        "use_regular_nms": bool(use_regular_nms),
        "nms_score_threshold": float(score_threshold),
        "nms_iou_threshold": float(iou_threshold),
        "num_classes": int(num_classes),
        "y_scale": y, "x_scale": x, "h_scale": h, "w_scale": w,
    }


def raw_output_function(model, input_size):
    """A tf.function giving the raw outputs under the TFOD names (sigmoid applied to logits).

    Box encodings take TFOD's path: each map's [1, HWA, 4] is made [1, HWA, 1, 4] (TFOD's box
    predictor output), concatenated by the model's concat layer and squeezed back to [1, N, 4]
    (ssd_meta_arch.predict). The converter merges the first reshape into the map's own, so the
    model has one RESHAPE per map and head plus that squeeze: 13, as TFOD's exporter gives.
    The values are the model's own outputs (a QAT model's: see `inner` below).
    """
    import tensorflow as tf

    concat = model.outputs[0]._keras_history.layer
    parts = concat.input if isinstance(concat.input, list) else [concat.input]
    # the model's name scopes the graph's node names (per-layer reports read them)
    body = tf.keras.Model(model.inputs, [*parts, model.outputs[1]], name=model.name)
    # A QAT model's concat is a tfmot wrapper with its own range. TFOD's graph has none there:
    # the converter gives the concat the range its inputs span (as TOCO did for TFOD), and
    # the squeeze keeps it. With a range of its own after the squeeze, a requantize op would
    # sit between the two.
    inner = getattr(concat, "layer", concat)

    @tf.function(input_signature=[tf.TensorSpec([1, input_size, input_size, 3], tf.float32,
                                                name=INPUT_NAME)])
    def raw_outputs(normalized_input_image_tensor):
        *maps, logits = body(normalized_input_image_tensor, training=False)
        maps = [tf.reshape(m, [1, -1, 1, 4]) for m in maps]
        boxes = tf.reshape(inner(maps), [1, -1, 4], name="Squeeze")
        return {"box_encodings": tf.identity(boxes, name=BOX_ENCODINGS),
                "class_predictions": tf.identity(tf.sigmoid(logits), name=CLASS_PREDICTIONS)}

    return raw_outputs


def freeze_raw_graph(model, input_size):
    """Frozen GraphDef with only the nodes the two raw outputs need."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import \
        convert_variables_to_constants_v2

    concrete = raw_output_function(model, input_size).get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    return tf.compat.v1.graph_util.extract_sub_graph(graph_def, [BOX_ENCODINGS, CLASS_PREDICTIONS])


def append_postprocess(graph_def, anchors, attrs: dict):
    """Add the `anchors` Const and the TFLite_Detection_PostProcess node (TFOD's layout)."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    const = graph_def.node.add()
    const.name, const.op = ANCHORS, "Const"
    const.attr["dtype"].type = types_pb2.DT_FLOAT
    const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(anchors.astype("float32")))

    node = graph_def.node.add()
    node.name = node.op = POSTPROCESS
    node.input.extend([BOX_ENCODINGS, CLASS_PREDICTIONS, ANCHORS])
    # Lets the op take quantised inputs while its outputs stay float32.
    node.attr["_output_quantized"].b = True
    node.attr["_support_output_type_float_in_quantized_op"].b = True
    node.attr["_output_types"].list.type.extend([types_pb2.DT_FLOAT] * 4)
    for key, value in attrs.items():
        if isinstance(value, bool):
            node.attr[key].b = value
        elif isinstance(value, int):
            node.attr[key].i = value
        else:
            node.attr[key].f = float(value)
    return graph_def


def export_checkpoint(checkpoint_dir, out_dir, *, max_detections=10, score_threshold=1e-8,
                      iou_threshold=0.6) -> dict:
    """Checkpoint folder -> export folder (tflite_graph.pb, pipeline.config, export.json).

    The folder is assembled under a temporary name and renamed into place when complete.
    """
    import shutil

    from include.atomic import staged_dir
    from include.mobiledet.checkpoint import load_checkpoint, utc_now
    from include.mobiledet.ssd import anchors_for

    model, meta = load_checkpoint(checkpoint_dir, batch_size=1)
    spec_fields = ("variant", "num_classes", "input_size", "depth_multiplier")
    spec = {k: meta[k] for k in spec_fields}
    from include.mobiledet.spec import ModelSpec
    model_spec = ModelSpec.from_dict(spec)
    attrs = postprocess_attrs(model_spec.num_classes, max_detections, score_threshold, iou_threshold)
    graph_def = freeze_raw_graph(model, model_spec.input_size)
    append_postprocess(graph_def, anchors_for(model_spec), attrs)
    data = graph_def.SerializeToString()
    fake_quant = sum(1 for n in graph_def.node if n.op.startswith("FakeQuantWithMinMaxVars"))

    with staged_dir(out_dir) as tmp:
        (tmp / "tflite_graph.pb").write_bytes(data)
        shutil.copyfile(Path(checkpoint_dir) / "pipeline.config", tmp / "pipeline.config")
        info = {
            "format": "mobiledet-export/1",
            "spec": spec,
            "qat": bool(meta["qat"]),
            "input": {"name": INPUT_NAME, "shape": [1, model_spec.input_size, model_spec.input_size, 3],
                      "dtype": "float32", "range": [-1.0, 1.0]},
            "raw_outputs": [BOX_ENCODINGS, CLASS_PREDICTIONS, ANCHORS],
            "outputs": OUTPUT_NAMES,
            "postprocess": attrs,
            "anchors": int(anchors_for(model_spec).shape[0]),
            "fake_quant_nodes": fake_quant,
            "nodes": len(graph_def.node),
            "label_map": meta["label_map"],
            "checkpoint": {"uri": str(Path(checkpoint_dir).resolve()),
                           "fingerprint": meta.get("fingerprint"),
                           "data_fingerprint": meta.get("data_fingerprint"),
                           "steps": meta.get("steps")},
            "graph_sha256": hashlib.sha256(data).hexdigest(),
            "created": utc_now(),
            "code_version": __version__,
        }
        (tmp / "export.json").write_text(json.dumps(info, indent=2))
    return info


def load_frozen_graph(path):
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(Path(path).read_bytes())
    return graph_def


def run_raw_graph(graph_path, images):
    """Run the frozen graph's raw outputs (the post-process node is cut off: TF has no kernel
    for it) -> (box_encodings, class_predictions, anchors)."""
    import tensorflow as tf

    graph_def = load_frozen_graph(graph_path)
    sub = tf.compat.v1.graph_util.extract_sub_graph(graph_def, [BOX_ENCODINGS, CLASS_PREDICTIONS,
                                                                 ANCHORS])
    with tf.Graph().as_default() as g:
        tf.compat.v1.import_graph_def(sub, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run([f"{BOX_ENCODINGS}:0", f"{CLASS_PREDICTIONS}:0", f"{ANCHORS}:0"],
                            feed_dict={f"{INPUT_NAME}:0": images})
