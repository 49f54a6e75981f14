"""The production shape, natively: Airflow's real components on PostgreSQL + Redis with a Celery
worker, S3 served over HTTP by moto, and the mobiledet_convert DAG triggered over the REST API.

The fast tests check the pieces of include/pipeline/services.py (one environment whose settings
agree, the login, stopping a process group by id). The slow one runs a whole DAG run:

    PostgreSQL (metadata DB) + Redis (broker) + moto S3 (checkpoint, dataset, store)
    -> airflow db migrate -> api-server, scheduler, dag-processor, triggerer, celery worker (2)
    -> POST /api/v2/dags/mobiledet_convert/dagRuns -> every task on the Celery worker
    -> manifest in S3 with the sha256 of every file -> every process stopped by its id
"""
from __future__ import annotations

import hashlib
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

from include.pipeline import services
from include.pipeline.services import (AirflowDeployment, AirflowSettings, ManagedProcess,
                                       airflow_environment, ensure_password, free_port)
from stack import postgres, redis, s3_process  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "mobiledet_convert.py"
FAST = {"calibration_count": 4, "benchmark_runs": 3, "benchmark_warmup": 1, "threads": 1}
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
    assert local["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
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
    assert not services._alive(child)


def test_serve_and_run_arguments():
    import argparse

    from include.pipeline import serve_commands

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    serve_commands.register(sub)
    args = parser.parse_args(["serve", "--executor", "celery", "--port", "8099"])
    assert (args.executor, args.port, args.func) == ("celery", 8099, serve_commands.cmd_serve)
    run = argparse.ArgumentParser()
    serve_commands.add_airflow_arguments(run)
    args = run.parse_args(["--airflow", "http://127.0.0.1:8080", "--user", "u"])
    assert (args.airflow, args.user) == ("http://127.0.0.1:8080", "u")


def test_serve_exports_the_pipeline_settings(tmp_path, monkeypatch):
    from include.errors import ConfigError
    from include.pipeline.serve_commands import pipeline_env, remote_conf

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
    return {str(p.relative_to(deployment.log_dir)): services.tail(p, chars)
            for p in sorted(folder.rglob("*.log"))}


@pytest.fixture
def celery_airflow(postgres, redis, s3_process, tmp_path):  # noqa: F811
    """Airflow 3 with the CeleryExecutor on PostgreSQL + Redis, a worker of concurrency 2.

    Its DAGs folder holds a copy of dags/mobiledet_convert.py only, so that another DAG file
    being written in dags/ meanwhile cannot break this test."""
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy2(DAG_FILE, dags / DAG_FILE.name)
    settings = AirflowSettings(
        home=tmp_path / "airflow", dags_folder=dags, port=free_port(), executor="celery",
        sql_alchemy_conn=postgres.sqlalchemy_url, broker_url=redis.url, worker_concurrency=2,
        parallelism=4, password="stack-test",
        extra_env={"AIRFLOW_CONN_AWS_DEFAULT": s3_process.connection_json(),
                   "MOBILEDET_STORE": "s3://unused-default/store"})
    deployment = AirflowDeployment(settings)
    try:
        deployment.start(timeout=240)
        yield deployment
    finally:
        deployment.stop()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_celery_deployment_runs_the_dag_from_the_rest_api(celery_airflow, s3_process,  # noqa: F811
                                                          tiny_inputs):
    started = time.monotonic()
    root, ckpt = tiny_inputs
    s3 = s3_process.client()
    bucket = "stack-test"
    s3.create_bucket(Bucket=bucket)
    assert upload_tree(s3, bucket, "checkpoints/edgetpu-float", ckpt) > 0
    assert upload_tree(s3, bucket, "datasets/tiny", root / "data") > 0
    conf = {"checkpoints": [f"s3://{bucket}/checkpoints/edgetpu-float"],
            "data": f"s3://{bucket}/datasets/tiny", "store": f"s3://{bucket}/releases",
            "precisions": ["float32"], "overrides": FAST}

    settings = celery_airflow.settings
    lines = []
    try:
        final = services.trigger_and_follow(settings.base_url, conf, username=settings.username,
                                            password=settings.password, timeout=RUN_TIMEOUT_S,
                                            poll=2.0, fail_fast=True, out=lines.append)
    except services.ServiceError as exc:
        logs = {n: p.log_tail(3000) for n, p in celery_airflow.processes.items()
                if n in ("scheduler", services.WORKER)}
        for ti in getattr(exc, "tasks", []):
            logs.update(task_logs(celery_airflow, ti))
        pytest.fail(f"{exc}\n" + "\n".join(lines) + "".join(
            f"\n--- {n}.log ---\n{t}" for n, t in logs.items()))
    client = celery_airflow.client()
    run_id = final["dag_run_id"]
    tis = client.task_instances(services.DAG_ID, run_id)
    states = {services.task_label(ti): ti["state"] for ti in tis}
    worker_log = celery_airflow.processes[services.WORKER].log_tail(2_000_000)
    assert final["state"] == "success", (states, "\n".join(lines), worker_log[-3000:])
    assert set(states.values()) == {"success"}, states
    # Task ids without their task group ("model.convert" -> "convert").
    assert {"plan", "export", "convert", "check", "edgetpu", "gate", "publish", "report"} <= \
        {ti["task_id"].rpartition(".")[2] for ti in tis}
    assert any("triggered mobiledet_convert" in line for line in lines)
    assert any(line.split()[:2] == ["report", "success"] for line in lines), lines
    print("\n".join(lines))

    # Every task went through the Celery worker: the worker logged each workload it received.
    for ti in tis:
        assert f"task_id='{ti['task_id']}'" in worker_log, ti["task_id"]
        assert ti["hostname"] and ti["queue"] == "default"
    assert "Executing workload in Celery" in worker_log

    # The manifest is in S3 and records each published file's size and sha256.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="releases/")
            .get("Contents", [])]
    [manifest_key] = [k for k in keys if k.endswith("/manifest.json")]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    prefix = manifest_key.rsplit("/", 1)[0]
    [entry] = manifest["published"]
    assert (entry["variant"], entry["precision"]) == ("edgetpu", "float32")
    assert "model.tflite" in entry["files"]
    for name, meta in entry["files"].items():
        key = f"{prefix}/{entry.get('path', 'edgetpu/float32')}/{name}"
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert len(body) == meta["size"] and hashlib.sha256(body).hexdigest() == meta["sha256"]
    print(f"[stack] DAG run {run_id} took {time.monotonic() - started:.0f} s after start-up")

    # Stopping the deployment ends every process it started (and their children), by pid.
    pids = {n: p.pid for n, p in celery_airflow.processes.items()}
    children = {n: set(p.known_pids) for n, p in celery_airflow.processes.items()}
    celery_airflow.stop()
    assert celery_airflow.leftovers() == {}
    for name, pid in pids.items():
        assert not services._alive(pid), name
        assert not [c for c in children[name] if services._alive(c)], name
    assert not services.port_open("127.0.0.1", settings.port)


def test_airflow_cli_sees_the_stack_settings(tmp_path):
    """`airflow config get-value` in the deployment's environment reads the agreed settings."""
    settings = AirflowSettings(home=tmp_path, port=18555)
    env = airflow_environment(settings, base=dict(os.environ))
    out = subprocess.run([services.airflow_executable(), "config", "get-value", "core",
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

    from include.pipeline.serve_commands import run_on_airflow

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

        os.kill(serve.pid, signal.SIGTERM)
        serve.popen.wait(90)
        assert serve.popen.returncode == 0, out.read_text()[-3000:]
        assert "[serve] stopped:" in out.read_text()
        for name, pid in pids.items():
            assert not services._alive(int(pid)), name
        assert not services.port_open("127.0.0.1", port)
    finally:
        serve.stop()
