"""Run Airflow 3 on one machine, component by component, and talk to it over its REST API.

`airflow standalone` starts the same components, but hides their settings. Here they are
explicit: one environment dict (`airflow_environment`) is shared by every component, so the
settings that must agree do agree: the API server's port and the execution API URL the workers
call back to, the JWT secret that signs task tokens and the one that checks them, the metadata
DB, the executor and the Celery broker.

    settings = AirflowSettings(home=Path(".airflow-serve"), port=8080)
    with AirflowDeployment(settings) as airflow:      # db migrate, start, wait until healthy
        client = airflow.client()
        run = client.trigger("mobiledet_convert", conf={...})
        client.wait_for_run("mobiledet_convert", run["dag_run_id"], timeout=600)
    # every component is stopped by its process id (SIGTERM to its process group, bounded
    # wait, then SIGKILL), also when the block raises

Components: ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and, with the
CeleryExecutor, ``celery-worker`` (``airflow celery worker --concurrency N``). Each writes its
stdout and stderr to ``AIRFLOW_HOME/logs/<component>.log``.

`ManagedProcess` is the piece that starts and stops one process by id; the tests use it for
PostgreSQL, Redis and the S3 server too. `AirflowClient` and `trigger_and_follow` use only
urllib, against the URL they are given.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from include.errors import ConfigError, MobiledetError

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_ID = "mobiledet_convert"

#: `local` is Airflow's LocalExecutor whose worker processes preload TensorFlow and Great
#: Expectations (include/pipeline/executors.py); `celery` preloads through
#: CELERY_CONFIG_OPTIONS. The plain "LocalExecutor" class name is accepted too.
PRELOADING_LOCAL = "include.pipeline.executors.PreloadingLocalExecutor"
EXECUTORS = {"local": PRELOADING_LOCAL, "celery": "CeleryExecutor"}
CORE_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
WORKER = "celery-worker"
CELERY_CONFIG_OPTIONS = "include.pipeline.celery_worker.CELERY_CONFIG"
# Which entry of /api/v2/monitor/health reports each component's heartbeat.
HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor",
               "triggerer": "triggerer"}
SIMPLE_AUTH_MANAGER = \
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
TERMINAL_RUN_STATES = ("success", "failed")
FAILED_TASK_STATES = ("failed", "up_for_retry")

MIGRATE_TIMEOUT_S = 600
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30
HTTP_TIMEOUT_S = 30


class ServiceError(MobiledetError):
    """A service could not be started, did not become healthy, or answered with an error."""


# --------------------------------------------------------------------------------------------
# One process, started and stopped by its id
# --------------------------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, chars: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - chars))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # psutil.NoSuchProcess, AccessDenied, ...
        return False


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:
        return []


def _group_members(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid`."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class ManagedProcess:
    """One long-running command in its own process group, logging to `log_path`.

    `stop()` sends `stop_signal` to the whole group (the command's children too), waits at most
    `stop_timeout` seconds, then SIGKILLs whatever is left of the group and of the children it
    had. `user` runs the command as another account (e.g. PostgreSQL as ``postgres``).
    """

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = STOP_TIMEOUT_S
    popen: subprocess.Popen | None = field(default=None, repr=False)
    known_pids: set = field(default_factory=set, repr=False)
    signalled_at: float | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> "ManagedProcess":
        if self.popen is not None:
            raise ServiceError(f"{self.name} is already started (pid {self.pid}).",
                               fix="stop it before starting it again.")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab", buffering=0)
        kwargs = {}
        if self.user:
            kwargs.update(user=self.user, group=self.user, extra_groups=[])
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                cwd=str(self.cwd) if self.cwd else None, start_new_session=True, **kwargs)
        except OSError as exc:
            raise ServiceError(f"cannot start {self.name} ({self.argv[0]}): {exc}",
                               where=self.name, fix="check that the program is installed.") \
                from exc
        finally:
            log.close()
        return self

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def restart(self) -> "ManagedProcess":
        """Stop the process group (as `stop`), then start the command again with a new pid."""
        self.stop()
        left = self.leftovers()
        if left:
            raise ServiceError(f"{self.name} did not stop: pids {left} are still alive.",
                               where=self.name, fix="kill them, then start it again.")
        self.popen, self.signalled_at = None, None
        self.known_pids = set()
        return self.start()

    def remember_children(self) -> None:
        """Note the current children, so that `stop` also ends those that left the group."""
        if self.running():
            self.known_pids.update(_descendants(self.pid))

    def log_tail(self, chars: int = 2000) -> str:
        return tail(self.log_path, chars)

    def terminate(self) -> None:
        """Send `stop_signal` to the process group once, without waiting (see `stop`)."""
        if self.popen is None or self.popen.poll() is not None or self.signalled_at:
            return
        self.remember_children()
        try:
            os.killpg(self.popen.pid, self.stop_signal)
        except (ProcessLookupError, PermissionError):
            _signal(self.popen.pid, self.stop_signal)
        self.signalled_at = time.monotonic()

    def stop(self) -> int | None:
        """Stop the process group by id; returns the exit code (None if never started).

        `stop_signal` to the group, at most `stop_timeout` seconds for the process to exit and
        a third of that for the rest of its group, then SIGKILL to whatever is left."""
        if self.popen is None:
            return None
        pid = self.popen.pid
        self.terminate()
        if self.popen.poll() is None:
            waited = time.monotonic() - (self.signalled_at or time.monotonic())
            try:
                self.popen.wait(max(0.1, self.stop_timeout - waited))
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + max(1.0, self.stop_timeout / 3)
        while time.monotonic() < deadline and self.leftovers(pid):
            time.sleep(0.2)
        left = self.leftovers(pid)
        for other in left:
            _signal(other, signal.SIGKILL)
        if left:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + 5  # SIGKILL is delivered asynchronously
            while time.monotonic() < deadline and self.leftovers(pid):
                time.sleep(0.05)
        try:
            code = self.popen.wait(10)
        except subprocess.TimeoutExpired:
            code = None
        return code

    def leftovers(self, pid: int | None = None) -> list[int]:
        """Processes of this component still alive: its group, and children it was seen with."""
        pid = pid or self.pid
        if pid is None:
            return []
        left = set(_group_members(pid))
        left.update(p for p in self.known_pids if _alive(p))
        if self.popen is not None and self.popen.poll() is None:
            left.add(pid)
        return sorted(left)


def stop_all(processes: Iterable[ManagedProcess]) -> dict[str, int | None]:
    """Stop processes (signalled all at once, then waited for in the reverse order of their
    start); each one is tried, whatever fails."""
    processes = list(processes)
    for proc in reversed(processes):
        try:
            proc.terminate()
        except Exception as exc:  # stop() below tries again, then SIGKILLs
            print(f"[services] signalling {proc.name} (pid {proc.pid}) failed: {exc}",
                  file=sys.stderr)
    codes = {}
    for proc in reversed(processes):
        try:
            codes[proc.name] = proc.stop()
        except Exception as exc:  # keep stopping the others
            codes[proc.name] = None
            print(f"[services] stopping {proc.name} (pid {proc.pid}) failed: {exc}",
                  file=sys.stderr)
    return codes


# --------------------------------------------------------------------------------------------
# Airflow's settings, as one environment
# --------------------------------------------------------------------------------------------

@dataclass
class AirflowSettings:
    """What a one-machine Airflow needs. Defaults: SQLite + LocalExecutor on 127.0.0.1:8080.

    `sql_alchemy_conn`: None = SQLite in `home`. `executor`: "local" or "celery" (or an
    Airflow executor class name). With Celery, `broker_url` is required and `result_backend`
    defaults to the metadata DB (``db+<sql_alchemy_conn>``). `extra_env` is added to every
    component's environment (e.g. MOBILEDET_* and AIRFLOW_CONN_* variables).
    """

    home: Path
    dags_folder: Path = DAGS
    host: str = "127.0.0.1"
    port: int = 8080
    executor: str = "local"
    sql_alchemy_conn: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    worker_concurrency: int = 2
    parallelism: int | None = None
    username: str = "admin"
    password: str | None = None       # None = the one in the passwords file, made if missing
    jwt_secret: str | None = None     # None = a new random one per deployment
    api_workers: int = 1
    worker_log_port: int | None = None   # None = a free port (the default 8793 may be taken)
    trigger_log_port: int | None = None  # None = a free port (the default 8794 may be taken)
    extra_env: dict = field(default_factory=dict)
    #: the Airflow pool of the heavy tasks (MOBILEDET_POOL, include/pipeline/task_policy.py),
    #: created with as many slots as the workers have; None: no pool (default_pool)
    heavy_pool: str | None = "mobiledet"
    heavy_pool_slots: int | None = None   # None: the worker slots (see pool_slots)

    @property
    def pool_slots(self) -> int:
        """Slots of the heavy tasks' pool: what the workers can run at once (the Celery
        worker's concurrency, the LocalExecutor's parallelism), unless set."""
        if self.heavy_pool_slots:
            return int(self.heavy_pool_slots)
        if self.celery:
            return int(self.worker_concurrency)
        return int(self.parallelism or local_slots())

    @property
    def executor_class(self) -> str:
        return EXECUTORS.get(self.executor, self.executor)

    @property
    def celery(self) -> bool:
        return self.executor_class == "CeleryExecutor"

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def passwords_file(self) -> Path:
        return Path(self.home) / "simple_auth_manager_passwords.json.generated"

    def validate(self) -> None:
        if self.executor_class not in ("LocalExecutor", PRELOADING_LOCAL, "CeleryExecutor"):
            raise ConfigError(f"executor {self.executor!r} is not supported here.",
                              where="--executor", fix="use local or celery.")
        if self.celery and not self.broker_url:
            raise ConfigError("the CeleryExecutor needs a broker.",
                              where="AIRFLOW__CELERY__BROKER_URL",
                              fix="pass broker_url, e.g. redis://127.0.0.1:6379/0.")
        if self.celery and (self.sql_alchemy_conn or "sqlite").startswith("sqlite"):
            raise ConfigError("the CeleryExecutor cannot use a SQLite metadata database "
                              "(workers are separate processes writing at the same time).",
                              where="AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                              fix="use PostgreSQL, e.g. postgresql+psycopg2://user:pw@host/db.")
        if not Path(self.dags_folder).is_dir():
            raise ConfigError(f"DAGs folder {self.dags_folder} does not exist.",
                              where="AIRFLOW__CORE__DAGS_FOLDER",
                              fix="point dags_folder at this repository's dags/.")
        if not 0 < int(self.port) < 65536:
            raise ConfigError(f"port {self.port} is not a TCP port.", where="--port",
                              fix="use a port between 1 and 65535, e.g. 8080.")


def ensure_password(settings: AirflowSettings) -> str:
    """The admin password: the given one, else the passwords file's, else a new random one.

    SimpleAuthManager keeps `{"user": "password"}` in AIRFLOW_HOME's passwords file and only
    generates passwords for users missing from it, so writing the file first fixes the login.
    """
    path = settings.passwords_file
    passwords = {}
    if path.is_file():
        try:
            passwords = json.loads(path.read_text() or "{}")
        except ValueError as exc:
            raise ConfigError(f"{path} is not JSON ({exc}).", where=str(path),
                              fix="delete the file; a new password is then generated.") from exc
    password = settings.password or passwords.get(settings.username) \
        or secrets.token_urlsafe(12)
    if passwords.get(settings.username) != password:
        passwords[settings.username] = password
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(passwords) + "\n")
        path.chmod(0o600)
    settings.password = password
    return password


#: How the task supervisor (Airflow 3's, in every LocalExecutor and Celery worker slot) waits.
#: Once a task's sockets close, the supervisor checks once whether the process has exited; a
#: process that has not quite gone yet (a forked task holding TensorFlow takes tens of ms to
#: tear down) leaves it waiting in select() for min_heartbeat_interval, 5 s by default, before
#: it notices, and the slot sits idle that long after most heavy tasks (bench/pipeline.py saw
#: 83 idle slot-seconds in a 68 s run). At 1 s the wait is at most 1 s; the price is one
#: heartbeat call per running task per second to the API server. docker-compose.yaml sets
#: the same; an explicit AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL in the environment wins.
TASK_SUPERVISOR_ENV = {"AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1"}


def airflow_environment(settings: AirflowSettings,
                        base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The one environment every component gets. Settings that must agree are set here only."""
    settings.validate()
    home = Path(settings.home).resolve()
    env = dict(os.environ if base is None else base)
    conn = settings.sql_alchemy_conn or f"sqlite:///{home / 'airflow.db'}"
    jwt = settings.jwt_secret or secrets.token_urlsafe(32)
    settings.jwt_secret = jwt
    if settings.worker_log_port is None:
        settings.worker_log_port = free_port()
    if settings.trigger_log_port is None:
        settings.trigger_log_port = free_port()
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(settings.dags_folder).resolve()),
        "AIRFLOW__CORE__EXECUTOR": settings.executor_class,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),   # the dashboard
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn,
        # The API server listens on this port, and task runners call the execution API there:
        # the two must agree (the default URL is http://localhost:8080/execution/).
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__PORT": str(settings.port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.base_url}/execution/",
        # The scheduler signs task tokens, the API server checks them: one secret for both.
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt,
        "AIRFLOW__API__SECRET_KEY": env.get("AIRFLOW__API__SECRET_KEY") or jwt,
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(settings.passwords_file),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.worker_log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.trigger_log_port),
        "GX_ANALYTICS_ENABLED": "false",
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    })
    for key, value in TASK_SUPERVISOR_ENV.items():
        env.setdefault(key, value)
    if settings.heavy_pool:
        env.setdefault("MOBILEDET_POOL", settings.heavy_pool)
    if settings.parallelism:
        env["AIRFLOW__CORE__PARALLELISM"] = str(settings.parallelism)
    if settings.celery:
        env["AIRFLOW__CELERY__BROKER_URL"] = settings.broker_url
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = settings.result_backend or f"db+{conn}"
        env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = str(settings.worker_concurrency)
        # Airflow's Celery defaults plus TensorFlow / Great Expectations imported once per
        # worker, before its pool forks (include/pipeline/celery_worker.py).
        env.setdefault("AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS", CELERY_CONFIG_OPTIONS)
    # The components import this checkout's include/ and operators/, the ones next to the
    # plugins folder above, even where another copy is installed (a second checkout or a git
    # worktree sharing the venv's editable install).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    # Loopback traffic (execution API, S3 on 127.0.0.1, the broker) never goes through a proxy.
    for var in ("NO_PROXY", "no_proxy"):
        current = env.get(var, "")
        env[var] = ",".join(p for p in (current, "127.0.0.1,localhost") if p)
    env.update({k: str(v) for k, v in settings.extra_env.items()})
    return env


