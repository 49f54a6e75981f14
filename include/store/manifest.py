"""Publishing: stage the passing artifacts, then decide the release by a conditional create.

Layout inside the store::

    MODEL/VERSION/manifest.json            the release: created once, never overwritten
    MODEL/VERSION/PUBLISHER/VARIANT/PRECISION/model.tflite | model_edgetpu.tflite |
                            conversion.json | metrics.json | validation.json
    MODEL/latest.json                      newest release of the model (any variant)
    MODEL/latest/VARIANT.json              newest release holding a model of VARIANT
    MODEL/latest/VARIANT/PRECISION.json    newest release of (VARIANT, PRECISION): the manifest
                                           URI and the model file's URI, size and sha256

PUBLISHER is the publishing run (its safe run id): every run copies its files into a folder of
its own, so two runs publishing the same checkpoint at once never touch each other's files.

Rules
* ``manifest.json`` is created with a conditional create (``O_EXCL`` semantics on a local disk,
  ``PutObject`` with ``IfNoneMatch="*"`` on S3). Exactly one publisher wins; its manifest names
  its own folder. A loser deletes its own folder and reports ``already_published`` with the
  winner's manifest; a publisher of *another* checkpoint under the same version gets a
  StoreError (a published version is never overwritten).
* A publisher deletes only its own folder: a retry of the same run first clears what its
  earlier, interrupted attempt left there. Folders of publishers that died and were never
  retried are removed by :func:`clean_version` once they are older than a grace period (the
  winner calls it after every publish).
* Every copied file is hashed at the source and again in the store before the manifest is
  created; the manifest records the size and hash of every file.
* Pointers move only after the manifest exists, only forward (by ``published_at``, then
  version), each by compare-and-set (:meth:`ArtifactStore.update_json`), so a slow publisher
  of an older release never moves a pointer back. A re-run finishes a publish that stopped
  between its manifest and its pointers.
"""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from include.errors import StoreError
from include.store.store import ArtifactStore, _sha256_of

MANIFEST_SCHEMA = "mobiledet.manifest/2"
LATEST_SCHEMA = "mobiledet.latest/2"
MANIFEST = "manifest.json"
LATEST = "latest.json"
POINTERS = "latest"
# A publisher folder without a manifest naming it, older than this, belongs to a publish that
# died and was never retried: clean_version removes it.
STALE_AFTER_S = 3600.0
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
    publisher: str | None = None
    winner: str | None = None
    pointers: dict = field(default_factory=dict)

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


def pointer_key(model: str, variant: str | None = None, precision: str | None = None) -> str:
    """Where the consumer pointer of a model, a variant or a (variant, precision) lives."""
    model = _check_name(model, "model name")
    if variant is None:
        return f"{model}/{LATEST}"
    variant = _check_name(variant, "variant")
    if precision is None:
        return f"{model}/{POINTERS}/{variant}.json"
    return f"{model}/{POINTERS}/{variant}/{_check_name(precision, 'precision')}.json"


def read_manifest(store: ArtifactStore, model: str, version: str) -> dict:
    key = manifest_key(_check_name(model, "model name"), _check_name(version, "version"))
    if not store.is_file(key):
        raise StoreError(f"version {version!r} of model {model!r} is not published (no manifest).",
                         where=store.uri(key),
                         fix=f"pick one of the published versions: {list_versions(store, model)}.")
    return store.read_json(key)


def _read_if_any(store: ArtifactStore, key: str) -> dict | None:
    return store.read_json(key) if store.is_file(key) else None


def latest(store: ArtifactStore, model: str) -> dict | None:
    """The content of MODEL/latest.json, or None before the first release."""
    return _read_if_any(store, pointer_key(model))


