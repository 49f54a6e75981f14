"""Faults and bad input: nothing lost, nothing half-published, every error names its fix.

* the S3 server stops in the middle of a publish and comes back;
* a worker process is SIGKILLed in the middle of a conversion and of a publish, then retried;
* an object is corrupted after upload;
* the smaller holes: keys with '..', deserialization of XCom, header-only downloads, task
  retries/time limits, a killed Edge TPU task's compiler;
* the README's bad-input table, one test per row (test_bad_input).
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from models import make_checkpoint

REPO = Path(__file__).resolve().parents[1]
FAST = {"calibration_count": 4, "benchmark_runs": 2, "benchmark_warmup": 0, "threads": 1,
        "gates.min_map": 0}   # tiny one-step checkpoints detect nothing: the floor off
FP = "sha256:" + "badc0de0" * 8
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=timezone.utc)


def _artifacts(store, run):
    model = store.put_bytes(f"{run}-model".encode() * 32, f"runs/{run}/cpu/int8/model.tflite")
    conv = store.write_json(f"runs/{run}/cpu/int8/conversion.json", {"run": run})
    return [{"variant": "cpu", "precision": "int8", "passed": True,
             "files": {"model.tflite": model, "conversion.json": conv,
                       "metrics.json": {"AP50": 0.4}, "validation.json": {"success": True}},
             "decision": {"passed": True, "metric": "AP50", "map": 0.4, "reasons": []}}]


def _only_release_files(store, version, manifest):
    listed = set(store.list(f"mobiledet/{version}"))
    return listed == {f"mobiledet/{version}/manifest.json"} | {
        f"mobiledet/{version}/{f['path']}" for f in manifest["files"]}


# ------------------------------------------------------------------------------------------
# S3 goes away in the middle of a publish
# ------------------------------------------------------------------------------------------
def test_s3_server_stopped_mid_publish_then_back(tmp_path, monkeypatch):
    """Stop the S3 server after the first file of a publish: the publish fails with a
    StoreError, no manifest and no pointer exist when the server is back, and a re-run
    publishes the version once, with no file of the failed attempt left."""
    from moto.server import ThreadedMotoServer

    from include.errors import StoreError
    from include.store import ArtifactStore, latest, make_version, publish_release as publish, read_manifest
    from s3server import connection_json, create_bucket, reset_airflow_fs_cache

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    conn = json.loads(connection_json(endpoint))
    conn["extra"]["config_kwargs"] = {"retries": {"max_attempts": 1}, "connect_timeout": 2,
                                      "read_timeout": 5}
    monkeypatch.setenv("AIRFLOW_CONN_S3_FAULTS", json.dumps(conn))
    reset_airflow_fs_cache()
    try:
        bucket = create_bucket(endpoint)
        store = ArtifactStore(f"s3://{bucket}/models", conn_id="s3_faults")
        version = make_version(FP, T0)
        arts = _artifacts(store, "r1")
        real_copy = store.copy
        calls = {"n": 0}

        def copy_then_outage(src, dst_key):
            out = real_copy(src, dst_key)
            calls["n"] += 1
            if calls["n"] == 1:
                server.stop()   # S3 is gone for everything that follows
            return out

        monkeypatch.setattr(store, "copy", copy_then_outage)
        started = time.monotonic()
        with pytest.raises(StoreError) as exc:
            publish(store, "mobiledet", version, arts,
                    {"checkpoint_fingerprint": FP}, publisher="r1")
        assert time.monotonic() - started < 120
        assert exc.value.fix  # names the connection to check
        # the server comes back (same port, same data: moto keeps its state in the process)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        monkeypatch.setattr(store, "copy", real_copy)
        assert not store.exists(f"mobiledet/{version}/manifest.json")
        assert latest(store, "mobiledet") is None
        assert not store.exists("mobiledet/latest")
        again = publish(store, "mobiledet", version, arts, {"checkpoint_fingerprint": FP},
                        publisher="r1")
        assert again.status == "published"
        manifest = read_manifest(store, "mobiledet", version)
        assert _only_release_files(store, version, manifest)
        assert publish(store, "mobiledet", version, arts, {"checkpoint_fingerprint": FP},
                       publisher="r2").status == "already_published"
        assert _only_release_files(store, version, manifest)
    finally:
        server.stop()
        reset_airflow_fs_cache()


# ------------------------------------------------------------------------------------------
# A worker killed with SIGKILL, then the task's retry
# ------------------------------------------------------------------------------------------
KILLED_PUBLISH = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from include.store import ArtifactStore, publish_release as publish
    from test_faults import FP, T0, _artifacts
    from include.store import make_version
    store = ArtifactStore({base!r})
    arts = _artifacts(store, "run-k")
    real = store.copy
    n = [0]
    def copy(src, key):
        out = real(src, key)
        n[0] += 1
        if n[0] == 2:
            open({marker!r}, "w").write("copied two files")
            time.sleep(120)          # killed here, in the middle of the publish
        return out
    store.copy = copy
    publish(store, "mobiledet", make_version(FP, T0), arts, {{"checkpoint_fingerprint": FP}},
            publisher="run-k")
""")


