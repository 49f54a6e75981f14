"""A device task runs on the Celery worker its phone is plugged into, and nothing else does.

The production shape on this machine (tests/stack.py: PostgreSQL, Redis; the real scheduler,
dag-processor, triggerer, api-server, include/deploy/components.py) with two Celery workers:
the deployment's own, on the default queue, and a second one listening only on
`device-pixel4`, the queue of the config's one phone. Only the device worker has `adb` on its
PATH (the stand-in, tests/adb_standin.py, answering with a recorded benchmark_model log), and
it reports its own hostname to Airflow (core.hostname_callable), so each task instance says
which worker ran it.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import pytest

from include.deploy.components import AirflowDeployment, airflow_executable
from include.deploy.environment import AirflowSettings
from include.deploy.processes import ManagedProcess, free_port
from stack import postgres, redis  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"
STANDIN = Path(__file__).parent / "adb_standin.py"
CONVERT = "mobiledet_convert"
DEVICE_HOST = "device-worker-pixel4"
RUN_TIMEOUT_S = 480
FAST = {"calibration_count": 4, "benchmark_runs": 3, "benchmark_warmup": 1, "threads": 1,
        "gates.min_map": 0}
CPU_MS = 249.684   # "avg=249684" in mi11_tf24_cpu_fp32.txt


def _wait_for_text(path: Path, needle: str, proc: ManagedProcess, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        assert proc.running(), proc.log_tail(3000)
        time.sleep(1.0)
    raise AssertionError(f"{needle!r} not in {path} within {seconds:.0f} s:\n"
                         f"{proc.log_tail(3000)}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from models import make_tiny_inputs

    root = tmp_path_factory.mktemp("device-celery")
    root, ckpt = make_tiny_inputs(root)
    # the phone: the stand-in adb, in a folder only the device worker has on its PATH
    phone = root / "phone-bin"
    (phone / "phone").mkdir(parents=True)
    adb = phone / "adb"
    adb.write_text(f"#!{sys.executable}\n" + STANDIN.read_text())
    adb.chmod(adb.stat().st_mode | stat.S_IXUSR)
    (phone / "scenario.json").write_text(json.dumps({
        "state": "device", "props": {"ro.product.model": "Pixel 4",
                                     "ro.build.version.release": "13"},
        "outputs": {"--use_xnnpack=false": str(FIXTURES / "mi11_tf24_cpu_fp32.txt")}}))
    binary = root / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF stand-in benchmark_model")
    (root / "config.json").write_text(json.dumps({
        "precisions": {"edgetpu": {"float": ["float32"]}},
        "devices": [{"name": "pixel4", "serial": "PIX4SERIAL", "delegates": ["cpu"],
                     "benchmark_binary": str(binary), "timeout_s": 60}]}))
    # what the device worker reports as its hostname
    hostmod = root / "hostmod"
    hostmod.mkdir()
    (hostmod / "device_worker_host.py").write_text(
        f"def hostname():\n    return {DEVICE_HOST!r}\n")
    return {"root": root, "ckpt": ckpt, "phone": phone, "hostmod": hostmod}


@pytest.fixture(scope="module")
def deployment(postgres, redis, setup, tmp_path_factory):  # noqa: F811
    root = setup["root"]
    home = tmp_path_factory.mktemp("device-celery-airflow")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy2(REPO / "dags" / f"{CONVERT}.py", dags / f"{CONVERT}.py")
    settings = AirflowSettings(
        home=home / "airflow", dags_folder=dags, port=free_port(), executor="celery",
        sql_alchemy_conn=postgres.sqlalchemy_url, broker_url=redis.url, worker_concurrency=2,
        parallelism=4, password="device-test",
        extra_env={"MOBILEDET_CHECKPOINT_STORE": "off",
                   "MOBILEDET_DATA": str(root / "data"),
                   "MOBILEDET_STORE": str(root / "store"),
                   "MOBILEDET_CONFIG": str(root / "config.json"),
                   "MOBILEDET_TASK_RETRIES": "0"})
    dep = AirflowDeployment(settings)
    device_worker = None
    try:
        dep.start(timeout=300)
        env = dict(dep.env)
        env["PATH"] = f"{setup['phone']}{os.pathsep}{env.get('PATH', os.environ['PATH'])}"
        env["PYTHONPATH"] = f"{env.get('PYTHONPATH', '')}{os.pathsep}{setup['hostmod']}"
        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "device_worker_host.hostname"
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
        device_worker = ManagedProcess(
            name="device-worker",
            argv=[airflow_executable(), "celery", "worker", "--queues", "device-pixel4",
                  "--concurrency", "1", "--celery-hostname", "pixel4@%h",
                  "--without-mingle", "--without-gossip"],
            log_path=dep.log_dir / "device-worker.log", env=env,
            cwd=Path(env["AIRFLOW_HOME"])).start()
        _wait_for_text(device_worker.log_path, " ready.", device_worker, 180)
        client = dep.client()
        client.wait_for_dag(CONVERT, timeout=180)
        client.unpause(CONVERT)
        yield dep, device_worker
    finally:
        if device_worker is not None:
            device_worker.remember_children()
            device_worker.stop()
        dep.stop()


def test_the_device_task_runs_on_the_phones_worker_only(deployment, setup):
    dep, device_worker = deployment
    client = dep.client()
    root = setup["root"]
    conf = {"checkpoints": [str(setup["ckpt"])], "data": str(root / "data"),
            "store": str(root / "store"), "precisions": ["float32"], "overrides": FAST}
    run = client.trigger(CONVERT, conf=conf)
    done = client.wait_for_run(CONVERT, run["dag_run_id"], timeout=RUN_TIMEOUT_S, poll=2.0)
    tis = client.task_instances(CONVERT, run["dag_run_id"])
    by = {(ti["task_id"], ti.get("map_index")): ti for ti in tis}
    assert done["state"] == "success", {k: v["state"] for k, v in by.items()}

    device = by[("model.device_pixel4", 0)]
    assert device["state"] == "success" and device["queue"] == "device-pixel4"
    assert device["hostname"] == DEVICE_HOST
    others = [ti for ti in tis if ti["task_id"] != "model.device_pixel4"
              and ti["state"] == "success"]
    assert {ti["task_id"] for ti in others} >= {"plan", "export", "model.convert",
                                                "model.check", "gate", "publish", "report"}
    assert all(ti["hostname"] != DEVICE_HOST and ti["queue"] != "device-pixel4"
               for ti in others), [(ti["task_id"], ti["hostname"], ti["queue"]) for ti in others]

    # the phone was used (once), and its figure reached the release
    calls = [json.loads(line) for line in
             (setup["phone"] / "calls.jsonl").read_text().splitlines()]
    assert len([c for c in calls if any(a.startswith("--graph=") for a in c)]) == 1
    [manifest] = list((root / "store").rglob("manifest.json"))
    [entry] = json.loads(manifest.read_text())["published"]
    [figure] = entry["device_benchmarks"]
    assert (figure["device"], figure["delegate"], figure["latency_ms"]) == \
        ("pixel4", "cpu", CPU_MS)
    # the device worker's own log shows it took the task
    assert "execute_workload" in device_worker.log_path.read_text(errors="replace")
