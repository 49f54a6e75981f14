"""Graph sources: the two kinds of folder the converter accepts, opened as one `GraphSource`.

    export  DIR/tflite_graph.pb + DIR/export.json (+ DIR/pipeline.config), written by
            `mobiledet export`; export.json is authoritative, pipeline.config is cross-checked.
    tfod    DIR/tflite_graph.pb + DIR/pipeline.config, as TFOD's export_tflite_ssd_graph.py
            writes them; the spec and QAT come from the config (optional label map next to it).

Either way the GraphDef itself is read and checked: the `normalized_input_image_tensor`
placeholder and the `TFLite_Detection_PostProcess` node must be there, the post-process node's
num_classes must match the spec, and the QAT claim (export.json / graph_rewriter) must match
the presence of FakeQuantWithMinMax* nodes in the graph.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from include.errors import CheckpointError, ConfigError
from include.store.store import sha256_file
from include.mobiledet.spec import ModelSpec

GRAPH_FILE = "tflite_graph.pb"
CONFIG_FILE = "pipeline.config"
EXPORT_FILE = "export.json"
INPUT_NAME = "normalized_input_image_tensor"
POSTPROCESS_OP = "TFLite_Detection_PostProcess"
FAKE_QUANT_PREFIX = "FakeQuantWithMinMax"  # ...Vars, ...VarsPerChannel, ...Args
LABEL_MAP_NAMES = ("label_map.pbtxt", "labelmap.pbtxt")

EXPECTED_FILES = (f"an export folder holds {GRAPH_FILE}, {EXPORT_FILE} and {CONFIG_FILE} "
                  f"(`mobiledet export`); a TFOD bundle holds {GRAPH_FILE} and {CONFIG_FILE} "
                  "(TFOD's export_tflite_ssd_graph.py)")
_EXPORT_HOW = ("export it with `mobiledet export`, or with TFOD's export_tflite_ssd_graph.py "
               "(add_postprocessing_op=true)")


@dataclass(frozen=True)
class GraphSource:
    path: Path                      # the folder
    graph_path: Path                # DIR/tflite_graph.pb
    kind: str                       # "export" | "tfod"
    spec: ModelSpec
    qat: bool
    input_name: str
    input_shape: tuple              # (1, S, S, 3)
    output_names: tuple             # the post-process node's four outputs
    postprocess: dict               # the post-process node's attributes, as Python values
    label_map: dict | None          # {class_index: {"name", "category_id"}}
    fingerprint: str                # sha256 of tflite_graph.pb
    has_fake_quant: bool
    fake_quant_nodes: int = 0
    num_anchors: int | None = None
    config_path: Path | None = None
    checkpoint: dict | None = None  # export.json's checkpoint {uri, fingerprint, ...}
    notes: tuple = field(default=())  # non-fatal disagreements worth showing a person

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "graph_path": str(self.graph_path), "kind": self.kind,
            "spec": self.spec.to_dict(), "qat": self.qat, "input_name": self.input_name,
            "input_shape": list(self.input_shape), "output_names": list(self.output_names),
            "postprocess": dict(self.postprocess),
            "label_map": ({str(k): dict(v) for k, v in self.label_map.items()}
                          if self.label_map is not None else None),
            "fingerprint": self.fingerprint, "has_fake_quant": self.has_fake_quant,
            "fake_quant_nodes": self.fake_quant_nodes, "num_anchors": self.num_anchors,
            "config_path": str(self.config_path) if self.config_path else None,
            "checkpoint": self.checkpoint, "notes": list(self.notes),
        }

    def graph_def(self):
        """The parsed GraphDef (read again from graph_path)."""
        return read_graph_def(self.graph_path)


# ================================================================== GraphDef reading
def read_graph_def(path):
    """tflite_graph.pb -> tf.compat.v1.GraphDef; CheckpointError if it does not parse."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.framework import graph_pb2

    path = Path(path)
    data = path.read_bytes()
    graph_def = graph_pb2.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path.name} ({len(data)} bytes) is not a readable GraphDef "
                              f"({exc}); the file is truncated or not a frozen graph.",
                              where=str(path),
                              fix=f"copy the file again from its source, or {_EXPORT_HOW}.") from None
    if not graph_def.node:
        raise CheckpointError(f"{path.name} ({len(data)} bytes) holds no graph nodes.",
                              where=str(path), fix=f"{_EXPORT_HOW}.")
    return graph_def