def _wait_for(path: Path, proc, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the worker ended early: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path.name} did not appear within {seconds} s")
        time.sleep(0.1)


def test_worker_killed_mid_publish_retry_completes(tmp_path):
    from include.store import ArtifactStore, make_version, publish_release as publish, read_manifest

    base = str(tmp_path / "store")
    marker = tmp_path / "marker"
    script = tmp_path / "worker.py"
    script.write_text(KILLED_PUBLISH.format(tests=str(REPO / "tests"), base=base,
                                            marker=str(marker)))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(marker, proc, 120)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    store = ArtifactStore(base)
    version = make_version(FP, T0)
    assert not store.exists(f"mobiledet/{version}/manifest.json")
    assert store.exists(f"mobiledet/{version}/run-k")  # the dead attempt's files
    # the retry of the same task (same run, same publisher) replaces them and publishes once
    retry = publish(store, "mobiledet", version, _artifacts(store, "run-k"),
                    {"checkpoint_fingerprint": FP}, publisher="run-k")
    assert retry.status == "published" and retry.cleaned_partial
    manifest = read_manifest(store, "mobiledet", version)
    assert _only_release_files(store, version, manifest)
    assert not [p for p in Path(base).rglob("*") if ".partial-" in p.name]


KILLED_CONVERT = textwrap.dedent("""
    import json, sys
    from include.pipeline.steps.convert import convert
    settings = json.load(open({settings!r}))
    job = json.load(open({job!r}))
    open({marker!r}, "w").write("converting")
    convert(settings, job)
""")


def test_worker_killed_mid_conversion_retry_completes(tmp_path):
    from include.data.synth import synthesize
    from include.pipeline.steps.convert import convert
    from include.pipeline.steps.export import export
    from include.pipeline.steps.plan import jobs_of, plan
    from include.store import open_store, sha256_file

    synthesize(tmp_path / "data", 8, size=96, seed=0, val_fraction=0.5)
    ckpt = make_checkpoint(tmp_path / "ckpt", variant="edgetpu")
    run = plan({"checkpoints": [str(ckpt)], "data": str(tmp_path / "data"),
                "store": str(tmp_path / "store"), "precisions": ["int8"],
                "overrides": FAST}, "kill-run")
    exported = export(run, run.checkpoints[0])
    [job] = [j.to_dict() for j in jobs_of(run, [exported])]
    settings = run.to_dict()
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    (tmp_path / "job.json").write_text(json.dumps(job))
    marker = tmp_path / "marker"
    script = tmp_path / "convert.py"
    script.write_text(KILLED_CONVERT.format(settings=str(tmp_path / "settings.json"),
                                            job=str(tmp_path / "job.json"), marker=str(marker)))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(marker, proc, 120)
    time.sleep(3)  # inside TensorFlow's import or the converter
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    retry = convert(run, job).to_dict()   # the task's retry
    store = open_store(settings["config"]["store_uri"])
    prefix = f"runs/kill-run/{job['ckpt_id']}/int8"
    assert store.list(prefix) == [f"{prefix}/conversion.json", f"{prefix}/model.tflite"]
    assert store.sha256(f"{prefix}/model.tflite") == retry["sha256"]
    assert not [p for p in Path(settings["config"]["store_uri"]).rglob("*")
                if ".partial-" in p.name]
    local = store.get_file(f"{prefix}/model.tflite", str(tmp_path / "m.tflite"))
    assert sha256_file(local) == retry["sha256"]


