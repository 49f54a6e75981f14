"""mobiledet_retrain: fine-tune the newest checkpoint of each variant on a schedule.

variants -> retrain (one mapped task per variant, one at a time) -> summary

For each variant, the newest float checkpoint in the checkpoint store is fine-tuned on a
COCO-format dataset, then fine-tuned quantization-aware where the variant has QAT (edgetpu,
dsp, gpu; not cpu). The new checkpoints land in the same store as
`<variant>-<float|qat>-<UTC stamp>-retrain/`, checkpoint.json written last. Nothing else links
this DAG to mobiledet_convert: the checkpoint-landing watcher sees the new checkpoints and starts
the conversion. A new checkpoint that scores worse than its parent on the held-out split still
lands (the conversion's gates decide); the summary says "worse than parent" for it.

Settings, read from the environment when the DAG file is parsed (each is also a run param):

| variable | default | |
|---|---|---|
| MOBILEDET_CHECKPOINT_STORE | `<repo>/checkpoints` | local folder or s3://bucket/prefix |
| MOBILEDET_RETRAIN_SCHEDULE | `@daily` | cron or preset; `off` / `none` / empty: no schedule |
| MOBILEDET_RETRAIN_VARIANTS | `edgetpu` | comma-separated: cpu, edgetpu, dsp, gpu |
| MOBILEDET_RETRAIN_DATA | (none: no schedule until set) | COCO dataset folder or s3:// URI, with train and val splits |
| MOBILEDET_RETRAIN_STEPS | `200` | float fine-tuning steps |
| MOBILEDET_RETRAIN_QAT_STEPS | `100` | QAT fine-tuning steps; 0: no QAT |
| MOBILEDET_RETRAIN_BUDGET_S | `1800` | time budget per variant, seconds (the QAT run is shortened to fit) |
| MOBILEDET_RETRAIN_BATCH | `16` | batch size |
| MOBILEDET_RETRAIN_EVAL_IMAGES | all | held-out images scored per checkpoint |

S3 credentials come from the Airflow connection `conn_id` (default `aws_default`). Only DAG
wiring lives here; the work is `include.pipeline.retrain.retrain`.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, task

from include.pipeline.retrain import settings_from_env

SETTINGS = settings_from_env()
# A training cannot be stopped mid-run, so the task gets room beyond the budget for scoring.
TIMEOUT = timedelta(seconds=2 * SETTINGS["budget_s"] + 900)

with DAG(
    dag_id="mobiledet_retrain",
    description="Fine-tune the newest MobileDet checkpoint of each variant; land the results "
                "in the checkpoint store",
    schedule=SETTINGS["schedule"],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mobiledet", "training"],
    params={
        "store": Param(SETTINGS["store"], type="string",
                       description="checkpoint store (local folder or s3://bucket/prefix)"),
        "data": Param(SETTINGS["data"], type="string",
                      description="COCO-format dataset with train and val splits"),
        "variants": Param(SETTINGS["variants"], type="array", description="variants to retrain"),
        "steps": Param(SETTINGS["steps"], type="integer", minimum=1),
        "qat_steps": Param(SETTINGS["qat_steps"], type="integer", minimum=0),
        "budget_s": Param(SETTINGS["budget_s"], type="number", exclusiveMinimum=0,
                          description="time budget per variant, seconds"),
        "batch": Param(SETTINGS["batch"], type="integer", minimum=1),
        "eval_images": Param(SETTINGS["eval_images"], type=["null", "integer"],
                             description="held-out images scored per checkpoint (null: all)"),
        "conn_id": Param(SETTINGS["conn_id"], type=["null", "string"],
                         description="Airflow connection for s3:// stores and data"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def variants(params=None) -> list[str]:
        from include.pipeline.retrain import parse_variants
        return parse_variants(params["variants"], where="params.variants")

    @task(max_active_tis_per_dagrun=1, execution_timeout=TIMEOUT,
          map_index_template="{{ retrain_variant }}")
    def retrain(variant: str, params=None) -> dict:
        from airflow.sdk import get_current_context

        from include.pipeline.retrain import retrain as retrain_stage
        get_current_context()["retrain_variant"] = variant   # names the mapped task in the UI
        return retrain_stage(params["store"], params["data"], [variant],
                             steps=params["steps"], qat_steps=params["qat_steps"],
                             budget_s=params["budget_s"], batch=params["batch"],
                             eval_images=params["eval_images"], conn_id=params["conn_id"],
                             require_parent=False)

    @task
    def summary(results, params=None) -> dict:
        from include.pipeline.retrain import merge_results, nothing_to_retrain

        merged = merge_results(list(results))
        if not merged["checkpoints"]:
            raise nothing_to_retrain(params["store"], merged["skipped"])
        for line in merged["summary"]:
            print(line)
        return merged

    summary(retrain.expand(variant=variants()))
