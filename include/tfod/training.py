"""TFOD training folders as a source of checkpoints: which steps have landed, and their identity.

A TFOD (TF1) training folder (`model_dir` of model_main.py / train.py) holds

    pipeline.config                       the training config
    checkpoint                            the state file: model_checkpoint_path: "model.ckpt-N"
                                          and all_model_checkpoint_paths: "model.ckpt-M" ...
    model.ckpt-N.index                    names, dtypes, shapes, and where each tensor is
    model.ckpt-N.data-00000-of-00001      the tensors (one file per shard)
    model.ckpt-N.meta                     the graph (not needed)
    graph.pbtxt, events.out.tfevents.*, eval_0/ ...

**The landing rule.** A step N of such a folder has landed when
1. the `checkpoint` state file names `model.ckpt-N` (as model_checkpoint_path or in
   all_model_checkpoint_paths; an absolute path from the training machine counts by its file
   name), and
2. `model.ckpt-N.index` is complete: a whole, readable table (its footer, block checksums and
   bundle header check out), and
3. every data shard the index's header announces (`.data-0000i-of-0000S`, i < S) is there and
   at least as long as the end of the last tensor the index places in it.
A step named by the state file whose files are gone (deleted by keep_checkpoint_max) or not all
there yet (an upload still going) is simply not landed yet: not an error. Files of steps the
state file does not name are ignored. `pipeline.config` must be in the folder.

**Identity.** Each landed step is its own checkpoint: `fingerprint` = sha256 over the step
number, the sha256 of the index file and the sha256 of pipeline.config (the index holds every
tensor's checksum, so it stands for the data); `created` = the newest modification time of the
step's index and data files (UTC, seconds). A job that keeps training lands each new step
once, with a new fingerprint; listing the same step again gives the same identity.

Everything here is pure Python (no TensorFlow) and works on a *listing* plus a `read(key)`
callable, so the landing watcher can use it on S3 as on a local folder.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from include.errors import CheckpointError, MobiledetError
from include.tfod.checkpoint_index import data_file_name, parse_index
from include.tfod.identity import iso_utc, step_fingerprint

STATE_FILE = "checkpoint"
CONFIG_FILE = "pipeline.config"
_STEP_RE = re.compile(r"^(?P<prefix>.+-(?P<step>\d+))\.index$")
_STATE_RE = re.compile(r'^\s*(model_checkpoint_path|all_model_checkpoint_paths)\s*:\s*"(.*)"\s*$')
_LABEL_MAP_RE = re.compile(r'label_map_path\s*:\s*"([^"]*)"')
LABEL_MAP_NAMES = ("label_map.pbtxt", "labelmap.pbtxt")


@dataclass(frozen=True)
class Step:
    """One landed step of a TFOD training folder."""
    step: int                      # the global step N
    prefix: str                    # key of the checkpoint prefix, e.g. "job/model.ckpt-5000"
    folder: str                    # key of the training folder ("" = the listing's root)
    index_key: str
    data_keys: tuple
    config_key: str
    fingerprint: str
    created: str                   # ISO-8601 UTC, seconds: "2026-01-01T12:00:00Z"
    size: int                      # bytes of the index and data files
    label_key: str | None = None   # the label map beside pipeline.config, when there is one

    @property
    def files(self) -> tuple:
        """Keys to copy to import this step elsewhere (index, data, pipeline.config and the
        label map the config names, when it is in the folder)."""
        return (self.index_key, *self.data_keys, self.config_key,
                *((self.label_key,) if self.label_key else ()))

    def to_dict(self) -> dict:
        return {"step": self.step, "prefix": self.prefix, "folder": self.folder,
                "index_key": self.index_key, "data_keys": list(self.data_keys),
                "config_key": self.config_key, "label_key": self.label_key,
                "fingerprint": self.fingerprint, "created": self.created, "size": self.size}


def _entry(item) -> tuple:
    """A listing item -> (key, size, mtime). Items: (key, size, mtime) tuples, dicts with
    key/size/modified (or mtime), or objects with .key/.size/.modified (the landing Entry)."""
    if isinstance(item, dict):
        return (item["key"], item.get("size"), item.get("modified", item.get("mtime")))
    if isinstance(item, (tuple, list)):
        key, size, mtime = (list(item) + [None, None])[:3]
        return key, size, mtime
    return item.key, getattr(item, "size", None), getattr(item, "modified", None)


def _folders(listing: Iterable) -> dict:
    """{folder key: {file name: (key, size, mtime)}} (direct children only; hidden skipped)."""
    out: dict = {}
    for item in listing:
        key, size, mtime = _entry(item)
        key = key.strip("/")
        if not key or any(p.startswith(".") for p in key.split("/")):
            continue
        folder, _, name = key.rpartition("/")
        out.setdefault(folder, {})[name] = (key, size, mtime)
    return out


def training_folders(listing: Iterable) -> list:
    """Keys of the folders in a listing that are TFOD training folders: a `checkpoint` state
    file, pipeline.config and at least one model.ckpt-N.index in the same folder."""
    return sorted(folder for folder, files in _folders(listing).items()
                  if STATE_FILE in files and CONFIG_FILE in files
                  and any(_STEP_RE.match(n) for n in files))


def is_training_dir(path) -> bool:
    """Whether a local folder is a TFOD training folder (see training_folders)."""
    path = Path(path)
    if not path.is_dir():
        return False
    names = {p.name for p in path.iterdir() if p.is_file()}
    return (STATE_FILE in names and CONFIG_FILE in names
            and any(_STEP_RE.match(n) for n in names))


def named_prefixes(state_text: str) -> list:
    """The checkpoint file names a `checkpoint` state file names, newest (model_checkpoint_path)
    last; directories (of the training machine) are dropped."""
    names = []
    newest = None
    for line in state_text.splitlines():
        m = _STATE_RE.match(line)
        if not m:
            continue
        name = re.split(r"[\\/]", m.group(2).encode().decode("unicode_escape"))[-1]
        if m.group(1) == "model_checkpoint_path":
            newest = name
        elif name not in names:
            names.append(name)
    if newest:
        names = [n for n in names if n != newest] + [newest]
    return names


def complete_steps(listing: Iterable, read: Callable[[str], bytes], folder: str = "") -> list:
    """The landed steps of one training folder, oldest first (the module docstring's rule).

    listing: the files under the folder (or a whole store: `folder` picks the training folder;
    keys relative to the listing's root, '/'-separated), each (key, size, mtime) or an object /
    dict with key, size, modified. read(key) -> bytes reads a small file (the state file,
    pipeline.config, index files; an OSError or the project's StoreError when a file has gone
    counts as not landed). Steps not (yet) complete are left out; nothing raises for them.
    Returns [] when the folder has no state file or no pipeline.config.
    """
    folder = folder.strip("/")
    files = _folders(listing).get(folder, {})
    if STATE_FILE not in files or CONFIG_FILE not in files:
        return []
    try:
        state = read(files[STATE_FILE][0]).decode("utf-8", "replace")
        config_bytes = read(files[CONFIG_FILE][0])
    except (OSError, MobiledetError):
        return []   # removed or rewritten between the listing and the read: next time
    named = [re.split(r"[\\/]", p)[-1] for p in
             _LABEL_MAP_RE.findall(config_bytes.decode("utf-8", "replace"))]
    label = next((files[n][0] for n in (*named, *LABEL_MAP_NAMES) if n in files), None)
    steps = []
    for name in named_prefixes(state):
        step = _complete_step(files, folder, name, read, config_bytes, label)
        if step is not None:
            steps.append(step)
    return sorted(steps, key=lambda s: s.step)


def _complete_step(files: dict, folder: str, name: str, read, config_bytes,
                   label_key=None) -> Step | None:
    m = _STEP_RE.match(name + ".index")
    if not m or name + ".index" not in files:
        return None
    index_key, index_size, index_mtime = files[name + ".index"]
    try:
        data = read(index_key)
        index = parse_index(data, index_key)
    except (OSError, MobiledetError):
        return None                   # gone, or still being written (a store's read error too)
    needed = index.required_shard_sizes()
    data_keys, mtimes, total = [], [index_mtime], len(data)
    for shard in range(index.num_shards):
        shard_name = data_file_name(name, shard, index.num_shards)
        if shard_name not in files:
            return None
        key, size, mtime = files[shard_name]
        if size is None or int(size) < needed.get(shard, 0):
            return None
        data_keys.append(key)
        mtimes.append(mtime)
        total += int(size)
    stamps = [iso_utc(t) for t in mtimes if t is not None]
    prefix = f"{folder}/{name}" if folder else name
    return Step(step=int(m.group("step")), prefix=prefix, folder=folder, index_key=index_key,
                data_keys=tuple(data_keys),
                config_key=f"{folder}/{CONFIG_FILE}" if folder else CONFIG_FILE,
                fingerprint=step_fingerprint(int(m.group("step")), data, config_bytes),
                created=max(stamps) if stamps else None, size=total, label_key=label_key)


def local_listing(folder) -> list:
    """(name, size, mtime) of the files directly in a local folder."""
    out = []
    with os.scandir(folder) as it:
        for e in it:
            if e.is_file():
                st = e.stat()
                out.append((e.name, st.st_size, st.st_mtime))
    return out


def steps_of(folder) -> list:
    """The landed steps of a local training folder, oldest first."""
    folder = Path(folder)
    return complete_steps(local_listing(folder), lambda key: (folder / key).read_bytes())


def newest_step(folder) -> Step | None:
    """The newest landed step of a local training folder, or None."""
    steps = steps_of(folder)
    return steps[-1] if steps else None


def import_training_dir(folder, out, step: int | None = None, *, identity: Step | None = None,
                        labels=None) -> dict:
    """Import one step of a local TFOD training folder into a checkpoint folder `out` (written
    as `mobiledet train` writes one), with the pipeline.config beside it.

    step: the global step to import (default: the newest landed one). identity: the Step the
    landing watcher saw (e.g. in the store, before the files were copied here): its
    fingerprint and created time become the checkpoint's, so the conversion keeps the identity
    the ledger recorded. Returns the import report (include.tfod.importer.import_tfod).
    """
    from include.tfod.importer import import_tfod

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError("the TFOD training folder does not exist.", where=str(folder),
                              fix="pass the folder TFOD trained into (it holds pipeline.config, "
                                  "the `checkpoint` file and model.ckpt-N.* files).")
    config = folder / CONFIG_FILE
    steps = steps_of(folder)
    if step is None and identity is not None:
        step = identity.step
    if step is None:
        if not steps:
            named = [p.name for p in folder.glob("model.ckpt-*.index")]
            raise CheckpointError(
                "no complete step in the training folder: the `checkpoint` state file names no "
                "model.ckpt-N whose .index and .data files are all there"
                + (f" (found {', '.join(sorted(named)[:5])})" if named else "") + ".",
                where=str(folder),
                fix="wait until training writes its first checkpoint, or copy the `checkpoint` "
                    "file together with the model.ckpt-N.* files it names.")
        chosen = steps[-1]
    else:
        chosen = next((s for s in steps if s.step == int(step)), None)
        if chosen is None and not (folder / f"model.ckpt-{int(step)}.index").is_file():
            have = ", ".join(str(s.step) for s in steps) or "none"
            raise CheckpointError(f"step {int(step)} is not in the training folder (complete "
                                  f"steps: {have}).", where=str(folder),
                                  fix="pass one of the complete steps, or leave the step out "
                                      "for the newest.")
    prefix = folder / (Path(chosen.prefix).name if chosen else f"model.ckpt-{int(step)}")
    ident = identity or chosen
    return import_tfod(prefix, config, out, labels=labels,
                       identity=(ident.fingerprint, ident.created) if ident else None)
