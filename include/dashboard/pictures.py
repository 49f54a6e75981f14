"""Detection pictures for a release: a model's detections on a few evaluation images.

Made where the model and the evaluation data are on local disk (the check or publish stage),
at the README's score threshold (0.3), with the drawing code of `include.quality.visualize`,
and stored next to the model so the dashboard shows them with the release.
"""
from __future__ import annotations

from pathlib import Path

from include.errors import DataError

THRESHOLD = 0.3
COUNT = 3


def evaluation_images(data, count: int = COUNT) -> list[Path]:
    """The first `count` images of the evaluated split of a COCO dataset (or of a folder of
    images), in the dataset's own order, so every release shows the same images."""
    from include.data.coco import open_dataset
    from include.quality.evaluate import default_split

    root = Path(data)
    if not root.exists():
        raise DataError("the evaluation dataset does not exist.", where=str(root),
                        fix="pass the dataset folder the model was evaluated on.")
    has_coco = (root / "annotations").is_dir() or list(root.glob("instances_*.json")) or \
        (root.is_file() and root.suffix == ".json")
    if has_coco:
        dataset = open_dataset(root, split=default_split(root))
        return [Path(dataset.image_path(i)) for i in dataset.image_ids[:count]]
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not found:
        raise DataError("no images found.", where=str(root),
                        fix="pass a COCO dataset or a folder of .jpg/.png images.")
    return found[:count]


def release_pictures(model_path, data, out_dir, threshold: float = THRESHOLD,
                     count: int = COUNT) -> list[Path]:
    """Draw `model_path`'s detections (score >= `threshold`) on the first `count` evaluation
    images of `data`; write ``out_dir/<n>-<image stem>.png``; return the paths written.

    Class names come from the dataset's categories when `data` is a COCO dataset, else from
    the model's conversion report.
    """
    from include.quality.visualize import visualize

    if int(count) < 1:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = evaluation_images(data, int(count))
    root = Path(data)
    labels = root if (root / "annotations").is_dir() or list(root.glob("instances_*.json")) \
        else None
    written = []
    for n, image in enumerate(images):
        target = out / f"{n}-{image.stem}.png"
        visualize(model_path, image, target, threshold=threshold, labels=labels)
        written.append(target)
    return written
