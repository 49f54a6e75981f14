"""The dashboard's ops buttons against a real Airflow: an admin's yank through the dashboard moves
the pointer; a viewer gets Airflow's 403, shown with what to ask for, and nothing moves.

The deployment is the real thing, natively (include/deploy/components.py): `airflow api-server`
with this repository's plugin (the dashboard at /mobiledet), the scheduler, the dag-processor
parsing only dags/mobiledet_release.py, the LocalExecutor on SQLite, and SimpleAuthManager with
two users, ``admin`` (admin) and ``watcher`` (viewer, via AirflowSettings.extra_users). The
store is a local folder with two published releases made by the store's own publish (no
conversion), named to every component by MOBILEDET_STORE, as `mobiledet serve` does.

A button is a same-origin form post to /mobiledet/actions carrying the UI's ``_token`` cookie:
the tests post exactly that (the form fields release.html renders, Origin and Referer of the
release page), and `test_the_real_button_in_chromium` clicks the rendered button in headless
Chromium when Debian's chromium is there.
"""
from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from test_release_ops import _publish

REPO = Path(__file__).resolve().parents[1]
RELEASE_DAG = "mobiledet_release"
VIEWER = "watcher"
START_TIMEOUT_S = 240
RUN_TIMEOUT_S = 240
HTTP_TIMEOUT_S = 60
PAGE_TIMEOUT_S = 30

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------------------------
# Fast: the extra users of a deployment
# --------------------------------------------------------------------------------------------
def test_extra_users_get_a_role_and_a_password(tmp_path):
    from include.deploy.environment import (AirflowSettings, airflow_environment,
                                            ensure_password, user_password)
    from include.errors import ConfigError

    settings = AirflowSettings(home=tmp_path, password="admin-pw",
                               extra_users={"watcher": "viewer", "ops": "op"})
    env = airflow_environment(settings, base={})
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,watcher:viewer,ops:op"
    assert ensure_password(settings) == "admin-pw"
    passwords = json.loads(settings.passwords_file.read_text())
    assert set(passwords) == {"admin", "watcher", "ops"} and passwords["admin"] == "admin-pw"
    assert len(passwords["watcher"]) >= 12 and passwords["watcher"] != passwords["ops"]
    # kept across restarts, as the admin's is
    again = AirflowSettings(home=tmp_path, extra_users={"watcher": "viewer", "ops": "op"})
    assert user_password(again, "watcher") == passwords["watcher"]
    assert json.loads(settings.passwords_file.read_text()) == passwords
    # the default stays one admin
    plain = AirflowSettings(home=tmp_path / "plain")
    assert airflow_environment(plain, base={})["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == \
        "admin:admin"
    for bad, match in (({"watcher": "reader"}, "viewer, user, op, admin"),
                       ({"admin": "viewer"}, "admin already"),
                       ({"a,b": "viewer"}, "comma")):
        with pytest.raises(ConfigError, match=match):
            AirflowSettings(home=tmp_path, extra_users=bad).validate()


# --------------------------------------------------------------------------------------------
# Slow: a real deployment
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A running deployment with the release DAG, the plugin and a store of two releases."""
    from include.deploy.components import AirflowDeployment
    from include.deploy.environment import AirflowSettings, user_password
    from include.deploy.processes import free_port
    from include.store import ArtifactStore

    root = tmp_path_factory.mktemp("actions-live")
    store_dir = root / "store"
    store = ArtifactStore(str(store_dir))
    versions = [_publish(store, 0), _publish(store, 1)]
    dags = root / "dags"
    dags.mkdir()
    shutil.copy2(REPO / "dags" / f"{RELEASE_DAG}.py", dags)
    settings = AirflowSettings(
        home=root / "airflow", dags_folder=dags, port=free_port(), executor="LocalExecutor",
        parallelism=2, heavy_pool=None, extra_users={VIEWER: "viewer"},
        extra_env={"MOBILEDET_STORE": str(store_dir), "MOBILEDET_CHECKPOINT_STORE": "off",
                   "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                   "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600"})
    airflow = AirflowDeployment(settings, components=["api-server", "scheduler",
                                                      "dag-processor"])
    airflow.start(timeout=START_TIMEOUT_S)
    try:
        client = airflow.client()
        dag = client.wait_for_dag(RELEASE_DAG, timeout=120)
        assert not dag["is_paused"], dag
        yield {"airflow": airflow, "client": client, "base": settings.base_url,
               "store": store, "versions": versions,
               "passwords": {"admin": settings.password,
                             VIEWER: user_password(settings, VIEWER)}}
    finally:
        airflow.stop()
        assert airflow.leftovers() == {}


def _token(base: str, user: str, password: str) -> str:
    """The JWT the login gives (POST /auth/token, as include/deploy/client.py gets it)."""
    req = urllib.request.Request(f"{base}/auth/token", method="POST",
                                 data=json.dumps({"username": user,
                                                  "password": password}).encode(),
                                 headers={"Content-Type": "application/json"})
    with _OPENER.open(req, timeout=HTTP_TIMEOUT_S) as r:
        return json.load(r)["access_token"]


def _request(url: str, *, token: str, form: dict | None = None,
             headers: dict | None = None) -> tuple[int, str]:
    """GET (or POST `form`, url-encoded as a browser does) with the UI's _token cookie."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    hdrs = {"Cookie": f"_token={token}", **(headers or {})}
    if data is not None:
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, headers=hdrs,
                                 method="POST" if data is not None else "GET")
    try:
        with _OPENER.open(req, timeout=HTTP_TIMEOUT_S) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _yank_form(page: str) -> tuple[str, dict]:
    """The yank form of a release page as rendered: its action URL and hidden fields."""
    import html

    forms = re.findall(r'<form method="post" action="([^"]+)">(.*?)</form>', page, re.S)
    for action, inner in forms:
        fields = {html.unescape(n): html.unescape(v) for n, v in
                  re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', inner)}
        if fields.get("action") == "yank":
            assert 'name="reason" required' in inner, inner
            return html.unescape(action), fields
    raise AssertionError(f"no yank button on the page: {forms}")


def _press_yank(live: dict, user: str, version: str, reason: str) -> tuple[int, str]:
    """What the Yank button does: the release page's form, posted same-origin as `user`."""
    base = live["base"]
    token = _token(base, user, live["passwords"][user])
    page_url = f"{base}/mobiledet/releases/{version}"
    status, page = _request(page_url, token=token)
    assert status == 200, (status, page[:500])
    action, fields = _yank_form(page)
    assert action == "/mobiledet/actions" and fields["version"] == version, (action, fields)
    return _request(urllib.parse.urljoin(page_url, action), token=token,
                    form={**fields, "reason": reason},
                    headers={"Origin": base, "Referer": page_url})


def _latest(store) -> str:
    from include.store import pointer

    return pointer(store, "mobiledet", "edgetpu", "int8")["version"]


def _runs(live: dict) -> list[dict]:
    return live["client"].runs(RELEASE_DAG)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_viewer_is_refused_with_the_reason_and_nothing_moves(live):
    store, client = live["store"], live["client"]
    current = _latest(store)
    runs_before = _runs(live)
    history_before = store.list("mobiledet/history/")
    status, body = _press_yank(live, VIEWER, current, "viewer tries")
    text = _result_text(body)
    assert status == 403, (status, body[:1500])
    assert "refused (403)" in body
    assert "Airflow answered 403" in text and "you may not trigger mobiledet_release runs" \
        in text and "Ask an Airflow admin" in text, text
    # Airflow made no run, and, checked again after a scheduler loop or two, nothing moved
    assert _runs(live) == runs_before
    time.sleep(5)
    assert _runs(live) == runs_before
    assert _latest(store) == current
    assert not store.exists(f"mobiledet/{current}/yank.json")
    assert store.list("mobiledet/history/") == history_before
    from include.store.registry import Releases
    assert not [h for h in Releases(store, "mobiledet").history(version=current)
                if h.get("reason") == "viewer tries"]
    assert client.import_errors() == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_admins_yank_runs_the_release_dag_and_moves_the_pointer(live):
    from include.store.registry import Releases

    store, client = live["store"], live["client"]
    v1, v2 = live["versions"]
    assert _latest(store) == v2
    status, body = _press_yank(live, "admin", v2, "bad boxes on device")
    text = _result_text(body)
    assert status == 200, (status, body[:1500])
    assert "requested" in body and "Airflow queued run" in text, text
    [run_id] = re.findall(rf'href="/dags/{RELEASE_DAG}/runs/([^"]+)"', body)
    run_id = urllib.parse.unquote(run_id)
    run = client.wait_for_run(RELEASE_DAG, run_id, timeout=RUN_TIMEOUT_S, poll=1.0,
                              fail_fast=True)
    assert run["state"] == "success", run
    assert run["conf"]["action"] == "yank" and run["conf"]["version"] == v2, run["conf"]
    assert run.get("triggering_user_name") == "admin", run
    assert _latest(store) == v1
    assert store.read_json(f"mobiledet/{v2}/yank.json")["reason"] == "bad boxes on device"
    [entry] = Releases(store, "mobiledet").history(version=v2)
    assert entry["action"] == "yank" and entry["who"] == "admin (Airflow)", entry
    assert {"pointer": "latest/edgetpu/int8.json", "from": v2, "to": v1} in entry["moves"]
    # the release page says so once the dashboard reads the store's registry again (it keeps
    # it up to pointer_ttl_s, 5 s: include/dashboard/reader.py), with Restore for a button
    token = _token(live["base"], "admin", live["passwords"]["admin"])
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while True:
        status, page = _request(f"{live['base']}/mobiledet/releases/{v2}", token=token)
        assert status == 200, (status, page[:500])
        if 'id="yanked"' in page or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert 'id="yanked"' in page and "bad boxes on device" in page, page[:3000]
    assert 'name="action" value="restore"' in page


def _result_text(body: str) -> str:
    import html

    found = re.search(r'id="action-result"[^>]*>(.*?)</p>', body, re.S)
    return html.unescape(found.group(1)) if found else body[:1500]


# --------------------------------------------------------------------------------------------
# Slow: the rendered buttons, clicked in headless Chromium
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    from browser import start_chrome

    driver = start_chrome(tmp_path_factory.mktemp("chromium-actions"))
    try:
        yield driver
    finally:
        driver.quit()


def _sign_in(chrome, live: dict, user: str) -> None:
    """The UI's sign-in leaves the JWT in the `_token` cookie: put it there for `user`."""
    chrome.delete_all_cookies()
    chrome.get(f"{live['base']}/api/v2/monitor/health")   # a page of the origin, no login
    chrome.add_cookie({"name": "_token", "path": "/",
                       "value": _token(live["base"], user, live["passwords"][user])})


def _click(chrome, live: dict, version: str, action: str, reason: str | None = None) -> dict:
    """Open the release page, press the `action` button (typing `reason` first); the result."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    chrome.get(f"{live['base']}/mobiledet/releases/{version}")
    form = chrome.find_element(
        By.XPATH, f'//div[@id="actions"]//form[input[@name="action" and @value="{action}"]]')
    if reason is not None:
        form.find_element(By.NAME, "reason").send_keys(reason)
    form.find_element(By.TAG_NAME, "button").click()
    result = WebDriverWait(chrome, HTTP_TIMEOUT_S).until(
        ec.presence_of_element_located((By.ID, "action-result")))
    return {"ok": result.get_attribute("data-ok") == "1", "text": result.text,
            "title": chrome.find_element(By.TAG_NAME, "h1").text,
            "links": [a.get_attribute("href") for a in chrome.find_elements(By.TAG_NAME, "a")]}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_real_buttons_in_chromium(live, chrome):
    """Restore of a yanked release by its button: refused for the viewer (the page says why),
    done for the admin (the run succeeds as admin and the pointer comes back)."""
    from include.store.registry import Releases

    store, client = live["store"], live["client"]
    v1, v2 = live["versions"]
    ops = Releases(store, "mobiledet")
    if not store.exists(f"mobiledet/{v2}/yank.json"):     # run alone: yank it as the set-up
        ops.yank(v2, who="test set-up", reason="set-up")
    assert _latest(store) == v1
    runs_before = _runs(live)

    _sign_in(chrome, live, VIEWER)
    refused = _click(chrome, live, v2, "restore")
    assert not refused["ok"] and refused["title"] == "restore: refused (403)", refused
    assert "you may not trigger mobiledet_release runs" in refused["text"] and \
        "Ask an Airflow admin" in refused["text"], refused
    time.sleep(3)
    assert _runs(live) == runs_before and _latest(store) == v1

    _sign_in(chrome, live, "admin")
    done = _click(chrome, live, v2, "restore")
    assert done["ok"] and done["title"] == "restore: requested", done
    [link] = [h for h in done["links"] if f"/dags/{RELEASE_DAG}/runs/" in (h or "")]
    run_id = urllib.parse.unquote(link.rsplit("/runs/", 1)[1])
    run = client.wait_for_run(RELEASE_DAG, run_id, timeout=RUN_TIMEOUT_S, poll=1.0,
                              fail_fast=True)
    assert run["state"] == "success" and run.get("triggering_user_name") == "admin", run
    assert _latest(store) == v2
    assert ops.history(version=v2)[-1]["action"] == "restore"
    assert ops.history(version=v2)[-1]["who"] == "admin (Airflow)"
