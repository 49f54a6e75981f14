"""The gate step: one decision per job, each on its own.

A job whose convert, check or Edge TPU task failed is rejected with that task's error; the
others are gated (`include.gates`, pure functions) on their numbers against the run's float32
reference and the newest comparable release. Drop and agreement against the float reference
come from the two models' stored detections (each model is evaluated once per run, by its own
check): nothing is run through a model here.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from include.pipeline.costs import task_meter
from include.pipeline.plan import Job, RunPlan
from include.pipeline.steps import edgetpu as edgetpu_step
from include.pipeline.steps.failures import failure_reason, rejected_by_failure

EDGETPU_KEYS = ("status", "message", "ops_total", "ops_on_tpu", "ops_on_cpu", "unmapped_ops",
                "prediction")


def gate(run: RunPlan, jobs: list[Job], checks: list[dict], edgetpu: list[dict],
         devices: list[dict] | None = None) -> list[dict]:
    """The decided entries of `jobs`, in plan order (see the module doc). `devices`: the
    device tasks' results (include.pipeline.steps.device.device_benchmarks; None entries for
    tasks that left none)."""
    from include.pipeline.steps.plan import as_job

    run, jobs = RunPlan.of(run), [as_job(j) for j in jobs]
    with task_meter("gate", run) as meter:
        out = _gate(run, jobs, checks, edgetpu, meter)
        if run.config.devices:
            with meter.part("devices"):
                out = [with_devices(run, d, devices or []) for d in out]
        return out


def with_devices(run: RunPlan, decided: dict, devices: list[dict]) -> dict:
    """`decided` with its device figures (`device_benchmarks`) and, when it was gated, one
    device_latency check per configured device and delegate in its decision."""
    from dataclasses import asdict

    from include.gates import device_latency_check
    from include.pipeline.steps import device as device_step

    mine = {r["device"]: r for r in devices
            if r and (r.get("ckpt_id"), r.get("precision")) == _key(decided)}
    reasons = {}
    for dev in run.config.devices:
        if dev.name not in mine:
            reasons[dev.name] = failure_reason(run, (device_step.stage_of(dev.name),), decided)
    found = device_step.figures(run, mine, reasons)
    benchmarks = [{k: v for k, v in f.items() if k != "_record"} for f in found]
    # the model's metrics (and so the manifest entry, include/store/manifest.py) carry them
    metrics = {**(decided.get("metrics") or {}), "device_benchmarks": benchmarks,
               "device_latency_ms": {f"{f['device']}/{f['delegate']}": f["latency_ms"]
                                     for f in found}}
    out = {**decided, "device_benchmarks": benchmarks, "metrics": metrics}
    _store_figures(run, decided, benchmarks)
    if decided.get("failed"):
        return out
    decision = dict(decided["decision"])
    checks, why = list(decision.get("checks") or []), list(decision.get("reasons") or [])
    configs = {d.name: d for d in run.config.devices}
    for f in found:
        check = device_latency_check(configs[f["device"]], f["_record"])
        checks.append(asdict(check))
        if not check.passed:
            why.append(f"too slow on {f['device']}: {check.detail}")
    passed = decided["passed"] and all(c.get("passed", True) for c in checks)
    decision.update(checks=checks, reasons=why, passed=passed)
    return {**out, "decision": decision, "passed": passed}


def _key(d) -> tuple:
    return (d["ckpt_id"], d["precision"]) if isinstance(d, dict) else (d.ckpt_id, d.precision)


def _gate(run: RunPlan, jobs: list[Job], checks: list[dict], edgetpu: list[dict],
          meter) -> list[dict]:
    with meter.part("setup"):
        from include.gates import evaluate_gates
        from include.store import comparable_baseline

        config = run.config
        store = run.store
    metric = config.gates.metric
    checked = {_key(c): c for c in checks if c}
    tpu = {_key(e): e for e in edgetpu if e}
    reference = {c["ckpt_id"]: c["metrics"].get(metric) for c in checked.values()
                 if c["precision"] == "float32"}
    try:
        compared = against_reference(run, checked, meter)
    except Exception:  # noqa: BLE001 - drop and agreement are reported, not gated on
        compared = {}
    out = []
    for job in run.in_plan_order(jobs):
        c = checked.get(_key(job))
        if c is None:
            with meter.part("decisions"):
                out.append(rejected_by_failure(
                    job, failure_reason(run, ("convert", "check", "edgetpu"), job), metric))
            continue
        c = {**c, **compared.get(_key(job), {})}
        e = tpu.get(_key(job))
        if e is None and edgetpu_step.applies(job):
            with meter.part("decisions"):
                out.append(rejected_by_failure(
                    job, failure_reason(run, ("edgetpu",), job), metric, c))
            continue
        edgetpu_info = None
        if e and e.get("status") != "not_applicable":
            edgetpu_info = {k: e.get(k) for k in EDGETPU_KEYS}
        ckpt = run.checkpoint(job.ckpt_id)
        with meter.part("baseline"):
            baseline, why = comparable_baseline(
                store, config.model_name, c["variant"], c["precision"], qat=ckpt.qat,
                data_fingerprint=run.evaluation_data_fingerprint)
        with meter.part("decisions"):
            entry_metrics = {"variant": c["variant"], "precision": c["precision"],
                             "map": c["metrics"].get(metric),
                             "reference_map": reference.get(c["ckpt_id"]),
                             "contract_passed": c["contract_passed"],
                             "contract_failures": c.get("contract_failed"),
                             "latency_ms": c["latency_ms"],
                             "latency_ratio_to_float32": c.get("latency_ratio_to_float32"),
                             "edgetpu": edgetpu_info,
                             "baseline_reason": why}
            decision = evaluate_gates(entry_metrics, config, baseline)
            out.append({**c, "edgetpu": e, "decision": decision.to_dict(),
                        "passed": decision.passed,
                        "baseline": {"version": baseline["version"] if baseline else None,
                                     "reason": why}})
    return out


def _store_figures(run: RunPlan, decided: dict, benchmarks: list[dict]) -> None:
    """The model's metrics.json (published with it) gains its device figures."""
    if not decided.get("metrics_uri"):
        return
    try:
        key = run.store.key_of(decided["metrics_uri"])
        doc = run.store.read_json(key)
        doc["devices"] = benchmarks
        run.store.write_json(key, doc)
    except Exception:  # noqa: BLE001 - the decision does not depend on it
        pass


