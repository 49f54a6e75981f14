"""TFOD `pipeline.config` and `label_map.pbtxt`: what their fields mean to this product.

The syntax (protobuf text format) is include/convert/textproto.py; the schema of the fields read
here is include/convert/tfod_schema.py (TFOD's message names, oneofs and proto2 defaults, built
at run time). This module reads and writes the two files:

    read_pipeline_config(path) -> dict  variant, num_classes, input_size, depth_multiplier, spec,
                                        qat, qat_settings, postprocess, anchors, box_coder,
                                        label_map_path, label_map, raw
    write_pipeline_config(path, spec, *, qat, label_map, steps)
                                        a TFOD-style config for this project's checkpoints
    read_label_map(path), format_label_map(label_map)
                                        TFOD StringIntLabelMap files

A config is checked against the schema with google.protobuf.text_format: a misspelt field
("feature_extractr"), a value of the wrong type, an unknown enum value, a field set twice or two
alternatives of a oneof are errors that name the file, line, column, dotted field and fix (with
the nearest valid name). The many TFOD fields this product does not read (train_config,
matcher, box_predictor, ...) are kept as they are in `raw` and not interpreted, so configs from
any TFOD version load. `raw` is the whole file as a dict ({field: [values]}, see textproto).

The generic helpers are re-exported here for existing callers: parse_text_proto,
format_text_proto, values, first, has, EnumValue, TextProtoError.
"""
from __future__ import annotations

from pathlib import Path

from include.atomic import write_text_atomic
from include.convert import tfod_schema
from include.convert.textproto import (EnumValue, TextProtoError, TextProtoSchemaError,
                                       escape_string, first, format_text_proto, has, parse_message,
                                       parse_text_proto, values)
from include.errors import CheckpointError, ConfigError

__all__ = ["FEATURE_EXTRACTORS", "VARIANT_TO_TYPE", "LABEL_MAP_COMMENT", "EnumValue",
           "TextProtoError", "TextProtoSchemaError", "parse_text_proto", "format_text_proto",
           "values", "first", "has", "read_pipeline_config", "write_pipeline_config",
           "pipeline_config_dict", "read_label_map", "format_label_map"]

# feature_extractor.type -> this project's variant
FEATURE_EXTRACTORS = {
    "ssd_mobiledet_cpu": "cpu",
    "ssd_mobiledet_edgetpu": "edgetpu",
    "ssd_mobiledet_dsp": "dsp",
    "ssd_mobiledet_gpu": "gpu",
}
VARIANT_TO_TYPE = {v: k for k, v in FEATURE_EXTRACTORS.items()}

LABEL_MAP_COMMENT = "# label_map: "

# the settings read from each message (their defaults are the schema's, as in TFOD)
_QUANT_FIELDS = ("delay", "weight_bits", "activation_bits", "symmetric")
_NMS_FIELDS = ("score_threshold", "iou_threshold", "max_detections_per_class",
               "max_total_detections")
_ANCHOR_FIELDS = ("num_layers", "min_scale", "max_scale", "reduce_boxes_in_lowest_layer",
                  "interpolated_scale_aspect_ratio")
_BOX_CODER_FIELDS = ("y_scale", "x_scale", "height_scale", "width_scale")


# ============================================================== reading
def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise CheckpointError(f"{what} does not exist." if not path.exists() else
                              f"{what} is not a file.", where=str(path),
                              fix="pass the pipeline.config written next to the checkpoint or "
                                  "the exported graph.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{what} is not UTF-8 text (byte {exc.start}); a TFOD "
                              f"{what} is protobuf text format.", where=str(path),
                              fix=f"pass the text {what}, not a binary file.") from None


def _parse(path: Path, text: str, message, what: str):
    """(typed message, raw dict) of a TFOD text file; CheckpointError naming file and line."""
    try:
        return parse_message(text, message, source=path, open_types=tfod_schema.OPEN_TYPES)
    except TextProtoSchemaError as exc:
        raise CheckpointError(exc.problem, where=exc.where, fix=exc.fix) from None
    except TextProtoError as exc:
        raise CheckpointError(f"{what} is not valid text format: {exc.problem}"
                              if what == "label map" else
                              f"not valid protobuf text format: {exc.problem}",
                              where=exc.where, fix=exc.fix) from None


