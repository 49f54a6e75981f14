"""The artifact store: one folder tree of pipeline files, on a local disk or in S3.

Tasks hand each other *store URIs* (``file:///...`` or ``s3://bucket/...``), never local paths:
a task writes its output with :meth:`ArtifactStore.put_file` (or :func:`stage_dir`), returns
``store.uri(key)`` through XCom, and the next task, possibly on another worker, calls
:func:`materialize` to get a local copy.

Paths are resolved through Airflow's ``ObjectStoragePath`` (fsspec underneath), so the same code
serves

* a local folder, given as a plain path (``~`` expanded, relative paths resolved against the
  current working directory) or as ``file:///abs/path``;
* ``s3://bucket/prefix`` through an Airflow connection (default ``aws_default``). The connection
  may come from the metadata database, from a secrets backend or from an environment variable
  such as ``AIRFLOW_CONN_AWS_DEFAULT``; an ``endpoint_url`` in its extra points it at MinIO or
  any S3-compatible server. No metadata database is needed when the connection comes from the
  environment, so the CLI works outside Airflow. S3 needs ``s3fs`` (the amazon provider's
  ``[s3fs]`` extra).

Writes are atomic for a reader: on a local disk a file is written under a temporary name in the
same folder and renamed into place; an S3 PUT (single or multipart) becomes visible only when
complete. Temporary names contain ``.partial-`` and are never listed.

Airflow is imported only when a store is opened, so importing this module stays cheap.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from include.atomic import atomic_path, partial_name, staged_dir
from include.errors import StoreError

DEFAULT_CONN_ID = "aws_default"
PARTIAL_MARK = ".partial-"
LOCK_SUFFIX = ".lock"
CAS_ATTEMPTS = 20
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# Locations: (filesystem, fs path, URI) for a store key, a store URI or a local path
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Loc:
    fs: Any            # fsspec filesystem
    path: str          # the path as the filesystem spells it ("/abs/x" or "bucket/key")
    uri: str           # the URI a person or another task uses ("file:///abs/x", "s3://bucket/key")
    local: bool
    conn_id: str | None


def _conn_hint(conn_id: str | None) -> str:
    if not conn_id:
        return ("no Airflow connection was given, so boto3's default credentials were used; "
                "pass a conn_id or set AWS credentials")
    env = "AIRFLOW_CONN_" + conn_id.upper()
    return (f"check the Airflow connection {conn_id!r} (environment variable {env} or the "
            "Airflow connections list): endpoint_url and region_name in its extra, login/password "
            "(access key / secret), and that the bucket exists")


@contextmanager
def _storage_errors(action: str, uri: str, conn_id: str | None = None, local: bool = True):
    """Turn filesystem and boto errors into StoreError naming the URI and the fix."""
    try:
        yield
    except StoreError:
        raise
    except FileNotFoundError as exc:
        raise StoreError(f"cannot {action}: nothing exists at {uri} ({exc}).", where=uri,
                         fix="check the key or URI; it must name a file written earlier by the "
                             "pipeline." + ("" if local else " Also " + _conn_hint(conn_id) + "."))
    except PermissionError as exc:
        raise StoreError(f"cannot {action}: permission denied ({exc}).", where=uri,
                         fix=("make the folder writable by the user running the pipeline."
                              if local else _conn_hint(conn_id) + "."))
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot {action}: {type(exc).__name__}: {exc}", where=uri,
                         fix=("check that the disk has space and the path is a folder."
                              if local else _conn_hint(conn_id) + "."))
    except Exception as exc:  # botocore / aiobotocore errors are not OSErrors
        if type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "s3fs"):
            raise StoreError(f"cannot {action}: {type(exc).__name__}: {exc}", where=uri,
                             fix=_conn_hint(conn_id) + ".")
        raise


def _object_storage_path(uri: str, conn_id: str | None):
    from airflow.sdk import ObjectStoragePath  # lazy: importing Airflow costs seconds

    return ObjectStoragePath(uri, conn_id=conn_id) if conn_id else ObjectStoragePath(uri)


def _split_uri(uri_or_path: str) -> tuple[str, str]:
    """Return (scheme, rest): ("file", "/abs/path") or ("s3", "bucket/key")."""
    text = os.fspath(uri_or_path)
    if not isinstance(text, str) or not text.strip():
        raise StoreError("an empty store location was given.", where="store URI",
                         fix="give a local folder, file:///abs/path or s3://bucket/prefix.")
    text = text.strip()
    if "://" not in text:
        return "file", os.path.abspath(os.path.expanduser(text))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StoreError(f"{text!r} is not an absolute file URI (host part {parts.netloc!r}).",
                             where=text, fix="write file:///absolute/path (three slashes), or a "
                                             "plain path.")
        return "file", os.path.abspath(parts.path)
    if scheme in ("s3", "s3a", "s3n"):
        bucket = parts.netloc.rpartition("@")[2]
        if not bucket:
            raise StoreError(f"{text!r} names no bucket.", where=text,
                             fix="write s3://BUCKET/optional/prefix.")
        key = parts.path.strip("/")
        if any(p in (".", "..") for p in key.split("/")):
            raise StoreError(f"{text!r} has a '.' or '..' part; S3 keeps such keys as written, "
                             "so the path would not mean what it says.", where=text,
                             fix="write the key without '.' and '..' parts.")
        return "s3", f"{bucket}/{key}" if key else bucket
    raise StoreError(f"unsupported storage scheme {scheme!r} in {text!r}; supported: a local "
                     f"path, file:// and s3://.", where=text,
                     fix="use a local folder or an s3://bucket/prefix (MinIO works through s3:// "
                         "with endpoint_url in the connection's extra).")


def _conn_from_uri(uri: str, conn_id: str | None) -> str | None:
    """A URI may carry its connection the Airflow way: s3://CONN_ID@bucket/key."""
    if "://" in uri:
        netloc = urlsplit(uri).netloc
        if "@" in netloc:
            return netloc.rpartition("@")[0] or conn_id
    return conn_id