def local_slots() -> int:
    """LocalExecutor slots on this machine: one per core, at least 2 (`mobiledet serve`'s
    parallelism, and the heavy tasks' pool where none is set)."""
    return max(2, os.cpu_count() or 2)


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


# --------------------------------------------------------------------------------------------
# The deployment: migrate, start, wait until healthy, stop
# --------------------------------------------------------------------------------------------

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
        name = self.env.get("MOBILEDET_POOL")
        if not name or name == "default_pool":
            return None
        body = {"slots": self.settings.pool_slots,
                "description": "mobiledet heavy tasks (export, convert, check, search): one "
                               "slot per worker slot",
                "include_deferred": False}
        client = self.client()
        try:
            return client.call("PATCH", f"pools/{_q(name)}", body)
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


# --------------------------------------------------------------------------------------------
# REST API client (urllib only; loopback traffic never through a proxy)
# --------------------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(method: str, url: str, body: dict | None = None, token: str | None = None,
              timeout: float = HTTP_TIMEOUT_S) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:800]
        raise HTTPStatusError(exc.code, f"{method} {url} answered {exc.code}: {detail}",
                              where=url, fix=_http_fix(exc.code)) from exc
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        raise ServiceError(f"{method} {url} failed: {getattr(exc, 'reason', exc)}", where=url,
                           fix="check that Airflow's API server runs there (mobiledet serve).") \
            from exc
    return json.loads(text) if text.strip() else {}


