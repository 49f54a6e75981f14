"""The production shape on this machine, natively: PostgreSQL, Redis and an S3 server.

Each service is a real server process on 127.0.0.1, on a free port, with its data in a fresh
temporary folder, started and stopped by its process id (`include.deploy.processes.
ManagedProcess`). PostgreSQL and Redis come from Debian's packages, installed with apt-get when
missing (as root); a test using them is skipped, with the reason, only when they are missing and
this is not root. The S3 server is moto's server mode in its own process, because the Airflow
components that read and write it are separate processes too.

Fixtures (import them into a test module: ``from stack import postgres, redis, s3_process``):

- ``postgres``: a `Postgres` with database ``airflow`` owned by user ``airflow``
- ``redis``: a `Redis`
- ``s3_process``: a `MotoServer` (``endpoint_url``; ``connection_json()`` for
  AIRFLOW_CONN_AWS_DEFAULT)
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from include.deploy.processes import ManagedProcess, free_port, port_open
from include.errors import ServiceError

try:
    from s3server import ACCESS_KEY, SECRET_KEY, connection_json, s3_client
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.s3server import ACCESS_KEY, SECRET_KEY, connection_json, s3_client

HOST = "127.0.0.1"
APT_PACKAGES = ("postgresql", "redis-server")
APT_TIMEOUT_S = 900
READY_TIMEOUT_S = 60
PG_SUPERUSER_PASSWORD = "postgres-test"   # a throw-away cluster on 127.0.0.1 only
AIRFLOW_DB, AIRFLOW_USER, AIRFLOW_PASSWORD = "airflow", "airflow", "airflow-test"


# --------------------------------------------------------------------------------------------
# Installing the Debian packages when missing
# --------------------------------------------------------------------------------------------

def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_packages() -> list[str]:
    missing = []
    if postgres_bin() is None:
        missing.append("postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


def ensure_packages() -> None:
    """apt-get install PostgreSQL and Redis when missing (root only), else skip the test."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.skip(f"{' and '.join(missing)} not installed and not root, so apt-get cannot "
                    f"install them: run `apt-get install -y {' '.join(missing)}` as root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]):
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True,
                                  timeout=APT_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(argv)}` did not finish within {APT_TIMEOUT_S} s")
        if proc.returncode != 0:
            pytest.fail(f"`{' '.join(argv)}` failed: {proc.stderr[-1500:]}")
    if missing_packages():
        pytest.fail(f"still missing after apt-get install: {missing_packages()}")


def _wait(check, what: str, proc: ManagedProcess, timeout: float = READY_TIMEOUT_S,
          poll: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / poll) + 1):
        if not proc.running():
            raise ServiceError(f"{what} exited (code {proc.popen.returncode}): "
                               f"{proc.log_tail(1500)}", where=str(proc.log_path))
        if check():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(poll)
    raise ServiceError(f"{what} was not ready within {timeout:.0f} s: {proc.log_tail(1500)}",
                       where=str(proc.log_path))


def _service_dir(prefix: str, owner: str | None = None) -> Path:
    """A fresh folder under /tmp the service's own user can enter (pytest's are root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if owner:
        shutil.chown(path, owner, owner)
    return path


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

@dataclass
class Postgres:
    port: int
    root: Path
    process: ManagedProcess
    bin: Path
    user: str | None
    dbs: list = field(default_factory=list)

    @property
    def sqlalchemy_url(self) -> str:
        return (f"postgresql+psycopg2://{AIRFLOW_USER}:{AIRFLOW_PASSWORD}@{HOST}:{self.port}/"
                f"{AIRFLOW_DB}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        proc = subprocess.run(
            [str(self.bin / "psql"), "-h", HOST, "-p", str(self.port), "-U", "postgres",
             "-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
            env=dict(os.environ, PGPASSWORD=PG_SUPERUSER_PASSWORD, PGCONNECT_TIMEOUT="5"),
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ServiceError(f"psql {sql!r} failed: {proc.stderr.strip()}")
        return proc.stdout.strip()


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """initdb in a fresh folder, `postgres` on 127.0.0.1:<free port>, database `airflow`."""
    ensure_packages()
    bindir = postgres_bin()
    user = "postgres" if os.geteuid() == 0 else None
    root = _service_dir("mobiledet-pg-", user)
    data, pwfile = root / "data", root / "pwfile"
    pwfile.write_text(PG_SUPERUSER_PASSWORD + "\n")
    if user:
        shutil.chown(pwfile, user, user)
    kwargs = dict(user=user, group=user, extra_groups=[]) if user else {}
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
         "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=root,
        **kwargs)
    if init.returncode != 0:
        raise ServiceError(f"initdb failed: {init.stderr[-1500:]}", where=str(data))
    port = free_port()
    # SIGINT is PostgreSQL's "fast" shutdown (SIGTERM would wait for clients to disconnect).
    proc = ManagedProcess(
        name="postgres",
        argv=[str(bindir / "postgres"), "-D", str(data), "-h", HOST, "-p", str(port),
              "-k", str(root), "-c", "fsync=off", "-c", "max_connections=200"],
        log_path=root / "postgres.log", user=user, cwd=root, stop_signal=2, stop_timeout=30)
    proc.log_path.touch()
    if user:
        shutil.chown(proc.log_path, user, user)
    pg = Postgres(port=port, root=root, process=proc, bin=bindir, user=user)
    proc.start()
    try:
        _wait(lambda: port_open(HOST, port) and _psql_ok(pg), "PostgreSQL", proc)
        pg.psql(f"CREATE USER {AIRFLOW_USER} PASSWORD '{AIRFLOW_PASSWORD}'")
        pg.psql(f"CREATE DATABASE {AIRFLOW_DB} OWNER {AIRFLOW_USER}")
        yield pg
    finally:
        proc.stop()
        shutil.rmtree(root, ignore_errors=True)


def _psql_ok(pg: Postgres) -> bool:
    try:
        return pg.psql("SELECT 1") == "1"
    except (ServiceError, subprocess.TimeoutExpired):
        return False


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------

@dataclass
class Redis:
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def running_redis() -> Iterator[Redis]:
    ensure_packages()
    root = _service_dir("mobiledet-redis-")
    port = free_port()
    proc = ManagedProcess(
        name="redis",
        argv=[shutil.which("redis-server"), "--port", str(port), "--bind", HOST,
              "--daemonize", "no", "--save", "", "--appendonly", "no", "--dir", str(root)],
        log_path=root / "redis.log", cwd=root).start()
    try:
        _wait(lambda: redis_ping(port), "Redis", proc)
        yield Redis(port=port, process=proc)
    finally:
        proc.stop()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# S3: moto's server in its own process
# --------------------------------------------------------------------------------------------

@dataclass
class MotoServer:
    port: int
    process: ManagedProcess

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def connection_json(self) -> str:
        return connection_json(self.endpoint_url)

    def client(self):
        return s3_client(self.endpoint_url)


def _s3_ok(endpoint_url: str) -> bool:
    try:
        s3_client(endpoint_url).list_buckets()
        return True
    except Exception:
        return False


@contextmanager
def running_moto_server() -> Iterator[MotoServer]:
    root = _service_dir("mobiledet-moto-")
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    proc = ManagedProcess(name="moto-s3",
                          argv=[sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                          log_path=root / "moto.log", env=env, cwd=root).start()
    server = MotoServer(port=port, process=proc)
    try:
        _wait(lambda: port_open(HOST, port) and _s3_ok(server.endpoint_url), "moto S3 server",
              proc)
        yield server
    finally:
        proc.stop()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres():
    with running_postgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def redis():
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def s3_process():
    with running_moto_server() as server:
        yield server
