"""Publishing: copy the passing artifacts into a versioned release, write its manifest last.

Layout inside the store::

    MODEL/latest.json                                  -> the newest published version
    MODEL/VERSION/manifest.json                        written LAST; its presence = published
    MODEL/VERSION/VARIANT/PRECISION/model.tflite
    MODEL/VERSION/VARIANT/PRECISION/model_edgetpu.tflite   (where compiled)
    MODEL/VERSION/VARIANT/PRECISION/conversion.json | metrics.json | validation.json

Rules
* A version folder without ``manifest.json`` is not a release (a publish that stopped part-way):
  the next publish of that version deletes it and starts again, and ``latest.json`` never points
  at it.
* A published version is never overwritten. Publishing it again from the same checkpoint
  (same lineage fingerprint) is a no-op that reports ``already_published``; from another
  checkpoint it is refused with a StoreError.
* Every copied file is hashed (SHA-256) at the source and again in the store before the manifest
  is written; the manifest records the size and hash of every file.
* ``latest.json`` is overwritten only after the manifest exists.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from include.errors import StoreError
from include.store.store import ArtifactStore, _sha256_of

MANIFEST_SCHEMA = "mobiledet.manifest/1"
LATEST_SCHEMA = "mobiledet.latest/1"
MANIFEST = "manifest.json"
LATEST = "latest.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class PublishResult:
    """What `publish` did. `status` is published | already_published | nothing_to_publish."""

    model: str
    version: str
    status: str
    manifest_uri: str | None = None
    latest_uri: str | None = None
    published: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    cleaned_partial: bool = False
    latest_moved: bool = False

    @property
    def already_published(self) -> bool:
        return self.status == "already_published"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["already_published"] = self.already_published
        return out


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------
def _utc(created) -> datetime:
    if isinstance(created, datetime):
        return created.replace(tzinfo=timezone.utc) if created.tzinfo is None \
            else created.astimezone(timezone.utc)
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        return datetime.fromtimestamp(created, tz=timezone.utc)
    if isinstance(created, str):
        try:
            return _utc(datetime.fromisoformat(created.strip().replace("Z", "+00:00")))
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
    stamp = _utc(created).strftime("%Y%m%dT%H%M%SZ")
    return f"v{stamp}-{fingerprint_short(checkpoint_fingerprint)}"


def _now_iso(now: datetime | None = None) -> str:
    return _utc(now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise StoreError(f"{what} {value!r} is not a safe folder name.", where=what,
                         fix="use letters, digits, '.', '_' and '-' only, starting with a letter "
                             "or digit.")
    return value


def _plain(obj: Any) -> Any:
    """Objects with to_dict() (e.g. GateDecision) become dicts; containers are walked."""
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return _plain(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Reading releases
# --------------------------------------------------------------------------------------------
def manifest_key(model: str, version: str) -> str:
    return f"{model}/{version}/{MANIFEST}"


def read_manifest(store: ArtifactStore, model: str, version: str) -> dict:
    key = manifest_key(_check_name(model, "model name"), _check_name(version, "version"))
    if not store.is_file(key):
        raise StoreError(f"version {version!r} of model {model!r} is not published (no manifest).",
                         where=store.uri(key),
                         fix=f"pick one of the published versions: {list_versions(store, model)}.")
    return store.read_json(key)


def latest(store: ArtifactStore, model: str) -> dict | None:
    """The content of MODEL/latest.json, or None before the first release."""
    key = f"{_check_name(model, 'model name')}/{LATEST}"
    return store.read_json(key) if store.is_file(key) else None


def list_versions(store: ArtifactStore, model: str) -> list[str]:
    """Published versions (those with a manifest), oldest first by name."""
    model = _check_name(model, "model name")
    versions = []
    for key in store.list(model):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST:
            versions.append(parts[1])
    return sorted(versions)


def _entry_baseline(manifest: dict, variant: str, precision: str) -> dict | None:
    for entry in manifest.get("published", []):
        if entry.get("variant") == variant and entry.get("precision") == precision:
            decision = entry.get("decision") or {}
            metrics = entry.get("metrics") or {}
            return {
                "model": manifest.get("model"),
                "version": manifest.get("version"),
                "published_at": manifest.get("published_at"),
                "manifest_uri": manifest.get("manifest_uri"),
                "variant": variant,
                "precision": precision,
                "metric": decision.get("metric", metrics.get("metric")),
                "map": decision.get("map", metrics.get("map")),
                "metrics": metrics,
                "decision": decision,
            }
    return None


def last_published(store: ArtifactStore, model: str, variant: str, precision: str) -> dict | None:
    """The newest published release holding (variant, precision), with its gate metric.

    Returns a dict with version, published_at, manifest_uri, metric, map (the gate metric value
    recorded when it was published), metrics and decision; None when no release has it yet.
    """
    head = latest(store, model)
    if head:
        try:
            found = _entry_baseline(read_manifest(store, model, head["version"]), variant,
                                    precision)
        except StoreError:
            found = None
        if found:
            return found
    manifests = [read_manifest(store, model, v) for v in list_versions(store, model)]
    manifests.sort(key=lambda m: (m.get("published_at", ""), m.get("version", "")), reverse=True)
    for manifest in manifests:
        found = _entry_baseline(manifest, variant, precision)
        if found:
            return found
    return None


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------
def _check_artifacts(artifacts: list[dict]) -> list[dict]:
    if not isinstance(artifacts, (list, tuple)):
        raise StoreError(f"artifacts must be a list of entries, got {type(artifacts).__name__}.",
                         where="publish artifacts", fix="pass [{variant, precision, files, "
                                                        "passed, decision}, ...].")
    seen = set()
    out = []
    for i, raw in enumerate(artifacts):
        entry = _plain(raw)
        where = f"publish artifacts[{i}]"
        if not isinstance(entry, dict):
            raise StoreError("an artifact entry must be a dict.", where=where,
                             fix="pass {variant, precision, files, passed, decision}.")
        variant = _check_name(entry.get("variant"), f"{where}.variant")
        precision = _check_name(entry.get("precision"), f"{where}.precision")
        if (variant, precision) in seen:
            raise StoreError(f"({variant}, {precision}) appears twice.", where=where,
                             fix="publish one entry per variant and precision.")
        seen.add((variant, precision))
        if not isinstance(entry.get("passed"), bool):
            raise StoreError(f"'passed' must be true or false, got {entry.get('passed')!r}.",
                             where=f"{where}.passed", fix="pass the gate decision's result.")
        files = entry.get("files") or {}
        if not isinstance(files, dict):
            raise StoreError("'files' must map file names to sources.", where=f"{where}.files",
                             fix="e.g. {'model.tflite': 's3://bucket/runs/r1/cpu/int8/"
                                 "model.tflite'}.")
        if entry["passed"]:
            if "model.tflite" not in files:
                raise StoreError(f"the passed entry ({variant}, {precision}) has no model.tflite.",
                                 where=f"{where}.files", fix="include the converted model.")
            for name, src in files.items():
                _check_name(name, f"{where}.files name")
                if not isinstance(src, (str, dict)):
                    raise StoreError(f"the source of {name} must be a URI, a local path or a "
                                     f"JSON document (dict), got {type(src).__name__}.",
                                     where=f"{where}.files.{name}", fix="pass a string or dict.")
        out.append(entry)
    return out


def _check_json(what: str, obj: Any) -> None:
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} cannot be written to the manifest: {exc}.",
                         where=f"publish {what}",
                         fix="pass only dicts, lists, strings, finite numbers, booleans and None "
                             "(convert numpy values with float()/int(); NaN has no JSON form).")


def _reasons(entry: dict) -> list[str]:
    reasons = entry.get("reasons") or (entry.get("decision") or {}).get("reasons") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    return [str(r) for r in reasons] or ["rejected (no reason recorded)"]


def _copy_entry(store: ArtifactStore, prefix: str, entry: dict) -> dict:
    files = {}
    for name in sorted(entry["files"]):
        src = entry["files"][name]
        key = f"{prefix}/{name}"
        if isinstance(src, dict):
            store.write_json(key, src)
            expected = None
        else:
            loc = store._resolve(src if "://" in src else _abs(src))
            expected = _sha256_of(loc)
            store.copy(src if "://" in src else _abs(src), key)
        digest = store.sha256(key)
        if expected is not None and digest != expected:
            raise StoreError(f"the copy of {src} does not match its source (sha256 {digest} vs "
                             f"{expected}).", where=store.uri(key),
                             fix="the source changed during the copy or the store corrupted it; "
                                 "publish again.")
        files[name] = {"key": key, "uri": store.uri(key), "size": store.size(key),
                       "sha256": digest}
    return files


def _abs(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _metrics_of(store: ArtifactStore, entry: dict, files: dict) -> dict:
    if isinstance(entry.get("metrics"), dict):
        return entry["metrics"]
    if "metrics.json" in files:
        try:
            doc = store.read_json(files["metrics.json"]["key"])
            return doc if isinstance(doc, dict) else {}
        except StoreError:
            return {}
    return {}


def _move_latest(store: ArtifactStore, model: str, manifest: dict, now: datetime | None) -> str:
    return store.write_json(f"{model}/{LATEST}", sort_keys=False, obj={
        "schema": LATEST_SCHEMA,
        "model": model,
        "version": manifest["version"],
        "manifest_uri": manifest["manifest_uri"],
        "published_at": manifest["published_at"],
        "updated_at": _now_iso(now),
    })


def publish(store: ArtifactStore, model_name: str, version: str, artifacts: list[dict],
            lineage: dict, decisions: Any = None, *, now: datetime | None = None) -> PublishResult:
    """Publish the passing artifacts of one checkpoint as MODEL/VERSION (see module doc).

    `artifacts`: entries ``{variant, precision, files: {name: source}, passed, decision,
    [metrics], [reasons]}``; a source is a store URI, a local path, or a dict written as a JSON
    document. Only passed entries are copied; rejected ones are listed in the manifest with
    their reasons. `lineage` must hold ``checkpoint_fingerprint`` (and should hold
    checkpoint_uri, code_version, tensorflow_version, converter_version). `decisions`: every
    gate decision of the run (defaults to the entries' decisions).
    """
    model = _check_name(model_name, "model name")
    version = _check_name(version, "version")
    entries = _check_artifacts(artifacts)
    lineage = _plain(dict(lineage or {}))
    fingerprint = lineage.get("checkpoint_fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise StoreError("lineage has no checkpoint_fingerprint.",
                         where="lineage.checkpoint_fingerprint",
                         fix="pass the checkpoint's content hash; it decides whether a re-run is "
                             "the same release.")
    if decisions is None:
        decisions = [e.get("decision") for e in entries if e.get("decision") is not None]
    decisions = _plain(decisions)
    _check_json("lineage", lineage)
    _check_json("decisions", decisions)
    for i, e in enumerate(entries):
        _check_json(f"artifacts[{i}] decision/metrics",
                    {"decision": e.get("decision"), "metrics": e.get("metrics")})

    version_prefix = f"{model}/{version}"
    mkey = manifest_key(model, version)
    result = PublishResult(model=model, version=version, status="published")

    if store.is_file(mkey):
        existing = store.read_json(mkey)
        old_fp = (existing.get("lineage") or {}).get("checkpoint_fingerprint")
        if old_fp != fingerprint:
            raise StoreError(
                f"version {version!r} of model {model!r} is already published from checkpoint "
                f"{old_fp!r}; this run's checkpoint is {fingerprint!r}. A published version is "
                "never overwritten.", where=store.uri(mkey),
                fix="publish under a new version (make_version() derives one from the checkpoint "
                    "fingerprint and time).")
        result.status = "already_published"
        result.manifest_uri = existing.get("manifest_uri", store.uri(mkey))
        result.published = [{"variant": e["variant"], "precision": e["precision"],
                             "files": e.get("files", {})} for e in existing.get("published", [])]
        result.rejected = [{"variant": e["variant"], "precision": e["precision"],
                            "reasons": e.get("reasons", [])} for e in existing.get("rejected", [])]
        # A run that stopped between the manifest and latest.json: finish its last step, but
        # never move latest.json back to an older release.
        head = latest(store, model)
        if head is None or (head.get("version") != version
                            and head.get("published_at", "") < existing.get("published_at", "")):
            result.latest_uri = _move_latest(store, model, existing, now)
            result.latest_moved = True
        else:
            result.latest_uri = store.uri(f"{model}/{LATEST}")
        return result

    passed = [e for e in entries if e["passed"]]
    rejected = [e for e in entries if not e["passed"]]
    result.rejected = [{"variant": e["variant"], "precision": e["precision"],
                        "reasons": _reasons(e)} for e in rejected]
    if not passed:
        result.status = "nothing_to_publish"
        return result

    if store.exists(version_prefix):  # a publish that stopped part-way: not a release
        store.delete_prefix(version_prefix)
        result.cleaned_partial = True

    published_entries = []
    try:
        for entry in passed:
            prefix = f"{version_prefix}/{entry['variant']}/{entry['precision']}"
            files = _copy_entry(store, prefix, entry)
            published_entries.append({
                "variant": entry["variant"],
                "precision": entry["precision"],
                "path": f"{entry['variant']}/{entry['precision']}",
                "files": files,
                "metrics": _plain(_metrics_of(store, entry, files)),
                "decision": _plain(entry.get("decision") or {}),
            })
        published_at = _now_iso(now)
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "model": model,
            "version": version,
            "published_at": published_at,
            "manifest_uri": store.uri(mkey),
            "lineage": lineage,
            "files": [{"path": f["key"][len(version_prefix) + 1:], "uri": f["uri"],
                       "size": f["size"], "sha256": f["sha256"]}
                      for e in published_entries for f in e["files"].values()],
            "published": published_entries,
            "rejected": [{"variant": e["variant"], "precision": e["precision"],
                          "reasons": _reasons(e), "metrics": _plain(e.get("metrics") or {}),
                          "decision": _plain(e.get("decision") or {})} for e in rejected],
            "decisions": decisions,
        }
        # LAST: from here on the version is published
        store.write_json(mkey, manifest, sort_keys=False)
    except BaseException:
        try:  # leave nothing that looks like a release; the next publish would clean it anyway
            if not store.is_file(mkey):
                store.delete_prefix(version_prefix)
        except Exception:
            pass
        raise

    result.manifest_uri = store.uri(mkey)
    result.published = [{"variant": e["variant"], "precision": e["precision"],
                         "files": e["files"]} for e in published_entries]
    result.latest_uri = _move_latest(store, model, manifest, now)
    result.latest_moved = True
    return result
