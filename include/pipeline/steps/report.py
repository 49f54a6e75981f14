"""The report step: the run report (report.json, report.md under runs/<run_id>/), written
whatever happened upstream; then the run fails if no model could be decided or the publish
failed.
"""
from __future__ import annotations

from typing import Any

from include.pipeline.costs import task_meter
from include.pipeline.plan import RunPlan
from include.pipeline.steps.failures import failure_of, failure_reason
from include.store import layout

STAGES_NOTE = ("wall_s, cpu_s and peak_rss_mb per task, measured by the task itself "
               "(include/pipeline/costs.py); the report's own entry is measured up to writing "
               "report.json (partial: true). {tasks} tasks ran in {processes} process(es): on a "
               "real executor each task is its own process and peak_rss_mb is the task's; under "
               "dag.test (mobiledet run) every task shares one process, so peak_rss_mb is that "
               "process's peak while the task ran, including what earlier tasks left loaded.")
#: "host CPU ms" is the LiteRT interpreter's mean on the machine that ran the check; each
#: phone of the config gets a column of its own after it ("<device> ms", one figure per
#: delegate), from its device task (include/pipeline/steps/device.py)
HOST_COLUMN = "host CPU ms"
RESULT_COLUMNS = ["model", "size MB", "metric", "drop vs float", HOST_COLUMN, "x float32",
                  "CPU delegate", "Edge TPU ops", "gate"]
#: the DAG task each step's cost record belongs to (the Edge TPU step runs inside the check)
TASK_OF_STAGE = {"edgetpu": "model.check", "convert": "model.convert", "check": "model.check"}


def task_id(record: dict) -> str:
    stage = str(record.get("stage"))
    if stage.startswith("device_"):
        return f"model.{stage}"
    return TASK_OF_STAGE.get(stage, stage)


def result_columns(metric: str, devices: list[str] | None = None) -> list[str]:
    """The results table's header: RESULT_COLUMNS with the metric's name and a column per
    device (by name) after the host CPU's."""
    cols = [c if c != "metric" else metric for c in RESULT_COLUMNS]
    at = cols.index(HOST_COLUMN) + 1
    return cols[:at] + [f"{name} ms" for name in devices or []] + cols[at:]


def device_cells(d: dict, devices: list[str]) -> list[str]:
    """One cell per device: its figure ("12.3"), or one per delegate ("cpu 12.3, gpu 4.1"),
    "not measured" where there is none (a fallback's figure is marked as such)."""
    from include.pipeline.steps.device import cell

    found = d.get("device_benchmarks") or []
    out = []
    for name in devices:
        mine = [f for f in found if f.get("device") == name]
        if not mine:
            out.append("-")
        elif len(mine) == 1:
            out.append(cell(mine[0]))
        else:
            out.append(", ".join(f"{f.get('delegate')} {cell(f)}" for f in mine))
    return out


def _duration_s(stages: list[dict]) -> float | None:
    """From the first task's start to the last recorded task's end (the report's not yet)."""
    from datetime import datetime

    try:
        starts = [datetime.fromisoformat(r["started_at"]) for r in stages]
        ends = [datetime.fromisoformat(r["ended_at"]) for r in stages]
    except (KeyError, TypeError, ValueError):
        return None
    return round((max(ends) - min(starts)).total_seconds(), 3) if stages else None


def _num_text(value, fmt: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, fmt)


