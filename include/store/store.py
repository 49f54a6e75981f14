"""The artifact store: one folder tree of pipeline files, on a local disk or in S3.

Tasks hand each other *store URIs* (``file:///...`` or ``s3://bucket/...``), never local paths:
a task writes its output with :meth:`ArtifactStore.put_file` (or `include.store.transfer.
stage_dir`), returns ``store.uri(key)`` through XCom, and the next task, possibly on another
worker, gets a local copy (`include.store.transfer`).

Locations are parsed by `include.store.uri` and resolved through Airflow's
``ObjectStoragePath`` (fsspec underneath), so the same code serves

* a local folder, given as a plain path or as ``file:///abs/path``;
* ``s3://bucket/prefix`` through an Airflow connection (default ``aws_default``). The connection
  may come from the metadata database, from a secrets backend or from an environment variable
  such as ``AIRFLOW_CONN_AWS_DEFAULT``; an ``endpoint_url`` in its extra points it at MinIO or
  any S3-compatible server. No metadata database is needed when the connection comes from the
  environment, so the CLI works outside Airflow. S3 needs ``s3fs`` (the amazon provider's
  ``[s3fs]`` extra). This is the project's only way to S3.

Writes are atomic for a reader: on a local disk a file is written under a temporary name in the
same folder and renamed into place; an S3 PUT (single or multipart) becomes visible only when
complete. Temporary names contain ``.partial-`` and are never listed. State changes that
several writers race for are conditional: :meth:`ArtifactStore.create_bytes` (O_EXCL / S3
``IfNoneMatch``) and :meth:`ArtifactStore.update_json` (flock / S3 ``IfMatch``).

Airflow is imported only when a store is opened, so importing this module stays cheap.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

from include.atomic import atomic_path, partial_name
from include.errors import StoreError
from include.store.diagnose import storage_errors
from include.store.uri import StoreURI, check_key

DEFAULT_CONN_ID = "aws_default"
PARTIAL_MARK = ".partial-"
LOCK_SUFFIX = ".lock"
CAS_ATTEMPTS = 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Location:
    """A parsed location with the file system that reaches it."""
    fs: Any            # fsspec filesystem
    where: StoreURI
    conn_id: str | None

    @property
    def path(self) -> str:
        return self.where.fs_path

    @property
    def uri(self) -> str:
        return self.where.uri

    @property
    def local(self) -> bool:
        return self.where.local

    def errors(self, action: str):
        return storage_errors(action, self.uri, self.conn_id, self.local)

    def fresh(self, path: str | None = None) -> None:
        # s3fs keeps listings in memory; another worker may have written since.
        if not self.local:
            self.fs.invalidate_cache(path or self.path)


@dataclass(frozen=True)
class Entry:
    """One file of a detailed listing: key relative to the listed root, version tag (S3 ETag,
    or the local modification time), modification time (ISO-8601 UTC) and size."""
    key: str
    tag: str = ""
    modified: str | None = None
    size: int | None = None


def _object_storage_path(uri: str, conn_id: str | None):
    from airflow.sdk import ObjectStoragePath  # lazy: importing Airflow costs seconds

    return ObjectStoragePath(uri, conn_id=conn_id) if conn_id else ObjectStoragePath(uri)


def _filesystem(where: StoreURI, conn_id: str | None, options: dict | None):
    """The fsspec file system of a location: Airflow's own (ObjectStoragePath, cached per
    connection), or with `options` (botocore settings such as timeouts) a file system of its
    own from Airflow's fs registry, which ObjectStoragePath would not pass them to."""
    if options and not where.local:
        from airflow.sdk.io import get_fs

        return get_fs("s3", conn_id, dict(options))
    return _object_storage_path(where.uri, None if where.local else conn_id).fs


def locate(location, conn_id: str | None = DEFAULT_CONN_ID,
           options: dict | None = None) -> Location:
    """Resolve a store URI or a local path to a Location (file system, path, URI)."""
    where = StoreURI.parse(location)
    if where.local:
        return Location(_filesystem(where, None, None), where, None)
    conn = where.conn_id or conn_id
    with storage_errors("open the S3 filesystem", where.uri, conn, local=False):
        fs = _filesystem(where, conn, options)
    return Location(fs, where, conn)


