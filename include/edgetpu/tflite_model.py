"""The project's one reader of .tflite flatbuffers: operators in execution order, tensors, options.

Every module that looks inside a model file uses it: the Edge TPU analysis, the conversion
(`include.convert.converter`, and `include.convert.postprocess_inputs`, which rewrites a model
through `unpack_model`/`pack_model`) and the quality runner (`include.quality.runner.model_info`,
`check_model_file`).

It reads the file with the flatbuffers classes generated from TFLite's `schema.fbs`. Two copies of
that generated module ship in this project's environment:

- `ai_edge_litert.schema_py_generated` (LiteRT): imports in well under a second;
- `tensorflow.lite.python.schema_py_generated` (TensorFlow 2.21): the same schema, but importing
  it loads all of TensorFlow (about ten seconds).

The first one found is used. Nothing here runs a model; it only reads the file, so a model with
ops the local runtime cannot execute (an Edge TPU custom op, say) can still be inspected.

`read_model(path)` returns a `ModelInfo`: the first (main) subgraph's operators in execution
order with the op type name the Edge TPU compiler prints in its log (CONV_2D, CUSTOM, ...), the
custom code of custom ops, builtin options as a plain dict (enum values as names, e.g.
`fused_activation_function: "RELU6"`), and for each tensor its dtype, shape, shape signature,
whether it is a constant (has buffer data) and its quantization parameters.

`check_model_file(path)` checks only that the file exists and carries the `TFL3` identifier;
`opcode_of(code)` resolves an operator code to (builtin number, custom code).
"""
from __future__ import annotations

import importlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from include.errors import ModelContractError

_SCHEMA_MODULES = (
    "ai_edge_litert.schema_py_generated",
    "tensorflow.lite.python.schema_py_generated",
)
_schema = None

FILE_IDENTIFIER = b"TFL3"
POSTPROCESS_CUSTOM_CODE = "TFLite_Detection_PostProcess"
EDGETPU_CUSTOM_CODE = "edgetpu-custom-op"

# numpy dtypes of the tensor types whose constant data this reader can decode.
_NUMPY_DTYPES = {
    "float32": np.float32, "float16": np.float16, "float64": np.float64,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
    "bool": np.bool_,
}

# Option fields whose integer values are enums; they are reported by name.
_ENUM_FIELDS = {
    "fusedActivationFunction": "ActivationFunctionType",
    "padding": "Padding",
    "weightsFormat": "FullyConnectedOptionsWeightsFormat",
}


def schema():
    """The generated TFLite schema module (LiteRT's copy when available: it imports fast)."""
    global _schema
    if _schema is None:
        errors = []
        for name in _SCHEMA_MODULES:
            try:
                _schema = importlib.import_module(name)
                break
            except ImportError as exc:  # pragma: no cover - depends on the environment
                errors.append(f"{name}: {exc}")
        else:  # pragma: no cover
            raise ModelContractError(
                "cannot read .tflite files: no generated TFLite schema module is importable "
                f"({'; '.join(errors)}).",
                fix="install the pinned requirements (ai-edge-litert or tensorflow).")
    return _schema


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _snake(name: str) -> str:
    """dilationWFactor -> dilation_w_factor, strideW -> stride_w."""
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


@dataclass
class Quantization:
    scale: list[float]
    zero_point: list[int]
    quantized_dimension: int = 0

    def to_dict(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point,
                "quantized_dimension": self.quantized_dimension}


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype: str                      # "int8", "uint8", "float32", ... (lower-case TensorType name)
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None
    buffer: int
    is_constant: bool               # has data in the model file (weights, biases, axes, ...)
    is_variable: bool = False
    quantization: Quantization | None = None
    sparse: bool = False

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_quantized(self) -> bool:
        return bool(self.quantization and self.quantization.scale)

    @property
    def num_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= max(int(d), 0)
        return n

    def to_dict(self) -> dict:
        return {
            "index": self.index, "name": self.name, "dtype": self.dtype,
            "shape": list(self.shape),
            "shape_signature": None if self.shape_signature is None else list(self.shape_signature),
            "is_constant": self.is_constant, "is_variable": self.is_variable,
            "quantization": self.quantization.to_dict() if self.quantization else None,
            "sparse": self.sparse,
        }


