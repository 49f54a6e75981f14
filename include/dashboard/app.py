"""The dashboard's FastAPI app: one HTML page and one JSON twin per view, all GET, read-only.

==========================  ==================================================================
``/``                       releases matrix (``/api/releases``)
``/trends``                 gate metric, latency and size across releases (``/api/trends``)
``/releases/{version}``     one release in detail (``/api/releases/{version}``)
``/diff?a=V1&b=V2``         two releases side by side (``/api/diff``)
``/runs``                   recent runs (``/api/runs``); ``/runs/{run_id}`` one run
``/checkpoints``            the checkpoint ledger, failed and stuck first (``/api/checkpoints``)
``/history``                the audit log of ops actions (``/api/history``; ``?version=``,
                            ``?variant=&precision=``)
``/files/{key}``            a picture, report or model file of a release or run
``/static/{name}``          the stylesheet and icon shipped in this package
==========================  ==================================================================

Every page takes ``?model=NAME`` when the store holds more than one model. `create_app`
takes `dependencies` (FastAPI ``Depends(...)`` objects) put on every route: the Airflow plugin
passes the api-server's authentication there; standalone there is none.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from include.dashboard.cells import LRU, dumps, pair_name
from include.dashboard.reader import StoreReader
from include.dashboard.safety import (ACTIVE_TYPES, MEDIA_TYPES, BadParameter, NotFound,
                                      check_name, redact, suffix_of)
from include.errors import MobiledetError

HERE = Path(__file__).resolve().parent
STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
                ".png": "image/png"}
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self'; form-action 'self'; "
       "frame-ancestors 'self'; base-uri 'none'")
SANDBOX_CSP = "sandbox allow-scripts; default-src 'self' 'unsafe-inline' data:"


def _templates():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                             autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.ChainableUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(num=_num, mb=_mb, signed=_signed, short=_short, pretty=_pretty)
    return env


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.{digits}f}"


def _mb(value: Any) -> str:
    return _num(value / 1e6, 2) if isinstance(value, (int, float)) and \
        not isinstance(value, bool) else "-"


def _signed(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:+.{digits}f}"


def _short(value: Any, n: int = 12) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= n + 1 else text[:n] + "…"


def _pretty(value: Any) -> str:
    import json

    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=1, sort_keys=True, default=str)
    return "-" if value is None else str(value)


class _Pages:
    """Renders the views the reader builds; caches the releases page per store state."""

    def __init__(self, reader_of: Callable[[], StoreReader]):
        self.reader_of = reader_of
        self._env = None
        self._lock = threading.Lock()
        self._html = LRU(64)
        self.actions = None   # the buttons' settings, inside Airflow only (dashboard/actions.py)

    @property
    def env(self):
        if self._env is None:
            self._env = _templates()
        return self._env

    def render(self, request: Request, name: str, **context) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        model = context.get("model")
        models = context.get("models") or []
        params = {"model": model} if model and len(models) > 1 else {}

        def link(path: str, **extra) -> str:
            query = {**params, **{k: v for k, v in extra.items() if v is not None}}
            return f"{base}{path}" + (f"?{urlencode(query)}" if query else "")

        reader = self.reader_of()
        status = context.pop("status_code", 200)
        html = self.env.get_template(name).render(
            base=base, link=link, pair_name=pair_name, store=redact(reader.store.base_uri),
            page=name.rpartition(".")[0], actions=self.actions,
            request_path=request.url.path, **redact(context))
        return HTMLResponse(html, status_code=status)


def _json(obj: Any) -> Response:
    return Response(dumps(redact(obj)), media_type="application/json")


def create_app(reader: StoreReader | Callable[[], StoreReader] | str, *,
               dependencies: list | None = None, title: str = "MobileDet releases",
               root_path: str = "", actions: dict | None = None) -> FastAPI:
    """The dashboard app over `reader` (a StoreReader, a factory for one, or a store URI).

    `actions` ({"channels": [...]}): add the ops buttons, which trigger the mobiledet_release
    DAG through Airflow's API as the signed-in user (include/dashboard/actions.py); only the
    plugin inside Airflow passes it."""
    if isinstance(reader, str):
        reader = StoreReader(reader)
    if isinstance(reader, StoreReader):
        instance = reader
        reader_of: Callable[[], StoreReader] = lambda: instance  # noqa: E731
    else:
        reader_of = _once(reader)
    pages = _Pages(reader_of)
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=list(dependencies or []), root_path=root_path)
    app.state.reader_of = reader_of

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(MobiledetError)
    async def store_error(request: Request, exc: MobiledetError):
        status = getattr(exc, "status_code", 502)
        body = {"error": exc.problem, "where": exc.where, "fix": exc.fix}
        if request.url.path.startswith(f"{request.scope.get('root_path', '')}/api/") or \
                "/api/" in request.url.path:
            return JSONResponse(redact(body), status_code=status)
        try:
            response = pages.render(request, "error.html", title="Error", status=status,
                                    error=body, model=None, models=[])
        except Exception:  # noqa: BLE001 - the store itself may be what failed
            return JSONResponse(redact(body), status_code=status)
        response.status_code = status
        return response

    def model_q(model: str | None) -> str | None:
        return check_name(model, "model") if model else None

    # -- releases ---------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, name="releases")
    def releases_page(request: Request, model: str | None = None,
                      limit: int | None = Query(None, ge=1, le=100000),
                      dag_id: str | None = None):
        reader = reader_of()
        view = reader.releases(model_q(model))
        other = check_name(dag_id, "dag_id") if dag_id and dag_id != "mobiledet_convert" \
            else None
        key = ("releases", reader.state_key(view["model"]),
               request.scope.get("root_path", ""), limit, other)
        hit = pages._html.get(key)
        if hit is not None:
            return HTMLResponse(hit)
        shown = view["versions"][:limit] if limit else view["versions"]
        response = pages.render(request, "releases.html", title="Releases", view=view,
                                rows=shown, model=view["model"], models=view["models"],
                                other_dag=other)
        pages._html.put(key, response.body)
        return response

    @app.get("/api/releases", name="api_releases")
    def releases_api(model: str | None = None):
        reader = reader_of()
        view = reader.releases(model_q(model))
        key = ("api-releases", reader.state_key(view["model"]))
        hit = pages._html.get(key)
        if hit is None:
            hit = dumps(redact(view))
            pages._html.put(key, hit)
        return Response(hit, media_type="application/json")

    # -- trends -----------------------------------------------------------------------------
    @app.get("/trends", response_class=HTMLResponse, name="trends")
    def trends_page(request: Request, model: str | None = None, variant: str | None = None,
                    precision: str | None = None):
        view = reader_of().trends(model_q(model), variant, precision)
        from include.dashboard.svg import line_plot
        return pages.render(request, "trends.html", title="Trends", view=view,
                            plot=line_plot, model=view["model"], models=view["models"])

    @app.get("/api/trends", name="api_trends")
    def trends_api(model: str | None = None, variant: str | None = None,
                   precision: str | None = None):
        return _json(reader_of().trends(model_q(model), variant, precision))

    # -- one release ------------------------------------------------------------------------
    @app.get("/releases/{version}", response_class=HTMLResponse, name="release")
    def release_page(request: Request, version: str, model: str | None = None):
        from include.dashboard.svg import bar_rows
        reader = reader_of()
        view = reader.release(model_q(model), check_name(version, "version"))
        history = reader.history(view["model"], version=view["version"])["entries"]
        return pages.render(request, "release.html", title=view["version"], view=view,
                            bars=bar_rows, model=view["model"], models=view["models"],
                            history=history)

    @app.get("/api/releases/{version}", name="api_release")
    def release_api(version: str, model: str | None = None):
        return _json(reader_of().release(model_q(model), check_name(version, "version")))

    # -- diff -------------------------------------------------------------------------------
    @app.get("/diff", response_class=HTMLResponse, name="diff")
    def diff_page(request: Request, a: str | None = None, b: str | None = None,
                  model: str | None = None):
        view = reader_of().diff(model_q(model), a and check_name(a, "a"),
                                b and check_name(b, "b"))
        return pages.render(request, "diff.html", title=f"{view['a']} vs {view['b']}",
                            view=view, model=view["model"], models=view["models"])

    @app.get("/api/diff", name="api_diff")
    def diff_api(a: str | None = None, b: str | None = None, model: str | None = None):
        return _json(reader_of().diff(model_q(model), a and check_name(a, "a"),
                                      b and check_name(b, "b")))

    # -- runs -------------------------------------------------------------------------------
    @app.get("/runs", response_class=HTMLResponse, name="runs")
    def runs_page(request: Request, limit: int = Query(50, ge=1, le=500),
                  dag_id: str | None = None, model: str | None = None):
        reader = reader_of()
        view = reader.runs(limit)
        other = dag_id and dag_id != "mobiledet_convert"
        return pages.render(request, "runs.html", title="Runs", view=view,
                            other_dag=check_name(dag_id, "dag_id") if other else None,
                            model=model_q(model), models=reader.models())

    @app.get("/api/runs", name="api_runs")
    def runs_api(limit: int = Query(50, ge=1, le=500)):
        return _json(reader_of().runs(limit))

    @app.get("/runs/{run_id}", response_class=HTMLResponse, name="run")
    def run_page(request: Request, run_id: str, model: str | None = None):
        reader = reader_of()
        view = reader.run(_run_id(run_id))
        return pages.render(request, "run.html", title=view["run_id"], view=view,
                            model=model_q(model), models=reader.models())

    @app.get("/api/runs/{run_id}", name="api_run")
    def run_api(run_id: str):
        return _json(reader_of().run(_run_id(run_id)))

    # -- the checkpoint ledger ---------------------------------------------------------------
    @app.get("/checkpoints", response_class=HTMLResponse, name="checkpoints")
    def checkpoints_page(request: Request, model: str | None = None):
        view = reader_of().checkpoints(model_q(model))
        return pages.render(request, "checkpoints.html", title="Checkpoints", view=view,
                            model=view["model"], models=view["models"])

    @app.get("/api/checkpoints", name="api_checkpoints")
    def checkpoints_api(model: str | None = None):
        return _json(reader_of().checkpoints(model_q(model)))

    @app.get("/history", response_class=HTMLResponse, name="history")
    def history_page(request: Request, model: str | None = None, version: str | None = None,
                     variant: str | None = None, precision: str | None = None):
        view = reader_of().history(model_q(model), version and check_name(version, "version"),
                                   variant and check_name(variant, "variant"),
                                   precision and check_name(precision, "precision"))
        return pages.render(request, "history.html", title="History", view=view,
                            model=view["model"], models=view["models"])

    @app.get("/api/history", name="api_history")
    def history_api(model: str | None = None, version: str | None = None,
                    variant: str | None = None, precision: str | None = None):
        return _json(reader_of().history(model_q(model), version and check_name(version,
                                                                                 "version"),
                                         variant and check_name(variant, "variant"),
                                         precision and check_name(precision, "precision")))

    # -- files ------------------------------------------------------------------------------
    @app.get("/files/{key:path}", name="file")
    def file(key: str):
        data = reader_of().file_bytes(key)
        suffix = suffix_of(key)
        headers = {"Cache-Control": "private, max-age=300"}
        if suffix in ACTIVE_TYPES:
            headers["Content-Security-Policy"] = SANDBOX_CSP
        if suffix == ".tflite":
            headers["Content-Disposition"] = f'attachment; filename="{key.rpartition("/")[2]}"'
        if suffix == ".json":
            import json
            try:
                data = dumps(redact(json.loads(data.decode("utf-8"))))
            except (UnicodeDecodeError, ValueError):
                raise NotFound(f"{key!r} is not valid JSON.", where=key,
                               fix="re-run the stage that wrote it.") from None
        return Response(data, media_type=MEDIA_TYPES[suffix], headers=headers)

    @app.get("/static/{name}", name="static")
    def static(name: str):
        path = STATIC.get(name)
        if path is None:
            raise NotFound(f"no static file {name[:60]!r}.", where="static",
                           fix="the dashboard ships dashboard.css and favicon.svg.")
        return Response(path.read_bytes(), media_type=STATIC_TYPES.get(path.suffix,
                                                                        "application/octet-stream"),
                        headers={"Cache-Control": "public, max-age=3600"})

    if actions is not None:
        from include.dashboard.actions import add_action_routes
        add_action_routes(app, pages, **actions)
    return app


def _run_id(run_id: str) -> str:
    """Accept an Airflow run id as the UI passes it ('manual__2026-...+00:00'): the store keeps
    runs under the same safe form the pipeline writes (stages.safe_run_id)."""
    import re

    if not isinstance(run_id, str) or not run_id or len(run_id) > 250 or "/" in run_id or \
            "\\" in run_id or ".." in run_id:
        raise BadParameter(f"{str(run_id)[:80]!r} is not a run id.", where="run_id",
                           fix="pick a run from the runs page.")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_")
    return check_name(safe, "run id")


def _once(factory: Callable[[], StoreReader]) -> Callable[[], StoreReader]:
    lock = threading.Lock()
    made: list[StoreReader] = []

    def get() -> StoreReader:
        if not made:
            with lock:
                if not made:
                    made.append(factory())
        return made[0]
    return get
