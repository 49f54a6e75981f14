"""The artifact store: the one door to local folders and S3 for everything in this project.

    uri.py        StoreURI: one parser of folders, file:// and s3:// locations, and of keys
    layout.py     every key of the store, named once (releases, pointers, claims, runs)
    store.py      ArtifactStore: read, list, write, conditional create, compare-and-set
    aio.py        AsyncArtifactStore: the same for code on an event loop (the landing trigger)
    transfer.py   local copies, downloads checked by sha256, uploads, folders
    releases.py   versions, manifests, the newest comparable release
    pointers.py   consumer pointers (MODEL/latest...)
    manifest.py   the publish protocol
    baselines.py  the no-regression baseline per (variant, precision, kind, dataset), O(1)
    ledger.py     the checkpoint ledger: one record per landed checkpoint (the record of work)

Importing this package does not import Airflow; opening a store does.
"""
from include.store.layout import LATEST, MANIFEST, manifest_key, pointer_key
from include.store.manifest import PublishResult, clean_version, publish_release
from include.store.pointers import latest, move_pointers, pointer
from include.store.baselines import comparable_baseline
from include.store.releases import last_published, list_versions, make_version, read_manifest
from include.store.store import DEFAULT_CONN_ID, ArtifactStore, locate, open_store, sha256_file
from include.store.transfer import fetch, local_copy, materialize, stage_dir
from include.store.uri import StoreURI

__all__ = [
    "ArtifactStore", "DEFAULT_CONN_ID", "LATEST", "MANIFEST", "PublishResult", "StoreURI",
    "clean_version", "comparable_baseline", "fetch", "last_published", "latest",
    "list_versions", "local_copy", "locate", "make_version", "manifest_key", "materialize",
    "move_pointers", "open_store", "pointer", "pointer_key", "publish_release", "read_manifest",
    "sha256_file", "stage_dir",
]