def result_rows(decided: list[dict], metric: str,
                devices: list[str] | None = None) -> list[list[Any]]:
    """The results table's rows (columns: `result_columns(metric, devices)`)."""
    rows = []
    for d in decided:
        e = d.get("edgetpu") or {}
        if e.get("status") in (None, "not_applicable"):
            tpu = "-"
        else:
            tpu = f"{e.get('ops_on_tpu')}/{e.get('ops_total')}"
            tpu += " (predicted)" if e.get("status") != "compiled" else ""
        check = next((c for c in d["decision"]["checks"] if c["name"] == "map_drop"), {})
        drop = check.get("value")
        reasons = d["decision"].get("reasons") or []
        value = (d.get("metrics") or {}).get(metric)
        rows.append([d["name"], _num_text(d.get("size_bytes"), ".2f", 1e6),
                     _num_text(value, ".3f") if not d.get("failed") or value is not None else "-",
                     "-" if drop is None else f"{drop:+.3f}",
                     _num_text(d.get("latency_ms"), ".1f"),
                     *device_cells(d, devices or []),
                     ratio_text(d.get("latency_ratio_to_float32")),
                     delegate_cell(d.get("delegate")), tpu,
                     "PASS" if d["passed"] else "FAIL: " + "; ".join(reasons)])
    return rows


def ratio_text(ratio) -> str:
    """latency_ratio_to_float32 as a table cell ("0.62x"; "-" when not measured)."""
    return "-" if not isinstance(ratio, (int, float)) else f"{ratio:.2f}x"


def delegate_cell(cov) -> str:
    """Delegate coverage as a table cell: ops delegated / ops, partitions."""
    if not isinstance(cov, dict) or not cov.get("ops_total"):
        return "-"
    parts = cov.get("partitions")
    return f"{cov.get('ops_delegated')}/{cov['ops_total']} in {parts} part" + \
        ("s" if parts != 1 else "")


def report(run: RunPlan, decided: list[dict] | None, published: list[dict] | None) -> dict:
    """Write the run report; raise PipelineError when nothing could be decided or published."""
    run = RunPlan.of(run)
    with task_meter("report", run) as meter:
        return _report(run, decided, published, meter)


def _report(run: RunPlan, decided: list[dict] | None, published: list[dict] | None,
            meter) -> dict:
    from include.console import format_table
    from include.errors import PipelineError
    from include.pipeline import costs

    with meter.part("summary"):
        store = run.store
        metric = run.config.gates.metric
        gate_ran = decided is not None
        decided = list(decided or [])
        devices = [dev.name for dev in run.config.devices]
        rows = result_rows(decided, metric, devices)
        table = format_table(rows, result_columns(metric, devices))
        with_jobs = {d["ckpt_id"] for d in decided}
        failed_ckpts = [{"ckpt_id": c.ckpt_id, "uri": c.uri,
                         "reason": failure_reason(run, ("export",), c)}
                        for c in run.checkpoints if gate_ran and c.ckpt_id not in with_jobs]
        problems = [f"{f['uri']}: {f['reason']}" for f in failed_ckpts]
        fatal = []
        if not gate_ran:
            fatal.append("the gate task failed (see its log), so no model was decided")
        elif run.checkpoints and not any(not d.get("failed") for d in decided):
            fatal.append("no model could be decided: every export, conversion or check failed")
        if published is None:
            fatal.append("the publish task failed (see its log); nothing new is published")
        problems += fatal
    with meter.part("ledger"):
        settled = settle(run, decided if gate_ran else None, published, fatal)
    with meter.part("costs"):
        stages = [r for r in costs.load(store, run.run_id) if r.get("stage") != "report"]
    stages.append(meter.snapshot())  # this task, up to writing the report
    stages = [dict(r, task_id=task_id(r)) for r in stages]
    checkpoints = [c.to_dict() for c in run.checkpoints]
    doc = {"run_id": run.run_id, "metric": metric, "store": run.config.store_uri,
           "model_name": run.config.model_name, "checkpoints": checkpoints,
           "warnings": run.warnings, "models": decided,
           "devices": [{"name": dev.name, "serial": dev.serial, "delegates": dev.delegates,
                        "queue": dev.queue, "max_device_latency_ms": dev.max_device_latency_ms}
                       for dev in run.config.devices],
           "published": published or [], "failed_checkpoints": failed_ckpts,
           "already_claimed": run.already_claimed, "ledger": settled,
           "problems": problems, "table": table, "stages": stages,
           "stage_totals": costs.totals(stages), "time_by_part": costs.parts_total(stages),
           "duration_s": _duration_s(stages),
           "stages_note": STAGES_NOTE.format(
               processes=len({(r.get("host"), r.get("pid")) for r in stages}),
               tasks=len(stages))}
    with meter.part("upload"):
        report_uri = store.write_json(layout.report_key(run.run_id), doc)
        lines = [f"# MobileDet conversion run {run.run_id}", "", "```", table, "```", ""]
        for p in published or []:
            lines.append(f"- {p['ckpt_id']}: {p['status']} as {p['model']}/{p['version']}"
                         + (f" ({p['manifest_uri']})" if p.get("manifest_uri") else ""))
        lines += [f"- FAILED: {p}" for p in problems]
        lines += [f"- {c['uri']}: already claimed by run {c['claimed_by']}; not converted again"
                  for c in run.already_claimed]
        store.put_bytes("\n".join(lines).encode(), layout.report_key(run.run_id, ".md"))
    summary = {"report_uri": report_uri, "table": table, "published": [
        {k: p.get(k) for k in ("ckpt_id", "status", "model", "version", "manifest_uri")}
        for p in published or []], "passed": sum(d["passed"] for d in decided),
        "models": len(decided), "problems": problems,
        "already_claimed": run.already_claimed, "run_id": run.run_id}
    if fatal:  # a run fails only when nothing could be decided or published
        raise PipelineError("; ".join(problems), where=report_uri,
                            fix="read the report and the failed task's log; fix the input it "
                                "names and trigger the run again.")
    return summary


