"""The no-regression baseline in O(1) reads: one small index per (variant, precision, source
kind, evaluation dataset), ``MODEL/baselines/VARIANT/PRECISION/KIND-DATA.json``.

The gate compares a new model with the newest *comparable* release: same model, variant,
precision, source kind (float or QAT checkpoint) and evaluation dataset. Reading every manifest
for that (once per model decision) cost 400 reads per model with 400 releases; the publish now
moves the index of each published model forward (by the checkpoint's creation time, then
version, compare-and-set like the pointers), and the gate reads one key. A yanked release is
never a baseline (`rebuild` leaves it out). A store written before the index existed is
indexed once, from its manifests, on first use.
"""
from __future__ import annotations

from include.store import layout
from include.store.pointers import order
from include.store.releases import entry_baseline, manifests_newest_first
from include.store.store import ArtifactStore


def _doc(manifest: dict, entry: dict) -> dict:
    lineage = manifest.get("lineage") or {}
    found = entry_baseline(manifest, entry["variant"], entry["precision"]) or {}
    return {**found, "created": manifest.get("checkpoint_created") or
            manifest.get("published_at"), "qat": bool(lineage.get("qat"))}


def _key(manifest: dict, entry: dict) -> str:
    lineage = manifest.get("lineage") or {}
    return layout.baseline_key(manifest["model"], entry["variant"], entry["precision"],
                               bool(lineage.get("qat")),
                               lineage.get("evaluation_data_fingerprint"))


def _marker(model: str) -> str:
    return f"{layout.check_name(model, 'model name')}/{layout.BASELINES}/.indexed"


def is_indexed(store: ArtifactStore, model: str) -> bool:
    return store.is_file(_marker(model))


def move_baselines(store: ArtifactStore, manifest: dict, *, yanked=None) -> None:
    """Move the baseline index of every model a release published forward (never back); a
    yanked release is no baseline."""
    if yanked is None:
        registry = store.read_json_if_any(layout.registry_key(manifest["model"])) or {}
        yanked = registry.get("yanked") or {}
    if manifest.get("version") in set(yanked):
        return
    if not is_indexed(store, manifest["model"]):   # an older store: index it whole, once
        rebuild(store, manifest["model"], yanked=yanked)
        return
    for entry in manifest.get("published") or []:
        doc = _doc(manifest, entry)

        def change(current, doc=doc):
            if current and order(current) >= order(doc):
                return None
            return doc
        store.update_json(_key(manifest, entry), change, sort_keys=False)


def rebuild(store: ArtifactStore, model: str, *, yanked=()) -> int:
    """The index from the manifests (first use on an older store; after a yank or a restore):
    every (variant, precision, kind, dataset) names its newest release that is not yanked."""
    newest: dict[str, dict] = {}
    yanked = set(yanked)
    for manifest in manifests_newest_first(store, model):
        if manifest.get("version") in yanked:
            continue
        for entry in manifest.get("published") or []:
            key = _key(manifest, entry)
            doc = _doc(manifest, entry)
            if key not in newest or order(doc) > order(newest[key]):
                newest[key] = doc
    prefix = f"{layout.check_name(model, 'model name')}/{layout.BASELINES}"
    for key in store.list(prefix):
        if key not in newest and not key.endswith("/.indexed"):
            store.delete(key)
    for key, doc in newest.items():
        store.write_json(key, doc, sort_keys=False)
    store.put_bytes(b"", _marker(model))
    return len(newest)


def comparable_baseline(store: ArtifactStore, model: str, variant: str, precision: str, *,
                        qat: bool, data_fingerprint: str | None) -> tuple[dict | None, str]:
    """The newest release to compare a new model with, and why, as ``(baseline, reason)``.

    Comparable means the same model, variant, precision, source kind (float or QAT checkpoint)
    and evaluation dataset (fingerprint): a number measured on other images or from another
    kind of checkpoint says nothing about a regression. Without one, `baseline` is None and
    `reason` says what the index holds instead."""
    if not is_indexed(store, model) and store.exists(model):
        rebuild(store, model)
    found = store.read_json_if_any(layout.baseline_key(model, variant, precision, qat,
                                                       data_fingerprint))
    if found:
        return found, f"release {found['version']}: same source kind and evaluation dataset"
    kind = "QAT" if qat else "float"
    others = []
    for key in store.list(layout.baselines_prefix(model, variant, precision)):
        other = store.read_json_if_any(key) or {}
        why = []
        if bool(other.get("qat")) != bool(qat):
            why.append(f"made from a {'QAT' if other.get('qat') else 'float'} checkpoint, this "
                       f"one from a {kind} checkpoint")
        theirs = other.get("evaluation_data_fingerprint")
        if not data_fingerprint or not theirs or theirs != data_fingerprint:
            why.append("evaluated on another dataset (fingerprint "
                       f"{_short(theirs)} vs {_short(data_fingerprint)})")
        others.append(f"{other.get('version')} ({'; '.join(why)})")
    if not others:
        return None, f"first release of {variant}/{precision}: no published baseline"
    listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return None, (f"no comparable baseline for {variant}/{precision} from a {kind} checkpoint "
                  f"on this evaluation dataset: {listed}")


def _short(fp: str | None) -> str:
    return "none" if not fp else str(fp).rpartition(":")[2][:12]
