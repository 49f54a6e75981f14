"""The ops dashboard (include/dashboard): pages and JSON against stores written by the real
`publish`, caching, safety (no path escapes, no credentials, read-only), the CLI verb with a
real uvicorn, and the Airflow plugin in a real api-server with a real JWT."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from browser import free_port, pipeline_store, wait_for_http

REPO = Path(__file__).resolve().parents[1]
SECRETS = ("topsecretvalue", "hunter2", "AKIAABCDEFGHIJKLMNOP", "conn-extra-secret")


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Six synthetic releases (real publish, real gate decisions), one older release whose
    lineage holds credentials, run reports with and without stage durations, an Edge TPU
    report, a picture and Data Docs."""
    from include.dashboard.synthetic import START, make_releases
    from include.store import make_version, open_store, publish_release as publish

    root = tmp_path_factory.mktemp("dashboard")
    store_dir = root / "store"
    versions = make_releases(str(store_dir), 6)
    store = open_store(str(store_dir))
    fp = hashlib.sha256(b"secret-release").hexdigest()
    secret_version = make_version(fp, START - timedelta(days=30))
    model_file = root / "secret.tflite"
    model_file.write_bytes(b"TFL3")
    publish(store, "mobiledet", secret_version, [
        {"variant": "cpu", "precision": "float32", "passed": True,
         "files": {"model.tflite": str(model_file)},
         "decision": {"variant": "cpu", "precision": "float32", "metric": "AP50", "map": 0.3,
                      "passed": True, "checks": [], "reasons": []},
         "metrics": {"AP50": 0.3, "latency_ms": 1.0, "size_bytes": 4}}],
        {"checkpoint_uri": "s3://AKIAABCDEFGHIJKLMNOP:topsecretvalue@bucket/ckpt",
         "checkpoint_fingerprint": fp, "run_id": "secret_run",
         "connection": {"extra": {"aws_secret_access_key": "conn-extra-secret"}}},
        now=START - timedelta(days=29), publisher="secret_run")
    newest = store.read_json(f"mobiledet/{versions[-1]}/manifest.json")
    ckpt_id = f"edgetpu-float-{newest['lineage']['checkpoint_fingerprint'][:8]}"
    run = "synthetic_0005"
    tpu_key = f"runs/{run}/{ckpt_id}/int8/edgetpu.json"
    store.write_json(tpu_key, {
        "compiler": {"status": "not_installed", "message": "edgetpu_compiler is not installed",
                     "report": None},
        "prediction": {"total_ops": 127, "ops_on_tpu": 126, "operators": [
            {"operator": "CONV_2D", "count": 60, "mapped": True, "status": "Mapped"},
            {"operator": "CUSTOM", "count": 1, "mapped": False,
             "status": "TFLite_Detection_PostProcess runs on the CPU"}]}})
    store.write_json(f"runs/{run}/report.json", {
        "run_id": run, "metric": "AP50", "store": "s3://ops:hunter2@bucket/store",
        "model_name": "mobiledet",
        "checkpoints": [{"ckpt_id": ckpt_id, "uri": "s3://bucket/ckpt",
                         "fingerprint": newest["lineage"]["checkpoint_fingerprint"],
                         "variant": "edgetpu", "qat": False}],
        "models": [{"name": "edgetpu/int8", "ckpt_id": ckpt_id, "variant": "edgetpu",
                    "precision": "int8", "passed": True, "size_bytes": 1600000,
                    "latency_ms": 2.0, "decision": {"metric": "AP50", "map": 0.48,
                                                    "reasons": []},
                    "edgetpu": {"status": "not_installed", "ops_total": 127, "ops_on_tpu": 126,
                                "report_uri": store.uri(tpu_key)}},
                   {"name": "edgetpu/float32", "ckpt_id": ckpt_id, "variant": "edgetpu",
                    "precision": "float32", "passed": False, "decision": {
                        "metric": "AP50", "map": None,
                        "reasons": ["the check task failed: ValidationFailed: boom"]}}],
        "published": [{"ckpt_id": ckpt_id, "status": "published", "model": "mobiledet",
                       "version": versions[-1],
                       "published": [{"variant": "edgetpu", "precision": "int8"}]}],
        "failed_checkpoints": [], "problems": [], "warnings": [], "table": "model  gate",
        "stages": {"export": {"wall_s": 12.5, "cpu_s": 20.1, "peak_rss_mb": 812.0},
                   "convert": {"wall_s": 30.25, "cpu_s": 55.0, "peak_rss_mb": 1024.5}}})
    store.write_json("runs/synthetic_0004/report.json", {
        "run_id": "synthetic_0004", "metric": "AP50", "models": [], "published": [],
        "problems": [], "checkpoints": []})
    store.put_bytes(b"{}", "runs/synthetic_0003/edgetpu-float-x/float32/metrics.json")
    picture_key = f"mobiledet/{versions[-1]}/synthetic_0005/edgetpu/float32/pictures/0-a.png"
    store.put_bytes(_png(), picture_key)
    docs_key = f"runs/{run}/{ckpt_id}/int8/data_docs/index.html"
    store.put_bytes(b"<html><body>GX data docs</body></html>", docs_key)
    store.write_json("claims/abc.json", {"run_id": "synthetic_0005"})
    (root / "outside.txt").write_text("outside-the-store")
    return {"root": root, "store_dir": store_dir, "store": store, "versions": versions,
            "secret_version": secret_version, "picture_key": picture_key, "docs_key": docs_key,
            "ckpt_id": ckpt_id}


