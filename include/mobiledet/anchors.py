"""SSD anchor generator (TFOD's ssd_anchor_generator / multiple_grid_anchor_generator).

Pure numpy: anchors are a constant of the exported graph and of the post-process op, computed
once from the feature-map grid sizes. Output order is (layer, y, x, anchor) - the same order the
box predictor's [1, H, W, A*4] outputs are flattened in - and each anchor is normalised
(ycenter, xcenter, height, width), the layout TFLite_Detection_PostProcess expects.
"""
from __future__ import annotations

import math

import numpy as np

DEFAULT_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


def layer_box_specs(num_layers=6, min_scale=0.2, max_scale=0.95,
                    aspect_ratios=DEFAULT_ASPECT_RATIOS, interpolated_scale_aspect_ratio=1.0,
                    reduce_boxes_in_lowest_layer=True):
    """Per layer, the list of (scale, aspect_ratio) pairs."""
    scales = [min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)]
    scales.append(1.0)
    specs = []
    for layer, (scale, scale_next) in enumerate(zip(scales[:-1], scales[1:])):
        if layer == 0 and reduce_boxes_in_lowest_layer:
            specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
            continue
        boxes = [(scale, ar) for ar in aspect_ratios]
        if interpolated_scale_aspect_ratio > 0:
            boxes.append((math.sqrt(scale * scale_next), interpolated_scale_aspect_ratio))
        specs.append(boxes)
    return specs


def num_anchors_per_location(num_layers=6, **kw):
    return [len(s) for s in layer_box_specs(num_layers, **kw)]


def generate_anchors(grid_sizes, **kw) -> np.ndarray:
    """grid_sizes: [(height, width), ...] per feature map -> float32 [N, 4] (yc, xc, h, w)."""
    specs = layer_box_specs(len(grid_sizes), **kw)
    out = []
    for (gh, gw), boxes in zip(grid_sizes, specs):
        sizes = np.array([[s / math.sqrt(ar), s * math.sqrt(ar)] for s, ar in boxes], np.float64)
        ys = (np.arange(gh) + 0.5) / gh
        xs = (np.arange(gw) + 0.5) / gw
        yc, xc = np.meshgrid(ys, xs, indexing="ij")            # [gh, gw]
        a = len(boxes)
        centers = np.stack([yc, xc], -1)[:, :, None, :].repeat(a, axis=2)          # [gh, gw, a, 2]
        hw = np.broadcast_to(sizes[None, None], (gh, gw, a, 2))
        out.append(np.concatenate([centers, hw], -1).reshape(-1, 4))
    return np.concatenate(out, 0).astype(np.float32)


def anchors_to_corners(anchors: np.ndarray) -> np.ndarray:
    """(yc, xc, h, w) -> (ymin, xmin, ymax, xmax)."""
    yc, xc, h, w = np.split(np.asarray(anchors, np.float32), 4, axis=-1)
    return np.concatenate([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], -1)
