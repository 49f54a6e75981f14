"""Per-layer quantization analysis of the int8 recipe, and float fallback of chosen layers.

Library: TensorFlow's own `tf.lite.experimental.QuantizationDebugger` (part of the pinned
TensorFlow, so no new dependency). It takes the very converter the int8 recipe builds
(`tf.compat.v1.lite.TFLiteConverter.from_frozen_graph`, `allow_custom_ops`, the SSD post-process
op, the same representative data), calibrates once, and quantizes the calibrated model with
NumericVerify ops after every quantized op. Each NumericVerify op runs the float op on the
*dequantized input of the quantized op*, so what it measures is the error that this one layer
adds, not the error accumulated before it. The same calibrated model is then quantized again
without NumericVerify and with chosen layers denylisted (`QuantizationDebugOptions
(denylisted_nodes=...)`, `get_nondebug_quantized_model()`): that is the selective float fallback.
(Google's ai-edge-quantizer, the other candidate, quantizes an already converted float .tflite
with its own recipes: it would be a second quantizer next to the converter's, a new dependency
pinned against LiteRT, and it is not the quantizer that makes the published int8 model.)

Metrics per layer, averaged over the debug images (float f, quantized q, scale s, zero point z,
dequantized d = (q - z) * s, error e = d - f):

    rmse_scaled    sqrt(mean(e^2)) / s: about 0.29 (1/sqrt(12)) is plain rounding; far above
                   it the layer loses more than one quantization step (clipping, weights).
    snr_db         10 log10(sum f^2 / sum e^2) over the whole tensor.
    cosine         cosine similarity of d and f.
    channel_error  mean over the output channels (last axis) of min(1, mean(e_c^2)/mean(f_c^2)),
                   channels that are all zero left out: the share of each channel's signal lost
                   to quantization noise (1 = the channel is gone).

Layers are sorted worst first by channel_error, then rmse_scaled. Why channel_error first: one
activation outlier channel makes the tensor's scale large, every other channel then rounds to
zero, yet rmse_scaled stays at ~0.29 (it is measured in units of that large scale) and the SNR
of the whole tensor stays high (the outlier channel dominates both signal and noise). Severe
layers (channel_error >= 0.5, `severe: true`) come first in execution order (`order`): each
layer is measured on the quantized output of the layers before it, so a severe layer right
after another (e.g. the conv that reads the outlier channel with tiny weights) may look broken
only because its input already is; the upstream one is the cause.

Names: each layer is named the way the model names it (`include/mobiledet/`): backbone
`edgetpu/C2/fused_1/project`, feature-map extra layer `feature_map_3/expand`, heads
`BoxPredictor_2/ClassPredictor/conv_1x1`, plus a readable `where` ("class head of map 2, 1x1
conv") and the TFLite `tensor` name the debugger denylists.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from include.errors import ConfigError, ConversionError

DEFAULT_DEBUG_IMAGES = 32
SEVERE_CHANNEL_ERROR = 0.5
ROUNDING_RMSE = 1.0 / np.sqrt(12.0)

_KINDS = {"ibn": "IBN", "ibn_noexp": "IBN without expansion", "fused": "fused IBN",
          "tucker": "Tucker conv"}
_PARTS = {"expand": "1x1 expansion conv", "fused": "fused kxk conv", "reduce": "1x1 reduction conv",
          "core": "kxk core conv", "project": "1x1 linear projection", "depthwise": "depthwise conv",
          "add": "residual add", "se_pool": "squeeze-excite pool", "se_reduce": "squeeze-excite reduce",
          "se_expand": "squeeze-excite expand", "se_scale": "squeeze-excite scale",
          "conv_1x1": "1x1 conv", "reshape": "reshape"}


def _part(token: str) -> str:
    return "depthwise" if token.startswith("depthwise") else \
        ("se_act" if token.startswith("se_") and token not in _PARTS else token)


def describe_tensor(tensor_name: str) -> tuple[str, str]:
    """TFLite tensor name -> (layer name as the Keras model names it, readable description)."""
    first = tensor_name.split(";")[0]
    path = re.sub(r"^ssdlite_mobiledet_\w+?/", "", first)
    m = re.match(r"^(\w+)/stem/", path)
    if m:
        return f"{m.group(1)}/stem", "backbone stem, 3x3 conv"
    m = re.match(r"^(\w+)/(C[1-5])/([a-z_]+?)_(\d+)/([a-z_0-9]+)", path)
    if m:
        variant, stage, kind, i, token = m.groups()
        part = _part(token)
        return (f"{variant}/{stage}/{kind}_{i}/{part}",
                f"backbone {stage}, block {i} ({_KINDS.get(kind, kind)}), "
                f"{_PARTS.get(part, part)}")
    m = re.match(r"^feature_map_(\d+)/([a-z_0-9]+)", path)
    if m:
        k, token = m.groups()
        part = _part(token)
        return f"feature_map_{k}/{part}", f"feature-map extra layer (map {k}), {_PARTS.get(part, part)}"
    m = re.match(r"^BoxPredictor_(\d+)/(BoxEncodingPredictor|ClassPredictor)/([a-z_0-9]+)", path)
    if m:
        k, head, token = m.groups()
        part = _part(token)
        which = "box" if head.startswith("Box") else "class"
        return f"BoxPredictor_{k}/{head}/{part}", f"{which} head of map {k}, {_PARTS.get(part, part)}"
    if path.startswith("box_encodings"):
        return "box_encodings", "box encodings of the 6 maps, concatenated"
    if path.startswith("class_logits"):
        return "class_logits", "class logits of the 6 maps, concatenated"
    if path in ("Sigmoid",) or path.startswith("raw_outputs/class_predictions"):
        return "class_predictions", "class scores (sigmoid)"
    return first, "graph node"


# ----------------------------------------------------------------------------- metrics
def _dequantize(q, scale, zero_point):
    return (q.astype(np.float64) - zero_point) * scale


def _rmse_scaled(f, q, scale, zero_point):
    e = _dequantize(q, scale, zero_point) - f
    return float(np.sqrt(np.mean(e ** 2)) / scale) if scale else float("nan")


def _snr_db(f, q, scale, zero_point):
    e = _dequantize(q, scale, zero_point) - f
    signal, noise = float(np.sum(np.square(f, dtype=np.float64))), float(np.sum(e ** 2))
    if noise == 0.0:
        return 120.0
    if signal == 0.0:
        return -120.0
    return float(min(120.0, 10.0 * np.log10(signal / noise)))


def _cosine(f, q, scale, zero_point):
    d = _dequantize(q, scale, zero_point).ravel()
    f = np.asarray(f, np.float64).ravel()
    nf, nd = np.linalg.norm(f), np.linalg.norm(d)
    if nf == 0.0 and nd == 0.0:
        return 1.0
    if nf == 0.0 or nd == 0.0:
        return 0.0
    return float(np.dot(f, d) / (nf * nd))


def _channel_error(f, q, scale, zero_point):
    f = np.asarray(f, np.float64)
    e = _dequantize(q, scale, zero_point) - f
    channels = f.shape[-1] if f.ndim else 1
    f2 = f.reshape(-1, channels)
    e2 = e.reshape(-1, channels)
    signal = np.mean(f2 ** 2, axis=0)
    noise = np.mean(e2 ** 2, axis=0)
    live = signal > 0
    if not live.any():
        return 0.0
    return float(np.mean(np.minimum(noise[live] / signal[live], 1.0)))


METRICS = {"rmse_scaled": _rmse_scaled, "snr_db": _snr_db, "cosine": _cosine,
           "channel_error": _channel_error}


# ----------------------------------------------------------------------------- the session
@dataclass
class DebugSession:
    """One calibrated int8 conversion of a float graph, held for analysis and fallback."""

    source: object                      # include.convert.source.GraphSource
    calibration: np.ndarray             # [N, S, S, 3] float32 in [-1, 1]
    calibration_info: dict
    per_tensor: bool
    debugger: object                    # tf.lite.experimental.QuantizationDebugger
    tensor_names: set = field(default_factory=set)   # tensors of the calibrated model
    _layers: list | None = None

    # ------------------------------------------------------------------ per-layer statistics
    def layers(self, images: np.ndarray | None = None) -> list[dict]:
        """Per-layer statistics (see the module docstring), worst first."""
        if images is None and self._layers is not None:
            return self._layers
        layers = _layer_statistics(self, self.calibration if images is None else images)
        if images is None:
            self._layers = layers
        return layers

    # ------------------------------------------------------------------ fallback
    def resolve(self, patterns, worst: int = 0) -> list[dict]:
        """Layers to keep float: the `worst` N of the ranking plus every layer whose name,
        description or tensor matches one of `patterns` (fnmatch, e.g. 'edgetpu/C1/*').
        Raises ConfigError for a pattern that matches nothing."""
        layers = self.layers()
        chosen: list[dict] = []
        if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
            raise ConfigError(f"the number of worst layers to keep float must be a whole number "
                              f">= 0, got {worst!r}.", where="--float-worst",
                              fix="use e.g. 1, 2 or 4.")
        if worst > len(layers):
            raise ConfigError(f"{worst} worst layers asked for, but the model has "
                              f"{len(layers)} quantized layers.", where="--float-worst",
                              fix=f"use at most {len(layers)}.")
        chosen.extend(layers[:worst])
        for pattern in patterns or []:
            hits = [l for l in layers if _matches(pattern, l)]
            if not hits:
                names = [l["name"] for l in layers]
                near = difflib.get_close_matches(pattern, names, n=3, cutoff=0.4)
                raise ConfigError(
                    f"the layer pattern {pattern!r} matches none of the {len(layers)} quantized "
                    "layers." + (f" Nearest names: {', '.join(near)}." if near else ""),
                    where="--float-layers",
                    fix="use a layer name as `mobiledet quant-debug` prints it (e.g. "
                        f"{names[0]!r}), or a shell-style pattern such as 'edgetpu/C1/*'.")
            chosen.extend(hits)
        out, seen = [], set()
        for l in chosen:
            if l["tensor"] not in seen:
                seen.add(l["tensor"])
                out.append(l)
        return out

    def quantize(self, float_layers: list[dict] | None = None) -> bytes:
        """The int8 model (no NumericVerify ops) with `float_layers` left float, uint8 input
        where the model's first op is quantized, float outputs."""
        import tensorflow as tf
        from tensorflow.lite.python.util import modify_model_io_type

        nodes = [l["tensor"] for l in float_layers or []]
        missing = [n for n in nodes if n not in self.tensor_names]
        if missing:
            raise ConversionError(f"the calibrated model has no tensor named {missing[0]!r}.",
                                  where=str(self.source.graph_path),
                                  fix="name layers as `mobiledet quant-debug` prints them.")
        self.debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=nodes or None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = self.debugger.get_nondebug_quantized_model()
            try:
                data = modify_model_io_type(data, tf.uint8, tf.float32)
            except (ValueError, RuntimeError):
                pass  # the first layer is float: the input stays float (recorded by the caller)
        return bytes(data)