# ------------------------------------------------------------------------------------------
# Corruption after upload
# ------------------------------------------------------------------------------------------
def test_corrupted_object_is_refused_by_name(tmp_path):
    from include.errors import StoreError
    from include.store import ArtifactStore, fetch, make_version, pointer, publish_release as publish

    store = ArtifactStore(str(tmp_path / "store"))
    version = make_version(FP, T0)
    publish(store, "mobiledet", version, _artifacts(store, "r1"), {"checkpoint_fingerprint": FP},
            publisher="r1")
    ptr = pointer(store, "mobiledet", "cpu", "int8")
    key = ptr["model_uri"].split("/store/", 1)[1]
    store.put_bytes(b"flipped bits", key)  # bit rot, a bad copy, a tampered object
    with pytest.raises(StoreError) as exc:
        fetch(ptr["model_uri"], str(tmp_path / "dl" / "model.tflite"), sha256=ptr["sha256"])
    assert ptr["model_uri"] in str(exc.value) and "sha256" in str(exc.value)
    assert not (tmp_path / "dl" / "model.tflite").exists()  # nothing to pick up by mistake


# ------------------------------------------------------------------------------------------
# The smaller holes
# ------------------------------------------------------------------------------------------
def test_materialize_refuses_keys_that_climb_out(s3_server, s3_bucket, tmp_path):
    from include.errors import StoreError
    from include.store import materialize
    from s3server import s3_client

    client = s3_client(s3_server)
    client.put_object(Bucket=s3_bucket, Key="ckpts/a/checkpoint.json", Body=b"{}")
    client.put_object(Bucket=s3_bucket, Key="ckpts/a/x/../../../../escaped.txt", Body=b"evil")
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert any(".." in k for k in listed)  # the server keeps the key as written
    work = tmp_path / "work"
    with pytest.raises(StoreError, match=r"'\.\.'"):
        materialize(f"s3://{s3_bucket}/ckpts/a", str(work))
    assert not list(tmp_path.rglob("escaped.txt"))


def test_s3_uri_with_dotdot_is_refused():
    from include.errors import StoreError
    from include.store import locate

    with pytest.raises(StoreError, match=r"'\.\.'"):
        locate("s3://bucket/ckpts/../../etc/passwd")


