"""PreloadingLocalExecutor: Airflow's LocalExecutor whose workers start with TensorFlow loaded.

    AIRFLOW__CORE__EXECUTOR=include.deploy.executors.PreloadingLocalExecutor

(`mobiledet serve` uses it for `--executor local`.) On Linux the LocalExecutor forks its
`parallelism` worker processes from the scheduler's process when it starts, and forks a
replacement the same way when one dies (Airflow's executor guide: "spawns the number of
processes equal to parallelism at start time"); each worker forks one supervised process per
task. This subclass imports the heavy libraries (include/deploy/preload.py) in `start()`, the
executor's public start-up hook, just before the LocalExecutor's own `start()` forks the
workers: every worker, and every task a worker forks, finds them in memory. Nothing private
of Airflow is used or overridden; queues, results and shutdown are the LocalExecutor's.

What it costs: the scheduler's process holds the libraries too (their pages are shared with
the workers, copy-on-write, where before each worker imported its own copy), and the
scheduler's first loop starts after the preload (about 10 s, once per scheduler start).
Where workers are not forked (the spawn or forkserver start method, e.g. macOS) nothing would
be inherited: the preload is skipped with a log line and tasks import what they need.
"""
from __future__ import annotations

import logging
import multiprocessing

from airflow.executors.local_executor import LocalExecutor

from include.deploy.preload import PRELOAD_MODULES, preload_worker

log = logging.getLogger(__name__)


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose worker processes are forked after TensorFlow, Great Expectations
    and pycocotools were imported."""

    #: what the workers inherit (a test sets a lighter list)
    preload_modules: tuple[str, ...] = PRELOAD_MODULES

    def start(self) -> None:
        if self.is_mp_using_fork:   # the LocalExecutor's own reading of the start method
            preload_worker("the scheduler, before the LocalExecutor forks its workers",
                           self.preload_modules)
        else:
            log.info("mobiledet worker preload skipped: LocalExecutor workers are started with "
                     "%r, not forked, so they would not inherit it.",
                     multiprocessing.get_start_method())
        super().start()