@dataclass
class OpInfo:
    index: int                      # position in execution order
    opcode: str                     # builtin operator name as the compiler prints it
    builtin_code: int
    version: int
    custom_code: str | None
    inputs: list[TensorInfo | None]  # None where an optional input is absent (-1)
    outputs: list[TensorInfo]
    options: dict[str, Any] = field(default_factory=dict)
    options_type: str | None = None
    custom_options: Any = None      # decoded flexbuffer map for custom ops, when readable

    @property
    def name(self) -> str:
        """The op type; custom ops add their code: `CUSTOM(TFLite_Detection_PostProcess)`."""
        return f"{self.opcode}({self.custom_code})" if self.custom_code else self.opcode

    @property
    def label(self) -> str:
        """A short human label: index, type and the name of its first output tensor."""
        out = self.outputs[0].name if self.outputs else ""
        return f"#{self.index} {self.name}" + (f" ({out})" if out else "")

    def present_inputs(self) -> list[TensorInfo]:
        return [t for t in self.inputs if t is not None]

    def to_dict(self) -> dict:
        return {
            "index": self.index, "opcode": self.opcode, "custom_code": self.custom_code,
            "version": self.version,
            "inputs": [None if t is None else t.index for t in self.inputs],
            "outputs": [t.index for t in self.outputs],
            "options_type": self.options_type, "options": self.options,
        }


@dataclass
class ModelInfo:
    path: str
    schema_version: int
    description: str
    subgraph_count: int
    tensors: list[TensorInfo]
    ops: list[OpInfo]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    other_subgraph_op_count: int = 0
    _buffers: list = field(default_factory=list, repr=False)
    _raw: bytes = field(default=b"", repr=False)

    @property
    def op_histogram(self) -> dict[str, int]:
        """Op type -> count, in order of first appearance (CUSTOM ops under `CUSTOM`)."""
        return dict(Counter(op.opcode for op in self.ops))

    @property
    def custom_ops(self) -> dict[str, int]:
        return dict(Counter(op.custom_code for op in self.ops if op.custom_code))

    def consumers(self, tensor: TensorInfo | int) -> list[OpInfo]:
        idx = tensor if isinstance(tensor, int) else tensor.index
        return [op for op in self.ops if any(t is not None and t.index == idx for t in op.inputs)]

    def constant_value(self, tensor: TensorInfo) -> np.ndarray | None:
        """The data of a constant tensor as a numpy array of its shape, or None."""
        if not tensor.is_constant or tensor.dtype not in _NUMPY_DTYPES or tensor.sparse:
            return None
        raw = self._buffer_bytes(tensor.buffer)
        if raw is None:
            return None
        arr = np.frombuffer(raw, dtype=_NUMPY_DTYPES[tensor.dtype])
        try:
            return arr.reshape(tensor.shape) if tensor.shape else arr.reshape(())
        except ValueError:
            return arr

    def _buffer_bytes(self, index: int) -> bytes | None:
        if index <= 0 or index >= len(self._buffers):
            return None
        buf = self._buffers[index]
        if buf.data is not None and len(buf.data):
            return bytes(np.asarray(buf.data, dtype=np.uint8))
        if getattr(buf, "offset", 0) > 1 and getattr(buf, "size", 0) > 0:
            return self._raw[buf.offset: buf.offset + buf.size]
        return None

    def summary(self) -> dict:
        return {
            "path": self.path, "schema_version": self.schema_version,
            "subgraphs": self.subgraph_count, "ops": len(self.ops),
            "op_histogram": self.op_histogram, "custom_ops": self.custom_ops,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


def _options_dict(obj) -> dict[str, Any]:
    if obj is None:
        return {}
    s = schema()
    out: dict[str, Any] = {}
    for key, value in vars(obj).items():
        if key.startswith("_"):
            continue
        if key in _ENUM_FIELDS and isinstance(value, int):
            enum_cls = getattr(s, _ENUM_FIELDS[key], None)
            value = _enum_names(enum_cls).get(value, value) if enum_cls is not None else value
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, (np.generic,)):
            value = value.item()
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif value is not None and not isinstance(value, (int, float, bool, str, list)):
            continue  # nested tables: not needed for the mapping rules
        out[_snake(key)] = value
    return out


def _decode_custom_options(data) -> Any:
    if data is None or len(data) == 0:
        return None
    try:
        from flatbuffers import flexbuffers
        value = flexbuffers.Loads(bytes(np.asarray(data, dtype=np.uint8)))
        return value if isinstance(value, (dict, list, int, float, str, bool)) else None
    except Exception:  # custom options need not be flexbuffers
        return None


