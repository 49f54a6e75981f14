"""The ops dashboard: releases, trends, rejections, runs and pictures, read from the store.

It reads the artifact store only (manifests, pointers, run reports, and the conversion,
metrics, validation and Edge TPU files), so a laptop and production show the same truth; it
has no database and never writes. One FastAPI app (`create_app`) serves it

* on its own: ``mobiledet dashboard --store URI [--port 8080]`` (no login: bind it to
  127.0.0.1, the default, or put it behind your own proxy);
* inside the Airflow api-server, through the plugin in `include.dashboard.plugin` (mounted at
  ``/mobiledet``; every route needs a signed-in Airflow user).

Importing this package imports neither FastAPI nor Airflow.
"""
from __future__ import annotations

__all__ = ["StoreReader", "create_app"]


def __getattr__(name):
    if name == "create_app":
        from include.dashboard.app import create_app
        return create_app
    if name == "StoreReader":
        from include.dashboard.reader import StoreReader
        return StoreReader
    raise AttributeError(name)