@pytest.fixture(scope="module")
def client(synth):
    from fastapi.testclient import TestClient

    from include.dashboard.app import create_app
    from include.dashboard.reader import StoreReader

    reader = StoreReader(str(synth["store_dir"]))
    with TestClient(create_app(reader)) as c:
        c.reader = reader
        yield c


def _manifest(synth, version):
    return synth["store"].read_json(f"mobiledet/{version}/manifest.json")


class _Cells(HTMLParser):
    """Collects the attributes of the matrix cells and of the SVG markers of a page."""

    def __init__(self):
        super().__init__()
        self.cells, self.points, self.plots, self.imgs = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "td" and "cell" in classes and "none" not in classes:
            self.cells.append(a)
        if tag == "circle" and "pt" in classes:
            self.points.append({**a, "plot": self.plots[-1]["id"] if self.plots else None})
        if tag == "svg" and "plot" in classes:
            self.plots.append(a)
        if tag == "img":
            self.imgs.append(a)


def _parse(html: str) -> _Cells:
    p = _Cells()
    p.feed(html)
    return p


# --------------------------------------------------------------------------------------------
# pages and JSON
# --------------------------------------------------------------------------------------------
def test_releases_json_names_each_version_and_matches_the_manifests(client, synth):
    data = client.get("/api/releases").json()
    names = [r["version"] for r in data["versions"]]
    assert names == [*reversed(synth["versions"]), synth["secret_version"]]  # newest first
    assert [c["name"] for c in data["columns"]][:4] == ["cpu/float32", "cpu/dynamic",
                                                        "cpu/float16", "cpu/int8"]
    for row in data["versions"]:
        manifest = _manifest(synth, row["version"])
        for state, entries in (("published", manifest["published"]),
                               ("rejected", manifest["rejected"])):
            for e in entries:
                cell = row["cells"][f"{e['variant']}/{e['precision']}"]
                assert cell["state"] == state
                assert cell["size_bytes"] == e["metrics"]["size_bytes"]
                assert cell["value"] == e["decision"]["map"]
                assert cell["latency_ms"] == e["metrics"]["latency_ms"]
                drop = next((c["value"] for c in e["decision"]["checks"]
                             if c["name"] == "map_drop"), None)
                assert cell["drop"] == drop
                if state == "rejected":
                    assert cell["reasons"] == e["reasons"] and cell["reasons"]
    # the pointers: every (variant, precision) pointer is marked on the release it names
    for key in synth["store"].list("mobiledet/latest"):
        variant, precision = key[len("mobiledet/latest/"):-len(".json")].split("/") \
            if key.count("/") == 3 else (None, None)
        if not variant:
            continue
        target = synth["store"].read_json(key)["version"]
        marked = [r["version"] for r in data["versions"]
                  if r["cells"].get(f"{variant}/{precision}", {}).get("pointer")]
        assert marked == [target]
    assert data["pointers"]["latest"] == synth["versions"][-1]
    # int8 of every 5th release fails the drop gate; its pointer stays on the release before
    assert data["pointers"]["pairs"]["cpu/int8"] == synth["versions"][-1]
    rejected = data["versions"][1]["cells"]["cpu/int8"]
    assert rejected["state"] == "rejected" and "drop" in rejected["reasons"][0]


