"""TFOD training folders as a landing source: which steps have landed, their identity, and
importing one. The folders are written by TF1's own Saver (keep_checkpoint_max and the
`checkpoint` state file included), one step at a time as a training job writes them."""
from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from include.mobiledet.spec import ModelSpec
from include.tfod.training import (complete_steps, import_training_dir, is_training_dir,
                                   local_listing, newest_step, steps_of, training_folders)
from tfod_tf1 import TF1Model, tfod_config, write_training_step

SPEC = ModelSpec("edgetpu", 3, 64, 0.25)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A training folder after steps 100, 200, 300 with keep_checkpoint_max 2, and the
    landed steps seen after each save."""
    folder = tmp_path_factory.mktemp("tfod-job") / "train"
    folder.mkdir()
    (folder / "pipeline.config").write_text(tfod_config(SPEC))
    seen = []
    for i, step in enumerate((100, 200, 300)):
        write_training_step(folder, TF1Model(SPEC, seed=i), step, keep=2)
        seen.append(steps_of(folder))
    return folder, seen


def _copy(folder, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


def test_each_new_step_lands_once_and_deleted_steps_are_no_error(job):
    folder, seen = job
    assert [[s.step for s in steps] for steps in seen] == [[100], [100, 200], [200, 300]]
    assert not (folder / "model.ckpt-100.index").exists()      # keep_checkpoint_max removed it
    # the same step keeps its identity from listing to listing; each step has its own
    assert seen[1][1] == seen[2][0]
    assert len({s.fingerprint for steps in seen for s in steps}) == 3
    newest = newest_step(folder)
    assert newest.step == 300 and newest == seen[2][1]
    assert newest.files == ("model.ckpt-300.index", "model.ckpt-300.data-00000-of-00001",
                            "pipeline.config")
    mtime = max((folder / f).stat().st_mtime for f in newest.files[:2])
    import datetime as dt
    assert newest.created == dt.datetime.fromtimestamp(int(mtime), dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert is_training_dir(folder) and not is_training_dir(folder / "pipeline.config")


def test_incomplete_steps_have_not_landed(job, tmp_path):
    folder = _copy(job[0], tmp_path)
    data = folder / "model.ckpt-300.data-00000-of-00001"
    full = data.read_bytes()
    data.write_bytes(full[:-1])                                  # one byte short
    assert [s.step for s in steps_of(folder)] == [200]
    data.write_bytes(full)
    index = folder / "model.ckpt-200.index"
    index_bytes = index.read_bytes()
    index.write_bytes(index_bytes[: len(index_bytes) // 2])      # index still uploading
    assert [s.step for s in steps_of(folder)] == [300]
    index.unlink()
    assert [s.step for s in steps_of(folder)] == [300]
    (folder / "model.ckpt-300.data-00000-of-00001").unlink()     # data not uploaded yet
    assert steps_of(folder) == []
    (folder / "pipeline.config").unlink()
    assert not is_training_dir(folder)


def test_a_step_lands_only_when_the_state_file_names_it(job, tmp_path):
    folder = _copy(job[0], tmp_path)
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-200"\n'
                                       'all_model_checkpoint_paths: "model.ckpt-200"\n')
    assert [s.step for s in steps_of(folder)] == [200]
    # paths of the machine that trained (TFOD on Colab writes absolute ones) count by name
    (folder / "checkpoint").write_text(
        'model_checkpoint_path: "/content/training/model.ckpt-300"\n'
        'all_model_checkpoint_paths: "/content/training/model.ckpt-200"\n'
        'all_model_checkpoint_paths: "/content/training/model.ckpt-300"\n'
        'all_model_checkpoint_timestamps: 1590000000.0\n')
    assert [s.step for s in steps_of(folder)] == [200, 300]
    (folder / "checkpoint").unlink()
    assert steps_of(folder) == [] and not is_training_dir(folder)


def test_a_store_listing_finds_the_folder_and_the_same_steps(job):
    folder, _ = job
    Item = namedtuple("Item", "key size modified")
    listing = [Item(f"jobs/run1/{name}", size, mtime) for name, size, mtime in
               local_listing(folder)]
    listing += [Item("jobs/run1/label_map.pbtxt", 40, 0.0),
                Item("jobs/run1/eval_0/events.out.tfevents.1", 10, 0.0),
                Item("other/ckpt/checkpoint.json", 10, 0.0),
                Item("jobs/.run2.partial-1/checkpoint", 10, 0.0)]
    assert training_folders(listing) == ["jobs/run1"]
    reads = []

    def read(key):
        reads.append(key)
        return (folder / key.split("/", 2)[2]).read_bytes()

    steps = complete_steps(listing, read, folder="jobs/run1")
    local = steps_of(folder)
    assert [(s.step, s.fingerprint, s.created) for s in steps] == \
        [(s.step, s.fingerprint, s.created) for s in local]
    assert steps[-1].prefix == "jobs/run1/model.ckpt-300"
    assert steps[-1].data_keys == ("jobs/run1/model.ckpt-300.data-00000-of-00001",)
    # what to copy to import the step elsewhere, the label map beside the config included
    assert steps[-1].files == ("jobs/run1/model.ckpt-300.index",
                               "jobs/run1/model.ckpt-300.data-00000-of-00001",
                               "jobs/run1/pipeline.config", "jobs/run1/label_map.pbtxt")
    # only small files are read: the state file, the config and the indexes
    assert all(not k.endswith(".data-00000-of-00001") for k in reads)
    dicts = [{"key": i.key, "size": i.size, "modified": i.modified} for i in listing]
    assert complete_steps(dicts, read, folder="jobs/run1") == steps


def test_import_a_step_of_a_training_folder(job, tmp_path):
    from include.errors import CheckpointError

    folder, seen = job
    result = import_training_dir(folder, tmp_path / "newest")
    assert result["step"] == 300 and result["fingerprint"] == seen[2][1].fingerprint
    meta = json.loads((tmp_path / "newest" / "checkpoint.json").read_text())
    assert (meta["fingerprint"], meta["created"]) == (seen[2][1].fingerprint, seen[2][1].created)
    assert meta["source"]["checkpoint"].endswith("model.ckpt-300")
    older = import_training_dir(folder, tmp_path / "older", step=200)
    assert older["fingerprint"] == seen[2][0].fingerprint
    # a copy made elsewhere keeps the identity the watcher recorded
    copy = _copy(folder, tmp_path)
    landed = seen[2][1]
    again = import_training_dir(copy, tmp_path / "again", identity=landed)
    assert (again["fingerprint"], again["created"]) == (landed.fingerprint, landed.created)
    with pytest.raises(CheckpointError, match="step 100 is not in the training folder"):
        import_training_dir(folder, tmp_path / "gone", step=100)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "pipeline.config").write_text(tfod_config(SPEC))
    with pytest.raises(CheckpointError, match="no complete step"):
        import_training_dir(empty, tmp_path / "none")
