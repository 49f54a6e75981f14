"""Celery settings for MobileDet workers: Airflow's defaults, plus heavy libraries imported once.

Point Airflow at it with

    AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=include.deploy.celery_worker.CELERY_CONFIG

(`mobiledet serve --executor celery` and docker-compose.yaml do). The dictionary is the Celery
provider's own `DEFAULT_CELERY_CONFIG`, unchanged; what this module adds is a `worker_init`
handler that imports TensorFlow, Great Expectations and pycocotools in the worker's main
process before it forks its pool (include/deploy/preload.py says why and when it is safe).
The scheduler imports this module too (to send tasks); `worker_init` never fires there, and
the module itself imports nothing heavy.
"""
from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

from include.deploy.preload import preload_worker

CELERY_CONFIG = dict(DEFAULT_CELERY_CONFIG)


@worker_init.connect
def _preload_on_worker_init(**_):
    preload_worker("the Celery worker, before its pool forks")
