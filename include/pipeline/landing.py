"""Which checkpoints have *landed* in a checkpoint store (a local folder or an s3:// prefix).

Airflow-free core of the checkpoint-landing watcher (`operators.triggers.CheckpointLandingTrigger`)
and of the retrain DAG's "newest checkpoint" lookup. Everything here works on a *listing*: the
files under the store, as keys relative to the store root with a version tag (S3 ETag, or the
local modification time) and a modification time.

A checkpoint is a sub-folder of the store, at any depth. It counts as **landed** when:

* ``checkpoint.json`` is in it (kind ``"checkpoint"``). `mobiledet train` and the retrain DAG
  write it last: locally the folder is renamed into place complete, on S3 every other file is
  uploaded first. The marker is checkpoint.json itself.
* or it is a TFOD bundle (kind ``"tfod"``): ``pipeline.config`` and ``tflite_graph.pb`` are in
  it AND the marker ``_SUCCESS`` is. **The _SUCCESS convention:** a writer uploads every file of
  the bundle first, then an empty object named ``_SUCCESS`` (as Hadoop/Spark jobs do). A bundle
  with both files but no ``_SUCCESS`` is *not* landed: its upload may still be going (S3 has no
  folder rename, so nothing else tells a reader that the last file is in).

Files and folders whose name starts with ``.`` (the staging names ``.NAME.partial-*`` of
`include.atomic.staged_dir` and of the artifact store, ``.NAME.old-*``) and
S3 "folder" placeholder keys (ending in ``/``) are ignored, so a folder being written is never
seen half-done.

* or it is a step of a TFOD (TF1) training folder (kind ``"tfod-training"``): the folder's
  ``checkpoint`` state file names ``model.ckpt-N`` and the step's index and data files are
  complete (`include.tfod.training`'s landing rule). Each landed step is its own checkpoint,
  named by its prefix (``folder/model.ckpt-N``); its marker is the step's index file and its
  tag the step's fingerprint. A training job that keeps going lands one checkpoint per step.

A checkpoint's identity for de-duplication is (folder, marker tag, marker modification time): a
checkpoint written again in the same folder (a new checkpoint.json, a new _SUCCESS, or the same
bytes uploaded again) is a new landing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterable

from include.errors import CheckpointError, StoreError
from include.store.store import Entry
from include.store.uri import StoreURI

CHECKPOINT_MARKER = "checkpoint.json"
TFOD_MARKER = "_SUCCESS"
TFOD_FILES = ("pipeline.config", "tflite_graph.pb")
KINDS = ("checkpoint", "tfod", "tfod-training")
METADATA_KEYS = ("variant", "qat", "num_classes", "input_size", "depth_multiplier",
                 "fingerprint", "created")


@dataclass(frozen=True)
class Landed:
    """A landed checkpoint: its folder key, kind, marker key and the marker's tag/mtime."""
    key: str                      # folder, relative to the store root ("" = the root itself)
    kind: str                     # "checkpoint" or "tfod"
    marker: str                   # key of checkpoint.json or _SUCCESS
    marker_tag: str
    modified: str | None

    @property
    def identity(self) -> tuple[str, str]:
        """(folder, landing tag): the ledger's own landing identity, so a folder copied again
        with the same bytes (same S3 ETag, a new modification time) is a new landing for the
        watcher too, as the ledger and the error's fix ("copy the folder again") expect."""
        return (self.key, landing_tag(self))


def _as_entry(item) -> Entry:
    if isinstance(item, Entry):
        return item
    if isinstance(item, str):
        return Entry(item)
    if isinstance(item, dict):
        return Entry(item["key"], str(item.get("tag") or ""), item.get("modified"),
                     item.get("size"))
    return Entry(*item)


def _hidden(key: str) -> bool:
    return any(part.startswith(".") or part == "" for part in key.split("/"))


def landed_checkpoints(listing: Iterable) -> list[Landed]:
    """The landed checkpoints of a listing, sorted by folder key.

    `listing` holds `Entry`s, (key, tag[, modified[, size]]) tuples, {"key", "tag", ...} dicts
    or bare keys ('/'-separated, relative to the store root).
    """
    folders: dict[str, dict[str, Entry]] = {}
    for item in listing:
        entry = _as_entry(item)
        key = entry.key.strip("/") if not entry.key.endswith("/") else ""
        if not key or _hidden(key):
            continue
        folder, _, name = key.rpartition("/")
        folders.setdefault(folder, {})[name] = entry
    landed = []
    for folder, files in sorted(folders.items()):
        if CHECKPOINT_MARKER in files:
            kind, marker = "checkpoint", files[CHECKPOINT_MARKER]
        elif TFOD_MARKER in files and all(f in files for f in TFOD_FILES):
            kind, marker = "tfod", files[TFOD_MARKER]
        else:
            continue
        landed.append(Landed(folder, kind, marker.key.strip("/"), marker.tag, marker.modified))
    return landed


