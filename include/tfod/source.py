"""TFOD training folders as checkpoint URIs of a run (a local path or an s3:// prefix).

Two forms name a TFOD step:

* the training folder (``s3://bucket/jobs/job-7``): its newest landed step
  (`include.tfod.training`'s landing rule);
* a step's checkpoint prefix (``s3://bucket/jobs/job-7/model.ckpt-5000``): that step. The landing
  watcher reports each landed step in this form, so the ledger holds one record per step.

The plan step describes a step from its pipeline.config (no weights read); the export step
copies just that step's files (index, data shards, pipeline.config, the label map) into a local
folder with a `checkpoint` state file naming the step, and imports it there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from include.errors import CheckpointError
from include.tfod import training

#: the checkpoint prefixes TF1 TFOD writes (Estimator and the legacy train.py): model.ckpt-N
STEP_PREFIX = re.compile(r"^.+\.ckpt-(\d+)$")
KIND = "tfod-training"


@dataclass(frozen=True)
class StepSource:
    """One landed step of a training folder, and where that folder is."""
    folder_uri: str
    step: training.Step

    @property
    def uri(self) -> str:
        """The step's checkpoint-prefix URI (folder/model.ckpt-N)."""
        return f"{self.folder_uri.rstrip('/')}/{Path(self.step.prefix).name}"


def step_of(lineage: dict) -> training.Step:
    """The Step a checkpoint's lineage (Step.to_dict()) describes."""
    fields = dict(lineage)
    fields.pop("folder_uri", None)
    fields["data_keys"] = tuple(fields.get("data_keys") or ())
    return training.Step(**fields)


def _open(uri: str, conn_id: str | None):
    from include.store import open_store

    return open_store(uri, conn_id=conn_id)


def _steps(folder_uri: str, conn_id: str | None) -> list | None:
    """The landed steps of a training folder, or None when the URI is not one."""
    from include.errors import StoreError

    store = _open(folder_uri, conn_id)
    try:
        listing = store.list_entries("")
    except StoreError:
        return None
    if "" not in training.training_folders(listing):
        return None
    return training.complete_steps(listing, store.get_bytes)


def find_step(uri: str, conn_id: str | None = None, *, step: int | None = None
              ) -> StepSource | None:
    """The TFOD step a checkpoint URI names (module docstring), or None when the URI is neither
    a training folder nor a step's prefix in one. `step` picks a step of a folder. A training
    folder with no landed step (or without the step asked for) is a CheckpointError."""
    from include.store.uri import StoreURI

    where = StoreURI.parse(uri)
    if where.local and Path(where.path).is_dir() and not training.is_training_dir(where.path):
        return None                     # a checkpoint or export folder: nothing to list
    name = where.uri.rstrip("/").rpartition("/")[2]
    m = STEP_PREFIX.match(name)
    if m and step is None:
        folder_uri = where.uri.rstrip("/")[:-len(name) - 1]
        step = int(m.group(1))
    else:
        folder_uri = where.uri
    if m is None and where.local and not Path(where.path).is_dir():
        return None
    steps = _steps(folder_uri, conn_id)
    if steps is None:
        return None
    return StepSource(folder_uri, _pick(steps, step, folder_uri))


def _pick(steps: list, step: int | None, folder_uri: str) -> training.Step:
    if step is None:
        if not steps:
            raise CheckpointError(
                "no complete step in the TFOD training folder: its `checkpoint` state file "
                "names no model.ckpt-N whose .index and .data files are all there.",
                where=folder_uri,
                fix="wait until training writes its first checkpoint, or copy the `checkpoint` "
                    "file together with the model.ckpt-N.* files it names.")
        return steps[-1]
    for s in steps:
        if s.step == int(step):
            return s
    have = ", ".join(str(s.step) for s in steps) or "none"
    raise CheckpointError(
        f"step {int(step)} has not landed in the TFOD training folder, or is gone (complete "
        f"steps: {have}); training keeps only the newest steps (keep_checkpoint_max).",
        where=folder_uri, fix="convert one of the complete steps, or the folder for the newest.")


def checkpoint_info(src: StepSource, workdir: Path, conn_id: str | None = None) -> dict:
    """What the plan records for a step: variant, QAT, spec from its pipeline.config, the step's
    fingerprint and time, and its lineage (the step, its files, the folder)."""
    from include.convert.tfod import read_pipeline_config

    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / training.CONFIG_FILE
    config.write_bytes(_open(src.folder_uri, conn_id).get_bytes(src.step.config_key))
    cfg = read_pipeline_config(config)
    spec = cfg["spec"].to_dict() if hasattr(cfg["spec"], "to_dict") else dict(cfg["spec"])
    return {"kind": KIND, "variant": cfg["variant"], "qat": bool(cfg["qat"]),
            "fingerprint": src.step.fingerprint, "created": src.step.created,
            "spec": {k: spec[k] for k in ("variant", "num_classes", "input_size",
                                          "depth_multiplier") if k in spec},
            "data_fingerprint": None,
            "lineage": {**src.step.to_dict(), "folder_uri": src.folder_uri}}


def local_step(src: StepSource, workdir: Path, conn_id: str | None = None) -> Path:
    """A local training folder holding the step: the folder itself when it is local, else a
    copy of only the step's files with a `checkpoint` state file naming the step."""
    from include.store.uri import StoreURI

    where = StoreURI.parse(src.folder_uri)
    if where.local:
        return Path(where.path)
    store = _open(src.folder_uri, conn_id)
    out = Path(workdir) / "tfod-step"
    out.mkdir(parents=True, exist_ok=True)
    for key in src.step.files:
        store.get_file(key, str(out / Path(key).name))
    name = Path(src.step.prefix).name
    (out / training.STATE_FILE).write_text(f'model_checkpoint_path: "{name}"\n'
                                           f'all_model_checkpoint_paths: "{name}"\n')
    return out