def _settings(msg, names) -> dict:
    return {name: getattr(msg, name) for name in names}


def _enum_name(msg, field: str) -> str:
    enum = msg.DESCRIPTOR.fields_by_name[field].enum_type
    return enum.values_by_number[getattr(msg, field)].name


def _missing(field: str, where: str) -> CheckpointError:
    return CheckpointError(f"{field} is missing.", where=where, fix=f"add {field} to the config.")


def read_pipeline_config(path) -> dict:
    """Read a TFOD pipeline.config describing an SSD MobileDet model.

    Returns {variant, feature_extractor_type, num_classes, input_size, depth_multiplier, spec
    (ModelSpec), qat, qat_settings (or None), postprocess (or None), anchors (or None),
    box_coder (or None), label_map_path (or None), label_map (embedded by
    write_pipeline_config, or None), path, raw}. Raises CheckpointError naming the file, the
    field and the fix.
    """
    from include.mobiledet.spec import ModelSpec

    path = Path(path)
    text = _read_text(path, "pipeline.config")
    config, raw = _parse(path, text, tfod_schema.TrainEvalPipelineConfig(), "pipeline.config")
    where = str(path)
    if not config.HasField("model"):
        raise CheckpointError("no `model { ... }` block: this is not a TFOD pipeline.config.",
                              where=where, fix="pass the pipeline.config of a TFOD SSD model.")
    if not config.model.HasField("ssd"):
        model = first(raw, "model", None)
        arch = config.model.WhichOneof("model") or (next(iter(model), None)
                                                    if isinstance(model, dict) else None)
        raise CheckpointError(f"model.ssd is missing (the model is {arch or 'empty'!s}); only the "
                              "SSD meta-architecture (SSDLite MobileDet) is supported.",
                              where=where, fix="pass the config of an ssdlite_mobiledet model.")
    ssd = config.model.ssd
    if not ssd.feature_extractor.HasField("type"):
        raise _missing("model.ssd.feature_extractor.type", where)
    fe_type = ssd.feature_extractor.type
    if fe_type not in FEATURE_EXTRACTORS:
        raise CheckpointError(
            f"model.ssd.feature_extractor.type is {fe_type!r}, which is not a MobileDet feature "
            f"extractor; supported types: {', '.join(FEATURE_EXTRACTORS)}.", where=where,
            fix="convert a MobileDet model (ssdlite_mobiledet_* config), or set "
                "model.ssd.feature_extractor.type to the MobileDet variant it was trained with.")
    variant = FEATURE_EXTRACTORS[fe_type]
    if not ssd.HasField("num_classes"):
        raise _missing("model.ssd.num_classes", where)
    num_classes = ssd.num_classes
    depth_multiplier = float(ssd.feature_extractor.depth_multiplier)

    resizer = ssd.image_resizer.WhichOneof("image_resizer_oneof")
    if resizer != "fixed_shape_resizer":
        found = values(raw, "model.ssd.image_resizer")
        kinds = resizer or (", ".join(found[0]) if found and isinstance(found[0], dict)
                            and found[0] else "none")
        raise CheckpointError(
            f"model.ssd.image_resizer must be a fixed_shape_resizer (found: {kinds}); the TFLite "
            "export has a fixed square input.", where=where,
            fix="use image_resizer { fixed_shape_resizer { height: 320 width: 320 } }.")
    fsr = "model.ssd.image_resizer.fixed_shape_resizer"
    height = ssd.image_resizer.fixed_shape_resizer.height
    width = ssd.image_resizer.fixed_shape_resizer.width
    if height != width:
        raise CheckpointError(
            f"{fsr} is {height}x{width} (height x width); MobileDet exports need a square "
            "input (height == width).", where=where,
            fix=f"set height and width to the same value, e.g. {max(height, width)}, and retrain "
                "or re-export the model at that size.")
    try:
        spec = ModelSpec(variant=variant, num_classes=num_classes, input_size=height,
                         depth_multiplier=depth_multiplier)
    except ConfigError as exc:
        field = {"num_classes": "model.ssd.num_classes", "input_size": f"{fsr}.height/width",
                 "depth_multiplier": "model.ssd.feature_extractor.depth_multiplier"}.get(
            exc.where, exc.where)
        raise CheckpointError(f"{field}: {exc.problem}", where=where, fix=exc.fix) from None

    qat = config.graph_rewriter.HasField("quantization")
    qat_settings = _settings(config.graph_rewriter.quantization, _QUANT_FIELDS) if qat else None

    postprocess = None
    if ssd.HasField("post_processing"):
        pp = ssd.post_processing
        postprocess = {}
        if pp.HasField("batch_non_max_suppression"):
            postprocess.update(_settings(pp.batch_non_max_suppression, _NMS_FIELDS))
        postprocess["score_converter"] = _enum_name(pp, "score_converter")

    anchors = None
    if ssd.anchor_generator.HasField("ssd_anchor_generator"):
        gen = ssd.anchor_generator.ssd_anchor_generator
        anchors = {"type": "ssd_anchor_generator", **_settings(gen, _ANCHOR_FIELDS),
                   "aspect_ratios": [float(r) for r in gen.aspect_ratios]}
    elif ssd.HasField("anchor_generator"):
        found = first(raw, "model.ssd.anchor_generator", {})
        anchors = {"type": ssd.anchor_generator.WhichOneof("anchor_generator_oneof")
                   or next(iter(found), "unknown")}

    box_coder = None
    if ssd.box_coder.HasField("faster_rcnn_box_coder"):
        box_coder = {"type": "faster_rcnn_box_coder",
                     **_settings(ssd.box_coder.faster_rcnn_box_coder, _BOX_CODER_FIELDS)}

    readers = [config.train_input_reader, *config.eval_input_reader]
    label_map_path = next((r.label_map_path for r in readers if r.label_map_path), None)

    return {
        "path": str(path),
        "variant": variant,
        "feature_extractor_type": fe_type,
        "num_classes": num_classes,
        "input_size": height,
        "depth_multiplier": depth_multiplier,
        "spec": spec,
        "qat": qat,
        "qat_settings": qat_settings,
        "postprocess": postprocess,
        "anchors": anchors,
        "box_coder": box_coder,
        "label_map_path": label_map_path,
        "label_map": _embedded_label_map(text, path),
        "raw": raw,
    }


