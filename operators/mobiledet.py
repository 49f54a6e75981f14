"""The mobiledet_convert DAG's own tasks: the reusable operators (operators/convert.py,
quality.py, edgetpu.py, publish.py) with their arguments taken from the plan at run time.

The DAG maps its model task group over the plan's jobs, so a model's graph, precision and
output are known only when its task runs: these subclasses take the plan's `settings` and the
`job` (or converted `model`) as templated XCom arguments, set the typed arguments of their
parent from them in `execute`, and run the parent's work. Around that they add what a pipeline
run needs: the task's costs (`include.pipeline.costs`), a failure record in the store
(``runs/<run>/<checkpoint>/failures/``) before the task fails so the gate can reject just that
model with the task's error, and a readable map index label.

Bad input fails at once (AirflowFailException), store errors and crashes are retried
(include/pipeline/task_policy). Nothing heavy is imported at module level.

Names from before the typed operators stay importable: ConvertModelOperator,
QualityCheckOperator, EdgeTPUCompileOperator (the pipeline's, see operators.edgetpu for the
reusable one), GateOperator, PublishOperator, RunReportOperator, ExportCheckpointOperator.
"""
from __future__ import annotations

from typing import Any

from operators.base import MobiledetOperator
from operators.convert import TFLiteConvertOperator
from operators.edgetpu import EdgeTPUCompileOperator as _EdgeTPUCompile
from operators.publish import PUBLISHED_ALIAS, PublishModelOperator, emit_published

__all__ = ["ExportCheckpointOperator", "ConvertModelOperator", "QualityCheckOperator",
           "PipelineEdgeTPUOperator", "EdgeTPUCompileOperator", "GateOperator",
           "PublishOperator", "RunReportOperator", "PUBLISHED_ALIAS"]

class _PlanStep:
    """Mixin of the DAG's tasks: a readable map index label, a failure record for the gate."""

    failure_stage: str | None = None   # name under which a failure is recorded for the gate

    def label(self, context, name: str | None) -> None:
        if name:
            # Rendered by map_index_template="{{ mobiledet_label }}": readable mapped names.
            context["mobiledet_label"] = name

    def recorded(self, item: dict, work, stage: str | None = None):
        """Run `work()`; on failure leave the reason in the store (under `stage`, default the
        operator's failure_stage), then fail the task."""
        try:
            return work()
        except Exception as exc:
            from include.pipeline.stages import record_failure
            record_failure(self.settings, stage or self.failure_stage, item, exc)
            raise