def attr_value(av):
    """tensorflow AttrValue -> a plain Python value (int, float, bool, str, dtype name, list)."""
    from tensorflow.core.framework import types_pb2

    kind = av.WhichOneof("value")
    if kind == "i":
        return int(av.i)
    if kind == "f":
        return _f32(av.f)
    if kind == "b":
        return bool(av.b)
    if kind == "s":
        return av.s.decode("utf-8", errors="replace")
    if kind == "type":
        return types_pb2.DataType.Name(av.type)
    if kind == "shape":
        return None if av.shape.unknown_rank else [int(d.size) for d in av.shape.dim]
    if kind == "list":
        lst = av.list
        for name in ("i", "f", "b", "s", "type"):
            items = list(getattr(lst, name))
            if items:
                if name == "f":
                    return [_f32(x) for x in items]
                if name == "s":
                    return [x.decode("utf-8", errors="replace") for x in items]
                if name == "type":
                    return [types_pb2.DataType.Name(x) for x in items]
                return [bool(x) if name == "b" else int(x) for x in items]
        return []
    return None


def _f32(x: float) -> float:
    """A float32 attribute as the shortest decimal that round-trips (0.6, not 0.60000002)."""
    import numpy as np

    return float(str(np.float32(x)))


def inspect_graph(graph_def) -> dict:
    """What the converter needs to know about a TFLite-ready frozen graph.

    -> {input: {name, dtype, shape} | None, postprocess: {name, inputs, attrs} | None,
        fake_quant_nodes: int, nodes: int, num_anchors: int | None}
    """
    nodes = {n.name: n for n in graph_def.node}
    fake_quant = sum(1 for n in graph_def.node if n.op.startswith(FAKE_QUANT_PREFIX))
    for fn in graph_def.library.function:  # frozen TF2 graphs may keep function bodies
        fake_quant += sum(1 for n in fn.node_def if n.op.startswith(FAKE_QUANT_PREFIX))
    info = {"input": None, "postprocess": None, "fake_quant_nodes": fake_quant,
            "nodes": len(graph_def.node), "num_anchors": None}
    inp = nodes.get(INPUT_NAME)
    if inp is not None:
        info["input"] = {"name": inp.name, "op": inp.op,
                         "dtype": attr_value(inp.attr["dtype"]) if "dtype" in inp.attr else None,
                         "shape": attr_value(inp.attr["shape"]) if "shape" in inp.attr else None}
    pp = [n for n in graph_def.node if n.op == POSTPROCESS_OP]
    if pp:
        node = pp[0]
        info["postprocess"] = {"name": node.name, "inputs": list(node.input),
                               "attrs": {k: attr_value(v) for k, v in sorted(node.attr.items())},
                               "count": len(pp)}
        if len(node.input) == 3:
            anchors = nodes.get(node.input[2].split(":")[0].lstrip("^"))
            if anchors is not None and anchors.op == "Const" and "value" in anchors.attr:
                dims = [int(d.size) for d in anchors.attr["value"].tensor.tensor_shape.dim]
                if len(dims) == 2 and dims[1] == 4:
                    info["num_anchors"] = dims[0]
    return info


# ================================================================== open_graph
def open_graph(path) -> GraphSource:
    """Open an export folder or a TFOD bundle (or the tflite_graph.pb inside one)."""
    folder = Path(path)
    if folder.is_file() and folder.suffix == ".pb":
        folder = folder.parent
    if not folder.exists():
        raise CheckpointError("graph folder does not exist.", where=str(folder),
                              fix=f"pass the folder written by `mobiledet export`; {EXPECTED_FILES}.")
    if not folder.is_dir():
        raise CheckpointError("expected a folder, got a file.", where=str(folder),
                              fix=f"pass the folder that holds {GRAPH_FILE}; {EXPECTED_FILES}.")
    graph_path = folder / GRAPH_FILE
    export_path, config_path = folder / EXPORT_FILE, folder / CONFIG_FILE
    present = sorted(p.name for p in folder.iterdir())
    if not graph_path.is_file():
        raise CheckpointError(
            f"no {GRAPH_FILE} in the folder (it holds: {', '.join(present) or 'nothing'}).",
            where=str(folder), fix=f"{EXPECTED_FILES}; {_EXPORT_HOW}.")
    if not export_path.is_file() and not config_path.is_file():
        raise CheckpointError(
            f"neither {EXPORT_FILE} nor {CONFIG_FILE} is next to {GRAPH_FILE}, so the model's "
            "variant, classes, input size and QAT setting are unknown.", where=str(folder),
            fix=f"{EXPECTED_FILES}; copy the pipeline.config the graph was exported with.")
    if export_path.is_file():
        return _open_export(folder, graph_path, export_path,
                            config_path if config_path.is_file() else None)
    return _open_tfod(folder, graph_path, config_path)


