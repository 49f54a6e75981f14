"""Airflow 3's REST API (/api/v2), the few calls this project needs: urllib only, loopback
traffic never through a proxy.

`AirflowClient` gets a JWT token from the SimpleAuthManager login and calls the API with it;
`trigger_and_follow` triggers a DAG run on the Airflow at a URL and follows it to its end.
"""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

from include.errors import ServiceError

DAG_ID = "mobiledet_convert"
TERMINAL_RUN_STATES = ("success", "failed")
FAILED_TASK_STATES = ("failed", "up_for_retry")
HTTP_TIMEOUT_S = 30


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(method: str, url: str, body: dict | None = None, token: str | None = None,
              timeout: float = HTTP_TIMEOUT_S) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:800]
        raise HTTPStatusError(exc.code, f"{method} {url} answered {exc.code}: {detail}",
                              where=url, fix=_http_fix(exc.code)) from exc
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        raise ServiceError(f"{method} {url} failed: {getattr(exc, 'reason', exc)}", where=url,
                           fix="check that Airflow's API server runs there (mobiledet serve).") \
            from exc
    return json.loads(text) if text.strip() else {}


def _http_fix(code: int) -> str:
    return {401: "check the user and password (--user/--password; `mobiledet serve` prints "
                 "them).",
            403: "use a user with the admin or op role.",
            404: "check the URL and that the DAG is parsed (see the dag-processor log)."
            }.get(code, "read the API server's log.")


class HTTPStatusError(ServiceError):
    def __init__(self, status: int, problem: str, **kw):
        self.status = status
        super().__init__(problem, **kw)


class TaskFailed(ServiceError):
    """A task of a followed run failed (or is waiting for a retry); `tasks` are their TIs."""

    def __init__(self, problem: str, tasks: list[dict], **kw):
        self.tasks = tasks
        super().__init__(problem, **kw)


class AirflowClient:
    """The few calls of Airflow 3's REST API (/api/v2) this project needs, with a JWT token.

    Token: ``POST /auth/token`` with the SimpleAuthManager user and password, or, without a
    password, ``GET /auth/token`` (works only with simple_auth_manager_all_admins=True).
    """

    def __init__(self, base_url: str, username: str | None = "admin",
                 password: str | None = None, timeout: float = HTTP_TIMEOUT_S):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self._token: str | None = None

    def token(self, refresh: bool = False) -> str:
        if self._token and not refresh:
            return self._token
        url = f"{self.base_url}/auth/token"
        if self.password:
            answer = http_json("POST", url, {"username": self.username,
                                             "password": self.password}, timeout=self.timeout)
        else:
            answer = http_json("GET", url, timeout=self.timeout)
        self._token = answer["access_token"]
        return self._token

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        url = f"{self.base_url}/api/v2/{path.lstrip('/')}"
        try:
            return http_json(method, url, body, self.token(), self.timeout)
        except HTTPStatusError as exc:
            if exc.status != 401:
                raise
            return http_json(method, url, body, self.token(refresh=True), self.timeout)

    # -- DAGs and runs ------------------------------------------------------------------------
    def dag(self, dag_id: str) -> dict:
        return self.call("GET", f"dags/{_q(dag_id)}")

    def wait_for_dag(self, dag_id: str, timeout: float = 120, poll: float = 2.0) -> dict:
        """Until the dag-processor has parsed `dag_id` (bounded)."""
        deadline = time.monotonic() + timeout
        last = None
        for _ in range(int(timeout / poll) + 1):
            try:
                return self.dag(dag_id)
            except HTTPStatusError as exc:
                if exc.status != 404:
                    raise
                last = exc
            if time.monotonic() > deadline:
                break
            time.sleep(poll)
        errors = self.import_errors()
        raise ServiceError(f"DAG {dag_id} did not appear within {timeout:.0f} s ({last}); "
                           f"import errors: {json.dumps(errors)[:1500]}", where=dag_id,
                           fix="check AIRFLOW__CORE__DAGS_FOLDER and the dag-processor log.")

    def import_errors(self) -> list:
        try:
            return self.call("GET", "importErrors").get("import_errors", [])
        except ServiceError:
            return []

    def unpause(self, dag_id: str) -> dict:
        return self.call("PATCH", f"dags/{_q(dag_id)}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> dict:
        body = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.call("POST", f"dags/{_q(dag_id)}/dagRuns", body)

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def runs(self, dag_id: str, limit: int = 100) -> list[dict]:
        return self.call("GET", f"dags/{_q(dag_id)}/dagRuns?limit={limit}"
                                "&order_by=-run_after").get("dag_runs", [])

    def task_instances(self, dag_id: str, run_id: str, limit: int = 1000) -> list[dict]:
        """Every task instance of the run, mapped ones one per map index."""
        return self.call("GET", f"dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances"
                                f"?limit={limit}").get("task_instances", [])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600, poll: float = 2.0,
                     on_task_change: Callable[[dict], None] | None = None,
                     fail_fast: bool = False) -> dict:
        """Poll until the run is success or failed (bounded); report task state changes.

        `fail_fast` raises `TaskFailed` as soon as a task fails or waits for a retry, instead
        of waiting for the retries (tests want the first failure, not the last)."""
        deadline = time.monotonic() + timeout
        seen: dict[tuple, str | None] = {}
        run = {}
        for _ in range(int(timeout / poll) + 2):
            run = self.run(dag_id, run_id)
            if on_task_change is not None or fail_fast:
                tis = self.task_instances(dag_id, run_id)
                for ti in tis:
                    key = (ti["task_id"], ti.get("map_index", -1))
                    if seen.get(key, "?") != ti.get("state"):
                        seen[key] = ti.get("state")
                        if on_task_change is not None:
                            on_task_change(ti)
                bad = [ti for ti in tis if ti.get("state") in FAILED_TASK_STATES]
                if fail_fast and bad and run.get("state") not in TERMINAL_RUN_STATES:
                    states = ", ".join(f"{task_label(t)}={t['state']}" for t in bad)
                    raise TaskFailed(
                        f"DAG run {run_id}: {states}", bad, where=f"{dag_id}/{run_id}",
                        fix="read the task's log (AIRFLOW_HOME/logs/dag_id=.../task_id=...).")
            if run.get("state") in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                break
            time.sleep(poll)
        raise ServiceError(f"DAG run {run_id} did not finish within {timeout:.0f} s "
                           f"(state {run.get('state')}).", where=f"{dag_id}/{run_id}",
                           fix="look at the run in the Airflow UI; raise --timeout for big "
                               "checkpoints.")


