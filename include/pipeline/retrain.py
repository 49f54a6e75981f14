"""Scheduled retraining: fine-tune the newest checkpoint of each variant and land the result.

For each variant, `retrain` takes the NEWEST float checkpoint of that variant in the checkpoint
store (by checkpoint.json ``created``; the marker's modification time breaks ties and stands in
when ``created`` is missing), fine-tunes it on a COCO-format dataset (float), then fine-tunes the
new float checkpoint quantization-aware where the variant has QAT (edgetpu, dsp, gpu; not cpu).
Every new checkpoint goes into the store as ``<variant>-<float|qat>-<UTC stamp>-retrain/``,
files first and ``checkpoint.json`` LAST, so the landing watcher
(`operators.triggers.CheckpointLandingTrigger`) sees it only when it is complete, and starts the
conversion. Nothing else links retraining to conversion.

Each new checkpoint and the checkpoint it is compared with are scored on the held-out split
(`include.mobiledet.keras_eval.evaluate_keras`, as `mobiledet train --eval-split`): the float
child against its parent, the QAT child against the newest earlier QAT checkpoint of the variant
(else the float checkpoint it started from). A child that scores worse still lands: the
conversion's gates decide. The result says "worse than parent" for it, and its checkpoint.json
carries the comparison under ``retrain``.

Time budget: ``budget_s`` is per variant. `train()` cannot stop mid-run, so the budget is
applied between steps of the work: the QAT run is shortened to what the float run's measured
speed says fits in the time left, and skipped when less than `MIN_STEPS` fit.

No Airflow and no TensorFlow at import time: the DAG file imports `settings_from_env` from here.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from include.errors import CheckpointError, ConfigError
from include.pipeline import landing
from include.store.transfer import local_copy

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEFAULTS: dict[str, Any] = {
    "store": str(REPO / "checkpoints"),
    "schedule": "@daily",
    "variants": ["edgetpu"],
    "data": "",
    "steps": 200,
    "qat_steps": 100,
    "budget_s": 1800.0,
    "batch": 16,
    "optimizer": "adam",
    "augment": "flip",
    "eval_split": "val",
    "eval_images": None,
    "metric": "AP50",
    "conn_id": "aws_default",
}
FINETUNE_LR_FACTOR = 0.1   # fine-tuning a trained model: a tenth of the from-scratch default LR
QAT_SLOWDOWN = 0.5         # QAT steps take about twice as long as float steps (fake-quant ops)
MIN_STEPS = 5
METRICS = ("AP", "AP50", "AP75")
SUFFIX = "retrain"


# ------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------
def _int(value, name, minimum=0):
    try:
        out = int(str(value).strip())
    except (TypeError, ValueError):
        out = None
    if out is None or out < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}.",
                          where=name, fix=f"set e.g. {name}=200.")
    return out


def _float(value, name):
    try:
        out = float(str(value).strip())
    except (TypeError, ValueError):
        out = None
    if out is None or not out > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}.",
                          where=name, fix=f"set e.g. {name}=1800.")
    return out


def parse_variants(value, where="variants") -> list[str]:
    from include.mobiledet.spec import VARIANTS

    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    out = [str(v).strip().lower() for v in items if str(v).strip()]
    bad = [v for v in out if v not in VARIANTS]
    if bad or not out:
        raise ConfigError(f"unknown or no variants {bad or value!r}; allowed: "
                          f"{', '.join(VARIANTS)}.", where=where,
                          fix="give a comma-separated list, e.g. edgetpu,cpu.")
    return list(dict.fromkeys(out))


def settings_from_env(env=None) -> dict:
    """The DAG's settings: DEFAULTS overridden by the MOBILEDET_RETRAIN_* variables and
    MOBILEDET_CHECKPOINT_STORE, as the one settings object (include/settings.py) reads and
    validates them (`env`: another mapping than os.environ)."""
    from include.settings import settings

    s = settings(env)
    return {**DEFAULTS, "store": s.retrain_store, "schedule": s.retrain_schedule_or_none,
            "variants": list(s.retrain_variants), "data": s.retrain_data,
            "steps": s.retrain_steps, "qat_steps": s.retrain_qat_steps,
            "budget_s": s.retrain_budget_s, "batch": s.retrain_batch,
            "eval_images": s.retrain_eval_images}


# ------------------------------------------------------------------------------------------
# the store
# ------------------------------------------------------------------------------------------
def store_checkpoints(store) -> list[dict]:
    """Every landed mobiledet checkpoint of the store: {key, uri, meta, modified}."""
    out = []
    for item in landing.landed_checkpoints(store.list_entries("")):
        if item.kind != "checkpoint":
            continue     # TFOD bundles hold frozen graphs, nothing to fine-tune
        try:
            meta = store.read_json(item.marker)
        except Exception as exc:  # a damaged checkpoint must not stop the others
            log.warning("skipping %s: %s", store.uri(item.marker), exc)
            continue
        if isinstance(meta, dict) and meta.get("variant"):
            out.append({"key": item.key, "uri": store.uri(item.key), "meta": meta,
                        "modified": item.modified})
    return out


def newest_checkpoint(checkpoints: list[dict], variant: str, qat: bool) -> dict | None:
    """The newest checkpoint of a variant and kind, by `created` then the marker's time."""
    chosen = [c for c in checkpoints
              if c["meta"].get("variant") == variant and bool(c["meta"].get("qat")) == qat]
    if not chosen:
        return None

    def when(c):
        return (str(c["meta"].get("created") or c["modified"] or "")[:19],
                str(c["modified"] or ""))
    return max(chosen, key=when)