def _open_export(folder, graph_path, export_path, config_path) -> GraphSource:
    from include.convert.tfod import read_pipeline_config

    where = str(export_path)
    try:
        info = json.loads(export_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{EXPORT_FILE} is not valid JSON ({exc}).", where=where,
                              fix="export the checkpoint again with `mobiledet export`.") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{EXPORT_FILE} must hold a JSON object.", where=where,
                              fix="export the checkpoint again with `mobiledet export`.")
    missing = [k for k in ("spec", "qat", "input", "outputs") if k not in info]
    if missing:
        raise CheckpointError(f"{EXPORT_FILE} lacks the field(s) {', '.join(missing)}.",
                              where=where, fix="export the checkpoint again with `mobiledet export`.")
    try:
        spec = ModelSpec.from_dict(info["spec"])
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        detail = exc.problem if isinstance(exc, ConfigError) else f"missing or bad {exc}"
        raise CheckpointError(f"field spec: {detail}", where=where,
                              fix="export the checkpoint again with `mobiledet export`.") from None
    if not isinstance(info["qat"], bool):
        raise CheckpointError(f"field qat must be true or false, got {info['qat']!r}.",
                              where=where, fix="export the checkpoint again.")
    inp = info["input"] if isinstance(info["input"], dict) else {}
    input_name = inp.get("name", INPUT_NAME)
    shape = inp.get("shape")
    outputs = info["outputs"]
    if not (isinstance(outputs, list) and len(outputs) == 4 and all(isinstance(o, str) for o in outputs)):
        raise CheckpointError(f"field outputs must list the four post-process outputs, got "
                              f"{outputs!r}.", where=where, fix="export the checkpoint again.")

    fingerprint = sha256_file(graph_path)
    recorded = info.get("graph_sha256")
    if recorded and recorded != fingerprint:
        raise CheckpointError(
            f"{GRAPH_FILE} ({graph_path.stat().st_size} bytes) does not match the graph_sha256 "
            f"recorded in {EXPORT_FILE}: it is truncated or was modified after the export.",
            where=str(graph_path), fix="copy the export folder again, or export again.")

    notes = []
    if config_path is not None:
        cfg = read_pipeline_config(config_path)
        if cfg["spec"] != spec:
            raise CheckpointError(
                f"{CONFIG_FILE} describes {_spec_text(cfg['spec'])} but {EXPORT_FILE} says "
                f"{_spec_text(spec)}.", where=str(folder),
                fix="the two files come from different exports: export the checkpoint again.")
        if cfg["qat"] != info["qat"]:
            raise CheckpointError(
                f"{EXPORT_FILE} says qat={str(info['qat']).lower()} but {CONFIG_FILE} "
                f"{'has' if cfg['qat'] else 'has no'} graph_rewriter {{ quantization }}.",
                where=str(folder), fix="export the checkpoint again so both files agree.")

    graph = inspect_graph(read_graph_def(graph_path))
    input_shape = _check_graph(graph, graph_path, spec, input_name, shape,
                               f"{EXPORT_FILE} field input.shape")
    output_names = _check_outputs(graph, graph_path, outputs)
    _check_qat(graph, graph_path, info["qat"], f"{EXPORT_FILE} says qat=true",
               f"{EXPORT_FILE} says qat=false",
               "export the float and QAT checkpoints into separate folders; "
               "export.json must describe the graph next to it")
    label_map = info.get("label_map")
    if isinstance(label_map, dict):
        label_map = {int(k): dict(v) for k, v in label_map.items()}
    else:
        label_map = None
    ckpt = info.get("checkpoint") if isinstance(info.get("checkpoint"), dict) else None
    return GraphSource(
        path=folder, graph_path=graph_path, kind="export", spec=spec, qat=info["qat"],
        input_name=input_name, input_shape=input_shape, output_names=output_names,
        postprocess=graph["postprocess"]["attrs"], label_map=label_map, fingerprint=fingerprint,
        has_fake_quant=graph["fake_quant_nodes"] > 0, fake_quant_nodes=graph["fake_quant_nodes"],
        num_anchors=graph["num_anchors"], config_path=config_path, checkpoint=ckpt,
        notes=tuple(notes))


