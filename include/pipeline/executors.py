"""PreloadingLocalExecutor: Airflow's LocalExecutor whose workers import TensorFlow once.

    AIRFLOW__CORE__EXECUTOR=include.pipeline.executors.PreloadingLocalExecutor

(`mobiledet serve` uses it for `--executor local`.) The LocalExecutor runs `parallelism`
worker processes, forked from the scheduler; each forks one supervised process per task. This
subclass only changes what a worker process does as it starts: it imports the heavy libraries
(include/pipeline/preload.py) and then runs Airflow's own worker loop, so every task it forks
finds them in memory. Everything else (queues, results, shutdown) is the LocalExecutor's.
"""
from __future__ import annotations

import multiprocessing

from airflow.executors import local_executor
from airflow.executors.local_executor import LocalExecutor


def _preloading_worker(**kwargs):
    from include.pipeline.preload import preload_worker

    preload_worker("a LocalExecutor worker")
    return local_executor._run_worker(**kwargs)


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose worker processes preload TensorFlow and Great Expectations."""

    def _spawn_worker(self):
        # LocalExecutor._spawn_worker with this module's target (Airflow 3.3's arguments).
        proc = multiprocessing.Process(target=_preloading_worker, kwargs={
            "logger_name": self.log.name, "input": self.activity_queue,
            "output": self.result_queue, "unread_messages": self._unread_messages,
            "team_conf": self.conf})
        proc.start()
        self.workers[proc.pid] = proc
