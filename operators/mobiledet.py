"""Operators for each stage. Each one reads its arguments, calls one stage function of
`include.pipeline.stages` and returns its small JSON result (store URIs and metrics, never local
paths or model bytes), so the same DAG runs on one machine or across Celery/Kubernetes workers.

A stage that fails records why in the store (``runs/<run>/<checkpoint>/failures/``) before the
task fails, so the gate can reject just that model with the task's error; bad input fails at
once (AirflowFailException), store errors and crashes are retried (include/pipeline/task_policy).

Nothing heavy is imported at module level: TensorFlow and friends load inside `execute`.
"""
from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator


def _fail_fast(exc: BaseException) -> BaseException:
    """Bad input fails without retrying (another attempt reads the same input); store errors
    and anything unexpected are raised as they are, so Airflow retries them."""
    from include.errors import MobiledetError, StoreError

    if isinstance(exc, MobiledetError) and not isinstance(exc, StoreError):
        from airflow.sdk.exceptions import AirflowFailException
        return AirflowFailException(str(exc))
    return exc


class _StageOperator(BaseOperator):
    """Common shape: `settings` (the plan's output) plus one stage-specific argument."""

    stage: str = ""
    failure_stage: str | None = None   # name under which a failure is recorded for the gate
    label_of = staticmethod(lambda value: None)
    ui_color = "#e8f0fe"

    def _label(self, context, value) -> None:
        label = self.label_of(value)
        if label:
            # Rendered by map_index_template="{{ mobiledet_label }}": readable mapped task names.
            context["mobiledet_label"] = label

    def _call(self, *args):
        from include.pipeline import stages
        return getattr(stages, self.stage)(*args)

    def _run_recorded(self, item: dict, *args):
        """Run the stage; on failure leave the reason in the store, then fail the task."""
        try:
            return self._call(self.settings, *args)
        except Exception as exc:
            from include.pipeline.stages import record_failure
            record_failure(self.settings, self.failure_stage, item, exc)
            raised = _fail_fast(exc)
            if raised is exc:
                raise
            raise raised from exc


