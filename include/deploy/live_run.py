"""`mobiledet run` and `mobiledet demo` in this process, with a live view instead of task logs.

dag.test() runs every task in this process: Airflow's task logs, Python's prints and the
native lines of TensorFlow all go to file descriptors 1 and 2. `output_to(path)` points both
at a log file for the run (child processes inherit it too) and hands back a stream on the
real stdout, where the view (include/deploy/run_view.py) draws. `TaskPoller` reads the run's
task instances from the metadata DB in a thread, twice a second, and feeds the view while
dag.test runs in the main thread (it has to: it sets signal handlers).

    path = run_log_path()
    with output_to(path) as screen, RunView(screen) as view:
        result = follow_dag_test(conf, view, logs=f"in {path}")
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import threading
from pathlib import Path
from typing import IO, Callable, Iterator

from include.deploy.airflow_env import DAG_ID, airflow_home, prepare_airflow, run_dag, run_id_for

log = logging.getLogger(__name__)
POLL_S = 0.5


def run_log_path(home: str | os.PathLike | None = None) -> Path:
    """A new log file for one run: AIRFLOW_HOME/logs/mobiledet-run/<UTC time>.log."""
    folder = airflow_home(home) / "logs" / "mobiledet-run"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return folder / f"{stamp}-{os.getpid()}.log"


@contextlib.contextmanager
def output_to(path: str | os.PathLike) -> Iterator[IO[str]]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so also native code
    and child processes) to `path`, appended; yield a text stream on the stdout it had (a
    terminal, a pipe). Both descriptors are restored on the way out, also on errors."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(1), os.dup(2)
    screen = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    target = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
    finally:
        os.close(target)
    try:
        yield screen
    finally:
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        screen.close()


class TaskPoller:
    """Every `interval` seconds, the task instances of one DAG run, read from the metadata DB
    in a thread, passed to `on_tis` as dicts in the REST API's shape.

    A plain SQL query on Airflow's engine, not its ORM: an ORM query configures the mappers,
    which imports every Airflow model, and that, in a second thread while dag.test imports
    modules in the first, deadlocks on the import locks (seen: the mapper lock against
    airflow.models.dagbag's import). Everything it uses is imported here, before the thread
    starts."""

    QUERY = ("SELECT task_id, map_index, rendered_map_index, state, start_date, end_date "
             "FROM task_instance WHERE dag_id = :dag_id AND run_id = :run_id")

    def __init__(self, dag_id: str, run_id: str, on_tis: Callable[[list[dict]], None],
                 interval: float = POLL_S):
        from sqlalchemy import text

        from airflow import settings as airflow_settings

        self.engine = airflow_settings.engine
        self.query = text(self.QUERY)
        self.dag_id, self.run_id, self.on_tis, self.interval = dag_id, run_id, on_tis, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mobiledet-run-view",
                                        daemon=True)

    def poll(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(self.query, {"dag_id": self.dag_id, "run_id": self.run_id})
            return [dict(row) for row in rows.mappings()]

    def _once(self) -> None:
        try:
            self.on_tis(self.poll())
        except Exception as exc:   # a busy SQLite file, a run not created yet: next time
            log.debug("run view: reading the task instances failed: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._once()

    def start(self) -> "TaskPoller":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, then read once more: the view ends with the run's final states."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._once()


def follow_dag_test(conf: dict, view, *, logs: str) -> dict:
    """run_dag(conf) (dag.test in this thread) while a TaskPoller feeds `view.update`."""
    prepare_airflow()
    run_after = dt.datetime.now(dt.timezone.utc)
    poller = TaskPoller(DAG_ID, run_id_for(run_after), view.update).start()
    try:
        return run_dag(conf, run_after=run_after, logs=logs)
    finally:
        poller.stop()
