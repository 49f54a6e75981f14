"""COCO evaluation of a detector .tflite: mAP with pycocotools, optionally against a reference.

`evaluate(model, data)` runs the model on one split of a COCO-format dataset and returns

* `metrics`: pycocotools' twelve summary numbers under the names AP, AP50, AP75, APs, APm, APl,
  AR1, AR10, AR100, ARs, ARm, ARl (-1 where pycocotools leaves a number undefined, e.g. APs
  when the data has no small objects);
* `per_category`: AP and AP50 of every evaluated category (by id and name);
* images, detections, seconds, images_per_s, threads, and where the detections went.

With a `reference` model (the float32 model of the same checkpoint) the same images also go
through the reference, and the result gains `reference` (its metrics), `drop` (reference minus
model, for AP and AP50) and `agreement`: the model's detections scored against the reference's
detections taken as ground truth (those at or above `agreement_threshold`, 0.3 by default). The
agreement needs no labels, so it shows how far quantisation moved the outputs even where the
ground truth is thin.

Classes -> category ids: with `labels` (a TFOD label_map.pbtxt, a labels.txt or a JSON label
map; `include.data.labels`), its names matched to the dataset's category names, else its ids
taken as category ids (TFOD's convention); without, the label map the conversion report
(`<stem>.conversion.json`) carries from the checkpoint ({class index: {name, category_id}}) when
its ids are in the dataset; else the dataset's categories in id order (class k -> k-th category,
as `include.data.coco` trains them).
Only the categories the model can predict are evaluated (all of them for a model trained on the
dataset); detections of classes without a category in the dataset are dropped and counted.

Boxes: the model's normalised (ymin, xmin, ymax, xmax) are clipped to [0, 1] and scaled by the
ORIGINAL image size from the image record (the preprocessing stretches the image, so normalised
coordinates carry over unchanged) into COCO's absolute [x, y, width, height].

Throughput: T loader threads decode and preprocess images a few steps ahead of inference, and
T inference threads each run their own interpreter with num_threads=1 (strategy "workers", the
default). LiteRT releases the GIL while a model runs (Pillow and numpy do in their heavy parts),
so threads run in parallel without the cost of processes. The other strategy, "interpreter",
runs one interpreter with num_threads=T fed by the same loaders. `bench/eval_throughput.py`
compares both with the interpreter's own latency-based throughput.
`images_per_s` covers the detection pass (decode + preprocess + inference + box conversion);
creating and warming the interpreters (`setup_seconds`) and pycocotools (`coco_eval_seconds`) are
reported apart; `seconds` is the whole call.

Decoded once: `preprocess_inputs(data, size)` decodes and resizes the evaluated images once
(`EvalInputs`, uint8, saved as one .npz); `evaluate(..., inputs=...)` then only scales and
quantises each image ahead of inference. The pipeline makes it once per run and input size and
evaluates every model of the run on it, instead of decoding the dataset again in every check.
Each model is evaluated once per run: drop and agreement against the float reference come from
the two models' stored detections (`drop_of`, `agreement`), not from running the reference again.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from include.atomic import atomic_path, write_json_atomic
from include.errors import ConfigError, DataError

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
AGREEMENT_THRESHOLD = 0.3
STRATEGIES = ("workers", "interpreter")
DEFAULT_STRATEGY = "workers"


# ====================================================================== pycocotools
def _quiet():
    """pycocotools prints progress to stdout; keep stdout clean for --json."""
    return contextlib.redirect_stdout(io.StringIO())


def _coco_from_dict(dataset: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


def _gt_dict(images: list, categories: list, annotations: list) -> dict:
    """A COCO ground-truth dict with the fields pycocotools needs filled in (area from the box,
    iscrowd 0) when the file leaves them out."""
    anns = []
    for a in annotations:
        if "area" not in a or "iscrowd" not in a:
            a = dict(a)
            a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
            a.setdefault("iscrowd", 0)
        anns.append(a)
    return {"images": list(images), "categories": list(categories), "annotations": anns}


def load_ground_truth(gt) -> Any:
    """A pycocotools COCO object from an annotation file path, a CocoDataset or a COCO object.

    Files are read through `include.data.coco`, so a missing or malformed file raises DataError
    naming it.
    """
    from pycocotools.coco import COCO

    from include.data.coco import CocoDataset

    if isinstance(gt, COCO):
        return gt
    if isinstance(gt, (str, os.PathLike)):
        gt = CocoDataset(gt, Path(gt).parent)
    if isinstance(gt, CocoDataset):
        return _coco_from_dict(_gt_dict(gt.images, gt.categories, gt.annotations))
    raise TypeError(f"ground truth must be an annotation file path, a CocoDataset or a "
                    f"pycocotools COCO object, not {type(gt).__name__}")


def _results_coco(gt_coco, detections: list[dict]):
    """The detections as a COCO object (loadRes semantics; an empty list gives an empty one
    instead of pycocotools' error)."""
    if detections:
        with _quiet():
            return gt_coco.loadRes(copy.deepcopy(detections))  # loadRes writes into the dicts
    return _coco_from_dict({"images": list(gt_coco.dataset.get("images", [])),
                            "categories": copy.deepcopy(gt_coco.dataset.get("categories", [])),
                            "annotations": []})


def _cocoeval(gt_coco, detections, image_ids=None, category_ids=None):
    from pycocotools.cocoeval import COCOeval

    dt_coco = _results_coco(gt_coco, detections)
    ev = COCOeval(gt_coco, dt_coco, iouType="bbox")
    if image_ids is not None:
        ev.params.imgIds = sorted(int(i) for i in image_ids)
    if category_ids is not None:
        ev.params.catIds = sorted(int(c) for c in category_ids)
    with _quiet():
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _metrics_of(ev) -> dict[str, float]:
    return {name: round(float(v), 6) for name, v in zip(METRIC_NAMES, ev.stats)}


def _per_category(ev, gt_coco) -> list[dict]:
    """AP (IoU .50:.95) and AP50 per category, area all, maxDets 100; -1 when undefined."""
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    out = []
    for k, cid in enumerate(ev.params.catIds):
        p_all = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        ap = float(np.mean(p_all[p_all > -1])) if (p_all > -1).any() else -1.0
        ap50 = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else -1.0
        cat = gt_coco.cats.get(cid, {})
        n_gt = len(gt_coco.getAnnIds(imgIds=ev.params.imgIds, catIds=[cid], iscrowd=False))
        out.append({"category_id": int(cid), "name": str(cat.get("name", cid)),
                    "AP": round(ap, 6), "AP50": round(ap50, 6), "ground_truth": n_gt})
    return out


def coco_eval(gt, detections: Sequence[dict], image_ids: Iterable[int] | None = None, *,
              category_ids: Iterable[int] | None = None, per_category: bool = False) -> dict:
    """pycocotools bbox evaluation -> {AP, AP50, ..., ARl} (and `per_category` when asked).

    gt: an annotation file path, a CocoDataset or a pycocotools COCO object. detections: COCO
    results ({image_id, category_id, bbox [x, y, w, h] in pixels, score}); an empty list scores
    AP 0 wherever there is ground truth. image_ids / category_ids restrict the evaluation
    (default: all of the ground truth's).
    """
    gt_coco = load_ground_truth(gt)
    dets = list(detections)
    known = set(gt_coco.getImgIds())
    if image_ids is not None:
        image_ids = [int(i) for i in image_ids]
        unknown = sorted(set(image_ids) - known)
        if unknown:
            raise DataError(f"image ids {unknown[:5]} are not in the ground truth.",
                            where="image_ids", fix="evaluate on image ids of the annotation file.")
    stray = sorted({d["image_id"] for d in dets} - known)
    if stray:
        raise DataError(f"detections refer to image ids {stray[:5]} that the ground truth does "
                        "not have.", where="detections",
                        fix="run the model on the annotation file's images.")
    ev = _cocoeval(gt_coco, dets, image_ids, category_ids)
    metrics = _metrics_of(ev)
    if per_category:
        metrics["per_category"] = _per_category(ev, gt_coco)
    return metrics


# ====================================================================== detections
def to_coco_results(image_id: int, dets: dict, width: int, height: int,
                    class_to_category: dict[int, int]) -> tuple[list[dict], int]:
    """One image's decoded detections -> COCO results in the original image's pixels.

    Returns (results, dropped): detections whose class has no category, or whose numbers are not
    finite, are dropped and counted.
    """
    out, dropped = [], 0
    boxes = np.clip(np.asarray(dets["boxes"], dtype=np.float64), 0.0, 1.0)
    for box, cls, score in zip(boxes, dets["classes"], dets["scores"]):
        cid = class_to_category.get(int(cls))
        if cid is None or not np.isfinite(box).all() or not np.isfinite(score):
            dropped += 1
            continue
        ymin, xmin, ymax, xmax = box
        x, y = xmin * width, ymin * height
        w, h = max(0.0, (xmax - xmin) * width), max(0.0, (ymax - ymin) * height)
        out.append({"image_id": int(image_id), "category_id": int(cid),
                    "bbox": [round(x, 3), round(y, 3), round(w, 3), round(h, 3)],
                    "score": round(float(score), 6)})
    return out, dropped


def _mapping_from_labels(dataset, label_map: dict, source: str) -> tuple[dict[int, int], str]:
    """A label file's classes -> the dataset's categories: by name (name or display_name, case
    aside) when any name matches, else by id (TFOD: the label id is the category id)."""
    by_name = {str(c["name"]).casefold(): c["id"] for c in dataset.categories}
    named = {}
    for k, v in label_map.items():
        for name in v.get("names") or [v["name"]]:
            cid = by_name.get(str(name).casefold())
            if cid is not None:
                named[k] = cid
                break
    if named:
        return named, (f"{source} (matched by category name: {len(named)} of "
                       f"{len(label_map)} classes)")
    cats = set(dataset.category_ids)
    by_id = {k: int(v["category_id"]) for k, v in label_map.items()
             if isinstance(v.get("category_id"), int) and v["category_id"] in cats}
    if by_id:
        return by_id, (f"{source} (no name matches a category; label ids taken as category "
                       f"ids: {len(by_id)} of {len(label_map)} classes)")
    raise DataError(f"no class of {source} matches a category of the dataset: no name "
                    f"({_names(v['name'] for v in label_map.values())}) is a category name "
                    f"({_names(dataset.class_names)}) and no id is a category id.",
                    where=str(dataset.annotation_file),
                    fix="pass --labels with the label file of the classes this model was "
                        "trained on, or evaluate on the dataset they come from.")


def _names(names, limit: int = 5) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit
                                       else "")


