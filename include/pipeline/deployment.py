"""What a deployment tells the DAG files, through the environment, when they are parsed.

=============================  ==========================================================
MOBILEDET_CHECKPOINT_STORE     the checkpoint store the landing watcher lists: a folder or
                               s3://bucket/prefix (default `<repo>/checkpoints`; `off`
                               turns the watcher off: mobiledet_convert then runs only when
                               triggered by hand or through the REST API)
MOBILEDET_CHECKPOINT_CONN_ID   Airflow connection for an s3:// checkpoint store (aws_default)
MOBILEDET_WATCH_POLL_S         seconds between two listings of the checkpoint store (10)
MOBILEDET_DATA                 the COCO-format evaluation dataset of runs started by a
                               landing (the DAG param `data` defaults to it)
MOBILEDET_CONFIG               the pipeline config file (YAML/JSON: gates, precisions, sizes)
                               of every run; the DAG param `config` defaults to it
MOBILEDET_STORE                the artifact store (read by include/config.py)
=============================  ==========================================================

The same names are used by `mobiledet serve` and docker-compose.yaml. Nothing heavy here.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OFF = ("", "off", "none", "false", "0")


def checkpoint_store(environ=None) -> str | None:
    """The watched checkpoint store as a URI (file:///abs or s3://...), or None when off."""
    environ = os.environ if environ is None else environ
    raw = environ.get("MOBILEDET_CHECKPOINT_STORE")
    if raw is None:
        raw = str(REPO / "checkpoints")
    raw = raw.strip()
    if raw.lower() in OFF:
        return None
    if "://" in raw:
        return raw.rstrip("/")
    return "file://" + os.path.abspath(os.path.expanduser(raw))


def checkpoint_conn_id(environ=None) -> str:
    environ = os.environ if environ is None else environ
    return (environ.get("MOBILEDET_CHECKPOINT_CONN_ID") or "").strip() or "aws_default"


def watch_poll_s(environ=None) -> float:
    environ = os.environ if environ is None else environ
    try:
        return max(1.0, float(environ.get("MOBILEDET_WATCH_POLL_S") or 10.0))
    except ValueError:
        return 10.0


def evaluation_data(environ=None) -> str:
    environ = os.environ if environ is None else environ
    return (environ.get("MOBILEDET_DATA") or "").strip()


def sweep_s(environ=None) -> float:
    """Seconds between two looks of the landing watcher at the checkpoint ledger for work no
    run is doing (MOBILEDET_SWEEP_S, default 600; 0 turns the safety net off)."""
    environ = os.environ if environ is None else environ
    try:
        return max(0.0, float(environ.get("MOBILEDET_SWEEP_S") or 600.0))
    except ValueError:
        return 600.0


def housekeeping_schedule(environ=None) -> str | None:
    """The mobiledet_housekeeping DAG's schedule (MOBILEDET_HOUSEKEEPING_SCHEDULE, default
    @daily; off, none or empty: none)."""
    environ = os.environ if environ is None else environ
    raw = environ.get("MOBILEDET_HOUSEKEEPING_SCHEDULE")
    raw = "@daily" if raw is None else raw.strip()
    return None if raw.lower() in OFF else raw


def model_name(environ=None) -> str:
    """The model the deployment's runs publish (the config file's model_name)."""
    from include.config import load_config
    return load_config(config_file(environ), environ=environ).model_name


def config_file(environ=None) -> str | None:
    environ = os.environ if environ is None else environ
    return (environ.get("MOBILEDET_CONFIG") or "").strip() or None


def artifact_store(environ=None) -> str:
    """The artifact store URI as ArtifactStore spells it (file:///abs or s3://bucket/prefix)."""
    from include.config import DEFAULT_STORE_DIR, STORE_ENV, store_setting

    environ = os.environ if environ is None else environ
    uri = store_setting((environ.get(STORE_ENV) or "").strip() or DEFAULT_STORE_DIR, STORE_ENV,
                     None)
    return uri if "://" in uri else "file://" + uri


def published_asset_of(model: str, variant: str, precision: str, environ=None) -> dict:
    """Name and URI of the asset `publish` emits for (model, variant, precision): the consumer
    pointer's URI, as include.pipeline.steps.publish.asset_of names it."""
    base = artifact_store(environ).rstrip("/")
    return {"name": f"mobiledet/{model}/{variant}/{precision}",
            "uri": f"{base}/{model}/latest/{variant}/{precision}.json"}
