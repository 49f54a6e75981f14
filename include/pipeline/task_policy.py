"""Retries, time limits and pools of the pipeline's tasks: working defaults in one place.

Read when the DAG file is parsed, from environment variables (a deployment sets them in the
scheduler's and workers' environment; docker-compose.yaml shows where):

==============================  ==================================================  =========
MOBILEDET_TASK_RETRIES          retries of every task that talks to the store       2
MOBILEDET_TASK_RETRY_DELAY_S    seconds before a retry (doubling, exponential)      30
MOBILEDET_POOL                  Airflow pool of the heavy tasks (export, convert,   default_pool
                                check, edgetpu); create it with `airflow pools set`
MOBILEDET_TIMEOUT_<STAGE>_S     execution_timeout of one stage (PLAN, EXPORT,       see TIMEOUTS_S
                                CONVERT, CHECK, EDGETPU, GATE, PUBLISH, REPORT)
==============================  ==================================================  =========

A task that fails on bad input (the project's own errors other than StoreError) fails at once
without retrying: another attempt would read the same input. Store errors and crashes retry.
This module imports nothing heavy (it is read at DAG parse time).
"""
from __future__ import annotations

import os
from datetime import timedelta

HEAVY = ("export", "convert", "check", "edgetpu", "search")
TIMEOUTS_S = {"plan": 600, "export": 1800, "convert": 3600, "check": 3600, "edgetpu": 900,
              "search": 7200, "gate": 1800, "publish": 1800, "report": 600}
DEFAULT_RETRIES = 2
DEFAULT_RETRY_DELAY_S = 30.0
DEFAULT_POOL = "default_pool"


def _env_number(name: str, default: float, environ) -> float:
    from include.errors import ConfigError

    raw = environ.get(name)
    if raw is None or not str(raw).strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ConfigError(f"expected a number >= 0, got {raw!r}.", where=f"environment "
                          f"variable {name}", fix="set a number of seconds (or retries), or "
                                                  "unset it for the default.")
    return value


def task_args(stage: str, environ=None) -> dict:
    """BaseOperator keyword arguments for the task of `stage`."""
    environ = os.environ if environ is None else environ
    if stage not in TIMEOUTS_S:
        raise KeyError(stage)
    args = {
        "retries": int(_env_number("MOBILEDET_TASK_RETRIES", DEFAULT_RETRIES, environ)),
        "retry_delay": timedelta(seconds=_env_number("MOBILEDET_TASK_RETRY_DELAY_S",
                                                     DEFAULT_RETRY_DELAY_S, environ)),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(seconds=_env_number(
            f"MOBILEDET_TIMEOUT_{stage.upper()}_S", TIMEOUTS_S[stage], environ)),
    }
    if stage in HEAVY:
        args["pool"] = (environ.get("MOBILEDET_POOL") or "").strip() or DEFAULT_POOL
    return args
