"""Delegate coverage: how much of a model the LiteRT interpreter's delegate (XNNPACK on the CPU)
took, read from the interpreter after it applied the delegate.

LiteRT keeps the model's own nodes and appends one DELEGATE node per partition the delegate
took; the model's nodes it took are no longer in the execution plan. A partition is found
from its DELEGATE node by walking back from the node's output tensors to its input tensors:
every model node met on the way ran inside that partition. The model nodes in no partition are
the fallback ops, run by the interpreter's own kernels (each one between two partitions costs a
hand-over; int8 HARD_SWISH and AVERAGE_POOL_2D are such ops for XNNPACK).

    {"ops_total": model nodes, "ops_delegated": in a partition, "partitions": DELEGATE nodes,
     "fallback_ops": {op name: count}, "delegate": "XNNPACK" or None}
"""
from __future__ import annotations

from collections import Counter


def coverage_of(interpreter) -> dict:
    """Delegate coverage of a LiteRT Interpreter (tensors allocated)."""
    ops = interpreter._get_ops_details()
    model_ops = [o for o in ops if o["op_name"] != "DELEGATE"]
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    producer = {int(t): o["index"] for o in model_ops for t in o["outputs"]}
    by_index = {o["index"]: o for o in model_ops}
    delegated: set[int] = set()
    for d in delegates:
        inputs = {int(t) for t in d["inputs"]}
        stack, seen = [int(t) for t in d["outputs"]], set()
        while stack:
            t = stack.pop()
            if t in inputs or t in seen or t not in producer:
                continue
            seen.add(t)
            node = producer[t]
            if node not in delegated:
                delegated.add(node)
                stack.extend(int(i) for i in by_index[node]["inputs"] if i >= 0)
    fallback = Counter(o["op_name"] for o in model_ops if o["index"] not in delegated)
    return {"ops_total": len(model_ops), "ops_delegated": len(delegated),
            "partitions": len(delegates), "fallback_ops": dict(fallback.most_common()),
            "delegate": "XNNPACK" if delegates else None}


def delegate_coverage(model_path, threads: int | None = None) -> dict:
    """Delegate coverage of a .tflite loaded as the benchmark loads it (default delegate)."""
    from include.convert.inspect import load_interpreter

    return coverage_of(load_interpreter(model_path, threads=threads))