def load_labels(labels) -> tuple[dict[int, dict], str]:
    """{class: {name, category_id[, names]}} of a `--labels` file and a description of it: a
    TFOD label_map.pbtxt or labels.txt (include.data.labels), or a JSON label map (a conversion
    report, an export.json or {"0": "person", ...})."""
    from include.data.labels import read_labels

    p = Path(labels)
    if p.suffix.lower() == ".json":
        from include.quality.runner import names_from_json

        found = names_from_json(p)
        if not found:
            raise DataError("is a COCO annotation file, not a label map.", where=str(p),
                            fix="pass the dataset as --data; --labels takes a label_map.pbtxt, a "
                                "labels.txt or a JSON label map.")
        return found, f"--labels {p}"
    return read_labels(p), f"--labels {p}"


def class_mapping(dataset, model_path, num_classes: int | None, labels=None,
                  labels_source: str = "--labels") -> tuple[dict[int, int], str]:
    """{model class index: dataset category id} and where it came from (see module docstring).
    `labels`: a label file (path), or an already read {class: {name, category_id}} map named
    `labels_source`."""
    from include.quality.runner import find_label_map, read_conversion_json

    if labels is not None:
        if not isinstance(labels, dict):
            labels, labels_source = load_labels(labels)
        return _mapping_from_labels(dataset, labels, labels_source)
    cats = set(dataset.category_ids)
    label_map = find_label_map(read_conversion_json(model_path) or {})
    if label_map:
        mapped = {k: int(v["category_id"]) for k, v in label_map.items()
                  if isinstance(v.get("category_id"), int) and v["category_id"] in cats}
        if mapped:
            return mapped, "label map of the conversion report"
        names = {c["name"]: c["id"] for c in dataset.categories}
        by_name = {k: names[v["name"]] for k, v in label_map.items() if v["name"] in names}
        if by_name:
            return by_name, "label map of the conversion report (matched by category name)"
    if num_classes is not None and num_classes > dataset.num_classes:
        raise DataError(f"the model predicts {num_classes} classes but the dataset has "
                        f"{dataset.num_classes} categories, and no label map says which class is "
                        "which category.", where=str(dataset.annotation_file),
                        fix="evaluate on the dataset the model was trained for, or keep the "
                            "model's conversion report (with the checkpoint's label map) next "
                            "to the .tflite.")
    n = dataset.num_classes if num_classes is None else num_classes
    return {k: dataset.class_to_category_id(k) for k in range(n)}, \
        "dataset categories in id order"


