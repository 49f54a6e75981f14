"""Airflow's real components, started by include/deploy/components.py.

The fast tests check the pieces (one environment whose settings agree, the login, stopping a
process group by id); the slow one runs `mobiledet serve` (SQLite, LocalExecutor) and triggers
the DAG on it over the REST API with `mobiledet run --airflow`. The production shape (PostgreSQL,
Redis, a Celery worker, S3, runs started by checkpoint landings) is tests/test_landing_stack.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from include.deploy import processes
from include.deploy.client import AirflowClient
from include.deploy.components import AirflowDeployment, airflow_executable
from include.deploy.environment import AirflowSettings, airflow_environment, ensure_password
from include.deploy.processes import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "mobiledet_convert.py"
FAST = {"calibration_count": 4, "benchmark_runs": 3, "benchmark_warmup": 1, "threads": 1,
        "gates.min_map": 0}   # tiny one-step checkpoints detect nothing: the floor off
RUN_TIMEOUT_S = 360


# --------------------------------------------------------------------------------------------
# Fast: the pieces
# --------------------------------------------------------------------------------------------

def test_environment_settings_agree(tmp_path):
    settings = AirflowSettings(home=tmp_path, port=18123, executor="celery",
                               sql_alchemy_conn="postgresql+psycopg2://u:p@127.0.0.1:5432/a",
                               broker_url="redis://127.0.0.1:6379/0",
                               extra_env={"MOBILEDET_STORE": "s3://models/mobiledet"})
    env = airflow_environment(settings, base={"AIRFLOW__CORE__EXECUTOR": "KubernetesExecutor"})
    assert env["AIRFLOW_HOME"] == str(tmp_path.resolve())
    assert env["AIRFLOW__API__PORT"] == "18123"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == \
        "db+postgresql+psycopg2://u:p@127.0.0.1:5432/a"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 32
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] != "8793"
    assert env["MOBILEDET_STORE"] == "s3://models/mobiledet"
    assert "127.0.0.1" in env["NO_PROXY"]
    local = airflow_environment(AirflowSettings(home=tmp_path), base={})
    assert local["AIRFLOW__CORE__EXECUTOR"] == "include.deploy.executors.PreloadingLocalExecutor"
    assert local["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:////")


def test_bad_settings_name_the_fix(tmp_path):
    from include.errors import ConfigError

    with pytest.raises(ConfigError, match="broker"):
        AirflowSettings(home=tmp_path, executor="celery",
                        sql_alchemy_conn="postgresql://x/y").validate()
    with pytest.raises(ConfigError, match="SQLite"):
        AirflowSettings(home=tmp_path, executor="celery", broker_url="redis://h/0").validate()
    with pytest.raises(ConfigError, match="local or celery"):
        AirflowSettings(home=tmp_path, executor="kubernetes").validate()


def test_password_file_is_kept(tmp_path):
    settings = AirflowSettings(home=tmp_path)
    first = ensure_password(settings)
    assert json.loads(settings.passwords_file.read_text()) == {"admin": first}
    assert ensure_password(AirflowSettings(home=tmp_path)) == first
    assert ensure_password(AirflowSettings(home=tmp_path, password="given")) == "given"
    assert json.loads(settings.passwords_file.read_text()) == {"admin": "given"}


def test_stop_kills_a_group_that_ignores_sigterm(tmp_path):
    # A parent that ignores SIGTERM, with a child in its own session (outside the group).
    code = textwrap.dedent("""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                 start_new_session=True)
        print(child.pid, flush=True)
        time.sleep(120)
    """)
    proc = ManagedProcess(name="stubborn", argv=[sys.executable, "-c", code],
                          log_path=tmp_path / "stubborn.log", stop_timeout=2).start()
    for _ in range(100):
        if proc.log_path.read_text().strip():
            break
        time.sleep(0.1)
    child = int(proc.log_path.read_text().split()[0])
    started = time.monotonic()
    proc.stop()
    assert time.monotonic() - started < 15
    assert proc.popen.returncode == -signal.SIGKILL
    assert proc.leftovers() == []
    assert not processes.alive(child)


def test_serve_and_run_arguments():
    import argparse

    from include.deploy import run_commands, serve_commands

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    serve_commands.register(sub)
    args = parser.parse_args(["serve", "--executor", "celery", "--port", "8099"])
    assert (args.executor, args.port, args.func) == ("celery", 8099, serve_commands.cmd_serve)
    run = argparse.ArgumentParser()
    run_commands.add_airflow_arguments(run)
    args = run.parse_args(["--airflow", "http://127.0.0.1:8080", "--user", "u"])
    assert (args.airflow, args.user) == ("http://127.0.0.1:8080", "u")


def test_serve_exports_the_pipeline_settings(tmp_path, monkeypatch):
    from include.errors import ConfigError
    from include.deploy.run_commands import remote_conf
    from include.deploy.serve_commands import pipeline_env

    monkeypatch.chdir(tmp_path)
    env = pipeline_env(None, None, None)
    assert env["MOBILEDET_CHECKPOINT_STORE"] == str(tmp_path / "checkpoints")
    assert (tmp_path / "checkpoints").is_dir()           # created when missing
    assert env["MOBILEDET_STORE"] == str(tmp_path / "mobiledet-store")
    assert "MOBILEDET_DATA" not in env
    (tmp_path / "coco").mkdir()
    env = pipeline_env("s3://checkpoints/", "coco", "s3://models/mobiledet")
    assert env == {"MOBILEDET_CHECKPOINT_STORE": "s3://checkpoints/",
                   "MOBILEDET_DATA": str(tmp_path / "coco"),
                   "MOBILEDET_STORE": "s3://models/mobiledet"}
    with pytest.raises(ConfigError, match="--data"):
        pipeline_env(None, "missing", None)
    assert remote_conf({"checkpoints": ["coco", "s3://b/c"], "data": "coco", "store": None,
                        "overrides": {}}) == \
        {"checkpoints": [str(tmp_path / "coco"), "s3://b/c"], "data": str(tmp_path / "coco")}


# --------------------------------------------------------------------------------------------
# Slow: the whole production shape
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    from models import make_tiny_inputs

    return make_tiny_inputs(tmp_path_factory.mktemp("stack"))


def upload_tree(client, bucket: str, prefix: str, folder: Path) -> int:
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")
            count += 1
    return count


def task_logs(deployment: AirflowDeployment, ti: dict, chars: int = 3000) -> dict:
    """The ends of a task instance's log files (AIRFLOW_HOME/logs/dag_id=.../task_id=...)."""
    folder = deployment.log_dir / f"dag_id={ti['dag_id']}" / f"run_id={ti['dag_run_id']}" / \
        f"task_id={ti['task_id']}"
    return {str(p.relative_to(deployment.log_dir)): processes.tail(p, chars)
            for p in sorted(folder.rglob("*.log"))}


