"""Reading COCO-format detection datasets: an `instances_*.json` file plus an image folder.

Accepted layouts (`open_dataset`):

* an annotation file, e.g. `coco/annotations/instances_val2017.json`; its images are looked up in
  the folder named after its split (`coco/val2017/`), else `coco/images/val2017/`, else the folder
  the json file is in;
* a dataset folder holding `annotations/instances_<split>.json` (or the `annotations` folder
  itself); with one annotation file it is used, with several the split must be named. The
  synthetic data of `mobiledet data synth` has the splits `train` and `val`.

Images elsewhere (public subsets ship `instances_*.json` beside a folder of another name):
`open_dataset(json, images=DIR)`, or on the command line `--data FILE.json --images DIR`.
`dataset_arguments(data, images)` checks such a pair up front (every listed image must be in
DIR; the error counts the missing ones, names one, and names a folder that holds it when one is
near) and, while it is active, makes every `open_dataset` of that annotation file in this
process use DIR: the verbs whose library code opens the dataset itself (train, the recipe
search, quant-debug, validate) then read the images from DIR without each growing a parameter.

Model classes are 0-based and contiguous, in order of category id: COCO's 80 categories with ids
1..90 (with gaps) become classes 0..79. `class_to_category_id` maps detections back to the ids
pycocotools expects.

Boxes (`targets`): COCO's `[x, y, w, h]` in pixels of the original image become normalised
`(ymin, xmin, ymax, xmax)` clipped to [0, 1]; degenerate boxes are dropped. Crowd regions
(`iscrowd: 1`) are kept with `is_crowd=True`: training neither matches them as positives nor
counts them as background, and evaluation hands them to pycocotools, which ignores detections
inside them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from include.errors import DataError

REQUIRED_KEYS = ("images", "annotations", "categories")
_INSTANCES_RE = re.compile(r"^instances_(.+)\.json$")
_MAX_LISTED = 5


def _listing(items, limit=_MAX_LISTED) -> str:
    items = [str(i) for i in items]
    text = ", ".join(items[:limit])
    if len(items) > limit:
        text += f" (and {len(items) - limit} more)"
    return text


def _split_of(json_path: Path) -> str:
    m = _INSTANCES_RE.match(json_path.name)
    return m.group(1) if m else json_path.stem


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class CocoDataset:
    """One split of a COCO-format dataset, validated and indexed.

    `CocoDataset(annotation_file, image_dir)` reads and validates the annotation file (the images
    are only checked when loaded, or all at once by `check_files`); `open_dataset` finds both from
    a dataset folder or an annotation file.

    Public fields: annotation_file, image_dir, split, images (image records in file order),
    categories (sorted by id), annotations (raw annotation dicts in file order).
    """

    def __init__(self, annotation_file: str | os.PathLike, image_dir: str | os.PathLike,
                 split: str | None = None):
        ann_path = Path(annotation_file)
        data = _read_annotation_json(ann_path)
        images, categories, annotations, boxes = _validate(data, ann_path)
        self.annotation_file = ann_path
        self.image_dir = Path(image_dir)
        self.split = split or _split_of(ann_path)
        self.images: list[dict] = images
        self.categories: list[dict] = sorted(categories, key=lambda c: c["id"])
        self._annotations: list[dict] = annotations
        self._images_by_id = {im["id"]: im for im in images}
        self._class_of_cid = {c["id"]: i for i, c in enumerate(self.categories)}
        by_image: dict = {im["id"]: [] for im in images}
        for k, ann in enumerate(annotations):
            by_image[ann["image_id"]].append(k)
        self._anns_by_image = by_image                 # image id -> annotation indices
        class_of = self._class_of_cid
        self._ann_boxes = boxes                        # float64 [N, 4] xywh in pixels
        self._ann_classes = np.fromiter((class_of[a["category_id"]] for a in annotations),
                                        dtype=np.int32, count=len(annotations))
        self._ann_crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in annotations),
                                      dtype=bool, count=len(annotations))
        self._fingerprint: str | None = None

    @classmethod
    def load(cls, annotation_file: str | os.PathLike, image_dir: str | os.PathLike,
             split: str | None = None) -> "CocoDataset":
        return cls(annotation_file, image_dir, split)

    def __repr__(self) -> str:
        return (f"CocoDataset({str(self.annotation_file)!r}, image_dir={str(self.image_dir)!r}, "
                f"split={self.split!r}, images={len(self.images)}, "
                f"annotations={len(self._annotations)}, classes={self.num_classes})")

    # ------------------------------------------------------------------ classes
    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def class_names(self) -> list[str]:
        """Category names, index = model class."""
        return [str(c["name"]) for c in self.categories]

    @property
    def label_map(self) -> dict[int, str]:
        """{model class index: category name}."""
        return dict(enumerate(self.class_names))

    @property
    def category_ids(self) -> list[int]:
        """Category ids, index = model class."""
        return [c["id"] for c in self.categories]

    def category_id_to_class(self, category_id: int) -> int:
        """COCO category id -> 0-based contiguous model class."""
        try:
            return self._class_of_cid[category_id]
        except (KeyError, TypeError):
            raise DataError(f"category id {category_id!r} is not among the categories "
                            f"(ids: {_listing(self.category_ids, 10)}).",
                            where=str(self.annotation_file),
                            fix="use a category id listed in the file's `categories`.") from None

    def class_to_category_id(self, class_index: int) -> int:
        """0-based model class -> COCO category id (what pycocotools results need)."""
        if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)) \
                or not 0 <= int(class_index) < self.num_classes:
            raise DataError(f"class index {class_index!r} is out of range; this dataset has "
                            f"{self.num_classes} classes (0..{self.num_classes - 1}).",
                            where=str(self.annotation_file),
                            fix="check that the model was trained with this dataset's classes.")
        return self.categories[int(class_index)]["id"]

    # ------------------------------------------------------------------ images
    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_ids(self) -> list[int]:
        """Image ids in file order."""
        return [im["id"] for im in self.images]

    @property
    def annotations(self) -> list[dict]:
        return self._annotations

    def image_record(self, image_id: int) -> dict:
        try:
            return self._images_by_id[image_id]
        except (KeyError, TypeError):
            raise DataError(f"no image with id {image_id!r}.", where=str(self.annotation_file),
                            fix="use an id from the file's `images` (see `image_ids`).") from None

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self.image_record(image_id)["file_name"]

    def load_image(self, image_id: int) -> np.ndarray:
        """The image as uint8 H x W x 3 RGB, checked against its record's width and height."""
        from include.data.preprocess import load_image

        rec = self.image_record(image_id)
        path = self.image_path(image_id)
        if not path.is_file():
            raise DataError(f"image file of image id {image_id} not found (file_name "
                            f"{rec['file_name']!r}, annotation file {self.annotation_file}).",
                            where=str(path),
                            fix="put the image in the image folder, or point the dataset at the "
                                "folder that holds the images.")
        img = load_image(path)
        h, w = img.shape[:2]
        if (h, w) != (rec["height"], rec["width"]):
            raise DataError(f"image is {w}x{h} pixels but its record (id {image_id}) in "
                            f"{self.annotation_file} says {rec['width']}x{rec['height']}; the "
                            "boxes refer to the recorded size.", where=str(path),
                            fix="use the original, unresized images, or fix the record's width "
                                "and height (and its boxes).")
        return img

    def check_files(self, decode: bool = False) -> int:
        """Check up front that every image file exists (and decodes, if `decode`).

        Returns the number of images checked; raises DataError listing the missing files.
        """
        self.check_images(self.image_ids)
        if decode:
            for im in self.images:
                self.load_image(im["id"])
        return len(self.images)

    def check_images(self, image_ids, images_flag: str = "--images",
                     given: bool | None = None) -> None:
        """DataError when any of these images' files is not in the image folder: how many, which
        (the first few), and the fix, naming a nearby folder that holds them when there is one."""
        image_ids = list(image_ids)
        missing = [i for i in image_ids if not self.image_path(i).is_file()]
        if missing:
            raise missing_images_error(self, missing, len(image_ids), images_flag, given)

    # ------------------------------------------------------------------ annotations
    def annotations_for(self, image_id: int) -> list[dict]:
        """The raw COCO annotation dicts of one image (file order)."""
        self.image_record(image_id)
        return [self._annotations[k] for k in self._anns_by_image[image_id]]

    def targets(self, image_id: int) -> dict[str, np.ndarray]:
        """Training/evaluation targets of one image.

        boxes: float32 [K, 4] normalised (ymin, xmin, ymax, xmax) in [0, 1], by the ORIGINAL image
        size; classes: int32 [K], 0-based; is_crowd: bool [K]. Degenerate boxes are dropped.
        """
        rec = self.image_record(image_id)
        idx = np.asarray(self._anns_by_image[image_id], dtype=np.int64)
        w, h = float(rec["width"]), float(rec["height"])
        xywh = self._ann_boxes[idx].reshape(-1, 4)
        x0, y0 = xywh[:, 0], xywh[:, 1]
        x1, y1 = x0 + xywh[:, 2], y0 + xywh[:, 3]
        boxes = np.stack([y0 / h, x0 / w, y1 / h, x1 / w], axis=1).clip(0.0, 1.0)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return {"boxes": boxes[keep].astype(np.float32), "classes": self._ann_classes[idx][keep],
                "is_crowd": self._ann_crowd[idx][keep]}

    # ------------------------------------------------------------------ bookkeeping
    def fingerprint(self) -> str:
        """sha256 of the annotation file plus the sorted image file names and sizes on disk.

        Cheap (no image is read), it records which data trained a checkpoint. A missing image
        counts with size -1, so the fingerprint changes when files go missing.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            with open(self.annotation_file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            for name in sorted(str(im["file_name"]) for im in self.images):
                try:
                    size = (self.image_dir / name).stat().st_size
                except OSError:
                    size = -1
                h.update(f"\n{name}\t{size}".encode("utf-8"))
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def sample_image_ids(self, n: int, seed: int = 0) -> list[int]:
        """A deterministic sample of `n` image ids (all of them if there are fewer), in file order."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise DataError(f"the sample size must be a positive whole number, got {n!r}.",
                            where="sample size", fix="ask for at least one image.")
        ids = self.image_ids
        if n >= len(ids):
            return ids
        picked = np.random.default_rng(seed).choice(len(ids), size=int(n), replace=False)
        return [ids[i] for i in sorted(picked.tolist())]

    def degenerate_boxes(self) -> list[int]:
        """Ids of the annotations whose box has a zero or negative width or height: training
        and evaluation drop them (`targets`), so a dataset check must say so."""
        boxes = self._ann_boxes.reshape(-1, 4)
        bad = np.nonzero((boxes[:, 2] <= 0) | (boxes[:, 3] <= 0))[0]
        return [int(self._annotations[i]["id"]) for i in bad]

    def summary(self) -> dict[str, Any]:
        crowd = sum(1 for a in self._annotations if a.get("iscrowd", 0))
        degenerate = self.degenerate_boxes()
        return {"annotation_file": str(self.annotation_file), "image_dir": str(self.image_dir),
                "split": self.split, "images": len(self.images),
                "annotations": len(self._annotations), "crowd_annotations": crowd,
                "degenerate_boxes": len(degenerate),
                "degenerate_annotation_ids": degenerate[:20],
                "num_classes": self.num_classes, "class_names": self.class_names}


