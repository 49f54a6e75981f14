"""TFOD training folders through the pipeline: the landing watcher reports each step a training
job writes once (kind tfod-training), the ledger holds one record per step, a run's plan
claims them with their identity, an S3 step is read without the rest of the folder, and a
folder given to the DAG is converted and published from its newest step.

The folders are written by TF1's own Saver (tests/tfod_tf1.py), one step at a time as a
training job writes them; S3 is moto's server on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from include.mobiledet.spec import ModelSpec
from tfod_tf1 import TF1Model, tfod_config, write_training_step

# 5 classes: what the synthetic evaluation data has
SPEC = ModelSpec("edgetpu", 5, 64, 0.25)
POLL = 0.05
CONN = "aws_default"   # the moto server (conftest)


def _training_job(folder: Path, steps=(100,)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.config").write_text(tfod_config(SPEC))
    for i, step in enumerate(steps):
        write_training_step(folder, TF1Model(SPEC, seed=i), step)
    return folder


def _upload(s3, bucket: str, prefix: str, folder: Path, names=None) -> None:
    """Upload as a training job's sync does: data and index first, the state file last."""
    files = sorted(p for p in folder.iterdir() if names is None or p.name in names)
    for path in sorted(files, key=lambda p: p.name == "checkpoint"):
        s3.upload_file(str(path), bucket, f"{prefix}/{path.name}")


def _events(trigger, count: int, quiet_s: float = 0.6, timeout: float = 60) -> list[dict]:
    """The first `count` events of a trigger, then `quiet_s` of polling with no more."""
    async def main():
        gen = trigger.run()
        out = []
        try:
            while len(out) < count:
                out.append((await asyncio.wait_for(gen.__anext__(), timeout)).payload)
            try:
                extra = await asyncio.wait_for(gen.__anext__(), quiet_s)
                raise AssertionError(f"unexpected event {extra.payload}")
            except asyncio.TimeoutError:
                pass
        finally:
            await gen.aclose()
        return out
    return asyncio.run(main())


