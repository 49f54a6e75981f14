"""mobiledet_convert: checkpoints -> checked, published on-device models.

plan -> export (one per checkpoint) -> convert (one per checkpoint x precision)
     -> check (evaluate vs float reference, validate contract, benchmark) and Edge TPU, per model
     -> gate -> publish (manifest last) -> report

Trigger with conf, e.g.
    {"checkpoints": ["s3://bucket/ckpts/edgetpu-qat"], "data": "/data/coco_val_subset"}
Only DAG wiring lives here; the work is in include/pipeline/stages.py, behind operators/.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from operators.mobiledet import (ConvertModelOperator, EdgeTPUCompileOperator,
                                 ExportCheckpointOperator, GateOperator, PublishOperator,
                                 QualityCheckOperator, RunReportOperator)

LABEL = "{{ mobiledet_label }}"

with DAG(
    dag_id="mobiledet_convert",
    description="Convert MobileDet checkpoints to TFLite, check them, publish the passing ones",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["mobiledet", "tflite"],
    params={
        "checkpoints": Param([], type="array", description="checkpoint folders, export folders "
                             "or TFOD bundles (local paths or s3:// URIs)"),
        "data": Param("", type="string", description="COCO-format evaluation dataset"),
        "calibration": Param(None, type=["null", "string"],
                             description="int8 calibration images (default: the dataset)"),
        "variants": Param(None, type=["null", "array"], description="only these variants"),
        "precisions": Param(None, type=["null", "array"], description="instead of the default matrix"),
        "store": Param(None, type=["null", "string"], description="artifact store URI"),
        "model_name": Param(None, type=["null", "string"]),
        "config": Param(None, type=["null", "string"], description="pipeline config file"),
        "overrides": Param({}, type="object", description="config overrides, e.g. "
                           "{\"gates.min_map\": 0.3}"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def plan(params=None, run_id=None) -> dict:
        from include.pipeline.stages import plan as plan_stage
        return plan_stage(dict(params), run_id)

    @task
    def checkpoints_of(settings: dict) -> list[dict]:
        return settings["checkpoints"]

    @task
    def jobs(settings: dict, exports: list[dict]) -> list[dict]:
        from include.pipeline.stages import jobs_of
        return jobs_of(settings, list(exports))

    settings = plan()
    exports = ExportCheckpointOperator.partial(
        task_id="export", settings=settings, map_index_template=LABEL,
    ).expand(checkpoint=checkpoints_of(settings))
    converted = ConvertModelOperator.partial(
        task_id="convert", settings=settings, map_index_template=LABEL,
    ).expand(job=jobs(settings, exports.output))
    checks = QualityCheckOperator.partial(
        task_id="check", settings=settings, map_index_template=LABEL,
    ).expand(model=converted.output)
    edgetpu = EdgeTPUCompileOperator.partial(
        task_id="edgetpu", settings=settings, map_index_template=LABEL,
    ).expand(model=converted.output)
    decided = GateOperator(task_id="gate", settings=settings, checks=checks.output,
                           edgetpu=edgetpu.output)
    published = PublishOperator(task_id="publish", settings=settings, decided=decided.output)
    RunReportOperator(task_id="report", settings=settings, decided=decided.output,
                      published=published.output)