def against_reference(run: RunPlan, checked: dict, meter) -> dict:
    """{(ckpt_id, precision): {drop, agreement}} of every checked non-float32 model whose
    float32 reference was checked in this run, from the detections both checks stored; each
    model's metrics.json gains the reference's metrics, the drop and the agreement (as when
    the check evaluated the reference itself). Nothing is run through a model here."""
    from include.quality.evaluate import AGREEMENT_THRESHOLD, agreement, drop_of

    store = run.store
    pairs = []
    for (ckpt_id, precision), c in checked.items():
        ref = checked.get((ckpt_id, "float32"))
        if precision != "float32" and ref and c.get("detections_uri") \
                and ref.get("detections_uri"):
            pairs.append((c, ref))
    if not pairs:
        return {}
    out = {}
    with tempfile.TemporaryDirectory(prefix="mobiledet-gate-") as tmp:
        with meter.part("download"):
            from include.data.coco import open_dataset
            from include.pipeline.inputs import dataset_copy, images_of
            from include.quality.evaluate import default_split, load_ground_truth

            root = dataset_copy(run.data, Path(tmp) / "data", run.conn_id,
                                images=images_of(None, annotations_only=True))
            dataset = open_dataset(root, split=default_split(root))
            docs = {}
            for c, ref in pairs:
                for d in (c, ref):
                    if d["detections_uri"] not in docs:
                        docs[d["detections_uri"]] = store.read_json(
                            store.key_of(d["detections_uri"]))
        with meter.part("agreement"):
            gt = load_ground_truth(dataset)
            for c, ref in pairs:
                mine, theirs = docs[c["detections_uri"]], docs[ref["detections_uri"]]
                limit = mine.get("max_images")
                image_ids = dataset.image_ids[:limit] if limit else dataset.image_ids
                category_ids = mine.get("category_ids") or sorted(
                    {d["category_id"] for d in mine["detections"]})
                drop = drop_of(mine["metrics"], theirs["metrics"])
                agree = agreement(gt, mine["detections"], theirs["detections"], image_ids,
                                  category_ids, AGREEMENT_THRESHOLD)
                out[(c["ckpt_id"], c["precision"])] = {
                    "drop": drop, "agreement": agree,
                    "_reference": {"model": ref.get("model_uri"), "metrics": theirs["metrics"],
                                   "detections": len(theirs["detections"]),
                                   "evaluated_by": "the float32 model's own check in this run"}}
        with meter.part("upload"):
            for k, v in out.items():
                c = checked[k]
                try:
                    mkey = store.key_of(c["metrics_uri"])
                    doc = store.read_json(mkey)
                    doc["evaluation"].update(reference=v["_reference"], drop=v["drop"],
                                             agreement=v["agreement"])
                    store.write_json(mkey, doc)
                except Exception:  # noqa: BLE001 - the decision does not depend on it
                    pass
    return {k: {"drop": v["drop"], "agreement": v["agreement"]} for k, v in out.items()}
