"""What a task that did not finish leaves for the gate and the report.

A failing step writes why to ``runs/<run>/<checkpoint>/failures/<stage>[-<precision>].json``
before its task fails; the gate (trigger rule all_done) then rejects just that model with the
task's error, and the report names a checkpoint whose export failed.
"""
from __future__ import annotations

from include.pipeline.plan import RunPlan
from include.store import layout

#: how a failure reason names a stage that is not a task of its own
STAGE_TASK_NAMES = {"edgetpu": "the Edge TPU stage of the check task"}


def _get(item, key):
    return item.get(key) if isinstance(item, dict) else getattr(item, key, None)


def failure_key(run: RunPlan, stage: str, item) -> str:
    return layout.failure_key(run.run_id, _get(item, "ckpt_id"), stage, _get(item, "precision"))


def record_failure(run: RunPlan, stage: str, item, exc: BaseException) -> str | None:
    """Write why `stage` failed for `item` (a checkpoint or a job); None if the store refuses
    (the store itself may be what failed: the gate then says the task did not finish)."""
    from include.errors import MobiledetError, StoreError

    try:
        run = RunPlan.of(run)
        return run.store.write_json(failure_key(run, stage, item), {
            "stage": stage, "name": _get(item, "name") or _get(item, "ckpt_id"),
            "error": f"{type(exc).__name__}: {exc}",
            # the project's own errors but the store's: the same input fails again
            "bad_input": isinstance(exc, MobiledetError) and not isinstance(exc, StoreError)})
    except Exception:  # noqa: BLE001 - best effort, the task is failing anyway
        return None


def failure_of(run: RunPlan, stages: tuple[str, ...], item) -> dict | None:
    """The failure record of the first of `stages` that failed for `item` (with `stage`)."""
    store = run.store
    for stage in stages:
        key = failure_key(run, stage, item)
        try:
            if store.is_file(key):
                return dict(store.read_json(key), stage=stage)
        except Exception:  # noqa: BLE001 - unreadable record: fall through to the generic text
            continue
    return None


def failure_reason(run: RunPlan, stages: tuple[str, ...], item) -> str:
    """Why the first of `stages` that failed for `item` failed, as users read it."""
    found = failure_of(run, stages, item)
    if found:
        what = STAGE_TASK_NAMES.get(found["stage"], f"the {found['stage']} task")
        return f"{what} failed: {found['error']}"
    return (f"the {' / '.join(stages)} task did not finish (killed, timed out or its worker "
            "was lost); see its log in Airflow")


def rejected_by_failure(job, reason: str, metric: str, check: dict | None = None) -> dict:
    """A decided entry for a job whose task failed: rejected with the task's error."""
    from include.gates import GateCheck, GateDecision

    job = job.to_dict() if hasattr(job, "to_dict") else dict(job)
    decision = GateDecision(variant=job["variant"], precision=job["precision"], metric=metric,
                            map=None, passed=False,
                            checks=[GateCheck("task", False, None, None, reason, "fail")],
                            reasons=[reason])
    base = {"size_bytes": None, "latency_ms": None, "metrics": {}, "edgetpu": None,
            "drop": None}
    return {**base, **job, **(check or {}), "failed": True, "passed": False,
            "decision": decision.to_dict()}
