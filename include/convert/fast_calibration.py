"""Fast calibration: activation ranges for int8 measured by the LiteRT interpreter with XNNPACK.

TensorFlow's converter calibrates a full-integer model by running the float model over the
representative data in its own calibration interpreter (reference kernels plus a logging op per
tensor), which is slow: most of an int8 conversion. The ranges it records are each activation
tensor's overall min and max over the data.

`fast_calibration()` replaces only that measuring step, inside one conversion: the same float
model the converter built (the one its calibrator would run) is loaded in LiteRT with every
float activation tensor made a model output (so the delegate must hand each one back), the
representative data runs through it with XNNPACK on all cores, and each tensor's overall min
and max are written into the model as the calibrator writes them. TensorFlow's own quantizer
then quantizes as before; nothing else of the recipe changes. Float kernels differ in rounding
only, so the ranges, and the scales and zero points, agree with TensorFlow's calibrator to
float precision (tests/test_fast_int8.py compares both; bench/calibration_time.py times them).

The int16-activation recipe (16x8) keeps TensorFlow's calibrator (it quantizes through another
path of the converter).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

#: conversion.json's name for each way of calibrating
CALIBRATORS = {True: "LiteRT interpreter with XNNPACK (include/convert/fast_calibration.py)",
               False: "TensorFlow's calibrator (tf.lite.python.optimize.calibrator)"}
_LOCK = threading.Lock()


def _threads() -> int:
    """The cores this process may use."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def tensor_ranges(model_bytes: bytes, samples, threads: int | None = None) -> dict[int, tuple]:
    """{tensor index: (min, max)} of every float activation tensor of subgraph 0 of a float
    .tflite over `samples` (lists of input arrays, as a representative dataset yields them)."""
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(model_bytes)
    graph = model.subgraphs[0]
    inputs = list(graph.inputs)
    produced = {int(t) for op in graph.operators for t in op.outputs if t >= 0}
    watch = [i for i, t in enumerate(graph.tensors)
             if t.type == schema.TensorType.FLOAT32 and (i in produced or i in inputs)]
    graph.outputs = list(dict.fromkeys(list(graph.outputs) + watch))
    probe = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    interp = Interpreter(model_content=probe, num_threads=threads or _threads())
    interp.allocate_tensors()
    details = interp.get_input_details()
    ranges: dict[int, list] = {}
    for sample in samples:
        sample = sample if isinstance(sample, (list, tuple)) else [sample]
        for d, x in zip(details, sample):
            interp.set_tensor(d["index"], np.asarray(x, dtype=d["dtype"]))
        interp.invoke()
        for i in watch:
            v = interp.get_tensor(i)
            if v.size == 0:
                continue
            lo, hi = float(np.min(v)), float(np.max(v))
            if i in ranges:
                ranges[i][0] = min(ranges[i][0], lo)
                ranges[i][1] = max(ranges[i][1], hi)
            else:
                ranges[i] = [lo, hi]
    return {i: (lo, hi) for i, (lo, hi) in ranges.items()}


def with_ranges(model_bytes: bytes, ranges: dict[int, tuple]) -> bytes:
    """The model with each tensor's min/max set in its quantization parameters, where
    TensorFlow's calibrator puts the ranges it measured."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(model_bytes)
    tensors = model.subgraphs[0].tensors
    for i, (lo, hi) in ranges.items():
        q = tensors[i].quantization or schema.QuantizationParametersT()
        q.min, q.max = [lo], [hi]
        tensors[i].quantization = q
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _fast_calibrator_class(base):
    class LiteRTCalibrator(base):
        """TensorFlow's Calibrator with `calibrate` measured in LiteRT (module docstring)."""

        def __init__(self, model_content, *args, **kwargs):
            super().__init__(model_content, *args, **kwargs)
            self._fast_model = model_content

        def calibrate(self, dataset_gen):
            samples = list(dataset_gen())
            return with_ranges(self._fast_model, tensor_ranges(self._fast_model, samples))

    return LiteRTCalibrator


@contextlib.contextmanager
def fast_calibration(enabled: bool = True):
    """Within the block, int8 conversions calibrate through LiteRT (module docstring)."""
    if not enabled:
        yield
        return
    from tensorflow.lite.python.optimize import calibrator

    with _LOCK:
        original = calibrator.Calibrator
        calibrator.Calibrator = _fast_calibrator_class(original)
        try:
            yield
        finally:
            calibrator.Calibrator = original
