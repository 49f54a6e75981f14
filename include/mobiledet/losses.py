"""SSD losses, TFOD conventions (the `ssd_mobiledet_*` pipeline configs).

* classification: weighted sigmoid focal loss (alpha 0.75, gamma 2) on the logits of all C + 1
  columns, background included; anchors with class weight 0 (ignored) contribute nothing;
* localization: weighted smooth L1 (Huber, delta 1) on the 4 box codes, summed over the codes
  and divided by the code size 4 (`normalize_loc_loss_by_codesize: true`), positives only;
* both are summed over anchors and images and divided by the number of positive anchors in the
  batch (at least 1): `normalize_loss_by_num_matches`.

Focal loss per entry, with p = sigmoid(logit) and label y in {0, 1}:
    p_t = y p + (1 - y)(1 - p);  a_t = y alpha + (1 - y)(1 - alpha)
    FL = a_t (1 - p_t)^gamma * BCE(logit, y)
"""
from __future__ import annotations

import tensorflow as tf

FOCAL_ALPHA = 0.75
FOCAL_GAMMA = 2.0
HUBER_DELTA = 1.0


def sigmoid_focal_loss(logits, labels, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA):
    """Per-entry focal loss, same shape as logits (no weighting, no reduction)."""
    logits = tf.convert_to_tensor(logits, tf.float32)
    labels = tf.cast(labels, tf.float32)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    p = tf.sigmoid(logits)
    p_t = labels * p + (1.0 - labels) * (1.0 - p)
    modulator = tf.pow(1.0 - p_t, gamma) if gamma else 1.0
    alpha_t = labels * alpha + (1.0 - labels) * (1.0 - alpha)
    return alpha_t * modulator * ce


def smooth_l1(predictions, targets, delta: float = HUBER_DELTA):
    """Huber loss summed over the last axis (the 4 codes): [..., 4] -> [...]."""
    diff = tf.abs(tf.convert_to_tensor(predictions, tf.float32) - tf.cast(targets, tf.float32))
    quad = tf.minimum(diff, delta)
    per = 0.5 * quad * quad + delta * (diff - quad)
    return tf.reduce_sum(per, axis=-1)


def ssd_loss(box_encodings, class_logits, box_targets, class_targets, box_weights, class_weights,
             alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA, delta: float = HUBER_DELTA,
             normalize_loc_by_codesize: bool = True):
    """Batch SSD loss -> dict(total, localization, classification, num_matches) of scalars.

    box_encodings/box_targets [B, N, 4]; class_logits/class_targets [B, N, C+1];
    box_weights/class_weights [B, N].
    """
    box_weights = tf.cast(box_weights, tf.float32)
    class_weights = tf.cast(class_weights, tf.float32)
    num_matches = tf.reduce_sum(box_weights)
    normaliser = tf.maximum(num_matches, 1.0)
    loc = tf.reduce_sum(smooth_l1(box_encodings, box_targets, delta) * box_weights) / normaliser
    if normalize_loc_by_codesize:
        loc = loc / float(box_encodings.shape[-1])
    focal = sigmoid_focal_loss(class_logits, class_targets, alpha, gamma)
    cls = tf.reduce_sum(focal * class_weights[..., None]) / normaliser
    return {"total": loc + cls, "localization": loc, "classification": cls,
            "num_matches": num_matches}
