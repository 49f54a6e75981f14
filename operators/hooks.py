"""MobiledetStoreHook: the artifact store (a local folder or s3://) seen from an Airflow task.

The store code itself (`include.store`) already resolves an Airflow connection for S3 through
``ObjectStoragePath(uri, conn_id=...)``: from the metadata database, a secrets backend or an
``AIRFLOW_CONN_<ID>`` environment variable, with ``endpoint_url`` in the extra for MinIO. This
hook does not read credentials itself; it holds the connection id, opens stores on first use
(cached per base URI) and offers the handful of moves an operator needs: a local copy of a URI,
a download checked against its sha256, an upload to a URI, a folder upload, a JSON document,
a publish. Every error is the store's StoreError, naming the URI, the connection and the fix.

Local paths and ``file://`` URIs need no connection; ``conn_id`` only matters for ``s3://``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook


def _split(uri: str) -> tuple[str, str]:
    """(parent, name) of a file URI or path: 's3://b/p/model.tflite' -> ('s3://b/p', ...)."""
    text = str(uri).rstrip("/")
    parent, _, name = text.rpartition("/")
    if not name or not parent or parent.endswith(":/") or parent.endswith(":"):
        from include.errors import StoreError
        raise StoreError(f"{uri!r} does not name a file inside a folder or bucket.",
                         where=str(uri), fix="give a path like /out/model.tflite or "
                                             "s3://bucket/prefix/model.tflite.")
    return parent, name


class MobiledetStoreHook(BaseHook):
    """Artifact store access for operators. ``conn_id``: the Airflow connection of an
    ``s3://`` store (default ``aws_default``); unused for local folders."""

    conn_name_attr = "conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "MobileDet artifact store"

    def __init__(self, conn_id: str | None = default_conn_name, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self._stores: dict[str, Any] = {}

    # -- the system ----------------------------------------------------------------------
    def get_conn(self, base_uri: str):
        """The `include.store.ArtifactStore` rooted at `base_uri` (opened once, then cached)."""
        from include.store import open_store

        key = str(base_uri)
        if key not in self._stores:
            self._stores[key] = open_store(key, conn_id=self.conn_id)
        return self._stores[key]

    def is_remote(self, uri: str) -> bool:
        text = str(uri)
        return "://" in text and not text.startswith("file://")

    # -- one move each -------------------------------------------------------------------
    def local_copy(self, uri: str, workdir: str | Path) -> Path:
        """A local path for `uri`: the path itself when local, else a download (a file, or
        a whole folder through `include.store.materialize`) under `workdir`."""
        text = str(uri)
        if not self.is_remote(text):
            return Path(text[len("file://"):] if text.startswith("file://") else text)
        from include.store import materialize
        return Path(materialize(text, str(workdir), conn_id=self.conn_id))

    def fetch(self, uri: str, local_path: str | Path, sha256: str | None = None) -> Path:
        """Download the file at `uri` to `local_path`, refused when `sha256` is given and the
        bytes differ (`include.store.fetch`)."""
        from include.store import fetch
        return Path(fetch(str(uri), str(local_path), conn_id=self.conn_id, sha256=sha256))

    def dataset(self, uri: str, workdir: str | Path, images=None) -> Path:
        """A local copy of a COCO dataset or image folder holding only the images `images`
        picks (`include.pipeline.inputs.dataset_copy`)."""
        from include.pipeline.inputs import dataset_copy
        return Path(dataset_copy(str(uri), workdir, self.conn_id, images=images))

    def upload(self, local_path: str | Path, uri: str) -> str:
        """Put a local file at `uri` (atomically for a reader); returns the URI."""
        parent, name = _split(uri)
        return self.get_conn(parent).put_file(str(local_path), name)

    def upload_dir(self, local_dir: str | Path, uri: str) -> str:
        """Put every file under `local_dir` below the folder `uri`; returns its URI."""
        from include.store import stage_dir

        parent, name = _split(uri)
        return stage_dir(self.get_conn(parent), str(local_dir), name)

    def write_json(self, obj: Any, uri: str) -> str:
        parent, name = _split(uri)
        return self.get_conn(parent).write_json(name, obj)

    def publish(self, store_uri: str, model_name: str, version: str, artifacts: list[dict],
                lineage: dict, *, publisher: str | None = None) -> dict:
        """`include.store.publish`: files, then the manifest by conditional create, then the
        consumer pointers (forward only). Returns the PublishResult as a dict."""
        from include.store import publish
        return publish(self.get_conn(store_uri), model_name, version, artifacts, lineage,
                       publisher=publisher).to_dict()