class ExportCheckpointOperator(_StageOperator):
    """Checkpoint (or TFOD bundle) -> TFLite-ready export folder in the store."""

    template_fields = ("settings", "checkpoint")
    stage = "export_stage"
    failure_stage = "export"
    label_of = staticmethod(lambda c: c.get("ckpt_id"))

    def __init__(self, *, settings: Any, checkpoint: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.checkpoint = checkpoint

    def execute(self, context):
        self._label(context, self.checkpoint)
        return self._run_recorded(self.checkpoint, self.checkpoint)


class ConvertModelOperator(_StageOperator):
    """One (checkpoint, precision) job -> model.tflite + conversion.json in the store."""

    template_fields = ("settings", "job")
    stage = "convert_stage"
    failure_stage = "convert"
    label_of = staticmethod(lambda j: j.get("name"))
    ui_color = "#fde8e8"

    def __init__(self, *, settings: Any, job: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.job = job

    def execute(self, context):
        self._label(context, self.job)
        return self._run_recorded(self.job, self.job)


class QualityCheckOperator(_StageOperator):
    """COCO evaluation against the float reference, output contract (GX), latency benchmark."""

    template_fields = ("settings", "model")
    stage = "check_stage"
    failure_stage = "check"
    label_of = staticmethod(lambda m: m.get("name"))
    ui_color = "#e6f4ea"

    def __init__(self, *, settings: Any, model: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.model = model

    def execute(self, context):
        self._label(context, self.model)
        return self._run_recorded(self.model, self.model)


class EdgeTPUCompileOperator(_StageOperator):
    """Edge TPU compilation (where installed) and the offline op-mapping prediction."""

    template_fields = ("settings", "model")
    stage = "edgetpu_stage"
    failure_stage = "edgetpu"
    label_of = staticmethod(lambda m: m.get("name"))
    ui_color = "#fef7e0"

    def __init__(self, *, settings: Any, model: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.model = model

    def execute(self, context):
        self._label(context, self.model)
        return self._run_recorded(self.model, self.model)

    def on_kill(self) -> None:
        """A killed task must not leave the compiler running: stop its process groups."""
        from include.edgetpu.compiler import kill_running
        kill_running()


class GateOperator(_StageOperator):
    """Every model's gate decision, with the numbers behind each check. Runs when its
    upstream tasks are done, failed or not (trigger_rule all_done): a model whose task failed
    is rejected with that task's error, and the others are still decided.

    `jobs` is the list the model tasks were mapped over; the check and Edge TPU results are
    pulled per map index of those tasks (a failed index has none).
    """

    template_fields = ("settings", "jobs")
    stage = "gate_stage"

    def __init__(self, *, settings: Any, jobs: Any, check_task_id: str = "model.check",
                 edgetpu_task_id: str = "model.edgetpu", **kwargs):
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.settings = settings
        self.jobs = jobs
        self.check_task_id = check_task_id
        self.edgetpu_task_id = edgetpu_task_id

    def execute(self, context):
        jobs = list(self.jobs or [])
        indexes = list(range(len(jobs)))
        pull = context["ti"].xcom_pull
        checks = pull(task_ids=self.check_task_id, map_indexes=indexes) if jobs else []
        edgetpu = pull(task_ids=self.edgetpu_task_id, map_indexes=indexes) if jobs else []
        if isinstance(checks, dict):   # one map index comes back as the value itself
            checks = [checks]
        if isinstance(edgetpu, dict):
            edgetpu = [edgetpu]
        return self._call(self.settings, jobs, list(checks or []), list(edgetpu or []))


PUBLISHED_ALIAS = "mobiledet_published"


class PublishOperator(_StageOperator):
    """Publish of the passing models: files, then manifest.json by conditional create, then
    the consumer pointers (forward only). Every model it publishes becomes an asset event
    (through the asset alias ``mobiledet_published``) of the asset
    ``mobiledet/MODEL/VARIANT/PRECISION``, whose URI is that model's consumer pointer and whose
    extra holds the manifest URI, version and gate metric: schedule a downstream DAG on it."""

    template_fields = ("settings", "decided")
    stage = "publish_stage"
    ui_color = "#e8eaed"

    def __init__(self, *, settings: Any, decided: Any, **kwargs):
        from airflow.sdk import AssetAlias

        kwargs.setdefault("outlets", [AssetAlias(PUBLISHED_ALIAS)])
        super().__init__(**kwargs)
        self.settings = settings
        self.decided = decided

    def execute(self, context):
        from airflow.sdk import Asset, AssetAlias

        from include.pipeline.stages import published_assets

        decided = list(self.decided)
        results = self._call(self.settings, decided)
        events = context["outlet_events"][AssetAlias(PUBLISHED_ALIAS)]
        for asset in published_assets(self.settings, results, decided):
            events.add(Asset(name=asset["name"], uri=asset["uri"]), extra=asset["extra"])
            self.log.info("published %s (%s)", asset["name"], asset["extra"]["version"])
        return results


class RunReportOperator(_StageOperator):
    """The run report (JSON + Markdown) in the store, and the results table in the log. Runs
    whatever happened upstream (all_done) and fails the run when nothing could be decided."""

    template_fields = ("settings",)
    stage = "report_stage"

    def __init__(self, *, settings: Any, gate_task_id: str = "gate",
                 publish_task_id: str = "publish", **kwargs):
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.settings = settings
        self.gate_task_id = gate_task_id
        self.publish_task_id = publish_task_id

    def execute(self, context):
        # Pulled here, not templated: a failed gate or publish leaves no XCom, and the report
        # is written all the same (None = that task did not finish).
        decided = context["ti"].xcom_pull(task_ids=self.gate_task_id)
        published = context["ti"].xcom_pull(task_ids=self.publish_task_id)
        try:
            result = self._call(self.settings, decided, published)
        except Exception as exc:
            raised = _fail_fast(exc)
            if raised is exc:
                raise
            raise raised from exc
        self.log.info("results\n%s", result["table"])
        return result