def _q(part: str) -> str:
    return urllib.parse.quote(str(part), safe="")


def task_label(ti: dict) -> str:
    label = ti["task_id"]
    if ti.get("map_index", -1) not in (-1, None):
        label += f"[{ti.get('rendered_map_index') or ti['map_index']}]"
    return label


def trigger_and_follow(url: str, conf: dict, *, username: str | None = "admin",
                       password: str | None = None, dag_id: str = DAG_ID,
                       timeout: float = 3600, poll: float = 3.0, fail_fast: bool = False,
                       out: Callable[[str], None] = print,
                       on_task_change: Callable[[dict], None] | None = None) -> dict:
    """Trigger `dag_id` with `conf` on the Airflow at `url` and follow it until it ends.

    Each task instance whose state changed goes to `on_task_change` (default: a line through
    `out`); returns the final run (its "state" is "success" or "failed"). A paused DAG is
    unpaused first (a triggered run of a paused DAG would wait for ever).
    """
    client = AirflowClient(url, username, password)
    dag = client.wait_for_dag(dag_id, timeout=min(timeout, 120))
    if dag.get("is_paused"):
        out(f"{dag_id} was paused: unpausing it")
        client.unpause(dag_id)
    conf = {k: v for k, v in conf.items() if v not in (None, [], {})}
    run = client.trigger(dag_id, conf)
    run_id = run["dag_run_id"]
    out(f"triggered {dag_id} run {run_id} on {client.base_url}")

    def show(ti: dict) -> None:
        host = f" on {ti['hostname']}" if ti.get("hostname") else ""
        out(f"  {task_label(ti):40} {ti.get('state') or 'none'}{host}")

    final = client.wait_for_run(dag_id, run_id, timeout=timeout, poll=poll,
                                on_task_change=on_task_change or show, fail_fast=fail_fast)
    out(f"run {run_id}: {final['state']}")
    return final
