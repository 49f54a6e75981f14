"""Helpers for the dashboard tests: a real headless Chromium, a real uvicorn server, and a
store filled by a real pipeline run of tiny models plus synthetic earlier releases.

* Chromium is Debian's ``chromium`` with its matching ``chromium-driver``; when they are
  missing and the tests run as root, `ensure_chromium` installs them with apt-get (bounded
  time), else the browser tests are skipped with the command to run. Selenium drives it
  through ``/usr/bin/chromedriver`` (no driver download: Selenium Manager is told to stay
  offline).
* `DashboardServer` runs the dashboard app in uvicorn on 127.0.0.1 in a background thread.
* `pipeline_store` runs the mobiledet_convert DAG once per test session (cached here, so the
  dashboard's two test modules share it).
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1400,1000")
APT_TIMEOUT_S = 900
FIXTURES = Path(__file__).parent / "fixtures" / "edgetpu"
FAST = {"calibration_count": 4, "benchmark_runs": 3, "benchmark_warmup": 1, "threads": 2,
        "gates.min_map": 0}   # tiny one-step checkpoints detect nothing: the floor off
SYNTHETIC_EARLIER = 3


# --------------------------------------------------------------------------------------------
# Chromium
# --------------------------------------------------------------------------------------------
def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver when missing (as root), else skip."""
    if os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} is missing; install them with "
                    "`apt-get install chromium chromium-driver` (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium",
                 "chromium-driver"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=APT_TIMEOUT_S)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed: {proc.stderr[-1500:]}")
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} / {CHROMEDRIVER} are missing")


def start_chrome(user_data_dir: Path):
    """A Selenium session on headless Chromium with a fresh profile; browser logs kept."""
    ensure_chromium()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


def console_errors(driver) -> list[str]:
    """Console messages of level SEVERE since the last call (JS errors, failed loads, CSP)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


# --------------------------------------------------------------------------------------------
# A real uvicorn server for the app
# --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout_s: float = 60.0, headers: dict | None = None) -> int:
    """Poll `url` until it answers (any HTTP status); returns the status. Bounded."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError as exc:
            last = exc
            time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s ({last})")


class DashboardServer:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a thread (context manager)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, name="dashboard-uvicorn",
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn stopped while starting")
            time.sleep(0.05)
        if not self.server.started:
            raise TimeoutError("uvicorn did not start within 30 s")
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=15)


# --------------------------------------------------------------------------------------------
# A store from a real pipeline run
# --------------------------------------------------------------------------------------------
def fake_compiler(folder: Path) -> Path:
    """An edgetpu_compiler stand-in that answers with the recorded 'not all operations are
    supported' run (two DEQUANTIZE ops on the CPU), so the int8 model is rejected by the
    Edge TPU gate with the compiler's own operator table."""
    exe = folder / "edgetpu_compiler"
    exe.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import shutil, sys
        from pathlib import Path
        argv = sys.argv[1:]
        out_dir = Path(argv[argv.index("-o") + 1])
        model = Path(argv[-1])
        compiled = model.stem + "_edgetpu"
        shutil.copyfile(model, out_dir / (compiled + ".tflite"))
        fixtures = Path({str(FIXTURES)!r})
        (out_dir / (compiled + ".log")).write_text(
            (fixtures / "not_all_supported_edgetpu.log").read_text())
        stdout = (fixtures / "not_all_supported_stdout.txt").read_text()
        print(stdout.replace("X_edgetpu", compiled).replace("X.tflite", model.name), end="")
        """))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


_PIPELINE: dict = {}


def pipeline_store(tmp_path_factory) -> dict:
    """A store with synthetic earlier releases, then one real mobiledet_convert run of a tiny
    EdgeTPU checkpoint (float32 published, int8 rejected by the Edge TPU gate), whose
    published model carries the detection pictures the check stage drew. Built once."""
    if _PIPELINE:
        return _PIPELINE
    from models import make_checkpoint

    from include.dashboard.synthetic import make_releases
    from include.data.synth import synthesize
    from include.deploy.airflow_env import run_dag
    from include.store import open_store

    root = tmp_path_factory.mktemp("dashboard-pipeline")
    store_dir = root / "store"
    earlier = make_releases(str(store_dir), SYNTHETIC_EARLIER,
                            pairs=(("edgetpu", "float32"), ("edgetpu", "int8")),
                            reject_every=2, run_prefix="earlier")
    synthesize(root / "data", 10, size=96, seed=0, val_fraction=0.4)
    ckpt = make_checkpoint(root / "edgetpu-float", variant="edgetpu")
    conf = {"checkpoints": [str(ckpt)], "data": str(root / "data"), "store": str(store_dir),
            "precisions": ["float32", "int8"], "overrides": dict(FAST)}
    before = os.environ.get("EDGETPU_COMPILER")
    os.environ["EDGETPU_COMPILER"] = str(fake_compiler(root))
    try:
        started = time.perf_counter()
        result = run_dag(conf)
        took = time.perf_counter() - started
    finally:
        if before is None:
            os.environ.pop("EDGETPU_COMPILER", None)
        else:
            os.environ["EDGETPU_COMPILER"] = before
    store = open_store(str(store_dir))
    [published] = result["report"]["published"]
    version = published["version"]
    manifest = store.read_json(f"mobiledet/{version}/manifest.json")
    # the check stage draws the detection pictures and publish puts them in the release
    pictures = [f["uri"] for entry in manifest["published"]
                for name, f in sorted(entry["files"].items()) if name.startswith("picture-")]
    assert pictures, "the release has no detection pictures"
    _PIPELINE.update(root=root, store_dir=store_dir, store=store, version=version,
                     manifest=manifest, earlier=earlier, run_id=result["run_id"],
                     report=result["report"], pictures=pictures, run_seconds=took)
    return _PIPELINE
