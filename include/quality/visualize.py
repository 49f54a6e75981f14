"""A detector's detections drawn on the original image (PIL), for people to look at.

The model sees the image through `preprocess` (stretched to S x S); its boxes are normalised, so
they are scaled by the ORIGINAL image's width and height and drawn on the original pixels, which
keep their size. Boxes are clipped to the image.

Class names, first found wins:
1. `labels` (`--labels FILE`, which overrides the model's own names): a TFOD label_map.pbtxt
   (item id N names output class N-1) or a labels.txt (line N names output class N-1; see
   include/data/labels.py), a JSON file holding a label map -- a conversion report, an
   export.json, or a plain {"0": "person", ...} / {"0": {"name": ...}} map -- or a COCO dataset
   (folder or instances_*.json: its categories, matched to the model's classes as the
   evaluation matches them);
2. the label map in the model's conversion report (`<stem>.conversion.json`);
3. "class N".
The result's `labels_source` names where the names came from (the file, "conversion report" or
"class indices"), `labels_format` which kind of file it was.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from include.atomic import atomic_path
from include.errors import DataError

PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190),
           (0, 128, 128), (170, 110, 40), (128, 0, 0), (128, 128, 0), (0, 0, 128))


def label_file_names(labels, model_path=None, num_classes: int | None = None
                     ) -> tuple[dict[int, str], str, str]:
    """{class index: name}, the source (the file read) and its format, of a `--labels` file."""
    from include.data.labels import is_label_map_text, read_labels
    from include.quality.runner import names_from_json

    p = Path(labels)
    if not p.exists():
        raise DataError("label source not found.", where=str(p),
                        fix="pass a TFOD label_map.pbtxt, a labels.txt (one name per line), a "
                            "JSON label map, or a COCO dataset folder or instances_*.json file.")
    if p.is_file() and p.suffix.lower() != ".json":
        found = read_labels(p)
        head = p.read_bytes()[:1 << 16].decode("utf-8-sig", "replace")
        fmt = "label_map.pbtxt" if p.suffix.lower() == ".pbtxt" or is_label_map_text(head) \
            else "labels.txt"
        return {k: v["name"] for k, v in found.items()}, str(p), fmt
    found = names_from_json(p) if p.is_file() else {}
    if found:
        return {k: v["name"] for k, v in found.items()}, str(p), "json"
    from include.data.coco import open_dataset
    from include.quality.evaluate import class_mapping, default_split

    ds = open_dataset(p, split=default_split(p, any_split=True))
    mapping, _ = class_mapping(ds, model_path, num_classes)
    by_id = {c["id"]: str(c["name"]) for c in ds.categories}
    return {k: by_id[cid] for k, cid in mapping.items()}, str(ds.annotation_file), "coco"


def class_names(model_path, labels=None, num_classes: int | None = None
                ) -> tuple[dict[int, str], str]:
    """{class index: name} and where the names came from (see the module docstring)."""
    names, source, _ = _class_names(model_path, labels, num_classes)
    return names, source


def _class_names(model_path, labels, num_classes):
    from include.quality.runner import find_label_map, read_conversion_json

    if labels is not None:
        return label_file_names(labels, model_path, num_classes)
    label_map = find_label_map(read_conversion_json(model_path) or {})
    if label_map:
        return {k: v["name"] for k, v in label_map.items()}, "conversion report", "conversion report"
    return {}, "class indices", None


def draw_detections(image: np.ndarray, detections: list[dict]):
    """A PIL image: `image` (uint8 H x W x 3) with boxes (pixel xyxy) and 'name score' labels."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    draw = ImageDraw.Draw(img)
    w, h = img.size
    line = max(1, round(min(w, h) / 200))
    try:
        font = ImageFont.load_default(size=max(10, round(min(w, h) / 40)))
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    for d in sorted(detections, key=lambda d: d["score"]):  # best drawn last, on top
        colour = PALETTE[d["class"] % len(PALETTE)]
        x0, y0, x1, y1 = d["box"]
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=line)
        text = f"{d['name']} {d['score']:.2f}"
        tb = draw.textbbox((0, 0), text, font=font)
        tw, th = tb[2] - tb[0], tb[3] - tb[1]
        ty = y0 - th - 2 * line if y0 - th - 2 * line >= 0 else min(y0 + line, max(0, h - th - 2))
        tx = min(x0, max(0, w - tw - 2))
        draw.rectangle([tx, ty, tx + tw + 2 * line, ty + th + 2 * line], fill=colour)
        luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        draw.text((tx + line, ty + line - tb[1]), text, fill=(0, 0, 0) if luma > 140 else
                  (255, 255, 255), font=font)
    return img


def visualize(model, image, out, *, threshold: float = 0.3, labels=None,
              threads: int | None = None) -> dict:
    """Detect on `image` (a path) and write the picture to `out` (PNG; written atomically).

    Returns {out, width, height, threshold, labels_source, detections: [{class, name, score,
    box [x0, y0, x1, y1] in pixels}]}.
    """
    from include.data.preprocess import load_image, preprocess
    from include.errors import ConfigError
    from include.quality.runner import Detector, check_model_file, model_info

    model = check_model_file(model)
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"the score threshold must be in [0, 1], got {threshold!r}.",
                          where="--threshold", fix="use e.g. 0.3.")
    pixels = load_image(image)  # DataError naming the file when missing or broken
    det = Detector(model, threads=threads)
    found = det.detect(preprocess(pixels, det.input_size))
    names, names_source, names_format = _class_names(model, labels,
                                                     model_info(model)["num_classes"])
    h, w = pixels.shape[:2]
    drawn = []
    for box, cls, score in zip(found["boxes"], found["classes"], found["scores"]):
        if score < threshold or not np.isfinite(box).all():
            continue
        ymin, xmin, ymax, xmax = (float(v) for v in np.clip(box.astype(np.float64), 0.0, 1.0))
        drawn.append({"class": int(cls), "name": names.get(int(cls), f"class {int(cls)}"),
                      "score": round(float(score), 4),
                      "box": [round(xmin * w, 1), round(ymin * h, 1), round(xmax * w, 1),
                              round(ymax * h, 1)]})
    picture = draw_detections(pixels, drawn)
    out = Path(out)
    try:
        fmt = "PNG" if out.suffix.lower() in ("", ".png") else _image_format(out)
        with atomic_path(out) as tmp:
            picture.save(tmp, format=fmt)
    except (ValueError, KeyError) as exc:
        raise DataError(f"cannot write an image with suffix {out.suffix!r} ({exc}).",
                        where=str(out), fix="use a .png (or .jpg) output path.") from None
    return {"out": str(out), "image": str(image), "width": w, "height": h,
            "threshold": float(threshold), "labels_source": names_source,
            "labels_format": names_format, "detections": drawn}


def _image_format(path: Path) -> str:
    from PIL import Image

    ext = path.suffix.lower()
    Image.init()
    if ext not in Image.EXTENSION:
        raise ValueError(f"unknown image suffix {ext}")
    return Image.EXTENSION[ext]
