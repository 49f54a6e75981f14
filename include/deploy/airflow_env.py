"""Running the DAG through Airflow from the CLI and tests: AIRFLOW_HOME, metadata DB, dag.test.

Airflow reads its settings when first imported, so `prepare_airflow` must run before anything
imports airflow. Without an AIRFLOW_HOME of the user's, the project keeps its own under
`.airflow/` at the repository root (SQLite metadata database, this repo's dags/ folder).
A real deployment sets AIRFLOW_HOME / AIRFLOW__* itself and only needs dags/ and the package.
"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_ID = "mobiledet_convert"


def airflow_home(home: str | os.PathLike | None = None) -> Path:
    """AIRFLOW_HOME as `prepare_airflow` sets it: `home`, else $AIRFLOW_HOME, else .airflow/
    in this repository (nothing is created or changed)."""
    return Path(home or os.environ.get("AIRFLOW_HOME") or REPO / ".airflow").resolve()


def prepare_airflow(home: str | os.PathLike | None = None) -> Path:
    """Set Airflow's environment (before airflow is imported) and migrate the metadata DB."""
    if "airflow" in sys.modules and home is None and os.environ.get("AIRFLOW_HOME"):
        return Path(os.environ["AIRFLOW_HOME"])
    home_dir = airflow_home(home)
    home_dir.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(home_dir)
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    marker = home_dir / ".db-migrated"
    if not marker.exists():
        airflow = Path(sys.executable).with_name("airflow")
        proc = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True,
                              env=os.environ.copy())
        if proc.returncode != 0:
            from include.errors import ConfigError
            raise ConfigError(f"`airflow db migrate` failed: {proc.stderr.strip()[-800:]}",
                              where=f"AIRFLOW_HOME={home_dir}",
                              fix="check the metadata database settings (AIRFLOW__DATABASE__"
                                  "SQL_ALCHEMY_CONN) or remove the folder to start fresh.")
        marker.write_text("ok\n")
    return home_dir


def load_dag():
    import importlib.util

    spec = importlib.util.spec_from_file_location(DAG_ID, DAGS / f"{DAG_ID}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def run_dag(conf: dict, *, run_after: datetime | None = None, logs: str = "above") -> dict:
    """Run mobiledet_convert once through Airflow (dag.test: tasks run in this process, state
    in the metadata DB) and return the report task's result (raises if the run failed).

    `run_after` (UTC; default now) is also the run's logical date, so a watcher can find the
    run (`run_id_for`) before dag.test returns; `logs` says where the task logs went."""
    prepare_airflow()
    dag = load_dag()
    dag_run = dag.test(run_conf=conf, **({} if run_after is None else
                                         {"run_after": run_after, "logical_date": run_after}))
    state = str(getattr(dag_run, "state", ""))
    from include.errors import MobiledetError
    failed = []
    for ti in dag_run.get_task_instances() if hasattr(dag_run, "get_task_instances") else []:
        if str(ti.state) in ("failed", "upstream_failed"):
            failed.append(f"{ti.task_id}[{ti.map_index}]={ti.state}")
    if state != "success":
        raise MobiledetError(f"DAG run {dag_run.run_id} ended {state}: {', '.join(failed) or '?'}",
                             where=DAG_ID, fix=f"read the task logs {logs} for the first failure.")
    return {"run_id": dag_run.run_id, "state": state, "report": _report_of(dag_run)}


def run_id_for(run_after: datetime) -> str:
    """The run id dag.test gives the run it starts with `run_after` (run_dag's argument)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    return DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=run_after,
                                  run_after=run_after)


def _report_of(dag_run):
    for ti in dag_run.get_task_instances():
        if ti.task_id == "report":
            return ti.xcom_pull(task_ids="report")
    return None