def pointer(store: ArtifactStore, model: str, variant: str,
            precision: str | None = None) -> dict | None:
    """The newest published release of `variant` (and `precision`): one small object to read.

    For (variant, precision): version, manifest_uri, published_at, model_uri, sha256, size (and
    the Edge TPU model's where compiled). For a variant: the same per precision under `models`.
    None before the first such release.
    """
    return _read_if_any(store, pointer_key(model, variant, precision))


def list_versions(store: ArtifactStore, model: str) -> list[str]:
    """Published versions (those with a manifest), oldest first by name."""
    model = _check_name(model, "model name")
    versions = []
    for key in store.list(model):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST:
            versions.append(parts[1])
    return sorted(versions)


def _manifests_newest_first(store: ArtifactStore, model: str) -> list[dict]:
    manifests = [read_manifest(store, model, v) for v in list_versions(store, model)]
    manifests.sort(key=lambda m: (m.get("published_at", ""), m.get("version", "")), reverse=True)
    return manifests


def _entry_baseline(manifest: dict, variant: str, precision: str) -> dict | None:
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
    for manifest in _manifests_newest_first(store, model):
        found = _entry_baseline(manifest, variant, precision)
        if found:
            return found
    return None


def comparable_baseline(store: ArtifactStore, model: str, variant: str, precision: str, *,
                        qat: bool, data_fingerprint: str | None) -> tuple[dict | None, str]:
    """The newest release to compare a new model with, and why, as ``(baseline, reason)``.

    Comparable means the same model, variant, precision, source kind (float or QAT checkpoint)
    and evaluation dataset (fingerprint): a number measured on other images or from another
    kind of checkpoint says nothing about a regression. Without one, `baseline` is None and
    `reason` says what was there instead.
    """
    kind = "QAT" if qat else "float"
    others = []
    for manifest in _manifests_newest_first(store, model):
        found = _entry_baseline(manifest, variant, precision)
        if not found:
            continue
        why = []
        if bool(found["qat"]) != bool(qat):
            why.append(f"made from a {'QAT' if found['qat'] else 'float'} checkpoint, this one "
                       f"from a {kind} checkpoint")
        theirs = found["evaluation_data_fingerprint"]
        if not data_fingerprint or not theirs or theirs != data_fingerprint:
            why.append("evaluated on another dataset (fingerprint "
                       f"{_short(theirs)} vs {_short(data_fingerprint)})")
        if not why:
            return found, f"release {found['version']}: same source kind and evaluation dataset"
        others.append(f"{found['version']} ({'; '.join(why)})")
    if not others:
        return None, f"first release of {variant}/{precision}: no published baseline"
    listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return None, (f"no comparable baseline for {variant}/{precision} from a {kind} checkpoint "
                  f"on this evaluation dataset: {listed}")


def _short(fp: str | None) -> str:
    return "none" if not fp else str(fp).rpartition(":")[2][:12]


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


def _advance(doc_of):
    """A compare-and-set change that replaces a pointer only with a newer release."""
    def change(current):
        new = doc_of(current)
        if current and (current.get("published_at", ""), current.get("version", "")) >= \
                (new["published_at"], new["version"]):
            return None
        return new
    return change


def _pointer_docs(manifest: dict) -> dict[str, Any]:
    """Pointer key -> document builder for every pointer this release may move."""
    model = manifest["model"]
    base = {"schema": LATEST_SCHEMA, "model": model, "version": manifest["version"],
            "manifest_uri": manifest["manifest_uri"], "published_at": manifest["published_at"],
            "qat": (manifest.get("lineage") or {}).get("qat")}
    docs: dict[str, Any] = {pointer_key(model): lambda cur: dict(base)}
    by_variant: dict[str, dict] = {}
    for entry in manifest.get("published", []):
        files = entry.get("files") or {}
        model_file = files.get("model.tflite") or {}
        doc = {**base, "variant": entry["variant"], "precision": entry["precision"],
               "model_uri": model_file.get("uri"), "sha256": model_file.get("sha256"),
               "size": model_file.get("size"),
               "metric": (entry.get("decision") or {}).get("metric"),
               "map": (entry.get("decision") or {}).get("map")}
        if "model_edgetpu.tflite" in files:
            doc.update(edgetpu_model_uri=files["model_edgetpu.tflite"].get("uri"),
                       edgetpu_sha256=files["model_edgetpu.tflite"].get("sha256"))
        docs[pointer_key(model, entry["variant"], entry["precision"])] = \
            (lambda d: lambda cur: dict(d))(doc)
        by_variant.setdefault(entry["variant"], {})[entry["precision"]] = {
            k: doc[k] for k in ("model_uri", "sha256", "size", "metric", "map")}
    for variant, models in by_variant.items():
        docs[pointer_key(model, variant)] = (lambda d: lambda cur: d)(
            {**base, "variant": variant, "models": models})
    return docs


