"""The mobiledet_convert DAG, run through Airflow with dag.test() on tiny real checkpoints.

Each run goes plan -> export -> convert -> check -> edgetpu -> gate -> publish -> report with
the real converter, interpreter, pycocotools and Great Expectations; stores are a local folder
and S3 served over HTTP by moto on 127.0.0.1.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from models import make_tiny_inputs

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "edgetpu"
FAST = {"calibration_count": 4, "benchmark_runs": 3, "benchmark_warmup": 1, "threads": 2,
        "gates.min_map": 0}   # tiny one-step checkpoints detect nothing: the floor off


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_inputs(tmp_path_factory.mktemp("dag"))


def _conf(root, ckpt, store, **extra):
    return {"checkpoints": [str(ckpt)], "data": str(root / "data"), "store": store,
            "precisions": ["float32", "int8"], "overrides": dict(FAST), **extra}


@pytest.fixture
def compiler_reporting_cpu_ops(tmp_path, monkeypatch):
    """An edgetpu_compiler stand-in that prints the recorded 'not all operations are supported'
    run (two DEQUANTIZE ops besides the post-process op on the CPU)."""
    exe = tmp_path / "edgetpu_compiler"
    exe.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, shutil
        from pathlib import Path
        args = sys.argv[1:]
        out = Path(args[args.index("-o") + 1]); model = Path(args[-1])
        stem = model.stem
        shutil.copyfile(model, out / (stem + "_edgetpu.tflite"))
        log = Path({str(FIXTURES / 'not_all_supported_edgetpu.log')!r}).read_text()
        (out / (stem + "_edgetpu.log")).write_text(log)
        text = Path({str(FIXTURES / 'not_all_supported_stdout.txt')!r}).read_text()
        sys.stdout.write(text.replace("X_edgetpu", stem + "_edgetpu").replace("X.tflite", model.name))
        """))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("EDGETPU_COMPILER", str(exe))
    return exe


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", ["mobiledet_convert.py", "mobiledet_retrain.py",
                                  "mobiledet_rollout_example.py", "mobiledet_release.py",
                                  "mobiledet_housekeeping.py"])
def test_dag_files_import_fast_without_tensorflow(name):
    from dagfiles import import_dag_file

    got = import_dag_file(name)
    assert got["seconds"] < 2.0 and got["heavy"] == [], got
    assert got["dag_id"] == name[:-3]