# Ops that only move or reshape data: quantizing them alone makes nothing integer.
MOVEMENT_OPS = frozenset({"RESHAPE", "STRIDED_SLICE", "SLICE", "CONCATENATION", "SQUEEZE",
                          "EXPAND_DIMS", "TRANSPOSE", "PACK", "UNPACK", "SPLIT", "GATHER", "PAD",
                          "QUANTIZE", "DEQUANTIZE", "NumericVerify"})
_NO_INTEGER_OPS = ("the int8 recipe quantizes no compute layer of this graph: TensorFlow's "
                   "quantizer found no op with an integer kernel (convolution, add, activation "
                   "...) between the input and the post-process op, only data movement, so "
                   "there is nothing to analyse or fall back.")
_NO_INTEGER_FIX = ("check that the graph is a MobileDet/SSD export (convolutions, adds, "
                   "activations); a graph of float-only ops can only be converted as float32, "
                   "dynamic or float16.")


def _integer_compute_ops(interp) -> list[str]:
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    out = []
    for op in interp._get_ops_details():
        if op["op_name"] in MOVEMENT_OPS:
            continue
        if any(i in tensors and np.dtype(tensors[i]["dtype"]) in (np.int8, np.int16)
               for i in op["outputs"]):
            out.append(op["op_name"])
    return out