def child_name(variant: str, qat: bool, stamp: str) -> str:
    return f"{variant}-{'qat' if qat else 'float'}-{stamp}-{SUFFIX}"


def utc_stamp(now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def land_checkpoint(store, local_dir: Path, name: str) -> str:
    """Upload a checkpoint folder: every file first, checkpoint.json LAST. Returns its URI."""
    local_dir = Path(local_dir)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    marker = local_dir / landing.CHECKPOINT_MARKER
    if marker not in files:
        raise CheckpointError("the new checkpoint has no checkpoint.json.", where=str(local_dir),
                              fix="this is a bug in the retrain step; train again.")
    try:
        for path in [p for p in files if p != marker] + [marker]:
            store.put_file(str(path), f"{name}/{path.relative_to(local_dir).as_posix()}")
    except Exception:
        # Without checkpoint.json the folder is not landed; remove it so no debris is left.
        try:
            store.delete_prefix(name)
        except Exception as exc:  # the original error matters more
            log.warning("could not remove the incomplete %s: %s", store.uri(name), exc)
        raise
    return store.uri(name)


def _unique_name(store, variant, qat, stamp) -> str:
    name = child_name(variant, qat, stamp)
    n = 2
    while store.exists(name):
        name = child_name(variant, qat, f"{stamp}.{n}")
        n += 1
    return name


# ------------------------------------------------------------------------------------------
# scores
# ------------------------------------------------------------------------------------------
def verdict(parent: dict | None, child: dict, metric: str) -> dict:
    """Compare two {AP, AP50, AP75} score dicts on `metric`."""
    if parent is None:
        return {"metric": metric, "delta": None, "worse_than_parent": False,
                "verdict": "no parent score"}
    delta = float(child[metric]) - float(parent[metric])
    worse = delta < 0
    text = "worse than parent" if worse else ("better than parent" if delta > 0
                                             else "same as parent")
    return {"metric": metric, "delta": round(delta, 6), "worse_than_parent": worse,
            "verdict": text}


def _scores(ckpt_dir, data_dir, split, max_images) -> dict:
    from include.mobiledet.keras_eval import evaluate_keras

    ev = evaluate_keras(str(ckpt_dir), str(data_dir), split=split, max_images=max_images)
    return {**{k: float(ev[k]) for k in METRICS}, "images": ev["images"], "split": split,
            "seconds": ev["seconds"]}


# ------------------------------------------------------------------------------------------
# the stage
# ------------------------------------------------------------------------------------------
def retrain(store_uri: str, data: str, variants, *, steps: int = DEFAULTS["steps"],
            qat_steps: int = DEFAULTS["qat_steps"], budget_s: float = DEFAULTS["budget_s"],
            batch: int = DEFAULTS["batch"], optimizer: str = DEFAULTS["optimizer"],
            augment: str = DEFAULTS["augment"], learning_rate: float | None = None,
            eval_split: str = DEFAULTS["eval_split"], eval_images: int | None = None,
            metric: str = DEFAULTS["metric"], conn_id: str | None = DEFAULTS["conn_id"],
            seed: int = 0, now: _dt.datetime | None = None, progress: bool = False,
            require_parent: bool = True) -> dict:
    """Fine-tune the newest checkpoint of each variant and land the new checkpoints.

    Returns {"store", "data", "stamp", "checkpoints": [one row per new checkpoint: variant,
    qat, name, uri, parent_uri, parent_fingerprint, fingerprint, steps, train_seconds,
    scores, parent_scores, metric, delta, worse_than_parent, verdict], "skipped": [{variant,
    qat, reason}], "summary": [one line per row], "seconds"}. With require_parent (default),
    a store holding no float checkpoint of any of the variants is an error (CheckpointError);
    without it that is an empty result (the DAG checks across its per-variant tasks).
    """
    from include.store import open_store

    t0 = time.perf_counter()
    variants = parse_variants(variants)
    steps = _int(steps, "steps", 1)
    qat_steps = _int(qat_steps, "qat_steps", 0)
    budget_s = _float(budget_s, "budget_s")
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}.",
                          where="metric", fix="use AP50 (the gates' default metric).")
    if not data:
        raise ConfigError("no retraining dataset is set.", where="MOBILEDET_RETRAIN_DATA",
                          fix="set MOBILEDET_RETRAIN_DATA (or the run param `data`) to a "
                              "COCO-format dataset folder with train and val splits, or its "
                              "s3:// URI.")
    store = open_store(store_uri, conn_id=conn_id)
    stamp = utc_stamp(now)
    rows, skipped = [], []
    existing = store_checkpoints(store)
    with tempfile.TemporaryDirectory(prefix="mobiledet-retrain-") as tmp:
        work = Path(tmp)
        data_dir = local_copy(data, work / "data", conn_id)
        from include.mobiledet.train import open_split
        open_split(data_dir, "train")        # a missing split fails before any training
        open_split(data_dir, eval_split)
        for variant in variants:
            parent = newest_checkpoint(existing, variant, qat=False)
            if parent is None:
                skipped.append({"variant": variant, "qat": False,
                                "reason": f"no float {variant} checkpoint in {store.base_uri}"})
                continue
            rows += _retrain_variant(store, existing, parent, variant, data_dir, work, stamp,
                                     steps=steps, qat_steps=qat_steps, budget_s=budget_s,
                                     batch=batch, optimizer=optimizer, augment=augment,
                                     learning_rate=learning_rate, eval_split=eval_split,
                                     eval_images=eval_images, metric=metric,
                                     conn_id=conn_id, seed=seed, progress=progress,
                                     skipped=skipped)
    if not rows and require_parent:
        raise nothing_to_retrain(store.base_uri, skipped)
    summary = [_summary_line(r) for r in rows] + \
        [f"{s['variant']} {'qat' if s['qat'] else 'float'}: skipped ({s['reason']})"
         for s in skipped]
    for line in summary:
        (log.warning if "worse than parent" in line else log.info)("retrain: %s", line)
    return {"store": store.base_uri, "data": str(data), "stamp": stamp, "checkpoints": rows,
            "skipped": skipped, "summary": summary,
            "seconds": round(time.perf_counter() - t0, 2)}


