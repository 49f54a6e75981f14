"""Import the heavy libraries once in a long-lived worker process, before it forks tasks.

On Linux an Airflow 3 worker runs each task in a process *forked* from the worker process (the
task SDK's supervisor forks, it does not exec). A task that converts or evaluates a model
spends 5-6 s importing TensorFlow and about 3.5 s importing Great Expectations before it does
anything, which at the sizes a landing run converts is about half of all task time. Imported
once in the worker, every task forked from it starts with them in memory (copy-on-write).

Used by both executors the product deploys:
- Celery: include/deploy/celery_worker.py imports them at `worker_init`, in the worker's main
  process before it forks its pool;
- LocalExecutor: include/deploy/executors.py's PreloadingLocalExecutor imports them in the
  scheduler's process when the executor starts, before it forks its worker processes.

Fork safety: importing TensorFlow creates no session, thread pool or device context (those
are made on first use, in the task process after the fork); tests/test_celery_worker.py runs a
conversion and an interpreter in a process forked after the preload. Only third-party
libraries are preloaded: the project's own modules are still imported fresh by each task, so a
changed include/ or DAG file takes effect at the next task, as Airflow users expect.

`MOBILEDET_WORKER_PRELOAD=0` turns it off (bench/pipeline.py measures the Celery worker both
ways).
"""
from __future__ import annotations

import importlib
import logging
import os
import time

log = logging.getLogger(__name__)

#: imported in this order; a missing one is skipped with a log line (a worker image without
#: Great Expectations then only pays for it in the tasks that need it).
PRELOAD_MODULES = (
    "numpy",
    "PIL.Image",
    "tensorflow",
    "tf_keras",
    "great_expectations",
    "pycocotools.coco",
    "pycocotools.cocoeval",
    "s3fs",
    # What parsing a DAG file imports from Airflow beyond what the worker has loaded (the task
    # process parses its DAG file first thing): about 0.03 s of every task.
    "airflow.sdk.definitions.decorators",
    "airflow.providers.standard.decorators.python",
    "airflow.providers.standard.operators.empty",
    "airflow.triggers.base",
    "airflow.timetables.base",
)


def preload_enabled(environ=None) -> bool:
    """MOBILEDET_WORKER_PRELOAD (include/settings.py): on unless set to 0, false, no or off."""
    from include.settings import settings

    return settings(environ).worker_preload


def preload(modules=PRELOAD_MODULES) -> dict[str, float]:
    """Import `modules`; returns seconds per module imported (missing ones are left out)."""
    from include.console import quiet_native_stderr

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")   # as include/__init__.py sets it
    took: dict[str, float] = {}
    # TensorFlow's C++ start-up notices (CUDA probing, oneDNN) would otherwise land in the
    # worker's log each start (MOBILEDET_VERBOSE=1 keeps them); the filter passes everything
    # else, and its pump thread ends with the block, before anything forks.
    with quiet_native_stderr():
        for name in modules:
            start = time.perf_counter()
            try:
                importlib.import_module(name)
            except ImportError as exc:
                log.warning("mobiledet worker preload: %s is not installed (%s); tasks that "
                            "need it will import it themselves.", name, exc)
                continue
            took[name] = round(time.perf_counter() - start, 2)
    return took


def preload_worker(where: str, modules=PRELOAD_MODULES) -> dict[str, float]:
    """The worker's preload, logged; nothing when MOBILEDET_WORKER_PRELOAD=0."""
    if not preload_enabled():
        log.info("mobiledet worker preload off in %s (MOBILEDET_WORKER_PRELOAD=0).", where)
        return {}
    start = time.perf_counter()
    took = preload(modules)
    log.warning("mobiledet worker preload: %d modules imported in %s in %.1f s (%s)", len(took),
                where, time.perf_counter() - start,
                ", ".join(f"{k} {v:.1f} s" for k, v in took.items() if v >= 0.05))
    return took
