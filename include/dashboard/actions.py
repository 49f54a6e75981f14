"""The dashboard's buttons, inside Airflow only: yank, restore, promote, bless, retry.

A button posts a small form here; the action is not done here but triggered as a run of the
``mobiledet_release`` DAG through Airflow's own REST API (``POST /api/v2/dags/mobiledet_release/
dagRuns``), with the caller's own Airflow token (the ``Authorization`` header or the UI's
``_token`` cookie). So Airflow decides who may act (a user who may not trigger that DAG gets
its 403, and the page says so and what to ask for), the run shows in Airflow's UI and REST API
with the user who triggered it, and the DAG's task records the action in the store's audit
log. A form posted from another site is refused (same-origin check). The standalone dashboard
has no such routes: it stays read-only.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from include.dashboard.safety import BadParameter, check_name

RELEASE_DAG = "mobiledet_release"
ACTIONS = ("promote", "yank", "restore", "bless", "retry")
FIELDS = ("action", "version", "variant", "precision", "channel", "reason", "checkpoint",
          "model_name")
TIMEOUT_S = 30


def add_action_routes(app: FastAPI, pages, channels=("canary", "stable")) -> None:
    """POST /actions: trigger mobiledet_release as the signed-in user (see the module doc)."""
    pages.actions = {"channels": list(channels)}

    @app.post("/actions", response_class=HTMLResponse, name="act")
    async def act(request: Request):
        import anyio

        _same_origin(request)
        form = await request.form()
        conf = {k: str(form.get(k)).strip() for k in FIELDS if form.get(k)}
        _check(conf)
        status, answer = await anyio.to_thread.run_sync(_trigger, request, conf)
        result = _outcome(status, answer, conf)
        return pages.render(request, "action.html", title=f"{conf['action']}: {result['title']}",
                            result=result, conf=conf, status_code=status,
                            model=conf.get("model_name"))


def _check(conf: dict) -> None:
    if conf.get("action") not in ACTIONS:
        raise BadParameter(f"unknown action {conf.get('action')!r}.", where="action",
                           fix=f"one of {', '.join(ACTIONS)}.")
    for key in ("version", "variant", "precision", "channel", "model_name"):
        if conf.get(key):
            check_name(conf[key], key)
    if conf["action"] in ("yank", "bless") and not conf.get("reason"):
        raise BadParameter(f"a {conf['action']} needs its reason.", where="reason",
                           fix="say why in the reason field.")


def _same_origin(request: Request) -> None:
    """Browsers send Origin (or at least Referer) with a form post: it must be this host."""
    here = request.url.netloc
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value:
            if urlsplit(value).netloc != here:
                raise BadParameter("the form was posted from another site.", where=header,
                                   fix="use the buttons of the dashboard itself.")
            return
    raise BadParameter("the request says neither where it came from (Origin) nor its page "
                       "(Referer).", where="origin", fix="use the buttons of the dashboard.")


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get("_token")


def _trigger(request: Request, conf: dict) -> tuple[int, dict]:
    """Airflow's REST API, as the caller: (status, its JSON answer)."""
    base = f"{request.url.scheme}://{request.url.netloc}"
    body = json.dumps({"logical_date": None, "conf": conf}).encode()
    headers = {"Content-Type": "application/json"}
    token = _token(request)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{base}/api/v2/dags/{RELEASE_DAG}/dagRuns", data=body,
                                 headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=TIMEOUT_S) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"detail": exc.reason}


def _outcome(status: int, answer: dict, conf: dict) -> dict:
    what = f"{conf['action']} {conf.get('version') or conf.get('checkpoint') or ''}".strip()
    if 200 <= status < 300:
        run_id = answer.get("dag_run_id")
        return {"ok": True, "title": "requested", "run_id": run_id,
                "text": f"{what}: Airflow queued run {run_id} of {RELEASE_DAG} as you. The "
                        "pointers move when it ends; the action is in the history then.",
                "airflow_url": f"/dags/{RELEASE_DAG}/runs/{run_id}"}
    detail = answer.get("detail") or answer
    if status in (401, 403):
        why = ("you are not signed in to Airflow (or your session ended): sign in again."
               if status == 401 else
               f"you may not trigger {RELEASE_DAG} runs. Ask an Airflow admin for a role that "
               "may (Op or Admin), or for the permission to create runs of that DAG.")
        return {"ok": False, "title": f"refused ({status})",
                "text": f"{what}: Airflow answered {status}: {detail}. Why: {why}"}
    return {"ok": False, "title": f"failed ({status})",
            "text": f"{what}: Airflow answered {status}: {detail}. Check that the "
                    f"{RELEASE_DAG} DAG is loaded (Airflow's DAGs page)."}
