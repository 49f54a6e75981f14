"""Artifact store over Airflow's ObjectStoragePath (local folder or s3://), and publishing.

Importing this package does not import Airflow; opening a store does.
"""
from include.store.manifest import (
    LATEST,
    MANIFEST,
    PublishResult,
    clean_version,
    comparable_baseline,
    last_published,
    latest,
    list_versions,
    make_version,
    manifest_key,
    move_pointers,
    pointer,
    pointer_key,
    publish,
    read_manifest,
)
from include.store.store import (
    DEFAULT_CONN_ID,
    ArtifactStore,
    fetch,
    locate,
    materialize,
    open_store,
    sha256_file,
    stage_dir,
)

__all__ = [
    "ArtifactStore", "DEFAULT_CONN_ID", "LATEST", "MANIFEST", "PublishResult", "clean_version",
    "comparable_baseline", "fetch", "last_published", "latest", "list_versions", "locate", "make_version", "manifest_key",
    "materialize", "move_pointers", "pointer", "pointer_key", "open_store", "publish", "read_manifest", "sha256_file", "stage_dir",
]