def _airflow_json(*args):
    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.run([str(airflow), *args, "-o", "json"], capture_output=True, text=True,
                          env=os.environ.copy(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # warnings may precede the JSON


def test_no_dag_import_errors(airflow_db):
    # --local parses this repository's dags/ folder (the DB of a fresh install is empty).
    assert _airflow_json("dags", "list-import-errors", "--local") == []
    assert "mobiledet_convert" in {d["dag_id"] for d in _airflow_json("dags", "list", "--local")}


def test_local_store_publish_gate_and_rerun(tiny, tmp_path, airflow_db, compiler_reporting_cpu_ops):
    from include.deploy.airflow_env import run_dag
    from include.store import open_store

    root, ckpt = tiny
    store_dir = tmp_path / "store"
    result = run_dag(_conf(root, ckpt, str(store_dir)))
    report = result["report"]
    assert report["models"] == 2
    assert "edgetpu/float32" in report["table"] and "edgetpu/int8" in report["table"]
    [pub] = report["published"]
    assert pub["status"] == "published"
    store = open_store(str(store_dir))
    version = pub["version"]
    manifest = store.read_json(f"mobiledet/{version}/manifest.json")

    # float32 passed; int8 was made to fail the Edge TPU gate (DEQUANTIZE ops on the CPU).
    published = {(e["variant"], e["precision"]) for e in manifest["published"]}
    rejected = {(e["variant"], e["precision"]): e for e in manifest["rejected"]}
    assert published == {("edgetpu", "float32")}
    assert ("edgetpu", "int8") in rejected
    assert any("DEQUANTIZE" in r for r in rejected[("edgetpu", "int8")]["reasons"])
    assert not [k for k in store.list(f"mobiledet/{version}") if "/int8/" in k]

    # Every published file is in the store with the size and sha256 the manifest records.
    files = manifest["published"][0]["files"]
    path = manifest["published"][0]["path"]
    assert path == f"{manifest['publisher']}/edgetpu/float32"
    assert {"model.tflite", "conversion.json", "metrics.json", "validation.json"} <= set(files)
    for name, meta in files.items():
        data = store.get_bytes(f"mobiledet/{version}/{path}/{name}")
        assert len(data) == meta["size"] and _sha(data) == meta["sha256"], name
    assert manifest["lineage"]["checkpoint_fingerprint"] == \
        json.loads((ckpt / "checkpoint.json").read_text())["fingerprint"]
    assert manifest["lineage"]["tensorflow_version"]
    assert store.read_json("mobiledet/latest.json")["version"] == version
    assert store.read_json("mobiledet/latest/edgetpu/float32.json")["sha256"] == \
        files["model.tflite"]["sha256"]
    assert not store.exists("mobiledet/latest/edgetpu/int8.json")  # rejected: no pointer
    metrics = store.read_json(f"mobiledet/{version}/{path}/metrics.json")
    assert set(metrics["evaluation"]["metrics"]) >= {"AP", "AP50", "AP75"}

    # A second run for the same checkpoint publishes no second copy.
    before = sorted(store.list("mobiledet"))
    again = run_dag(_conf(root, ckpt, str(store_dir)))
    assert again["report"]["published"][0]["status"] == "already_published"
    assert sorted(store.list("mobiledet")) == before


def test_one_failed_model_does_not_block_the_others(tiny, tmp_path, airflow_db):
    """int8's conversion fails (an empty calibration folder): float32 is still gated and
    published, int8 is rejected with the convert task's own error, and the run succeeds."""
    from include.deploy.airflow_env import run_dag
    from include.store import open_store

    root, ckpt = tiny
    empty = tmp_path / "no-images"
    empty.mkdir()
    store_dir = tmp_path / "store"
    result = run_dag(_conf(root, ckpt, str(store_dir), calibration=str(empty)))
    assert result["state"] == "success"
    [pub] = result["report"]["published"]
    assert pub["status"] == "published"
    store = open_store(str(store_dir))
    manifest = store.read_json(f"mobiledet/{pub['version']}/manifest.json")
    assert [(e["variant"], e["precision"]) for e in manifest["published"]] == [
        ("edgetpu", "float32")]
    [rejected] = manifest["rejected"]
    assert rejected["precision"] == "int8"
    reason = rejected["reasons"][0]
    assert reason.startswith("the convert task failed: DataError") and str(empty) in reason
    assert "no images" in reason  # the converter's own message, not "upstream failed"
    report = store.read_json(result["report"]["report_uri"].split("/store/", 1)[1])
    assert any(m["precision"] == "int8" and not m["passed"] and m["failed"]
               for m in report["models"])
    assert "the convert task failed" in result["report"]["table"]


def test_corrupt_checkpoint_fails_the_run_and_publishes_nothing(tiny, tmp_path, airflow_db):
    import shutil

    from include.errors import MobiledetError
    from include.deploy.airflow_env import run_dag
    from include.store import open_store

    root, ckpt = tiny
    bad = tmp_path / "truncated"
    shutil.copytree(ckpt, bad)
    weights = bad / "weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])
    store_dir = tmp_path / "store"
    with pytest.raises(MobiledetError, match="report"):
        run_dag(_conf(root, bad, str(store_dir)))
    store = open_store(str(store_dir))
    assert not any(k.endswith("manifest.json") for k in store.list(""))
    assert not store.exists("mobiledet/latest.json")
    [report_key] = [k for k in store.list("runs") if k.endswith("report.json")]
    report = store.read_json(report_key)
    [failed] = report["failed_checkpoints"]
    assert "the export task failed" in failed["reason"] and "weights.h5" in failed["reason"]
    assert any("no model could be decided" in p for p in report["problems"])


def test_s3_store(tiny, s3_bucket, airflow_db):
    import boto3

    from include.deploy.airflow_env import run_dag

    root, ckpt = tiny
    result = run_dag(_conf(root, ckpt, f"s3://{s3_bucket}/releases", precisions=["float32"]))
    [pub] = result["report"]["published"]
    assert pub["status"] == "published"
    assert pub["manifest_uri"].startswith(f"s3://{s3_bucket}/releases/mobiledet/")
    s3 = boto3.client("s3", endpoint_url=os.environ["MOTO_S3_ENDPOINT"] if "MOTO_S3_ENDPOINT" in
                      os.environ else json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]
                      ["endpoint_url"], aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    prefix = f"releases/mobiledet/{pub['version']}"
    manifest = json.loads(s3.get_object(Bucket=s3_bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    entry = manifest["published"][0]
    for name, meta in entry["files"].items():
        body = s3.get_object(Bucket=s3_bucket, Key=f"{prefix}/{entry['path']}/{name}")["Body"].read()
        assert _sha(body) == meta["sha256"] and len(body) == meta["size"]
    latest = json.loads(s3.get_object(Bucket=s3_bucket, Key="releases/mobiledet/latest.json")["Body"].read())
    assert latest["version"] == pub["version"]


def test_landing_claims_and_published_asset_events(tiny, tmp_path, airflow_db):
    """A run started by a landing (claim=True) converts and publishes; a second run for the
    same landing ends at once as already claimed and publishes nothing; each published model
    is an asset event of mobiledet/MODEL/VARIANT/PRECISION with the manifest in its extra."""
    from include.deploy.airflow_env import run_dag
    from include.store import open_store

    root, ckpt = tiny
    store_dir = tmp_path / "store"
    conf = _conf(root, ckpt, str(store_dir), precisions=["float32"], claim=True)
    first = run_dag(conf)
    [pub] = first["report"]["published"]
    assert pub["status"] == "published"
    second = run_dag(conf)
    assert second["report"]["published"] == [] and second["report"]["models"] == 0
    assert second["report"]["already_claimed"][0]["claimed_by"] == first["report"]["run_id"]
    store = open_store(str(store_dir))
    assert [k for k in store.list("mobiledet") if k.endswith("manifest.json")] == [
        f"mobiledet/{pub['version']}/manifest.json"]

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (session.query(AssetEvent, AssetModel).join(AssetModel, AssetEvent.asset_id ==
                                                           AssetModel.id)
                .filter(AssetModel.name == "mobiledet/mobiledet/edgetpu/float32").all())
        extras = [event.extra for event, _ in rows]
        uris = {asset.uri for _, asset in rows}
    assert any(e.get("manifest_uri") == pub["manifest_uri"] and e.get("metric") == "AP50"
               for e in extras), extras
    # (other tests of the session published the same model name into other stores)
    assert store.uri("mobiledet/latest/edgetpu/float32.json") in uris


def test_a_failed_gate_publishes_nothing(tiny, tmp_path, airflow_db, monkeypatch):
    """publish runs all_done (a failed search task must not hold back the other models), so a
    gate that failed must still stop it: nothing published, the report says why."""
    from include.errors import MobiledetError
    from include.deploy.airflow_env import run_dag
    from include.pipeline.steps import gate
    from include.store import open_store

    def broken(*args, **kwargs):
        raise RuntimeError("the gate broke")
    monkeypatch.setattr(gate, "gate", broken)
    root, ckpt = tiny
    store_dir = tmp_path / "store"
    with pytest.raises(MobiledetError, match="report"):
        run_dag(_conf(root, ckpt, str(store_dir), precisions=["float32"]))
    store = open_store(str(store_dir))
    assert not any(k.endswith("manifest.json") for k in store.list(""))
    assert not store.exists("mobiledet/latest.json")
    [report_key] = [k for k in store.list("runs") if k.endswith("report.json")]
    assert any("the gate task failed" in p for p in store.read_json(report_key)["problems"])


def test_int8_failing_the_accuracy_gate_gets_a_recipe_search(tiny, tmp_path, airflow_db):
    """int8 fails the accuracy gate (a min_map no model reaches here): the search task tries
    other recipes within the budget, and the model ends rejected with every candidate tried in
    its reason, never with a silent pass; the table is in the report and the store."""
    from include.deploy.airflow_env import run_dag
    from include.store import open_store

    root, ckpt = tiny
    store_dir = tmp_path / "store"
    conf = _conf(root, ckpt, str(store_dir))
    conf["overrides"] = dict(conf["overrides"], **{"gates.min_map": 0.99, "search_budget": 2})
    result = run_dag(conf)
    store = open_store(str(store_dir))
    report = store.read_json(result["report"]["report_uri"].split("/store/", 1)[1])
    by = {m["precision"]: m for m in report["models"]}
    int8 = by["int8"]
    assert not int8["passed"] and int8["search"]["passed"] is False
    tried = [r for r in int8["search"]["candidates"] if r["status"] not in ("not tried",
                                                                            "skipped")]
    assert 1 <= len(tried) <= 2 and tried[0]["candidate"] == "plain"
    reason = int8["decision"]["reasons"][-1]
    assert reason.startswith("recipe search: no candidate passed (plain: fail")
    assert store.is_file(int8["search"]["search_uri"].split("/store/", 1)[1])
    assert "search" not in by["float32"] or by["float32"]["search"] is None  # only int8
    assert result["report"]["published"][0]["status"] == "nothing_to_publish"
