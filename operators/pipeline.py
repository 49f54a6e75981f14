"""The mobiledet_convert DAG's own tasks: each one step of `include.pipeline.steps` over the run
plan, a few lines each.

Each takes the plan task's output (`plan`, templated: validated once per task into a typed
`RunPlan`) and the item it works on (a checkpoint, a job, a converted model). Around the step
each adds what a pipeline run needs: a readable map index label, and a failure record in the
store (``runs/<run>/<checkpoint>/failures/``) before the task fails, so the gate can reject just
that model with the task's error. Costs are measured by the steps themselves.

Bad input fails at once (AirflowFailException), store errors and crashes are retried
(include/deploy/task_policy). Nothing heavy is imported at module level. The reusable
operators (`TFLiteConvertOperator`, the checks, `EdgeTPUCompileOperator`,
`PublishModelOperator`) call the same steps with arguments a user gives.
"""
from __future__ import annotations

from typing import Any

from include.store.layout import PUBLISHED_ALIAS
from operators.base import MobiledetOperator
from operators.lineage import LineageMixin
from operators.publish import emit_published

__all__ = ["ExportCheckpointOperator", "ConvertModelOperator", "QualityCheckOperator",
           "DeviceBenchmarkOperator", "GateOperator", "PublishRunOperator", "RunReportOperator", "FINAL_DECISIONS_KEY"]

#: the XCom key under which PublishRunOperator(search_task_id=...) leaves the final decisions
FINAL_DECISIONS_KEY = "decisions"


class PlanStepOperator(LineageMixin, MobiledetOperator):
    """Base of the DAG's tasks: the run plan, a map index label, a failure record."""

    template_fields: tuple[str, ...] = ("plan",)
    failure_stage: str | None = None   # name under which a failure is recorded for the gate

    def __init__(self, *, plan: Any, **kwargs):
        super().__init__(**kwargs)
        self.plan = plan

    @property
    def run_plan(self):
        """The plan, validated once per task."""
        if getattr(self, "_run_plan", None) is None:
            from include.pipeline.plan import RunPlan
            self._run_plan = RunPlan.of(self.plan)
        return self._run_plan

    def label(self, context, name: str | None) -> None:
        if name:
            # Rendered by map_index_template="{{ mobiledet_label }}": readable mapped names.
            context["mobiledet_label"] = name

    def recorded(self, item, work, stage: str | None = None):
        """Run `work()`; on failure leave the reason in the store (under `stage`, default the
        operator's failure_stage), then fail the task."""
        try:
            return work()
        except Exception as exc:
            from include.pipeline.steps.failures import record_failure
            record_failure(self.run_plan, stage or self.failure_stage, item, exc)
            raise


class ExportCheckpointOperator(PlanStepOperator):
    """A checkpoint (or TFOD bundle) -> its TFLite-ready export folder in the store."""

    template_fields = ("plan", "checkpoint")
    failure_stage = "export"

    def __init__(self, *, checkpoint: Any, **kwargs):
        super().__init__(**kwargs)
        self.checkpoint = checkpoint

    def run(self, context):
        from include.pipeline.plan import Checkpoint
        from include.pipeline.steps.export import export

        ckpt = Checkpoint.model_validate(self.checkpoint)
        self.label(context, ckpt.ckpt_id)
        out = self.recorded(ckpt, lambda: export(self.run_plan, ckpt))
        self.ol_datasets = ([ckpt.uri], [out["export_uri"]])
        return out


class ConvertModelOperator(PlanStepOperator):
    """One (checkpoint, precision) job of the plan -> its model in the run's store."""

    template_fields = ("plan", "job")
    failure_stage = "convert"
    ui_color = "#fde8e8"

    def __init__(self, *, job: Any, **kwargs):
        super().__init__(**kwargs)
        self.job = job

    def run(self, context):
        from include.pipeline.steps.convert import convert
        from include.pipeline.steps.plan import as_job

        job = as_job(self.job)
        self.label(context, job.name)
        out = self.recorded(job, lambda: convert(self.run_plan, job).to_dict())
        self.ol_datasets = ([job.export_uri], [out["model_uri"]])
        return out


