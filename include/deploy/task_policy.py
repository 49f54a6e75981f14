"""Retries, time limits and pools of the pipeline's tasks: working defaults in one place.

Read when the DAG file is parsed, from the settings (include/settings.py): MOBILEDET_TASK_RETRIES
(2), MOBILEDET_TASK_RETRY_DELAY_S (30 s, doubling), MOBILEDET_POOL (the heavy tasks' pool:
export, convert, check, edgetpu, search; default_pool) and MOBILEDET_TIMEOUT_<STAGE>_S (see
TIMEOUTS_S). A deployment sets them in the scheduler's and workers' environment
(docker-compose.yaml shows where); a pool must exist before a task is scheduled into it
(`airflow pools set`, or `mobiledet serve`).

A task that fails on bad input (the project's own errors other than StoreError) fails at once
without retrying: another attempt would read the same input. Store errors and crashes retry.
A device benchmark task (`device_task_args`) runs on the Celery queue of the worker its phone
is plugged into, one at a time per device (a phone measures one model at a time), with a time
limit of the device's `timeout_s` per delegate plus ten minutes for the downloads and adb.

This module imports nothing heavy (it is read at DAG parse time).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Mapping

from include.settings import TIMEOUTS_S, settings

HEAVY = ("export", "convert", "check", "edgetpu", "search")
#: time of a device task besides its benchmark runs (model download, adb push, clean-up)
DEVICE_OVERHEAD_S = 600.0
__all__ = ["HEAVY", "TIMEOUTS_S", "task_args", "device_task_args", "device_task_id"]


def task_args(stage: str, environ: Mapping[str, str] | None = None) -> dict:
    """BaseOperator keyword arguments for the task of `stage` (KeyError for an unknown one);
    `environ` instead of os.environ's MOBILEDET_* variables (ConfigError for a bad value)."""
    s = settings(environ)
    args = {
        "retries": s.task_retries,
        "retry_delay": timedelta(seconds=s.task_retry_delay_s),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(seconds=s.timeout_s(stage)),
    }
    if stage in HEAVY:
        args["pool"] = s.pool
    return args


def device_task_id(name: str) -> str:
    """The task id of device `name`'s benchmark task (inside the model task group)."""
    return f"device_{name}"


def device_task_args(device, environ: Mapping[str, str] | None = None) -> dict:
    """BaseOperator keyword arguments for the benchmark task of `device` (a DeviceConfig):
    its queue, one task instance at a time, retries as the others, and a time limit of
    timeout_s per delegate plus DEVICE_OVERHEAD_S."""
    s = settings(environ)
    limit = float(device.timeout_s) * max(1, len(device.delegates)) + DEVICE_OVERHEAD_S
    return {
        "queue": device.queue,
        "max_active_tis_per_dag": 1,
        "retries": s.task_retries,
        "retry_delay": timedelta(seconds=s.task_retry_delay_s),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(seconds=limit),
    }
