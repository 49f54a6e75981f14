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

A checkpoint's identity for de-duplication is (folder, marker tag): a checkpoint written again
in the same folder (a new checkpoint.json, a new _SUCCESS) is a new landing.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from typing import Any, Iterable

from include.errors import CheckpointError, StoreError

CHECKPOINT_MARKER = "checkpoint.json"
TFOD_MARKER = "_SUCCESS"
TFOD_FILES = ("pipeline.config", "tflite_graph.pb")
KINDS = ("checkpoint", "tfod")
METADATA_KEYS = ("variant", "qat", "num_classes", "input_size", "depth_multiplier",
                 "fingerprint", "created")


@dataclass(frozen=True)
class Entry:
    """One file of a listing: key relative to the store root, version tag, modification time."""
    key: str
    tag: str = ""                 # S3 ETag (quotes stripped) or local mtime (ISO, microseconds)
    modified: str | None = None   # ISO-8601 UTC, e.g. "2026-01-01T12:00:00.123456Z"
    size: int | None = None


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
        return (self.key, self.marker_tag)


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
# store locations
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreLocation:
    """A checkpoint store: ("file", "/abs/root", "") or ("s3", bucket, "prefix")."""
    scheme: str
    root: str                     # local: absolute folder; s3: the bucket
    prefix: str = ""              # s3 only: key prefix without slashes at either end

    @property
    def uri(self) -> str:
        if self.scheme == "file":
            return "file://" + self.root
        return f"s3://{self.root}/{self.prefix}" if self.prefix else f"s3://{self.root}"

    def uri_of(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.uri.rstrip('/')}/{key}" if key else self.uri

    def s3_key(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.prefix}/{key}" if self.prefix and key else (key or self.prefix)

    def local_path(self, key: str) -> str:
        key = key.strip("/")
        return os.path.join(self.root, *key.split("/")) if key else self.root


def parse_store(store_uri: str) -> StoreLocation:
    """A store URI or local path -> StoreLocation (StoreError naming the setting when bad)."""
    from include.store.store import _split_uri

    scheme, rest = _split_uri(store_uri)
    if scheme == "file":
        return StoreLocation("file", rest.rstrip("/") or "/")
    bucket, _, prefix = rest.partition("/")
    return StoreLocation("s3", bucket, prefix.strip("/"))


def _iso(ts: float | _dt.datetime) -> str:
    if not isinstance(ts, _dt.datetime):
        ts = _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc)
    elif ts.tzinfo is None:
        ts = ts.replace(tzinfo=_dt.timezone.utc)
    return ts.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------------------------------
# listings
# ------------------------------------------------------------------------------------------
def list_local(root: str) -> list[Entry]:
    """Every file under a local folder (hidden names skipped), with mtimes as tags.

    Raises StoreError when the folder does not exist, is not a folder or cannot be read.
    """
    uri = "file://" + root
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
    entries = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for name in sorted(files):
            if name.startswith("."):
                continue
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:      # renamed or removed since the walk saw it
                continue
            key = name if rel_dir == "." else f"{rel_dir}/{name}"
            stamp = _iso(st.st_mtime)
            entries.append(Entry(key, stamp, stamp, st.st_size))
    return entries


def entries_from_s3(contents: Iterable[dict], prefix: str) -> list[Entry]:
    """list_objects_v2 'Contents' rows -> Entries with keys relative to `prefix`."""
    prefix = prefix.strip("/")
    cut = len(prefix) + 1 if prefix else 0
    entries = []
    for row in contents:
        key = row["Key"]
        if prefix and not key.startswith(prefix + "/"):
            continue
        rel = key[cut:]
        if not rel or rel.endswith("/"):
            continue
        modified = row.get("LastModified")
        entries.append(Entry(rel, str(row.get("ETag") or "").strip('"'),
                             _iso(modified) if modified is not None else None, row.get("Size")))
    return entries


