"""Offline Edge TPU check: which ops of a .tflite model would map, without the compiler.

This is a PREDICTION made from the documented requirements of the Edge TPU compiler
(see the project's reference notes and Coral's "model requirements" page); only
`edgetpu_compiler` gives the real mapping. The rules applied to each op, in execution order:

1. Data type: every tensor the op reads or writes is 8-bit quantized (int8/uint8 with a scale);
   int32 is accepted for biases and for constant index parameters (axes, shapes, paddings ...).
   Any float tensor -> "Operation is working on an unsupported data type".
2. Constant shapes and parameters: weights, biases, axes, paddings ... are constants; activation
   shapes are fixed (a -1 in `shape_signature` outside the batch dimension is dynamic).
3. Rank: activation tensors may exceed 3 dimensions only when every dimension but the three
   innermost is 1 -> else "Tensor has unsupported rank (up to 3 innermost dimensions mapped)".
4. Op type and its conditions: the supported-op table (dilation equal in x and y, no fused
   activation on pools and concatenation, strides of 1 in STRIDED_SLICE, reductions and padding
   along x/y only, ...). An unsupported op type -> "Operation not supported"; a failed
   condition -> "Operation is otherwise supported, but not mapped due to some unspecified
   limitation".
5. The single cut: the compiler builds one Edge TPU subgraph. The first op that cannot map, and
   every op after it in execution order, run on the CPU ("follows an unmapped op"; the compiler
   prints "More than one subgraph is not supported" for such ops that could otherwise map).

Expected CPU ops. The SSD post-process custom op `TFLite_Detection_PostProcess` always runs on
the CPU; that is expected, not a failure. So are the float conversions at the model's edges
that only serve it or the model's outputs: a DEQUANTIZE from 8 bits to float whose results
feed only the post-process / model outputs (the tail), and a QUANTIZE from a float model input
to 8 bits (the head). These edge ops do not start the cut: they sit before or after the one
Edge TPU subgraph, as in the compiler's own logs for SSD models (e.g. 264 ops on the Edge TPU,
3 on the CPU: two DEQUANTIZE and the post-process).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from include.edgetpu.logparse import (
    STATUS_MAPPED, STATUS_MORE_THAN_ONE_SUBGRAPH, STATUS_NOT_SUPPORTED, STATUS_UNSPECIFIED,
    STATUS_UNSUPPORTED_DTYPE, STATUS_UNSUPPORTED_RANK, format_operator_table)
from include.edgetpu.tflite_model import (
    EDGETPU_CUSTOM_CODE, POSTPROCESS_CUSTOM_CODE, ModelInfo, OpInfo, TensorInfo, read_model)

PREDICTION_NOTE = ("Prediction from the documented Edge TPU rules (offline check, no compiler); "
                   "only edgetpu_compiler gives the real mapping.")

EIGHT_BIT = ("int8", "uint8")
FLOATS = ("float32", "float16", "float64", "bfloat16")
INDEX_DTYPES = ("int32", "int64", "int8", "uint8", "int16")

# Ops with no condition beyond the general rules.
_PLAIN_OPS = {
    "ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "LOGISTIC", "RELU", "RELU6", "RELU_N1_TO_1",
    "TANH", "L2_NORMALIZATION", "RESHAPE", "SLICE", "SPLIT", "SPACE_TO_DEPTH", "QUANTIZE",
    "EXPAND_DIMS",
}
# Supported by newer compiler/runtime versions only.
_NEWER_OPS = {"TRANSPOSE_CONV", "TRANSPOSE", "SUM", "RSQRT", "SQUARED_DIFFERENCE",
              "DEPTH_TO_SPACE"}
_CONDITIONAL_OPS = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION",
    "FULLY_CONNECTED", "MEAN", "PAD", "PACK", "REDUCE_MAX", "REDUCE_MIN", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "SOFTMAX", "SQUEEZE", "STRIDED_SLICE", "LSTM",
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "PRELU",
}
SUPPORTED_OPS = frozenset(_PLAIN_OPS | _NEWER_OPS | _CONDITIONAL_OPS)

# Which inputs of an op are parameters: "index" (constant integers: axes, shapes ...),
# "weights" (constant 8-bit), "bias" (constant, int32 allowed).
_PARAMS: dict[str, dict[str, tuple[int, ...]]] = {
    "CONV_2D": {"weights": (1,), "bias": (2,)},
    "DEPTHWISE_CONV_2D": {"weights": (1,), "bias": (2,)},
    "FULLY_CONNECTED": {"weights": (1,), "bias": (2,)},
    "TRANSPOSE_CONV": {"index": (0,), "weights": (1,), "bias": (3,)},
    "PRELU": {"weights": (1,)},
    "PAD": {"index": (1,)},
    "MEAN": {"index": (1,)}, "SUM": {"index": (1,)},
    "REDUCE_MAX": {"index": (1,)}, "REDUCE_MIN": {"index": (1,)},
    "RESHAPE": {"index": (1,)},
    "STRIDED_SLICE": {"index": (1, 2, 3)}, "SLICE": {"index": (1, 2)},
    "SPLIT": {"index": (0,)},
    "RESIZE_BILINEAR": {"index": (1,)}, "RESIZE_NEAREST_NEIGHBOR": {"index": (1,)},
    "EXPAND_DIMS": {"index": (1,)}, "TRANSPOSE": {"index": (1,)},
}
_STATUS_ORDER = (STATUS_UNSUPPORTED_DTYPE, STATUS_NOT_SUPPORTED, STATUS_UNSUPPORTED_RANK,
                 STATUS_UNSPECIFIED)

FOLLOWS_UNMAPPED = "follows an unmapped op"


@dataclass
class OpVerdict:
    op: OpInfo
    problems: list[tuple[str, str]] = field(default_factory=list)   # (status, reason)
    notes: list[str] = field(default_factory=list)
    on_tpu: bool = False
    expected: bool = False          # an expected CPU op (post-process, edge conversions)
    edge: bool = False              # sits before/after the Edge TPU subgraph; no cut
    status: str = STATUS_MAPPED
    reasons: list[str] = field(default_factory=list)

    def add(self, status: str, reason: str) -> None:
        self.problems.append((status, reason))

    def to_dict(self) -> dict:
        op = self.op
        return {
            "index": op.index, "operator": op.opcode, "custom_code": op.custom_code,
            "output": op.outputs[0].name if op.outputs else None,
            "status": self.status, "on_tpu": self.on_tpu, "expected": self.expected,
            "reasons": list(self.reasons), "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------- helpers
def _tname(t: TensorInfo) -> str:
    return f"'{t.name}'" if t.name else f"#{t.index}"


def _is_postprocess(op: OpInfo) -> bool:
    return op.opcode == "CUSTOM" and op.custom_code == POSTPROCESS_CUSTOM_CODE


def _param_roles(op: OpInfo) -> dict[int, str]:
    roles: dict[int, str] = {}
    for role, positions in _PARAMS.get(op.opcode, {}).items():
        for pos in positions:
            roles[pos] = role
    if op.opcode in ("LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM"):
        for pos in range(1, len(op.inputs)):
            roles[pos] = "lstm"
    return roles


def _ints(model: ModelInfo, t: TensorInfo | None) -> list[int] | None:
    if t is None:
        return None
    v = model.constant_value(t)
    if v is None:
        return None
    try:
        return [int(x) for x in v.reshape(-1)]
    except (TypeError, ValueError):
        return None


def _dims_gt1(shape) -> int:
    return sum(1 for d in shape if d > 1)


# ---------------------------------------------------------------------------- general rules
def _folded_constants(model: ModelInfo) -> set[int]:
    """Tensors computed only from constants (e.g. DEQUANTIZE of float16 weights): constants."""
    folded: set[int] = set()
    for op in model.ops:
        ins = op.present_inputs()
        if ins and all(t.is_constant or t.index in folded for t in ins):
            folded.update(t.index for t in op.outputs)
    return folded


def _check_dtypes(op: OpInfo, v: OpVerdict, is_const) -> None:
    roles = _param_roles(op)
    floats: list[str] = []
    other: list[str] = []
    seen: set[tuple[int, str]] = set()
    tensors = [(pos, t, "input") for pos, t in enumerate(op.inputs)]
    tensors += [(None, t, "output") for t in op.outputs]
    for pos, t, kind in tensors:
        if t is None or (t.index, kind) in seen:
            continue
        seen.add((t.index, kind))
        role = roles.get(pos) if pos is not None else None
        label = f"{role if role in ('weights', 'bias') else kind} {_tname(t)}"
        if t.dtype in FLOATS:
            floats.append(f"{t.dtype} {label}")
        elif role == "index":
            if t.dtype not in INDEX_DTYPES:
                other.append(f"parameter {_tname(t)} is {t.dtype}")
        elif role == "bias":
            if t.dtype not in ("int32", "int64", "int8", "uint8"):
                other.append(f"bias {_tname(t)} is {t.dtype}")
        elif role == "lstm":
            if t.dtype not in ("int8", "uint8", "int16", "int32") and not t.is_variable:
                other.append(f"LSTM parameter {_tname(t)} is {t.dtype}")
        elif t.dtype in EIGHT_BIT:
            if not t.is_quantized:
                other.append(f"{label} is {t.dtype} without quantization parameters (no "
                             "scale/zero point)")
        elif t.dtype == "int32" and is_const(t) and op.opcode not in ("ADD", "SUB", "MUL"):
            continue  # constant integer parameters of ops not listed in _PARAMS
        else:
            other.append(f"{label} is {t.dtype}; the Edge TPU works on 8-bit tensors only")
    if floats:
        v.add(STATUS_UNSUPPORTED_DTYPE,
              f"float tensors ({', '.join(floats)}): the Edge TPU needs 8-bit quantized "
              "(int8/uint8) tensors; the model is not fully 8-bit quantized")
    for reason in other:
        v.add(STATUS_UNSUPPORTED_DTYPE, reason)
    if op.opcode == "DEQUANTIZE":
        v.add(STATUS_UNSUPPORTED_DTYPE, "DEQUANTIZE converts to float; it never maps")


def _check_constants(op: OpInfo, v: OpVerdict, is_const) -> None:
    for pos, role in _param_roles(op).items():
        if pos >= len(op.inputs) or role == "lstm":
            continue
        t = op.inputs[pos]
        if t is not None and not is_const(t):
            what = {"weights": "weights", "bias": "bias", "index": "parameter"}[role]
            v.add(STATUS_UNSPECIFIED,
                  f"{what} input {_tname(t)} is computed at run time; the Edge TPU needs it "
                  "to be a constant")


def _check_shapes(op: OpInfo, v: OpVerdict, is_const) -> None:
    roles = _param_roles(op)
    seen: set[int] = set()
    activations = [t for pos, t in enumerate(op.inputs) if pos not in roles] + list(op.outputs)
    for t in activations:
        if t is None or is_const(t) or t.index in seen:
            continue
        seen.add(t.index)
        sig = t.shape_signature
        if sig and any(d < 0 for d in sig[1:]):
            v.add(STATUS_UNSPECIFIED,
                  f"tensor {_tname(t)} has a dynamic shape (shape_signature {list(sig)}); the "
                  "Edge TPU needs shapes fixed at compile time")
        if t.rank > 3 and any(d > 1 for d in t.shape[:-3]):
            v.add(STATUS_UNSUPPORTED_RANK,
                  f"tensor {_tname(t)} has shape {list(t.shape)}: only the 3 innermost "
                  "dimensions may be larger than 1")


# ------------------------------------------------------------------------ op-specific rules
def _fused(op: OpInfo) -> str:
    return str(op.options.get("fused_activation_function", "NONE"))


def _norm_axes(axes, rank: int) -> list[int]:
    return sorted({a + rank if a < 0 else a for a in axes})


def _xyz(rank: int) -> tuple[int, int, int]:
    """Positions of y, x and z (channels) in a tensor of this rank (NHWC for rank 4)."""
    return rank - 3, rank - 2, rank - 1


def _check_conditions(model: ModelInfo, op: OpInfo, v: OpVerdict) -> None:
    code = op.opcode
    o = op.options
    first = op.inputs[0] if op.inputs else None
    if code == "CUSTOM":
        if _is_postprocess(op):
            v.add(STATUS_UNSUPPORTED_DTYPE,
                  "the SSD post-process (TFLite_Detection_PostProcess) is a CPU custom op on "
                  "float data; it always runs on the CPU (expected)")
        elif op.custom_code == EDGETPU_CUSTOM_CODE:
            v.add(STATUS_NOT_SUPPORTED,
                  "this model is already compiled for the Edge TPU (edgetpu-custom-op); check "
                  "the model before compilation instead")
        else:
            v.add(STATUS_NOT_SUPPORTED,
                  f"custom op '{op.custom_code}' is not an Edge TPU op")
        return
    if code == "DEQUANTIZE":
        return  # reported with the data types
    if code not in SUPPORTED_OPS:
        v.add(STATUS_NOT_SUPPORTED, f"{code} is not in the Edge TPU's supported-op list")
        return
    if code in _NEWER_OPS:
        v.notes.append(f"{code} maps only with newer Edge TPU compiler/runtime versions; an "
                       "older -m (min runtime version) keeps it on the CPU")

    if code in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        dw, dh = o.get("dilation_w_factor", 1), o.get("dilation_h_factor", 1)
        if dw != dh:
            v.add(STATUS_UNSPECIFIED,
                  f"dilation differs in x and y (w={dw}, h={dh}); the Edge TPU needs the same "
                  "dilation in both")
    elif code in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"):
        if _fused(op) != "NONE":
            v.add(STATUS_UNSPECIFIED,
                  f"fused activation {_fused(op)} on {code}; the Edge TPU maps it only without "
                  "a fused activation")
        if code == "CONCATENATION":
            consts = [t for t in op.present_inputs() if t.is_constant]
            if consts:
                if len(op.present_inputs()) != 2:
                    v.add(STATUS_UNSPECIFIED,
                          f"a constant input with {len(op.present_inputs())} inputs; a "
                          "concatenation with a constant must have exactly 2 inputs")
                for t in consts:
                    val = model.constant_value(t)
                    zp = t.quantization.zero_point[0] if (t.quantization and
                                                          t.quantization.zero_point) else 0
                    if val is None or not (val == zp).all():
                        v.add(STATUS_UNSPECIFIED,
                              f"constant input {_tname(t)} is not all zeros; only a zero "
                              "constant (zero padding) may be concatenated")
    elif code == "FULLY_CONNECTED":
        fmt = o.get("weights_format", "DEFAULT")
        if fmt not in ("DEFAULT", 0):
            v.add(STATUS_UNSPECIFIED, f"weights format {fmt}; only the default format maps")
        out = op.outputs[0] if op.outputs else None
        if out is not None and _dims_gt1(out.shape) > 1:
            v.add(STATUS_UNSPECIFIED,
                  f"output {_tname(out)} has shape {list(out.shape)}; the output must be "
                  "one-dimensional")
    elif code in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"):
        _check_reduction(model, op, v)
    elif code == "PAD":
        pads = model.constant_value(op.inputs[1]) if len(op.inputs) > 1 and op.inputs[1] else None
        if first is not None and pads is not None and pads.ndim == 2:
            y, x, _ = _xyz(first.rank)
            bad = [i for i in range(pads.shape[0]) if i not in (y, x) and (pads[i] != 0).any()]
            if bad:
                v.add(STATUS_UNSPECIFIED,
                      f"pads dimension(s) {bad} of a rank-{first.rank} tensor; only x and y "
                      "may be padded")
    elif code == "PACK":
        out = op.outputs[0] if op.outputs else None
        axis = int(o.get("axis", 0))
        if out is not None and axis < 0:
            axis += out.rank
        if axis == 0:
            v.add(STATUS_UNSPECIFIED, "packs along the batch (first) dimension")
    elif code in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
        v.notes.append("resize ops map or stay on the CPU depending on their input/output size")
    elif code == "SOFTMAX":
        if first is not None:
            if _dims_gt1(first.shape) > 1:
                v.add(STATUS_UNSPECIFIED,
                      f"input {_tname(first)} has shape {list(first.shape)}; SOFTMAX maps only "
                      "for a one-dimensional input")
            if first.num_elements > 16000:
                v.add(STATUS_UNSPECIFIED,
                      f"input has {first.num_elements} elements; SOFTMAX maps up to 16,000")
    elif code == "SQUEEZE":
        if first is not None:
            dims = o.get("squeeze_dims") or [i for i, d in enumerate(first.shape) if d == 1]
            dims = _norm_axes(dims, first.rank)
            if dims != list(range(len(dims))):
                v.add(STATUS_UNSPECIFIED,
                      f"squeezes dimension(s) {dims} of shape {list(first.shape)}; only "
                      "leading dimensions of size 1 may be squeezed")
    elif code == "STRIDED_SLICE":
        strides = _ints(model, op.inputs[3]) if len(op.inputs) > 3 else None
        if strides is not None and any(s != 1 for s in strides):
            v.add(STATUS_UNSPECIFIED, f"strides {strides}; STRIDED_SLICE maps only with all "
                                      "strides 1")
        if o.get("ellipsis_mask", 0):
            v.add(STATUS_UNSPECIFIED, f"ellipsis mask {o.get('ellipsis_mask')}; must be 0")
        if o.get("new_axis_mask", 0):
            v.add(STATUS_UNSPECIFIED, f"new-axis mask {o.get('new_axis_mask')}; must be 0")
    elif code == "PRELU":
        alpha = op.inputs[1] if len(op.inputs) > 1 else None
        if alpha is not None and (_dims_gt1(alpha.shape) > 1 or
                                  (alpha.shape and _dims_gt1(alpha.shape[:-1]) > 0)):
            v.add(STATUS_UNSPECIFIED,
                  f"alpha {_tname(alpha)} has shape {list(alpha.shape)}; it must be 1-D "
                  "(only the innermost dimension larger than 1)")
    elif code == "RESHAPE":
        out = op.outputs[0] if op.outputs else None
        if out is not None and out.num_elements > 1_000_000:
            v.notes.append("RESHAPE of a very large tensor may stay on the CPU")


def _check_reduction(model: ModelInfo, op: OpInfo, v: OpVerdict) -> None:
    first = op.inputs[0] if op.inputs else None
    axes = _ints(model, op.inputs[1]) if len(op.inputs) > 1 else None
    if first is None or axes is None:
        return
    rank = first.rank
    axes = _norm_axes(axes, rank)
    y, x, z = _xyz(rank)
    batch = [a for a in axes if a < max(y, 0) or (rank >= 4 and a == 0)]
    if batch:
        v.add(STATUS_UNSPECIFIED,
              f"reduces along the batch dimension (axes {axes} of shape {list(first.shape)})")
    if op.opcode == "MEAN":
        if z in axes and first.shape[z] % 4 != 0:
            v.add(STATUS_UNSPECIFIED,
                  f"reduces along z (channels = {first.shape[z]}); a z reduction maps only when "
                  "z is a multiple of 4 (x and/or y reductions always)")


# ------------------------------------------------------------------------------- the graph
def _edge_ops(model: ModelInfo) -> tuple[set[int], set[int]]:
    """(head, tail): float conversions at the model input / output and the SSD post-process."""
    model_inputs = {t.index for t in model.inputs}
    consumers: dict[int, list[int]] = {}
    for op in model.ops:
        for t in op.present_inputs():
            consumers.setdefault(t.index, []).append(op.index)

    def tail_candidate(op: OpInfo) -> bool:
        if _is_postprocess(op):
            return True
        if op.opcode == "DEQUANTIZE":
            ins, outs = op.present_inputs(), op.outputs
            return (bool(ins) and ins[0].dtype in EIGHT_BIT
                    and all(t.dtype in FLOATS for t in outs))
        return False

    tail: set[int] = set()
    for op in reversed(model.ops):
        if not tail_candidate(op):
            continue
        # Its results go only to other tail ops or out of the model (unused ones are harmless).
        if all(c in tail for t in op.outputs for c in consumers.get(t.index, [])):
            tail.add(op.index)

    head: set[int] = set()
    for op in model.ops:
        if op.opcode != "QUANTIZE":
            continue
        ins = op.present_inputs()
        if (ins and ins[0].dtype in FLOATS and ins[0].index in model_inputs
                and all(t.dtype in EIGHT_BIT for t in op.outputs)):
            head.add(op.index)
    return head, tail


def _edge_reason(op: OpInfo, at_head: bool) -> str:
    if _is_postprocess(op):
        return ("the SSD post-process (TFLite_Detection_PostProcess) is a CPU custom op on float "
                "data; it always runs on the CPU after the Edge TPU subgraph (expected)")
    if at_head:
        return ("converts the float model input to 8 bits before the Edge TPU subgraph; runs "
                "on the CPU (expected)")
    return ("converts an 8-bit result to float for the post-process or the model output, after "
            "the Edge TPU subgraph; runs on the CPU (expected)")


def _classify_quantization(model: ModelInfo, skip: set[int]) -> str:
    act, const = set(), set()
    float_act_with_int8_weights = False
    for op in model.ops:
        if op.index in skip:
            continue
        op_act = {t.dtype for t in op.present_inputs() + op.outputs if not t.is_constant}
        op_const = {t.dtype for t in op.present_inputs() if t.is_constant}
        act |= op_act
        const |= op_const
        if op_act & set(FLOATS) and op_const & set(EIGHT_BIT):
            float_act_with_int8_weights = True
    if "float16" in const:
        return "float16"
    if act & set(FLOATS):
        if act & set(EIGHT_BIT):
            return "mixed"
        return "dynamic_range" if float_act_with_int8_weights else "float32"
    if "int16" in act:
        return "int16x8"
    if act and act <= set(EIGHT_BIT) | {"int32"}:
        return "full_integer"
    return "mixed" if act else "unknown"


_QUANT_WARNINGS = {
    "float32": "the model is float32: the Edge TPU runs only fully 8-bit quantized models, so "
               "nothing maps (the compiler will most likely refuse it: 'Model not quantized'). "
               "Convert with full-integer int8 quantization and a representative dataset.",
    "dynamic_range": "the model is dynamic-range quantized: weights are int8 but activations "
                     "are float, and the Edge TPU needs fully 8-bit quantized models, so "
                     "nothing maps. Convert with full-integer int8 quantization and a "
                     "representative dataset.",
    "float16": "the model has float16 weights and float compute, and the Edge TPU needs fully "
               "8-bit quantized models, so nothing maps. Convert with full-integer int8 "
               "quantization and a representative dataset.",
    "int16x8": "the model has 16-bit activations (int16x8); the Edge TPU needs 8-bit "
               "activations. Convert with full-integer int8 quantization.",
    "mixed": "the model mixes quantized and unquantized tensors; ops on non-8-bit tensors stay "
             "on the CPU.",
}


# ---------------------------------------------------------------------------------- public
def analyze_model_info(model: ModelInfo) -> dict:
    verdicts = [OpVerdict(op) for op in model.ops]
    folded = _folded_constants(model)

    def is_const(t: TensorInfo) -> bool:
        return t.is_constant or t.index in folded

    for v in verdicts:
        _check_dtypes(v.op, v, is_const)
        _check_constants(v.op, v, is_const)
        _check_shapes(v.op, v, is_const)
        _check_conditions(model, v.op, v)

    head, tail = _edge_ops(model)
    cut: OpVerdict | None = None
    for v in verdicts:
        op = v.op
        own = sorted(v.problems, key=lambda p: _STATUS_ORDER.index(p[0]))
        v.reasons = _dedupe(r for _, r in own)
        if _is_postprocess(op):
            v.expected = True
        if op.index in head or op.index in tail:
            if own:
                v.expected = v.edge = True
                v.status = own[0][0]
                v.reasons = [_edge_reason(op, op.index in head)]
                continue
        if cut is not None:
            v.status = own[0][0] if own else STATUS_MORE_THAN_ONE_SUBGRAPH
            v.reasons.append(
                f"{FOLLOWS_UNMAPPED}: {cut.op.label} is the first op that cannot map; the "
                "compiler makes one Edge TPU subgraph, so every op after it in execution "
                "order runs on the CPU")
        elif own:
            cut = v
            v.status = own[0][0]
        else:
            v.on_tpu = True
            v.status = STATUS_MAPPED

    quant = _classify_quantization(model, head | tail)
    total = len(verdicts)
    on_tpu = sum(v.on_tpu for v in verdicts)
    expected = sum((not v.on_tpu) and v.expected for v in verdicts)
    unexpected = total - on_tpu - expected

    rows: list[dict] = []
    index: dict[tuple[str, str], dict] = {}
    for v in verdicts:
        key = (v.op.opcode, v.status)
        if key not in index:
            index[key] = {"operator": v.op.opcode, "count": 0, "status": v.status,
                          "mapped": v.status == STATUS_MAPPED}
            rows.append(index[key])
        index[key]["count"] += 1

    warnings: list[str] = []
    if quant in _QUANT_WARNINGS:
        warnings.append(_QUANT_WARNINGS[quant])
    if model.subgraph_count > 1:
        warnings.append(
            f"the model has {model.subgraph_count} subgraphs; only the main one is analysed. "
            f"The {model.other_subgraph_op_count} ops in the others (control-flow bodies) do not "
            f"map ('{STATUS_MORE_THAN_ONE_SUBGRAPH}').")
    if any(op.custom_code == EDGETPU_CUSTOM_CODE for op in model.ops):
        warnings.append("the model already contains an edgetpu-custom-op: it was compiled for "
                        "the Edge TPU; analyse the model before compilation.")
    notes: list[str] = []
    dyn_batch = sorted({t.name or f"#{t.index}" for t in model.inputs
                        if t.shape_signature and t.shape_signature[0] < 0})
    if dyn_batch:
        batch = model.inputs[0].shape[0] if model.inputs and model.inputs[0].shape else "?"
        notes.append("input(s) " + ", ".join(dyn_batch) + " have a dynamic batch size (-1) in "
                     f"the shape signature; this check uses the stored shape (batch {batch}). "
                     "Exporting with a fixed batch size of 1 avoids any doubt.")
    if cut is not None:
        notes.append(f"first op that cannot map: {cut.op.label}: {cut.reasons[0]}")

    all_but_pp = total > 0 and on_tpu > 0 and unexpected == 0
    has_pp = any(_is_postprocess(op) for op in model.ops)
    summary = {
        "prediction": True,
        "total_ops": total,
        "ops_on_tpu": on_tpu,
        "ops_on_cpu": total - on_tpu,
        "expected_on_cpu": expected,
        "unexpected_on_cpu": unexpected,
        "all_mapped_except_postprocess": all_but_pp,
        "fully_integer": quant == "full_integer",
        "quantization": quant,
    }
    return {
        "model": model.path,
        **summary,
        "note": PREDICTION_NOTE,
        "summary": dict(summary),
        "has_postprocess": has_pp,
        "first_unmapped_op": None if cut is None else {
            "index": cut.op.index, "operator": cut.op.opcode, "custom_code": cut.op.custom_code,
            "output": cut.op.outputs[0].name if cut.op.outputs else None,
            "status": cut.status, "reasons": list(cut.reasons)},
        "operators": rows,
        "cpu_ops": [v.to_dict() for v in verdicts if not v.on_tpu],
        "ops": [v.to_dict() for v in verdicts],
        "op_histogram": model.op_histogram,
        "custom_ops": model.custom_ops,
        "inputs": [t.to_dict() for t in model.inputs],
        "outputs": [t.to_dict() for t in model.outputs],
        "warnings": warnings,
        "notes": notes,
    }


def analyze_model(path) -> dict:
    """Predict the Edge TPU mapping of a .tflite model. Raises ModelContractError for bad files."""
    return analyze_model_info(read_model(path))


def _dedupe(items) -> list[str]:
    out: list[str] = []
    for it in items:
        if it not in out:
            out.append(it)
    return out


def format_report(result: dict, max_cpu_lines: int = 40) -> str:
    """The analysis in the compiler's log layout, then why each CPU op stays there."""
    lines = [f"Edge TPU mapping PREDICTION for {result['model']}",
             f"({result['note']})", "", format_operator_table(result["operators"]), ""]
    cpu = result["cpu_ops"]
    if cpu:
        lines.append("Ops predicted to run on the CPU:")
        shown = 0
        follow_only: list[int] = []
        for op in cpu:
            own = [r for r in op["reasons"] if not r.startswith(FOLLOWS_UNMAPPED)]
            if not own:
                follow_only.append(op["index"])
                continue
            if shown >= max_cpu_lines:
                continue
            name = op["operator"] + (f"({op['custom_code']})" if op["custom_code"] else "")
            tag = " [expected]" if op["expected"] else ""
            lines.append(f"  #{op['index']} {name}{tag}: " + "; ".join(own))
            shown += 1
        hidden = sum(1 for op in cpu if any(not r.startswith(FOLLOWS_UNMAPPED)
                                            for r in op["reasons"])) - shown
        if hidden > 0:
            lines.append(f"  ... and {hidden} more (use --json for every op)")
        if follow_only:
            first = result["first_unmapped_op"]
            where = (", ".join(f"#{i}" for i in follow_only) if len(follow_only) <= 6
                     else f"#{follow_only[0]}..#{follow_only[-1]}")
            lines.append(f"  {where}: {len(follow_only)} op(s) "
                         f"that could map but come after the first unmapped op "
                         f"(#{first['index']} {first['operator']}) run on the CPU "
                         f"({FOLLOWS_UNMAPPED})")
        lines.append("")
    s = result
    lines.append(
        f"Summary (prediction): {s['total_ops']} ops, {s['ops_on_tpu']} on the Edge TPU, "
        f"{s['ops_on_cpu']} on the CPU ({s['expected_on_cpu']} expected). "
        f"quantization: {s['quantization']}; fully_integer: {str(s['fully_integer']).lower()}; "
        f"all_mapped_except_postprocess: {str(s['all_mapped_except_postprocess']).lower()}.")
    for w in s["warnings"]:
        lines.append(f"Warning: {w}")
    for n in s["notes"]:
        lines.append(f"Note: {n}")
    return "\n".join(lines)
