"""mobiledet_release: what ops do to published releases, through Airflow.

One run, one action, with Airflow's own authentication (who may trigger this DAG may act) and
its UI and REST API as the record of the request; the store's audit log
(``MODEL/history/``) records who did what and why, with the Airflow user who triggered it:

    promote   move a channel (canary, stable, ...) to `version` (either direction)
    yank      record `version` as yanked: every pointer and channel that named it moves back
    restore   undo a yank
    bless     publish a model the gate rejected (`variant`/`precision`), with `reason`
    retry     re-queue a checkpoint of the ledger (`checkpoint`: its URI or fingerprint)

Every consumer pointer an action moves is an asset event of ``mobiledet/MODEL/VARIANT/
PRECISION`` (extra: the action, the release the pointer now names, its model file), so a
roll-out DAG scheduled on it rolls devices forward, or back after a yank. The dashboard inside
Airflow triggers this DAG as the signed-in user; `mobiledet release ... --airflow URL` too.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, AssetAlias, Param, task

from include.deploy import deployment
from include.store.layout import PUBLISHED_ALIAS

ACTIONS = ["promote", "yank", "restore", "bless", "retry"]

with DAG(
    dag_id="mobiledet_release",
    description="Ops actions on published releases: promote, yank, restore, bless, retry",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,   # a button's run must not wait for someone to unpause it
    tags=["mobiledet", "ops"],
    params={
        "action": Param("promote", enum=ACTIONS),
        "version": Param(None, type=["null", "string"], description="the release"),
        "variant": Param(None, type=["null", "string"]),
        "precision": Param(None, type=["null", "string"]),
        "channel": Param(None, type=["null", "string"], description="promote: the channel"),
        "reason": Param(None, type=["null", "string"], description="why (yank, bless)"),
        "checkpoint": Param(None, type=["null", "string"],
                            description="retry: the checkpoint's URI or fingerprint"),
        "store": Param(None, type=["null", "string"], description="artifact store URI"),
        "model_name": Param(None, type=["null", "string"]),
        "config": Param(deployment.config_file(), type=["null", "string"],
                        description="pipeline config file (default: $MOBILEDET_CONFIG)"),
    },
    doc_md=__doc__,
) as dag:

    @task(outlets=[AssetAlias(PUBLISHED_ALIAS)])
    def act(params=None, dag_run=None, outlet_events=None) -> dict:
        from include.pipeline.release_step import act as run_action, pointer_events

        who = getattr(dag_run, "triggering_user_name", None) or "airflow"
        entry = run_action(dict(params), who=f"{who} (Airflow)")
        if outlet_events is not None:
            from airflow.sdk import Asset

            events = outlet_events[AssetAlias(PUBLISHED_ALIAS)]
            for asset in pointer_events(dict(params), entry):
                events.add(Asset(name=asset["name"], uri=asset["uri"]), extra=asset["extra"])
        return entry

    act()