class ExportCheckpointOperator(_PlanStep, MobiledetOperator):
    """Checkpoint (or TFOD bundle) -> TFLite-ready export folder in the store."""

    template_fields = ("settings", "checkpoint")
    failure_stage = "export"

    def __init__(self, *, settings: Any, checkpoint: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.checkpoint = checkpoint

    def run(self, context):
        from include.pipeline.stages import export_stage

        self.label(context, self.checkpoint.get("ckpt_id"))
        return self.recorded(self.checkpoint,
                             lambda: export_stage(self.settings, self.checkpoint))


class ConvertModelOperator(_PlanStep, TFLiteConvertOperator):
    """TFLiteConvertOperator for one (checkpoint, precision) job of the plan: graph = the
    job's export, precision = the job's, calibration = the run's, output =
    ``runs/<run>/<checkpoint>/<precision>/model.tflite`` in the run's store."""

    template_fields = ("settings", "job")
    failure_stage = "convert"
    args_from_plan = True

    def __init__(self, *, settings: Any, job: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.job = job

    def run(self, context):
        from include.pipeline.costs import task_meter
        from include.pipeline.stages import convert_args

        job, settings = self.job, self.settings
        self.label(context, job.get("name"))

        def work():
            with task_meter("convert", settings, job) as meter:
                args = convert_args(settings, job)
                self.graph, self.precision = args["graph"], args["precision"]
                self.output_uri, self.calibration = args["output"], args["calibration"]
                self.calibration_count, self.conn_id = args["calibration_count"], args["conn_id"]
                out = self.convert(meter)
            return {**job, **{k: v for k, v in out.items() if k != "precision"}}

        return self.recorded(job, work)


class QualityCheckOperator(_PlanStep, MobiledetOperator):
    """COCO evaluation, output contract (GX), latency benchmark and pictures of one converted
    model, in one task (the model and images are downloaded once for the three); then, for an
    integer EdgeTPU model, the Edge TPU stage (offline op-mapping prediction and the compiler
    where installed), whose result is the check's `edgetpu` key. The same checks one at a
    time: CocoEvaluateOperator, OutputContractOperator, TFLiteBenchmarkOperator
    (operators/quality.py), EdgeTPUCompileOperator (operators/edgetpu.py).

    Why the Edge TPU stage is not a task of its own: it applies to one model in three or so
    (the others would get a task process that only says "not applicable"), and every task
    costs about 0.3 s of Airflow's own work plus up to a second of its slot (bench/pipeline.py).
    The Edge TPU stage keeps its own cost record (stage `edgetpu`) and failure record, so the
    report and the gate name it as before. `edgetpu=False` leaves it out (status
    not_applicable), for a DAG that runs PipelineEdgeTPUOperator as its own task."""

    template_fields = ("settings", "model")
    failure_stage = "check"
    ui_color = "#e6f4ea"

    def __init__(self, *, settings: Any, model: Any, edgetpu: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.model = model
        self.edgetpu = edgetpu

    def run(self, context):
        from include.pipeline.stages import check_stage, edgetpu_applies, \
            edgetpu_not_applicable, edgetpu_stage

        model = self.model
        self.label(context, model.get("name"))
        checked = self.recorded(model, lambda: check_stage(self.settings, model))
        if self.edgetpu and edgetpu_applies(model):
            tpu = self.recorded(model, lambda: edgetpu_stage(self.settings, model), "edgetpu")
        else:
            tpu = edgetpu_not_applicable(model)
        return {**checked, "edgetpu": tpu}

    def on_kill(self) -> None:
        """A killed check must not leave the Edge TPU compiler running."""
        from include.edgetpu.compiler import kill_running
        kill_running()


class PipelineEdgeTPUOperator(_PlanStep, _EdgeTPUCompile):
    """EdgeTPUCompileOperator for one converted model of the plan (integer EdgeTPU models
    only; the others get status not_applicable): model = the convert task's .tflite (checked
    against its sha256), output = that model's folder of the run."""

    template_fields = ("settings", "converted")
    failure_stage = "edgetpu"
    args_from_plan = True

    def __init__(self, *, settings: Any, model: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.converted = model   # the convert task's result

    def run(self, context):
        from include.pipeline.costs import task_meter
        from include.pipeline.stages import edgetpu_applies, edgetpu_args, edgetpu_base, \
            edgetpu_not_applicable

        model, settings = self.converted, self.settings
        self.label(context, model.get("name"))
        base = edgetpu_base(model)

        def work():
            with task_meter("edgetpu", settings, model) as meter:
                if not edgetpu_applies(model):
                    with meter.part("not applicable"):
                        return edgetpu_not_applicable(model)
                args = edgetpu_args(settings, model)
                self.model, self.output_uri = args["model"], args["output"]
                self.sha256, self.timeout_s = args["sha256"], args["timeout_s"]
                self.conn_id = args["conn_id"]
                return {**base, **self.compile(meter)}

        return self.recorded(model, work)


EdgeTPUCompileOperator = PipelineEdgeTPUOperator   # the name the DAG used before


class GateOperator(MobiledetOperator):
    """Every model's gate decision, with the numbers behind each check. Runs when its
    upstream tasks are done, failed or not (trigger_rule all_done): a model whose task failed
    is rejected with that task's error, and the others are still decided.

    `jobs` is the list the model tasks were mapped over; the check results are pulled per
    map index of the check task (a failed index has none), the Edge TPU results from the
    checks' `edgetpu` key, or per map index of `edgetpu_task_id` where a DAG runs the Edge TPU
    stage as its own task.
    """

    template_fields = ("settings", "jobs")

    def __init__(self, *, settings: Any, jobs: Any, check_task_id: str = "model.check",
                 edgetpu_task_id: str | None = None, **kwargs):
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.settings = settings
        self.jobs = jobs
        self.check_task_id = check_task_id
        self.edgetpu_task_id = edgetpu_task_id

    def run(self, context):
        from include.pipeline.stages import gate_stage

        jobs = list(self.jobs or [])
        indexes = list(range(len(jobs)))
        pull = context["ti"].xcom_pull
        checks = pull(task_ids=self.check_task_id, map_indexes=indexes) if jobs else []
        if isinstance(checks, dict):   # one map index comes back as the value itself
            checks = [checks]
        if self.edgetpu_task_id:
            edgetpu = pull(task_ids=self.edgetpu_task_id, map_indexes=indexes) if jobs else []
            edgetpu = [edgetpu] if isinstance(edgetpu, dict) else edgetpu
        else:
            edgetpu = [c.get("edgetpu") for c in checks or [] if c]
        return gate_stage(self.settings, jobs, list(checks or []), list(edgetpu or []))


#: the XCom key under which PublishOperator(search_task_id=...) leaves the final decisions
FINAL_DECISIONS_KEY = "decisions"


class PublishOperator(PublishModelOperator):
    """PublishModelOperator for every passing model of the run, one release per checkpoint:
    files, then manifest.json by conditional create, then the consumer pointers (forward
    only). Every model it publishes becomes an asset event (through the asset alias
    ``mobiledet_published``) of the asset ``mobiledet/MODEL/VARIANT/PRECISION``, whose URI is
    that model's consumer pointer and whose extra holds the manifest URI, version and gate
    metric: schedule a downstream DAG on it.

    With `search_task_id` (the mapped recipe-search task, whose instances each return their
    model's final decision) it first merges those into `decided`, and pushes the run's final
    decisions under the XCom key ``decisions`` for the report. Give it trigger_rule all_done
    then: a search task that failed leaves its model rejected ("the recipe search did not
    finish"), the other models are published all the same."""

    template_fields = ("settings", "decided")
    args_from_plan = True

    def __init__(self, *, settings: Any, decided: Any, search_task_id: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.decided = decided
        self.search_task_id = search_task_id

    def run(self, context):
        from include.pipeline.stages import publish_stage, published_assets

        decided = list(self.decided)
        if self.search_task_id:
            decided = self.with_searches(context, decided)
            context["ti"].xcom_push(key=FINAL_DECISIONS_KEY, value=decided)
        results = publish_stage(self.settings, decided)
        emit_published(context, self.log, published_assets(self.settings, results, decided))
        return results

    def with_searches(self, context, decided: list[dict]) -> list[dict]:
        """`decided` with each searched model's decision from its search task instance (the
        instances are mapped over `search_jobs(settings, decided)`, in that order)."""
        from include.pipeline.search_stage import regate_stage, search_jobs

        n = len(search_jobs(self.settings, decided))
        searched = context["ti"].xcom_pull(task_ids=self.search_task_id,
                                           map_indexes=list(range(n))) if n else []
        searched = [searched] if isinstance(searched, dict) else list(searched or [])
        return regate_stage(self.settings, decided, searched)


class RunReportOperator(MobiledetOperator):
    """The run report (JSON + Markdown) in the store, and the results table in the log. Runs
    whatever happened upstream (all_done) and fails the run when nothing could be decided."""

    template_fields = ("settings",)

    def __init__(self, *, settings: Any, gate_task_id: str = "gate",
                 publish_task_id: str = "publish", **kwargs):
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.settings = settings
        self.gate_task_id = gate_task_id
        self.publish_task_id = publish_task_id

    def run(self, context):
        from include.pipeline.stages import report_stage

        # Pulled here, not templated: a failed gate or publish leaves no XCom, and the report
        # is written all the same (None = that task did not finish). The final decisions
        # (with the recipe searches' outcomes) are the publish task's, where it made them;
        # else the gate's.
        pull = context["ti"].xcom_pull
        decided = pull(task_ids=self.publish_task_id, key=FINAL_DECISIONS_KEY)
        if decided is None:
            decided = pull(task_ids=self.gate_task_id)
        published = pull(task_ids=self.publish_task_id)
        result = report_stage(self.settings, decided, published)
        self.log.info("results\n%s", result["table"])
        return result