def _matches(pattern: str, layer: dict) -> bool:
    return any(fnmatch.fnmatchcase(layer[k], pattern) or layer[k] == pattern
               for k in ("name", "tensor"))


def _quiet_tf():
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def open_session(graph_dir, calibration, *, calibration_count: int = 100, seed: int = 0,
                 per_tensor: bool = False, calibration_batch=None,
                 calibration_info=None) -> DebugSession:
    """Calibrate the int8 recipe of a float graph once under the QuantizationDebugger."""
    _quiet_tf()
    import tensorflow as tf

    from include.convert.recipes import (RECIPES, apply_recipe, check_request,
                                         frozen_graph_converter)
    from include.convert.source import open_graph

    source = open_graph(graph_dir)
    check_request("int8", source.qat, None, calibration is not None or calibration_batch is not None)
    if calibration_batch is None:
        from include.convert.calibration import representative_images
        calibration_batch, calibration_info = representative_images(
            calibration, source.spec.input_size, calibration_count, seed)
    conv = frozen_graph_converter(source.graph_path, source)
    apply_recipe(conv, RECIPES["int8"], source.input_name, calibration_batch)
    if per_tensor:
        conv._experimental_disable_per_channel = True

    def dataset():
        for i in range(calibration_batch.shape[0]):
            yield [calibration_batch[i:i + 1]]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            debugger = tf.lite.experimental.QuantizationDebugger(converter=conv,
                                                                 debug_dataset=dataset)
    except ValueError as exc:
        if "debug mode" in str(exc):
            raise ConversionError(_NO_INTEGER_OPS, where=str(source.graph_path),
                                  fix=_NO_INTEGER_FIX) from None
        raise ConversionError(f"the quantization debugger failed: {exc}",
                              where=str(source.graph_path),
                              fix="check that the graph converts with --precision int8.") from None
    except Exception as exc:  # the converter raises ConverterError and others
        lines = [l for l in str(exc).splitlines() if l.strip()]
        raise ConversionError(f"TensorFlow's converter failed for the int8 recipe: "
                              f"{' | '.join(lines[-3:])}", where=str(source.graph_path),
                              fix="check that the graph is a TFLite-ready export.") from None
    if not _integer_compute_ops(debugger._quant_interpreter):
        raise ConversionError(_NO_INTEGER_OPS, where=str(source.graph_path), fix=_NO_INTEGER_FIX)
    interp = tf.lite.Interpreter(model_content=debugger.calibrated_model)
    names = {t["name"] for t in interp.get_tensor_details()}
    return DebugSession(source, calibration_batch, dict(calibration_info or {}), per_tensor,
                        debugger, names)


