"""Model statistics: parameters, multiply-adds, anchors, feature maps.

Counting convention for `macs`: one multiply-add per weight per output position, for every
Conv2D (including the 1x1 convs inside squeeze-excite, on their 1x1 map), every
DepthwiseConv2D and every predictor conv, for one image. BatchNorm (folded into the conv at
export), activations, residual adds, pooling and the SE multiply are not counted.
"""
from __future__ import annotations

import numpy as np

from include.mobiledet.spec import ModelSpec


def count_macs(model) -> int:
    import tensorflow as tf

    layers = tf.keras.layers
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            _, oh, ow, _ = layer.output.shape
            kh, kw, cin, dm = layer.depthwise_kernel.shape
            total += int(oh) * int(ow) * int(kh) * int(kw) * int(cin) * int(dm)
        elif isinstance(layer, layers.Conv2D):
            _, oh, ow, cout = layer.output.shape
            kh, kw, cin, _ = layer.kernel.shape
            total += int(oh) * int(ow) * int(kh) * int(kw) * int(cin) * int(cout)
    return total


def describe(spec: ModelSpec, model=None) -> dict:
    from include.mobiledet.ssd import anchors_for, build_detector, model_feature_maps

    if model is None:
        model = build_detector(spec, batch_size=1)
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return {
        "variant": spec.variant,
        "num_classes": spec.num_classes,
        "input_size": spec.input_size,
        "depth_multiplier": spec.depth_multiplier,
        "params": int(model.count_params()),
        "trainable_params": trainable,
        "macs": count_macs(model),
        "anchors": int(anchors_for(spec).shape[0]),
        "feature_maps": model_feature_maps(model),
        "layers": len(model.layers),
    }
