"""What a deployment tells the DAG files, when they are parsed: the checkpoint store the landing
watcher lists (MOBILEDET_CHECKPOINT_STORE, None when `off`), its connection and poll interval,
the evaluation dataset and config file of runs started by a landing (MOBILEDET_DATA,
MOBILEDET_CONFIG), the devices that config lists (one benchmark task each), and the artifact
store (MOBILEDET_STORE) with the published-asset names.

The values come from the one settings object (include/settings.py, where every variable, its
default and meaning are listed), validated there. Nothing heavy here.
"""
from __future__ import annotations

from typing import Mapping

from include.settings import settings

Environ = Mapping[str, str] | None


def checkpoint_store(environ: Environ = None) -> str | None:
    """The watched checkpoint store as a URI (file:///abs or s3://...), or None when off."""
    return settings(environ).checkpoint_store_uri


def checkpoint_conn_id(environ: Environ = None) -> str:
    return settings(environ).checkpoint_conn_id


def watch_poll_s(environ: Environ = None) -> float:
    return settings(environ).watch_poll_s


def sweep_s(environ: Environ = None) -> float:
    """Seconds between two looks of the landing watcher at the checkpoint ledger for work no
    run is doing (0: off)."""
    return settings(environ).sweep_s


def housekeeping_schedule(environ: Environ = None) -> str | None:
    """The mobiledet_housekeeping DAG's schedule (None: off)."""
    return settings(environ).housekeeping_schedule_or_none


def model_name(environ: Environ = None) -> str:
    """The model the deployment's runs publish (the config file's model_name)."""
    from include.config import load_config

    return load_config(config_file(environ), environ=environ).model_name


def devices(environ: Environ = None) -> list:
    """The phones of the pipeline config file the deployment names (MOBILEDET_CONFIG), as
    DeviceConfig entries (name, serial, delegates, queue, ...): the DAG gets a `device_<name>`
    task on each one's queue. Empty without a config file or without `devices` in it."""
    from include.config import load_config

    return list(load_config(config_file(environ), environ=environ).devices)


def evaluation_data(environ: Environ = None) -> str:
    return settings(environ).data


def config_file(environ: Environ = None) -> str | None:
    return settings(environ).config


def artifact_store(environ: Environ = None) -> str:
    """The artifact store URI as ArtifactStore spells it (file:///abs or s3://bucket/prefix):
    MOBILEDET_STORE, else ./mobiledet-store, as the pipeline config resolves it."""
    from include.config import load_config

    uri = load_config(environ=environ).store_uri
    return uri if "://" in uri else "file://" + uri


def published_asset_of(model: str, variant: str, precision: str, environ: Environ = None) -> dict:
    """Name and URI of the asset `publish` emits for (model, variant, precision): the consumer
    pointer's URI, as include.pipeline.steps.publish names it (include.store.layout)."""
    from include.store import layout

    base = artifact_store(environ).rstrip("/")
    return {"name": layout.published_asset_name(model, variant, precision),
            "uri": f"{base}/{layout.pointer_key(model, variant, precision)}"}
