"""A deterministic synthetic COCO-format detection dataset of coloured shapes.

`synthesize(out_dir, images)` writes

    out_dir/annotations/instances_train.json    out_dir/train/000000.png ...
    out_dir/annotations/instances_val.json      out_dir/val/000003.png ...
    out_dir/synth.json                          (the settings and summary of this dataset)

What is in it, and why:

* five shape categories with non-contiguous ids (1 circle, 3 square, 4 triangle, 7 cross,
  10 ring), so the id -> class mapping is exercised like COCO's 1..90 with gaps;
* colour is drawn independently of the category (with enough contrast against the local
  background): the shape, not the colour, defines the class; rings and circles differ only by
  their hole, squares and crosses only by their outline;
* object sizes from ~6% to ~60% of the image side (log-uniform), 1-6 objects per image, mildly
  rotated and stretched, some overlapping, some cut by the image border;
* clutter that is not an object: lines (behind and in front of objects), small dots and blobs
  (all smaller than the smallest object), pixel noise; backgrounds are flat, gradients or
  low-frequency noise;
* a few crowd regions (`iscrowd: 1`, a cluster of small same-class shapes annotated as one box
  with an uncompressed-RLE mask, as real COCO does) so training and evaluation meet crowds;
* a few grayscale PNGs, a few JPEGs and a few non-square (1.5:1 and 1:1.5) images.

Each image is drawn from its own random stream seeded by (seed, image index): the same seed gives
byte-identical files. The whole dataset is written to a temporary sibling folder and moved into
place at the end, so a crash never leaves a half-written dataset under `out_dir`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from include.atomic import staged_dir
from include.errors import ConfigError

CATEGORIES = (
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "square", "supercategory": "shape"},
    {"id": 4, "name": "triangle", "supercategory": "shape"},
    {"id": 7, "name": "cross", "supercategory": "shape"},
    {"id": 10, "name": "ring", "supercategory": "shape"},
)
SPLITS = ("train", "val")
MARKER = "synth.json"
FORMAT_VERSION = 1

MIN_OBJECT = 0.06      # smallest object side, fraction of the shorter image side
MAX_OBJECT = 0.60      # largest
MAX_CLUTTER = 0.035    # distractor dots/blobs stay below this (well under MIN_OBJECT)
MAX_OVERLAP = 0.30     # intersection / smaller box area allowed between two objects
CROWD_PROBABILITY = 0.07
MIN_SIZE = 32


# ---------------------------------------------------------------------- the image kinds
def _image_kind(index: int) -> dict:
    """Deterministic, seed-independent pattern: even 20-image datasets get every kind."""
    return {
        "gray": index % 25 == 3,
        "jpeg": index % 16 == 5,
        "aspect": 1.5 if index % 30 == 8 else (1 / 1.5 if index % 30 == 23 else 1.0),
    }


def _luma(rgb) -> float:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return 0.299 * r + 0.587 * g + 0.114 * b


# ---------------------------------------------------------------------- backgrounds
def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    kind = rng.choice(["flat", "gradient", "noise", "noise"])
    if kind == "flat":
        colour = rng.integers(0, 256, 3)
        return Image.new("RGB", (w, h), tuple(int(c) for c in colour))
    if kind == "gradient":
        c0, c1 = rng.integers(0, 256, (2, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        a = c0 + t[..., None] * (c1 - c0)
        return Image.fromarray(a.round().astype(np.uint8), "RGB")
    k = int(rng.integers(2, 9))
    base = rng.integers(0, 256, 3).astype(np.float32)
    amp = rng.uniform(30, 110)
    small = np.clip(base + rng.uniform(-amp, amp, (k, k, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.BILINEAR)


def _random_colour(rng) -> tuple:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _clutter(rng, draw: ImageDraw.ImageDraw, w: int, h: int, m: int, lines: int, dots: int):
    for _ in range(lines):
        x0, x1 = rng.uniform(-0.1 * w, 1.1 * w, 2)
        y0, y1 = rng.uniform(-0.1 * h, 1.1 * h, 2)
        draw.line([(x0, y0), (x1, y1)], fill=_random_colour(rng), width=int(rng.integers(1, 4)))
    for _ in range(dots):
        r = rng.uniform(0.004, MAX_CLUTTER / 2) * m
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.5:
            draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.0), cx + r,
                          cy + r * rng.uniform(0.5, 1.0)], fill=_random_colour(rng))
        else:  # an irregular blob
            n = int(rng.integers(5, 9))
            ang = np.sort(rng.uniform(0, 2 * math.pi, n))
            rad = r * rng.uniform(0.5, 1.0, n)
            draw.polygon([(cx + q * math.cos(a), cy + q * math.sin(a)) for a, q in zip(ang, rad)],
                         fill=_random_colour(rng))


# ---------------------------------------------------------------------- shapes
def _transform(points, sx, sy, angle, cx, cy):
    """Unit shape (centred, side 1) -> image coordinates: stretch, rotate, move."""
    p = np.asarray(points, np.float64) * (sx, sy)
    c, s = math.cos(angle), math.sin(angle)
    x = p[:, 0] * c - p[:, 1] * s + cx
    y = p[:, 0] * s + p[:, 1] * c + cy
    return list(zip(x.tolist(), y.tolist()))


def _ellipse_points(n=24):
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([0.5 * np.cos(t), 0.5 * np.sin(t)], axis=1)


def _draw_shape(mask_draw: ImageDraw.ImageDraw, name: str, rng, cx, cy, side) -> list:
    """Draw one shape (value 255) on a mask; return its outline polygon (image coordinates)."""
    stretch = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    sx, sy = side * math.sqrt(stretch), side / math.sqrt(stretch)
    if name in ("circle", "ring"):
        box = [cx - sx / 2, cy - sy / 2, cx + sx / 2, cy + sy / 2]
        mask_draw.ellipse(box, fill=255)
        if name == "ring":
            k = rng.uniform(0.45, 0.65)
            mask_draw.ellipse([cx - k * sx / 2, cy - k * sy / 2, cx + k * sx / 2, cy + k * sy / 2],
                              fill=0)
        return _transform(_ellipse_points(), sx, sy, 0.0, cx, cy)
    if name == "square":
        unit = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
        angle = math.radians(rng.uniform(-25, 25))
    elif name == "triangle":
        unit = [(0.0, -0.5), (0.5, 0.5), (-0.5, 0.5)]
        angle = rng.uniform(0, 2 * math.pi)
    elif name == "cross":
        t = rng.uniform(0.14, 0.2)  # half the arm width
        unit = [(-t, -0.5), (t, -0.5), (t, -t), (0.5, -t), (0.5, t), (t, t), (t, 0.5), (-t, 0.5),
                (-t, t), (-0.5, t), (-0.5, -t), (-t, -t)]
        angle = math.radians(rng.uniform(-25, 25))
    else:  # pragma: no cover - CATEGORIES and this function go together
        raise ValueError(name)
    poly = _transform(unit, sx, sy, angle, cx, cy)
    mask_draw.polygon(poly, fill=255)
    return poly


def _overlap_ok(box, boxes) -> bool:
    x0, y0, x1, y1 = box
    a = max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6)
    for u0, v0, u1, v1 in boxes:
        iw, ih = min(x1, u1) - max(x0, u0), min(y1, v1) - max(y0, v0)
        if iw > 0 and ih > 0:
            b = (u1 - u0) * (v1 - v0)
            if iw * ih / min(a, b) > MAX_OVERLAP:
                return False
    return True


def _paint(img: Image.Image, mask: Image.Image, bbox, rng) -> None:
    """Fill the mask with a random colour that stands out from the background underneath."""
    region = np.asarray(img.crop(bbox), np.float32)
    sel = np.asarray(mask.crop(bbox)) > 0
    bg = region[sel].mean(axis=0) if sel.any() else region.reshape(-1, 3).mean(axis=0)
    colour = None
    for _ in range(12):
        c = rng.integers(0, 256, 3).astype(np.float32)
        if abs(_luma(c) - _luma(bg)) >= 55:
            colour = c
            break
    if colour is None:
        colour = np.zeros(3, np.float32) if _luma(bg) > 127 else np.full(3, 255, np.float32)
    img.paste(tuple(int(v) for v in colour), tuple(bbox), mask.crop(bbox))


def rle_encode(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE of a 0/1 mask: column-major runs starting with a run of zeros."""
    flat = np.asarray(mask, bool).flatten(order="F")
    if flat.size == 0:
        return {"counts": [], "size": list(mask.shape)}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"counts": [int(r) for r in runs], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _coco_box(bb) -> list:
    x0, y0, x1, y1 = bb
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def render_image(seed: int, index: int, size: int = 320):
    """Draw image `index` of the dataset with `seed`: (PIL image, objects, kind).

    Each object: category_id, bbox [x, y, w, h] (tight around the drawn pixels), area (pixels),
    iscrowd, segmentation (outline polygon, or uncompressed RLE for a crowd).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    kind = _image_kind(index)
    w = int(round(size * kind["aspect"])) if kind["aspect"] > 1 else size
    h = int(round(size / kind["aspect"])) if kind["aspect"] < 1 else size
    m = min(w, h)
    img = _background(rng, w, h)
    draw = ImageDraw.Draw(img)
    _clutter(rng, draw, w, h, m, lines=int(rng.integers(0, 6)), dots=int(rng.integers(0, 12)))

    objects: list[dict] = []
    placed: list[tuple] = []
    names = [c["name"] for c in CATEGORIES]

    if rng.random() < CROWD_PROBABILITY:
        cat = int(rng.integers(len(CATEGORIES)))
        region = rng.uniform(0.25, 0.4) * m
        cx, cy = rng.uniform(region / 2, w - region / 2), rng.uniform(region / 2, h - region / 2)
        union = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(4, 8))):
            side = rng.uniform(MIN_OBJECT, 0.09) * m
            px = cx + rng.uniform(-(region - side) / 2, (region - side) / 2)
            py = cy + rng.uniform(-(region - side) / 2, (region - side) / 2)
            mask = Image.new("L", (w, h), 0)
            _draw_shape(ImageDraw.Draw(mask), names[cat], rng, px, py, side)
            bb = mask.getbbox()
            if bb is None:
                continue
            _paint(img, mask, bb, rng)
            union |= np.asarray(mask) > 0
        ys, xs = np.nonzero(union)
        if len(xs):
            bb = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            placed.append(bb)
            objects.append({"category_id": CATEGORIES[cat]["id"], "bbox": _coco_box(bb),
                            "area": float(union.sum()), "iscrowd": 1,
                            "segmentation": rle_encode(union)})

    for _ in range(int(rng.integers(1, 7))):
        cat = int(rng.integers(len(CATEGORIES)))
        side = math.exp(rng.uniform(math.log(MIN_OBJECT), math.log(MAX_OBJECT))) * m
        cut = rng.random() < 0.12  # may be cut by the image border
        lo = 0.2 * side if cut else 0.5 * side
        for _try in range(15):
            cx, cy = rng.uniform(lo, max(w - lo, lo + 1)), rng.uniform(lo, max(h - lo, lo + 1))
            guess = (cx - side * 0.62, cy - side * 0.62, cx + side * 0.62, cy + side * 0.62)
            if _overlap_ok(guess, placed):
                break
        else:
            continue  # no room left for this object
        mask = Image.new("L", (w, h), 0)
        outline = _draw_shape(ImageDraw.Draw(mask), names[cat], rng, cx, cy, side)
        bb = mask.getbbox()
        if bb is None or not _overlap_ok(bb, placed):
            continue
        _paint(img, mask, bb, rng)
        placed.append(bb)
        clipped = [(min(max(x, 0.0), w), min(max(y, 0.0), h)) for x, y in outline]
        objects.append({
            "category_id": CATEGORIES[cat]["id"], "bbox": _coco_box(bb),
            "area": float(np.count_nonzero(np.asarray(mask.crop(bb)))), "iscrowd": 0,
            "segmentation": [[round(v, 2) for xy in clipped for v in xy]],
        })

    # clutter in front of the objects, then sensor-like noise over everything
    _clutter(rng, draw, w, h, m, lines=int(rng.integers(0, 3)), dots=int(rng.integers(0, 4)))
    sigma = rng.uniform(2, 8) if rng.random() < 0.5 else 0.0
    if sigma > 0:
        a = np.asarray(img, np.int16) + rng.normal(0, sigma, (h, w, 3)).round().astype(np.int16)
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    if kind["gray"]:
        img = img.convert("L")
    return img, objects, kind


# ---------------------------------------------------------------------- the dataset
def _check_settings(images, size, seed, val_fraction) -> None:
    if isinstance(images, bool) or not isinstance(images, (int, np.integer)) or images < 1:
        raise ConfigError(f"the number of images must be a positive whole number, got {images!r}.",
                          where="--images", fix="pass e.g. --images 200.")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ConfigError(f"the image size must be a whole number >= {MIN_SIZE}, got {size!r}.",
                          where="--size", fix="pass e.g. --size 320 (the model input size).")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"the seed must be a whole number >= 0, got {seed!r}.", where="--seed",
                          fix="pass e.g. --seed 0.")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0 <= val_fraction < 1:
        raise ConfigError(f"the validation fraction must be in [0, 1), got {val_fraction!r}.",
                          where="--val-fraction", fix="pass e.g. --val-fraction 0.2.")


def split_indices(images: int, seed: int, val_fraction: float) -> dict[str, list[int]]:
    """Which image indices go to train and val (deterministic in seed)."""
    n_val = int(round(images * val_fraction))
    if val_fraction > 0 and images >= 2:
        n_val = min(max(n_val, 1), images - 1)
    perm = np.random.default_rng(seed).permutation(images)
    val = sorted(int(i) for i in perm[:n_val])
    val_set = set(val)
    return {"train": [i for i in range(images) if i not in val_set], "val": val}


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n", encoding="utf-8")


def _replaceable(out: Path) -> bool:
    return not out.exists() or (out.is_dir() and (not any(out.iterdir())
                                                  or (out / MARKER).is_file()))


def synthesize(out_dir: str | os.PathLike, images: int, size: int = 320, seed: int = 0,
               val_fraction: float = 0.2, show_progress: bool = False) -> dict[str, Any]:
    """Write the synthetic dataset to `out_dir`; return a summary dict.

    `out_dir` must not exist, be empty, or hold an earlier synthetic dataset (which is replaced).
    """
    _check_settings(images, size, seed, val_fraction)
    images, size, seed = int(images), int(size), int(seed)
    out = Path(out_dir)
    if not _replaceable(out):
        raise ConfigError("the output folder exists and holds files that are not a synthetic "
                          f"dataset (no {MARKER}); refusing to overwrite them.", where=str(out),
                          fix="pass a new or empty folder as --out.")
    with staged_dir(out) as tmp:
        summary = _write_dataset(tmp, images, size, seed, float(val_fraction), show_progress)
    summary["out"] = str(out)
    summary["annotation_files"] = {s: str(out / "annotations" / f"instances_{s}.json")
                                   for s in SPLITS}
    return summary


def _write_dataset(root: Path, images: int, size: int, seed: int, val_fraction: float,
                   show_progress: bool) -> dict:
    from include.progress import progress

    (root / "annotations").mkdir(parents=True)
    splits = split_indices(images, seed, val_fraction)
    split_of = {i: s for s, idx in splits.items() for i in idx}
    records = {s: {"images": [], "annotations": []} for s in SPLITS}
    for s in SPLITS:
        (root / s).mkdir()
    ann_id = 0
    for index in progress(range(images), total=images, desc="synth", unit="img",
                          disable=None if show_progress else True):
        img, objects, kind = render_image(seed, index, size)
        split = split_of[index]
        ext = "jpg" if kind["jpeg"] else "png"
        name = f"{index:06d}.{ext}"
        if kind["jpeg"]:
            img.save(root / split / name, format="JPEG", quality=90)
        else:
            img.save(root / split / name, format="PNG", compress_level=3)
        image_id = index + 1
        records[split]["images"].append({"id": image_id, "file_name": name,
                                         "width": img.width, "height": img.height, "license": 1})
        for obj in objects:
            ann_id += 1
            records[split]["annotations"].append({"id": ann_id, "image_id": image_id, **obj})

    summary = {"images": {}, "annotations": {}, "crowd_annotations": {},
               "categories": [{"id": c["id"], "name": c["name"]} for c in CATEGORIES],
               "size": size, "seed": seed, "val_fraction": val_fraction}
    for s in SPLITS:
        doc = {
            "info": {"description": f"mobiledet synthetic shapes, split {s}", "version":
                     str(FORMAT_VERSION), "contributor": "mobiledet data synth",
                     "settings": {"images": images, "size": size, "seed": seed,
                                  "val_fraction": val_fraction}},
            "licenses": [{"id": 1, "name": "generated", "url": ""}],
            "images": records[s]["images"],
            "annotations": records[s]["annotations"],
            "categories": [dict(c) for c in CATEGORIES],
        }
        _write_json(root / "annotations" / f"instances_{s}.json", doc)
        summary["images"][s] = len(records[s]["images"])
        summary["annotations"][s] = len(records[s]["annotations"])
        summary["crowd_annotations"][s] = sum(a["iscrowd"] for a in records[s]["annotations"])
    _write_json(root / MARKER, {"format_version": FORMAT_VERSION, **summary})
    return summary