def _warm(detector) -> None:
    """One untimed run: XNNPACK packs the weights on the first invoke."""
    detector.raw_outputs(np.zeros((detector.input_size, detector.input_size, 3), np.float32))


def _detect_all(model_path, dataset, image_ids: list[int], threads: int, strategy: str,
                desc: str, show_progress: bool, inputs: "EvalInputs | None" = None
                ) -> tuple[dict[int, dict], float, float]:
    """Run the model on every image: ({image_id: decoded detections}, setup s, pass s).

    Setup (creating and warming the interpreters, in parallel) is timed apart from the pass, so
    images_per_s is the steady rate a long evaluation runs at. With `inputs` (the images
    decoded and resized once, `preprocess_inputs`), the loaders only scale and quantise.
    """
    from include.progress import progress
    from include.data.preprocess import preprocess
    from include.quality.runner import Detector, decode

    t0 = time.perf_counter()
    if strategy == "workers":
        def make(_):
            det = Detector(model_path, threads=1)
            _warm(det)
            return det

        with ThreadPoolExecutor(max_workers=threads) as pool:
            detectors = list(pool.map(make, range(threads)))
    else:
        detectors = [Detector(model_path, threads=threads)]
        _warm(detectors[0])
    first = detectors[0]
    size, max_detections = first.input_size, first.max_detections
    setup_seconds = time.perf_counter() - t0

    if inputs is not None and inputs.size == size:
        from include.data.preprocess import normalize

        def load(image_id):  # decoded and resized once per run: scale and quantise only
            return first.prepare(normalize(inputs.pixels_of(image_id)))
    else:
        def load(image_id):  # every interpreter of a model takes the same input
            return first.prepare(preprocess(dataset.load_image(image_id), size))

    # The pipeline: `threads` loader threads decode and preprocess images a few steps ahead;
    # inference threads (one per interpreter) each keep one interpreter for their lifetime and
    # run whatever image is ready. Pillow, numpy and the interpreter release the GIL in their
    # heavy parts, so decoding overlaps inference.
    local = threading.local()
    lock = threading.Lock()

    def infer(image_id, loaded):
        det = getattr(local, "detector", None)
        if det is None:
            with lock:
                det = local.detector = detectors.pop()
        return image_id, decode(det.run(loaded.result()), max_detections)

    results: dict[int, dict] = {}
    window = 2 * (threads + len(detectors)) + 2
    bar = progress(total=len(image_ids), desc=desc, unit="img",
                   disable=None if show_progress else True)
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="load") as loaders, \
                ThreadPoolExecutor(max_workers=len(detectors),
                                   thread_name_prefix="infer") as runners:
            pending: list = []
            for image_id in image_ids:
                pending.append(runners.submit(infer, image_id, loaders.submit(load, image_id)))
                while len(pending) >= window:
                    done_id, dets = pending.pop(0).result()
                    results[done_id] = dets
                    bar.update(1)
            for fut in pending:
                done_id, dets = fut.result()
                results[done_id] = dets
                bar.update(1)
    finally:
        bar.close()
    return results, setup_seconds, time.perf_counter() - started