def _layer_statistics(session: DebugSession, images: np.ndarray) -> list[dict]:
    import tensorflow as tf

    def dataset():
        for i in range(images.shape[0]):
            yield [images[i:i + 1].astype(np.float32)]

    options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics=METRICS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # From the debug model's bytes, so the interpreter keeps every tensor (the metrics read
        # the float and the quantized value of each layer).
        dbg = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=session.debugger.quant_model, debug_dataset=dataset,
            debug_options=options)
        dbg.run()
    interp = dbg._quant_interpreter
    rows, seen = [], {}
    for verify_name, stats in dbg.layer_statistics.items():
        op = dbg._numeric_verify_op_details[verify_name]
        q_index = op["inputs"][0]
        detail = interp._get_tensor_details(q_index, subgraph_index=0)
        tensor = _calibrated_name(detail["name"], session.tensor_names)
        op_index = dbg._defining_op[q_index]
        producer = interp._get_op_details(op_index)["op_name"]
        scales = detail["quantization_parameters"]["scales"]
        zero_points = detail["quantization_parameters"]["zero_points"]
        name, where = describe_tensor(tensor)
        if name in seen:
            seen[name] += 1
            name = f"{name} [{producer}]" if seen[name] == 2 else f"{name} [{producer} {seen[name]}]"
        else:
            seen[name] = 1
        rows.append({
            "name": name, "where": where, "op": producer, "tensor": tensor,
            "shape": [int(d) for d in detail["shape"]],
            "rmse_scaled": _round(stats["rmse_scaled"]), "snr_db": _round(stats["snr_db"], 3),
            "cosine": _round(stats["cosine"]), "channel_error": _round(stats["channel_error"]),
            "max_abs_error": _round(stats["max_abs_error"]),
            "scale": float(scales[0]) if len(scales) else None,
            "zero_point": int(zero_points[0]) if len(zero_points) else None,
            "severe": _key(stats["channel_error"]) >= SEVERE_CHANNEL_ERROR,
            "order": int(op_index),
        })
    rows.sort(key=_rank_key)
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