# ---------------------------------------------------------------------- reading and validation
def _read_annotation_json(path: Path) -> dict:
    if not path.exists():
        raise DataError("annotation file not found.", where=str(path),
                        fix="check the path; a COCO dataset has annotations/instances_<split>.json.")
    if not path.is_file():
        raise DataError("is not a file; expected a COCO annotation .json file.", where=str(path),
                        fix="pass the instances_<split>.json file or the dataset folder.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"annotation file is not UTF-8 text ({exc}).", where=str(path),
                        fix="pass a COCO annotation .json file.") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"annotation file is not valid JSON: {exc.msg} at line {exc.lineno}, "
                        f"column {exc.colno}.", where=str(path),
                        fix="pass a COCO annotation .json file (instances_<split>.json); "
                            "if it was cut short, write it again.") from exc
    if not isinstance(data, dict):
        raise DataError(f"annotation file holds a JSON {type(data).__name__}, not a COCO object "
                        f"with {', '.join(REQUIRED_KEYS)}.", where=str(path),
                        fix="pass a COCO instances file (a results/detections list is not a "
                            "dataset).")
    return data


def _box_array(boxes: list, annotations: list, where: str) -> np.ndarray:
    """All bboxes as float64 [N, 4]; a malformed one is named by its annotation id."""
    try:
        raw = np.asarray(boxes) if boxes else np.zeros((0, 4))
        ok = raw.dtype.kind in "iuf" and raw.ndim == 2 and raw.shape[1] == 4  # no strings/None
        arr = raw.astype(np.float64)
        ok = ok and bool(np.isfinite(arr).all())
    except (ValueError, TypeError):
        ok = False
    if ok:
        return arr
    for a, bbox in zip(annotations, boxes):
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 \
                or not all(_is_number(v) for v in bbox):
            raise DataError(f"annotation id {a['id']} has bbox {str(bbox)[:80]}; expected four "
                            "numbers [x, y, width, height] in pixels.", where=where,
                            fix="write the box as [x, y, width, height] (COCO convention).")
    raise AssertionError("unreachable: a malformed bbox was detected but not found")