def _open_tfod(folder, graph_path, config_path) -> GraphSource:
    from include.convert.tfod import read_label_map, read_pipeline_config

    cfg = read_pipeline_config(config_path)
    spec = cfg["spec"]
    graph = inspect_graph(read_graph_def(graph_path))
    input_shape = _check_graph(graph, graph_path, spec, INPUT_NAME, None, None,
                               config_path=config_path)
    pp = graph["postprocess"]
    output_names = tuple([pp["name"]] + [f"{pp['name']}:{i}" for i in (1, 2, 3)])
    _check_qat(graph, graph_path, cfg["qat"],
               f"{CONFIG_FILE} declares quantization-aware training "
               "(graph_rewriter { quantization })",
               f"{CONFIG_FILE} has no graph_rewriter {{ quantization }} (a float model)",
               "export the graph from the checkpoint this pipeline.config trained, or fix "
               "graph_rewriter in pipeline.config to match how the model was trained")
    notes = _compare_postprocess(pp["attrs"], cfg)

    label_map = cfg["label_map"]
    if label_map is None:
        candidates = [folder / n for n in LABEL_MAP_NAMES]
        if cfg["label_map_path"]:
            lm = Path(cfg["label_map_path"])
            candidates = [lm if lm.is_absolute() else folder / lm, folder / lm.name] + candidates
        for cand in candidates:
            if cand.is_file():
                label_map = read_label_map(cand)
                break
    if label_map is not None and len(label_map) > spec.num_classes:
        notes.append(f"the label map names {len(label_map)} classes but the model has "
                     f"{spec.num_classes}.")
    return GraphSource(
        path=folder, graph_path=graph_path, kind="tfod", spec=spec, qat=cfg["qat"],
        input_name=INPUT_NAME, input_shape=input_shape, output_names=output_names,
        postprocess=pp["attrs"], label_map=label_map, fingerprint=sha256_file(graph_path),
        has_fake_quant=graph["fake_quant_nodes"] > 0, fake_quant_nodes=graph["fake_quant_nodes"],
        num_anchors=graph["num_anchors"], config_path=config_path, checkpoint=None,
        notes=tuple(notes))


# ================================================================== checks
def _spec_text(spec: ModelSpec) -> str:
    return (f"{spec.variant}, {spec.num_classes} classes, {spec.input_size}x{spec.input_size}, "
            f"depth multiplier {spec.depth_multiplier:g}")