def locate(uri_or_path: str, conn_id: str | None = DEFAULT_CONN_ID) -> _Loc:
    """Resolve a store URI or a local path to a location (filesystem, path, URI)."""
    scheme, rest = _split_uri(uri_or_path)
    if scheme == "file":
        osp = _object_storage_path("file://" + rest, None)
        return _Loc(osp.fs, rest, "file://" + rest, True, None)
    conn = _conn_from_uri(str(uri_or_path), conn_id)
    with _storage_errors("open the S3 filesystem", f"s3://{rest}", conn, local=False):
        osp = _object_storage_path(f"s3://{rest}", conn)
        fs = osp.fs
    return _Loc(fs, rest, f"s3://{rest}", False, conn)


def _check_key(key: str, *, allow_empty: bool = False, what: str = "key") -> str:
    if not isinstance(key, str):
        raise StoreError(f"a store {what} must be a string, got {type(key).__name__}.",
                         where=f"store {what}", fix="pass a '/'-separated relative path.")
    norm = key.strip("/") if allow_empty else key
    if norm == "" and allow_empty:
        return ""
    parts = norm.split("/")
    if norm.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in norm:
        raise StoreError(f"invalid store {what} {key!r}: it must be a relative '/'-separated path "
                         "without empty, '.' or '..' parts.", where=f"store {what}",
                         fix="use a path such as 'runs/<run_id>/cpu/int8/model.tflite'.")
    return norm


def _hidden(name: str) -> bool:
    """Names the store writes for itself and never lists: in-flight temp files, lock files."""
    return PARTIAL_MARK in name or (name.startswith(".") and name.endswith(LOCK_SUFFIX))


def _download_atomic(loc: _Loc, local_path: str) -> str:
    """Copy one file at `loc` to `local_path` (temp name, then rename)."""
    local_path = os.path.abspath(os.path.expanduser(local_path))
    with atomic_path(local_path) as tmp, \
            _storage_errors("download", loc.uri, loc.conn_id, loc.local):
        if loc.local:
            shutil.copyfile(loc.path, tmp)
        else:
            loc.fs.invalidate_cache(loc.path)
            loc.fs.get_file(loc.path, os.fspath(tmp))
    return local_path


