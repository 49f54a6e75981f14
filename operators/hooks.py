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
        from include.store.uri import is_remote
        return is_remote(str(uri))

    # -- one move each -------------------------------------------------------------------
    def local_copy(self, uri: str, workdir: str | Path) -> Path:
        """A local path for `uri`: the path itself when local, else a download (a file, or
        a whole folder) under `workdir` (`include.store.transfer.local_copy`)."""
        from include.store.transfer import local_copy
        return local_copy(str(uri), workdir, conn_id=self.conn_id)

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
        from include.store.transfer import upload
        return upload(local_path, str(uri), conn_id=self.conn_id)

    def upload_dir(self, local_dir: str | Path, uri: str) -> str:
        """Put every file under `local_dir` below the folder `uri`; returns its URI."""
        from include.store.transfer import upload_dir
        return upload_dir(local_dir, str(uri), conn_id=self.conn_id)

    def write_json(self, obj: Any, uri: str) -> str:
        from include.store.transfer import upload_json
        return upload_json(obj, str(uri), conn_id=self.conn_id)

    def publish(self, store_uri: str, model_name: str, version: str, artifacts: list[dict],
                lineage: dict, *, publisher: str | None = None) -> dict:
        """`include.store.publish_release`: files, then the manifest by conditional create,
        then the consumer pointers (forward only). Returns the PublishResult as a dict."""
        from include.store import publish_release
        return publish_release(self.get_conn(store_uri), model_name, version, artifacts,
                               lineage, publisher=publisher).to_dict()
