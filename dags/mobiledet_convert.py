"""mobiledet_convert: checkpoints -> checked, published on-device models.

plan (the run plan under the XCom key "plan") -> export (one per checkpoint) -> jobs
     -> model (a mapped task group, one per checkpoint x precision):
            convert -> check (evaluate vs float reference, validate contract, benchmark;
                              for integer EdgeTPU models also the Edge TPU stage: offline
                              op-mapping prediction + the compiler where installed)
                    -> device_<name> (one per phone of the deployment's config, on that
                                      phone's Celery queue: benchmark_model over adb per
                                      delegate; none without `devices` in the config)
     -> gate (all_done: a failed model is rejected with its task's error, the rest decided)
     -> search (one per int8 model that failed the accuracy gate: other recipes; the choice
                checked and gated like any model, in that task)
     -> publish (all_done: the searches' decisions merged in; manifest by conditional create,
                 pointers forward) -> report (all_done)

It starts by itself when a checkpoint lands in the checkpoint store (an AssetWatcher with
operators.triggers.CheckpointLandingTrigger; each landing is claimed once, so a landing
reported twice is converted once), or by hand with conf, e.g.
    {"checkpoints": ["s3://bucket/ckpts/edgetpu-qat"], "data": "/data/coco_val_subset"}
Settings come from the environment (include/settings.py, read through
include/deploy/deployment.py). Only DAG wiring lives
here: each task is one step of include/pipeline/steps/ over the typed run plan
(operators/pipeline.py). Retries, time limits and the pool of the heavy tasks:
include/deploy/task_policy.py.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, Param, task, task_group

from include.config import overrides_schema
from include.deploy import deployment
from include.deploy.task_policy import device_task_args, device_task_id, task_args
from operators.pipeline import (ConvertModelOperator, DeviceBenchmarkOperator,
                                ExportCheckpointOperator, GateOperator, PublishRunOperator,
                                QualityCheckOperator, RunReportOperator)

from operators.triggers import CheckpointLandingTrigger

LABEL = "{{ mobiledet_label }}"
CHECKPOINT_STORE = deployment.checkpoint_store()
#: the phones of the deployment's config (MOBILEDET_CONFIG), read when the file is parsed
DEVICES = deployment.devices()
SCHEDULE = None
if CHECKPOINT_STORE:
    SCHEDULE = [Asset(name="mobiledet_checkpoints", uri=CHECKPOINT_STORE, watchers=[
        AssetWatcher(name="mobiledet_checkpoint_landing", trigger=CheckpointLandingTrigger(
            store_uri=CHECKPOINT_STORE, conn_id=deployment.checkpoint_conn_id(),
            poll_interval=deployment.watch_poll_s(),
            ledger_store_uri=deployment.artifact_store(), ledger_conn_id="aws_default",
            model_name=deployment.model_name(), sweep_interval=deployment.sweep_s()))])]

with DAG(
    dag_id="mobiledet_convert",
    description="Convert MobileDet checkpoints to TFLite, check them, publish the passing ones",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["mobiledet", "tflite"],
    params={
        "checkpoints": Param([], type="array", description="checkpoint folders, export folders, "
                             "TFOD bundles or TFOD training folders (local paths or s3:// URIs)"),
        "data": Param(deployment.evaluation_data(), type="string",
                      description="COCO-format evaluation dataset (default: $MOBILEDET_DATA)"),
        "calibration": Param(None, type=["null", "string"],
                             description="int8 calibration images (default: the dataset)"),
        "variants": Param(None, type=["null", "array"], description="only these variants"),
        "precisions": Param(None, type=["null", "array"], description="instead of the default matrix"),
        "store": Param(None, type=["null", "string"], description="artifact store URI"),
        "model_name": Param(None, type=["null", "string"]),
        "config": Param(deployment.config_file(), type=["null", "string"],
                        description="pipeline config file (default: $MOBILEDET_CONFIG)"),
        "overrides": Param({}, **overrides_schema()),
    },
    doc_md=__doc__,
) as dag:

    @task(**task_args("plan"))
    def plan(params=None, run_id=None, triggering_asset_events=None, ti=None) -> list[dict]:
        from include.pipeline.steps.plan import landings_from_events, plan as plan_step
        conf = dict(params)
        if triggering_asset_events or conf.get("claim"):
            # started by a landing (or the ledger's safety net): the run claims its work from
            # the checkpoint ledger; the events and any checkpoints given are only hints
            landings = landings_from_events(triggering_asset_events)
            landings += [{"uri": uri} for uri in conf.get("checkpoints") or []]
            conf.update(reconcile=True, landings=landings, checkpoints=[])
        run = plan_step(conf, run_id).to_dict()
        # The run plan goes under the XCom key "plan", its checkpoints are the return value:
        # Airflow maps only over return values, and a task just to pick the checkpoints out of
        # the plan cost a task process and a scheduling round on the critical path.
        ti.xcom_push(key="plan", value=run)
        return run["checkpoints"]

    @task(trigger_rule="all_done")
    def jobs(run: dict, exports: list[dict]) -> list[dict]:
        # all_done: a checkpoint whose export failed has no jobs; the others go on
        from include.pipeline.plan import RunPlan
        from include.pipeline.steps.plan import jobs_of
        return [j.to_dict() for j in jobs_of(RunPlan.of(run), list(exports or []))]

    checkpoints = plan()
    run = checkpoints["plan"]
    exports = ExportCheckpointOperator.partial(
        task_id="export", plan=run, map_index_template=LABEL, **task_args("export"),
    ).expand(checkpoint=checkpoints)
    planned = jobs(run, exports.output)

    @task_group
    def model(job):
        # A mapped task group: a failed convert fails only its own check.
        converted = ConvertModelOperator(task_id="convert", plan=run, job=job,
                                         map_index_template=LABEL, **task_args("convert"))
        checked = QualityCheckOperator(task_id="check", plan=run, model=converted.output,
                                       map_index_template=LABEL, **task_args("check"))
        for device in DEVICES:
            # after a passed check only; Airflow cannot vary the queue per map index, so one
            # task per phone, on the queue of the worker it is plugged into
            checked >> DeviceBenchmarkOperator(
                task_id=device_task_id(device.name), plan=run, model=converted.output,
                device=device.name, map_index_template=LABEL, **device_task_args(device))

    models = model.expand(job=planned)
    decided = GateOperator(task_id="gate", plan=run, jobs=planned, check_task_id="model.check",
                           device_task_ids=[f"model.{device_task_id(d.name)}" for d in DEVICES],
                           **task_args("gate"))

    @task
    def search_jobs(run: dict, decided: list[dict]) -> list[dict]:
        from include.pipeline.plan import RunPlan
        from include.pipeline.steps.search import search_jobs as jobs_to_search
        return [j.to_dict() for j in jobs_to_search(RunPlan.of(run), decided)]

    @task(map_index_template="{{ mobiledet_label }}", **task_args("search"))
    def search(run: dict, job: dict, decided: list[dict]) -> dict:
        # a failed int8 model: other recipes in order, within gates' search_budget; the
        # choice is checked, analysed and gated here, like any model (its final decision)
        from airflow.sdk import get_current_context

        from include.console import quiet_native_stderr
        from include.pipeline.plan import RunPlan
        from include.pipeline.steps.plan import as_job
        from include.pipeline.steps.search import search as search_step
        get_current_context()["mobiledet_label"] = job["name"]
        with quiet_native_stderr():   # TensorFlow's start-up lines, unless MOBILEDET_VERBOSE=1
            return search_step(RunPlan.of(run), as_job(job), decided)

    to_search = search_jobs(run, decided.output)
    searched = search.partial(run=run, decided=decided.output).expand(job=to_search)
    # all_done: a search that failed leaves its model rejected, the rest is published; the
    # gate's decisions are its argument, so a failed gate publishes nothing
    published = PublishRunOperator(task_id="publish", plan=run, decided=decided.output,
                                   search_task_id="search", trigger_rule="all_done",
                                   **task_args("publish"))
    report = RunReportOperator(task_id="report", plan=run, gate_task_id="gate",
                               **task_args("report"))
    models >> decided
    searched >> published >> report