def _http_fix(code: int) -> str:
    return {401: "check the user and password (--user/--password; `mobiledet serve` prints "
                 "them).",
            403: "use a user with the admin or op role.",
            404: "check the URL and that the DAG is parsed (see the dag-processor log)."
            }.get(code, "read the API server's log.")


class HTTPStatusError(ServiceError):
    def __init__(self, status: int, problem: str, **kw):
        self.status = status
        super().__init__(problem, **kw)


class TaskFailed(ServiceError):
    """A task of a followed run failed (or is waiting for a retry); `tasks` are their TIs."""

    def __init__(self, problem: str, tasks: list[dict], **kw):
        self.tasks = tasks
        super().__init__(problem, **kw)


class AirflowClient:
    """The few calls of Airflow 3's REST API (/api/v2) this project needs, with a JWT token.

    Token: ``POST /auth/token`` with the SimpleAuthManager user and password, or, without a
    password, ``GET /auth/token`` (works only with simple_auth_manager_all_admins=True).
    """

    def __init__(self, base_url: str, username: str | None = "admin",
                 password: str | None = None, timeout: float = HTTP_TIMEOUT_S):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self._token: str | None = None

    def token(self, refresh: bool = False) -> str:
        if self._token and not refresh:
            return self._token
        url = f"{self.base_url}/auth/token"
        if self.password:
            answer = http_json("POST", url, {"username": self.username,
                                             "password": self.password}, timeout=self.timeout)
        else:
            answer = http_json("GET", url, timeout=self.timeout)
        self._token = answer["access_token"]
        return self._token

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        url = f"{self.base_url}/api/v2/{path.lstrip('/')}"
        try:
            return http_json(method, url, body, self.token(), self.timeout)
        except HTTPStatusError as exc:
            if exc.status != 401:
                raise
            return http_json(method, url, body, self.token(refresh=True), self.timeout)

    # -- DAGs and runs ------------------------------------------------------------------------
    def dag(self, dag_id: str) -> dict:
        return self.call("GET", f"dags/{_q(dag_id)}")

    def wait_for_dag(self, dag_id: str, timeout: float = 120, poll: float = 2.0) -> dict:
        """Until the dag-processor has parsed `dag_id` (bounded)."""
        deadline = time.monotonic() + timeout
        last = None
        for _ in range(int(timeout / poll) + 1):
            try:
                return self.dag(dag_id)
            except HTTPStatusError as exc:
                if exc.status != 404:
                    raise
                last = exc
            if time.monotonic() > deadline:
                break
            time.sleep(poll)
        errors = self.import_errors()
        raise ServiceError(f"DAG {dag_id} did not appear within {timeout:.0f} s ({last}); "
                           f"import errors: {json.dumps(errors)[:1500]}", where=dag_id,
                           fix="check AIRFLOW__CORE__DAGS_FOLDER and the dag-processor log.")

    def import_errors(self) -> list:
        try:
            return self.call("GET", "importErrors").get("import_errors", [])
        except ServiceError:
            return []

    def unpause(self, dag_id: str) -> dict:
        return self.call("PATCH", f"dags/{_q(dag_id)}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> dict:
        body = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.call("POST", f"dags/{_q(dag_id)}/dagRuns", body)

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def runs(self, dag_id: str, limit: int = 100) -> list[dict]:
        return self.call("GET", f"dags/{_q(dag_id)}/dagRuns?limit={limit}"
                                "&order_by=-run_after").get("dag_runs", [])

    def task_instances(self, dag_id: str, run_id: str, limit: int = 1000) -> list[dict]:
        """Every task instance of the run, mapped ones one per map index."""
        return self.call("GET", f"dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances"
                                f"?limit={limit}").get("task_instances", [])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600, poll: float = 2.0,
                     on_task_change: Callable[[dict], None] | None = None,
                     fail_fast: bool = False) -> dict:
        """Poll until the run is success or failed (bounded); report task state changes.

        `fail_fast` raises `TaskFailed` as soon as a task fails or waits for a retry, instead
        of waiting for the retries (tests want the first failure, not the last)."""
        deadline = time.monotonic() + timeout
        seen: dict[tuple, str | None] = {}
        run = {}
        for _ in range(int(timeout / poll) + 2):
            run = self.run(dag_id, run_id)
            if on_task_change is not None or fail_fast:
                tis = self.task_instances(dag_id, run_id)
                for ti in tis:
                    key = (ti["task_id"], ti.get("map_index", -1))
                    if seen.get(key, "?") != ti.get("state"):
                        seen[key] = ti.get("state")
                        if on_task_change is not None:
                            on_task_change(ti)
                bad = [ti for ti in tis if ti.get("state") in FAILED_TASK_STATES]
                if fail_fast and bad and run.get("state") not in TERMINAL_RUN_STATES:
                    states = ", ".join(f"{task_label(t)}={t['state']}" for t in bad)
                    raise TaskFailed(
                        f"DAG run {run_id}: {states}", bad, where=f"{dag_id}/{run_id}",
                        fix="read the task's log (AIRFLOW_HOME/logs/dag_id=.../task_id=...).")
            if run.get("state") in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                break
            time.sleep(poll)
        raise ServiceError(f"DAG run {run_id} did not finish within {timeout:.0f} s "
                           f"(state {run.get('state')}).", where=f"{dag_id}/{run_id}",
                           fix="look at the run in the Airflow UI; raise --timeout for big "
                               "checkpoints.")


