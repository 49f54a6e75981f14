"""A TFOD (TF1) training checkpoint -> a checkpoint folder of this project, without TF1.

    check_tfod(prefix, config)            the mapping report; reads only PREFIX.index
    import_tfod(prefix, config, out)      writes OUT as `mobiledet train` writes a checkpoint

The model is the one `pipeline.config` describes (include/convert/tfod.py reads it): variant,
classes, input size, depth multiplier, QAT or float. Every variable of the checkpoint is either
mapped onto that model by name (include/tfod/names.py), or ignored because it holds no model
weight (optimizer slots such as Momentum or Adam's, global_step, the moving-average helpers of
quantization ranges, ExponentialMovingAverage shadows), and said so. Anything else, in either
direction, or a shape that differs, is a CheckpointError naming the variables, both shapes and
the nearest names.

Float checkpoints fill the float model (convs + batch norm). QAT checkpoints (contrib.quantize)
fill the float model, fold batch norm into the convs exactly as the QAT model is built
(include/mobiledet/qat.py, scheme "all_kernels") and then set every quantization range the
checkpoint holds: weight ranges on the conv kernels, activation ranges on the ReLU6 / linear
conv outputs, residual-add ranges on the adds. The two concatenations (which TF1 does not
quantize; its converter gives them the range their inputs span) get exactly that span. The
uint8 model's tensors then carry the ranges training learnt. When the config evaluates with
moving averages (eval_config.use_moving_averages, as TFOD's exporter does) and the checkpoint
has ExponentialMovingAverage shadows, the shadows are the weights.

The checkpoint folder's lineage (checkpoint.json `source`) names the TFOD prefix, the global
step, the index's and the config's sha256; its fingerprint is the step's identity
(include/tfod/training.py), so importing the same step twice gives the same checkpoint.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from include.errors import CheckpointError
from include.tfod import names as N
from include.tfod.checkpoint_index import CheckpointIndex, data_file_name, prefix_of, read_index
from include.tfod.identity import iso_utc, step_fingerprint

LABEL_MAP_NAMES = ("label_map.pbtxt", "labelmap.pbtxt")
_SHOW = 8   # variables named in an error message, per list


@dataclass
class Plan:
    prefix: str
    config_path: str
    cfg: dict
    index: CheckpointIndex
    variables: list                      # names.Variable, all present with matching shapes
    moving_averages: bool                # read the ExponentialMovingAverage shadows
    report: dict = field(default_factory=dict)


# ---------------------------------------------------------------- planning (index only)
def _read_config(config):
    from include.convert.tfod import read_pipeline_config

    return read_pipeline_config(config)


def _shape(s) -> str:
    return "[" + ", ".join(str(int(d)) for d in s) + "]"


def plan_import(prefix, config) -> Plan:
    """Read the index and the config, map every variable; CheckpointError on any mismatch.
    The report is filled even when it raises (exc.report) so `--check --json` can print it."""
    prefix = prefix_of(prefix)
    cfg = _read_config(config)
    index = read_index(prefix)
    spec, qat, variant = cfg["spec"], cfg["qat"], cfg["variant"]
    index_file = prefix + ".index"
    names = list(index.entries)

    if "_CHECKPOINTABLE_OBJECT_GRAPH" in index.entries:
        raise CheckpointError(
            "this is a TF2 object-based checkpoint (it has _CHECKPOINTABLE_OBJECT_GRAPH, as "
            "TFOD's model_main_tf2.py writes), not a TF1 training checkpoint.", where=index_file,
            fix="import the checkpoint of a TF1 TFOD training (model_main.py / train.py; "
                "MobileDet is a TF1 model in TFOD), or export the TF2 model yourself.")
    scopes = N.feature_extractor_scopes(names)
    want = N.SCOPES[variant]
    if want not in scopes:
        found = ", ".join(N.describe_scope(s) for s in scopes) or "no FeatureExtractor/ variables"
        raise CheckpointError(
            f"the checkpoint's feature extractor is {found}, but {config} describes "
            f"{cfg['feature_extractor_type']} (FeatureExtractor/{want}): this checkpoint is "
            "another architecture, or the config is not the one it was trained with.",
            where=index_file,
            fix="pass the pipeline.config the checkpoint was trained with; only MobileDet "
                f"feature extractors ({', '.join('ssd_mobiledet_' + v for v in N.SCOPES)}) "
                "can be imported.")
    has_ranges = any(n.endswith("/weights_quant/min") for n in names)
    if qat and variant == "cpu":
        raise CheckpointError(
            f"{config} trains MobileDet-CPU with graph_rewriter {{ quantization }}; this project "
            "has no quantization-aware form of the CPU variant (hard-swish and squeeze-excite "
            "have no 8-bit scheme in tensorflow-model-optimization), so its ranges cannot be "
            "kept.", where=str(config),
            fix="import a float MobileDet-CPU checkpoint and use the int8 (post-training) recipe.")
    if qat != has_ranges:
        said = ("declares quantization-aware training (graph_rewriter { quantization })" if qat
                else "has no graph_rewriter { quantization } (a float model)")
        held = ("holds quantization ranges (.../weights_quant/min, ...)" if has_ranges
                else "holds no quantization ranges")
        raise CheckpointError(f"{config} {said}, but the checkpoint {held}.", where=index_file,
                              fix="pass the pipeline.config this checkpoint was trained with.")
    _check_classes(index, cfg, index_file, str(config))
    check_head_settings(cfg, str(config))

    expected = {v.name: v for v in N.layout(spec).variables(qat)}
    eval_ema = bool(_first(cfg["raw"], "eval_config.use_moving_averages", False))
    shadows = {n[:-len(N.EMA_SUFFIX)] for n in names if n.endswith(N.EMA_SUFFIX)}
    # as TF1's ExponentialMovingAverage.variables_to_restore: a variable with a shadow is
    # read from it, one without (batch-norm statistics) as it is
    use_ema = eval_ema and any(n in shadows for n in expected)
    ignored, kinds, unmapped_ckpt = [], {}, []
    for n in names:
        if n in expected:
            continue
        kind = N.ignored_kind(n)
        if kind:
            ignored.append(n)
            kinds[kind] = kinds.get(kind, 0) + 1
        else:
            unmapped_ckpt.append(n)
    unmapped_model = [n for n in expected if n not in index.entries]
    mismatched = [n for n in expected if n in index.entries
                  and tuple(index.entries[n].shape) != tuple(expected[n].shape)]
    mapped = [expected[n] for n in expected if n in index.entries and n not in mismatched]
    step = _step_of(prefix)
    report = {
        "variant": variant, "qat": qat, "mapped": len(mapped), "ignored": ignored,
        "unmapped_checkpoint": unmapped_ckpt, "unmapped_model": unmapped_model,
        "checkpoint": prefix, "config": str(config), "step": step,
        "values": sum(index.entries[v.name].num_elements for v in mapped if v.kind == "weight"),
        "ranges": sum(1 for v in mapped if v.kind == "range"),
        "ignored_kinds": kinds,
        "moving_averages": "used" if use_ema else ("ignored" if shadows else None),
        "shape_mismatches": [{"name": n, "checkpoint": list(index.entries[n].shape),
                              "model": list(expected[n].shape)} for n in mismatched],
    }
    plan = Plan(prefix, str(config), cfg, index, mapped, use_ema, report)
    if unmapped_ckpt or unmapped_model or mismatched:
        exc = _mapping_error(plan, expected, unmapped_ckpt, unmapped_model, mismatched)
        exc.report = report
        raise exc
    return plan


def _first(raw, path, default):
    from include.convert.tfod import first

    return first(raw, path, default)


def _step_of(prefix: str) -> int | None:
    tail = Path(prefix).name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


def _check_classes(index, cfg, index_file, config):
    from include.mobiledet.anchors import num_anchors_per_location

    entry = index.entries.get("BoxPredictor_0/ClassPredictor/biases")
    if entry is None or len(entry.shape) != 1:
        return   # reported as unmapped by the name check
    anchors = num_anchors_per_location(6)[0]
    outputs = int(entry.shape[0])
    if outputs != anchors * (cfg["num_classes"] + 1):
        per = outputs / anchors
        trained = (f"{int(per) - 1} classes + background" if per == int(per)
                   else f"{per:g} outputs per anchor")
        raise CheckpointError(
            f"model.ssd.num_classes is {cfg['num_classes']} in {config}, but the checkpoint's "
            f"class predictor BoxPredictor_0/ClassPredictor/biases has {outputs} outputs = "
            f"{anchors} anchors x {trained}; with {cfg['num_classes']} classes it would have "
            f"{anchors * (cfg['num_classes'] + 1)}.", where=index_file,
            fix="pass the pipeline.config the checkpoint was trained with"
                + (f" (model.ssd.num_classes: {int(per) - 1})" if per == int(per) else "") + ".")


def check_head_settings(cfg, config):
    """Settings the weights do not show but the model needs as trained: batch-norm epsilon of
    the feature maps and box predictor (folded into the convs), anchors and box coder (the
    exported graph's constants and post-process)."""
    from include.mobiledet import anchors as anchor_gen
    from include.mobiledet.blocks import HEAD_BN
    from include.mobiledet.box_coder import SCALES

    ssd = "model.ssd"
    raw = cfg["raw"]
    wants = [(f"{ssd}.{p}.conv_hyperparams.batch_norm.epsilon", HEAD_BN["epsilon"])
             for p in ("feature_extractor", "box_predictor.convolutional_box_predictor")]
    a = cfg.get("anchors") or {}
    if a.get("type") not in (None, "ssd_anchor_generator"):
        raise CheckpointError(f"{ssd}.anchor_generator is {a['type']}; MobileDet SSDLite uses "
                              "ssd_anchor_generator.", where=config,
                              fix="pass the config of an ssdlite_mobiledet model.")
    gen = f"{ssd}.anchor_generator.ssd_anchor_generator"
    defaults = {"num_layers": 6, "min_scale": 0.2, "max_scale": 0.95,
                "reduce_boxes_in_lowest_layer": True, "interpolated_scale_aspect_ratio": 1.0}
    wants += [(f"{gen}.{k}", v) for k, v in defaults.items()]
    found = {f"{gen}.{k}": a[k] for k in defaults if k in a}
    if a.get("aspect_ratios"):
        got, want = a["aspect_ratios"], anchor_gen.DEFAULT_ASPECT_RATIOS
        if len(got) != len(want) or any(abs(x - y) > 1e-3 for x, y in zip(got, want)):
            raise CheckpointError(
                f"{gen}.aspect_ratios are {got}; this project's anchors (and the exported "
                f"graph's) use {[round(r, 4) for r in want]}.", where=config,
                fix="only the MobileDet configs' anchors can be imported.")
    coder = cfg.get("box_coder") or {}
    for key, want in zip(("y_scale", "x_scale", "height_scale", "width_scale"), SCALES):
        wants.append((f"{ssd}.box_coder.faster_rcnn_box_coder.{key}", want))
        if key in coder:
            found[f"{ssd}.box_coder.faster_rcnn_box_coder.{key}"] = coder[key]
    for path, want in wants:
        got = found.get(path, _first(raw, path, want))
        if isinstance(want, bool) and bool(got) != want or \
                not isinstance(want, bool) and abs(float(got) - float(want)) > 1e-6:
            raise CheckpointError(
                f"{path} is {got}; this project's MobileDet SSDLite has {want} (the published "
                "configs' value), so the imported model would not compute what was trained.",
                where=config, fix=f"only models trained with {path}: {want} can be imported.")


def _mapping_error(plan, expected, unmapped_ckpt, unmapped_model, mismatched):
    idx = plan.index.entries
    model_names = list(expected)
    parts = []
    if mismatched:
        rows = [f"{n} is {_shape(idx[n].shape)} in the checkpoint but "
                f"{_shape(expected[n].shape)} in the model (Keras {expected[n].layer})"
                for n in mismatched[:_SHOW]]
        parts.append(f"{len(mismatched)} shape(s) differ: " + "; ".join(rows)
                     + ("; ..." if len(mismatched) > _SHOW else ""))
    if unmapped_ckpt:
        rows = []
        for n in unmapped_ckpt[:_SHOW]:
            near = N.nearest(n, [m for m in model_names if m not in idx])
            rows.append(f"{n} {_shape(idx[n].shape)}"
                        + (f" (nearest model name: {near[0]} {_shape(expected[near[0]].shape)})"
                           if near else ""))
        parts.append(f"{len(unmapped_ckpt)} checkpoint variable(s) have no place in the model: "
                     + "; ".join(rows) + ("; ..." if len(unmapped_ckpt) > _SHOW else ""))
    if unmapped_model:
        rows = []
        for n in unmapped_model[:_SHOW]:
            near = N.nearest(n, unmapped_ckpt or list(idx))
            rows.append(f"{n} {_shape(expected[n].shape)} (Keras {expected[n].layer})"
                        + (f" (nearest checkpoint name: {near[0]} {_shape(idx[near[0]].shape)})"
                           if near else ""))
        parts.append(f"{len(unmapped_model)} model variable(s) are not in the checkpoint: "
                     + "; ".join(rows) + ("; ..." if len(unmapped_model) > _SHOW else ""))
    spec = plan.cfg["spec"]
    return CheckpointError(
        f"the checkpoint does not fit the {spec.variant} model {plan.config_path} describes "
        f"({spec.num_classes} classes, depth multiplier {spec.depth_multiplier:g}"
        f"{', QAT' if plan.cfg['qat'] else ''}). " + " ".join(parts),
        where=plan.prefix + ".index",
        fix="pass the pipeline.config the checkpoint was trained with (feature_extractor type, "
            "depth_multiplier, min_depth, num_classes, use_depthwise must be the training's); "
            "`mobiledet import-tfod --check --json` lists every name.")


def check_tfod(prefix, config) -> dict:
    """The mapping report of a TFOD checkpoint (reads only PREFIX.index and the config)."""
    return plan_import(prefix, config).report


# ---------------------------------------------------------------- labels
def find_label_map(cfg: dict, config_path, labels=None):
    """-> ({class_index: {"name", "category_id"}}, where they came from or None)."""
    from include.convert.tfod import read_label_map

    if labels:
        from include.data.labels import read_labels

        found = read_labels(labels)
        return ({int(k): {"name": v["name"], "category_id": int(v["category_id"])}
                 for k, v in found.items()}, str(labels))
    if cfg.get("label_map"):
        return cfg["label_map"], str(config_path)
    folder = Path(config_path).parent
    candidates = []
    if cfg.get("label_map_path"):
        named = Path(cfg["label_map_path"])
        candidates += [named if named.is_absolute() else folder / named, folder / named.name]
    candidates += [folder / n for n in LABEL_MAP_NAMES]
    for cand in candidates:
        if cand.is_file():
            return read_label_map(cand), str(cand)
    return {}, None


def _check_labels(label_map, source, spec):
    too_high = [k for k in label_map if int(k) >= spec.num_classes]
    if too_high:
        raise CheckpointError(
            f"the label map names class id {max(too_high) + 1} (output class {max(too_high)}), "
            f"but the model has {spec.num_classes} classes (ids 1..{spec.num_classes}).",
            where=source, fix="pass the label map the checkpoint was trained with (--labels), "
                              "or fix model.ssd.num_classes in pipeline.config.")


# ---------------------------------------------------------------- import
def check_data_files(index: CheckpointIndex, prefix: str) -> list:
    """The data shards' paths; CheckpointError naming a missing or truncated one."""
    paths = []
    for shard, needed in index.required_shard_sizes().items():
        path = Path(data_file_name(prefix, shard, index.num_shards))
        if not path.is_file():
            raise CheckpointError(
                f"the checkpoint's data file is missing: its .index places "
                f"{sum(1 for e in index.entries.values() if e.shard == shard)} tensors "
                f"({needed} bytes) in shard {shard} of {index.num_shards}.", where=str(path),
                fix="copy every model.ckpt-N.data-* file together with model.ckpt-N.index "
                    "from the training folder.")
        size = path.stat().st_size
        if size < needed:
            raise CheckpointError(
                f"the checkpoint's data file is truncated: {size} bytes, but the .index "
                f"places tensors up to byte {needed}.", where=str(path),
                fix="copy the file again from the training folder (the copy or the upload was "
                    "cut short), or wait until training has finished writing this step.")
        paths.append(path)
    return paths


def _read_values(plan: Plan, data_files) -> tuple:
    """{TF1 name: numpy array} of the mapped variables, and the global step."""
    import numpy as np
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(plan.prefix)
    except Exception as exc:  # noqa: BLE001 - TF raises many types for unreadable files
        raise CheckpointError(f"TensorFlow cannot open the checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0]}).", where=str(data_files[0]),
                              fix="copy the model.ckpt-N.* files again.") from None
    values = {}
    for v in plan.variables:
        name = v.name
        shadow = name + N.EMA_SUFFIX
        if plan.moving_averages and v.kind == "weight" and shadow in plan.index.entries:
            name = shadow
        entry = plan.index.entries[name]
        try:
            values[v.name] = np.asarray(reader.get_tensor(name), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - DataLossError on a bad checksum, ...
            path = data_file_name(plan.prefix, entry.shard, plan.index.num_shards)
            raise CheckpointError(f"tensor {name} cannot be read ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0]}).", where=path,
                                  fix="copy the file again from the training folder.") from None
    step = _step_of(plan.prefix)
    if "global_step" in plan.index.entries:
        try:
            step = int(reader.get_tensor("global_step"))
        except Exception:  # noqa: BLE001 - keep the prefix's number
            pass
    return values, step


def _assign(model, variables, values, where):
    for v in variables:
        layer = model.get_layer(v.layer)
        target = next((w for w in layer.weights if w.name.endswith(f"/{v.attr}:0")), None)
        if target is None:
            target = getattr(layer, v.attr, None)
        if target is None:
            raise CheckpointError(f"the model layer {v.layer} has no {v.attr} for {v.name}.",
                                  where=where, fix="report this: the model and names.py differ.")
        target.assign(values[v.name].reshape(tuple(target.shape)))


def _set_ranges(qat_model, plan: Plan, values):
    """The checkpoint's ranges onto the QAT model; the two concats get their inputs' span."""
    ranges = [v for v in plan.variables if v.kind == "range"]
    for v in ranges:
        if v.name.endswith("/min"):
            lo, hi = float(values[v.name]), float(values[v.name[:-3] + "max"])
            if not hi > lo:
                raise CheckpointError(
                    f"the quantization range {v.name[:-4]} is [{lo:g}, {hi:g}]: empty, so no "
                    "8-bit scale can be made from it.", where=plan.prefix + ".index",
                    fix="import a checkpoint after quantization-aware training has run for a "
                        "while (graph_rewriter.quantization.delay), or the float checkpoint.")
    _assign(qat_model, ranges, values, plan.prefix)
    for concat, convs in N.layout(plan.cfg["spec"]).concats:
        lo = min(float(values[f"{c.tfod}/act_quant/min"]) for c in convs)
        hi = max(float(values[f"{c.tfod}/act_quant/max"]) for c in convs)
        layer = qat_model.get_layer(f"quant_{concat}")
        for w in layer.weights:
            if w.name.endswith("/output_min:0"):
                w.assign(lo)
            elif w.name.endswith("/output_max:0"):
                w.assign(hi)


def _created_of(paths) -> str:
    return iso_utc(max(Path(p).stat().st_mtime for p in paths))


def import_tfod(prefix, config, out, *, labels=None, identity: tuple | None = None) -> dict:
    """Write the checkpoint folder OUT from a TFOD checkpoint (see the module docstring).

    labels: a label_map.pbtxt or labels.txt overriding the config's label_map_path.
    identity: (fingerprint, created) to keep (the landing watcher's Step); default: computed
    from the index, the config and the files' modification times.
    Returns the report of check_tfod plus out, fingerprint, created, labels, label_source.
    """
    from include.mobiledet.checkpoint import save_checkpoint
    from include.mobiledet.ssd import build_detector

    plan = plan_import(prefix, config)
    spec, qat = plan.cfg["spec"], plan.cfg["qat"]
    label_map, label_source = find_label_map(plan.cfg, config, labels)
    if label_source:
        _check_labels(label_map, label_source, spec)
    data_files = check_data_files(plan.index, plan.prefix)
    values, step = _read_values(plan, data_files)

    index_bytes = Path(plan.prefix + ".index").read_bytes()
    config_bytes = Path(config).read_bytes()
    if identity is None:
        identity = (step_fingerprint(step if step is not None else 0, index_bytes, config_bytes),
                    _created_of([plan.prefix + ".index", *data_files]))
    fingerprint, created = identity

    weights = [v for v in plan.variables if v.kind == "weight"]
    model = build_detector(spec)
    _assign(model, weights, values, plan.prefix)
    if qat:
        from include.mobiledet.qat import ALL_KERNELS, qat_from_float

        model = qat_from_float(model, spec, scheme=ALL_KERNELS)
        _set_ranges(model, plan, values)

    source = {
        "kind": "tfod",
        "checkpoint": str(Path(plan.prefix).resolve()),
        "global_step": step,
        "pipeline_config": str(Path(config).resolve()),
        "pipeline_config_sha256": hashlib.sha256(config_bytes).hexdigest(),
        "index_sha256": hashlib.sha256(index_bytes).hexdigest(),
        "feature_extractor": plan.cfg["feature_extractor_type"],
        "mapped": plan.report["mapped"],
        "ranges": plan.report["ranges"],
        "ignored": plan.report["ignored_kinds"],
        "moving_averages": plan.report["moving_averages"],
        "labels": label_source,
        "imported": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    meta = save_checkpoint(model, out, spec, qat=qat, label_map=label_map,
                           steps=int(step or 0), data_fingerprint=None,
                           training={"imported_from": "tfod", "global_step": step},
                           parent=source["checkpoint"], source=source,
                           fingerprint=fingerprint, created=created)
    return {**plan.report, "step": step, "out": str(out), "fingerprint": meta["fingerprint"],
            "created": meta["created"], "labels": len(label_map), "label_source": label_source,
            "qat_scheme": meta.get("qat_scheme")}
