"""Operators for each heavy stage. Each one reads its arguments, calls one stage function of
`include.pipeline.stages` and returns its small JSON result (store URIs and metrics, never local
paths or model bytes), so the same DAG runs on one machine or across Celery/Kubernetes workers.

Nothing heavy is imported at module level: TensorFlow and friends load inside `execute`.
"""
from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator


class _StageOperator(BaseOperator):
    """Common shape: `settings` (the plan's output) plus one stage-specific argument."""

    stage: str = ""
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


class ExportCheckpointOperator(_StageOperator):
    """Checkpoint (or TFOD bundle) -> TFLite-ready export folder in the store."""

    template_fields = ("settings", "checkpoint")
    stage = "export_stage"
    label_of = staticmethod(lambda c: c.get("ckpt_id"))

    def __init__(self, *, settings: Any, checkpoint: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.checkpoint = checkpoint

    def execute(self, context):
        self._label(context, self.checkpoint)
        return self._call(self.settings, self.checkpoint)


class ConvertModelOperator(_StageOperator):
    """One (checkpoint, precision) job -> model.tflite + conversion.json in the store."""

    template_fields = ("settings", "job")
    stage = "convert_stage"
    label_of = staticmethod(lambda j: j.get("name"))
    ui_color = "#fde8e8"

    def __init__(self, *, settings: Any, job: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.job = job

    def execute(self, context):
        self._label(context, self.job)
        return self._call(self.settings, self.job)


class QualityCheckOperator(_StageOperator):
    """COCO evaluation against the float reference, output contract (GX), latency benchmark."""

    template_fields = ("settings", "model")
    stage = "check_stage"
    label_of = staticmethod(lambda m: m.get("name"))
    ui_color = "#e6f4ea"

    def __init__(self, *, settings: Any, model: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.model = model

    def execute(self, context):
        self._label(context, self.model)
        return self._call(self.settings, self.model)


class EdgeTPUCompileOperator(_StageOperator):
    """Edge TPU compilation (where installed) and the offline op-mapping prediction."""

    template_fields = ("settings", "model")
    stage = "edgetpu_stage"
    label_of = staticmethod(lambda m: m.get("name"))
    ui_color = "#fef7e0"

    def __init__(self, *, settings: Any, model: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.model = model

    def execute(self, context):
        self._label(context, self.model)
        return self._call(self.settings, self.model)


class GateOperator(_StageOperator):
    """Every model's gate decision, with the numbers behind each check."""

    template_fields = ("settings", "checks", "edgetpu")
    stage = "gate_stage"

    def __init__(self, *, settings: Any, checks: Any, edgetpu: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.checks = checks
        self.edgetpu = edgetpu

    def execute(self, context):
        return self._call(self.settings, list(self.checks), list(self.edgetpu))


class PublishOperator(_StageOperator):
    """Atomic publish of the passing models: files, then manifest.json, then latest.json."""

    template_fields = ("settings", "decided")
    stage = "publish_stage"
    ui_color = "#e8eaed"

    def __init__(self, *, settings: Any, decided: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.decided = decided

    def execute(self, context):
        return self._call(self.settings, list(self.decided))


class RunReportOperator(_StageOperator):
    """The run report (JSON + Markdown) in the store, and the results table in the log."""

    template_fields = ("settings", "decided", "published")
    stage = "report_stage"

    def __init__(self, *, settings: Any, decided: Any, published: Any, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.decided = decided
        self.published = published

    def execute(self, context):
        result = self._call(self.settings, list(self.decided), list(self.published))
        self.log.info("results\n%s", result["table"])
        return result