def _q(part: str) -> str:
    return urllib.parse.quote(str(part), safe="")


def task_label(ti: dict) -> str:
    label = ti["task_id"]
    if ti.get("map_index", -1) not in (-1, None):
        label += f"[{ti.get('rendered_map_index') or ti['map_index']}]"
    return label


def trigger_and_follow(url: str, conf: dict, *, username: str | None = "admin",
                       password: str | None = None, dag_id: str = DAG_ID,
                       timeout: float = 3600, poll: float = 3.0, fail_fast: bool = False,
                       out: Callable[[str], None] = print) -> dict:
    """Trigger `dag_id` with `conf` on the Airflow at `url` and follow it until it ends.

    Prints each task's state changes through `out`; returns the final run (its "state" is
    "success" or "failed"). A paused DAG is unpaused first (a triggered run of a paused DAG
    would wait for ever).
    """
    client = AirflowClient(url, username, password)
    dag = client.wait_for_dag(dag_id, timeout=min(timeout, 120))
    if dag.get("is_paused"):
        out(f"{dag_id} was paused: unpausing it")
        client.unpause(dag_id)
    conf = {k: v for k, v in conf.items() if v not in (None, [], {})}
    run = client.trigger(dag_id, conf)
    run_id = run["dag_run_id"]
    out(f"triggered {dag_id} run {run_id} on {client.base_url}")

    def show(ti: dict) -> None:
        host = f" on {ti['hostname']}" if ti.get("hostname") else ""
        out(f"  {task_label(ti):40} {ti.get('state') or 'none'}{host}")

    final = client.wait_for_run(dag_id, run_id, timeout=timeout, poll=poll,
                                on_task_change=show, fail_fast=fail_fast)
    out(f"run {run_id}: {final['state']}")
    return final
