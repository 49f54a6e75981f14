"""mobiledet_rollout_example: a downstream DAG that runs when a model is published.

Scheduled on the asset `mobiledet/MODEL/VARIANT/PRECISION` that mobiledet_convert's publish
task emits for every model it publishes (default: the EdgeTPU uint8 model of `mobiledet`), and
that mobiledet_release emits when an ops action moves that model's pointer (`action` in the
extra: a yank rolls devices back to the release the pointer names now, or to none). It reads
the event's extra (manifest URI, version, gate metric, model URI and sha256), downloads the
model with its recorded sha256 checked, and records the roll-out in the store under rollouts/.
Replace `roll_out` with your app build or device-fleet update.

Settings (environment, read when the DAG file is parsed; include/settings.py):
MOBILEDET_ROLLOUT_MODEL (mobiledet), MOBILEDET_ROLLOUT_VARIANT (edgetpu),
MOBILEDET_ROLLOUT_PRECISION (uint8), MOBILEDET_STORE.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, task

from include.deploy.deployment import published_asset_of
from include.settings import settings

MODEL = settings().rollout_model
VARIANT = settings().rollout_variant
PRECISION = settings().rollout_precision
PUBLISHED = Asset(**published_asset_of(MODEL, VARIANT, PRECISION))

with DAG(
    dag_id="mobiledet_rollout_example",
    description=f"Roll out each newly published {MODEL} {VARIANT}/{PRECISION} model",
    schedule=[PUBLISHED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["mobiledet", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def roll_out(triggering_asset_events=None) -> list[dict]:
        import tempfile

        from include.store import fetch, open_store

        done = []
        for event in (triggering_asset_events or {}).get(PUBLISHED, []):
            extra = event.extra or {}
            record = {k: extra.get(k) for k in ("action", "version", "from_version",
                                                 "manifest_uri", "model_uri", "sha256",
                                                 "metric", "map", "reason")}
            if not extra.get("model_uri"):   # every release of it yanked: nothing to run
                done.append(dict(record, rolled_out=None))
                continue
            with tempfile.TemporaryDirectory() as tmp:
                fetch(extra["model_uri"], f"{tmp}/model.tflite", sha256=extra["sha256"])
            store_uri = extra["manifest_uri"].rsplit(f"/{extra['model']}/", 1)[0]
            open_store(store_uri).write_json(
                f"rollouts/{extra['model']}/{VARIANT}/{PRECISION}/{extra['version']}.json", record)
            done.append(dict(record, rolled_out=extra["version"]))
        return done

    roll_out()