def nothing_to_retrain(store_uri: str, skipped: list[dict]) -> CheckpointError:
    return CheckpointError(
        f"nothing to retrain: {'; '.join(s['reason'] for s in skipped) or 'no variants'}.",
        where=store_uri,
        fix="train a first checkpoint of each variant into the checkpoint store (mobiledet "
            "train --out <store>/<name>), or set MOBILEDET_RETRAIN_VARIANTS / "
            "MOBILEDET_CHECKPOINT_STORE to the ones that exist.")


def merge_results(results: list[dict]) -> dict:
    """One result for a run from per-variant results (the DAG's summary task)."""
    results = [r for r in results if r]
    rows = [row for r in results for row in r["checkpoints"]]
    skipped = [s for r in results for s in r["skipped"]]
    out = {"store": results[0]["store"] if results else None,
           "checkpoints": rows, "skipped": skipped,
           "summary": [line for r in results for line in r["summary"]],
           "worse_than_parent": [row["name"] for row in rows if row["worse_than_parent"]],
           "seconds": round(sum(r["seconds"] for r in results), 2)}
    return out


def _summary_line(r: dict) -> str:
    kind = "qat" if r["qat"] else "float"
    m = r["metric"]
    parent = r["parent_scores"][m] if r["parent_scores"] else None
    head = f"{r['variant']} {kind}: {r['name']} ({r['steps']} steps)"
    if parent is None:
        return f"{head} {m} {r['scores'][m]:.3f}; landed"
    tail = "; lands anyway, the conversion's gates decide" if r["worse_than_parent"] else \
        "; landed"
    return (f"{head} {m} {r['scores'][m]:.3f} vs {parent:.3f} ({r['compared_with']}): "
            f"{r['verdict']}{tail}")


