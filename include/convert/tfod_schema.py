"""The part of TFOD's protobuf schema that this product reads, built at import time.

No TFOD protos are installed and no protoc step is needed: the message types below are built
with ``google.protobuf.descriptor_pb2`` into a private ``DescriptorPool`` and turned into
classes by ``message_factory``. Names, nesting, oneofs and proto2 defaults follow TFOD's
``pipeline.proto`` family (``TrainEvalPipelineConfig``, ``DetectionModel``, ``Ssd``, ...), so
``msg.graph_rewriter.quantization.delay`` is 500000 when the config leaves it out, as in TFOD.
Two deliberate differences: field numbers are this module's own (text format never sees them;
these messages are not for binary interchange), and TFOD's ``float`` fields are ``double``
here, so a value reads back exactly as written (0.3333, not 0.33329999).

Each message type is *closed* (every field TFOD defines there is declared: an unknown name is
an error, with the nearest valid name) or *open* (only the fields read here are declared;
other names are TFOD fields this product does not read, kept as they are in the raw dict).
``Opaque`` is open and declares nothing: train_config, eval_config, conv_hyperparams, ... are
kept, never interpreted. See include/convert/textproto.py (parse_message) for how open types
are handled with ``google.protobuf.text_format``.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "mobiledet.tfod"

# enum name -> values (the first is the default, as in proto2)
_ENUMS = {
    "ScoreConverter": ("IDENTITY", "SIGMOID", "SOFTMAX"),
    "ResizeType": ("BILINEAR", "NEAREST_NEIGHBOR", "BICUBIC", "AREA"),
}

# message name -> (closed?, fields); a field is (name, type[, default][, "repeated"]) or
# ("oneof", oneof_name, [fields]). Types: int32, float (built as double), bool, string, an enum
# of _ENUMS or a message of this table.
_MESSAGES = {
    "TrainEvalPipelineConfig": (True, [
        ("model", "DetectionModel"),
        ("train_config", "Opaque"),
        ("train_input_reader", "InputReader"),
        ("eval_config", "Opaque"),
        ("eval_input_reader", "InputReader", "repeated"),
        ("graph_rewriter", "GraphRewriter"),
    ]),
    "DetectionModel": (False, [
        ("oneof", "model", [("faster_rcnn", "Opaque"), ("ssd", "Ssd"),
                            ("experimental_model", "Opaque"), ("center_net", "Opaque")]),
    ]),
    "Ssd": (False, [
        ("num_classes", "int32"),
        ("image_resizer", "ImageResizer"),
        ("feature_extractor", "SsdFeatureExtractor"),
        ("box_coder", "BoxCoder"),
        ("anchor_generator", "AnchorGenerator"),
        ("post_processing", "PostProcessing"),
    ]),
    "SsdFeatureExtractor": (False, [
        ("type", "string"),
        ("depth_multiplier", "float", 1.0),
    ]),
    "ImageResizer": (False, [
        ("oneof", "image_resizer_oneof", [
            ("keep_aspect_ratio_resizer", "Opaque"), ("fixed_shape_resizer", "FixedShapeResizer"),
            ("identity_resizer", "Opaque"), ("conditional_shape_resizer", "Opaque"),
            ("pad_to_multiple_resizer", "Opaque")]),
    ]),
    "FixedShapeResizer": (True, [
        ("height", "int32", 300),
        ("width", "int32", 300),
        ("resize_method", "ResizeType", "BILINEAR"),
        ("convert_to_grayscale", "bool", False),
    ]),
    "AnchorGenerator": (False, [
        ("oneof", "anchor_generator_oneof", [
            ("grid_anchor_generator", "Opaque"), ("ssd_anchor_generator", "SsdAnchorGenerator"),
            ("multiscale_anchor_generator", "Opaque"),
            ("flexible_grid_anchor_generator", "Opaque")]),
    ]),
    "SsdAnchorGenerator": (False, [
        ("num_layers", "int32", 6),
        ("min_scale", "float", 0.2),
        ("max_scale", "float", 0.95),
        ("scales", "float", "repeated"),
        ("aspect_ratios", "float", "repeated"),
        ("interpolated_scale_aspect_ratio", "float", 1.0),
        ("reduce_boxes_in_lowest_layer", "bool", True),
        ("base_anchor_height", "float", 1.0),
        ("base_anchor_width", "float", 1.0),
        ("height_stride", "int32", "repeated"),
        ("width_stride", "int32", "repeated"),
        ("height_offset", "int32", "repeated"),
        ("width_offset", "int32", "repeated"),
    ]),
    "BoxCoder": (False, [
        ("oneof", "box_coder_oneof", [
            ("faster_rcnn_box_coder", "FasterRcnnBoxCoder"), ("mean_stddev_box_coder", "Opaque"),
            ("square_box_coder", "Opaque"), ("keypoint_box_coder", "Opaque")]),
    ]),
    "FasterRcnnBoxCoder": (True, [
        ("y_scale", "float", 10.0),
        ("x_scale", "float", 10.0),
        ("height_scale", "float", 5.0),
        ("width_scale", "float", 5.0),
    ]),
    "PostProcessing": (False, [
        ("batch_non_max_suppression", "BatchNonMaxSuppression"),
        ("score_converter", "ScoreConverter", "IDENTITY"),
        ("logit_scale", "float", 1.0),
    ]),
    "BatchNonMaxSuppression": (False, [
        ("score_threshold", "float", 0.0),
        ("iou_threshold", "float", 0.6),
        ("max_detections_per_class", "int32", 100),
        ("max_total_detections", "int32", 100),
        ("use_static_shapes", "bool", False),
    ]),
    "GraphRewriter": (False, [
        ("quantization", "Quantization"),
    ]),
    "Quantization": (True, [
        ("delay", "int32", 500000),
        ("weight_bits", "int32", 8),
        ("activation_bits", "int32", 8),
        ("symmetric", "bool", False),
    ]),
    "InputReader": (False, [
        ("label_map_path", "string", ""),
    ]),
    # label_map.pbtxt
    "StringIntLabelMap": (True, [
        ("item", "StringIntLabelMapItem", "repeated"),
    ]),
    "StringIntLabelMapItem": (False, [
        ("name", "string"),
        ("id", "int32"),
        ("display_name", "string"),
    ]),
    "Opaque": (False, []),
}

_SCALARS = {
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "float": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
}


def _default_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _add_field(msg, number, spec, oneof_index=None):
    FD = descriptor_pb2.FieldDescriptorProto
    name, kind, *rest = spec
    repeated = "repeated" in rest
    defaults = [r for r in rest if r != "repeated"]
    field = msg.field.add(name=name, number=number,
                          label=FD.LABEL_REPEATED if repeated else FD.LABEL_OPTIONAL)
    if kind in _SCALARS:
        field.type = _SCALARS[kind]
    elif kind in _ENUMS:
        field.type, field.type_name = FD.TYPE_ENUM, f".{PACKAGE}.{kind}"
    elif kind in _MESSAGES:
        field.type, field.type_name = FD.TYPE_MESSAGE, f".{PACKAGE}.{kind}"
    else:
        raise ValueError(f"tfod_schema: unknown type {kind!r} of field {name!r}")
    if defaults:
        field.default_value = _default_text(defaults[0])
    if oneof_index is not None:
        field.oneof_index = oneof_index


def _build():
    fdp = descriptor_pb2.FileDescriptorProto(name="mobiledet/tfod_pipeline.proto",
                                             package=PACKAGE, syntax="proto2")
    for name, enum_values in _ENUMS.items():
        enum = fdp.enum_type.add(name=name)
        for number, value in enumerate(enum_values):
            enum.value.add(name=value, number=number)
    for name, (_closed, specs) in _MESSAGES.items():
        msg = fdp.message_type.add(name=name)
        number = 1
        for spec in specs:
            if spec[0] == "oneof":
                msg.oneof_decl.add(name=spec[1])
                for member in spec[2]:
                    _add_field(msg, number, member, len(msg.oneof_decl) - 1)
                    number += 1
            else:
                _add_field(msg, number, spec)
                number += 1
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return pool


POOL = _build()


def message_class(name: str):
    """The generated class of message `name` (e.g. "TrainEvalPipelineConfig")."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


TrainEvalPipelineConfig = message_class("TrainEvalPipelineConfig")
StringIntLabelMap = message_class("StringIntLabelMap")
# full names of the open message types (see the module doc), for textproto.parse_message
OPEN_TYPES = frozenset(f"{PACKAGE}.{name}" for name, (closed, _) in _MESSAGES.items()
                       if not closed)
