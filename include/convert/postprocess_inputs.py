"""Keep full-integer models integer up to the SSD post-process op.

Post-training full-integer quantisation (the int8 recipe) makes the body int8, but TensorFlow's
converter then dequantises the two raw outputs to float right before
TFLite_Detection_PostProcess and keeps the anchors float. That leaves float tensors in an
"integer" model, and the DEQUANTIZE ops can't run on the Edge TPU.
The op's kernel reads uint8 inputs (the TFOD uint8 models feed it uint8) but not int8, so this
rewrite
  * replaces each DEQUANTIZE(int8) -> post-process with a QUANTIZE(int8 -> uint8) requantisation
    (same scale, zero point + 128: exact), which the Edge TPU maps;
  * stores the anchors as uint8 with an affine scale over their range, as the QAT/uint8 path of
    the converter itself does.
The model is otherwise untouched; the conversion report records the rewrite.
"""
from __future__ import annotations

import numpy as np

from include.edgetpu.tflite_model import (POSTPROCESS_CUSTOM_CODE, opcode_of, pack_model, schema,
                                          unpack_model)


def _opcode_index(model, builtin) -> int:
    for i, code in enumerate(model.operatorCodes):
        if opcode_of(code) == (builtin, None):
            return i
    code = schema().OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _quant(scale, zero_point):
    q = schema().QuantizationParametersT()
    q.scale = [float(scale)]
    q.zeroPoint = [int(zero_point)]
    return q


def integer_postprocess_inputs(data: bytes) -> tuple[bytes, dict]:
    """-> (new model bytes, info). Returns the input unchanged when nothing needs rewriting."""
    s = schema()
    model = unpack_model(data)
    sg = model.subgraphs[0]
    B = s.BuiltinOperator
    T = s.TensorType

    def opcode(op):
        return opcode_of(model.operatorCodes[op.opcodeIndex])

    pp = [op for op in sg.operators if opcode(op)[1] == POSTPROCESS_CUSTOM_CODE]
    info = {"requantized_inputs": [], "anchors_quantized": None}
    if len(pp) != 1:
        return data, info
    pp = pp[0]
    producers = {int(t): op for op in sg.operators for t in op.outputs}
    consumers: dict[int, int] = {}
    for op in sg.operators:
        for t in op.inputs:
            consumers[int(t)] = consumers.get(int(t), 0) + 1
    quantize_index = None
    inputs = [int(t) for t in pp.inputs]
    for slot in (0, 1):
        t = inputs[slot]
        op = producers.get(t)
        if op is None or opcode(op)[0] != B.DEQUANTIZE or consumers.get(t) != 1:
            continue
        src = sg.tensors[int(op.inputs[0])]
        if src.type != T.INT8 or src.quantization is None or len(src.quantization.scale) != 1:
            continue
        if quantize_index is None:
            quantize_index = _opcode_index(model, B.QUANTIZE)
        out = sg.tensors[t]
        out.type = T.UINT8
        out.quantization = _quant(src.quantization.scale[0], int(src.quantization.zeroPoint[0]) + 128)
        op.opcodeIndex = quantize_index  # DEQUANTIZE(int8->float) becomes QUANTIZE(int8->uint8)
        op.builtinOptionsType = s.BuiltinOptions.QuantizeOptions
        op.builtinOptions = s.QuantizeOptionsT()
        info["requantized_inputs"].append(out.name.decode() if out.name else str(t))
    anchors = sg.tensors[inputs[2]]
    buf = model.buffers[anchors.buffer]
    if anchors.type == T.FLOAT32 and buf.data is not None and len(buf.data) and \
            info["requantized_inputs"]:
        values = np.frombuffer(bytes(bytearray(buf.data)), np.float32)
        lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
        scale = (hi - lo) / 255.0 or 1.0
        zero_point = int(round(-lo / scale))
        q = np.clip(np.round(values / scale + zero_point), 0, 255).astype(np.uint8)
        buf.data = np.frombuffer(q.tobytes(), np.uint8)
        anchors.type = T.UINT8
        anchors.quantization = _quant(scale, zero_point)
        err = float(np.abs((q.astype(np.float32) - zero_point) * scale - values).max())
        info["anchors_quantized"] = {"scale": scale, "zero_point": zero_point,
                                     "max_abs_error": err}
    if not info["requantized_inputs"]:
        return data, info
    return pack_model(model, len(data)), info