def test_releases_page_shows_the_matrix_with_pointers_and_reasons(client, synth):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = _parse(r.text)
    by = {(c["data-version"], c["data-pair"]): c for c in page.cells}
    assert len({v for v, _ in by}) == len(synth["versions"]) + 1
    for v in synth["versions"]:
        for e in _manifest(synth, v)["published"] + _manifest(synth, v)["rejected"]:
            cell = by[(v, f"{e['variant']}/{e['precision']}")]
            assert float(cell["data-size"]) == e["metrics"]["size_bytes"]
            assert float(cell["data-value"]) == pytest.approx(e["decision"]["map"])
    live = [c for c in page.cells if "live" in c["class"].split()]
    assert {c["data-version"] for c in live} == {synth["versions"][-1]}
    assert len(live) == 8
    reason = _manifest(synth, synth["versions"][-2])["rejected"][0]["reasons"][0]
    assert "<summary>why?</summary>" in r.text
    assert reason.split(":")[0] in r.text
    for v in synth["versions"]:
        assert f'href="/releases/{v}"' in r.text
    assert 'href="/static/dashboard.css"' in r.text and "http://" not in r.text.split("<body>")[0]


def test_trends_have_one_point_per_release_and_the_gate_threshold(client, synth):
    data = client.get("/api/trends").json()
    series = {s["name"]: s for s in data["series"]}
    assert [p["version"] for p in series["cpu/int8"]["points"]] == synth["versions"]
    assert all(p["floor"] is not None for p in series["cpu/int8"]["points"])
    r = client.get("/trends", params={"variant": "cpu", "precision": "int8"})
    page = _parse(r.text)
    metric = [p for p in page.points if p["plot"] == "plot-cpu-int8-metric"]
    assert [p["data-version"] for p in metric] == synth["versions"]
    assert sum("rejected" in p["class"] for p in metric) == 1
    assert len([p for p in page.points if p["plot"] == "plot-cpu-int8-latency"]) == 6
    assert 'class="threshold"' in r.text and "gate floor" in r.text
    full = _parse(client.get("/trends").text)
    assert len([p for p in full.points if p["plot"] == "plot-cpu-float32-metric"]) == 7


