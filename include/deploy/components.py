"""Airflow's components as subprocesses of `.venv/bin/airflow`, sharing one environment.

    settings = AirflowSettings(home=Path(".airflow-serve"), port=8080)
    with AirflowDeployment(settings) as airflow:      # db migrate, start, wait until healthy
        client = airflow.client()
        run = client.trigger("mobiledet_convert", conf={...})
        client.wait_for_run("mobiledet_convert", run["dag_run_id"], timeout=600)
    # every component is stopped by its process id (SIGTERM to its process group, bounded
    # wait, then SIGKILL), also when the block raises

Components: ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and, with the
CeleryExecutor, ``celery-worker`` (``airflow celery worker --concurrency N``). Each writes its
stdout and stderr to ``AIRFLOW_HOME/logs/<component>.log``. The environment they share is
include/deploy/environment.py; the REST client, include/deploy/client.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Iterable, Mapping

from include.deploy.client import HTTP_TIMEOUT_S, AirflowClient, HTTPStatusError, http_json
from include.deploy.environment import (REPO, AirflowSettings, airflow_environment,
                                        ensure_password)
from include.deploy.processes import ManagedProcess, port_open, stop_all, tail
from include.errors import ConfigError, ServiceError
from include.settings import settings

CORE_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
WORKER = "celery-worker"
# Which entry of /api/v2/monitor/health reports each component's heartbeat.
HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor",
               "triggerer": "triggerer"}
MIGRATE_TIMEOUT_S = 600
START_TIMEOUT_S = 180


#: the project's own packages the components import (next to the DAGs folder)
PROJECT_PACKAGES = ("include", "operators", "plugins")


def compile_sources(folders: Iterable[Path]) -> None:
    """Byte-compile the DAGs and the project's packages where their .pyc is missing or stale.
    Every task process parses its DAG file and imports what it imports; without the .pyc
    files (PYTHONDONTWRITEBYTECODE set, or a read-only checkout) each one compiles them from
    source again, about 0.07 s of every task. A folder that cannot be written is skipped: the
    tasks then compile as before."""
    import compileall

    for folder in folders:
        if folder.is_dir():
            compileall.compile_dir(str(folder), quiet=2, workers=1)


def airflow_executable() -> str:
    exe = Path(sys.executable).with_name("airflow")
    if not exe.exists():
        raise ConfigError(f"{exe} does not exist.", where="airflow",
                          fix="install the requirements into this Python's environment "
                              "(make install).")
    return str(exe)


def migrate_db(env: Mapping[str, str], timeout: float = MIGRATE_TIMEOUT_S) -> None:
    """`airflow db migrate` with the deployment's environment (bounded)."""
    home = Path(env["AIRFLOW_HOME"])
    log = home / "logs" / "db-migrate.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log, "wb") as out:
            proc = subprocess.run([airflow_executable(), "db", "migrate"], env=dict(env),
                                  stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"`airflow db migrate` did not finish within {timeout:.0f} s.",
                           where=str(log), fix="check that the metadata database answers.") \
            from exc
    if proc.returncode != 0:
        raise ServiceError(f"`airflow db migrate` failed (exit {proc.returncode}): "
                           f"{tail(log, 1200).strip()}",
                           where="AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                           fix="check the metadata database URL, that the database exists and "
                               "that the user may create tables.")


def component_argv(name: str, settings: AirflowSettings) -> list[str]:
    airflow = airflow_executable()
    if name == "api-server":
        return [airflow, "api-server", "--host", settings.host, "--port", str(settings.port),
                "--workers", str(settings.api_workers)]
    if name in ("scheduler", "dag-processor", "triggerer"):
        return [airflow, name]
    if name == WORKER:
        return [airflow, "celery", "worker", "--concurrency", str(settings.worker_concurrency),
                "--without-mingle", "--without-gossip"]
    raise ConfigError(f"unknown Airflow component {name!r}.",
                      fix=f"use one of {', '.join(CORE_COMPONENTS + (WORKER,))}.")


