"""Representative (calibration) data for full-integer post-training quantisation.

Images come from a COCO-format dataset or a plain image folder, sampled deterministically, and
go through `include.data.preprocess.preprocess` - the same function training, evaluation and
pictures use - so calibration can never see differently preprocessed pixels than inference.
Images are decoded once and kept as one array; the converter's generator yields slices of it.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np

from include.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def calibration_files(source, count: int = 100, seed: int = 0) -> list[Path]:
    """Pick up to `count` image files from a COCO dataset (annotation file or folder) or a folder."""
    if count < 1:
        raise DataError(f"calibration count must be >= 1, got {count}.", where="--calibration-count",
                        fix="use e.g. 100 (the default) or more.")
    src = Path(source)
    if not src.exists():
        raise DataError("calibration source does not exist.", where=str(src),
                        fix="pass a COCO dataset folder, an instances_*.json file or an image folder.")
    if src.is_file() or (src / "annotations").is_dir():
        from include.data.coco import open_dataset

        split = None
        if src.is_dir():
            splits = sorted((src / "annotations").glob("instances_*.json"))
            # Calibrate on training images when the dataset has them, as TFOD users do.
            if len(splits) > 1 and (src / "annotations" / "instances_train.json").is_file():
                split = "train"
        ds = open_dataset(src, split=split)
        ids = ds.sample_image_ids(min(count, len(ds)), seed=seed)
        files = [Path(ds.image_path(i)) for i in ids]
    else:
        files = _image_files(src)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in the calibration folder.",
                            where=str(src), fix="point --calibration at a folder of images or at a "
                            "COCO dataset.")
        files = sorted(random.Random(seed).sample(files, min(count, len(files))))
    if not files:
        raise DataError("the calibration dataset has no images.", where=str(src),
                        fix="use a dataset with images.")
    return files


def representative_images(source, size: int, count: int = 100, seed: int = 0):
    """-> (float32 array [N, size, size, 3] in [-1, 1], info dict for conversion.json)."""
    from include.data.preprocess import preprocess

    files = calibration_files(source, count, seed)
    batch = np.stack([preprocess(f, size) for f in files]).astype(np.float32)
    digest = hashlib.sha256("\n".join(str(f.name) for f in files).encode()).hexdigest()
    info = {"source": str(source), "images": len(files), "requested": count, "seed": seed,
            "preprocessing": "include.data.preprocess.preprocess", "input_size": size,
            "files_sha256": digest}
    return batch, info
