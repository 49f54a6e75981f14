"""SSD target assignment: which anchor learns which ground-truth box.

The TFOD SSD recipe, in vectorised numpy (it runs per image inside the input pipeline):

* similarity = IoU between the anchors (as corners) and the ground-truth boxes;
* argmax matcher, matched threshold 0.5 and unmatched threshold 0.5: an anchor whose best IoU is
  >= 0.5 is a positive for that box, below 0.5 it is a negative (background); with equal
  thresholds there is no "between" band;
* forced match: every ground-truth box also claims its own best anchor, whatever the IoU, so no
  object goes unlearnt. When two boxes pick the same best anchor the one listed first keeps it
  (as TFOD's one-hot/argmax formulation does);
* positives get the Faster R-CNN codes of their box (`box_coder.encode`) and a one-hot class row
  (column 0 = background, class k -> column k + 1);
* negatives get an all-zero class row: the `ssd_mobiledet_*` configs set
  `encode_background_as_zeros: true`, so the sigmoid focal loss pushes every column of a
  background anchor (the background column included) towards 0. The scores that matter are
  columns 1..C (the export's post-process op skips column 0). `encode_background_as_zeros=False`
  gives the other TFOD convention, a one-hot background row [1, 0, ..., 0]; with the focal loss
  on all C + 1 columns that makes every negative anchor a hard positive of the background column
  at the start (-4.6 bias init), a loss some hundred times larger, which slows training down a
  lot - hence the configs' choice.

Crowd regions (`is_crowd`): a crowd box (a cluster of objects annotated as one region) is not a
ground-truth box to match - it takes no part in the argmax or the forced match. An anchor that is
not a positive and lies mostly inside a crowd region (intersection / anchor area >= 0.5) is
ignored: class weight 0, so it is neither pushed towards background (the region does hold
objects) nor towards the class (it is not one object). This mirrors pycocotools, which neither
rewards nor punishes detections inside crowd regions. IoU >= 0.5 with a crowd box implies
intersection / anchor area >= 0.5, so the rule also covers anchors that would have matched it.
"""
from __future__ import annotations

import numpy as np

from include.mobiledet import box_coder
from include.mobiledet.anchors import anchors_to_corners