def _check_images(dataset, image_ids, given: bool | None = None):
    """DataError naming the missing image files (include.data.coco.CocoDataset.check_images)."""
    dataset.check_images(image_ids, given=given)


def default_split(path, split=None, any_split: bool = False):
    """`val` when a dataset folder has a val split and no split was named; with any_split, else
    the first split in name order (for reading categories, which every split shares)."""
    p = Path(path)
    if split is not None or not p.is_dir():
        return split
    for folder in (p / "annotations", p):
        if (folder / "instances_val.json").is_file():
            return "val"
    if any_split:
        for folder in (p / "annotations", p):
            found = sorted(folder.glob("instances_*.json")) if folder.is_dir() else []
            if found:
                return found[0].name[len("instances_"):-len(".json")]
    return None


def _pseudo_ground_truth(gt_coco, reference_dets: list[dict], image_ids, threshold: float):
    keep = [d for d in reference_dets if d["score"] >= threshold]
    ids = set(image_ids)
    anns = [{"id": k + 1, "image_id": d["image_id"], "category_id": d["category_id"],
             "bbox": list(d["bbox"]), "area": float(d["bbox"][2] * d["bbox"][3]), "iscrowd": 0}
            for k, d in enumerate(keep)]
    images = [im for im in gt_coco.dataset["images"] if im["id"] in ids]
    return _coco_from_dict({"images": images, "categories": gt_coco.dataset["categories"],
                            "annotations": anns}), len(anns)