def _embedded_label_map(text: str, path: Path) -> dict | None:
    """The label map write_pipeline_config puts in comment lines, or None."""
    items = [line[len(LABEL_MAP_COMMENT):] for line in text.splitlines()
             if line.startswith(LABEL_MAP_COMMENT)]
    if not items:
        return None
    out = {}
    for n, item in enumerate(items, 1):
        try:
            msg = parse_text_proto(item, source=f"{path} (label map comment {n})")
        except TextProtoError as exc:
            raise CheckpointError(f"label map comment line is malformed: {exc.problem}",
                                  where=exc.where, fix="write the config again.") from None
        try:
            item = first(msg, "item")
            idx, cid, name = (first(item, "class_index"), first(item, "category_id"),
                              first(item, "name"))
        except KeyError as exc:
            raise CheckpointError(f"label map comment {n} lacks {exc.args[0]}.", where=str(path),
                                  fix="write the config again.") from None
        out[int(idx)] = {"name": str(name), "category_id": int(cid)}
    return out


# ============================================================== label_map.pbtxt
def read_label_map(path) -> dict:
    """A TFOD StringIntLabelMap (`item { id: 1 name: "person" }` ...) -> {class_index: {name,
    category_id}} with TFOD's convention class_index = id - 1 (id 0 is the background)."""
    path = Path(path)
    text = _read_text(path, "label map")
    label_map, _ = _parse(path, text, tfod_schema.StringIntLabelMap(), "label map")
    if not label_map.item:
        raise CheckpointError("label map has no `item { ... }` entries.", where=str(path),
                              fix="list each class as item { id: 1 name: \"person\" }.")
    out = {}
    for n, item in enumerate(label_map.item, 1):
        if not item.HasField("id"):
            raise CheckpointError(f"item {n} has no whole-number id.", where=str(path),
                                  fix="give every item an id: 1, 2, ...")
        cid = item.id
        if cid == 0:
            continue  # background
        if cid < 0:
            raise CheckpointError(f"item {n} has id {cid}; ids start at 1.", where=str(path),
                                  fix="number the classes from 1 (0 is the background).")
        if cid - 1 in out:
            raise CheckpointError(f"id {cid} appears twice (item {n}).", where=str(path),
                                  fix="give every item its own id.")
        name = item.display_name or item.name or f"class_{cid}"
        out[cid - 1] = {"name": name, "category_id": cid}
    return dict(sorted(out.items()))


