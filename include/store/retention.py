"""Retention: what housekeeping deletes, and what it never does.

Kept, always: the newest `keep_releases` releases of each model (by the checkpoint's creation
time, then version), every release a consumer pointer or a channel names, every yanked release
(its yank record says so), and a run's files while the ledger holds a checkpoint of that run
open. A finished run's intermediate files (exports, models, detections, decoded images) go
after `keep_runs_days`; its report and failure records after `keep_failures_days`. A run that
never wrote its report is deleted after `keep_failures_days` too, unless the ledger holds it.

A release is deleted manifest first: from that moment no reader takes it for a release, and
its files go after. `prune` returns the plan it applied (or, with `dry_run`, would apply).
"""
from __future__ import annotations

import time
from typing import Any

from include.store import layout
from include.store.ledger import Ledger, is_open
from include.store.pointers import order
from include.store.releases import list_versions
from include.store.store import ArtifactStore

DAY_S = 86400.0
KEEP_IN_FINISHED_RUNS = ("report.json", "report.md")


def models_of(store: ArtifactStore) -> list[str]:
    """The models of a store: top-level folders with releases."""
    out = []
    for name, is_dir in store.children(""):
        if is_dir and name not in layout.RESERVED_TOP and not name.startswith("."):
            try:
                layout.check_name(name, "model")
            except Exception:  # noqa: BLE001 - not a model folder
                continue
            if list_versions(store, name):
                out.append(name)
    return out


def named_versions(store: ArtifactStore, model: str) -> dict[str, str]:
    """version -> why it must stay: a pointer or channel names it, or it is yanked."""
    named: dict[str, str] = {}
    for key in store.list(model):
        rest = key[len(model) + 1:]
        top = rest.split("/", 1)[0]
        if key == layout.pointer_key(model) or top in (layout.POINTERS, "channels"):
            if not key.endswith(".json"):
                continue
            doc = store.read_json_if_any(key) or {}
            if doc.get("version"):
                named.setdefault(doc["version"], f"named by {rest}")
        elif rest.endswith("/yank.json") and rest.count("/") == 1:
            named.setdefault(top, "yanked (kept for the record)")
    return named


def _release_order(store: ArtifactStore, model: str) -> list[dict]:
    """Every release of the model, newest first, with the time that orders it."""
    out = []
    for version in list_versions(store, model):
        manifest = store.read_json_if_any(layout.manifest_key(model, version)) or {}
        out.append({"version": version, "created": manifest.get("checkpoint_created")
                    or manifest.get("published_at") or "", "published_at":
                    manifest.get("published_at")})
    return sorted(out, key=order, reverse=True)


def plan_releases(store: ArtifactStore, model: str, keep: int) -> dict:
    named = named_versions(store, model)
    kept, deleted = [], []
    for i, rel in enumerate(_release_order(store, model)):
        why = named.get(rel["version"])
        if i < keep:
            why = why or f"one of the {keep} newest"
        (kept if why else deleted).append({"version": rel["version"], "why": why})
    return {"kept": kept, "deleted": deleted}


def _open_runs(store: ArtifactStore, models: list[str]) -> dict[str, str]:
    held = {}
    for model in models or ["mobiledet"]:
        for record in Ledger(store, model).records():
            if is_open(record) and record.get("run_id"):
                held[str(record["run_id"])] = record.get("id") or "?"
    return held


def plan_runs(store: ArtifactStore, policy, held: dict[str, str], now: float) -> dict:
    """Which runs' files stay, which are trimmed to their report and failure records, which go
    (one listing of runs/, with each file's time)."""
    import datetime as _dt

    kept, trimmed, deleted = [], [], []
    by_run: dict[str, dict[str, float]] = {}
    for entry in store.list_entries(layout.RUNS) if store.exists(layout.RUNS) else []:
        key = f"{layout.RUNS}/{entry.key}"
        run_id = layout.parse_run_key(key)
        if run_id and entry.modified:
            when = _dt.datetime.fromisoformat(entry.modified.replace("Z", "+00:00"))
            by_run.setdefault(run_id, {})[key] = when.timestamp()
    for run_id, files in sorted(by_run.items()):
        report = layout.report_key(run_id)
        if run_id in held:
            kept.append({"run_id": run_id, "why": f"the ledger holds {held[run_id]} open"})
            continue
        # a finished run is as old as its report; one that never wrote it, as its newest file
        age_days = (now - files.get(report, max(files.values()))) / DAY_S
        if age_days >= policy.keep_failures_days:
            deleted.append({"run_id": run_id, "files": len(files),
                            "why": f"{'finished' if report in files else 'unfinished'}, "
                                   f"{age_days:.1f} days old"})
        elif report in files and age_days >= policy.keep_runs_days:
            drop = sorted(k for k in files if not _kept_in_finished(run_id, k))
            if drop:
                trimmed.append({"run_id": run_id, "files": drop,
                                "why": f"finished {age_days:.1f} days ago: intermediate "
                                       "files go, the report and failure records stay"})
        else:
            kept.append({"run_id": run_id, "why": f"{age_days:.1f} days old"})
    return {"kept": kept, "trimmed": trimmed, "deleted": deleted}


def _kept_in_finished(run_id: str, key: str) -> bool:
    rest = key[len(layout.run_prefix(run_id)) + 1:]
    return rest in KEEP_IN_FINISHED_RUNS or f"/{layout.FAILURES}/" in f"/{rest}"


def prune(store: ArtifactStore, policy, *, dry_run: bool = False,
          models: list[str] | None = None, now: float | None = None) -> dict[str, Any]:
    """Apply the retention policy (`include.config.RetentionConfig`) to a store; returns what
    was (or, with `dry_run`, would be) kept and deleted, and why."""
    now = time.time() if now is None else now
    models = models or models_of(store)
    out: dict[str, Any] = {"store": store.base_uri, "dry_run": dry_run, "models": {},
                           "deleted_files": 0}
    for model in models:
        plan = plan_releases(store, model, policy.keep_releases)
        out["models"][model] = plan
        if not dry_run:
            for rel in plan["deleted"]:
                # the manifest first: from now on nobody reads this as a release
                store.delete(layout.manifest_key(model, rel["version"]))
                out["deleted_files"] += 1 + store.delete_prefix(
                    layout.version_prefix(model, rel["version"]))
    runs = plan_runs(store, policy, _open_runs(store, models), now)
    out["runs"] = runs
    if not dry_run:
        for run in runs["deleted"]:
            out["deleted_files"] += store.delete_prefix(layout.run_prefix(run["run_id"]))
        for run in runs["trimmed"]:
            for key in run["files"]:
                out["deleted_files"] += int(store.delete(key))
        for model in models:
            out["models"][model]["ledger"] = Ledger(store, model).repair()
    return out