def _validate(data: dict, path: Path) -> tuple[list, list, list, np.ndarray]:
    where = str(path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DataError(f"not a COCO instances file: missing top-level key(s) "
                        f"{', '.join(repr(k) for k in missing)} (found: "
                        f"{_listing(sorted(map(str, data)), 10) or 'none'}).", where=where,
                        fix="a COCO detection file needs 'images', 'annotations' and "
                            "'categories' lists (image_info_* test files have no annotations "
                            "and cannot be used).")
    for k in REQUIRED_KEYS:
        if not isinstance(data[k], list):
            raise DataError(f"'{k}' must be a list, got {type(data[k]).__name__}.", where=where,
                            fix=f"write '{k}' as a JSON list of objects.")

    categories = data["categories"]
    if not categories:
        raise DataError("'categories' is empty: a detector needs at least one class.",
                        where=where, fix="list the object categories ({'id', 'name'}).")
    seen: set = set()
    for i, c in enumerate(categories):
        if not isinstance(c, dict) or not _is_whole(c.get("id")) or "name" not in c:
            raise DataError(f"categories[{i}] must be an object with a whole-number 'id' and a "
                            f"'name', got {str(c)[:80]}.", where=where,
                            fix="write each category as {\"id\": 1, \"name\": \"person\"}.")
        if c["id"] in seen:
            raise DataError(f"category id {c['id']} appears twice in 'categories'.", where=where,
                            fix="give every category its own id.")
        seen.add(c["id"])

    images = data["images"]
    image_ids: set = set()
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            raise DataError(f"images[{i}] is not an object.", where=where,
                            fix="write each image record as {\"id\", \"file_name\", \"width\", "
                                "\"height\"}.")
        absent = [k for k in ("id", "file_name", "width", "height") if k not in im]
        if absent:
            raise DataError(f"image record images[{i}] (id {im.get('id')!r}) lacks "
                            f"{', '.join(repr(k) for k in absent)}.", where=where,
                            fix="every image record needs id, file_name, width and height "
                                "(the size of the original image, which the boxes refer to).")
        if not _is_whole(im["id"]):
            raise DataError(f"images[{i}] has id {im['id']!r}; image ids must be whole numbers.",
                            where=where, fix="use integer image ids.")
        for k in ("width", "height"):
            if not _is_whole(im[k]) or im[k] < 1:
                raise DataError(f"image id {im['id']} has {k} {im[k]!r}; it must be a positive "
                                "whole number of pixels.", where=where,
                                fix="write the original image's width and height in pixels.")
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            raise DataError(f"image id {im['id']} has file_name {im['file_name']!r}.",
                            where=where, fix="write the image's file name (relative to the image "
                                             "folder).")
        if im["id"] in image_ids:
            raise DataError(f"image id {im['id']} appears twice in 'images'.", where=where,
                            fix="give every image record its own id.")
        image_ids.add(im["id"])

    annotations = data["annotations"]
    ann_ids: set = set()
    no_image, no_category = [], []
    boxes = []
    for i, a in enumerate(annotations):
        try:  # the fast path: one try per annotation instead of a check per key
            aid, iid, cid, bbox = a["id"], a["image_id"], a["category_id"], a["bbox"]
        except (KeyError, TypeError):
            if not isinstance(a, dict):
                raise DataError(f"annotations[{i}] is not an object.", where=where,
                                fix="write each annotation as {\"id\", \"image_id\", "
                                    "\"category_id\", \"bbox\": [x, y, w, h], \"iscrowd\"}.")
            absent = [k for k in ("id", "image_id", "category_id", "bbox") if k not in a]
            raise DataError(f"annotation annotations[{i}] (id {a.get('id')!r}) lacks "
                            f"{', '.join(repr(k) for k in absent)}.", where=where,
                            fix="every annotation needs id, image_id, category_id and bbox "
                                "[x, y, width, height] in pixels.") from None
        if aid in ann_ids:
            raise DataError(f"annotation id {aid} appears twice.", where=where,
                            fix="give every annotation its own id (pycocotools needs them unique).")
        ann_ids.add(aid)
        if iid not in image_ids:
            no_image.append(a)
        if cid not in seen:
            no_category.append(a)
        boxes.append(bbox)
    box_array = _box_array(boxes, annotations, where)
    if no_image:
        a = no_image[0]
        others = f" ({len(no_image) - 1} more annotations have the same problem)" \
            if len(no_image) > 1 else ""
        raise DataError(f"annotation id {a['id']} refers to image id {a['image_id']!r}, which has "
                        f"no image record in 'images'{others}.", where=where,
                        fix="add the image record, or remove the annotations of images that are "
                            "not in the dataset.")
    if no_category:
        a = no_category[0]
        others = f" ({len(no_category) - 1} more annotations have the same problem)" \
            if len(no_category) > 1 else ""
        raise DataError(f"annotation id {a['id']} has category_id {a['category_id']!r}, which is "
                        f"not in 'categories' (ids: {_listing(sorted(seen), 10)}){others}.",
                        where=where,
                        fix="add the category to 'categories' or correct the annotation's "
                            "category_id.")
    return images, categories, annotations, box_array


# ---------------------------------------------------------------------- locating a dataset
def _annotation_files(folder: Path) -> dict[str, Path]:
    found = {}
    for cand in (folder / "annotations", folder):
        if cand.is_dir():
            for p in sorted(cand.glob("instances_*.json")):
                found.setdefault(_split_of(p), p)
            if found:
                break
    return found


def _image_dir_for(ann_path: Path, split: str) -> Path:
    json_dir = ann_path.parent
    root = json_dir.parent if json_dir.name == "annotations" else json_dir
    for cand in (root / split, root / "images" / split):
        if cand.is_dir():
            return cand
    return json_dir


def open_dataset(path: str | os.PathLike, split: str | None = None,
                 images: str | os.PathLike | None = None) -> CocoDataset:
    """Open one split of a COCO-format dataset (see the module docstring for layouts).

    `path`: an annotation .json file, or a dataset folder with annotations/instances_<split>.json.
    `split`: which annotation file of a folder to use; needed when the folder has several. With a
    .json path it only overrides the split name used to find the image folder.
    `images`: the image folder, when it is not where the layout puts it (default: the folder
    given to an active `dataset_arguments` for this annotation file, else the layout's).
    """
    if images is not None:
        images = _check_image_folder(images, "images")
    p = Path(path)
    if not p.exists():
        raise DataError("dataset path not found.", where=str(p),
                        fix="pass a COCO annotation file (instances_<split>.json) or a dataset "
                            "folder holding annotations/; `mobiledet data synth --out DIR` writes "
                            "a small one.")
    if p.is_file():
        ann_path = p
        split = split or _split_of(p)
    else:
        files = _annotation_files(p)
        if not files:
            raise DataError("no COCO annotation file found: expected annotations/"
                            "instances_<split>.json in this folder.", where=str(p),
                            fix="pass the annotation .json file itself, or a folder with an "
                                "annotations/ subfolder; `mobiledet data synth --out DIR` writes "
                                "a dataset in this layout.")
        if split is None:
            if len(files) > 1:
                raise DataError(f"the dataset has several splits ({', '.join(files)}) and no "
                                "split was given.", where=str(p),
                                fix=f"name one of them as the split (e.g. split={next(iter(files))!r}"
                                    f" / --split {next(iter(files))}).")
            split = next(iter(files))
        if split not in files:
            raise DataError(f"the dataset has no split {split!r}; available: "
                            f"{', '.join(files)}.", where=str(p),
                            fix="name one of the available splits.")
        ann_path = files[split]
    image_dir = images or _BOUND_IMAGE_DIRS.get(_key(ann_path)) or _image_dir_for(ann_path, split)
    return CocoDataset.load(ann_path, image_dir, split=split)


# ---------------------------------------------------------------------- --data FILE --images DIR
_BOUND_IMAGE_DIRS: dict[str, Path] = {}   # resolved annotation file -> image folder


def _key(ann_path: Path) -> str:
    return os.path.normcase(str(Path(ann_path).resolve()))


def _check_image_folder(images, flag: str) -> Path:
    d = Path(images)
    if not d.exists():
        raise DataError("image folder not found.", where=f"{flag} {d}",
                        fix=f"pass as {flag} the folder that holds the image files the "
                            "annotation file names in its 'file_name' fields.")
    if not d.is_dir():
        raise DataError("is a file, not a folder of images.", where=f"{flag} {d}",
                        fix=f"pass as {flag} the folder that holds the images (the annotation "
                            "file goes to --data).")
    return d


def _folder_holding(name: str, ds: CocoDataset) -> Path | None:
    """A folder near the annotation file or the image folder (itself or one level down) that
    holds the image `name`, so the error can say which folder to pass."""
    json_dir = ds.annotation_file.parent
    seen = {ds.image_dir.resolve()}
    for root in (ds.image_dir, json_dir, json_dir.parent):
        try:
            children = sorted(c for c in root.iterdir() if c.is_dir())
        except OSError:
            continue
        for cand in [root] + children:
            r = cand.resolve()
            if r not in seen:
                seen.add(r)
                if (cand / name).is_file():
                    return cand
    return None


def missing_images_error(ds: CocoDataset, missing_ids, total: int,
                         images_flag: str = "--images", given: bool | None = None) -> DataError:
    """The DataError for images listed in the annotation file but not in its image folder.
    `given`: the folder came from `images_flag` (default: it is the one bound to the file)."""
    names = [str(ds.image_record(i)["file_name"]) for i in missing_ids]
    shown = _listing([str(ds.image_dir / n) for n in names])
    if given is None:
        bound = _BOUND_IMAGE_DIRS.get(_key(ds.annotation_file))
        given = bound is not None and bound.resolve() == ds.image_dir.resolve()
    near = _folder_holding(names[0], ds)
    problem = (f"{len(names)} of {total} image files are missing: {shown}. "
               f"{ds.annotation_file.name} lists them, and they are not in {ds.image_dir}"
               + (f" (the folder given as {images_flag})." if given else "."))
    if near is not None:
        fix = f"pass {images_flag} {near} (it holds {names[0]!r})."
    elif given:
        fix = (f"pass as {images_flag} the folder that holds the files named in the annotation "
               f"file's 'file_name' fields (e.g. {names[0]!r}).")
    else:
        fix = (f"put the images listed in {ds.annotation_file} into {ds.image_dir}, or pass "
               f"--data {ds.annotation_file} {images_flag} DIR with the folder that holds them.")
    return DataError(problem, where=str(ds.image_dir), fix=fix)


@contextlib.contextmanager
def dataset_arguments(data, images=None, *, data_flag: str = "--data",
                      images_flag: str = "--images", check: bool = True):
    """The CLI's `--data PATH [--images DIR]`, checked up front; yields the opened dataset's
    annotation file path, or None when `data` is not a COCO annotation file (a dataset folder
    or an image folder: used as before, untouched).

    With `images`, `data` must be an annotation file: it is opened with the images in that
    folder, every listed image must be there (with `check`), and until the block ends every
    `open_dataset` of that file in this process uses the folder. An annotation file without
    `images` is checked the same way against the folder the layout gives, so a missing image is
    reported before any work starts, with the `--images` fix. `check=False` (for a caller that
    checks the images it reads itself) skips opening the file: only the arguments are checked.
    """
    if data is None:
        if images is not None:
            raise DataError(f"{images_flag} was given without {data_flag}.",
                            where=images_flag,
                            fix=f"pass {data_flag} with the annotation file "
                                f"(instances_<split>.json) that lists the images in "
                                f"{images}.")
        yield None
        return
    p = Path(data)
    if images is not None:
        _check_image_folder(images, images_flag)
        if not p.exists():
            raise DataError("annotation file not found.",
                            where=f"{data_flag} {p}" if data_flag else str(p),
                            fix=f"with {images_flag}, pass {data_flag} the COCO annotation "
                                "file (instances_<split>.json) that lists those images.")
        if p.is_dir():
            files = _annotation_files(p)
            example = next(iter(files.values()), p / "annotations" / "instances_<split>.json")
            arg = f"{data_flag} " if data_flag else ""
            raise DataError(f"{images_flag} goes with an annotation file, and "
                            f"{data_flag or 'the dataset path'} is a folder.",
                            where=f"{arg}{p}",
                            fix=f"pass {arg}{example} {images_flag} {images}; or drop "
                                f"{images_flag} to use the folder's own layout "
                                "(annotations/instances_<split>.json beside <split>/).")
    if images is None and not (p.is_file() and p.suffix.lower() == ".json"):
        yield None   # a dataset folder or an image folder: as before
        return
    if check:
        ds = open_dataset(p, images=images)
        ds.check_images(ds.image_ids, images_flag, given=images is not None)
        ann_path, image_dir = ds.annotation_file, ds.image_dir
        del ds   # not held through the block (a COCO train2017 file is ~450 MB parsed)
    elif images is None:
        yield p   # nothing to check, nothing to bind
        return
    else:
        ann_path, image_dir = p, Path(images)
    key = _key(ann_path)
    previous = _BOUND_IMAGE_DIRS.get(key)
    _BOUND_IMAGE_DIRS[key] = image_dir
    try:
        yield ann_path
    finally:
        if previous is None:
            _BOUND_IMAGE_DIRS.pop(key, None)
        else:
            _BOUND_IMAGE_DIRS[key] = previous


def dataset_view(annotation_file, images, root) -> Path:
    """A dataset folder in the project's layout that points at an annotation file and an image
    folder kept elsewhere: ``root/annotations/instances_<split>.json`` and ``root/<split>/`` are
    symbolic links to them. For readers that take one dataset path (the DAG's `data`), so
    `mobiledet run --data FILE --images DIR` needs no copy. Returns `root`; an existing view
    pointing elsewhere is replaced whole.
    """
    from include.atomic import staged_dir

    ann, img = Path(annotation_file).resolve(), Path(images).resolve()
    split = _split_of(ann)
    root = Path(root)
    links = {root / "annotations" / f"instances_{split}.json": ann, root / split: img}
    if all(p.is_symlink() and Path(os.readlink(p)) == target for p, target in links.items()):
        return root
    with staged_dir(root) as tmp:
        (tmp / "annotations").mkdir()
        for p, target in links.items():
            (tmp / p.relative_to(root)).symlink_to(target)
    return root