def test_release_detail_shows_lineage_gates_converter_ops_edgetpu_pictures(client, synth):
    v = synth["versions"][-1]
    data = client.get(f"/api/releases/{v}").json()
    manifest = _manifest(synth, v)
    assert data["lineage"]["checkpoint_fingerprint"] == manifest["lineage"][
        "checkpoint_fingerprint"]
    by = {d["name"]: d for d in data["entries"]}
    int8 = by["edgetpu/int8"]
    checks = {c["name"]: c for c in int8["checks"]}
    assert set(checks) == {"map_drop", "min_map", "contract", "latency", "latency_ratio",
                           "edgetpu_mapping", "regression"}
    assert checks["map_drop"]["threshold"] == 0.05
    assert int8["converter"]["settings"]["inference_input_type"] == "uint8"
    assert int8["ops"]["QUANTIZE"] == 3
    assert int8["edgetpu_table"]["source"] == "prediction"
    assert int8["edgetpu_table"]["rows"][0]["operator"] == "CONV_2D"
    assert int8["data_docs"] == synth["docs_key"]
    assert by["edgetpu/float32"]["pictures"] == [synth["picture_key"]]
    html = client.get(f"/releases/{v}").text
    for text in ("checkpoint fingerprint", "Gate decisions", "map_drop", "Converter settings",
                 "Op histogram", "Edge TPU operators", "prediction", "DEPTHWISE_CONV_2D",
                 "Great Expectations Data Docs", "not stored with this release"):
        assert text in html, text
    imgs = _parse(html).imgs
    assert [i["src"] for i in imgs] == [f"/files/{synth['picture_key']}"]
    pic = client.get(f"/files/{synth['picture_key']}")
    assert pic.status_code == 200 and pic.headers["content-type"] == "image/png"
    assert pic.content == synth["store"].get_bytes(synth["picture_key"])
    docs = client.get(f"/files/{synth['docs_key']}")
    assert docs.status_code == 200 and "sandbox" in docs.headers["content-security-policy"]
    assert client.get("/releases/v20990101T000000Z-ffffffff").status_code == 404


def test_diff_shows_what_changed_between_two_releases(client, synth):
    a, b = synth["versions"][-2], synth["versions"][-1]
    data = client.get("/api/diff", params={"a": a, "b": b}).json()
    assert (data["a"], data["b"]) == (a, b)
    changed = {r["field"] for r in data["lineage"] if r["changed"]}
    assert {"checkpoint_fingerprint", "checkpoint_uri", "run_id"} <= changed
    int8 = next(m for m in data["entries"] if m["name"] == "cpu/int8")
    assert int8["verdict_changed"] and int8["a"]["verdict"] == "REJECTED"
    size = next(n for n in int8["numbers"] if n["field"] == "size_bytes")
    assert size["a"] is None or size["delta"] is not None
    rep = next(m for m in data["entries"] if m["name"] == "cpu/float32")
    assert any(s["setting"] == "representative_dataset" for s in
               next(m for m in data["entries"] if m["name"] == "edgetpu/int8")["settings"])
    assert rep["ops"] == []
    html = client.get("/diff", params={"a": a, "b": b}).text
    assert "verdict changed" in html and f"{a}</option>" in html
    assert client.get("/api/diff").json()["b"] == synth["versions"][-1]  # defaults: newest two


def test_runs_show_state_stage_durations_and_what_was_published(client, synth):
    data = client.get("/api/runs").json()
    runs = {r["run_id"]: r for r in data["runs"]}
    assert set(runs) >= {"synthetic_0005", "synthetic_0004", "synthetic_0003"}
    r5 = runs["synthetic_0005"]
    assert [s["stage"] for s in r5["stages"]] == ["export", "convert"]
    assert r5["duration_s"] == pytest.approx(42.75)
    assert r5["published"][0]["version"] == synth["versions"][-1]
    assert r5["rejected"][0]["reasons"] == ["the check task failed: ValidationFailed: boom"]
    assert runs["synthetic_0004"]["stages"] == [] and runs["synthetic_0004"]["duration_s"] is None
    assert runs["synthetic_0003"]["state"] == "no report"
    html = client.get("/runs").text
    row4 = html.split('data-run="synthetic_0004"')[1].split("</tr>")[0]
    assert row4.rstrip().endswith("<td>-</td>")
    detail = client.get("/runs/synthetic_0005").text
    assert "30.25" in detail and "1024.5" in detail and "peak RSS MB" in detail
    assert "- (this report records no stage durations)" in client.get("/runs/synthetic_0004").text
    # the DAG run tab passes Airflow's own run id; the store keeps its safe form
    assert client.get("/api/runs/synthetic:0005").json()["run_id"] == "synthetic_0005"