def test_airflow_cli_sees_the_stack_settings(tmp_path):
    """`airflow config get-value` in the deployment's environment reads the agreed settings."""
    settings = AirflowSettings(home=tmp_path, port=18555)
    env = airflow_environment(settings, base=dict(os.environ))
    out = subprocess.run([airflow_executable(), "config", "get-value", "core",
                          "execution_api_server_url"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.strip().splitlines()[-1] == "http://127.0.0.1:18555/execution/"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_runs_the_dag_for_run_airflow_and_stops_on_sigterm(tmp_path, tiny_inputs):
    """`mobiledet serve` (SQLite + LocalExecutor) exports the pipeline settings to every
    component, `run --airflow URL` (run_on_airflow) runs the DAG there, SIGTERM stops all."""
    import argparse

    from include.deploy.run_commands import run_on_airflow

    root, ckpt = tiny_inputs
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy2(DAG_FILE, dags / DAG_FILE.name)
    port = free_port()
    out = tmp_path / "serve.out"
    argv = [str(Path(sys.executable).with_name("mobiledet")), "serve", "--home",
            str(tmp_path / "airflow"), "--dags-folder", str(dags), "--port", str(port),
            "--checkpoints", str(tmp_path / "landing"), "--data", str(root / "data"),
            "--store", str(tmp_path / "default-store"), "--password", "serve-test",
            "--max-seconds", "400"]
    serve = ManagedProcess(name="serve", argv=argv, log_path=out, cwd=tmp_path,
                           stop_signal=signal.SIGTERM, stop_timeout=60).start()
    try:
        for _ in range(240):
            text = out.read_text()
            if "[serve] pids:" in text or not serve.running():
                break
            time.sleep(0.5)
        assert "[serve] pids:" in text, text[-3000:]
        assert f"http://127.0.0.1:{port}/  login: admin / serve-test" in text
        pids = dict(p.split("=") for p in text.split("[serve] pids: ")[1].splitlines()[0]
                    .split(", "))
        assert set(pids) == {"api-server", "scheduler", "dag-processor", "triggerer"}
        assert (tmp_path / "landing").is_dir()
        # (Airflow's components rewrite their /proc/<pid>/environ with setproctitle, so the
        # settings are checked in what serve printed, and through a run that uses the default
        # store: conf below has no "store", so MOBILEDET_STORE must reach the task processes.)
        for key, value in (("MOBILEDET_CHECKPOINT_STORE", tmp_path / "landing"),
                           ("MOBILEDET_DATA", root / "data"),
                           ("MOBILEDET_STORE", tmp_path / "default-store")):
            assert f"[serve] {key}={value}\n" in text

        args = argparse.Namespace(airflow=f"http://127.0.0.1:{port}", user="admin",
                                  password="serve-test", timeout=RUN_TIMEOUT_S, json=False)
        conf = {"checkpoints": [str(ckpt)], "data": str(root / "data"),
                "store": None, "precisions": ["float32"], "overrides": FAST, "variants": None}
        assert run_on_airflow(args, conf) == 0
        assert list((tmp_path / "default-store").rglob("manifest.json"))
        # the LocalExecutor's workers imported TensorFlow before forking the tasks
        # (include/deploy/executors.py): no task paid for it
        [report] = (tmp_path / "default-store").rglob("report.json")
        tf_imports = [p["wall_s"] for s in json.loads(report.read_text())["stages"]
                      for p in s.get("parts") or [] if p["name"] == "tensorflow import"]
        assert tf_imports and max(tf_imports) < 1.0, tf_imports
        # the heavy tasks ran in the pool serve made, one slot per LocalExecutor slot; the
        # light ones in default_pool
        client = AirflowClient(f"http://127.0.0.1:{port}", "admin", "serve-test")
        assert client.call("GET", "pools/mobiledet")["slots"] == max(2, os.cpu_count() or 2)
        [run] = client.runs("mobiledet_convert")
        pools = {ti["task_id"]: ti["pool"]
                 for ti in client.task_instances("mobiledet_convert", run["dag_run_id"])}
        assert pools["export"] == pools["model.convert"] == pools["model.check"] == "mobiledet"
        assert pools["plan"] == pools["gate"] == "default_pool", pools
        # the execution API was warmed up at start (AirflowDeployment.execution_api_healthy),
        # so its ~4 s first-request set-up fell on no task's start call
        access = [line for line in (tmp_path / "airflow" / "logs" / "api-server.log")
                  .read_text().splitlines() if "request finished" in line]
        first_run = next(i for i, line in enumerate(access)
                         if "path=/execution/task-instances/" in line and "/run " in line)
        assert any("path=/execution/health " in line for line in access[:first_run]), \
            access[:first_run]

        os.kill(serve.pid, signal.SIGTERM)
        serve.popen.wait(90)
        assert serve.popen.returncode == 0, out.read_text()[-3000:]
        assert "[serve] stopped:" in out.read_text()
        for name, pid in pids.items():
            assert not processes.alive(int(pid)), name
        assert not processes.port_open("127.0.0.1", port)
    finally:
        serve.stop()