def _sha256_of(loc: _Loc) -> str:
    digest = hashlib.sha256()
    with _storage_errors("read", loc.uri, loc.conn_id, loc.local):
        if not loc.local:
            loc.fs.invalidate_cache(loc.path)
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
    >>> local = materialize(uri, "/tmp/work")                     # on any worker
    """

    def __init__(self, base_uri: str, conn_id: str | None = DEFAULT_CONN_ID):
        scheme, rest = _split_uri(base_uri)
        self.scheme = scheme
        self.local = scheme == "file"
        self.conn_id = None if self.local else (conn_id or None)
        self._root_path = rest.rstrip("/") if rest != "/" else ""
        self.base_uri = ("file://" if self.local else "s3://") + rest
        with _storage_errors("open the store", self.base_uri, self.conn_id, self.local):
            self._root = _object_storage_path(self.base_uri, self.conn_id)
            self.fs = self._root.fs

    def __repr__(self) -> str:
        conn = f", conn_id={self.conn_id!r}" if self.conn_id else ""
        return f"ArtifactStore({self.base_uri!r}{conn})"

    # -- addressing ---------------------------------------------------------------------------
    def _fs_path(self, key: str) -> str:
        key = _check_key(key, allow_empty=True)
        if not key:
            return self._root_path or "/"
        return f"{self._root_path}/{key}"

    def uri(self, key: str) -> str:
        """The URI of `key`: file:///abs/root/key or s3://bucket/prefix/key."""
        key = _check_key(key, allow_empty=True)
        return f"{self.base_uri.rstrip('/')}/{key}" if key else self.base_uri

    def path(self, key: str):
        """The ObjectStoragePath of `key` (carries the connection id)."""
        return _object_storage_path(self.uri(key), self.conn_id)

    def key_of(self, uri: str) -> str | None:
        """The key of a URI inside this store, or None when the URI lies outside it."""
        try:
            scheme, rest = _split_uri(uri)
        except StoreError:
            return None
        if scheme != self.scheme:
            return None
        root = self._root_path
        if rest == root:
            return ""
        if rest.startswith(root + "/") or (self.local and root == ""):
            return rest[len(root):].lstrip("/")
        return None

    def _loc(self, key: str) -> _Loc:
        return _Loc(self.fs, self._fs_path(key), self.uri(key), self.local, self.conn_id)

    def _errors(self, action: str, key: str):
        return _storage_errors(action, self.uri(key), self.conn_id, self.local)

    def _fresh(self, fs_path: str) -> None:
        # s3fs keeps listings in memory; another worker may have written since.
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
        return _sha256_of(self._loc(key))

    def list(self, prefix: str = "") -> list[str]:
        """Keys of every file under `prefix` (recursive, sorted); in-flight temp files excluded."""
        prefix = _check_key(prefix, allow_empty=True, what="prefix")
        path = self._fs_path(prefix)
        with self._errors("list", prefix):
            self._fresh(path)
            if not self.fs.exists(path):
                return []
            found = self.fs.find(path)
        keys = []
        root = self._root_path
        for item in found:
            item = item.rstrip("/")
            rel = item[len(root):].lstrip("/") if root else item.lstrip("/")
            if _hidden(rel.rpartition("/")[2]):
                continue
            keys.append(rel)
        return sorted(keys)

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
        key = _check_key(key)
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
        key = _check_key(key)
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
        _check_key(key)
        return _download_atomic(self._loc(key), local_path)

    def write_json(self, key: str, obj: Any, *, sort_keys: bool = True) -> str:
        """Write `obj` as indented JSON (strict: no NaN); returns the key's URI."""
        return self.put_bytes(_json_bytes(obj, self.uri(key), sort_keys), key)

    def read_json(self, key: str) -> Any:
        return self._parse_json(self.get_bytes(key), key)

    # -- conditional writes: the only way two writers decide who wins ------------------------
    def create_bytes(self, data: bytes, key: str) -> bool:
        """Write `data` to `key` only if nothing is there yet; True when this call created it.

        Never check-then-write: on a local disk the file is written under a temporary name and
        hard-linked into place (``link`` fails when the name exists, O_EXCL semantics, and a
        reader never sees half a file); on S3 it is one ``PutObject`` with ``IfNoneMatch="*"``
        (412 when the key exists). The object is read back afterwards, so a backend that let
        two creates through (a test server without locking) still gives exactly one winner.
        """
        key = _check_key(key)
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
                return False
            finally:
                self._fresh(final)
        return self.get_bytes(key) == data

    def create_json(self, key: str, obj: Any, *, sort_keys: bool = True) -> bool:
        """`create_bytes` for a JSON document (strict JSON, no NaN)."""
        return self.create_bytes(_json_bytes(obj, self.uri(key), sort_keys), key)

    def update_json(self, key: str, change, *, sort_keys: bool = True) -> Any:
        """Compare-and-set: ``change(current_or_None)`` returns the new document, or None to
        leave `key` as it is; returns what `key` holds afterwards.

        On a local disk the read-change-write runs under an exclusive ``flock`` on a lock file
        beside the key; on S3 the write is conditional on the ETag that was read (``IfMatch``,
        or ``IfNoneMatch="*"`` for a new key) and read back, and a lost race reads again and
        calls `change` again (at most CAS_ATTEMPTS times).
        """
        key = _check_key(key)
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
            data = _json_bytes(new, self.uri(key), sort_keys)
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
                self.put_bytes(_json_bytes(new, self.uri(key), sort_keys), key)
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
        dst_key = _check_key(dst_key)
        loc = self._resolve(src)
        if loc.local:
            if not os.path.isfile(loc.path):
                raise StoreError(f"cannot copy {loc.uri}: no such file.", where=loc.uri,
                                 fix="check the source path or URI.")
            return self.put_file(loc.path, dst_key)
        if self.local:
            _download_atomic(loc, self._fs_path(dst_key))
            return self.uri(dst_key)
        if loc.fs is self.fs:
            with _storage_errors("copy", loc.uri, loc.conn_id, False):
                loc.fs.invalidate_cache(loc.path)
                self.fs.copy(loc.path, self._fs_path(dst_key))
                self._fresh(self._fs_path(dst_key))
            return self.uri(dst_key)
        with tempfile.TemporaryDirectory(prefix="mobiledet-copy-") as tmp:
            local = _download_atomic(loc, os.path.join(tmp, "blob"))
            return self.put_file(local, dst_key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every file under `prefix`; returns how many were deleted."""
        prefix = _check_key(prefix, allow_empty=True, what="prefix")
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

    # -- helpers for tasks --------------------------------------------------------------------
    def _resolve(self, src: str) -> _Loc:
        text = os.fspath(src)
        if "://" in text:
            return locate(text, self.conn_id or DEFAULT_CONN_ID)
        if os.path.isabs(text):
            return locate(text)
        return self._loc(_check_key(text))


def _json_bytes(obj: Any, where: str, sort_keys: bool = True) -> bytes:
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


def stage_dir(store: ArtifactStore, local_dir: str, prefix: str) -> str:
    """Put every file under `local_dir` into the store under `prefix`; returns the prefix URI."""
    prefix = _check_key(prefix, what="prefix")
    if not os.path.isdir(local_dir):
        raise StoreError(f"cannot stage {local_dir!r}: it is not a folder.", where=local_dir,
                         fix="pass the folder the stage wrote.")
    for dirpath, _dirs, files in os.walk(local_dir):
        for name in sorted(files):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, local_dir).replace(os.sep, "/")
            store.put_file(full, f"{prefix}/{rel}")
    return store.uri(prefix)


def fetch(uri: str, local_path: str, conn_id: str | None = DEFAULT_CONN_ID, *,
          sha256: str | None = None) -> str:
    """Download the file at a store URI to `local_path`; returns the local path.

    With `sha256` (the digest recorded when the file was written: a manifest, a pointer, a
    task's XCom), the download is refused, and nothing is left at `local_path`, when the bytes
    differ: a corrupted or replaced object is named, never used.
    """
    path = _download_atomic(locate(uri, conn_id), local_path)
    if sha256:
        got = sha256_file(path)
        if got != sha256.rpartition(":")[2]:
            os.unlink(path)
            raise StoreError(f"the downloaded file is not the one that was recorded: sha256 "
                             f"{got} instead of {sha256.rpartition(':')[2]}.", where=uri,
                             fix="the object was corrupted or replaced after it was written; "
                                 "re-run the stage (or the publish) that wrote it.")
    return path


def materialize(uri: str, local_dir: str, conn_id: str | None = DEFAULT_CONN_ID) -> str:
    """Make the file or folder at `uri` available under `local_dir`; returns its local path.

    A file lands at ``local_dir/<name>``; a folder (prefix) at ``local_dir/<name>/...``. Folders
    are assembled under a temporary name and renamed into place, so a half-downloaded folder is
    never mistaken for a complete one.
    """
    loc = locate(uri, conn_id)
    name = loc.path.rstrip("/").rpartition("/")[2]
    if not name:
        raise StoreError(f"cannot materialize {uri}: it names the root of a bucket or disk.",
                         where=uri, fix="pass the URI of a file or folder inside the store.")
    local_dir = os.path.abspath(os.path.expanduser(local_dir))
    target = os.path.join(local_dir, name)
    if loc.local and os.path.abspath(loc.path) == target:
        return target
    with _storage_errors("read", loc.uri, loc.conn_id, loc.local):
        if not loc.local:
            loc.fs.invalidate_cache(loc.path)
        is_dir = loc.fs.isdir(loc.path)
        if not is_dir and not loc.fs.exists(loc.path):
            raise FileNotFoundError(loc.uri)
    if not is_dir:
        return _download_atomic(loc, target)
    with staged_dir(target) as tmp:
        with _storage_errors("list", loc.uri, loc.conn_id, loc.local):
            files = [f.rstrip("/") for f in loc.fs.find(loc.path)]
        root = loc.path.rstrip("/")
        for item in files:
            rel = item[len(root):].lstrip("/")
            if not rel or _hidden(rel.rpartition("/")[2]):
                continue
            if any(part in ("", ".", "..") for part in rel.split("/")) or "\\" in rel:
                raise StoreError(f"refusing to download {item!r}: its key {rel!r} under "
                                 f"{loc.uri} has an empty, '.' or '..' part and would land "
                                 f"outside {target}.", where=loc.uri,
                                 fix="rename or delete that object; keys under a checkpoint or "
                                     "dataset prefix must be plain relative paths.")
            sub = _Loc(loc.fs, item, loc.uri.rstrip("/") + "/" + rel, loc.local, loc.conn_id)
            _download_atomic(sub, os.path.join(tmp, *rel.split("/")))
    return target