def drop_of(metrics: dict, reference_metrics: dict) -> dict:
    """The drop against the reference (reference minus model) of AP and AP50."""
    return {k: round(reference_metrics[k] - metrics[k], 6) for k in ("AP", "AP50")}


def agreement(gt, detections: list[dict], reference_detections: list[dict], image_ids,
              category_ids, threshold: float = AGREEMENT_THRESHOLD) -> dict:
    """The model's detections scored against the reference's (those >= `threshold`) taken as
    ground truth; needs the images and categories of `gt`, not its labels."""
    gt_coco = load_ground_truth(gt)
    pseudo, n_pseudo = _pseudo_ground_truth(gt_coco, reference_detections, image_ids, threshold)
    agree = _metrics_of(_cocoeval(pseudo, list(detections), image_ids, category_ids))
    return {"score_threshold": threshold, "reference_boxes": n_pseudo,
            "AP": agree["AP"], "AP50": agree["AP50"], "AP75": agree["AP75"],
            "AR100": agree["AR100"], "metrics": agree}


# ====================================================================== decoded once
class EvalInputs:
    """The evaluated images decoded and resized once: uint8 [N, S, S, 3] with their image ids.

    `include.data.preprocess.normalize(pixels)` is exactly what `preprocess` gives (the resize
    is kept in whole numbers), so a model evaluated on these sees the same input as one that
    decodes each file itself. Stored as one .npz (``image_ids``, ``pixels``; no pickles).
    """

    def __init__(self, image_ids, pixels: np.ndarray):
        self.image_ids = [int(i) for i in image_ids]
        self.pixels = pixels
        self.size = int(pixels.shape[1]) if pixels.ndim == 4 else 0
        self._row = {i: k for k, i in enumerate(self.image_ids)}

    def __len__(self) -> int:
        return len(self.image_ids)

    def covers(self, image_ids) -> bool:
        return all(int(i) in self._row for i in image_ids)

    def pixels_of(self, image_id) -> np.ndarray:
        return self.pixels[self._row[int(image_id)]]

    def save(self, path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, image_ids=np.asarray(self.image_ids, dtype=np.int64),
                     pixels=self.pixels)
        return path

    @classmethod
    def load(cls, path) -> "EvalInputs":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["image_ids"].tolist(), z["pixels"])


