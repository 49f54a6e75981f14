"""Quantization-aware training models (tensorflow-model-optimization on tf-keras).

The QAT form of a detector is built in two steps:
1. BatchNorm is folded into the convs (`blocks.folded_batchnorm`), so fake-quant nodes sit on
   the folded weights - the form TensorFlow's frozen-graph converter turns into a fully uint8
   model. With BN after a fake-quantised conv, the converter keeps the conv in float.
2. tfmot's 8-bit scheme with per-tensor weights (`disable_per_axis=True`): uint8 kernels in
   TFLite only take per-tensor weight quantisation (per-channel needs int8).
The input quantiser's range is pinned to [-1, 127/128], so the uint8 model's input
quantisation is exactly scale 1/128, zero point 128: `quantized_input_stats` (128, 128).

Two layouts of fake-quant variables (the `scheme`, recorded as `qat_scheme` in checkpoint.json):
- default (None): tfmot's own. A conv followed by a ReLU layer gets no quantiser at all
  (tfmot's Conv+ReLU transform switches it off so that no fake-quant sits between them); the
  converter then picks those kernels' ranges from their values.
- "all_kernels": every conv and depthwise kernel has its own range variables (kernel_min /
  kernel_max), as in TF1's contrib.quantize. Checkpoints imported from TFOD QAT training use it
  so the weight ranges training learnt reach the uint8 model (include/tfod/importer.py).
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


ALL_KERNELS = "all_kernels"
SCHEMES = (None, ALL_KERNELS)


def _all_kernels_scheme():
    """tfmot's 8-bit scheme (per-tensor) whose layout pass gives each conv kernel behind a ReLU
    a kernel-only quantiser instead of none (its output stays unquantised: the ReLU's is used)."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs, default_8bit_quantize_layout_transform,
        default_8bit_quantize_registry, default_8bit_quantize_scheme)

    class Layout(default_8bit_quantize_layout_transform.Default8BitQuantizeLayoutTransform):
        def apply(self, model, layer_quantize_map):
            model, qmap = super().apply(model, layer_quantize_map)
            for layer in model.layers:
                attr = ("depthwise_kernel" if isinstance(layer, tf.keras.layers.DepthwiseConv2D)
                        else "kernel" if isinstance(layer, tf.keras.layers.Conv2D) else None)
                config = qmap.get(layer.name, {}).get("quantize_config")
                if attr and isinstance(config, default_8bit_quantize_configs.NoOpQuantizeConfig):
                    qmap[layer.name]["quantize_config"] = \
                        default_8bit_quantize_registry.Default8BitQuantizeConfig([attr], [], False)
            return model, qmap

    class Scheme(default_8bit_quantize_scheme.Default8BitQuantizeScheme):
        def get_layout_transformer(self):
            return Layout()

    return Scheme(disable_per_axis=True)


def _quantize(folded_model, scheme_name=None):
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import \
        default_8bit_quantize_scheme

    if scheme_name not in SCHEMES:
        raise ConfigError(f"unknown QAT scheme {scheme_name!r}; known: {SCHEMES}.",
                          where="qat_scheme", fix="write the checkpoint again with this version.")
    q = tfmot.quantization.keras
    scheme = (_all_kernels_scheme() if scheme_name == ALL_KERNELS else
              default_8bit_quantize_scheme.Default8BitQuantizeScheme(disable_per_axis=True))
    with q.quantize_scope({"HardSwish": blocks.HardSwish}):
        model = q.quantize_apply(q.quantize_annotate_model(folded_model), scheme=scheme)
    pin_input_range(model)
    return model


def build_qat_detector(spec: ModelSpec, batch_size=None, scheme=None):
    """A QAT detector with freshly initialised weights (weights are then restored).
    scheme: None (tfmot's layout) or ALL_KERNELS (see the module docstring)."""
    check_qat_supported(spec)
    with blocks.folded_batchnorm():
        folded = build_detector(spec, batch_size=batch_size)
    return _quantize(folded, scheme)


def qat_from_float(float_model, spec: ModelSpec, batch_size=None, scheme=None):
    """Fold BN of a trained float detector and wrap it for quantization-aware fine-tuning."""
    check_qat_supported(spec)
    with blocks.folded_batchnorm():
        folded = build_detector(spec, batch_size=batch_size)
    blocks.fold_batchnorm_weights(float_model, folded)
    return _quantize(folded, scheme)


def scheme_of(model):
    """The QAT scheme a built QAT model has: ALL_KERNELS when a conv feeding a ReLU has its own
    kernel range, else None."""
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        if isinstance(inner, (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D)) and \
                not any(w.name.endswith("/post_activation_min:0") for w in layer.weights):
            return ALL_KERNELS if any(w.name.endswith("/kernel_min:0") for w in layer.weights) \
                else None
    return None


def pin_input_range(model) -> None:
    # tfmot names it quantize_layer, quantize_layer_1, ... (Keras uniquifies per session).
    layer = next(l for l in model.layers if l.name.startswith("quantize_layer"))
    for w in layer.weights:
        # variables are named <layer>/<layer>_min:0 and _max:0 (the layer name varies)
        if w.name.endswith("_min:0"):
            w.assign(INPUT_RANGE[0])
        elif w.name.endswith("_max:0"):
            w.assign(INPUT_RANGE[1])
