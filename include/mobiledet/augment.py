"""Training augmentation: horizontal flip and the SSD random crop (TFOD `ssd_random_crop`).

Both work on the uint8 image (H x W x 3) and its normalised (ymin, xmin, ymax, xmax) boxes,
before `include.data.preprocess.preprocess` resizes and normalises the result - the one
preprocessing of the product. Every random choice comes from the numpy Generator passed in, so a
seed fixes the outcome.

SSD random crop, as in the TFOD `ssd_random_crop` defaults:
* with probability `skip_probability` (0.15, TFOD's random_coef) the image is not cropped;
* otherwise one of the operations is picked uniformly: min_object_covered in
  (0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0), aspect ratio (w/h) in [0.5, 2], area fraction in [0.1, 1];
* up to `max_attempts` candidate windows are drawn (all at once, vectorised); the first one that
  covers at least `min_object_covered` of some object's area is taken (a window is always valid
  when the constraint is 0 or the image has no objects); when none qualifies the image is kept
  whole;
* boxes whose centre falls outside the window are dropped (the SSD paper's rule), the rest are
  moved into window coordinates and clipped to it; crowd boxes follow the same rule.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from include.errors import ConfigError

MIN_OBJECT_COVERED = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


@dataclass(frozen=True)
class AugmentConfig:
    flip_probability: float = 0.5
    crop: bool = True
    skip_probability: float = 0.15
    min_object_covered: tuple = MIN_OBJECT_COVERED
    aspect_ratio_range: tuple = (0.5, 2.0)
    area_range: tuple = (0.1, 1.0)
    max_attempts: int = 100

    def to_dict(self) -> dict:
        return {"flip_probability": self.flip_probability, "crop": self.crop,
                "skip_probability": self.skip_probability,
                "min_object_covered": list(self.min_object_covered),
                "aspect_ratio_range": list(self.aspect_ratio_range),
                "area_range": list(self.area_range)}


NO_AUGMENT = AugmentConfig(flip_probability=0.0, crop=False)
FLIP_ONLY = AugmentConfig(crop=False)
PRESETS = {"ssd": AugmentConfig(), "flip": FLIP_ONLY, "none": NO_AUGMENT}


def resolve(augment) -> AugmentConfig:
    """An AugmentConfig, or a preset name: "ssd" (flip + SSD random crop, the TFOD configs'
    choice), "flip" (horizontal flip only), "none"."""
    if isinstance(augment, AugmentConfig):
        return augment
    if augment is None:
        return PRESETS["ssd"]
    try:
        return PRESETS[augment]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown augmentation {augment!r}; allowed: {', '.join(PRESETS)}.",
                          where="--augment", fix="pass ssd, flip or none.") from None


def _take(targets: dict, keep: np.ndarray, boxes: np.ndarray) -> dict:
    out = {k: (np.asarray(v)[keep] if k != "boxes" else boxes) for k, v in targets.items()}
    return out


def flip_boxes(boxes: np.ndarray) -> np.ndarray:
    """Mirror normalised boxes left-right: xmin' = 1 - xmax, xmax' = 1 - xmin."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.stack([b[:, 0], 1.0 - b[:, 3], b[:, 2], 1.0 - b[:, 1]], axis=1)


def horizontal_flip(image: np.ndarray, targets: dict) -> tuple[np.ndarray, dict]:
    out = dict(targets)
    out["boxes"] = flip_boxes(targets["boxes"])
    return np.ascontiguousarray(image[:, ::-1]), out