def check_model_file(path) -> Path:
    """The path as a Path; ModelContractError when it is missing, a folder, or not a TFLite
    flatbuffer (file identifier `TFL3` at bytes 4-8). Reads only the first 8 bytes."""
    p = Path(path)
    if not p.exists():
        raise ModelContractError("model file not found.", where=str(p),
                                 fix="pass the path of a .tflite file (for example one written by "
                                     "`mobiledet convert`).")
    if not p.is_file():
        raise ModelContractError("is not a file; expected a .tflite model.", where=str(p),
                                 fix="pass the .tflite file itself, not its folder.")
    with open(p, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != FILE_IDENTIFIER:
        raise ModelContractError(f"not a TFLite model (file identifier {head[4:8]!r}, expected "
                                 f"{FILE_IDENTIFIER!r}).", where=str(p),
                                 fix="pass a .tflite file; SavedModels, Keras files, frozen graphs "
                                     "and export folders must be converted first "
                                     "(`mobiledet convert`).")
    return p


def unpack_model(data: bytes, where: str = "model"):
    """The flatbuffer as the schema's mutable object tree (`ModelT`), for code that rewrites a
    model; `pack_model` turns it back into bytes."""
    try:
        return schema().ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:
        raise ModelContractError(f"the TFLite flatbuffer cannot be read ({exc}).", where=where,
                                 fix="the file is truncated or corrupt: write it again.") from exc


def pack_model(model, size_hint: int = 0) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(size_hint + 1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def opcode_of(code) -> tuple[int, str | None]:
    """An OperatorCode -> (builtin operator number, custom code or None).

    The builtin number is the larger of `builtinCode` and `deprecatedBuiltinCode`: files written
    before schema 3a keep it only in the deprecated int8 field, newer ones in both (or only in
    the int32 field for numbers above 127).
    """
    builtin = max(int(code.builtinCode), int(getattr(code, "deprecatedBuiltinCode", 0)))
    custom = code.customCode
    if isinstance(custom, bytes):
        custom = custom.decode("utf-8", "replace")
    return builtin, custom or None


def read_model(path) -> ModelInfo:
    """Read a .tflite flatbuffer. Raises ModelContractError naming the file when it is unusable."""
    p = check_model_file(path)
    raw = p.read_bytes()
    s = schema()
    model = unpack_model(raw, str(p))
    if not model.subgraphs:
        raise ModelContractError("the model has no subgraph.", where=str(p),
                                 fix="write the model again with the TFLite converter.")

    op_names = _enum_names(s.BuiltinOperator)
    dtype_names = {k: v.lower() for k, v in _enum_names(s.TensorType).items()}
    option_names = _enum_names(s.BuiltinOptions)
    buffers = model.buffers or []

    def has_data(buf_index: int) -> bool:
        if buf_index <= 0 or buf_index >= len(buffers):
            return False
        b = buffers[buf_index]
        return (b.data is not None and len(b.data) > 0) or (
            getattr(b, "offset", 0) > 1 and getattr(b, "size", 0) > 0)

    sg = model.subgraphs[0]
    tensors: list[TensorInfo] = []
    for i, t in enumerate(sg.tensors or []):
        q = t.quantization
        quant = None
        if q is not None and q.scale is not None and len(q.scale):
            zero_points = q.zeroPoint if q.zeroPoint is not None else []
            quant = Quantization(scale=[float(v) for v in q.scale],
                                 zero_point=[int(v) for v in zero_points],
                                 quantized_dimension=int(q.quantizedDimension))
        name = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else (t.name or "")
        sig = getattr(t, "shapeSignature", None)
        tensors.append(TensorInfo(
            index=i, name=name, dtype=dtype_names.get(t.type, f"type{t.type}"),
            shape=tuple(int(d) for d in (t.shape if t.shape is not None else [])),
            shape_signature=None if sig is None or len(sig) == 0 else tuple(int(d) for d in sig),
            buffer=int(t.buffer), is_constant=has_data(int(t.buffer)),
            is_variable=bool(getattr(t, "isVariable", False)), quantization=quant,
            sparse=getattr(t, "sparsity", None) is not None))

    def tensor_at(idx: int) -> TensorInfo | None:
        return tensors[idx] if 0 <= idx < len(tensors) else None

    codes = model.operatorCodes or []
    ops: list[OpInfo] = []
    for i, op in enumerate(sg.operators or []):
        code = codes[op.opcodeIndex]
        builtin, custom = opcode_of(code)
        ops.append(OpInfo(
            index=i, opcode=op_names.get(builtin, f"BUILTIN_{builtin}"), builtin_code=builtin,
            version=int(code.version), custom_code=custom,
            inputs=[tensor_at(int(j)) for j in (op.inputs if op.inputs is not None else [])],
            outputs=[tensors[int(j)] for j in (op.outputs if op.outputs is not None else [])
                     if 0 <= int(j) < len(tensors)],
            options=_options_dict(op.builtinOptions),
            options_type=option_names.get(op.builtinOptionsType) if op.builtinOptionsType else None,
            custom_options=_decode_custom_options(op.customOptions) if custom else None))

    desc = model.description
    if isinstance(desc, bytes):
        desc = desc.decode("utf-8", "replace")
    return ModelInfo(
        path=str(p), schema_version=int(model.version), description=desc or "",
        subgraph_count=len(model.subgraphs), tensors=tensors, ops=ops,
        inputs=[tensors[int(j)] for j in (sg.inputs if sg.inputs is not None else [])],
        outputs=[tensors[int(j)] for j in (sg.outputs if sg.outputs is not None else [])],
        other_subgraph_op_count=sum(len(g.operators or []) for g in model.subgraphs[1:]),
        _buffers=buffers, _raw=raw)