def _watcher(store_uri: str, ledger_uri: str):
    from operators.triggers import CheckpointLandingTrigger
    return CheckpointLandingTrigger(store_uri=store_uri, poll_interval=POLL,
                                    ledger_store_uri=ledger_uri, model_name="mobiledet",
                                    notify=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from include.data.synth import synthesize
    root = tmp_path_factory.mktemp("tfod-data")
    synthesize(root / "data", 6, size=64, seed=0, val_fraction=0.5)
    return root / "data"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_each_step_lands_once_in_the_ledger_and_a_plan_claims_them(where, tmp_path, data,
                                                                    request):
    from include.pipeline.steps.plan import plan
    from include.store import open_store
    from include.store.ledger import Ledger

    job = tmp_path / "job"
    _training_job(job, steps=(100,))
    ledger_uri = str(tmp_path / "releases")
    if where == "local":
        store_uri, prefix = str(tmp_path / "ckpts"), None
        (tmp_path / "ckpts").mkdir()
        import shutil
        shutil.copytree(job, tmp_path / "ckpts" / "job")
    else:
        from s3server import s3_client
        s3 = s3_client(request.getfixturevalue("s3_server"))
        bucket = request.getfixturevalue("s3_bucket")
        store_uri, prefix = f"s3://{bucket}/ckpts", "ckpts/job"
        _upload(s3, bucket, prefix, job)

    [first] = _events(_watcher(store_uri, ledger_uri), 1)
    assert first["kind"] == "tfod-training"
    assert first["checkpoint_uri"].endswith("/job/model.ckpt-100")
    assert first["marker"].endswith("/job/model.ckpt-100.index") and first["ledger_id"]
    assert first["metadata"]["variant"] == "edgetpu"

    # the job writes step 200: one more event, for it alone
    write_training_step(job, TF1Model(SPEC, seed=1), 200)
    if where == "local":
        for name in ("model.ckpt-200.index", "model.ckpt-200.data-00000-of-00001",
                     "model.ckpt-200.meta", "checkpoint"):
            (tmp_path / "ckpts" / "job" / name).write_bytes((job / name).read_bytes())
    else:
        _upload(s3, bucket, prefix, job, names={"model.ckpt-200.index", "checkpoint",
                                                "model.ckpt-200.data-00000-of-00001"})
    [second] = _events(_watcher(store_uri, ledger_uri), 1)   # a restarted watcher, too
    assert second["checkpoint_uri"].endswith("/job/model.ckpt-200")
    assert second["ledger_id"] != first["ledger_id"]
    # and a third watcher (another restart) reports nothing: the ledger holds both
    assert _events(_watcher(store_uri, ledger_uri), 0) == []

    ledger = Ledger(open_store(ledger_uri), "mobiledet")
    records = {r["id"]: r for r in ledger.records()}
    assert set(records) == {first["ledger_id"], second["ledger_id"]}
    assert {r["state"] for r in records.values()} == {"landed"}

    # a run's plan claims both steps, each with its identity (step, files, folder)
    conf = {"reconcile": True, "landings": [{"uri": first["checkpoint_uri"],
                                             "ledger_id": first["ledger_id"]}],
            "checkpoints": [], "data": str(data), "store": ledger_uri,
            "precisions": ["float32"]}
    run = plan(conf, "r-tfod")
    by_step = {c.lineage["step"]: c for c in run.checkpoints}
    assert sorted(by_step) == [100, 200]
    for step, ckpt in by_step.items():
        assert ckpt.kind == "tfod-training" and ckpt.variant == "edgetpu" and not ckpt.qat
        assert ckpt.uri.endswith(f"/job/model.ckpt-{step}")
        assert ckpt.lineage["folder_uri"].endswith("/job")
        assert ckpt.spec["num_classes"] == 5 and ckpt.spec["input_size"] == 64
    assert by_step[100].fingerprint != by_step[200].fingerprint
    assert {r["state"] for r in ledger.records()} == {"claimed"}
    # claimed once: a second run finds the steps taken, by the first
    again = plan(dict(conf), "r-tfod-2")
    assert again.checkpoints == []
    assert again.already_claimed[0]["claimed_by"] == "r-tfod"


def test_an_s3_step_is_read_without_the_rest_of_the_folder(s3_server, s3_bucket, tmp_path):
    from include.tfod.source import find_step, local_step
    from s3server import s3_client

    job = _training_job(tmp_path / "job", steps=(100, 200))
    s3 = s3_client(s3_server)
    _upload(s3, s3_bucket, "ckpts/job", job)
    s3.put_object(Bucket=s3_bucket, Key="ckpts/job/events.out.tfevents.1", Body=b"x" * 4096)

    src = find_step(f"s3://{s3_bucket}/ckpts/job", CONN)            # the folder: its newest step
    assert src.step.step == 200
    older = find_step(f"s3://{s3_bucket}/ckpts/job/model.ckpt-100", CONN)
    assert older.step.step == 100 and older.step.fingerprint != src.step.fingerprint
    local = local_step(older, tmp_path / "work", CONN)
    names = sorted(p.name for p in local.iterdir())
    assert names == ["checkpoint", "model.ckpt-100.data-00000-of-00001",
                     "model.ckpt-100.index", "pipeline.config"]
    assert 'model_checkpoint_path: "model.ckpt-100"' in (local / "checkpoint").read_text()
    assert (local / "model.ckpt-100.index").read_bytes() == \
        (job / "model.ckpt-100.index").read_bytes()


@pytest.mark.slow
def test_a_training_folder_given_to_the_dag_is_converted_and_published(tmp_path, data,
                                                                        airflow_db):
    from include.deploy.airflow_env import run_dag
    from include.store import open_store

    job = _training_job(tmp_path / "job", steps=(100, 200))
    store = tmp_path / "releases"
    result = run_dag({"checkpoints": [str(job)], "data": str(data), "store": str(store),
                      "precisions": ["float32"],
                      "overrides": {"benchmark_runs": 3, "benchmark_warmup": 1, "threads": 2,
                                    "gates.min_map": 0}})
    summary = result["report"]
    report = json.loads(Path(summary["report_uri"].removeprefix("file://")).read_text())
    [ckpt] = report["checkpoints"]
    assert ckpt["kind"] == "tfod-training" and ckpt["lineage"]["step"] == 200
    assert ckpt["uri"] == str(job)                 # as given; the step is in its lineage
    [pub] = summary["published"]
    assert pub["status"] == "published", report["problems"]
    manifest = json.loads(open_store(str(store)).get_bytes(
        f"mobiledet/{pub['version']}/manifest.json"))
    assert "model.ckpt-200" in json.dumps(manifest), "the manifest names the step it came from"