def sample_crop_window(rng: np.random.Generator, height: int, width: int, boxes: np.ndarray,
                       min_object_covered: float, aspect_ratio_range=(0.5, 2.0),
                       area_range=(0.1, 1.0), max_attempts: int = 100):
    """A crop window (y0, x0, y1, x1) in whole pixels, or None when no candidate qualifies."""
    n = int(max_attempts)
    area = rng.uniform(area_range[0], area_range[1], n) * height * width
    ratio = np.exp(rng.uniform(np.log(aspect_ratio_range[0]), np.log(aspect_ratio_range[1]), n))
    ch = np.rint(np.sqrt(area / ratio)).astype(np.int64)
    cw = np.rint(np.sqrt(area * ratio)).astype(np.int64)
    fits = (ch >= 1) & (cw >= 1) & (ch <= height) & (cw <= width)
    if not fits.any():
        return None
    ch, cw = ch[fits], cw[fits]
    y0 = np.floor(rng.random(len(ch)) * (height - ch + 1)).astype(np.int64)
    x0 = np.floor(rng.random(len(cw)) * (width - cw + 1)).astype(np.int64)
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    if min_object_covered > 0 and len(b):
        wy0, wx0 = y0 / height, x0 / width
        wy1, wx1 = (y0 + ch) / height, (x0 + cw) / width
        iy = np.clip(np.minimum(wy1[:, None], b[None, :, 2]) - np.maximum(wy0[:, None], b[None, :, 0]), 0, None)
        ix = np.clip(np.minimum(wx1[:, None], b[None, :, 3]) - np.maximum(wx0[:, None], b[None, :, 1]), 0, None)
        box_area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-12)
        covered = (iy * ix / box_area[None, :]).max(axis=1)
        ok = np.flatnonzero(covered >= min_object_covered - 1e-6)
        if not len(ok):
            return None
        i = ok[0]
    else:
        i = 0
    return int(y0[i]), int(x0[i]), int(y0[i] + ch[i]), int(x0[i] + cw[i])


def crop(image: np.ndarray, targets: dict, window) -> tuple[np.ndarray, dict]:
    """Cut `window` (y0, x0, y1, x1 pixels) out of the image; keep boxes whose centre is inside."""
    h, w = image.shape[:2]
    y0, x0, y1, x1 = window
    b = np.asarray(targets["boxes"], np.float32).reshape(-1, 4)
    wy0, wx0, wy1, wx1 = y0 / h, x0 / w, y1 / h, x1 / w
    cy, cx = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    keep = (cy > wy0) & (cy < wy1) & (cx > wx0) & (cx < wx1)
    sh, sw = wy1 - wy0, wx1 - wx0
    nb = np.stack([(b[:, 0] - wy0) / sh, (b[:, 1] - wx0) / sw,
                   (b[:, 2] - wy0) / sh, (b[:, 3] - wx0) / sw], axis=1).clip(0.0, 1.0)
    keep &= (nb[:, 2] > nb[:, 0]) & (nb[:, 3] > nb[:, 1])
    return (np.ascontiguousarray(image[y0:y1, x0:x1]),
            _take(targets, keep, nb[keep].astype(np.float32)))


def ssd_random_crop(image: np.ndarray, targets: dict, rng: np.random.Generator,
                    config: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, dict]:
    if rng.random() < config.skip_probability:
        return image, targets
    covered = config.min_object_covered[int(rng.integers(len(config.min_object_covered)))]
    boxes = np.asarray(targets["boxes"], np.float32).reshape(-1, 4)
    crowd = targets.get("is_crowd")
    real = boxes if crowd is None else boxes[~np.asarray(crowd, bool)]
    window = sample_crop_window(rng, image.shape[0], image.shape[1], real, covered,
                                config.aspect_ratio_range, config.area_range, config.max_attempts)
    if window is None:
        return image, targets
    return crop(image, targets, window)


def augment(image: np.ndarray, targets: dict, rng: np.random.Generator,
            config: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, dict]:
    """Random horizontal flip, then SSD random crop, on a uint8 image and its targets.

    targets: {"boxes": [K, 4] normalised, "classes": [K], "is_crowd": [K]} (extra per-box
    arrays are carried along). Returns new arrays; the inputs are not modified.
    """
    if config.flip_probability > 0 and rng.random() < config.flip_probability:
        image, targets = horizontal_flip(image, targets)
    if config.crop:
        image, targets = ssd_random_crop(image, targets, rng, config)
    return image, targets
