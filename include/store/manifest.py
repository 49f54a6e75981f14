"""Publishing: stage the passing artifacts, then decide the release by a conditional create.

The keys are `include.store.layout`'s (MODEL/VERSION/manifest.json, the publisher's folder
MODEL/VERSION/PUBLISHER/VARIANT/PRECISION/, the consumer pointers of `include.store.pointers`).

PUBLISHER is the publishing run (its safe run id): every run copies its files into a folder of
its own, so two runs publishing the same checkpoint at once never touch each other's files.

Rules
* ``manifest.json`` is created with a conditional create (``O_EXCL`` semantics on a local disk,
  ``PutObject`` with ``IfNoneMatch="*"`` on S3). Exactly one publisher wins; its manifest names
  its own folder. A publisher of *another* checkpoint under the same version gets a StoreError
  (a published version is never overwritten).
* **Nothing deletes a file a manifest may name.** A publisher deletes only its own folder, and
  once its conditional create has been tried, only after reading back a manifest whose
  publisher is another run (that loser then reports ``already_published`` with the winner's
  manifest). A failure in between (the read-back, a timeout, a PUT whose answer was lost and
  whose retry got 412) leaves the files: the retry reads the manifest, and a manifest that
  names this publisher is its own release, finished by the retry and reported ``published``
  (so the attempt that completes the publish emits its asset events: one set per release).
  Before the create is tried a retry clears what its earlier attempt left. Folders of
  publishers that died and were never retried are removed by :func:`clean_version` once they
  are older than a grace period (the winner calls it after every publish).
* Every copied file is hashed at the source and again in the store before the manifest is
  created; the manifest records the size and hash of every file.
* Pointers move only after the manifest exists, only forward (by the checkpoint's creation
  time, ``checkpoint_created``, then version: ``latest`` is the newest checkpoint, not the run
  that finished last), each by compare-and-set (:meth:`ArtifactStore.update_json`), so a slow publisher
  of an older release never moves a pointer back. A re-run finishes a publish that stopped
  between its manifest and its pointers.

Each model entry (published or rejected) may carry ``device_benchmarks``: its figures on the
phones of the config, one per device and delegate (see `_split_devices`).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from include.errors import StoreError
from include.store import layout
from include.store.layout import MANIFEST, POINTERS, check_name
from include.store.baselines import move_baselines
from include.store.pointers import move_pointers
from include.store.releases import now_iso, plain, utc
from include.store.store import ArtifactStore

MANIFEST_SCHEMA = "mobiledet.manifest/2"
# A publisher folder without a manifest naming it, older than this, belongs to a publish that
# died and was never retried: clean_version removes it.
STALE_AFTER_S = 3600.0


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



def _check_artifacts(artifacts: list[dict]) -> list[dict]:
    if not isinstance(artifacts, (list, tuple)):
        raise StoreError(f"artifacts must be a list of entries, got {type(artifacts).__name__}.",
                         where="publish artifacts", fix="pass [{variant, precision, files, "
                                                        "passed, decision}, ...].")
    seen = set()
    out = []
    for i, raw in enumerate(artifacts):
        entry = plain(raw)
        where = f"publish artifacts[{i}]"
        if not isinstance(entry, dict):
            raise StoreError("an artifact entry must be a dict.", where=where,
                             fix="pass {variant, precision, files, passed, decision}.")
        variant = check_name(entry.get("variant"), f"{where}.variant")
        precision = check_name(entry.get("precision"), f"{where}.precision")
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
                check_name(name, f"{where}.files name")
                if not isinstance(src, (str, dict)):
                    raise StoreError(f"the source of {name} must be a URI, a local path or a "
                                     f"JSON document (dict), got {type(src).__name__}.",
                                     where=f"{where}.files.{name}", fix="pass a string or dict.")
        out.append(entry)
    return out


def _split_devices(entry: dict, metrics: dict | None) -> tuple[dict, dict]:
    """(the entry's metrics without the device list, {"device_benchmarks": [...]} or {}).

    The phones' figures (include/pipeline/steps/device.py) come as the entry's
    ``device_benchmarks``, or inside its metrics; the manifest keeps them at the entry's top
    level, one item per (device, delegate): device, delegate, latency_ms (None when the
    figure is not that delegate's own), status, phone, android, fallback, ... The metrics keep
    the short form ``device_latency_ms`` ({"device/delegate": ms})."""
    metrics = dict(metrics or {})
    found = metrics.pop("device_benchmarks", None)
    found = entry.get("device_benchmarks") or found
    return metrics, ({"device_benchmarks": plain(list(found))} if found else {})


def _rejected_entry(e: dict) -> dict:
    metrics, devices = _split_devices(e, e.get("metrics"))
    return {"variant": e["variant"], "precision": e["precision"], "reasons": _reasons(e),
            "metrics": plain(metrics), "decision": plain(e.get("decision") or {}), **devices}


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
            expected = store.sha256_of(src if "://" in src else _abs(src))
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


def clean_version(store: ArtifactStore, model: str, version: str, *,
                  stale_after_s: float = STALE_AFTER_S, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove publisher folders of MODEL/VERSION that no manifest names and that are older than
    `stale_after_s` (their publish died and was never retried); returns the removed folders.

    A folder written to more recently may belong to a publisher still at work: it is left
    alone (that publisher deletes it itself when it loses).
    """
    prefix = layout.version_prefix(model, version)
    manifest = store.read_json_if_any(layout.manifest_key(model, version))
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


def iso_or_none(created) -> str | None:
    """The checkpoint's creation time as the manifest records it (None when unknown)."""
    if created in (None, ""):
        return None
    return utc(created).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _drop_own(store: ArtifactStore, folder: str) -> bool:
    if store.exists(folder):
        store.delete_prefix(folder)
        return True
    return False


def _already(store: ArtifactStore, result: PublishResult, existing: dict, fingerprint: str,
             mkey: str) -> PublishResult:
    _check_fingerprint(store, result, existing, fingerprint, mkey)
    result.status = "already_published"
    result.winner = existing.get("publisher")
    result.manifest_uri = existing.get("manifest_uri", store.uri(mkey))
    result.published = [{"variant": e["variant"], "precision": e["precision"],
                         "files": e.get("files", {})} for e in existing.get("published", [])]
    result.rejected = [{"variant": e["variant"], "precision": e["precision"],
                        "reasons": e.get("reasons", [])} for e in existing.get("rejected", [])]
    # The winner may have stopped between its manifest and its pointers: finish that step
    # (forward only, so this never moves a pointer back to an older release).
    move_baselines(store, existing)
    result.pointers = move_pointers(store, existing)
    result.latest_moved = result.pointers.get(layout.pointer_key(result.model), False)
    result.latest_uri = store.uri(layout.pointer_key(result.model))
    return result


def publish_release(store: ArtifactStore, model_name: str, version: str, artifacts: list[dict],
                    lineage: dict, decisions: Any = None, *, now: datetime | None = None,
                    publisher: str | None = None, created=None,
                    stale_after_s: float = STALE_AFTER_S) -> PublishResult:
    """Publish the passing artifacts of one checkpoint as MODEL/VERSION (see module doc).

    `artifacts`: entries ``{variant, precision, files: {name: source}, passed, decision,
    [metrics], [reasons]}``; a source is a store URI, a local path, or a dict written as a JSON
    document. Only passed entries are copied; rejected ones are listed in the manifest with
    their reasons. `lineage` must hold ``checkpoint_fingerprint`` (and should hold
    checkpoint_uri, code_version, tensorflow_version, converter_version). `decisions`: every
    gate decision of the run (defaults to the entries' decisions). `publisher` names this
    publish (the run id: a retry of the same run reuses its folder); default: a fresh id.
    `created`: the checkpoint's creation time, which orders the pointers (else when published).
    """
    model = check_name(model_name, "model name")
    version = check_name(version, "version")
    publisher = check_name(publisher or f"p-{uuid.uuid4().hex[:12]}", "publisher")
    if publisher in (MANIFEST, POINTERS):
        raise StoreError(f"publisher {publisher!r} collides with a reserved name.",
                         where="publisher", fix="use the run id.")
    entries = _check_artifacts(artifacts)
    lineage = plain(dict(lineage or {}))
    fingerprint = lineage.get("checkpoint_fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise StoreError("lineage has no checkpoint_fingerprint.",
                         where="lineage.checkpoint_fingerprint",
                         fix="pass the checkpoint's content hash; it decides whether a re-run is "
                             "the same release.")
    if decisions is None:
        decisions = [e.get("decision") for e in entries if e.get("decision") is not None]
    decisions = plain(decisions)
    _check_json("lineage", lineage)
    _check_json("decisions", decisions)
    for i, e in enumerate(entries):
        _check_json(f"artifacts[{i}] decision/metrics",
                    {"decision": e.get("decision"), "metrics": e.get("metrics")})

    version_prefix = layout.version_prefix(model, version)
    own = layout.release_folder(model, version, publisher)
    mkey = layout.manifest_key(model, version)
    result = PublishResult(model=model, version=version, status="published", publisher=publisher)

    existing = store.read_json_if_any(mkey)
    if existing and existing.get("publisher") == publisher:
        # an earlier attempt of this publish created the release and stopped after it: this
        # attempt finishes it and reports it as its own (so its asset events are emitted)
        _check_fingerprint(store, result, existing, fingerprint, mkey)
        return _won(store, result, existing, stale_after_s)
    if existing:
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
    create_tried = False
    try:
        for entry in passed:
            files = _copy_entry(store, layout.release_model_folder(
                model, version, publisher, entry["variant"], entry["precision"]), entry)
            metrics, devices = _split_devices(entry, _metrics_of(store, entry, files))
            published_entries.append({
                "variant": entry["variant"],
                "precision": entry["precision"],
                "path": f"{publisher}/{entry['variant']}/{entry['precision']}",
                "files": files,
                "metrics": plain(metrics),
                "decision": plain(entry.get("decision") or {}),
                **devices,
            })
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "model": model,
            "version": version,
            "published_at": now_iso(now),
            "publisher": publisher,
            "checkpoint_created": iso_or_none(created),
            "manifest_uri": store.uri(mkey),
            "lineage": lineage,
            "files": [{"path": f["key"][len(version_prefix) + 1:], "uri": f["uri"],
                       "size": f["size"], "sha256": f["sha256"]}
                      for e in published_entries for f in e["files"].values()],
            "published": published_entries,
            "rejected": [_rejected_entry(e) for e in rejected],
            "decisions": decisions,
        }
        # The one decision: from here on exactly one publisher's manifest is the release.
        create_tried = True
        won = store.create_json(mkey, manifest, sort_keys=False)
    except BaseException:
        # Before the conditional create nothing can name these files: ours go. Once it was
        # tried, a manifest may name them (the create landed, its answer was lost): they stay,
        # and the retry reads the manifest and reconciles.
        if not create_tried:
            try:
                _drop_own(store, own)
            except Exception:  # noqa: BLE001 - the retry clears it
                pass
        raise
    if not won:
        current = store.read_json(mkey)
        if current.get("publisher") != publisher:   # another run's manifest: ours go
            _drop_own(store, own)
            return _already(store, result, current, fingerprint, mkey)
        manifest = current   # ours landed (e.g. a PUT retried after its answer was lost)
    return _won(store, result, manifest, stale_after_s)


def _check_fingerprint(store, result: PublishResult, existing: dict, fingerprint: str,
                       mkey: str) -> None:
    old_fp = (existing.get("lineage") or {}).get("checkpoint_fingerprint")
    if old_fp != fingerprint:
        raise StoreError(
            f"version {result.version!r} of model {result.model!r} is already published from "
            f"checkpoint {old_fp!r}; this run's checkpoint is {fingerprint!r}. A published "
            "version is never overwritten.", where=store.uri(mkey),
            fix="publish under a new version (make_version() derives one from the checkpoint "
                "fingerprint and time).")


def _won(store: ArtifactStore, result: PublishResult, manifest: dict,
         stale_after_s: float) -> PublishResult:
    """The publisher's own release is in place: its pointers move, stale folders go."""
    model, version = result.model, result.version
    result.winner = result.publisher
    result.manifest_uri = manifest.get("manifest_uri") or store.uri(
        layout.manifest_key(model, version))
    result.published = [{"variant": e["variant"], "precision": e["precision"],
                         "files": e["files"]} for e in manifest.get("published", [])]
    move_baselines(store, manifest)   # the gate's index first, the consumers' pointers last
    result.pointers = move_pointers(store, manifest)
    result.latest_moved = result.pointers.get(layout.pointer_key(model), False)
    result.latest_uri = store.uri(layout.pointer_key(model))
    try:  # housekeeping only: the release is complete whatever happens here
        clean_version(store, model, version, stale_after_s=stale_after_s)
    except StoreError:
        pass
    return result