MATCHED_THRESHOLD = 0.5
UNMATCHED_THRESHOLD = 0.5
CROWD_IGNORE_THRESHOLD = 0.5


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def intersection(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas of corner boxes [N, 4] x [K, 4] -> [N, K]."""
    ymin = np.maximum(boxes1[:, None, 0], boxes2[None, :, 0])
    xmin = np.maximum(boxes1[:, None, 1], boxes2[None, :, 1])
    ymax = np.minimum(boxes1[:, None, 2], boxes2[None, :, 2])
    xmax = np.minimum(boxes1[:, None, 3], boxes2[None, :, 3])
    return np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)


def iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU of corner boxes (ymin, xmin, ymax, xmax): [N, 4] x [K, 4] -> [N, K]."""
    boxes1 = np.asarray(boxes1, np.float32).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, np.float32).reshape(-1, 4)
    inter = intersection(boxes1, boxes2)
    union = _area(boxes1)[:, None] + _area(boxes2)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def ioa(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Intersection over the area of boxes1: [N, 4] x [K, 4] -> [N, K]."""
    boxes1 = np.asarray(boxes1, np.float32).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, np.float32).reshape(-1, 4)
    inter = intersection(boxes1, boxes2)
    area = _area(boxes1)[:, None]
    return np.where(area > 0, inter / np.maximum(area, 1e-12), 0.0).astype(np.float32)


def argmax_match(similarity: np.ndarray, matched_threshold: float = MATCHED_THRESHOLD,
                 unmatched_threshold: float = UNMATCHED_THRESHOLD,
                 force_match: bool = True) -> np.ndarray:
    """similarity [N anchors, K boxes] -> match [N]: box index, -1 unmatched, -2 ignored."""
    n, k = similarity.shape
    if k == 0:
        return np.full(n, -1, np.int64)
    best_box = similarity.argmax(axis=1)
    best_val = similarity[np.arange(n), best_box]
    match = best_box.astype(np.int64)
    match[best_val < matched_threshold] = -2
    match[best_val < unmatched_threshold] = -1
    if force_match:
        best_anchor = similarity.argmax(axis=0)                  # [K]: each box's best anchor
        anchors, first_box = np.unique(best_anchor, return_index=True)
        match[anchors] = first_box                               # lowest box index wins a tie
    return match


class TargetAssigner:
    """Assigns SSD training targets for one image against a fixed set of anchors.

    anchors: float32 [N, 4] (ycenter, xcenter, h, w) normalised, as `ssd.anchors_for` returns.
    """

    def __init__(self, anchors: np.ndarray, num_classes: int,
                 matched_threshold: float = MATCHED_THRESHOLD,
                 unmatched_threshold: float = UNMATCHED_THRESHOLD,
                 crowd_ignore_threshold: float = CROWD_IGNORE_THRESHOLD,
                 encode_background_as_zeros: bool = True):
        if unmatched_threshold > matched_threshold:
            raise ValueError("unmatched_threshold must not exceed matched_threshold")
        self.anchors = np.asarray(anchors, np.float32)
        self.corners = anchors_to_corners(self.anchors)
        self.num_classes = int(num_classes)
        self.matched_threshold = matched_threshold
        self.unmatched_threshold = unmatched_threshold
        self.crowd_ignore_threshold = crowd_ignore_threshold
        self.encode_background_as_zeros = bool(encode_background_as_zeros)

    @property
    def num_anchors(self) -> int:
        return len(self.anchors)

    def __call__(self, boxes, classes, is_crowd=None) -> dict[str, np.ndarray]:
        """boxes float [K, 4] normalised (ymin, xmin, ymax, xmax); classes int [K] 0-based.

        Returns float32 arrays: box_targets [N, 4] (codes; zero where not positive),
        class_targets [N, C+1] (one-hot for positives; all zeros for negatives and ignored
        anchors, or the background column 0 set with encode_background_as_zeros=False),
        box_weights [N] (1 for positives), class_weights [N] (1 for positives and negatives,
        0 for ignored anchors), and `match` int64 [N] (box index, -1 negative, -2 ignored; box
        indices refer to the input order).
        """
        n, c1 = self.num_anchors, self.num_classes + 1
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        classes = np.asarray(classes, np.int64).reshape(-1)
        crowd = (np.zeros(len(boxes), bool) if is_crowd is None
                 else np.asarray(is_crowd, bool).reshape(-1))
        if not (len(boxes) == len(classes) == len(crowd)):
            raise ValueError("boxes, classes and is_crowd must have the same length")
        if len(classes) and (classes.min() < 0 or classes.max() >= self.num_classes):
            raise ValueError(f"class index out of range 0..{self.num_classes - 1}: {classes}")

        real = np.flatnonzero(~crowd)
        sim = iou(self.corners, boxes[real])
        match_real = argmax_match(sim, self.matched_threshold, self.unmatched_threshold)
        match = match_real.copy()
        pos = match_real >= 0
        match[pos] = real[match_real[pos]]              # back to indices of the input boxes
        positive = match >= 0

        class_weights = (match != -2).astype(np.float32)
        if crowd.any():
            inside = ioa(self.corners, boxes[crowd]).max(axis=1) >= self.crowd_ignore_threshold
            ignore = inside & ~positive
            match[ignore] = -2
            class_weights[ignore] = 0.0

        box_targets = np.zeros((n, 4), np.float32)
        if positive.any():
            box_targets[positive] = box_coder.encode(boxes[match[positive]],
                                                     self.anchors[positive]).astype(np.float32)
        class_targets = np.zeros((n, c1), np.float32)
        if positive.any():
            class_targets[np.flatnonzero(positive), classes[match[positive]] + 1] = 1.0
        if not self.encode_background_as_zeros:
            class_targets[~positive, 0] = 1.0
        return {"box_targets": box_targets, "class_targets": class_targets,
                "box_weights": positive.astype(np.float32), "class_weights": class_weights,
                "match": match}