def settle(run: RunPlan, decided: list[dict] | None, published: list[dict] | None,
           fatal: list[str]) -> list[dict]:
    """Each claimed checkpoint's final state in the ledger: published (with its version),
    rejected (every model decided, none passed), or failed: for good when its input was bad
    (an export that failed on the checkpoint marks that landing's bytes bad), else retryable
    after the backoff (a lost worker, a store error, a task that did not finish)."""
    results = {p["ckpt_id"]: p for p in published or []}
    out = []
    for ckpt in run.checkpoints:
        if not ckpt.ledger_id:
            continue
        mine = [d for d in decided or [] if d["ckpt_id"] == ckpt.ckpt_id]
        result = results.get(ckpt.ckpt_id) or {}
        outcome = {"state": "failed", "retryable": True, "reason": None}
        if result.get("status") in ("published", "already_published"):
            outcome = {"state": "published", "version": result.get("version")}
        elif mine and any(not d.get("failed") for d in mine) and published is not None:
            outcome = {"state": "rejected", "reason": "; ".join(
                f"{d['name']}: {'; '.join(d['decision'].get('reasons') or [])}" for d in mine)}
        elif decided is not None and not mine:   # its export failed
            failure = failure_of(run, ("export",), ckpt) or {}
            bad = bool(failure.get("bad_input"))
            outcome.update(retryable=not bad, bad_landing=bad,
                           reason=failure_reason(run, ("export",), ckpt))
        elif mine:
            failures = [failure_of(run, ("convert", "check", "edgetpu"), d) for d in mine]
            bad = all(f and f.get("bad_input") for f in failures)
            outcome.update(retryable=not bad, reason="no model could be decided: " + "; ".join(
                "; ".join(d["decision"].get("reasons") or []) for d in mine))
        else:
            outcome["reason"] = "; ".join(fatal) or "the run did not finish"
        record = run.ledger.mark(ckpt.ledger_id, run.run_id, outcome["state"],
                                 reason=outcome.get("reason"),
                                 retryable=outcome.get("retryable", False),
                                 version=outcome.get("version"), uri=ckpt.uri,
                                 bad_landing=outcome.get("bad_landing", False))
        out.append({"ckpt_id": ckpt.ckpt_id, "uri": ckpt.uri, "ledger_id": ckpt.ledger_id,
                    **outcome, "recorded": record is not None and
                    record.get("state") == outcome["state"]})
    return out
