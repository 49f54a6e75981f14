"""The export step: a checkpoint -> the TFLite-ready export folder in the run's store (a TFOD
bundle or export folder is staged as it is); then the run's evaluation images at this
checkpoint's input size, decoded once for every check of the run (unless another export of the
run made them already).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from include.pipeline.costs import task_meter
from include.pipeline.plan import Checkpoint, RunPlan
from include.store import layout


def export(run: RunPlan, ckpt: Checkpoint) -> dict:
    """Export one checkpoint of the run; returns {ckpt_id, export_uri, graph, eval_inputs_uri}."""
    from include.pipeline.steps.plan import as_checkpoint

    run, ckpt = RunPlan.of(run), as_checkpoint(ckpt)
    with task_meter("export", run, ckpt) as meter:
        return _export(run, ckpt, meter)


def _export(run: RunPlan, ckpt: Checkpoint, meter) -> dict:
    from include.store.transfer import local_copy, stage_dir

    store = run.store
    key = layout.export_prefix(run.run_id, ckpt.ckpt_id)
    if ckpt.ledger_id:
        with meter.part("ledger"):   # converting: the lease starts again
            run.ledger.mark(ckpt.ledger_id, run.run_id, "converting")
    with tempfile.TemporaryDirectory(prefix="mobiledet-export-") as tmp:
        with meter.part("tensorflow import"):
            import tensorflow  # noqa: F401  (timed apart: every task process pays it once)
            from include.convert.source import open_graph
        if ckpt.kind == "tfod-training":   # only the step's files, then the import
            src = _import_step(run, ckpt, Path(tmp), meter)
        else:
            with meter.part("download"):
                src = local_copy(ckpt.uri, tmp, run.conn_id)
        if ckpt.kind in ("checkpoint", "tfod-training"):
            from include.mobiledet.export import export_checkpoint
            out = Path(tmp) / "export"
            with meter.part("export"):
                export_checkpoint(src, out)
        else:
            out = src
        with meter.part("graph check"):
            graph = open_graph(out)
        with meter.part("upload"):
            uri = stage_dir(store, str(out), key)
        size = ckpt.input_size or graph.to_dict().get("spec", {}).get("input_size")
        inputs_uri = ensure_eval_inputs(run, int(size), Path(tmp), meter) if size else None
    return {"ckpt_id": ckpt.ckpt_id, "export_uri": uri, "graph": graph.to_dict(),
            "eval_inputs_uri": inputs_uri}


def _import_step(run: RunPlan, ckpt: Checkpoint, tmp: Path, meter) -> Path:
    """The planned step of a TFOD training folder, imported into a checkpoint folder."""
    from include.tfod.source import StepSource, local_step, step_of
    from include.tfod.training import import_training_dir

    src = StepSource(ckpt.lineage["folder_uri"], step_of(ckpt.lineage))
    with meter.part("download"):
        folder = local_step(src, tmp, run.conn_id)
    out = tmp / "imported"
    with meter.part("tfod import"):
        import_training_dir(folder, out, identity=src.step)
    return out


def ensure_eval_inputs(run: RunPlan, size: int, tmp: Path, meter) -> str | None:
    """Decode and resize the run's evaluation images once per input size; every check reads
    them instead of downloading and decoding the images itself. Best effort: when this fails,
    each check decodes the images as before (and names any broken image itself)."""
    from include.pipeline.inputs import dataset_copy, images_of
    from include.quality.evaluate import preprocess_inputs

    store = run.store
    key = layout.eval_inputs_key(run.run_id, size)
    cfg = run.config
    try:
        with meter.part("download"):
            if store.is_file(key):
                return store.uri(key)
            data = dataset_copy(run.data, tmp / "eval-data", run.conn_id,
                                images=images_of(cfg.eval_max_images, evaluated_only=True))
        with meter.part("evaluation data"):
            inputs = preprocess_inputs(data, size, max_images=cfg.eval_max_images,
                                       threads=cfg.threads)
            path = inputs.save(tmp / f"eval-{size}.npz")
        with meter.part("upload"):
            return store.put_file(str(path), key)
    except Exception:  # noqa: BLE001 - an optimisation only; the checks report real problems
        return None
