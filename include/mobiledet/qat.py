"""Quantization-aware training models (tensorflow-model-optimization on tf-keras).

The QAT form of a detector is built in two steps:
1. BatchNorm is folded into the convs (`blocks.folded_batchnorm`), so fake-quant nodes sit on
   the folded weights - the form TensorFlow's frozen-graph converter turns into a fully uint8
   model. With BN after a fake-quantised conv, the converter keeps the conv in float.
2. tfmot's 8-bit scheme with per-tensor weights (`disable_per_axis=True`): uint8 kernels in
   TFLite only take per-tensor weight quantisation (per-channel needs int8).
The input quantiser's range is pinned to [-1, 127/128], so the uint8 model's input
quantisation is exactly scale 1/128, zero point 128: `quantized_input_stats` (128, 128).
"""
from __future__ import annotations

import tensorflow as tf

from include.errors import ConfigError
from include.mobiledet import blocks
from include.mobiledet.spec import ModelSpec
from include.mobiledet.ssd import build_detector

INPUT_RANGE = (-1.0, 127.0 / 128.0)
QAT_VARIANTS = ("edgetpu", "dsp", "gpu")


def check_qat_supported(spec: ModelSpec) -> None:
    if spec.variant not in QAT_VARIANTS:
        raise ConfigError(
            f"quantization-aware training is not available for the {spec.variant!r} variant: its "
            "hard-swish and squeeze-excite layers have no 8-bit scheme in "
            "tensorflow-model-optimization.", where="--qat",
            fix=f"train {spec.variant} in float and use the int8 (post-training) recipe, or use "
                f"QAT with one of {', '.join(QAT_VARIANTS)}.")


def _quantize(folded_model):
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import \
        default_8bit_quantize_scheme

    q = tfmot.quantization.keras
    scheme = default_8bit_quantize_scheme.Default8BitQuantizeScheme(disable_per_axis=True)
    with q.quantize_scope({"HardSwish": blocks.HardSwish}):
        model = q.quantize_apply(q.quantize_annotate_model(folded_model), scheme=scheme)
    pin_input_range(model)
    return model


def build_qat_detector(spec: ModelSpec, batch_size=None):
    """A QAT detector with freshly initialised weights (weights are then restored)."""
    check_qat_supported(spec)
    with blocks.folded_batchnorm():
        folded = build_detector(spec, batch_size=batch_size)
    return _quantize(folded)


def qat_from_float(float_model, spec: ModelSpec, batch_size=None):
    """Fold BN of a trained float detector and wrap it for quantization-aware fine-tuning."""
    check_qat_supported(spec)
    with blocks.folded_batchnorm():
        folded = build_detector(spec, batch_size=batch_size)
    blocks.fold_batchnorm_weights(float_model, folded)
    return _quantize(folded)


def pin_input_range(model) -> None:
    # tfmot names it quantize_layer, quantize_layer_1, ... (Keras uniquifies per session).
    layer = next(l for l in model.layers if l.name.startswith("quantize_layer"))
    for w in layer.weights:
        # variables are named <layer>/<layer>_min:0 and _max:0 (the layer name varies)
        if w.name.endswith("_min:0"):
            w.assign(INPUT_RANGE[0])
        elif w.name.endswith("_max:0"):
            w.assign(INPUT_RANGE[1])