def _check_graph(graph, graph_path, spec, input_name, declared_shape, declared_where,
                 config_path=None) -> tuple:
    """Input placeholder and post-process node present and consistent -> input shape."""
    where = str(graph_path)
    pp = graph["postprocess"]
    if pp is None:
        raise CheckpointError(
            f"the graph has no {POSTPROCESS_OP} node ({graph['nodes']} nodes): it is not a "
            "TFLite-ready detection export (perhaps a saved_model or inference graph).",
            where=where, fix=f"{_EXPORT_HOW}.")
    if pp["count"] > 1:
        raise CheckpointError(f"the graph has {pp['count']} {POSTPROCESS_OP} nodes; expected one.",
                              where=where, fix=f"{_EXPORT_HOW}.")
    if len(pp["inputs"]) != 3:
        raise CheckpointError(
            f"{POSTPROCESS_OP} has {len(pp['inputs'])} inputs; expected three (box encodings, "
            "class predictions, anchors).", where=where, fix=f"{_EXPORT_HOW}.")
    graph_classes = pp["attrs"].get("num_classes")
    if graph_classes != spec.num_classes:
        source = (f"{CONFIG_FILE} (model.ssd.num_classes)" if config_path is not None
                  else f"{EXPORT_FILE} (spec.num_classes)")
        raise CheckpointError(
            f"the graph's {POSTPROCESS_OP} node has num_classes={graph_classes} but {source} "
            f"says {spec.num_classes}.", where=where,
            fix="the graph and the config come from different models: put the pipeline.config "
                "the graph was exported with next to it, or export the graph again.")

    inp = graph["input"]
    if inp is None:
        raise CheckpointError(
            f"the graph has no {input_name!r} placeholder (the TFLite-ready export's input).",
            where=where, fix=f"{_EXPORT_HOW}.")
    if inp["dtype"] not in (None, "DT_FLOAT"):
        raise CheckpointError(f"input {input_name!r} has dtype {inp['dtype']}; expected float32 "
                              "pixels in [-1, 1].", where=where, fix=f"{_EXPORT_HOW}.")
    size = spec.input_size
    expected = (1, size, size, 3)
    shape = inp["shape"]
    if shape:  # the placeholder's own shape, -1 for unknown dimensions
        if len(shape) != 4 or any(d not in (-1, e) for d, e in zip(shape, expected)):
            said = (f"{CONFIG_FILE}'s fixed_shape_resizer" if config_path is not None
                    else f"{EXPORT_FILE}'s spec.input_size")
            raise CheckpointError(
                f"input {input_name!r} has shape {shape}, but {said} gives {list(expected)}.",
                where=where, fix="export the graph again at the configured input size.")
    if declared_shape is not None and [int(d) for d in declared_shape] != list(expected):
        raise CheckpointError(f"{declared_where} is {declared_shape}; expected {list(expected)} "
                              f"for input_size {size}.", where=str(graph_path.parent),
                              fix="export the checkpoint again.")
    return expected


def _check_outputs(graph, graph_path, outputs) -> tuple:
    name = graph["postprocess"]["name"]
    expected = [name] + [f"{name}:{i}" for i in (1, 2, 3)]
    got = [o[:-2] if o.endswith(":0") else o for o in outputs]
    if got != expected:
        raise CheckpointError(f"{EXPORT_FILE} lists outputs {outputs}, but the graph's "
                              f"post-process node gives {expected}.", where=str(graph_path.parent),
                              fix="export the checkpoint again.")
    return tuple(expected)


def _check_qat(graph, graph_path, declared: bool, says_qat: str, says_float: str, fix: str):
    count = graph["fake_quant_nodes"]
    if declared and count == 0:
        raise CheckpointError(
            f"{says_qat}, but {GRAPH_FILE} has no {FAKE_QUANT_PREFIX}* nodes: the graph was "
            "exported from a float model, so it cannot give a QAT uint8 model.",
            where=str(graph_path), fix=fix + ".")
    if not declared and count > 0:
        raise CheckpointError(
            f"{says_float}, but {GRAPH_FILE} has {count} {FAKE_QUANT_PREFIX}* node(s): the graph "
            "was exported from a quantization-aware model.", where=str(graph_path),
            fix=fix + ".")


def _compare_postprocess(attrs: dict, cfg: dict) -> list:
    """Non-fatal differences between the post-process node and the config -> notes."""
    notes = []
    coder = cfg.get("box_coder")
    if coder:
        pairs = (("y_scale", "y_scale"), ("x_scale", "x_scale"), ("h_scale", "height_scale"),
                 ("w_scale", "width_scale"))
        for a, c in pairs:
            if a in attrs and abs(float(attrs[a]) - coder[c]) > 1e-6:
                notes.append(f"post-process {a}={attrs[a]} but the config's "
                             f"faster_rcnn_box_coder {c}={coder[c]}: boxes will be decoded "
                             "differently from training.")
    pp = cfg.get("postprocess") or {}
    if "iou_threshold" in pp and "nms_iou_threshold" in attrs \
            and abs(float(attrs["nms_iou_threshold"]) - pp["iou_threshold"]) > 1e-6:
        notes.append(f"post-process nms_iou_threshold={attrs['nms_iou_threshold']} differs from "
                     f"the config's batch_non_max_suppression iou_threshold={pp['iou_threshold']}.")
    return notes