def landed_steps(listing: Iterable, read) -> list[Landed]:
    """The landed steps of the TFOD training folders in a listing, as landings (key = the
    step's prefix, marker = its index file, tag = its fingerprint, modified = its time).
    read(key) -> bytes reads a small file (state file, pipeline.config, index files)."""
    from include.tfod.training import complete_steps, training_folders

    entries = [_as_entry(item) for item in listing]
    out = []
    for folder in training_folders(entries):
        for step in complete_steps(entries, read, folder):
            out.append(Landed(step.prefix, "tfod-training", step.index_key, step.fingerprint,
                              step.created))
    return out


def pending_bundles(listing: Iterable) -> list[str]:
    """Folders holding a TFOD bundle's files but no _SUCCESS yet (not landed: still uploading)."""
    folders: dict[str, set[str]] = {}
    for item in listing:
        key = _as_entry(item).key.strip("/")
        if key and not _hidden(key):
            folder, _, name = key.rpartition("/")
            folders.setdefault(folder, set()).add(name)
    return sorted(f for f, names in folders.items()
                  if all(n in names for n in TFOD_FILES) and TFOD_MARKER not in names
                  and CHECKPOINT_MARKER not in names)


# ------------------------------------------------------------------------------------------
# listing a checkpoint store
# ------------------------------------------------------------------------------------------
def check_local_store(where: StoreURI) -> None:
    """A local checkpoint store must be a readable folder: StoreError naming the fix."""
    root, uri = where.path, where.uri
    if not os.path.exists(root):
        raise StoreError("the checkpoint store folder does not exist.", where=uri,
                         fix=f"create it (mkdir -p {root}) or point the store setting "
                             "(store_uri / MOBILEDET_CHECKPOINT_STORE) at the folder the "
                             "trainers write to.")
    if not os.path.isdir(root):
        raise StoreError("the checkpoint store is a file, not a folder.", where=uri,
                         fix="point the store setting at the folder that holds the checkpoint "
                             "folders.")
    if not os.access(root, os.R_OK | os.X_OK):
        raise StoreError("the checkpoint store folder cannot be read (permission denied).",
                         where=uri, fix="make it readable by the user running the Airflow "
                                        "triggerer and workers.")


# ------------------------------------------------------------------------------------------
# metadata and event payloads
# ------------------------------------------------------------------------------------------
def checkpoint_metadata(data: bytes, where: str) -> dict:
    """checkpoint.json bytes -> {variant, qat, num_classes, input_size, depth_multiplier,
    fingerprint, created}. CheckpointError when the file is not a JSON object."""
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{CHECKPOINT_MARKER} is not valid JSON ({exc}); it is still being "
                              "written, or damaged.", where=where,
                              fix="write checkpoint.json last and in one go (mobiledet train "
                                  "does), or train the checkpoint again.") from None
    from include.mobiledet.checkpoint_meta import validate_meta

    validate_meta(meta, where)   # a wrong type, a missing fingerprint: named, with the fix
    return {k: meta.get(k) for k in METADATA_KEYS}


def tfod_metadata(text: str, modified: str | None = None) -> dict:
    """What a TFOD pipeline.config gives cheaply (no TensorFlow): variant, qat, num_classes,
    input_size, depth_multiplier; fingerprint None; created = the marker's time. {} when the
    file cannot be read (the conversion DAG reports such files with the full reader)."""
    from include.convert import tfod

    try:
        raw = tfod.parse_text_proto(text)
        fe_type = tfod.first(raw, "model.ssd.feature_extractor.type")
        variant = tfod.FEATURE_EXTRACTORS.get(str(fe_type))
        size = tfod.first(raw, "model.ssd.image_resizer.fixed_shape_resizer.height", None)
        return {"variant": variant,
                "qat": tfod.has(raw, "graph_rewriter.quantization"),
                "num_classes": tfod.first(raw, "model.ssd.num_classes", None),
                "input_size": size,
                "depth_multiplier": float(tfod.first(
                    raw, "model.ssd.feature_extractor.depth_multiplier", 1.0)),
                "fingerprint": None,
                "created": modified}
    except Exception:  # any parse problem: report the landing without metadata
        return {}


def landing_tag(landed: Landed) -> str:
    """What tells two landings at one place apart: the marker's tag (S3 ETag, local mtime)
    and its modification time (an S3 object written again with the same bytes keeps its ETag)."""
    return f"{landed.marker_tag}|{landed.modified or ''}"


def event_payload(where: StoreURI, landed: Landed, metadata: dict) -> dict:
    """The TriggerEvent payload for one landed checkpoint (JSON-safe)."""
    return {"checkpoint_uri": where.join(landed.key).uri,
            "kind": landed.kind,
            "marker": where.join(landed.marker).uri,
            "marker_etag_or_mtime": landed.marker_tag,
            "metadata": dict(metadata)}


def newest(landed_with_meta: Iterable[tuple[Landed, dict]]) -> tuple[Landed, dict] | None:
    """The newest landed checkpoint by metadata `created` (else the marker's modification time)."""
    def when(item):
        landed, meta = item
        return str(meta.get("created") or landed.modified or "")
    items = list(landed_with_meta)
    return max(items, key=lambda it: (when(it)[:19], str(it[0].modified or ""))) if items else None
