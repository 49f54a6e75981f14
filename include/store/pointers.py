"""Consumer pointers: the small objects a device fleet reads to find what to run.

::

    MODEL/latest.json                    newest release of the model (any variant)
    MODEL/latest/VARIANT.json            newest release holding a model of VARIANT (`models`)
    MODEL/latest/VARIANT/PRECISION.json  newest release of (VARIANT, PRECISION): version,
                                         manifest_uri, published_at, model_uri, sha256, size
                                         (and the Edge TPU model's where compiled), the metric

Pointers move only after the release's manifest exists, only forward, each by compare-and-set
(:meth:`ArtifactStore.update_json`), so a slow publisher of an older release never moves one
back. "Newer" is the checkpoint's creation time (`created`), then the version: `latest` means
the newest checkpoint, whatever order the runs finished in (a manifest from before this field
is ordered by when it was published).
"""
from __future__ import annotations

from typing import Any

from include.store import layout
from include.store.store import ArtifactStore

LATEST_SCHEMA = "mobiledet.latest/2"


def latest(store: ArtifactStore, model: str) -> dict | None:
    """The content of MODEL/latest.json, or None before the first release."""
    return store.read_json_if_any(layout.pointer_key(model))


def pointer(store: ArtifactStore, model: str, variant: str, precision: str | None = None, *,
            channel: str | None = None) -> dict | None:
    """The newest published release of `variant` (and `precision`): one small object to read.

    For (variant, precision): version, manifest_uri, published_at, model_uri, sha256, size (and
    the Edge TPU model's where compiled). For a variant: the same per precision under `models`.
    With `channel` ("stable", "canary", ...): the release that channel names instead. None
    before the first such release; a document whose `version` is None when every release it
    could name is yanked.
    """
    if channel is not None:
        if precision is None:
            raise ValueError("a channel names one (variant, precision): pass the precision")
        return store.read_json_if_any(layout.channel_key(model, channel, variant, precision))
    return store.read_json_if_any(layout.pointer_key(model, variant, precision))


def order(doc: dict) -> tuple:
    """How pointers order releases: newer is greater (the checkpoint's creation time, then the
    version)."""
    return (doc.get("created") or doc.get("published_at") or "", doc.get("version", ""))


def _advance(doc_of):
    """A compare-and-set change that replaces a pointer only with a newer release."""
    def change(current):
        new = doc_of(current)
        if current and order(current) >= order(new):
            return None
        return new
    return change


def pointer_docs(manifest: dict) -> dict[str, Any]:
    """Pointer key -> document builder for every pointer this release may move."""
    model = manifest["model"]
    base = {"schema": LATEST_SCHEMA, "model": model, "version": manifest["version"],
            "manifest_uri": manifest["manifest_uri"], "published_at": manifest["published_at"],
            "created": manifest.get("checkpoint_created") or manifest["published_at"],
            "qat": (manifest.get("lineage") or {}).get("qat")}
    docs: dict[str, Any] = {layout.pointer_key(model): lambda cur: dict(base)}
    by_variant: dict[str, dict] = {}
    for entry in manifest.get("published", []):
        files = entry.get("files") or {}
        model_file = files.get("model.tflite") or {}
        doc = {**base, "variant": entry["variant"], "precision": entry["precision"],
               "model_uri": model_file.get("uri"), "sha256": model_file.get("sha256"),
               "size": model_file.get("size"),
               "metric": (entry.get("decision") or {}).get("metric"),
               "map": (entry.get("decision") or {}).get("map")}
        if entry.get("blessed"):   # published by hand, with the reason
            doc["blessed"] = entry["blessed"]
        if "model_edgetpu.tflite" in files:
            doc.update(edgetpu_model_uri=files["model_edgetpu.tflite"].get("uri"),
                       edgetpu_sha256=files["model_edgetpu.tflite"].get("sha256"))
        docs[layout.pointer_key(model, entry["variant"], entry["precision"])] = \
            (lambda d: lambda cur: dict(d))(doc)
        by_variant.setdefault(entry["variant"], {})[entry["precision"]] = {
            k: doc[k] for k in ("model_uri", "sha256", "size", "metric", "map")}
    for variant, models in by_variant.items():
        docs[layout.pointer_key(model, variant)] = (lambda d: lambda cur: d)(
            {**base, "variant": variant, "models": models})
    return docs


def move_pointers(store: ArtifactStore, manifest: dict) -> dict[str, bool]:
    """Move every consumer pointer of a published release forward; key -> moved or not. A
    yanked release moves none (a late retry of its publish)."""
    registry = store.read_json_if_any(layout.registry_key(manifest["model"])) or {}
    if manifest["version"] in (registry.get("yanked") or {}):
        return {key: False for key in pointer_docs(manifest)}
    moved = {}
    for key, doc_of in pointer_docs(manifest).items():
        after = store.update_json(key, _advance(doc_of), sort_keys=False)
        moved[key] = bool(after) and after.get("version") == manifest["version"] and \
            after.get("published_at") == manifest["published_at"]
    return moved