def hidden(name: str) -> bool:
    """Names the store writes for itself and never lists: in-flight temp files, lock files."""
    return PARTIAL_MARK in name or (name.startswith(".") and name.endswith(LOCK_SUFFIX))


def iso_time(ts) -> str:
    """A Unix time or datetime as ISO-8601 UTC with microseconds (listings' `modified`)."""
    if not isinstance(ts, _dt.datetime):
        ts = _dt.datetime.fromtimestamp(float(ts), tz=_dt.timezone.utc)
    elif ts.tzinfo is None:
        ts = ts.replace(tzinfo=_dt.timezone.utc)
    return ts.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def download(loc: Location, local_path: str) -> str:
    """Copy one file at `loc` to `local_path` (temp name, then rename)."""
    local_path = os.path.abspath(os.path.expanduser(local_path))
    with atomic_path(local_path) as tmp, loc.errors("download"):
        if loc.local:
            shutil.copyfile(loc.path, tmp)
        else:
            loc.fresh()
            loc.fs.get_file(loc.path, os.fspath(tmp))
    return local_path


def sha256_of(loc: Location) -> str:
    """SHA-256 of the file at a location (streamed)."""
    digest = hashlib.sha256()
    with loc.errors("read"):
        loc.fresh()
        with loc.fs.open(loc.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path) -> str:
    """SHA-256 of a local file (hex)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------
class ArtifactStore:
    """A folder tree of artifacts addressed by '/'-separated relative keys.

    >>> store = ArtifactStore("/tmp/store")                       # or "s3://bucket/prefix"
    >>> uri = store.put_file("model.tflite", "runs/r1/cpu/int8/model.tflite")

    `options`: botocore settings for an S3 store (e.g. ``{"connect_timeout": 10}``), merged
    into the connection's ``config_kwargs``.
    """

    def __init__(self, base_uri, conn_id: str | None = DEFAULT_CONN_ID,
                 options: dict | None = None):
        where = StoreURI.parse(base_uri)
        self.where = where
        self.scheme = where.scheme
        self.local = where.local
        self.conn_id = None if self.local else (where.conn_id or conn_id or None)
        self._root_path = "" if where.fs_path == "/" else where.fs_path.rstrip("/")
        self.base_uri = where.uri
        with storage_errors("open the store", self.base_uri, self.conn_id, self.local):
            self.fs = _filesystem(where, self.conn_id, options)

    def __repr__(self) -> str:
        conn = f", conn_id={self.conn_id!r}" if self.conn_id else ""
        return f"ArtifactStore({self.base_uri!r}{conn})"

    # -- addressing ---------------------------------------------------------------------------
    def _fs_path(self, key: str) -> str:
        key = check_key(key, allow_empty=True)
        if not key:
            return self._root_path or "/"
        return f"{self._root_path}/{key}"

    def uri(self, key: str) -> str:
        """The URI of `key`: file:///abs/root/key or s3://bucket/prefix/key."""
        return self.where.join(key).uri

    def path(self, key: str):
        """The ObjectStoragePath of `key` (carries the connection id)."""
        return _object_storage_path(self.uri(key), self.conn_id)

    def key_of(self, uri: str) -> str | None:
        """The key of a URI inside this store, or None when the URI lies outside it."""
        try:
            return StoreURI.parse(uri).key_in(self.where)
        except StoreError:
            return None

    def location(self, key: str) -> Location:
        return Location(self.fs, self.where.join(key), self.conn_id)

    def _errors(self, action: str, key: str):
        return storage_errors(action, self.uri(key), self.conn_id, self.local)

    def _fresh(self, fs_path: str) -> None:
        if not self.local:
            self.fs.invalidate_cache(fs_path)

    # -- queries ------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        """True when `key` is a file or a non-empty 'folder' (prefix) in the store."""
        path = self._fs_path(key)
        with self._errors("check", key):
            self._fresh(path)
            return bool(self.fs.exists(path))

    def is_file(self, key: str) -> bool:
        path = self._fs_path(key)
        with self._errors("check", key):
            self._fresh(path)
            return bool(self.fs.isfile(path))

    def size(self, key: str) -> int:
        path = self._fs_path(key)
        with self._errors("read the size of", key):
            self._fresh(path)
            return int(self.fs.size(path))

    def sha256(self, key: str) -> str:
        return sha256_of(self.location(key))

    def sha256_of(self, src: str) -> str:
        """SHA-256 of `src`: a key of this store, a store URI or an absolute local path."""
        return sha256_of(self._resolve(src))

    def _relative(self, item: str) -> str:
        item = item.rstrip("/")
        root = self._root_path
        return item[len(root):].lstrip("/") if root else item.lstrip("/")

    def list(self, prefix: str = "") -> list[str]:
        """Keys of every file under `prefix` (recursive, sorted); in-flight temp files excluded."""
        prefix = check_key(prefix, allow_empty=True, what="prefix")
        path = self._fs_path(prefix)
        with self._errors("list", prefix):
            self._fresh(path)
            if not self.fs.exists(path):
                return []
            found = self.fs.find(path)
        keys = [self._relative(item) for item in found]
        return sorted(k for k in keys if not hidden(k.rpartition("/")[2]))

    def list_entries(self, prefix: str = "") -> list[Entry]:
        """Every file under `prefix` with its tag, modification time and size, keys relative to
        `prefix` (sorted; temp and lock files excluded). Raises StoreError when `prefix` does not
        exist or cannot be listed (a watcher must tell a missing store from an empty one)."""
        prefix = check_key(prefix, allow_empty=True, what="prefix")
        path = self._fs_path(prefix)
        with self._errors("list", prefix):
            self._fresh(path)
            if self.local and not os.path.isdir(path):
                raise FileNotFoundError(path) if not os.path.exists(path) else \
                    NotADirectoryError(path)
            found = self.fs.find(path, detail=True)
        base = path.rstrip("/")
        out = []
        for item, info in found.items():
            rel = item.rstrip("/")[len(base):].lstrip("/") if base != "/" else item.lstrip("/")
            if not rel or info.get("type") == "directory" or hidden(rel.rpartition("/")[2]):
                continue
            if self.local:
                stamp = iso_time(info.get("mtime") or 0)
                out.append(Entry(rel, stamp, stamp, info.get("size")))
            else:
                modified = info.get("LastModified")
                out.append(Entry(rel, str(info.get("ETag") or "").strip('"'),
                                 iso_time(modified) if modified is not None else None,
                                 info.get("size")))
        return sorted(out, key=lambda e: e.key)

    def children(self, prefix: str = "") -> list[tuple[str, bool]]:
        """(name, is_folder) of what lies directly under `prefix` ('' = the root), sorted;
        [] when nothing is there."""
        prefix = check_key(prefix, allow_empty=True, what="prefix")
        path = self._fs_path(prefix)
        with self._errors("list", prefix):
            self._fresh(path)
            try:
                found = self.fs.ls(path, detail=True)
            except (FileNotFoundError, NotADirectoryError):
                return []
        out = []
        for info in found:
            name = str(info["name"]).rstrip("/").rpartition("/")[2]
            if name and not hidden(name) and self._fs_path(prefix).rstrip("/") != \
                    str(info["name"]).rstrip("/"):
                out.append((name, info.get("type") == "directory"))
        return sorted(set(out))

    def modified(self, key: str) -> float:
        """When `key` was last written (Unix time), as the store reports it."""
        path = self._fs_path(key)
        with self._errors("read the time of", key):
            if self.local:
                return os.stat(path).st_mtime
            self._fresh(path)
            stamp = self.fs.info(path).get("LastModified")
            return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp or 0)

    # -- writes -------------------------------------------------------------------------------
    def _write_local(self, key: str, writer) -> str:
        with atomic_path(self._fs_path(key)) as tmp:
            writer(tmp)
        return self.uri(key)

    def put_file(self, local_path: str, key: str) -> str:
        """Upload a local file to `key` (atomically); returns the key's URI."""
        key = check_key(key)
        local_path = os.fspath(local_path)
        if not os.path.isfile(local_path):
            raise StoreError(f"cannot store {local_path!r}: it is not a file.", where=local_path,
                             fix="pass the path of an existing file.")
        with self._errors("write", key):
            if self.local:
                return self._write_local(key, lambda tmp: shutil.copyfile(local_path, tmp))
            self.fs.put_file(local_path, self._fs_path(key))
            self._fresh(self._fs_path(key))
        return self.uri(key)

    def put_bytes(self, data: bytes, key: str) -> str:
        key = check_key(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StoreError(f"put_bytes needs bytes, got {type(data).__name__}.",
                             where=self.uri(key), fix="encode text first, or use write_json.")
        data = bytes(data)

        def _write(tmp):
            with open(tmp, "wb") as fh:
                fh.write(data)

        with self._errors("write", key):
            if self.local:
                return self._write_local(key, _write)
            self.fs.pipe_file(self._fs_path(key), data)
            self._fresh(self._fs_path(key))
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        path = self._fs_path(key)
        with self._errors("read", key):
            self._fresh(path)
            return self.fs.cat_file(path)

    def get_file(self, key: str, local_path: str) -> str:
        """Download `key` to `local_path` (atomically); returns the local path."""
        check_key(key)
        return download(self.location(key), local_path)

    def write_json(self, key: str, obj: Any, *, sort_keys: bool = True) -> str:
        """Write `obj` as indented JSON (strict: no NaN); returns the key's URI."""
        return self.put_bytes(json_bytes(obj, self.uri(key), sort_keys), key)

    def read_json(self, key: str) -> Any:
        return self._parse_json(self.get_bytes(key), key)

    def read_json_if_any(self, key: str) -> Any:
        """The JSON document at `key`, or None when nothing is there."""
        try:
            return self.read_json(key)
        except StoreError:
            if self.is_file(key):
                raise
            return None

    def delete(self, key: str) -> bool:
        """Delete one file; False when it was not there."""
        path = self._fs_path(check_key(key))
        with self._errors("delete", key):
            self._fresh(path)
            if not self.fs.isfile(path):
                return False
            self.fs.rm_file(path)
            self._fresh(path)
        return True

    # -- conditional writes: the only way two writers decide who wins ------------------------
    def create_bytes(self, data: bytes, key: str) -> bool:
        """Write `data` to `key` only if nothing is there yet; True when `key` now holds what
        this call wrote.

        Never check-then-write: on a local disk the file is written under a temporary name and
        hard-linked into place (``link`` fails when the name exists, O_EXCL semantics, and a
        reader never sees half a file); on S3 it is one ``PutObject`` with ``IfNoneMatch="*"``
        (412 when the key exists). Either way the object is then read back: a backend that let
        two creates through still gives exactly one winner, and a PUT that S3 took but whose
        answer was lost (the client retries it and gets 412) still counts as this call's.
        """
        key = check_key(key)
        data = bytes(data)
        with self._errors("create", key):
            final = self._fs_path(key)
            if self.local:
                os.makedirs(os.path.dirname(final), exist_ok=True)
                tmp = partial_name(final)
                try:
                    with open(tmp, "wb") as fh:
                        fh.write(data)
                        fh.flush()
                        os.fsync(fh.fileno())
                    try:
                        os.link(tmp, final)
                    except FileExistsError:
                        return False
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                return True
            try:
                self.fs.pipe_file(final, data, mode="create")
            except FileExistsError:
                pass  # someone's object is there: ours only if its bytes are ours
            finally:
                self._fresh(final)
        return self.get_bytes(key) == data

    def create_json(self, key: str, obj: Any, *, sort_keys: bool = True) -> bool:
        """`create_bytes` for a JSON document (strict JSON, no NaN)."""
        return self.create_bytes(json_bytes(obj, self.uri(key), sort_keys), key)

    def update_json(self, key: str, change, *, sort_keys: bool = True) -> Any:
        """Compare-and-set: ``change(current_or_None)`` returns the new document, or None to
        leave `key` as it is; returns what `key` holds afterwards.

        On a local disk the read-change-write runs under an exclusive ``flock`` on a lock file
        beside the key; on S3 the write is conditional on the ETag that was read (``IfMatch``,
        or ``IfNoneMatch="*"`` for a new key) and read back, and a lost race reads again and
        calls `change` again (at most CAS_ATTEMPTS times).
        """
        key = check_key(key)
        if self.local:
            return self._update_local(key, change, sort_keys)
        bucket, _, obj_key = self._fs_path(key).partition("/")
        for _ in range(CAS_ATTEMPTS):
            path = self._fs_path(key)
            with self._errors("read", key):
                self._fresh(path)
                try:  # ETag first: a body newer than it only makes the conditional put fail
                    etag = self.fs.info(path)["ETag"]
                    current = self._parse_json(self.fs.cat_file(path), key)
                except FileNotFoundError:
                    etag, current = None, None
            new = change(current)
            if new is None:
                return current
            data = json_bytes(new, self.uri(key), sort_keys)
            cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            with self._errors("write", key):
                try:
                    self.fs.call_s3("put_object", Bucket=bucket, Key=obj_key, Body=data, **cond)
                except (FileExistsError, OSError) as exc:
                    if not _precondition_failed(exc):
                        raise
                    continue  # someone else wrote first: read again
                finally:
                    self._fresh(self._fs_path(key))
                if self.get_bytes(key) == data:
                    return new
        raise StoreError(f"could not update {key} after {CAS_ATTEMPTS} attempts: other writers "
                         "kept changing it.", where=self.uri(key),
                         fix="retry the task; if it keeps happening, fewer runs should write "
                             "this key at once.")

    def _update_local(self, key: str, change, sort_keys: bool) -> Any:
        import fcntl

        final = self._fs_path(key)
        head, _, name = final.rpartition("/")
        os.makedirs(head, exist_ok=True)
        with self._errors("update", key), open(f"{head}/.{name}{LOCK_SUFFIX}", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                current = self.read_json(key) if os.path.isfile(final) else None
                new = change(current)
                if new is None:
                    return current
                self.put_bytes(json_bytes(new, self.uri(key), sort_keys), key)
                return new
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _parse_json(self, data: bytes, key: str) -> Any:
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise StoreError(f"is not valid JSON ({exc}).", where=self.uri(key),
                             fix="the file is damaged or was not written by the pipeline; re-run "
                                 "the stage that writes it.") from exc

    def copy(self, src: str, dst_key: str) -> str:
        """Copy `src` (a key of this store, a store URI, or an absolute local path) to `dst_key`.

        Same-bucket S3 copies happen on the server; every other combination streams the bytes.
        Returns the URI of `dst_key`.
        """
        dst_key = check_key(dst_key)
        loc = self._resolve(src)
        if loc.local:
            if not os.path.isfile(loc.path):
                raise StoreError(f"cannot copy {loc.uri}: no such file.", where=loc.uri,
                                 fix="check the source path or URI.")
            return self.put_file(loc.path, dst_key)
        if self.local:
            download(loc, self._fs_path(dst_key))
            return self.uri(dst_key)
        if loc.fs is self.fs:
            with loc.errors("copy"):
                loc.fresh()
                self.fs.copy(loc.path, self._fs_path(dst_key))
                self._fresh(self._fs_path(dst_key))
            return self.uri(dst_key)
        with tempfile.TemporaryDirectory(prefix="mobiledet-copy-") as tmp:
            local = download(loc, os.path.join(tmp, "blob"))
            return self.put_file(local, dst_key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every file under `prefix`; returns how many were deleted."""
        prefix = check_key(prefix, allow_empty=True, what="prefix")
        if not prefix:
            raise StoreError("refusing to delete the whole store (empty prefix).",
                             where=self.base_uri, fix="name the folder to delete.")
        keys = self.list(prefix)
        path = self._fs_path(prefix)
        with self._errors("delete", prefix):
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
            self._fresh(path)
        return len(keys)

    def _resolve(self, src: str) -> Location:
        text = os.fspath(src)
        if "://" in text:
            return locate(text, self.conn_id or DEFAULT_CONN_ID)
        if os.path.isabs(text):
            return locate(text)
        return self.location(check_key(text))


def json_bytes(obj: Any, where: str, sort_keys: bool = True) -> bytes:
    """`obj` as the store writes JSON: indented, strict (no NaN), newline-terminated."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=sort_keys, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot write JSON: {exc}", where=where,
                         fix="pass only dicts, lists, strings, finite numbers, booleans and "
                             "None (convert numpy values with float()/int()).") from exc
    return (text + "\n").encode("utf-8")


def _precondition_failed(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, FileExistsError) or "PreconditionFailed" in text or \
        "pre-conditions you specified did not hold" in text or "412" in text


def open_store(uri_or_path, conn_id: str | None = DEFAULT_CONN_ID) -> ArtifactStore:
    """Open a store from a URI, a local path, or return an ArtifactStore unchanged."""
    if isinstance(uri_or_path, ArtifactStore):
        return uri_or_path
    return ArtifactStore(os.fspath(uri_or_path), conn_id=conn_id)
