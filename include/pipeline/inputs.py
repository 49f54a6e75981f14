"""Task inputs from the store, fetching only what a task uses.

A task on a worker gets store URIs. Downloading a whole prefix to read one file is what made
`plan` copy whole checkpoints (weights included) to read `checkpoint.json`, and every
calibration and check task copy the whole evaluation dataset for a few images. These helpers
take what is needed:

* :func:`checkpoint_header`: the files that say what a checkpoint is (``checkpoint.json``; for
  an export folder or TFOD bundle ``pipeline.config``, ``tflite_graph.pb`` and ``export.json``),
  never the weights;
* :func:`dataset_copy`: a COCO dataset's annotation files, then only the images a caller picks
  from them, laid out as in the store, so `include.data.coco.open_dataset` reads it as usual.

Local paths (and ``file://`` URIs) are used in place: nothing is copied.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

# What `describe_source` reads of each kind of checkpoint folder (all optional but the first
# match): a trained checkpoint, or an export folder / TFOD bundle.
HEADER_FILES = ("checkpoint.json", "pipeline.config", "tflite_graph.pb", "export.json")


def local_path(uri: str) -> Path | None:
    """The local path of a plain path or file:// URI; None for a remote URI."""
    from include.store.uri import StoreURI, is_remote

    return None if is_remote(uri) else Path(StoreURI.parse(uri).path)


def _name(uri: str) -> str:
    return uri.rstrip("/").rpartition("/")[2] or "input"


def checkpoint_header(uri: str, workdir: str | Path, conn_id: str | None) -> Path:
    """A local folder holding the header files of the checkpoint at `uri` (no weights)."""
    from include.store import open_store

    path = local_path(uri)
    if path is not None:
        return path
    remote = open_store(uri, conn_id=conn_id)
    target = Path(workdir) / _name(uri)
    target.mkdir(parents=True, exist_ok=True)
    if remote.is_file("checkpoint.json"):
        wanted = ["checkpoint.json"]
    else:
        wanted = [n for n in HEADER_FILES[1:] if remote.is_file(n)]
    for name in wanted:
        remote.get_file(name, str(target / name))
    return target


def dataset_copy(uri: str, workdir: str | Path, conn_id: str | None,
                 images: Callable[[Path], Iterable[str | Path]] | None = None) -> Path:
    """A local copy of the COCO dataset at `uri` with only the images `images` picks.

    `images(local_root)` is called once the annotation files are there and returns the image
    paths it will read (as `CocoDataset.image_path` gives them, under `local_root`), or None
    for every file (a plain image folder has no annotations to pick from); `images=None` takes
    every file without asking. The picked images are downloaded; paths the store does not hold are left for
    the dataset reader to report by name.
    """
    from include.store import open_store

    path = local_path(uri)
    if path is not None:
        return path
    remote = open_store(uri, conn_id=conn_id)
    root = Path(workdir) / _name(uri)
    keys = remote.list("")
    if images is None:
        picked = keys
    else:
        for key in keys:  # the folders as in the store, so the reader finds the image folders
            root.joinpath(*key.split("/")).parent.mkdir(parents=True, exist_ok=True)
        for key in [k for k in keys if k.endswith(".json")]:
            remote.get_file(key, str(root.joinpath(*key.split("/"))))
        chosen = images(root)
        present = set(keys)
        picked = keys if chosen is None else []
        for p in chosen or ():
            rel = Path(p).resolve().relative_to(root.resolve()).as_posix()
            if rel in present:
                picked.append(rel)
    for key in dict.fromkeys(picked):
        dest = root.joinpath(*key.split("/"))
        if not dest.is_file():
            remote.get_file(key, str(dest))
    root.mkdir(parents=True, exist_ok=True)
    return root


# ------------------------------------------------------------------------------------------
# which images a task reads of a COCO dataset
# ------------------------------------------------------------------------------------------
def coco_or_all(root: Path, pick):
    """The images `pick()` names when `root` has COCO annotations, else None (every file)."""
    if not (root / "annotations").is_dir() and not list(root.glob("instances_*.json")):
        return None
    return pick()


def evaluated_images(root: Path, max_images: int | None) -> list:
    """The images an evaluation reads: the evaluation split's first `max_images` (all)."""
    from include.data.coco import open_dataset
    from include.quality.evaluate import default_split

    dataset = open_dataset(root, split=default_split(root))
    ids = dataset.image_ids[:max_images] if max_images else dataset.image_ids
    return [dataset.image_path(i) for i in ids]


def check_images(root: Path, max_images: int | None, decoded: bool = False) -> list:
    """The images a check reads: the evaluated ones (unless the run decoded them once
    already), the contract's sample, the pictures'."""
    from include.convert.calibration import calibration_files
    from include.dashboard.pictures import COUNT as PICTURES
    from include.data.coco import open_dataset
    from include.quality.evaluate import default_split
    from include.quality.validate import DEFAULT_IMAGES

    dataset = open_dataset(root, split=default_split(root))
    if decoded:
        ids = dataset.image_ids[:PICTURES]
    else:
        ids = dataset.image_ids[:max(max_images, PICTURES)] if max_images else dataset.image_ids
    return [dataset.image_path(i) for i in ids] + calibration_files(root, DEFAULT_IMAGES)


def images_of(max_images: int | None, *, annotations_only: bool = False,
              evaluated_only: bool = False, decoded: bool = False):
    """The `images` argument of :func:`dataset_copy` for a task that reads the annotations
    only, the evaluated images, or what a check reads."""
    if annotations_only:
        return lambda root: []
    if evaluated_only:
        return lambda root: coco_or_all(root, lambda: evaluated_images(root, max_images))
    return lambda root: coco_or_all(root, lambda: check_images(root, max_images, decoded))
