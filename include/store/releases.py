"""Reading releases: versions and manifests (the gate's no-regression baseline is indexed in
`include.store.baselines`).

A version is derived from the checkpoint (``vYYYYMMDDTHHMMSSZ-<first 8 of fingerprint>``), so
running the pipeline again for the same checkpoint finds its earlier release instead of making
a new one. A manifest is created once, by one publisher, and never rewritten.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from include.errors import StoreError
from include.store import layout
from include.store.store import ArtifactStore


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------
def utc(created) -> datetime:
    """A checkpoint's creation time (datetime, ISO-8601 text or Unix time) in UTC."""
    if isinstance(created, datetime):
        return created.replace(tzinfo=timezone.utc) if created.tzinfo is None \
            else created.astimezone(timezone.utc)
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        return datetime.fromtimestamp(created, tz=timezone.utc)
    if isinstance(created, str):
        try:
            return utc(datetime.fromisoformat(created.strip().replace("Z", "+00:00")))
        except ValueError:
            pass
    raise StoreError(f"cannot read the checkpoint creation time {created!r}.",
                     where="checkpoint created", fix="pass a datetime, an ISO-8601 string "
                     "(e.g. 2026-11-24T04:12:00Z) or a Unix timestamp.")


def fingerprint_short(fingerprint: str, n: int = 8) -> str:
    text = str(fingerprint or "").strip().lower().rpartition(":")[2]
    short = re.sub(r"[^0-9a-z]", "", text)[:n]
    if len(short) < n:
        raise StoreError(f"checkpoint fingerprint {fingerprint!r} has fewer than {n} letters or "
                         "digits.", where="lineage.checkpoint_fingerprint",
                         fix="use the checkpoint's content hash (e.g. its sha256 hex digest).")
    return short


def make_version(checkpoint_fingerprint: str, created) -> str:
    """Release name from the checkpoint: ``vYYYYMMDDTHHMMSSZ-<first 8 of fingerprint>``.

    Deterministic: the same checkpoint (fingerprint and creation time) always gets the same
    version, so re-running a pipeline finds its earlier release instead of making a new one.
    """
    stamp = utc(created).strftime("%Y%m%dT%H%M%SZ")
    return f"v{stamp}-{fingerprint_short(checkpoint_fingerprint)}"


def now_iso(now: datetime | None = None) -> str:
    return utc(now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def plain(obj: Any) -> Any:
    """Objects with to_dict() (e.g. GateDecision) become dicts; containers are walked."""
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return plain(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Reading releases
# --------------------------------------------------------------------------------------------
def read_manifest(store: ArtifactStore, model: str, version: str) -> dict:
    key = layout.manifest_key(model, version)
    if not store.is_file(key):
        raise StoreError(f"version {version!r} of model {model!r} is not published (no manifest).",
                         where=store.uri(key),
                         fix=f"pick one of the published versions: {list_versions(store, model)}.")
    return store.read_json(key)


def list_versions(store: ArtifactStore, model: str) -> list[str]:
    """Published versions (those with a manifest), oldest first by name."""
    model = layout.check_name(model, "model name")
    return sorted(v for v in (layout.manifest_version(k) for k in store.list(model)) if v)


def manifests_newest_first(store: ArtifactStore, model: str) -> list[dict]:
    manifests = [read_manifest(store, model, v) for v in list_versions(store, model)]
    manifests.sort(key=lambda m: (m.get("published_at", ""), m.get("version", "")), reverse=True)
    return manifests


def entry_baseline(manifest: dict, variant: str, precision: str) -> dict | None:
    """What the gate compares with, from one release's entry for (variant, precision)."""
    for entry in manifest.get("published", []):
        if entry.get("variant") == variant and entry.get("precision") == precision:
            decision = entry.get("decision") or {}
            metrics = entry.get("metrics") or {}
            lineage = manifest.get("lineage") or {}
            return {
                "model": manifest.get("model"),
                "version": manifest.get("version"),
                "published_at": manifest.get("published_at"),
                "manifest_uri": manifest.get("manifest_uri"),
                "variant": variant,
                "precision": precision,
                "qat": lineage.get("qat"),
                "evaluation_data_fingerprint": lineage.get("evaluation_data_fingerprint"),
                "metric": decision.get("metric", metrics.get("metric")),
                "map": decision.get("map", metrics.get("map")),
                "metrics": metrics,
                "decision": decision,
            }
    return None


def last_published(store: ArtifactStore, model: str, variant: str, precision: str) -> dict | None:
    """The newest published release holding (variant, precision), whatever it was made from.

    For the no-regression gate use :func:`comparable_baseline`, which also matches the source
    kind and the evaluation dataset.
    """
    for manifest in manifests_newest_first(store, model):
        found = entry_baseline(manifest, variant, precision)
        if found:
            return found
    return None