def move_pointers(store: ArtifactStore, manifest: dict) -> dict[str, bool]:
    """Move every consumer pointer of a published release forward; key -> moved or not."""
    moved = {}
    for key, doc_of in _pointer_docs(manifest).items():
        after = store.update_json(key, _advance(doc_of), sort_keys=False)
        moved[key] = bool(after) and after.get("version") == manifest["version"] and \
            after.get("published_at") == manifest["published_at"]
    return moved


def clean_version(store: ArtifactStore, model: str, version: str, *,
                  stale_after_s: float = STALE_AFTER_S, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove publisher folders of MODEL/VERSION that no manifest names and that are older than
    `stale_after_s` (their publish died and was never retried); returns the removed folders.

    A folder written to more recently may belong to a publisher still at work: it is left
    alone (that publisher deletes it itself when it loses).
    """
    model, version = _check_name(model, "model name"), _check_name(version, "version")
    prefix = f"{model}/{version}"
    manifest = _read_if_any(store, manifest_key(model, version))
    keep = set(keep) | ({manifest.get("publisher")} if manifest else set())
    folders: dict[str, list[str]] = {}
    for key in store.list(prefix):
        parts = key[len(prefix) + 1:].split("/")
        if len(parts) > 1:
            folders.setdefault(parts[0], []).append(key)
    removed = []
    now = time.time()
    for name, keys in sorted(folders.items()):
        if name in keep:
            continue
        stamps = []
        for k in keys:
            try:
                stamps.append(store.modified(k))
            except StoreError:  # gone since the listing: its owner is removing it
                stamps.append(now)
        if now - max(stamps) >= stale_after_s:
            store.delete_prefix(f"{prefix}/{name}")
            removed.append(f"{prefix}/{name}")
    return removed


def _drop_own(store: ArtifactStore, folder: str) -> bool:
    if store.exists(folder):
        store.delete_prefix(folder)
        return True
    return False


def _already(store: ArtifactStore, result: PublishResult, existing: dict, fingerprint: str,
             mkey: str) -> PublishResult:
    old_fp = (existing.get("lineage") or {}).get("checkpoint_fingerprint")
    if old_fp != fingerprint:
        raise StoreError(
            f"version {result.version!r} of model {result.model!r} is already published from "
            f"checkpoint {old_fp!r}; this run's checkpoint is {fingerprint!r}. A published "
            "version is never overwritten.", where=store.uri(mkey),
            fix="publish under a new version (make_version() derives one from the checkpoint "
                "fingerprint and time).")
    result.status = "already_published"
    result.winner = existing.get("publisher")
    result.manifest_uri = existing.get("manifest_uri", store.uri(mkey))
    result.published = [{"variant": e["variant"], "precision": e["precision"],
                         "files": e.get("files", {})} for e in existing.get("published", [])]
    result.rejected = [{"variant": e["variant"], "precision": e["precision"],
                        "reasons": e.get("reasons", [])} for e in existing.get("rejected", [])]
    # The winner may have stopped between its manifest and its pointers: finish that step
    # (forward only, so this never moves a pointer back to an older release).
    result.pointers = move_pointers(store, existing)
    result.latest_moved = result.pointers.get(pointer_key(result.model), False)
    result.latest_uri = store.uri(pointer_key(result.model))
    return result


def publish(store: ArtifactStore, model_name: str, version: str, artifacts: list[dict],
            lineage: dict, decisions: Any = None, *, now: datetime | None = None,
            publisher: str | None = None, stale_after_s: float = STALE_AFTER_S) -> PublishResult:
    """Publish the passing artifacts of one checkpoint as MODEL/VERSION (see module doc).

    `artifacts`: entries ``{variant, precision, files: {name: source}, passed, decision,
    [metrics], [reasons]}``; a source is a store URI, a local path, or a dict written as a JSON
    document. Only passed entries are copied; rejected ones are listed in the manifest with
    their reasons. `lineage` must hold ``checkpoint_fingerprint`` (and should hold
    checkpoint_uri, code_version, tensorflow_version, converter_version). `decisions`: every
    gate decision of the run (defaults to the entries' decisions). `publisher` names this
    publish (the run id: a retry of the same run reuses its folder); default: a fresh id.
    """
    model = _check_name(model_name, "model name")
    version = _check_name(version, "version")
    publisher = _check_name(publisher or f"p-{uuid.uuid4().hex[:12]}", "publisher")
    if publisher in (MANIFEST, POINTERS):
        raise StoreError(f"publisher {publisher!r} collides with a reserved name.",
                         where="publisher", fix="use the run id.")
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
    own = f"{version_prefix}/{publisher}"
    mkey = manifest_key(model, version)
    result = PublishResult(model=model, version=version, status="published", publisher=publisher)

    existing = _read_if_any(store, mkey)
    if existing:
        if existing.get("publisher") != publisher:
            _drop_own(store, own)
        return _already(store, result, existing, fingerprint, mkey)

    passed = [e for e in entries if e["passed"]]
    rejected = [e for e in entries if not e["passed"]]
    result.rejected = [{"variant": e["variant"], "precision": e["precision"],
                        "reasons": _reasons(e)} for e in rejected]
    # An earlier attempt of this same publisher (a retried task) may have left files: they
    # are this publisher's own, so they go; nobody else's folder is touched.
    result.cleaned_partial = _drop_own(store, own)
    if not passed:
        result.status = "nothing_to_publish"
        return result

    published_entries = []
    try:
        for entry in passed:
            files = _copy_entry(store, f"{own}/{entry['variant']}/{entry['precision']}", entry)
            published_entries.append({
                "variant": entry["variant"],
                "precision": entry["precision"],
                "path": f"{publisher}/{entry['variant']}/{entry['precision']}",
                "files": files,
                "metrics": _plain(_metrics_of(store, entry, files)),
                "decision": _plain(entry.get("decision") or {}),
            })
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "model": model,
            "version": version,
            "published_at": _now_iso(now),
            "publisher": publisher,
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
        # The one decision: from here on exactly one publisher's manifest is the release.
        won = store.create_json(mkey, manifest, sort_keys=False)
    except BaseException:
        try:  # leave nothing of ours behind; a retry would clear it anyway
            _drop_own(store, own)
        except Exception:
            pass
        raise
    if not won:
        _drop_own(store, own)
        return _already(store, result, store.read_json(mkey), fingerprint, mkey)

    result.winner = publisher
    result.manifest_uri = store.uri(mkey)
    result.published = [{"variant": e["variant"], "precision": e["precision"],
                         "files": e["files"]} for e in published_entries]
    result.pointers = move_pointers(store, manifest)
    result.latest_moved = result.pointers.get(pointer_key(model), False)
    result.latest_uri = store.uri(pointer_key(model))
    try:  # housekeeping only: the release is complete whatever happens here
        clean_version(store, model, version, stale_after_s=stale_after_s)
    except StoreError:
        pass
    return result
