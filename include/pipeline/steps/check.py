"""The check step: evaluate a converted model (COCO mAP; once per run: drop and agreement against
the float reference are computed by the gate from the stored detections), validate its output
contract (Great Expectations), benchmark it in the LiteRT interpreter, draw its detections.
An integer model is benchmarked alongside the float32 model of the same checkpoint (the run's
`<checkpoint>/float32/model.tflite`), giving latency_ratio_to_float32 for the gate, and every
benchmark records its delegate coverage.

The model and the images are downloaded once for the three checks; the evaluation images come
decoded from the run's ``eval/<size>.npz`` where the export made it.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from include.pipeline.costs import task_meter
from include.pipeline.plan import ConvertedModel, RunPlan
from include.store import layout

SUMMARY_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
#: how long an integer model's check waits for the float32 model of its checkpoint to land
REFERENCE_WAIT_S = 120.0
REFERENCE_POLL_S = 2.0


def detections_key(run: RunPlan, model: ConvertedModel) -> str:
    return f"{run.model_key(model)}/detections.json"


def float32_reference(run: RunPlan, model: ConvertedModel, folder: Path,
                      wait_s: float = REFERENCE_WAIT_S) -> tuple[str | None, str | None]:
    """The float32 model of the same checkpoint in this run, downloaded into `folder`, for an
    integer model's benchmark (latency_ratio_to_float32): (path, None), or (None, why not).
    Models of a run convert in parallel; the float32 one converts in seconds, so an integer
    model's check waits up to `wait_s` for it to land."""
    import time

    from include.convert.recipes import RECIPES
    from include.store.transfer import fetch

    recipe = RECIPES.get(model.precision)
    if recipe is None or not recipe.integer:
        return None, None
    if "float32" not in run.checkpoint(model.ckpt_id).precisions:
        return None, "the run converts no float32 model of this checkpoint"
    from include.pipeline.steps.failures import failure_of

    key = f"{layout.model_prefix(run.run_id, model.ckpt_id, 'float32')}/model.tflite"
    float32 = {"ckpt_id": model.ckpt_id, "precision": "float32"}
    deadline = time.monotonic() + wait_s
    while not run.store.is_file(key):
        if failure_of(run, ("convert",), float32) is not None:
            return None, "the float32 model of this checkpoint failed to convert"
        if time.monotonic() >= deadline:
            return None, f"the float32 model of this checkpoint was not there within {wait_s:.0f} s"
        time.sleep(REFERENCE_POLL_S)
    folder.mkdir(parents=True, exist_ok=True)
    return fetch(run.store.uri(key), str(folder / "model.tflite"), conn_id=run.conn_id), None


def check(run: RunPlan, model: ConvertedModel) -> dict:
    """The model's check result: metrics, contract, latency and the URIs of what it stored."""
    from include.pipeline.steps.plan import as_model

    run, model = RunPlan.of(run), as_model(model)
    with task_meter("check", run, model) as meter:
        return _check(run, model, meter)


def _check(run: RunPlan, model: ConvertedModel, meter) -> dict:
    from include.pipeline.inputs import dataset_copy, images_of
    from include.store.transfer import fetch, local_copy, stage_dir

    cfg = run.config
    store = run.store
    key = run.model_key(model)
    with tempfile.TemporaryDirectory(prefix="mobiledet-check-") as tmp:
        with meter.part("import"):
            from include.quality.benchmark import benchmark
            from include.quality.evaluate import EvalInputs, evaluate
            from include.quality.validate import validate
        with meter.part("download"):
            local = Path(tmp) / "model"
            local.mkdir()
            model_path = fetch(model.model_uri, str(local / "model.tflite"), conn_id=run.conn_id,
                               sha256=model.sha256)
            fetch(model.conversion_uri, str(local / "conversion.json"), conn_id=run.conn_id)
            size = run.checkpoint(model.ckpt_id).input_size
            inputs_key = layout.eval_inputs_key(run.run_id, size) if size else None
            inputs_path = None
            if inputs_key and store.is_file(inputs_key):
                inputs_path = local_copy(store.uri(inputs_key), tmp, run.conn_id)
            data = dataset_copy(run.data, Path(tmp) / "data", run.conn_id,
                                images=images_of(cfg.eval_max_images,
                                                 decoded=inputs_path is not None))
        with meter.part("evaluation"):
            inputs = EvalInputs.load(inputs_path) if inputs_path else None
            metrics = evaluate(model_path, data, max_images=cfg.eval_max_images,
                               threads=cfg.threads, inputs=inputs,
                               out=str(Path(tmp) / "detections.json"), show_progress=False)
            del inputs
        with meter.part("validation"):
            validation = validate(model_path, data=data, out_dir=str(Path(tmp) / "validation"))
        with meter.part("reference download"):
            reference, reference_note = float32_reference(run, model, Path(tmp) / "reference")
        with meter.part("benchmark"):
            bench = benchmark(model_path, threads=cfg.threads, warmup=cfg.benchmark_warmup,
                              runs=cfg.benchmark_runs, reference=reference)
            if reference_note:
                bench["reference_note"] = reference_note
        # for people: detections drawn on a few evaluation images (published with the model,
        # shown by the dashboard)
        with meter.part("pictures"):
            from include.dashboard.pictures import release_pictures
            pictures = release_pictures(model_path, data, Path(tmp) / "pictures")
        with meter.part("upload"):
            detections = json.loads((Path(tmp) / "detections.json").read_text())
            detections_uri = store.write_json(detections_key(run, model), {
                "model_uri": model.model_uri, "metrics": metrics["metrics"],
                "category_ids": metrics.get("category_ids"), "images": metrics.get("images"),
                "max_images": cfg.eval_max_images, "detections": detections})
            metrics_doc = {"evaluation": metrics, "benchmark": bench}
            metrics_uri = store.write_json(f"{key}/metrics.json", metrics_doc)
            validation_uri = store.put_file(validation["result_json"], f"{key}/validation.json")
            # the Great Expectations Data Docs, for people
            data_docs_uri = stage_dir(store, str(Path(validation["data_docs"]).parent),
                                      f"{key}/data_docs")
            picture_uris = [store.put_file(str(p), f"{key}/pictures/{p.name}") for p in pictures]
    summary = {k: metrics["metrics"].get(k) for k in SUMMARY_METRICS}
    return {**model.to_dict(), "metrics": summary, "drop": metrics.get("drop"),
            "agreement": metrics.get("agreement"), "images": metrics.get("images"),
            "contract_passed": bool(validation["success"]),
            "contract_failed": [f"{r['name']}: {r['details']}" for r in validation["expectations"]
                                if not r["success"]],
            "latency_ms": bench["latency_ms"]["mean"], "latency": bench["latency_ms"],
            "latency_ratio_to_float32": bench.get("latency_ratio_to_float32"),
            "delegate": bench.get("delegate"),
            "metrics_uri": metrics_uri, "validation_uri": validation_uri,
            "data_docs_uri": data_docs_uri, "picture_uris": picture_uris,
            "detections_uri": detections_uri, "decoded_once": bool(metrics.get("decoded_once")),
            "evaluation_images_per_s": metrics.get("images_per_s")}