class AirflowDeployment:
    """Airflow's components as subprocesses of `.venv/bin/airflow`, sharing one environment."""

    def __init__(self, settings: AirflowSettings, components: Iterable[str] | None = None,
                 base_env: Mapping[str, str] | None = None):
        self.settings = settings
        if components is None:
            components = CORE_COMPONENTS + ((WORKER,) if settings.celery else ())
        self.components = list(components)
        if WORKER in self.components and not settings.celery:
            raise ConfigError("a Celery worker only runs with the CeleryExecutor.",
                              where="--executor", fix="use --executor celery.")
        Path(settings.home).mkdir(parents=True, exist_ok=True)
        self.env = airflow_environment(settings, base_env)
        self.log_dir = Path(self.env["AIRFLOW_HOME"]) / "logs"
        self.processes: dict[str, ManagedProcess] = {}

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S, migrate: bool = True) -> "AirflowDeployment":
        """Migrate the DB, start every component, wait (bounded) until all are healthy."""
        if port_open("127.0.0.1", self.settings.port):
            raise ServiceError(f"port {self.settings.port} is already in use.",
                               where="--port", fix="stop what listens there or pick another "
                                                   "port (--port).")
        ensure_password(self.settings)
        compile_sources([Path(self.env["AIRFLOW__CORE__DAGS_FOLDER"])]
                        + [REPO / d for d in PROJECT_PACKAGES])
        if migrate:
            migrate_db(self.env)
        try:
            for name in self.components:
                self.processes[name] = ManagedProcess(
                    name=name, argv=component_argv(name, self.settings),
                    log_path=self.log_dir / f"{name}.log", env=self.env,
                    cwd=Path(self.env["AIRFLOW_HOME"])).start()
            self.wait_healthy(timeout)
            self.ensure_pool()
        except BaseException:
            self.stop()
            raise
        return self

    def ensure_pool(self) -> dict | None:
        """Create (or resize) the heavy tasks' pool to the workers' slots.

        Why a pool and not only the executor's slots: the LocalExecutor and Celery take every
        task the scheduler queues and run them first come, first served, so a checkpoint that
        lands while another run's checks are queued waits behind all of them. Capped by the
        pool, the heavy tasks beyond the free slots stay *scheduled*, and the scheduler picks
        among those by priority weight, which puts an export (more tasks downstream) before a
        check: bench/pipeline.py measured the second run's export starting 8 s earlier. Tasks
        of a pool that does not exist are never scheduled, so this runs before any landing
        is converted; the light tasks (plan, jobs, gate, publish, report) stay in
        default_pool."""
        name = settings(self.env).pool     # MOBILEDET_POOL of the components' environment
        if name == "default_pool":
            return None
        body = {"slots": self.settings.pool_slots,
                "description": "mobiledet heavy tasks (export, convert, check, search): one "
                               "slot per worker slot",
                "include_deferred": False}
        client = self.client()
        try:
            return client.call("PATCH", f"pools/{urllib.parse.quote(name, safe='')}", body)
        except HTTPStatusError as exc:
            if exc.status != 404:
                raise
        return client.call("POST", "pools", {"name": name, **body})

    def stop(self) -> dict[str, int | None]:
        """Stop every component this deployment started, by process id (bounded)."""
        for proc in self.processes.values():
            proc.remember_children()
        return stop_all(self.processes.values())

    def leftovers(self) -> dict[str, list[int]]:
        return {name: left for name, p in self.processes.items() if (left := p.leftovers())}

    def __enter__(self) -> "AirflowDeployment":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- health -------------------------------------------------------------------------------
    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if not proc.running():
                raise ServiceError(
                    f"Airflow {name} exited (code {proc.popen.returncode}). Its log ends:\n"
                    f"{proc.log_tail(1500)}", where=str(proc.log_path),
                    fix="read the component's log for the first error.")

    def _answer(self, path: str, timeout: float) -> dict | None:
        """The API server's JSON answer to GET `path`, None while it does not answer."""
        try:
            return http_json("GET", f"{self.settings.base_url}{path}", timeout=timeout)
        except (ServiceError, OSError):
            return None

    def health(self) -> dict | None:
        return self._answer("/api/v2/monitor/health", timeout=5)

    def execution_api_healthy(self) -> bool:
        """Whether the task execution API (what every task's supervisor calls) answers.

        Also its warm-up: the execution API is a Cadwyn app that builds its versioned routers
        on the first request it gets. Left to the first task, that request (the task's
        "start" call) took 3.9-4.2 s on this machine instead of 0.03 s (py-spy on the
        api-server: Cadwyn._cadwyn_initialize), and every fresh api-server passed the cost to
        the first checkpoint of its first run. The request is made here, before any landing."""
        reply = self._answer("/execution/health", timeout=HTTP_TIMEOUT_S)
        return bool(reply) and reply.get("status") == "healthy"

    def wait_healthy(self, timeout: float = START_TIMEOUT_S, poll: float = 1.0) -> dict:
        """Until the API server answers (the REST API and the task execution API) and each
        started component heartbeats (bounded)."""
        deadline = time.monotonic() + timeout
        wanted = [HEALTH_KEYS[c] for c in self.components if c in HEALTH_KEYS]
        worker_ready = WORKER not in self.components
        health, execution_ok = None, False
        for _ in range(int(timeout / poll) + 1):
            self.check_alive()
            health = self.health()
            if not worker_ready:
                worker_ready = " ready." in self.processes[WORKER].log_tail(20000)
            if health and health.get("metadatabase", {}).get("status") == "healthy" and \
                    all((health.get(k) or {}).get("status") == "healthy" for k in wanted) and \
                    worker_ready:
                execution_ok = self.execution_api_healthy()
                if execution_ok:
                    return health
            if time.monotonic() > deadline:
                break
            time.sleep(poll)
        raise ServiceError(f"Airflow was not healthy within {timeout:.0f} s "
                           f"(health: {json.dumps(health)}, celery worker ready: "
                           f"{worker_ready}, execution API healthy: {execution_ok}).", where=str(self.log_dir),
                           fix="read the components' logs there for the first error.")

    # -- REST ---------------------------------------------------------------------------------
    def client(self) -> "AirflowClient":
        return AirflowClient(self.settings.base_url, self.settings.username,
                             self.settings.password)