# --------------------------------------------------------------------------------------------
# caching
# --------------------------------------------------------------------------------------------
def test_manifests_are_read_once_and_a_new_release_shows_up(tmp_path):
    from fastapi.testclient import TestClient

    from include.dashboard.app import create_app
    from include.dashboard.reader import StoreReader
    from include.dashboard.synthetic import START, make_releases

    store_dir = str(tmp_path / "store")
    make_releases(store_dir, 3)
    now = [0.0]
    reader = StoreReader(store_dir, relist_s=3600, pointer_ttl_s=5, clock=lambda: now[0])
    c = TestClient(create_app(reader))
    assert len(c.get("/api/releases").json()["versions"]) == 3
    reads = reader.stats["manifest_reads"]
    lists = reader.stats["lists"]
    for _ in range(3):
        assert c.get("/").status_code == 200 and c.get("/api/releases").status_code == 200
    assert reader.stats["manifest_reads"] == reads == 3 and reader.stats["lists"] == lists
    # A new release: its latest.json move is seen once the pointers are read again.
    make_releases(store_dir, 1, start=START + timedelta(days=30), seed=7)
    assert len(c.get("/api/releases").json()["versions"]) == 3   # pointers still cached
    now[0] += 6
    assert len(c.get("/api/releases").json()["versions"]) == 4
    assert reader.stats["manifest_reads"] == 4                    # only the new one read


# --------------------------------------------------------------------------------------------
# safety
# --------------------------------------------------------------------------------------------
BAD = ["..", "../..", "../../etc/passwd", "/etc/passwd", "%2e%2e", "..%2f..%2fetc%2fpasswd",
       "a/../../outside.txt", "..\\..\\etc", "%2Fetc%2Fpasswd", ".hidden", "runs/../../outside.txt"]


def _bad_requests(synth) -> list[str]:
    v = synth["versions"][-1]
    urls = []
    for bad in BAD:
        urls += [f"/?model={bad}", f"/api/releases?model={bad}", f"/releases/{bad}",
                 f"/api/releases/{bad}", f"/releases/{v}?model={bad}",
                 f"/trends?variant={bad}", f"/api/trends?precision={bad}",
                 f"/diff?a={bad}&b={v}", f"/api/diff?a={v}&b={bad}", f"/runs/{bad}",
                 f"/api/runs/{bad}", f"/runs?dag_id={bad}", f"/?dag_id={bad}",
                 f"/files/{bad}", f"/files/mobiledet/{bad}", f"/files/runs/{bad}",
                 f"/static/{bad}", f"/static/..%2f__init__.py"]
    return urls