def format_label_map(label_map: dict) -> str:
    """{class_index: {name, category_id}} -> TFOD label_map.pbtxt text (id = class_index + 1,
    TFOD's convention; the dataset category id goes into a comment)."""
    out = []
    for idx, entry in _sorted_label_map(label_map):
        out.append(f"item {{\n  id: {idx + 1}  # category_id {entry['category_id']}\n"
                   f"  name: \"{escape_string(entry['name'])}\"\n}}\n")
    return "".join(out)


def _sorted_label_map(label_map: dict):
    rows = []
    for key, entry in (label_map or {}).items():
        try:
            idx = int(key)
            name, cid = str(entry["name"]), int(entry["category_id"])
        except (TypeError, ValueError, KeyError):
            raise ConfigError(f"label map entry {key!r}: {entry!r} is not "
                              "class_index -> {\"name\": str, \"category_id\": int}.",
                              where="label_map", fix="pass {0: {\"name\": \"person\", "
                              "\"category_id\": 1}, ...}.") from None
        rows.append((idx, {"name": name, "category_id": cid}))
    return sorted(rows)


# ============================================================== pipeline.config: write
def pipeline_config_dict(spec, *, qat: bool, steps: int, batch_size: int = 8,
                         learning_rate: float = 0.08) -> dict:
    """The TFOD-style config of one of this project's models, as a text-format dict."""
    E = EnumValue
    steps = int(steps)
    warmup = min(2000, max(0, steps // 10))
    hyper = lambda decay_eps: {  # noqa: E731
        "activation": E("RELU_6"),
        "regularizer": {"l2_regularizer": {"weight": 4e-05}},
        "initializer": {"truncated_normal_initializer": {"mean": 0.0, "stddev": 0.03}},
        "batch_norm": {"train": True, "scale": True, "center": True,
                       "decay": decay_eps[0], "epsilon": decay_eps[1]},
    }
    ssd = {
        "inplace_batchnorm_update": True,
        "freeze_batchnorm": False,
        "num_classes": spec.num_classes,
        "box_coder": {"faster_rcnn_box_coder": {"y_scale": 10.0, "x_scale": 10.0,
                                                "height_scale": 5.0, "width_scale": 5.0}},
        "matcher": {"argmax_matcher": {"matched_threshold": 0.5, "unmatched_threshold": 0.5,
                                       "ignore_thresholds": False,
                                       "negatives_lower_than_unmatched": True,
                                       "force_match_for_each_row": True,
                                       "use_matmul_gather": True}},
        "similarity_calculator": {"iou_similarity": {}},
        "encode_background_as_zeros": True,
        "anchor_generator": {"ssd_anchor_generator": {
            "num_layers": 6, "min_scale": 0.2, "max_scale": 0.95,
            "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333],
            "reduce_boxes_in_lowest_layer": True}},
        "image_resizer": {"fixed_shape_resizer": {"height": spec.input_size,
                                                  "width": spec.input_size}},
        "box_predictor": {"convolutional_box_predictor": {
            "min_depth": 0, "max_depth": 0, "num_layers_before_predictor": 0,
            "use_dropout": False, "dropout_keep_probability": 0.8, "kernel_size": 3,
            "use_depthwise": True, "box_code_size": 4, "apply_sigmoid_to_scores": False,
            "class_prediction_bias_init": -4.6,
            "conv_hyperparams": hyper((0.97, 0.001))}},
        "feature_extractor": {
            "type": VARIANT_TO_TYPE[spec.variant],
            "min_depth": 16,
            "depth_multiplier": float(spec.depth_multiplier),
            "use_depthwise": True,
            "conv_hyperparams": hyper((0.97, 0.001)),
            "override_base_feature_extractor_hyperparams": False},
        "loss": {
            "classification_loss": {"weighted_sigmoid_focal": {"alpha": 0.75, "gamma": 2.0}},
            "localization_loss": {"weighted_smooth_l1": {"delta": 1.0}},
            "classification_weight": 1.0,
            "localization_weight": 1.0},
        "normalize_loss_by_num_matches": True,
        "normalize_loc_loss_by_codesize": True,
        "post_processing": {
            "batch_non_max_suppression": {"score_threshold": 1e-8, "iou_threshold": 0.6,
                                          "max_detections_per_class": 100,
                                          "max_total_detections": 100,
                                          "use_static_shapes": True},
            "score_converter": E("SIGMOID")},
    }
    config = {
        "model": {"ssd": ssd},
        "train_config": {
            "batch_size": int(batch_size),
            "num_steps": steps,
            "data_augmentation_options": [{"random_horizontal_flip": {}},
                                          {"ssd_random_crop": {}}],
            "optimizer": {
                "momentum_optimizer": {
                    "learning_rate": {"cosine_decay_learning_rate": {
                        "learning_rate_base": float(learning_rate),
                        "total_steps": max(steps, 1),
                        "warmup_learning_rate": round(float(learning_rate) / 6, 6),
                        "warmup_steps": warmup}},
                    "momentum_optimizer_value": 0.9},
                "use_moving_average": False},
            "max_number_of_boxes": 100,
            "unpad_groundtruth_tensors": False},
        "eval_config": {"metrics_set": "coco_detection_metrics", "use_moving_averages": False},
    }
    if qat:
        config["graph_rewriter"] = {"quantization": {"delay": 0, "weight_bits": 8,
                                                     "activation_bits": 8}}
    return config


def write_pipeline_config(path, spec, *, qat: bool, label_map: dict, steps: int,
                          batch_size: int = 8, learning_rate: float = 0.08) -> Path:
    """Write a TFOD-style pipeline.config for one of this project's checkpoints (atomically).

    `label_map` ({class_index: {"name", "category_id"}}) goes into comment lines that
    read_pipeline_config reads back (TFOD ignores them). Returns the path.
    """
    path = Path(path)
    rows = _sorted_label_map(label_map)
    header = [
        f"# SSDLite + MobileDet-{spec.variant.upper() if spec.variant != 'edgetpu' else 'EdgeTPU'}"
        f" ({VARIANT_TO_TYPE[spec.variant]}), {spec.input_size}x{spec.input_size} input, depth "
        f"multiplier {spec.depth_multiplier:g}, {spec.num_classes} classes.",
        "# Written by the mobiledet pipeline in TFOD pipeline.config (protobuf text) format.",
        "# " + ("Quantization-aware training: graph_rewriter { quantization } below; the exported "
                "graph carries FakeQuant nodes." if qat else "Float training (no graph_rewriter)."),
        "#",
    ]
    if rows:
        header.append("# Label map: model class index -> dataset category (read back by "
                      "include.convert.tfod; ignored by TFOD).")
        for idx, entry in rows:
            header.append(f"{LABEL_MAP_COMMENT}item {{ class_index: {idx} category_id: "
                          f"{entry['category_id']} name: \"{escape_string(entry['name'])}\" }}")
        header.append("#")
    config = pipeline_config_dict(spec, qat=qat, steps=steps, batch_size=batch_size,
                                  learning_rate=learning_rate)
    body = "\n".join(format_text_proto({key: value}) for key, value in config.items())
    text = "\n".join(header) + "\n\n" + body
    return write_text_atomic(path, text)
