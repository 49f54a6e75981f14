"""CLI verb `serve`: Airflow on this machine, with this project's DAGs.

    mobiledet serve [--checkpoints DIR_OR_URI] [--data COCO] [--store URI] [--port 8080]
                    [--executor local|celery]

`serve` starts the API server, scheduler, dag-processor and triggerer (plus a Celery worker with
--executor celery) through include/deploy/components.py, prints the UI URL and the login, and
runs until Ctrl-C or SIGTERM; then it stops every component it started, by process id. Its
defaults come from the MOBILEDET_* settings (include/settings.py).
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from include.errors import ConfigError

DEFAULT_CHECKPOINTS = "checkpoints"
DEFAULT_STORE = "mobiledet-store"
CHECKPOINT_STORE_ENV = "MOBILEDET_CHECKPOINT_STORE"
DATA_ENV = "MOBILEDET_DATA"
STORE_ENV = "MOBILEDET_STORE"


def register(sub) -> None:
    p = sub.add_parser("serve", help="run Airflow on this machine with this project's DAGs "
                                     "(API server + UI, scheduler, dag-processor, triggerer)")
    p.add_argument("--checkpoints", default=None, metavar="DIR_OR_URI",
                   help="checkpoint store the landing watcher reads: a folder (created if "
                        "missing) or s3://bucket/prefix (default: $MOBILEDET_CHECKPOINT_STORE "
                        "or ./checkpoints)")
    p.add_argument("--data", default=None,
                   help="COCO-format evaluation dataset for landed checkpoints "
                        "(default: $MOBILEDET_DATA)")
    p.add_argument("--store", default=None,
                   help="artifact store: folder or s3://bucket/prefix (default: $MOBILEDET_STORE "
                        "or ./mobiledet-store)")
    p.add_argument("--port", type=int, default=8080, help="API server and UI port")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the API server listens on (0.0.0.0 for every interface)")
    p.add_argument("--executor", choices=("local", "celery"), default="local",
                   help="LocalExecutor (SQLite is fine) or CeleryExecutor (needs PostgreSQL "
                        "and a broker, plus a worker started here)")
    p.add_argument("--home", default=None,
                   help="AIRFLOW_HOME (default: $AIRFLOW_HOME or .airflow/ in this repository)")
    p.add_argument("--dags-folder", default=None,
                   help="DAGs folder (default: this repository's dags/)")
    p.add_argument("--sql-alchemy-conn", default=os.environ.get(
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"),
                   help="metadata database URL (default: SQLite in AIRFLOW_HOME)")
    p.add_argument("--broker-url", default=os.environ.get("AIRFLOW__CELERY__BROKER_URL"),
                   help="Celery broker, e.g. redis://127.0.0.1:6379/0 (--executor celery)")
    p.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    p.add_argument("--user", default="admin", help="the UI/API login (admin role)")
    p.add_argument("--password", default=None,
                   help="its password (default: $MOBILEDET_AIRFLOW_PASSWORD, else the one kept "
                        "in AIRFLOW_HOME, made if missing)")
    p.add_argument("--start-timeout", type=float, default=180,
                   help="seconds to wait for every component to be healthy")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.set_defaults(func=cmd_serve)


# --------------------------------------------------------------------------------------------
# serve
# --------------------------------------------------------------------------------------------

def _is_uri(value: str) -> bool:
    return "://" in value


def _local_or_uri(value: str | None, *, create: bool = False) -> str | None:
    if not value:
        return value
    if _is_uri(value):
        return value
    path = Path(value).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return str(path)


def pipeline_env(checkpoints: str | None, data: str | None, store: str | None) -> dict:
    """The MOBILEDET_* settings the DAGs read, with local folders made absolute."""
    env = {CHECKPOINT_STORE_ENV: _local_or_uri(checkpoints or DEFAULT_CHECKPOINTS, create=True),
           STORE_ENV: _local_or_uri(store or DEFAULT_STORE)}
    if data:
        local = _local_or_uri(data)
        if not _is_uri(local) and not Path(local).is_dir():
            raise ConfigError(f"dataset folder {local} does not exist.", where="--data",
                              fix="pass a COCO-format dataset folder (annotations/ + images) "
                                  "or an s3:// URI.")
        env[DATA_ENV] = local
    return env


def serve_settings(args):
    from include.deploy.environment import DAGS, AirflowSettings, local_slots
    from include.settings import settings

    env = settings()
    checkpoints = args.checkpoints or env.checkpoint_store or DEFAULT_CHECKPOINTS
    home = Path(args.home or os.environ.get("AIRFLOW_HOME") or
                Path(__file__).resolve().parents[2] / ".airflow").expanduser().resolve()

    dags = Path(args.dags_folder).expanduser().resolve() if args.dags_folder else DAGS
    return AirflowSettings(
        home=home, dags_folder=dags, host=args.host, port=args.port, executor=args.executor,
        sql_alchemy_conn=args.sql_alchemy_conn, broker_url=args.broker_url,
        worker_concurrency=args.concurrency, username=args.user,
        password=args.password or env.airflow_password, heavy_pool_slots=env.pool_slots,
        # LocalExecutor: one worker process per core. Celery: the workers' --concurrency sets
        # the slots, and the scheduler keeps Airflow's default parallelism (32): capped at the
        # slots it would wait for the result backend before sending each next task.
        parallelism=local_slots() if args.executor != "celery" else None,
        extra_env=pipeline_env(checkpoints, args.data or env.data or None,
                               args.store or env.store or DEFAULT_STORE))


class _Stop(Exception):
    """Raised by the SIGTERM handler so that `serve` stops its components."""


def cmd_serve(args) -> int:
    from include.deploy.components import AirflowDeployment

    settings = serve_settings(args)
    deployment = AirflowDeployment(settings)

    def on_sigterm(signum, frame):
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    code = 0
    try:
        print(f"[serve] AIRFLOW_HOME={settings.home}  executor={settings.executor_class}  "
              f"components: {', '.join(deployment.components)}")
        for key in (CHECKPOINT_STORE_ENV, DATA_ENV, STORE_ENV):
            print(f"[serve] {key}={settings.extra_env.get(key, '(not set)')}")
        started = time.monotonic()
        deployment.start(timeout=args.start_timeout)
        print(f"[serve] Airflow is up in {time.monotonic() - started:.0f} s: "
              f"{settings.base_url}/  login: {settings.username} / {settings.password}")
        print(f"[serve] component logs: {deployment.log_dir}/<component>.log; "
              "Ctrl-C stops everything")
        pids = ", ".join(f"{n}={p.pid}" for n, p in deployment.processes.items())
        print(f"[serve] pids: {pids}", flush=True)
        deadline = None if args.max_seconds is None else time.monotonic() + args.max_seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1.0)
            deployment.check_alive()   # a component that dies ends serve (with its log)
    except (KeyboardInterrupt, _Stop):
        print("\n[serve] stopping", flush=True)
    except Exception:
        code = 1
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        codes = deployment.stop()
        left = deployment.leftovers()
        print(f"[serve] stopped: {json.dumps(codes)}" +
              (f"; still alive: {left}" if left else ""), flush=True)
    return code