async def list_s3_async(client, loc: StoreLocation) -> list[Entry]:
    """Every object under the store's prefix, through an aiobotocore S3 client."""
    params: dict[str, Any] = {"Bucket": loc.root}
    if loc.prefix:
        params["Prefix"] = loc.prefix + "/"
    rows: list[dict] = []
    async for page in client.get_paginator("list_objects_v2").paginate(**params):
        rows.extend(page.get("Contents", []))
    return entries_from_s3(rows, loc.prefix)


def list_s3(client, loc: StoreLocation) -> list[Entry]:
    """The same through a (sync) boto3 S3 client."""
    params: dict[str, Any] = {"Bucket": loc.root}
    if loc.prefix:
        params["Prefix"] = loc.prefix + "/"
    rows: list[dict] = []
    for page in client.get_paginator("list_objects_v2").paginate(**params):
        rows.extend(page.get("Contents", []))
    return entries_from_s3(rows, loc.prefix)


def s3_error(exc: BaseException, uri: str, conn_id: str | None) -> StoreError:
    """A botocore/aiobotocore error on the store -> StoreError naming the problem and the fix."""
    from include.store.store import _conn_hint

    env = "AIRFLOW_CONN_" + (conn_id or "aws_default").upper()
    code = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    name = type(exc).__name__
    if code in ("NoSuchBucket",):
        return StoreError(f"the bucket does not exist ({code}).", where=uri,
                          fix="create the bucket, or correct the bucket name in the store "
                              f"setting; if it exists, check endpoint_url and region_name in "
                              f"the extra of the Airflow connection {conn_id!r} ({env}).")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                "TokenRefreshRequired", "InvalidClientTokenId", "UnrecognizedClientException"):
        return StoreError(f"S3 refused the credentials ({code}).", where=uri,
                          fix=f"set a valid access key and secret in the Airflow connection "
                              f"{conn_id!r} (login/password, or {env}).")
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return StoreError(f"access denied ({code}).", where=uri,
                          fix=f"give the credentials of connection {conn_id!r} s3:ListBucket and "
                              "s3:GetObject on the bucket and prefix.")
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return StoreError(f"no AWS credentials were found ({name}).", where=uri,
                          fix=_conn_hint(conn_id) + ".")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ConnectionClosedError", "ClientConnectorError"):
        return StoreError(f"the S3 endpoint cannot be reached ({name}: {exc}).", where=uri,
                          fix=f"check endpoint_url in the extra of the Airflow connection "
                              f"{conn_id!r} ({env}), and that the S3 server is up and reachable "
                              "from this machine.")
    if name == "AirflowNotFoundException":
        return StoreError(f"the Airflow connection {conn_id!r} is not defined.", where=uri,
                          fix=f"define it (environment variable {env}, or `airflow connections "
                              "add`), or pass conn_id=None to use boto3's default credentials.")
    return StoreError(f"cannot list the store: {name}: {exc}", where=uri,
                      fix=_conn_hint(conn_id) + ".")


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
    if not isinstance(meta, dict):
        raise CheckpointError(f"{CHECKPOINT_MARKER} holds a {type(meta).__name__}, not an object.",
                              where=where, fix="train the checkpoint again with mobiledet train.")
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


def event_payload(loc: StoreLocation, landed: Landed, metadata: dict) -> dict:
    """The TriggerEvent payload for one landed checkpoint (JSON-safe)."""
    return {"checkpoint_uri": loc.uri_of(landed.key),
            "kind": landed.kind,
            "marker": loc.uri_of(landed.marker),
            "marker_etag_or_mtime": landed.marker_tag,
            "metadata": dict(metadata)}


def newest(landed_with_meta: Iterable[tuple[Landed, dict]]) -> tuple[Landed, dict] | None:
    """The newest landed checkpoint by metadata `created` (else the marker's modification time)."""
    def when(item):
        landed, meta = item
        return str(meta.get("created") or landed.modified or "")
    items = list(landed_with_meta)
    return max(items, key=lambda it: (when(it)[:19], str(it[0].modified or ""))) if items else None