def test_xcom_deserialization_is_not_opened_to_every_class(tmp_path):
    code = textwrap.dedent("""
        import os
        from include.deploy.airflow_env import prepare_airflow
        prepare_airflow()
        print("REGEXP", repr(os.environ.get("AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP")))
    """)
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path / "home"))
    env.pop("AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REGEXP None" in out.stdout


def test_plan_reads_only_the_checkpoint_header(s3_server, s3_bucket, tmp_path):
    """plan needs checkpoint.json, not the weights: a remote checkpoint whose weights are not
    there yet plans fine (the export verifies them), and only the header is downloaded."""
    from include.data.synth import synthesize
    from include.pipeline.steps.plan import plan
    from s3server import s3_client

    ckpt = make_checkpoint(tmp_path / "ckpt", variant="edgetpu")
    synthesize(tmp_path / "data", 6, size=96, seed=0, val_fraction=0.5)
    client = s3_client(s3_server)
    client.put_object(Bucket=s3_bucket, Key="ckpts/e1/checkpoint.json",
                      Body=(ckpt / "checkpoint.json").read_bytes())
    run = plan({"checkpoints": [f"s3://{s3_bucket}/ckpts/e1"],
                "data": str(tmp_path / "data"), "store": str(tmp_path / "store"),
                "overrides": FAST}, "plan-run")
    [c] = run.to_dict()["checkpoints"]
    assert c["variant"] == "edgetpu" and c["fingerprint"]
    assert run.evaluation_data_fingerprint.startswith("sha256:")


def test_calibration_downloads_only_the_images_it_uses(s3_server, s3_bucket, tmp_path):
    from include.convert.calibration import calibration_files
    from include.data.synth import synthesize
    from include.pipeline.inputs import dataset_copy
    from s3server import s3_client

    data = tmp_path / "data"
    synthesize(data, 20, size=64, seed=0, val_fraction=0.5)
    client = s3_client(s3_server)
    for p in data.rglob("*"):
        if p.is_file():
            client.put_object(Bucket=s3_bucket, Key=f"sets/d/{p.relative_to(data).as_posix()}",
                              Body=p.read_bytes())
    local = dataset_copy(f"s3://{s3_bucket}/sets/d", tmp_path / "work", "aws_default",
                         images=lambda root: calibration_files(root, 4))
    images = [p for p in local.rglob("*") if p.suffix in (".jpg", ".png")]
    assert len(images) == 4
    assert [p.name for p in calibration_files(local, 4)] == \
        [p.name for p in calibration_files(data, 4)]  # the same sample as the full copy


def test_task_policy_defaults_and_settings():
    from datetime import timedelta

    from include.errors import ConfigError
    from include.deploy.task_policy import task_args

    convert = task_args("convert", environ={})
    assert convert["retries"] == 2 and convert["pool"] == "default_pool"
    assert convert["execution_timeout"] == timedelta(hours=1)
    assert "pool" not in task_args("gate", environ={})
    custom = task_args("edgetpu", environ={"MOBILEDET_TASK_RETRIES": "5",
                                           "MOBILEDET_POOL": "mobiledet",
                                           "MOBILEDET_TIMEOUT_EDGETPU_S": "60"})
    assert (custom["retries"], custom["pool"], custom["execution_timeout"]) == \
        (5, "mobiledet", timedelta(seconds=60))
    with pytest.raises(ConfigError, match="MOBILEDET_TASK_RETRIES"):
        task_args("convert", environ={"MOBILEDET_TASK_RETRIES": "many"})


def test_dag_tasks_carry_retries_timeouts_and_pool():
    code = textwrap.dedent("""
        import importlib.util
        spec = importlib.util.spec_from_file_location("m", "dags/mobiledet_convert.py")
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        for t in m.dag.tasks:
            print(t.task_id, t.retries, t.execution_timeout, t.pool,
                  getattr(t.trigger_rule, "value", t.trigger_rule))
    """)
    env = dict(os.environ, MOBILEDET_POOL="mobiledet")
    env.pop("MOBILEDET_TASK_RETRIES", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for heavy in ("export", "model.convert", "model.check"):
        assert rows[heavy][1] == "2" and rows[heavy][-2] == "mobiledet", rows[heavy]
    assert rows["model.convert"][2] == "1:00:00"
    assert rows["gate"][-1] == "all_done" and rows["report"][-1] == "all_done"
    assert rows["publish"][-1] == "all_done"          # the searches' outcomes merged there
    assert "regate" not in rows


def test_killed_edgetpu_task_stops_its_compiler(tmp_path, monkeypatch):
    """on_kill of the Edge TPU operator ends the compiler's whole process group."""
    from include.edgetpu import compiler
    from operators.edgetpu import EdgeTPUCompileOperator
    from models import make_tflite

    pidfile = tmp_path / "pid"
    exe = tmp_path / "edgetpu_compiler"
    exe.write_text(f"#!{sys.executable}\nimport os, time\n"
                   f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("EDGETPU_COMPILER", str(exe))
    model = make_tflite(tmp_path / "m", precision="float32")
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault(
        "result", compiler.compile_model(model, str(tmp_path / "out"), timeout_s=100)))
    worker.start()
    deadline = time.monotonic() + 60
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    EdgeTPUCompileOperator(task_id="edgetpu", model="/m.tflite", output="/o").on_kill()
    worker.join(30)
    assert not worker.is_alive()
    assert done["result"].status in ("failed", "timeout")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# ------------------------------------------------------------------------------------------
# The publish never deletes a file a manifest may name; the retry reconciles
# ------------------------------------------------------------------------------------------
def test_a_failure_after_the_manifest_was_created_keeps_the_release_files(store, monkeypatch):
    """The conditional create writes the manifest, then something fails (the read-back, a
    timeout): the files the manifest names stay, and the retry finishes the release as its own
    (status published, so the attempt that completes the publish emits its asset events)."""
    from include.errors import StoreError
    from include.store import make_version, pointer, publish_release as publish, read_manifest

    version = make_version(FP, T0)
    arts = _artifacts(store, "run-b")
    real = store.create_bytes

    def create_then_fail(data, key):
        real(data, key)
        raise StoreError("read timeout after the PUT", where=key, fix="retry")

    monkeypatch.setattr(store, "create_bytes", create_then_fail)
    with pytest.raises(StoreError, match="read timeout"):
        publish(store, "mobiledet", version, arts, {"checkpoint_fingerprint": FP},
                publisher="run-b")
    monkeypatch.setattr(store, "create_bytes", real)
    manifest = read_manifest(store, "mobiledet", version)
    assert _only_release_files(store, version, manifest)          # nothing it names is gone
    retry = publish(store, "mobiledet", version, arts, {"checkpoint_fingerprint": FP},
                    publisher="run-b")
    assert retry.status == "published" and retry.winner == "run-b"
    assert pointer(store, "mobiledet", "cpu", "int8")["version"] == version
    for f in manifest["files"]:
        assert store.sha256(f"mobiledet/{version}/{f['path']}") == f["sha256"]


def test_a_lost_create_answer_is_not_read_as_losing(store, monkeypatch):
    """s3fs retries a PutObject after a socket timeout; when the first PUT had landed, the
    retry's 412 said "lost" and the publisher dropped the folder its own manifest names."""
    from include.store import make_version, publish_release as publish, read_manifest

    version = make_version(FP, T0)
    arts = _artifacts(store, "run-c")
    real = store.create_bytes

    def put_landed_but_answer_lost(data, key):
        real(data, key)
        return False    # what the retried PUT's 412 reads as

    monkeypatch.setattr(store, "create_bytes", put_landed_but_answer_lost)
    result = publish(store, "mobiledet", version, arts, {"checkpoint_fingerprint": FP},
                     publisher="run-c")
    assert result.status == "published" and result.winner == "run-c"
    assert _only_release_files(store, version, read_manifest(store, "mobiledet", version))


def test_latest_means_the_newest_checkpoint_not_the_last_run_to_finish(store):
    """An older checkpoint whose run finishes later (a re-run) never becomes `latest`."""
    from datetime import timedelta

    from include.store import latest, make_version, pointer, publish_release as publish

    new_fp, old_fp = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    newer = make_version(new_fp, T0)
    older = make_version(old_fp, T0 - timedelta(days=3))
    publish(store, "mobiledet", newer, _artifacts(store, "run-new"),
            {"checkpoint_fingerprint": new_fp}, publisher="run-new", created=T0)
    late = publish(store, "mobiledet", older, _artifacts(store, "run-old"),
                   {"checkpoint_fingerprint": old_fp}, publisher="run-old",
                   created=T0 - timedelta(days=3))
    assert late.status == "published" and not late.latest_moved
    assert latest(store, "mobiledet")["version"] == newer
    assert pointer(store, "mobiledet", "cpu", "int8")["version"] == newer