class QualityCheckOperator(PlanStepOperator):
    """COCO evaluation, output contract (GX), latency benchmark and pictures of one converted
    model, in one task (the model and images are downloaded once for the three); then, for an
    integer EdgeTPU model, the Edge TPU step (offline op-mapping prediction and the compiler
    where installed), whose result is the check's `edgetpu` key.

    Why the Edge TPU step is not a task of its own: it applies to one model in three or so
    (the others would get a task process that only says "not applicable"), and every task
    costs about 0.3 s of Airflow's own work plus up to a second of its slot (bench/pipeline.py).
    It keeps its own cost record (stage `edgetpu`) and failure record, so the report and the
    gate name it."""

    template_fields = ("plan", "model")
    failure_stage = "check"
    ui_color = "#e6f4ea"

    def __init__(self, *, model: Any, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def run(self, context):
        from include.pipeline.steps import edgetpu as edgetpu_step
        from include.pipeline.steps.check import check
        from include.pipeline.steps.plan import as_model

        model = as_model(self.model)
        self.label(context, model.name)
        checked = self.recorded(model, lambda: check(self.run_plan, model))
        tpu = edgetpu_step.not_applicable(model)
        if edgetpu_step.applies(model):
            tpu = self.recorded(model, lambda: edgetpu_step.edgetpu(self.run_plan, model),
                                "edgetpu")
        self.ol_datasets = ([model.model_uri], [checked.get("metrics_uri")])
        return {**checked, "edgetpu": tpu}

    def on_kill(self) -> None:
        """A killed check must not leave the Edge TPU compiler running."""
        from include.edgetpu.compiler import kill_running
        kill_running()


class DeviceBenchmarkOperator(PlanStepOperator):
    """One checked model on one phone of the config (`device`: its name), with each of the
    phone's delegates (TFLite's benchmark_model over adb; include/pipeline/steps/device.py).
    Give it the phone's queue (include/deploy/task_policy.device_task_args), so it runs on
    the Celery worker the phone is plugged into. A phone that cannot be used fails the task,
    with a failure record the gate turns into "not measured" for that phone."""

    template_fields = ("plan", "model")
    ui_color = "#e8eefd"

    def __init__(self, *, model: Any, device: str, adb: str = "adb", **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.device = device
        self.adb = adb

    def run(self, context):
        import socket

        from include.pipeline.steps import device as device_step
        from include.pipeline.steps.plan import as_model

        model = as_model(self.model)
        self.label(context, model.name)
        self.log.info("benchmarking %s on device %s (queue %s) from worker %s", model.name,
                      self.device, self.queue, socket.gethostname())
        out = self.recorded(model, lambda: device_step.device_benchmarks(
            self.run_plan, model, self.device, adb=self.adb), device_step.stage_of(self.device))
        for record in out.get("benchmarks") or []:
            fig = device_step.summary(record, self.device, record.get("delegate_requested"))
            self.log.info("%s on %s (%s): %s ms [%s]", model.name, self.device,
                          fig["delegate"], device_step.cell(fig), fig["status"])
        self.ol_datasets = ([model.model_uri], [out.get("uri")] if out.get("uri") else [])
        return out

    def on_kill(self) -> None:
        """A killed task must not leave benchmark_model running on the phone."""
        from include.quality.device import kill_running
        kill_running()


class GateOperator(PlanStepOperator):
    """Every model's gate decision, with the numbers behind each check. Runs when its
    upstream tasks are done, failed or not (trigger_rule all_done): a model whose task failed
    is rejected with that task's error, and the others are still decided.

    `jobs` is the list the model tasks were mapped over; the check results (with their
    `edgetpu` key) are pulled per map index of the check task (a failed index has none), and
    so are the results of the device tasks named in `device_task_ids`."""

    template_fields = ("plan", "jobs")

    def __init__(self, *, jobs: Any, check_task_id: str = "model.check",
                 device_task_ids: list[str] | None = None, **kwargs):
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.jobs = jobs
        self.check_task_id = check_task_id
        self.device_task_ids = list(device_task_ids or [])

    def run(self, context):
        from include.pipeline.steps.gate import gate
        from include.pipeline.steps.plan import as_job

        jobs = [as_job(j) for j in self.jobs or []]
        checks = _pull_mapped(context, self.check_task_id, len(jobs))
        devices = [r for tid in self.device_task_ids
                   for r in _pull_mapped(context, tid, len(jobs)) if r]
        return gate(self.run_plan, jobs, checks, [c.get("edgetpu") for c in checks if c],
                    devices)


def _pull_mapped(context, task_id: str, n: int) -> list:
    """The XComs of map indexes 0..n-1 of `task_id` (None where an index left none)."""
    if not n:
        return []
    found = context["ti"].xcom_pull(task_ids=task_id, map_indexes=list(range(n)))
    return [found] if isinstance(found, dict) else list(found or [])


class PublishRunOperator(PlanStepOperator):
    """Every passing model of the run, one release per checkpoint: files, then manifest.json
    by conditional create, then the consumer pointers (forward only). Every model it publishes
    becomes an asset event (through the asset alias ``mobiledet_published``) of the asset
    ``mobiledet/MODEL/VARIANT/PRECISION``, whose URI is that model's consumer pointer: schedule
    a downstream DAG on it.

    With `search_task_id` (the mapped recipe-search task, whose instances each return their
    model's final decision) it first merges those into `decided`, and pushes the run's final
    decisions under the XCom key ``decisions`` for the report. Give it trigger_rule all_done
    then: a search task that failed leaves its model rejected, the others are published."""

    template_fields = ("plan", "decided")

    def __init__(self, *, decided: Any, search_task_id: str | None = None, **kwargs):
        from airflow.sdk import AssetAlias

        kwargs.setdefault("outlets", [AssetAlias(PUBLISHED_ALIAS)])
        super().__init__(**kwargs)
        self.decided = decided
        self.search_task_id = search_task_id

    def run(self, context):
        from include.pipeline.steps.publish import publish_run, published_assets
        from include.pipeline.steps.search import merge, search_jobs

        run, decided = self.run_plan, list(self.decided)
        if self.search_task_id:
            searched = _pull_mapped(context, self.search_task_id, len(search_jobs(run, decided)))
            decided = merge(run, decided, searched)
            context["ti"].xcom_push(key=FINAL_DECISIONS_KEY, value=decided)
        results = publish_run(run, decided)
        emit_published(context, self.log, published_assets(run, results, decided))
        self._release_lineage(decided, results)
        return results

    def _release_lineage(self, decided: list[dict], results: list[dict]) -> None:
        """models of the run -> released model files, each with its gate checks."""
        checks = {(d["ckpt_id"], d["variant"], d["precision"]): d["decision"].get("checks")
                  for d in decided}
        outputs, self.ol_verdicts = [], {}
        for result in results:
            for entry in result.get("published") or []:
                uri = ((entry.get("files") or {}).get("model.tflite") or {}).get("uri")
                outputs.append(uri)
                self.ol_verdicts[uri] = checks.get((result["ckpt_id"], entry["variant"],
                                                 entry["precision"]))
        self.ol_datasets = ([d.get("model_uri") for d in decided if not d.get("failed")], outputs)


class RunReportOperator(PlanStepOperator):
    """The run report (JSON + Markdown) in the store, and the results table in the log. Runs
    whatever happened upstream (all_done) and fails the run when nothing could be decided."""

    def __init__(self, *, gate_task_id: str = "gate", publish_task_id: str = "publish",
                 **kwargs):
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.gate_task_id = gate_task_id
        self.publish_task_id = publish_task_id

    def run(self, context):
        from include.pipeline.steps.report import report

        # Pulled here, not templated: a failed gate or publish leaves no XCom, and the report
        # is written all the same (None = that task did not finish). The final decisions
        # (with the recipe searches' outcomes) are the publish task's, where it made them;
        # else the gate's.
        pull = context["ti"].xcom_pull
        decided = pull(task_ids=self.publish_task_id, key=FINAL_DECISIONS_KEY)
        if decided is None:
            decided = pull(task_ids=self.gate_task_id)
        result = report(self.run_plan, decided, pull(task_ids=self.publish_task_id))
        self.log.info("results\n%s", result["table"])
        return result
