"""mobiledet_retrain: the retrain stage on tiny real checkpoints and data, over a local
checkpoint store and S3 (moto), and the DAG once through Airflow with dag.test()."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from models import make_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = dict(steps=2, qat_steps=2, batch=2, budget_s=900)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from include.data.synth import synthesize

    root = tmp_path_factory.mktemp("retrain")
    synthesize(root / "data", 10, size=96, seed=0, val_fraction=0.4)
    edgetpu = make_checkpoint(root / "parents" / "edgetpu-float", variant="edgetpu", num_classes=5)
    cpu = make_checkpoint(root / "parents" / "cpu-float", variant="cpu", num_classes=5)
    return root, edgetpu, cpu


def _copy_with_created(src: Path, dst: Path, created: str) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "checkpoint.json").read_text())
    meta["created"] = created
    (dst / "checkpoint.json").write_text(json.dumps(meta, indent=2))
    return dst


def test_dag_schedule_from_the_environment():
    from dagfiles import import_dag_file

    env = {k: v for k, v in os.environ.items() if not k.startswith("MOBILEDET_")}
    env["MOBILEDET_RETRAIN_DATA"] = "s3://datasets/coco"
    got = import_dag_file("mobiledet_retrain.py", env)
    assert got["seconds"] < 2.0 and got["heavy"] == [], got
    assert (got["dag_id"], got["schedule"]) == ("mobiledet_retrain", "@daily")
    off = import_dag_file("mobiledet_retrain.py", {**env, "MOBILEDET_RETRAIN_SCHEDULE": "off"})
    assert off["schedule"] is None
    # no dataset to train on: no schedule, rather than a run that fails every day
    env.pop("MOBILEDET_RETRAIN_DATA")
    assert import_dag_file("mobiledet_retrain.py", env)["schedule"] is None


def test_settings_from_env():
    from include.errors import ConfigError
    from include.pipeline.retrain import settings_from_env

    s = settings_from_env({})
    assert s["store"] == str(REPO / "checkpoints")
    assert (s["schedule"], s["variants"], s["steps"]) == (None, ["edgetpu"], 200)  # no data
    data = {"MOBILEDET_RETRAIN_DATA": "/data/coco"}
    assert settings_from_env(data)["schedule"] == "@daily"
    s = settings_from_env({**data, "MOBILEDET_RETRAIN_SCHEDULE": "0 3 * * 1",
                           "MOBILEDET_RETRAIN_VARIANTS": "edgetpu, cpu,edgetpu",
                           "MOBILEDET_CHECKPOINT_STORE": "s3://b/ckpts",
                           "MOBILEDET_RETRAIN_STEPS": "50", "MOBILEDET_RETRAIN_QAT_STEPS": "0",
                           "MOBILEDET_RETRAIN_BUDGET_S": "120"})
    assert (s["schedule"], s["variants"], s["store"], s["steps"], s["qat_steps"],
            s["budget_s"]) == ("0 3 * * 1", ["edgetpu", "cpu"], "s3://b/ckpts", 50, 0, 120.0)
    for off in ("off", "None", ""):
        assert settings_from_env({"MOBILEDET_RETRAIN_SCHEDULE": off})["schedule"] is None
    with pytest.raises(ConfigError, match="MOBILEDET_RETRAIN_VARIANTS"):
        settings_from_env({"MOBILEDET_RETRAIN_VARIANTS": "edgetpu,tpu"})
    with pytest.raises(ConfigError, match="MOBILEDET_RETRAIN_STEPS"):
        settings_from_env({"MOBILEDET_RETRAIN_STEPS": "lots"})


def test_verdict_and_summary_say_worse_than_parent():
    from include.pipeline.retrain import _summary_line, verdict

    parent, child = {"AP": 0.3, "AP50": 0.5, "AP75": 0.3}, {"AP": 0.2, "AP50": 0.4, "AP75": 0.2}
    v = verdict(parent, child, "AP50")
    assert v == {"metric": "AP50", "delta": -0.1, "worse_than_parent": True,
                 "verdict": "worse than parent"}
    assert verdict(child, parent, "AP50")["verdict"] == "better than parent"
    assert verdict(parent, parent, "AP50")["worse_than_parent"] is False
    row = {"variant": "edgetpu", "qat": False, "name": "n", "steps": 3, "scores": child,
           "parent_scores": parent, "compared_with": "parent", **v}
    assert "0.400 vs 0.500 (parent): worse than parent; lands anyway" in _summary_line(row)


def test_newest_checkpoint_by_created_then_mtime():
    from include.pipeline.retrain import newest_checkpoint

    def c(key, variant, qat, created, modified):
        return {"key": key, "uri": key, "modified": modified,
                "meta": {"variant": variant, "qat": qat, "created": created}}
    found = [c("a", "edgetpu", False, "2026-01-01T00:00:00Z", "2026-03-01T00:00:00.000000Z"),
             c("b", "edgetpu", False, "2026-02-01T00:00:00Z", "2026-02-01T00:00:00.000000Z"),
             c("q", "edgetpu", True, "2026-05-01T00:00:00Z", "2026-05-01T00:00:00.000000Z"),
             c("x", "cpu", False, None, "2026-06-01T00:00:00.000000Z"),
             c("y", "cpu", False, None, "2026-04-01T00:00:00.000000Z")]
    assert newest_checkpoint(found, "edgetpu", False)["key"] == "b"
    assert newest_checkpoint(found, "edgetpu", True)["key"] == "q"
    assert newest_checkpoint(found, "cpu", False)["key"] == "x"      # no created: marker time
    assert newest_checkpoint(found, "dsp", False) is None


def test_land_checkpoint_writes_checkpoint_json_last_on_s3(tiny, s3_bucket, tmp_path):
    """Before checkpoint.json is uploaded, the landing rules do not see the folder."""
    from include.pipeline.landing import landed_checkpoints
    from include.pipeline.retrain import land_checkpoint
    from include.store.store import ArtifactStore

    seen = []

    class Recording(ArtifactStore):      # the real S3 store, noting what has landed per put
        def put_file(self, local_path, key):
            seen.append((key, [l.key for l in landed_checkpoints(self.list(""))]))
            return super().put_file(local_path, key)

    _, parent, _ = tiny
    store = Recording(f"s3://{s3_bucket}/ckpts")
    uri = land_checkpoint(store, parent, "edgetpu-float-x-retrain")
    assert uri == f"s3://{s3_bucket}/ckpts/edgetpu-float-x-retrain"
    assert seen[-1][0] == "edgetpu-float-x-retrain/checkpoint.json"
    assert all(landed == [] for _, landed in seen)               # never landed before the last
    assert [l.key for l in landed_checkpoints(store.list(""))] == ["edgetpu-float-x-retrain"]


def _check_child(row, store_files: set, name_prefix):
    assert row["name"].startswith(name_prefix) and row["name"].endswith("-retrain")
    assert {f"{row['name']}/checkpoint.json", f"{row['name']}/weights.h5",
            f"{row['name']}/pipeline.config"} <= store_files
    assert set(row["scores"]) == set(row["parent_scores"]) == {"AP", "AP50", "AP75"}
    assert row["verdict"] in ("worse than parent", "better than parent", "same as parent")
    assert row["worse_than_parent"] == (row["scores"]["AP50"] < row["parent_scores"]["AP50"])


def test_retrain_local_store_float_then_qat(tiny, tmp_path):
    from include.pipeline.retrain import retrain
    from include.store import open_store

    root, parent, _ = tiny
    store_dir = tmp_path / "checkpoints"
    shutil.copytree(parent, store_dir / "team" / "edgetpu-float")
    _copy_with_created(parent, store_dir / "edgetpu-older", "2020-01-01T00:00:00Z")
    result = retrain(str(store_dir), str(root / "data"), ["edgetpu"], **TINY_RUN)

    float_row, qat_row = result["checkpoints"]
    assert (float_row["qat"], qat_row["qat"]) == (False, True)
    assert float_row["parent_uri"] == f"file://{store_dir}/team/edgetpu-float"   # the newest
    assert qat_row["parent_uri"] == float_row["uri"]
    assert qat_row["compared_with"] == "its float init"
    files = set(open_store(str(store_dir)).list(""))
    _check_child(float_row, files, "edgetpu-float-")
    _check_child(qat_row, files, "edgetpu-qat-")
    assert len(result["summary"]) == 2 and result["skipped"] == []

    for row in (float_row, qat_row):
        folder = store_dir / row["name"]
        meta = json.loads((folder / "checkpoint.json").read_text())
        assert meta["qat"] is row["qat"] and meta["fingerprint"] == row["fingerprint"]
        assert meta["parent_checkpoint"] == row["parent_uri"]
        assert meta["retrain"]["scores"] == row["scores"]
        assert meta["retrain"]["worse_than_parent"] == row["worse_than_parent"]
        # checkpoint.json was written after every other file of the folder
        others = [p.stat().st_mtime_ns for p in folder.iterdir() if p.name != "checkpoint.json"]
        assert (folder / "checkpoint.json").stat().st_mtime_ns >= max(others)
        # and the new checkpoint is a complete, loadable checkpoint for the conversion
        from include.mobiledet.checkpoint import read_checkpoint_meta, verify_weights
        verify_weights(folder, read_checkpoint_meta(folder))


def test_retrain_s3_store_and_missing_parent(tiny, s3_bucket, tmp_path):
    from include.errors import CheckpointError
    from include.pipeline.landing import landed_checkpoints
    from include.pipeline.retrain import retrain
    from include.store import open_store, stage_dir

    root, _, cpu = tiny
    uri = f"s3://{s3_bucket}/ckpts"
    with pytest.raises(CheckpointError, match="nothing to retrain: no float cpu checkpoint"):
        retrain(uri, str(root / "data"), ["cpu"], **TINY_RUN)
    store = open_store(uri)
    stage_dir(store, str(cpu), "cpu-float")
    # Two Adam steps at learning rate 1.0 wreck the parent's weights: the child must score
    # worse on the held-out split, and still land.
    result = retrain(uri, str(root / "data"), ["cpu", "dsp"], **TINY_RUN, learning_rate=1.0)

    [row] = result["checkpoints"]                   # cpu has no QAT; no dsp checkpoint: skipped
    assert row["parent_uri"] == f"{uri}/cpu-float" and row["uri"].startswith(f"{uri}/cpu-float-")
    assert result["skipped"] == [{"variant": "dsp", "qat": False,
                                  "reason": f"no float dsp checkpoint in {uri}"}]
    files = set(store.list(""))
    _check_child(row, files, "cpu-float-")
    assert {l.key for l in landed_checkpoints(files)} == {"cpu-float", row["name"]}
    meta = store.read_json(f"{row['name']}/checkpoint.json")
    assert meta["retrain"]["parent"] == f"{uri}/cpu-float"
    assert row["parent_scores"]["AP50"] > 0
    assert row["worse_than_parent"] and meta["retrain"]["worse_than_parent"]
    assert "worse than parent; lands anyway" in result["summary"][0]


def test_dag_runs_once_with_dag_test(tiny, tmp_path, airflow_db):
    import importlib.util

    root, _, cpu = tiny
    store_dir = tmp_path / "checkpoints"
    shutil.copytree(cpu, store_dir / "cpu-float")
    spec = importlib.util.spec_from_file_location("mobiledet_retrain_dag",
                                                  REPO / "dags" / "mobiledet_retrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = module.dag.test(run_conf={"store": str(store_dir), "data": str(root / "data"),
                                    "variants": ["cpu"], "steps": 2, "qat_steps": 0,
                                    "batch": 2, "budget_s": 600})
    assert str(run.state) == "success"
    summary = next(ti for ti in run.get_task_instances() if ti.task_id == "summary")
    result = summary.xcom_pull(task_ids="summary")
    [row] = result["checkpoints"]
    assert (store_dir / row["name"] / "checkpoint.json").is_file()
    assert result["summary"][0].startswith("cpu float: cpu-float-")
