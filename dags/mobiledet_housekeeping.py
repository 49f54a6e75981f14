"""mobiledet_housekeeping: apply the retention policy to the artifact store, daily.

prune: the newest `retention.keep_releases` releases of each model stay, and every release a
consumer pointer or a channel names, and every yanked release; finished runs' intermediate
files go after `retention.keep_runs_days`, their reports and failure records after
`retention.keep_failures_days`; a run the checkpoint ledger still holds is never touched. The
ledger's queue markers are repaired on the way (a crash between a record and its marker).

channel_rules: each rule of the config's `channel_rules` (e.g. `{from: canary, to: stable,
after_hours: 24}`) promotes what the source channel has named for that long without a yank to
the target channel, recorded in the store's audit log as a promote by "housekeeping" with the
rule as its reason.

The same as `mobiledet prune --store URI`. Settings: the pipeline config (MOBILEDET_CONFIG,
`retention`), the store (MOBILEDET_STORE); the schedule MOBILEDET_HOUSEKEEPING_SCHEDULE
(default @daily, `off` for none). Trigger it with conf {"dry_run": true} to see what would go.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from include.deploy import deployment

with DAG(
    dag_id="mobiledet_housekeeping",
    description="Retention: old releases no pointer names, intermediate files of finished runs",
    schedule=deployment.housekeeping_schedule(),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mobiledet", "housekeeping"],
    params={"dry_run": Param(False, type="boolean", description="say what would go; delete "
                                                                "nothing"),
            "config": Param(deployment.config_file(), type=["null", "string"],
                            description="pipeline config file (default: $MOBILEDET_CONFIG)")},
    doc_md=__doc__,
) as dag:

    @task(retries=2)
    def prune(params=None) -> dict:
        from include.config import load_config
        from include.store import open_store
        from include.store.retention import prune as apply

        config = load_config(params.get("config") or None)
        result = apply(open_store(config.store_uri, conn_id=config.conn_id), config.retention,
                       dry_run=bool(params.get("dry_run")))
        return {"dry_run": result["dry_run"], "deleted_files": result["deleted_files"],
                "releases_deleted": {m: [r["version"] for r in p["deleted"]]
                                     for m, p in result["models"].items()},
                "runs_deleted": [r["run_id"] for r in result["runs"]["deleted"]],
                "runs_trimmed": [r["run_id"] for r in result["runs"]["trimmed"]]}

    @task(retries=2)
    def channel_rules(params=None) -> list[dict]:
        from include.config import load_config
        from include.store import open_store
        from include.store.registry import Releases

        config = load_config(params.get("config") or None)
        if not config.channel_rules or params.get("dry_run"):
            return []
        releases = Releases(open_store(config.store_uri, conn_id=config.conn_id),
                            config.model_name, channels=config.channels)
        moved = []
        for rule in config.channel_rules:
            for entry in releases.auto_promote(rule.source, rule.target, rule.after_hours):
                moved.append({"from": rule.source, "to": rule.target,
                              "version": entry.get("version"), "seq": entry.get("seq"),
                              "variant": entry.get("variant"),
                              "precision": entry.get("precision")})
        return moved

    prune()
    channel_rules()
