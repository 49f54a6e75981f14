"""Checkpoint folders: weights, `checkpoint.json` (written last, the "complete" marker) and a
TFOD-style `pipeline.config`.

    CKPT/
      weights.h5          Keras weights of the detector (float, or QAT with fake-quant ranges)
      pipeline.config     TFOD text-format config describing the same model
      checkpoint.json     metadata + sha256 of the weights; present only when complete

A folder is written under a temporary name next to its destination and renamed into place
only after checkpoint.json is written, so a crash never leaves a folder that looks complete.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

from include import __version__
from include.atomic import staged_dir
from include.errors import CheckpointError
from include.mobiledet.spec import ModelSpec
from include.store.store import sha256_file

FORMAT = "mobiledet-checkpoint/1"
WEIGHTS = "weights.h5"
META = "checkpoint.json"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def save_checkpoint(model, out_dir, spec: ModelSpec, *, qat: bool, label_map: dict, steps: int,
                    data_fingerprint: str | None, training: dict | None = None,
                    parent: str | None = None, source: dict | None = None,
                    fingerprint: str | None = None, created: str | None = None) -> dict:
    """Write a complete checkpoint folder atomically; returns its metadata.

    source: where the weights came from when they were not trained here (a TFOD import:
    its checkpoint prefix, global step, pipeline.config sha256); stored as `source`.
    fingerprint, created: the identity of that source, kept instead of the ones computed here,
    so importing the same source twice gives the same checkpoint identity.
    """
    from include.convert.tfod import write_pipeline_config

    qat_scheme = None
    if qat:
        # The uint8 input contract (scale 1/128, zero point 128) lives in the input quantiser's
        # range; training moves it, so every saved QAT checkpoint carries the pinned range.
        from include.mobiledet.qat import pin_input_range, scheme_of
        pin_input_range(model)
        qat_scheme = scheme_of(model)
    with staged_dir(out_dir) as tmp:
        model.save_weights(str(tmp / WEIGHTS))
        write_pipeline_config(tmp / "pipeline.config", spec, qat=qat, label_map=label_map,
                              steps=steps)
        meta = {
            "format": FORMAT,
            **spec.to_dict(),
            "qat": bool(qat),
            "steps": int(steps),
            "label_map": {str(k): v for k, v in label_map.items()},
            "data_fingerprint": data_fingerprint,
            "created": utc_now(),
            "code_version": __version__,
            "parent_checkpoint": parent,
            "training": training or {},
            "weights": {WEIGHTS: sha256_file(tmp / WEIGHTS)},
        }
        if qat_scheme:
            meta["qat_scheme"] = qat_scheme
        if source:
            meta["source"] = source
        if created:
            meta["created"] = created
        meta["fingerprint"] = fingerprint or hashlib.sha256(
            json.dumps({k: meta[k] for k in ("weights", "variant", "num_classes", "input_size",
                                              "depth_multiplier", "qat")}, sort_keys=True).encode()
        ).hexdigest()
        (tmp / META).write_text(json.dumps(meta, indent=2))
    return meta


def read_checkpoint_meta(ckpt_dir) -> dict:
    ckpt = Path(ckpt_dir)
    if not ckpt.is_dir():
        raise CheckpointError("checkpoint folder does not exist.", where=str(ckpt),
                              fix="pass the folder written by `mobiledet train --out`.")
    meta_path = ckpt / META
    if not meta_path.is_file():
        raise CheckpointError(
            f"no {META} in the checkpoint folder, so it is not a complete checkpoint "
            "(training may have stopped before finishing).", where=str(ckpt),
            fix="train again, or pass a folder that holds checkpoint.json next to weights.h5.")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{META} is not valid JSON ({exc}).", where=str(meta_path),
                              fix="restore the file or train the checkpoint again.") from None
    from include.mobiledet.checkpoint_meta import validate_meta
    if not isinstance(meta, dict):
        validate_meta(meta, str(meta_path))   # names what it holds instead
    missing = [k for k in ("format", "variant", "num_classes", "input_size", "depth_multiplier",
                           "qat", "label_map", "weights") if k not in meta]
    if missing or meta.get("format") != FORMAT:
        raise CheckpointError(f"not a {FORMAT} file (missing {', '.join(missing) or 'format'}).",
                              where=str(meta_path), fix="train the checkpoint with this version.")
    return validate_meta(meta, str(meta_path))


def verify_weights(ckpt_dir, meta) -> None:
    ckpt = Path(ckpt_dir)
    for name, digest in meta["weights"].items():
        path = ckpt / name
        if not path.is_file():
            raise CheckpointError("weights file is missing.", where=str(path),
                                  fix="copy the whole checkpoint folder, or train again.")
        if sha256_file(path) != digest:
            raise CheckpointError(
                f"weights file does not match the sha256 recorded in {META} "
                f"({path.stat().st_size} bytes): it is truncated or was modified.",
                where=str(path), fix="copy the checkpoint folder again from its source.")


def spec_of(meta) -> ModelSpec:
    return ModelSpec.from_dict(meta)


def load_checkpoint(ckpt_dir, batch_size=None):
    """-> (keras model, metadata). The model is the QAT model for QAT checkpoints."""
    from include.mobiledet.ssd import build_detector

    meta = read_checkpoint_meta(ckpt_dir)
    verify_weights(ckpt_dir, meta)
    spec = spec_of(meta)
    if meta["qat"]:
        from include.mobiledet.qat import build_qat_detector
        model = build_qat_detector(spec, batch_size=batch_size, scheme=meta.get("qat_scheme"))
    else:
        model = build_detector(spec, batch_size=batch_size)
    path = Path(ckpt_dir) / WEIGHTS
    try:
        model.load_weights(str(path))
    except Exception as exc:  # h5py / Keras raise many types for bad files
        raise CheckpointError(f"weights could not be loaded into a {spec.variant} model "
                              f"({type(exc).__name__}: {exc}).", where=str(path),
                              fix="check that checkpoint.json matches the weights.") from None
    if meta["qat"]:
        from include.mobiledet.qat import pin_input_range
        pin_input_range(model)
    return model, meta
