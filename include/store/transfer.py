"""Moving files between the store and a task's local disk: the one door for "use the local
path, or download it", for uploads to a URI, and for folders.

* :func:`local_copy`: a local path for a path or URI (the path itself when local, else a
  download of the file or folder under a work folder);
* :func:`fetch`: one file to a local path, refused (nothing left behind) when its bytes are not
  the sha256 its producer recorded;
* :func:`materialize`: a file or a whole folder (prefix) under a local folder, the folder
  assembled under a temporary name and renamed into place;
* :func:`upload` / :func:`upload_json`: a local file or a JSON document to a file URI;
* :func:`stage_dir`: every file of a local folder below a store prefix.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from include.atomic import staged_dir
from include.errors import StoreError
from include.store.store import (DEFAULT_CONN_ID, ArtifactStore, Location, download, hidden,
                                 locate, open_store, sha256_file)
from include.store.uri import StoreURI, check_key, is_remote


def local_copy(location, workdir, conn_id: str | None = DEFAULT_CONN_ID) -> Path:
    """A local path for `location`: the path itself when it is local (a plain path or
    file://), else a download of the file or folder under `workdir`."""
    if not is_remote(location):
        return Path(StoreURI.parse(location).path)
    return Path(materialize(str(location), str(workdir), conn_id=conn_id))


def fetch(uri: str, local_path: str, conn_id: str | None = DEFAULT_CONN_ID, *,
          sha256: str | None = None) -> str:
    """Download the file at a store URI (or copy a local one) to `local_path`; returns it.

    With `sha256` (the digest recorded when the file was written: a manifest, a pointer, a
    task's XCom), the download is refused, and nothing is left at `local_path`, when the bytes
    differ: a corrupted or replaced object is named, never used.
    """
    path = download(locate(uri, conn_id), local_path)
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
    never mistaken for a complete one. A key with an empty, '.' or '..' part under the prefix
    is refused before anything is written: it would land outside the target.
    """
    loc = locate(uri, conn_id)
    name = loc.where.name
    if not name:
        raise StoreError(f"cannot materialize {uri}: it names the root of a bucket or disk.",
                         where=uri, fix="pass the URI of a file or folder inside the store.")
    local_dir = os.path.abspath(os.path.expanduser(local_dir))
    target = os.path.join(local_dir, name)
    if loc.local and os.path.abspath(loc.path) == target:
        return target
    with loc.errors("read"):
        loc.fresh()
        is_dir = loc.fs.isdir(loc.path)
        if not is_dir and not loc.fs.exists(loc.path):
            raise FileNotFoundError(loc.uri)
    if not is_dir:
        return download(loc, target)
    with staged_dir(target) as tmp:
        with loc.errors("list"):
            files = [f.rstrip("/") for f in loc.fs.find(loc.path)]
        root = loc.path.rstrip("/")
        for item in files:
            rel = item[len(root):].lstrip("/")
            if not rel or hidden(rel.rpartition("/")[2]):
                continue
            if any(part in ("", ".", "..") for part in rel.split("/")) or "\\" in rel:
                raise StoreError(f"refusing to download {item!r}: its key {rel!r} under "
                                 f"{loc.uri} has an empty, '.' or '..' part and would land "
                                 f"outside {target}.", where=loc.uri,
                                 fix="rename or delete that object; keys under a checkpoint or "
                                     "dataset prefix must be plain relative paths.")
            sub = Location(loc.fs, StoreURI("file", path=item) if loc.local else
                           StoreURI("s3", bucket=loc.where.bucket,
                                    key=item.partition("/")[2]), loc.conn_id)
            download(sub, os.path.join(tmp, *rel.split("/")))
    return target


def _parent_store(uri: str, conn_id: str | None) -> tuple[ArtifactStore, str]:
    parent, name = StoreURI.parse(uri).split()
    return open_store(parent.uri, conn_id=parent.conn_id or conn_id), name


def upload(local_path, uri: str, conn_id: str | None = DEFAULT_CONN_ID) -> str:
    """Put a local file at the file URI (or local path) `uri`, atomically; returns its URI."""
    store, name = _parent_store(str(uri), conn_id)
    return store.put_file(str(local_path), name)


def upload_json(obj: Any, uri: str, conn_id: str | None = DEFAULT_CONN_ID) -> str:
    """Write a JSON document at the file URI (or local path) `uri`; returns its URI."""
    store, name = _parent_store(str(uri), conn_id)
    return store.write_json(name, obj)


def exists(uri: str, conn_id: str | None = DEFAULT_CONN_ID) -> bool:
    """Whether a file is at the URI (or local path) `uri`."""
    store, name = _parent_store(str(uri), conn_id)
    return store.is_file(name)


def stage_dir(store: ArtifactStore, local_dir: str, prefix: str) -> str:
    """Put every file under `local_dir` into the store under `prefix`; returns the prefix URI."""
    prefix = check_key(prefix, what="prefix")
    if not os.path.isdir(local_dir):
        raise StoreError(f"cannot stage {local_dir!r}: it is not a folder.", where=local_dir,
                         fix="pass the folder the stage wrote.")
    for dirpath, _dirs, files in os.walk(local_dir):
        for name in sorted(files):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, local_dir).replace(os.sep, "/")
            store.put_file(full, f"{prefix}/{rel}")
    return store.uri(prefix)


def upload_dir(local_dir, uri: str, conn_id: str | None = DEFAULT_CONN_ID) -> str:
    """Put every file under `local_dir` below the folder URI `uri`; returns its URI."""
    store, name = _parent_store(str(uri), conn_id)
    return stage_dir(store, str(local_dir), name)