def _rank_key(r):
    if r["severe"]:  # upstream first: a later layer may only look broken because its input is
        return (0, r["order"], 0.0)
    return (1, -_key(r["channel_error"]), -_key(r["rmse_scaled"]))


def _calibrated_name(debug_name: str, names: set) -> str:
    """The debug model names a quantized tensor after the calibrated model's tensor with one
    more digit appended ("...Conv2D1" -> "...Conv2D11"); denylisting needs the calibrated name."""
    if debug_name in names:
        return debug_name
    if debug_name[-1:].isdigit() and debug_name[:-1] in names:
        return debug_name[:-1]
    return debug_name


def _key(v):
    return -1.0 if v is None or v != v else v


def _round(v, digits=6):
    v = float(v)
    return None if v != v else round(v, digits)


# ----------------------------------------------------------------------------- the stage
def quant_debug(graph_dir, calibration, *, data=None, calibration_count: int = 100,
                images: int = DEFAULT_DEBUG_IMAGES, per_tensor: bool = False, seed: int = 0,
                session: DebugSession | None = None) -> dict:
    """Per-layer error of the int8 recipe of a float graph, worst first (module docstring).

    calibration: COCO dataset or image folder for the representative data (as `convert`).
    data: a COCO dataset or image folder whose images the error is measured on (default: the
    calibration images themselves). images: how many of them (at most).
    -> {"layers": [{name, where, op, tensor, rmse_scaled, snr_db, cosine, channel_error, ...}],
        "graph", "calibration", "debug_images", "library", "metric_notes"}
    """
    import time

    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"the number of debug images must be a whole number >= 1, got "
                          f"{images!r}.", where="--images", fix=f"use e.g. {DEFAULT_DEBUG_IMAGES}.")
    started = time.perf_counter()
    if session is None:
        session = open_session(graph_dir, calibration, calibration_count=calibration_count,
                               seed=seed, per_tensor=per_tensor)
    if data is not None:
        from include.convert.calibration import representative_images
        batch, info = representative_images(data, session.source.spec.input_size, images, seed)
        layers = session.layers(batch)
        measured = {"source": str(data), "images": int(batch.shape[0])}
    else:
        batch = session.calibration[:images]
        layers = session.layers(batch) if batch.shape[0] < session.calibration.shape[0] \
            else session.layers()
        measured = {"source": "the calibration images", "images": int(batch.shape[0])}
    return {
        "graph": str(session.source.path),
        "variant": session.source.spec.variant,
        "library": f"tf.lite.experimental.QuantizationDebugger (TensorFlow "
                   f"{_tf_version()}), layer-by-layer NumericVerify",
        "recipe": "int8" + (" (per-tensor weights)" if session.per_tensor else ""),
        "calibration": session.calibration_info,
        "debug_images": measured,
        "sorted_by": "severe layers (channel_error >= 0.5) first in execution order, then "
                     "channel_error, then rmse_scaled (worst first)",
        "rounding_rmse_scaled": round(float(ROUNDING_RMSE), 4),
        "layers": layers,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def format_layers(result: dict, top: int = 15) -> str:
    from include.console import format_table

    rows = [(l["rank"], l["name"], l["op"], f"{l['channel_error']:.3f}",
             f"{l['rmse_scaled']:.3f}", f"{l['snr_db']:.1f}", f"{l['cosine']:.4f}", l["where"])
            for l in result["layers"][:top]]
    return format_table(rows, ["#", "layer", "op", "channel err", "rmse/scale", "SNR dB",
                               "cosine", "where"])


# ----------------------------------------------------------------------------- fault injection
def inject_activation_outlier(checkpoint_dir, out_dir, *, layer: str | None = None,
                              channel: int = 0, factor: float = 1000.0) -> dict:
    """Write a copy of a float checkpoint with one activation outlier channel, float function
    unchanged: the batch-norm scale and shift of `channel` of the linear projection `layer`
    are multiplied by `factor`, and every conv reading that output gets its weights for that
    input channel divided by it. The float model computes the same detections; int8, with one
    activation scale per tensor, loses the other channels of that layer. For tests and
    benchmarks of the analysis and the search. Default layer: the projection of the variant's
    first block (`<variant>/C1/<block>/project`, read by the next block's first conv).
    """
    import tensorflow as tf

    from include.errors import CheckpointError
    from include.mobiledet.checkpoint import load_checkpoint, save_checkpoint, spec_of

    model, meta = load_checkpoint(checkpoint_dir)
    if meta["qat"]:
        raise CheckpointError("an outlier can only be put into a float checkpoint.",
                              where=str(checkpoint_dir), fix="use the float checkpoint.")
    if layer is None:
        layer = [l.name[:-len("/bn")] for l in model.layers
                 if l.name.endswith("/project/bn") and "/C1/" in l.name][0]
    try:
        bn = model.get_layer(f"{layer}/bn")
    except ValueError:
        raise CheckpointError(f"the model has no layer {layer}/bn.", where=str(checkpoint_dir),
                              fix="name a linear projection, e.g. edgetpu/C5/ibn_4/project.") \
            from None
    consumers = [n.outbound_layer for n in bn.outbound_nodes]
    convs = (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D)
    if not consumers or not all(isinstance(c, convs) for c in consumers):
        raise CheckpointError(f"{layer} must feed convolutions only (no residual add) so that "
                              "the outlier can be compensated.", where=str(checkpoint_dir),
                              fix="pick the projection of a block without residual add "
                                  "(a 'nr' block).")
    gamma, beta, mean, var = bn.get_weights()
    gamma[channel] *= factor
    beta[channel] *= factor
    bn.set_weights([gamma, beta, mean, var])
    for conv in consumers:
        weights = conv.get_weights()
        weights[0][:, :, channel, :] /= factor   # depthwise: [k, k, C, 1]; conv: [k, k, C, O]
        conv.set_weights(weights)
    label_map = {int(k): v for k, v in meta["label_map"].items()}
    record = {"layer": layer, "channel": channel, "factor": factor,
              "compensated_in": [c.name for c in consumers]}
    save_checkpoint(model, out_dir, spec_of(meta), qat=False, label_map=label_map,
                    steps=meta.get("steps", 0), data_fingerprint=meta.get("data_fingerprint"),
                    training={**(meta.get("training") or {}), "activation_outlier": record},
                    parent=meta.get("fingerprint"))
    return {"checkpoint": str(out_dir), **record}