def _raw_get(server, path: str) -> tuple[int, str]:
    """GET `path` exactly as written (no client-side '..' folding, unlike browsers and httpx)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_no_parameter_reaches_outside_the_store(client, synth):
    from browser import DashboardServer

    with DashboardServer(client.app) as server:
        for url in _bad_requests(synth):
            status, body = _raw_get(server, url)
            assert status in (400, 404, 422), (url, status)
            assert "root:" not in body and "outside-the-store" not in body, url
            assert "include.dashboard" not in body and "Traceback" not in body, url
        # inside the store, only model folders and runs/ are served
        assert _raw_get(server, "/files/mobiledet/latest.json")[0] == 200
        assert _raw_get(server, "/files/claims/abc.json")[0] == 404
        assert _raw_get(server, "/files/mobiledet")[0] == 404


def test_credentials_and_connection_extras_are_never_shown(client, synth):
    urls = ["/", "/api/releases", "/trends", "/api/trends", f"/releases/{synth['secret_version']}",
            f"/api/releases/{synth['secret_version']}", f"/diff?a={synth['secret_version']}",
            f"/api/diff?a={synth['secret_version']}", "/runs", "/api/runs",
            "/runs/synthetic_0005", "/api/runs/synthetic_0005",
            f"/files/mobiledet/{synth['secret_version']}/manifest.json",
            "/files/runs/synthetic_0005/report.json"]
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200, url
        for secret in SECRETS:
            assert secret not in r.text, (url, secret)
    lineage = client.get(f"/api/releases/{synth['secret_version']}").json()["lineage"]
    assert lineage["checkpoint_uri"] == "s3://***:***@bucket/ckpt"
    assert lineage["connection"]["extra"] == "***"


def _snapshot(folder: Path) -> dict:
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(folder))] = (path.is_dir(), st.st_mtime_ns, st.st_size,
                                              None if path.is_dir() else
                                              hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def test_read_only_every_route_is_get_and_the_store_is_unchanged(client, synth):
    from fastapi.routing import APIRoute

    routes = [r for r in client.app.routes if isinstance(r, APIRoute)]
    assert len(routes) == 18   # + /checkpoints, /history and their JSON twins: GET too
    assert all(r.methods <= {"GET", "HEAD"} for r in routes)
    before = _snapshot(synth["store_dir"])
    v = synth["versions"][-1]
    urls = ["/", "/api/releases", "/trends", "/api/trends", f"/releases/{v}",
            f"/api/releases/{v}", "/diff", "/api/diff", "/runs", "/api/runs",
            "/runs/synthetic_0005", "/api/runs/synthetic_0005", f"/files/{synth['picture_key']}",
            "/static/dashboard.css", "/checkpoints", "/api/checkpoints", "/history",
            "/api/history", *_bad_requests(synth)]
    for url in urls:
        client.get(url)
        for method in ("post", "put", "patch", "delete"):
            assert getattr(client, method)(url.split("?")[0]).status_code in (404, 405), url
    assert _snapshot(synth["store_dir"]) == before


def test_responses_need_nothing_from_the_internet(client, synth):
    for url in ["/", "/trends", f"/releases/{synth['versions'][-1]}", "/diff", "/runs"]:
        r = client.get(url)
        assert "default-src 'none'" in r.headers["content-security-policy"]
        refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert refs and all(ref.startswith(("/", "#")) for ref in refs), url


# --------------------------------------------------------------------------------------------
# the CLI verb with a real uvicorn
# --------------------------------------------------------------------------------------------
def test_cli_dashboard_serves_the_store_with_uvicorn(synth):
    port = free_port()
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "mobiledet") if
                             (REPO / ".venv" / "bin" / "mobiledet").exists() else "mobiledet",
                             "dashboard", "--store", str(synth["store_dir"]), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=REPO)
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/api/releases", 90) == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/releases", timeout=10) as r:
            versions = [v["version"] for v in json.load(r)["versions"]]
        assert versions[0] == synth["versions"][-1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert "Releases of mobiledet" in r.read().decode()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out = proc.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate(timeout=10)[0]
    assert "read-only, no login" in out


# --------------------------------------------------------------------------------------------
# the Airflow plugin in a real api-server
# --------------------------------------------------------------------------------------------
def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


@pytest.fixture
def api_server(airflow_db, synth, tmp_path):
    """`airflow api-server` on 127.0.0.1 with this repo's plugins folder, the synthetic store,
    and the simple auth manager with one viewer (password file written here)."""
    port = free_port()
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"ops": "ops-test-password"}))
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "MOBILEDET_STORE": str(synth["store_dir"]),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ops:viewer",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__API_AUTH__JWT_SECRET": "dashboard-test-secret-" + "x" * 32,
           "AIRFLOW__API__EXPOSE_CONFIG": "False"}
    log = tmp_path / "api-server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("airflow")), "api-server",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_http(f"{base}/api/v2/monitor/health", 180)
        except TimeoutError:
            pytest.fail("api-server did not start: " + log.read_text()[-3000:])
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_plugin_in_the_api_server_needs_an_airflow_login(api_server, synth):
    v = synth["versions"][-1]
    routes = ["/", "/api/releases", "/trends", f"/releases/{v}", "/diff", "/runs",
              "/runs/synthetic_0005", "/api/runs", f"/files/{synth['picture_key']}",
              "/static/dashboard.css"]
    for route in routes:
        status, _ = _get(f"{api_server}/mobiledet{route}")
        assert status == 401, (route, status)
        status, _ = _get(f"{api_server}/mobiledet{route}",
                         {"Authorization": "Bearer not-a-valid-token"})
        assert status in (401, 403), (route, status)
    forged = _forged_token()
    assert _get(f"{api_server}/mobiledet/api/releases", {"Authorization": f"Bearer {forged}"}
                )[0] in (401, 403)
    req = urllib.request.Request(f"{api_server}/auth/token", method="POST",
                                 data=json.dumps({"username": "ops",
                                                  "password": "ops-test-password"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        token = json.load(r)["access_token"]
    for route in routes:
        status, body = _get(f"{api_server}/mobiledet{route}",
                            {"Authorization": f"Bearer {token}"})
        assert status == 200, (route, status, body[:300])
    status, body = _get(f"{api_server}/mobiledet/api/releases",
                        {"Authorization": f"Bearer {token}"})
    assert json.loads(body)["versions"][0]["version"] == v
    # the UI's way: the JWT in the _token cookie; links are under the mount prefix
    status, body = _get(f"{api_server}/mobiledet/", {"Cookie": f"_token={token}"})
    assert status == 200 and f'href="/mobiledet/releases/{v}"' in body
    status, body = _get(f"{api_server}/api/v2/plugins", {"Authorization": f"Bearer {token}"})
    plugin = next(p for p in json.loads(body)["plugins"] if p["name"] == "mobiledet_dashboard")
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/mobiledet"
    assert {(x["destination"], x["href"]) for x in plugin["external_views"]} == {
        ("nav", "/mobiledet/"), ("dag", "/mobiledet/?dag_id={DAG_ID}"),
        ("dag_run", "/mobiledet/runs/{RUN_ID}")}


def _forged_token() -> str:
    """A JWT with the right shape signed with another key: must be refused."""
    import jwt

    return jwt.encode({"sub": "ops", "role": "admin", "aud": "apache-airflow"}, "w" * 64,
                      algorithm="HS512")


# --------------------------------------------------------------------------------------------
# a real pipeline run (shared with the browser tests)
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dashboard_reads_a_real_pipeline_run(tmp_path_factory, airflow_db):
    from fastapi.testclient import TestClient

    from include.dashboard.app import create_app

    built = pipeline_store(tmp_path_factory)
    c = TestClient(create_app(str(built["store_dir"])))
    data = c.get("/api/releases").json()
    assert [r["version"] for r in data["versions"]] == [built["version"],
                                                       *reversed(built["earlier"])]
    row = data["versions"][0]
    assert row["cells"]["edgetpu/float32"]["state"] == "published"
    assert row["cells"]["edgetpu/int8"]["state"] == "rejected"
    assert any("DEQUANTIZE" in r for r in row["cells"]["edgetpu/int8"]["reasons"])
    detail = c.get(f"/api/releases/{built['version']}").json()
    by = {d["name"]: d for d in detail["entries"]}
    f32, int8 = by["edgetpu/float32"], by["edgetpu/int8"]
    assert f32["converter"]["settings"]["allow_custom_ops"] is True
    assert f32["ops"] and f32["op_count"] == sum(f32["ops"].values())
    assert f32["validation"]["success"] is True
    assert len(f32["pictures"]) == 3 and all(p.endswith(".png") for p in f32["pictures"])
    assert int8["edgetpu_table"]["source"] == "compiler"
    assert any(r["operator"] == "DEQUANTIZE" and not r["mapped"]
               for r in int8["edgetpu_table"]["rows"])
    assert int8["ops"] and int8["converter"]["settings"]["inference_input_type"]
    run = c.get(f"/api/runs/{built['run_id']}").json()
    assert run["state"] == "success, with rejections"
    assert run["published"][0]["version"] == built["version"]
    # one row per task, named by task and model, with where its time went
    assert run["stages"] and all(s["wall_s"] is not None for s in run["stages"])
    converts = [s for s in run["stages"] if s["stage"] == "convert"]
    assert {s["task_id"] for s in converts} == {"model.convert"}
    assert sorted(s["name"] for s in converts) == sorted(by)   # edgetpu/float32, edgetpu/int8
    assert all(s["parts"] and s["parts"][0]["wall_s"] >= s["parts"][-1]["wall_s"]
               for s in converts)
    totals = {t["stage"]: t for t in run["stage_totals"]}
    assert totals["convert"]["tasks"] == len(converts)
    assert totals["convert"]["wall_s"] == pytest.approx(sum(s["wall_s"] for s in converts))
    page = c.get(f"/runs/{built['run_id']}").text
    assert "edgetpu/int8" in page.split('id="stages"')[1] and "model.convert" in page


# --------------------------------------------------------------------------------------------
# S3 and an empty store
# --------------------------------------------------------------------------------------------
def test_an_s3_store_shows_the_same_pages(s3_bucket, tmp_path):
    from fastapi.testclient import TestClient

    from include.dashboard.app import create_app
    from include.dashboard.synthetic import make_releases
    from include.store import open_store

    uri = f"s3://{s3_bucket}/models"
    versions = make_releases(uri, 2, pairs=(("edgetpu", "float32"), ("edgetpu", "int8")),
                             reject_every=2)
    store = open_store(uri)
    store.write_json("runs/synthetic_0001/report.json", {"run_id": "synthetic_0001",
                                                         "models": [], "published": []})
    c = TestClient(create_app(uri))
    data = c.get("/api/releases").json()
    assert [r["version"] for r in data["versions"]] == list(reversed(versions))
    assert data["versions"][0]["cells"]["edgetpu/int8"]["state"] == "rejected"
    assert data["pointers"]["pairs"]["edgetpu/int8"] == versions[0]
    detail = c.get(f"/api/releases/{versions[1]}").json()
    assert detail["entries"][0]["ops"]["CONV_2D"] == 60
    assert [r["run_id"] for r in c.get("/api/runs").json()["runs"]] == ["synthetic_0001"]
    for url in ("/", "/trends", f"/releases/{versions[1]}", "/diff", "/runs"):
        assert c.get(url).status_code == 200, url


def test_an_empty_or_missing_store_says_so(tmp_path):
    from fastapi.testclient import TestClient

    from include.dashboard.app import create_app

    c = TestClient(create_app(str(tmp_path / "not-there")))
    assert "No release in this store yet." in c.get("/").text
    assert c.get("/api/releases").json()["versions"] == []
    assert c.get("/api/runs").json()["runs"] == []
    assert "no runs in this store yet" in c.get("/runs").text
    assert c.get("/diff").status_code == 404
    assert not (tmp_path / "not-there").exists()


def test_a_symlink_inside_the_store_to_a_file_outside_is_not_served(tmp_path):
    """`ln -s /etc/passwd` under a model folder: the standalone dashboard served it."""
    from fastapi.testclient import TestClient

    from include.dashboard.app import create_app
    from include.dashboard.reader import StoreReader
    from include.dashboard.synthetic import make_releases

    store_dir = tmp_path / "store"
    make_releases(str(store_dir), 1)
    secret = tmp_path / "outside-the-store.txt"
    secret.write_text("root:x:0:0")
    (store_dir / "mobiledet" / "passwd").symlink_to(secret)
    (store_dir / "mobiledet" / "inside.json").symlink_to(store_dir / "mobiledet" / "latest.json")
    with TestClient(create_app(StoreReader(str(store_dir)))) as client:
        bad = client.get("/files/mobiledet/passwd")
        assert bad.status_code == 404 and "root:" not in bad.text
        assert client.get("/files/mobiledet/inside.json").status_code == 200


def test_the_reader_cache_stays_bounded_whatever_run_ids_are_asked(tmp_path):
    """20,000 distinct run ids asked for: the per-key cache used to grow by one entry each."""
    import uuid

    from include.dashboard.reader import TIMED_ENTRIES, StoreReader
    from include.dashboard.synthetic import make_releases

    make_releases(str(tmp_path / "store"), 1)
    reader = StoreReader(str(tmp_path / "store"))
    for _ in range(20000):
        reader.run_summary("r" + uuid.uuid4().hex)
    assert len(reader._timed) <= TIMED_ENTRIES
