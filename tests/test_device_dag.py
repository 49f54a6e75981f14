"""Device benchmarks in the mobiledet_convert DAG, run through Airflow with dag.test().

Two phones are configured (MOBILEDET_CONFIG, read when the DAG file is parsed): `pixel4`
(cpu and gpu) answers with recorded benchmark_model outputs, `oldphone` is offline. Both are
the stand-in adb (tests/adb_standin.py), one folder per serial behind an `adb` on PATH that
picks the phone by `-s SERIAL`. The model is the tiny real checkpoint's float32 conversion.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from models import make_tiny_inputs

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"
STANDIN = Path(__file__).parent / "adb_standin.py"
FAST = {"calibration_count": 4, "benchmark_runs": 3, "benchmark_warmup": 1, "threads": 2,
        "gates.min_map": 0}
PROPS = {"ro.product.model": "Pixel 4", "ro.product.manufacturer": "Google",
         "ro.build.version.release": "13", "ro.build.version.sdk": "33",
         "ro.product.cpu.abi": "arm64-v8a"}
# "count=50 ... avg=249684" and "avg=119375" in the two recorded logs
CPU_MS, GPU_MS = 249.684, 119.375
DISPATCH = """\
import os, sys
argv = sys.argv[1:]
serial = argv[1] if argv[:1] == ["-s"] and len(argv) > 1 else "none"
target = os.path.join(os.path.dirname(os.path.abspath(__file__)), "phones", serial, "adb")
if not os.path.exists(target):
    sys.stderr.write(f"error: device '{serial}' not found\\n")
    sys.exit(1)
os.execv(target, [target] + argv)
"""


def _exe(path: Path, text: str) -> None:
    path.write_text(f"#!{sys.executable}\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_inputs(tmp_path_factory.mktemp("device-dag"))


@pytest.fixture
def phones(tmp_path, monkeypatch):
    """`adb` on PATH, two phones behind it, and the config naming them (MOBILEDET_CONFIG)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _exe(bindir / "adb", DISPATCH)
    scenarios = {
        "PIX4SERIAL": {"state": "device", "props": PROPS, "outputs": {
            "--use_xnnpack=false": str(FIXTURES / "mi11_tf24_cpu_fp32.txt"),
            "--use_gpu=true": str(FIXTURES / "android_gpu_full_delegation_issue43541.txt")}},
        "OLD1SERIAL": {"state": "offline"}}
    for serial, scenario in scenarios.items():
        folder = bindir / "phones" / serial
        (folder / "phone").mkdir(parents=True)
        _exe(folder / "adb", STANDIN.read_text())
        (folder / "scenario.json").write_text(json.dumps(scenario))
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF stand-in benchmark_model")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")

    def config(name: str, **pixel4) -> str:
        path = tmp_path / name
        path.write_text(json.dumps({"devices": [
            {"name": "pixel4", "serial": "PIX4SERIAL", "delegates": ["cpu", "gpu"],
             "benchmark_binary": str(binary), "timeout_s": 60, **pixel4},
            {"name": "oldphone", "serial": "OLD1SERIAL", "delegates": ["cpu"],
             "benchmark_binary": str(binary), "timeout_s": 60}]}))
        return str(path)

    monkeypatch.setenv("MOBILEDET_CONFIG", config("devices.json"))

    def calls(serial: str) -> list[list[str]]:
        log = bindir / "phones" / serial / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() \
            else []

    return {"config": config, "calls": calls}


def _conf(root, ckpt, store, **extra):
    return {"checkpoints": [str(ckpt)], "data": str(root / "data"), "store": store,
            "precisions": ["float32"], "overrides": dict(FAST), **extra}


def _states(run_id: str) -> dict:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == "mobiledet_convert",
                                                 TaskInstance.run_id == run_id).all()
        return {(ti.task_id, ti.map_index): str(ti.state) for ti in tis}


def test_without_devices_the_dag_has_the_same_tasks(monkeypatch):
    from include.deploy.airflow_env import load_dag

    monkeypatch.delenv("MOBILEDET_CONFIG", raising=False)
    assert sorted(load_dag().task_ids) == ["export", "gate", "jobs", "model.check",
                                           "model.convert", "plan", "publish", "report",
                                           "search", "search_jobs"]


