"""Faster R-CNN box coder with scales (y, x, h, w) = (10, 10, 5, 5), as in the TFOD SSD configs.

Boxes are (ymin, xmin, ymax, xmax); anchors are (ycenter, xcenter, height, width); codes are
(ty, tx, th, tw). Works on numpy arrays and TensorFlow tensors alike (the math uses only
operators both support, plus the `xp` module passed for log/exp).
"""
from __future__ import annotations

import numpy as np

SCALES = (10.0, 10.0, 5.0, 5.0)
EPSILON = 1e-8


def _xp(x):
    if isinstance(x, np.ndarray):
        return np
    import tensorflow as tf
    return tf.math


def _split4(x):
    return x[..., 0], x[..., 1], x[..., 2], x[..., 3]


def _stack(parts, xp):
    if xp is np:
        return np.stack(parts, -1)
    import tensorflow as tf
    return tf.stack(parts, -1)


def encode(boxes, anchors, scales=SCALES):
    xp = _xp(boxes)
    ymin, xmin, ymax, xmax = _split4(boxes)
    ya, xa, ha, wa = _split4(anchors)
    ha = ha + EPSILON
    wa = wa + EPSILON
    h = ymax - ymin + EPSILON
    w = xmax - xmin + EPSILON
    yc = ymin + 0.5 * (ymax - ymin)
    xc = xmin + 0.5 * (xmax - xmin)
    sy, sx, sh, sw = scales
    return _stack([(yc - ya) / ha * sy, (xc - xa) / wa * sx,
                   xp.log(h / ha) * sh, xp.log(w / wa) * sw], xp)


def decode(codes, anchors, scales=SCALES):
    xp = _xp(codes)
    ty, tx, th, tw = _split4(codes)
    ya, xa, ha, wa = _split4(anchors)
    sy, sx, sh, sw = scales
    h = xp.exp(th / sh) * ha
    w = xp.exp(tw / sw) * wa
    yc = ty / sy * ha + ya
    xc = tx / sx * wa + xa
    return _stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], xp)
