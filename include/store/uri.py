"""Store locations: the one parser of folders, ``file://`` and ``s3://`` URIs, and store keys.

Every module that takes a location (the artifact store, the checkpoint store the landing
watcher lists, the config's ``store_uri``, an operator's ``output=``) parses it here, so a
location means the same thing everywhere:

* a plain path (``~`` expanded, relative to the current folder or to `base_dir`) or
  ``file:///abs/path`` is a local folder or file, normalised to an absolute path;
* ``s3://bucket/key`` (also ``s3a://``, ``s3n://``) is a prefix in a bucket; it may name its
  Airflow connection the Airflow way, ``s3://CONN_ID@bucket/key``. S3 keeps ``.`` and ``..``
  parts as written, so a key holding one is refused rather than read as something else;
* anything else is refused with the schemes that work.

A *key* is a '/'-separated path relative to a store's root: no empty, ``.`` or ``..`` part, no
leading slash, no backslash (:func:`check_key`).

Nothing here touches a file system or imports Airflow.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from include.errors import StoreError

S3_SCHEMES = ("s3", "s3a", "s3n")
EXAMPLE_KEY = "runs/<run_id>/cpu/int8/model.tflite"


@dataclass(frozen=True)
class StoreURI:
    """A parsed location: ``file`` with an absolute `path`, or ``s3`` with `bucket` and `key`.

    `conn_id` is the connection named in the URI itself (``s3://CONN@bucket``), else None.
    """

    scheme: str                 # "file" or "s3"
    path: str = ""              # file: the absolute path ("/" for the root)
    bucket: str = ""            # s3 only
    key: str = ""               # s3 only: the key prefix, no slash at either end
    conn_id: str | None = None  # s3 only: from s3://CONN_ID@bucket/...

    # -- parsing ------------------------------------------------------------------------
    @classmethod
    def parse(cls, location, *, base_dir: str | None = None) -> "StoreURI":
        """Parse a path or URI (StoreError naming the location and the fix when it is bad)."""
        if isinstance(location, StoreURI):
            return location
        try:
            text = os.fspath(location)
        except TypeError:
            text = None
        if not isinstance(text, str) or not text.strip():
            raise StoreError(f"an empty store location was given ({location!r}).",
                             where="store URI",
                             fix="give a local folder, file:///abs/path or s3://bucket/prefix.")
        text = text.strip()
        if "://" not in text:
            path = os.path.expanduser(text)
            if not os.path.isabs(path):
                path = os.path.join(base_dir or os.getcwd(), path)
            return cls("file", path=os.path.normpath(path))
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise StoreError(f"{text!r} is not an absolute file URI.", where=text,
                                 fix="write file:///absolute/path (three slashes), or a plain "
                                     "path.")
            return cls("file", path=os.path.normpath(parts.path))
        if scheme in S3_SCHEMES:
            conn, _, bucket = parts.netloc.rpartition("@")
            if not bucket:
                raise StoreError(f"{text!r} names no bucket.", where=text,
                                 fix="write s3://BUCKET/optional/prefix.")
            key = parts.path.strip("/")
            if key and any(p in (".", "..") for p in key.split("/")):
                raise StoreError(f"{text!r} has a '.' or '..' part; S3 keeps such keys as "
                                 "written, so the path would not mean what it says.",
                                 where=text, fix="write the key without '.' and '..' parts.")
            return cls("s3", bucket=bucket, key=key, conn_id=conn or None)
        raise StoreError(f"unsupported storage scheme {scheme!r} in {text!r}; supported: a "
                         "local folder, file:// or s3://.", where=text,
                         fix="use a local folder or an s3://bucket/prefix (MinIO works through "
                             "s3:// with endpoint_url in the connection's extra).")

    # -- views --------------------------------------------------------------------------
    @property
    def local(self) -> bool:
        return self.scheme == "file"

    @property
    def uri(self) -> str:
        """The canonical text: file:///abs/path or s3://bucket/key (no connection part)."""
        if self.local:
            return "file://" + self.path
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    @property
    def fs_path(self) -> str:
        """The path as the file system spells it: "/abs/path" or "bucket/key"."""
        if self.local:
            return self.path
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    @property
    def name(self) -> str:
        """The last part ('' for a bucket or the disk's root)."""
        return (self.path if self.local else self.key).rstrip("/").rpartition("/")[2]

    def __str__(self) -> str:
        return self.uri

    def join(self, key: str) -> "StoreURI":
        """The location of `key` below this one (`key` checked, '' = this location)."""
        key = check_key(key, allow_empty=True)
        if not key:
            return self
        if self.local:
            return StoreURI("file", path=os.path.join(self.path, *key.split("/")))
        return StoreURI("s3", bucket=self.bucket,
                        key=f"{self.key}/{key}" if self.key else key, conn_id=self.conn_id)

    def split(self) -> tuple["StoreURI", str]:
        """(parent folder, file name): s3://b/p/model.tflite -> (s3://b/p, "model.tflite")."""
        name = self.name
        parent_text = (self.path if self.local else self.key).rstrip("/").rpartition("/")[0]
        if not name or (not self.local and not self.key):
            raise StoreError(f"{self.uri!r} does not name a file inside a folder or bucket.",
                             where=self.uri, fix="give a path like /out/model.tflite or "
                                                 "s3://bucket/prefix/model.tflite.")
        if self.local:
            return StoreURI("file", path=parent_text or "/"), name
        return StoreURI("s3", bucket=self.bucket, key=parent_text, conn_id=self.conn_id), name

    def key_in(self, base: "StoreURI") -> str | None:
        """This location's key relative to `base` ('' when equal), or None when outside."""
        if self.scheme != base.scheme or (not self.local and self.bucket != base.bucket):
            return None
        mine, root = (self.path, base.path) if self.local else (self.key, base.key)
        root = root.rstrip("/")
        if mine == root:
            return ""
        if not root or root == "/":
            return mine.lstrip("/")
        if mine.startswith(root + "/"):
            return mine[len(root) + 1:]
        return None


def parse(location, *, base_dir: str | None = None) -> StoreURI:
    """:meth:`StoreURI.parse`."""
    return StoreURI.parse(location, base_dir=base_dir)


def normalise(location, *, base_dir: str | None = None) -> str:
    """A location as every task and manifest spells it: an absolute folder path for a local
    location given as a path, file:///abs for a file URI, s3://bucket/key for S3."""
    text = os.fspath(location).strip() if isinstance(location, (str, os.PathLike)) else location
    parsed = StoreURI.parse(location, base_dir=base_dir)
    if parsed.local and isinstance(text, str) and "://" not in text:
        return parsed.path
    if not parsed.local and isinstance(text, str):
        return text.rstrip("/")   # as given (a connection part stays)
    return parsed.uri


def is_remote(location) -> bool:
    """True for an s3:// location (a URI needing a download), False for a local one."""
    text = os.fspath(location) if isinstance(location, (str, os.PathLike)) else str(location)
    return "://" in text and not text.startswith("file://")


def check_key(key, *, allow_empty: bool = False, what: str = "key") -> str:
    """A store key as given (stripped of slashes when `allow_empty`); StoreError when it has an
    empty, '.' or '..' part, a leading slash or a backslash."""
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
                         fix=f"use a path such as '{EXAMPLE_KEY}'.")
    return norm
