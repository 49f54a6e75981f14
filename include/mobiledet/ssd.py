"""SSDLite on a MobileDet backbone: feature maps, box predictor, and the Keras detector.

The detector maps normalised images [B, S, S, 3] in [-1, 1] to
  box_encodings [B, N, 4]       (Faster R-CNN codes against the anchors)
  class_logits  [B, N, C + 1]   (index 0 = background; sigmoid gives the scores)
The sigmoid is applied at export (raw_outputs/class_predictions) so that training can use the
numerically stable focal loss on logits.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from include.mobiledet import anchors as anchor_gen
from include.mobiledet.backbones import build_backbone
from include.mobiledet.blocks import HEAD_BN, conv_bn, depthwise_bn
from include.mobiledet.spec import ModelSpec

keras = tf.keras
layers = keras.layers

EXTRA_LAYER_DEPTHS = (512, 256, 256, 128)
MIN_DEPTH = 16
CLASS_BIAS_INIT = -4.6


def feature_map_sizes(input_size: int, num_maps: int = 6) -> list[int]:
    """Grid side of each feature map (C4 at stride 16, C5 at 32, then stride-2 extras, SAME)."""
    side = math.ceil(input_size / 16)
    sizes = []
    for _ in range(num_maps):
        sizes.append(side)
        side = math.ceil(side / 2)
    return sizes


def _extra_depth(depth: int, multiplier: float) -> int:
    return max(int(depth * multiplier), MIN_DEPTH)


def ssdlite_feature_maps(endpoints: dict, multiplier: float) -> list:
    """C4, C5, then four extra layers: 1x1 to depth/2 -> depthwise 3x3 s2 -> 1x1 to depth."""
    feats = [endpoints["C4"], endpoints["C5"]]
    x = feats[-1]
    for i, depth in enumerate(EXTRA_LAYER_DEPTHS):
        name = f"feature_map_{i + 2}"
        x = conv_bn(x, _extra_depth(depth // 2, multiplier), 1, 1, "relu6", f"{name}/reduce", HEAD_BN)
        x = depthwise_bn(x, 3, 2, "relu6", name, HEAD_BN)
        x = conv_bn(x, _extra_depth(depth, multiplier), 1, 1, "relu6", f"{name}/expand", HEAD_BN)
        feats.append(x)
    return feats


def _predictor_branch(x, outputs_per_anchor, anchors_per_cell, name, bias_init=0.0):
    """Depthwise 3x3 (+BN+relu6) -> 1x1 conv with bias (no BN, no activation) -> [B, HWA, K]."""
    h = depthwise_bn(x, 3, 1, "relu6", name, HEAD_BN)
    h = layers.Conv2D(anchors_per_cell * outputs_per_anchor, 1, use_bias=True,
                      bias_initializer=keras.initializers.Constant(bias_init),
                      name=f"{name}/conv_1x1")(h)
    cells = int(h.shape[1]) * int(h.shape[2])
    return layers.Reshape((cells * anchors_per_cell, outputs_per_anchor), name=f"{name}/reshape")(h)


def build_detector(spec: ModelSpec, batch_size: int | None = None) -> keras.Model:
    s = spec.input_size
    images = keras.Input((s, s, 3), batch_size=batch_size, name="normalized_input_image_tensor")
    endpoints = build_backbone(images, spec.variant, spec.depth_multiplier)
    feats = ssdlite_feature_maps(endpoints, spec.depth_multiplier)
    per_cell = anchor_gen.num_anchors_per_location(len(feats))
    boxes, logits = [], []
    for i, (f, a) in enumerate(zip(feats, per_cell)):
        boxes.append(_predictor_branch(f, 4, a, f"BoxPredictor_{i}/BoxEncodingPredictor"))
        logits.append(_predictor_branch(f, spec.num_classes + 1, a,
                                        f"BoxPredictor_{i}/ClassPredictor", CLASS_BIAS_INIT))
    box_encodings = layers.Concatenate(axis=1, name="box_encodings")(boxes)
    class_logits = layers.Concatenate(axis=1, name="class_logits")(logits)
    return keras.Model(images, [box_encodings, class_logits],
                       name=f"ssdlite_mobiledet_{spec.variant}")


def model_feature_maps(model: keras.Model) -> list[list[int]]:
    """[[h, w, c], ...] of the six feature maps, read off a built detector."""
    out = []
    for i in range(6):
        layer = model.get_layer(f"BoxPredictor_{i}/BoxEncodingPredictor/depthwise")
        _, h, w, c = layer.input.shape
        out.append([int(h), int(w), int(c)])
    return out


def anchors_for(spec: ModelSpec) -> np.ndarray:
    sizes = feature_map_sizes(spec.input_size)
    return anchor_gen.generate_anchors([(g, g) for g in sizes])
