"""The Airflow plugin: the dashboard inside the api-server, linked from the Airflow UI.

* ``fastapi_apps``: the dashboard is mounted at ``/mobiledet`` of the api-server.
* ``external_views``: "MobileDet releases" in the top navigation, a "Releases" tab on
  DAG pages and a "Release report" tab on DAG run pages (the UI fills in ``{DAG_ID}`` and
  ``{RUN_ID}``; Airflow 3.3 adds such tabs to every DAG, so the dashboard says when a DAG is
  not ``mobiledet_convert``).
* Authentication: FastAPI apps of plugins get none from Airflow, so every route of this one
  depends on the api-server's own ``requires_access_dag("GET", RUN, "mobiledet_convert")``
  (``airflow/api_fastapi/core_api/security.py``): the caller must present a valid Airflow JWT
  (``Authorization: Bearer`` or the UI's ``_token`` cookie: 401 without one, 403 when it is
  invalid) and be allowed to read the runs of ``mobiledet_convert``.
* Ops buttons (yank, restore, promote, bless, retry): ``POST /mobiledet/actions`` triggers the
  ``mobiledet_release`` DAG through Airflow's REST API with the signed-in user's own token, so
  Airflow's permissions decide (include/dashboard/actions.py).
* The store comes from ``MOBILEDET_STORE`` (default ``./mobiledet-store``, relative to the
  api-server's working directory); ``MOBILEDET_CONN_ID`` names the Airflow connection of an
  s3:// store (default ``aws_default``).

Airflow loads plugins in the scheduler, triggerer and DAG processor too, so importing this
module builds nothing: the FastAPI app (and the import of the api-server's security module) is
made on the first request the api-server hands it.
"""
from __future__ import annotations

import threading

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/mobiledet"
DAG_ID = "mobiledet_convert"
DEFAULT_STORE = "./mobiledet-store"


def auth_dependencies() -> list:
    """The api-server's authentication, as FastAPI dependencies for every dashboard route."""
    from fastapi import Depends

    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return [Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID))]


def make_reader():
    from include.dashboard.reader import StoreReader
    from include.settings import settings

    env = settings()      # MOBILEDET_STORE, MOBILEDET_CONN_ID
    return StoreReader(env.store or DEFAULT_STORE, conn_id=env.conn_id)


def channels() -> list[str]:
    """The release channels of the deployment's config (the promote button offers them)."""
    from include.config import load_config
    from include.settings import settings

    return list(load_config(settings().config).channels)


def build_app():
    """The dashboard app as the api-server mounts it: store from the environment, auth on,
    and the ops buttons (which trigger mobiledet_release through Airflow's API as the user)."""
    from include.dashboard.app import create_app

    return create_app(make_reader, dependencies=auth_dependencies(),
                      title="MobileDet releases (Airflow)",
                      actions={"channels": channels()})


class LazyDashboard:
    """An ASGI app that builds the dashboard (`build_app`) when the first request comes."""

    def __init__(self, factory=build_app):
        self._factory = factory
        self._app = None
        self._lock = threading.Lock()

    def _build(self):
        with self._lock:
            if self._app is None:
                self._app = self._factory()
        return self._app

    async def __call__(self, scope, receive, send):
        app = self._app
        if app is None:
            import anyio
            app = await anyio.to_thread.run_sync(self._build)
        await app(scope, receive, send)

    def __repr__(self) -> str:
        return "include.dashboard.plugin.LazyDashboard"


dashboard_app = LazyDashboard()


class MobiledetDashboardPlugin(AirflowPlugin):
    name = "mobiledet_dashboard"
    fastapi_apps = [{"app": dashboard_app, "url_prefix": URL_PREFIX,
                     "name": "MobileDet releases dashboard"}]
    external_views = [
        {"name": "MobileDet releases", "href": f"{URL_PREFIX}/", "destination": "nav",
         "url_route": "mobiledet", "nav_top_level": True,
         "icon": f"{URL_PREFIX}/static/favicon.svg"},
        {"name": "Releases", "href": f"{URL_PREFIX}/?dag_id={{DAG_ID}}",
         "destination": "dag", "url_route": "mobiledet_dag"},
        {"name": "Release report", "href": f"{URL_PREFIX}/runs/{{RUN_ID}}",
         "destination": "dag_run", "url_route": "mobiledet_dag_run"},
    ]