def preprocess_inputs(data, size: int, *, split: str | None = None,
                      max_images: int | None = None, threads: int | None = None,
                      images=None) -> EvalInputs:
    """Decode and resize the images `evaluate(data, max_images=..., images=...)` reads, once, in
    `threads` threads (Pillow releases the GIL while it decodes and resizes)."""
    from include.data.coco import open_dataset
    from include.data.preprocess import preprocess_uint8
    from include.quality.runner import default_threads

    dataset = open_dataset(data, split=default_split(data, split), images=images)
    image_ids = dataset.image_ids[:max_images] if max_images else dataset.image_ids
    _check_images(dataset, image_ids, given=True if images is not None else None)
    pixels = np.empty((len(image_ids), int(size), int(size), 3), dtype=np.uint8)

    def one(k):
        pixels[k] = preprocess_uint8(dataset.load_image(image_ids[k]), size)

    with ThreadPoolExecutor(max_workers=threads or default_threads()) as pool:
        list(pool.map(one, range(len(image_ids))))
    return EvalInputs(image_ids, pixels)


def evaluate(model, data, *, split: str | None = None, max_images: int | None = None,
             threads: int | None = None, reference=None, out=None,
             agreement_threshold: float = AGREEMENT_THRESHOLD, strategy: str = DEFAULT_STRATEGY,
             show_progress: bool = True, inputs: "EvalInputs | None" = None, images=None,
             labels=None) -> dict:
    """Evaluate `model` (.tflite) on a COCO-format dataset; see the module docstring.

    data: a dataset folder or annotation file (`include.data.coco.open_dataset`); split defaults
    to `val` when the folder has one. images: the image folder of an annotation file whose
    images are not where the layout puts them. labels: a label file naming the model's classes
    (label_map.pbtxt, labels.txt, JSON), used instead of the model's own label map. max_images: the first N images in file order. threads:
    worker count (default: the cores available). reference: the float .tflite to compare with.
    out: where to write the detections as COCO results (written atomically).
    inputs: the evaluated images already decoded and resized to the model's input size
    (`preprocess_inputs`, made once per run by the pipeline); images it lacks, or a size other
    than the model's, fall back to decoding each image here.
    """
    from include.data.coco import open_dataset
    from include.quality.runner import Detector, check_model_file, default_threads, model_info

    started = time.perf_counter()
    model = check_model_file(model)
    if reference is not None:
        reference = check_model_file(reference)
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}.",
                          where="strategy", fix="use 'workers' (default) or 'interpreter'.")
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive whole number, got {threads!r}.",
                          where="--threads", fix="use e.g. 2, or leave it out for all cores.")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                   or max_images < 1):
        raise ConfigError(f"max_images must be a positive whole number, got {max_images!r}.",
                          where="--max-images", fix="use e.g. 100, or leave it out for all.")
    if not 0.0 <= agreement_threshold <= 1.0:
        raise ConfigError(f"the agreement score threshold must be in [0, 1], got "
                          f"{agreement_threshold!r}.", where="agreement_threshold",
                          fix="use e.g. 0.3.")

    given = True if images is not None else None   # None: bound by dataset_arguments, or not
    dataset = open_dataset(data, split=default_split(data, split), images=images)
    image_ids = dataset.image_ids[:max_images] if max_images else dataset.image_ids
    if not image_ids:
        raise DataError("the dataset has no images to evaluate.",
                        where=str(dataset.annotation_file), fix="use a split with images.")
    if inputs is None or not inputs.covers(image_ids):
        _check_images(dataset, image_ids, given)  # decoded once: the files need not be here

    # Fail fast, before any long run, on a model that breaks the I/O contract or whose classes
    # cannot be matched to the dataset's categories.
    probe = Detector(model, threads=1)
    label_map, labels_source = load_labels(labels) if labels is not None else (None, None)
    mapping, mapping_source = class_mapping(dataset, model, model_info(model)["num_classes"],
                                            label_map, labels_source)
    ref_mapping = None
    if reference is not None:   # the float model of the same checkpoint: the same classes
        Detector(reference, threads=1)
        ref_mapping, _ = class_mapping(dataset, reference, model_info(reference)["num_classes"],
                                       label_map, labels_source)
    category_ids = sorted(set(mapping.values()))
    gt_coco = load_ground_truth(dataset)

    timings = {"setup": 0.0}

    if inputs is not None and (inputs.size != probe.input_size or not inputs.covers(image_ids)):
        inputs = None
        _check_images(dataset, image_ids, given)

    def run(path, desc, mapping):
        raw, setup, seconds = _detect_all(path, dataset, image_ids, threads, strategy, desc,
                                          show_progress, inputs)
        timings["setup"] += setup
        dets, dropped = [], 0
        for image_id in image_ids:
            rec = dataset.image_record(image_id)
            r, d = to_coco_results(image_id, raw[image_id], rec["width"], rec["height"], mapping)
            dets.extend(r)
            dropped += d
        return dets, dropped, seconds

    dets, dropped, detect_seconds = run(model, f"evaluate {Path(model).name}", mapping)
    if out is not None:
        out = Path(out)
        write_json_atomic(out, dets, indent=None)
    t0 = time.perf_counter()
    ev = _cocoeval(gt_coco, dets, image_ids, category_ids)
    result: dict[str, Any] = {
        "model": str(model),
        "data": str(dataset.annotation_file),
        "image_dir": str(dataset.image_dir),
        "split": dataset.split,
        "metrics": _metrics_of(ev),
        "per_category": _per_category(ev, gt_coco),
        "images": len(image_ids),
        "detections": len(dets),
        "detections_dropped": dropped,
        "categories_evaluated": len(category_ids),
        "category_ids": category_ids,
        "decoded_once": inputs is not None,
        "class_mapping": mapping_source,
        "labels_source": labels_source or ("conversion report"
                                           if mapping_source.startswith("label map") else
                                           "dataset categories"),
        "results_file": str(out) if out is not None else None,
    }
    coco_seconds = time.perf_counter() - t0

    if reference is not None:
        ref_dets, _, ref_seconds = run(reference, f"reference {Path(reference).name}",
                                       ref_mapping)
        ref_ev = _cocoeval(gt_coco, ref_dets, image_ids, category_ids)
        ref_metrics = _metrics_of(ref_ev)
        result["reference"] = {"model": str(reference), "metrics": ref_metrics,
                               "detections": len(ref_dets),
                               "images_per_s": round(len(image_ids) / ref_seconds, 3)}
        result["drop"] = drop_of(result["metrics"], ref_metrics)
        result["agreement"] = agreement(gt_coco, dets, ref_dets, image_ids, category_ids,
                                        agreement_threshold)
    result.update({
        "threads": threads,
        "strategy": strategy,
        "setup_seconds": round(timings["setup"], 3),
        "detect_seconds": round(detect_seconds, 3),
        "coco_eval_seconds": round(coco_seconds, 3),
        "images_per_s": round(len(image_ids) / detect_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    })
    return result
