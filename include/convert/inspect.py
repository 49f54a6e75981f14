"""What is inside a .tflite file: ops, tensors per dtype, inputs and outputs with quantisation."""
from __future__ import annotations

from collections import Counter

import numpy as np


def _dtype_name(dtype) -> str:
    return np.dtype(dtype).name


def _io(detail) -> dict:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {"name": detail["name"], "dtype": _dtype_name(detail["dtype"]),
            "shape": [int(d) for d in detail["shape"]],
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)}
            if scale else None}


def load_interpreter(model_path, threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model_path), num_threads=threads)
    interp.allocate_tensors()
    return interp


def inspect_tflite(model_path) -> dict:
    interp = load_interpreter(model_path)
    ops = [op["op_name"] for op in interp._get_ops_details()]
    ops = [op for op in ops if op != "DELEGATE"]
    tensors = interp.get_tensor_details()
    outputs = interp.get_output_details()
    inputs = interp.get_input_details()
    io_indices = {d["index"] for d in inputs} | {d["index"] for d in outputs}
    dtypes = Counter(_dtype_name(t["dtype"]) for t in tensors)
    total = sum(dtypes.values())
    float_named = [t["name"] for t in tensors
                   if _dtype_name(t["dtype"]) in ("float32", "float16") and t["index"] not in io_indices
                   and t["name"]]
    return {
        "ops": dict(Counter(ops).most_common()),
        "op_count": len(ops),
        "inputs": [_io(d) for d in inputs],
        "outputs": [_io(d) for d in outputs],
        "tensor_dtypes": dict(dtypes),
        "tensor_dtype_share": {k: round(v / total, 4) for k, v in dtypes.items()},
        "float_tensors_besides_io": float_named,
    }