def test_device_tasks_figures_gate_and_an_offline_phone(tiny, tmp_path, airflow_db, phones):
    from include.deploy.airflow_env import load_dag, run_dag
    from include.store import open_store

    dag = load_dag()
    task = dag.get_task("model.device_pixel4")
    assert task.queue == "device-pixel4" and task.max_active_tis_per_dag == 1
    assert dag.get_task("model.device_oldphone").queue == "device-oldphone"
    assert "model.check" in task.upstream_task_ids
    assert {"model.device_pixel4", "model.device_oldphone"} <= \
        dag.get_task("gate").upstream_task_ids

    # 1. no device gate: the offline phone fails only its own task; the model is decided and
    #    published with pixel4's figures and "not measured" for the offline one
    root, ckpt = tiny
    store_dir = tmp_path / "store"
    result = run_dag(_conf(root, ckpt, str(store_dir)))
    states = _states(result["run_id"])
    assert states[("model.device_oldphone", 0)] == "failed"
    assert states[("model.device_pixel4", 0)] == "success"
    assert states[("gate", -1)] == states[("publish", -1)] == "success"
    report = result["report"]
    table = report["table"]
    header = table.splitlines()[0]
    assert "host CPU ms" in header and "pixel4 ms" in header and "oldphone ms" in header
    assert f"cpu {CPU_MS:.1f}, gpu {GPU_MS:.1f}" in table and "not measured" in table
    [pub] = report["published"]
    assert pub["status"] == "published"
    store = open_store(str(store_dir))
    manifest = store.read_json(f"mobiledet/{pub['version']}/manifest.json")
    [entry] = manifest["published"]
    figures = {(f["device"], f["delegate"]): f for f in entry["device_benchmarks"]}
    assert set(figures) == {("pixel4", "cpu"), ("pixel4", "gpu"), ("oldphone", "cpu")}
    cpu, gpu, old = figures["pixel4", "cpu"], figures["pixel4", "gpu"], figures["oldphone", "cpu"]
    assert cpu["latency_ms"] == CPU_MS and gpu["latency_ms"] == GPU_MS
    assert cpu["phone"] == "Pixel 4" and cpu["android"] == "13" and cpu["status"] == "ok"
    assert gpu["delegate_applied"] == "gpu" and gpu["fallback"] is None
    assert old["latency_ms"] is None and old["status"] == "not_measured"
    assert "device offline" in old["errors"][0] and "device_oldphone task failed" in \
        old["errors"][0]
    assert entry["metrics"]["device_latency_ms"] == {"pixel4/cpu": CPU_MS,
                                                     "pixel4/gpu": GPU_MS,
                                                     "oldphone/cpu": None}
    checks = {c["name"]: c for c in entry["decision"]["checks"]}
    assert checks["device_latency:pixel4:cpu"]["status"] == "off"
    assert checks["device_latency:pixel4:cpu"]["value"] == pytest.approx(CPU_MS, abs=0.01)
    assert checks["device_latency:oldphone:cpu"]["status"] == "not_measured"
    assert "device offline" in checks["device_latency:oldphone:cpu"]["detail"]
    # the published metrics.json holds them too
    path = entry["path"]
    assert store.read_json(f"mobiledet/{pub['version']}/{path}/metrics.json")["devices"]
    # the phone really got the model and the binary, once per delegate, and its folder went
    runs = [c for c in phones["calls"]("PIX4SERIAL") if any("--graph=" in a for a in c)]
    assert len(runs) == 2
    assert not list((tmp_path / "bin" / "phones" / "PIX4SERIAL" / "phone").rglob("*.tflite"))

    # the dashboard shows a column per device beside the host CPU
    from fastapi.testclient import TestClient

    from include.dashboard.app import create_app

    client = TestClient(create_app(str(store_dir)))
    run = client.get(f"/api/runs/{report['run_id']}").json()
    assert run["device_columns"] == ["pixel4", "oldphone"]
    [m] = run["entries"]
    assert m["device_cells"][0] == f"cpu {CPU_MS:.1f} ms; gpu {GPU_MS:.1f} ms"
    assert m["device_cells"][1].startswith("not measured")
    page = client.get(f"/runs/{report['run_id']}").text
    assert "<th>host CPU ms</th>" in page and '<th class="device">pixel4</th>' in page
    release = client.get(f"/releases/{pub['version']}").text
    assert "Latency by device" in release and "Pixel 4, Android 13" in release

    # 2. a device gate that is exceeded rejects the model, with the figure in the reason
    gated = phones["config"]("gated.json", max_device_latency_ms=200)
    result = run_dag(_conf(root, ckpt, str(tmp_path / "store2"), config=gated))
    report = store_report(tmp_path / "store2", result)
    [model] = report["models"]
    assert not model["passed"]
    reasons = model["decision"]["reasons"]
    assert any(f"{CPU_MS:.2f} ms on pixel4 (cpu) > limit 200.00 ms" in r for r in reasons), \
        reasons
    assert not any("gpu" in r for r in reasons)         # 119.4 ms is within the limit
    assert not any("oldphone" in r for r in reasons)    # not measured, no gate: passes
    assert result["report"]["published"][0]["status"] == "nothing_to_publish"
    assert "too slow on pixel4" in result["report"]["table"]


def store_report(store_dir: Path, result: dict) -> dict:
    from include.store import open_store

    key = result["report"]["report_uri"].split("/store2/", 1)[1]
    return open_store(str(store_dir)).read_json(key)