def _retrain_variant(store, existing, parent, variant, data_dir, work, stamp, *, steps,
                     qat_steps, budget_s, batch, optimizer, augment, learning_rate, eval_split,
                     eval_images, metric, conn_id, seed, progress, skipped) -> list[dict]:
    from include.mobiledet.qat import QAT_VARIANTS
    from include.mobiledet.train import DEFAULT_LEARNING_RATES, train

    deadline = time.monotonic() + budget_s
    vwork = work / variant
    parent_dir = local_copy(parent["uri"], vwork / "parent", conn_id)
    cache: dict[str, dict] = {}

    def scores_of(ckpt_dir, meta):
        fp = meta.get("fingerprint") or str(ckpt_dir)
        if fp not in cache:
            cache[fp] = _scores(ckpt_dir, data_dir, eval_split, eval_images)
        return cache[fp]

    rows = []
    lr = learning_rate
    if lr is None:
        lr = DEFAULT_LEARNING_RATES[optimizer] * batch / 32.0 * FINETUNE_LR_FACTOR
    parent_scores = scores_of(parent_dir, parent["meta"])
    float_row, float_dir, rate = _train_one(
        store, train, variant, False, parent, parent_dir, parent_scores, "parent", data_dir,
        vwork / "float", stamp, steps, batch=batch, optimizer=optimizer, augment=augment,
        learning_rate=lr, seed=seed, progress=progress, metric=metric, scores_of=scores_of)
    rows.append(float_row)

    if variant not in QAT_VARIANTS or qat_steps == 0:
        if variant in QAT_VARIANTS:
            skipped.append({"variant": variant, "qat": True, "reason": "qat_steps is 0"})
        return rows
    left = deadline - time.monotonic() - parent_scores["seconds"]   # keep time to score it
    fit = int(left * rate * QAT_SLOWDOWN / batch) if rate else qat_steps
    n = min(qat_steps, fit)
    if n < min(qat_steps, MIN_STEPS):     # the budget leaves too little for a useful QAT run
        skipped.append({"variant": variant, "qat": True,
                        "reason": f"time budget: {max(left, 0):.0f} s of {budget_s:.0f} s "
                                  f"left fit {max(fit, 0)} QAT steps (< {MIN_STEPS})"})
        return rows
    previous_qat = newest_checkpoint(existing, variant, qat=True)
    if previous_qat is not None:
        base_dir = local_copy(previous_qat["uri"], vwork / "previous-qat", conn_id)
        base, base_dir_scores, role = previous_qat, scores_of(base_dir, previous_qat["meta"]), \
            "previous QAT checkpoint"
    else:
        base, base_dir_scores, role = None, float_row["scores"], "its float init"
    float_as_parent = {"uri": float_row["uri"], "meta": {"fingerprint": float_row["fingerprint"]}}
    qat_row, _, _ = _train_one(
        store, train, variant, True, float_as_parent, float_dir, base_dir_scores, role,
        data_dir, vwork / "qat", stamp, n, batch=batch, optimizer=optimizer, augment=augment,
        learning_rate=learning_rate, seed=seed,
        progress=progress, metric=metric, scores_of=scores_of,
        compared_uri=base["uri"] if base else float_row["uri"])
    if n < qat_steps:
        qat_row["budget_note"] = f"QAT shortened from {qat_steps} to {n} steps by the budget"
    rows.append(qat_row)
    return rows


def _train_one(store, train, variant, qat, parent, init_dir, baseline_scores, role, data_dir,
               out_dir, stamp, steps, *, batch, optimizer, augment, learning_rate, seed,
               progress, metric, scores_of, compared_uri=None):
    """Train one child, score it, record the comparison in its checkpoint.json, land it."""
    result = train(str(data_dir), str(out_dir), variant, steps, batch=batch, init=str(init_dir),
                   qat=qat, seed=seed, learning_rate=learning_rate, progress=progress,
                   optimizer=optimizer, augment=augment)
    scores = scores_of(out_dir, result)
    cmp = verdict(baseline_scores, scores, metric)
    name = _unique_name(store, variant, qat, stamp)
    meta_path = Path(out_dir) / landing.CHECKPOINT_MARKER
    meta = json.loads(meta_path.read_text())
    # train() records the local init folder; the store URI is the lineage a reader can follow.
    # (The fingerprint covers weights and spec only, so it is unchanged.)
    meta["parent_checkpoint"] = parent["uri"]
    meta["retrain"] = {"parent": parent["uri"],
                       "parent_fingerprint": parent["meta"].get("fingerprint"),
                       "compared_with": compared_uri or parent["uri"], "compared_role": role,
                       "eval": {"split": scores["split"], "images": scores["images"]},
                       "scores": {k: scores[k] for k in METRICS},
                       "baseline_scores": {k: baseline_scores[k] for k in METRICS},
                       **cmp}
    meta_path.write_text(json.dumps(meta, indent=2))
    uri = land_checkpoint(store, Path(out_dir), name)
    t = result["training"]
    ips = t.get("images_per_second") or 0.0
    row = {"variant": variant, "qat": bool(qat), "name": name, "uri": uri,
           "parent_uri": parent["uri"], "parent_fingerprint": parent["meta"].get("fingerprint"),
           "fingerprint": result["fingerprint"], "steps": int(steps),
           "train_seconds": t.get("seconds"), "compared_with": role,
           "compared_uri": compared_uri or parent["uri"],
           "scores": {k: scores[k] for k in METRICS},
           "parent_scores": {k: baseline_scores[k] for k in METRICS}, **cmp}
    return row, Path(out_dir), float(ips)
