"""Airflow's settings for one deployment, as one environment every component gets.

`airflow standalone` starts the same components, but hides their settings. Here they are
explicit: `airflow_environment` builds one environment dict shared by every component, so the
settings that must agree do agree: the API server's port and the execution API URL the workers
call back to, the JWT secret that signs task tokens and the one that checks them, the metadata
DB, the executor and the Celery broker. `AirflowSettings` holds what a one-machine deployment
needs and validates it; `ensure_password` fixes the login.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from include.deploy.processes import free_port
from include.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_ID = "mobiledet_convert"

#: `local` is Airflow's LocalExecutor whose worker processes preload TensorFlow and Great
#: Expectations (include/deploy/executors.py); `celery` preloads through
#: CELERY_CONFIG_OPTIONS. The plain "LocalExecutor" class name is accepted too.
PRELOADING_LOCAL = "include.deploy.executors.PreloadingLocalExecutor"
EXECUTORS = {"local": PRELOADING_LOCAL, "celery": "CeleryExecutor"}
CELERY_CONFIG_OPTIONS = "include.deploy.celery_worker.CELERY_CONFIG"
SIMPLE_AUTH_MANAGER = \
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
#: SimpleAuthManager's roles, weakest first (each may do what the ones before it may)
SIMPLE_AUTH_ROLES = ("viewer", "user", "op", "admin")


@dataclass
class AirflowSettings:
    """What a one-machine Airflow needs. Defaults: SQLite + LocalExecutor on 127.0.0.1:8080.

    `sql_alchemy_conn`: None = SQLite in `home`. `executor`: "local" or "celery" (or an
    Airflow executor class name). With Celery, `broker_url` is required and `result_backend`
    defaults to the metadata DB (``db+<sql_alchemy_conn>``). `extra_env` is added to every
    component's environment (e.g. MOBILEDET_* and AIRFLOW_CONN_* variables). `extra_users`
    adds SimpleAuthManager users besides the admin, name -> role (viewer, user, op, admin),
    each with a password in the passwords file (`ensure_password`; `user_password` reads it).
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
    extra_users: dict = field(default_factory=dict)   # name -> role, besides `username`
    #: the Airflow pool of the heavy tasks (MOBILEDET_POOL, include/deploy/task_policy.py),
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

    @property
    def users(self) -> dict[str, str]:
        """Every SimpleAuthManager user, name -> role: the admin first, then `extra_users`."""
        return {self.username: "admin", **{str(k): str(v) for k, v in self.extra_users.items()
                                           if k != self.username}}

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
        for name, role in self.extra_users.items():
            if name == self.username:
                raise ConfigError(f"user {name!r} is the admin already.",
                                  where="extra_users", fix="give the extra user another name.")
            if not name or any(c in str(name) for c in ",: "):
                raise ConfigError(f"user name {name!r} is empty or has a comma, colon or "
                                  "space.", where="extra_users",
                                  fix="use letters, digits, dots, dashes or underscores.")
            if str(role).lower() not in SIMPLE_AUTH_ROLES:
                raise ConfigError(f"user {name!r} has role {role!r}, which SimpleAuthManager "
                                  "does not know.", where="extra_users",
                                  fix=f"use one of {', '.join(SIMPLE_AUTH_ROLES)}.")


def _read_passwords(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text() or "{}")
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON ({exc}).", where=str(path),
                          fix="delete the file; a new password is then generated.") from exc


def ensure_password(settings: AirflowSettings) -> str:
    """The admin password: the given one, else the passwords file's, else a new random one.

    SimpleAuthManager keeps `{"user": "password"}` in AIRFLOW_HOME's passwords file and only
    generates passwords for users missing from it, so writing the file first fixes the login.
    Each of `extra_users` missing from the file gets a new random password there too (one
    already there is kept); `user_password` reads it.
    """
    path = settings.passwords_file
    passwords = _read_passwords(path)
    before = dict(passwords)
    password = settings.password or passwords.get(settings.username) \
        or secrets.token_urlsafe(12)
    passwords[settings.username] = password
    for name in settings.extra_users:
        if name != settings.username and not passwords.get(name):
            passwords[name] = secrets.token_urlsafe(12)
    if passwords != before:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(passwords) + "\n")
        path.chmod(0o600)
    settings.password = password
    return password


def user_password(settings: AirflowSettings, name: str) -> str:
    """The password of user `name` (the admin or one of `extra_users`), made if missing."""
    ensure_password(settings)
    return _read_passwords(settings.passwords_file)[name]


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
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            f"{name}:{str(role).lower()}" for name, role in settings.users.items()),
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
        # worker, before its pool forks (include/deploy/celery_worker.py).
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


