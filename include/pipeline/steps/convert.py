"""The convert step: an export folder -> one .tflite per job, with conversion.json beside it.

:func:`convert_model` is the one conversion with the store on both sides; the pipeline's
convert task (:func:`convert`), `TFLiteConvertOperator` and the recipe search's callers use it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from include.pipeline.costs import NoMeter, task_meter
from include.pipeline.plan import ConvertedModel, Job, RunPlan


def convert(run: RunPlan, job: Job) -> ConvertedModel:
    """Convert one job of the run into ``runs/<run>/<checkpoint>/<precision>/model.tflite``."""
    from include.pipeline.steps.plan import as_job

    run, job = RunPlan.of(run), as_job(job)
    with task_meter("convert", run, job) as meter:
        out = convert_model(job.export_uri, job.precision,
                            run.store.uri(f"{run.model_key(job)}/model.tflite"),
                            calibration=run.calibration if job.calibrated else None,
                            calibration_count=run.config.calibration_count,
                            conn_id=run.conn_id, meter=meter)
        out.pop("precision")
        return ConvertedModel(**job.model_dump(), **out)


def convert_model(graph: str, precision: str, output: str, *, calibration: str | None = None,
                  calibration_count: int = 100, conn_id: str | None = None,
                  options: dict | None = None, output_type: str | None = None,
                  meter=None) -> dict:
    """One conversion with the store on both sides: the export folder or TFOD bundle `graph`
    (a local path or store URI) -> `output` (.../model.tflite, a local path or store URI) and
    conversion.json next to it. For int8, only the `calibration_count` sampled calibration
    images are downloaded.

    Returns {model_uri, conversion_uri, size_bytes, sha256, input, warnings, precision}."""
    from include.pipeline.inputs import coco_or_all, dataset_copy
    from include.store.transfer import local_copy, upload

    meter = meter or NoMeter()
    with tempfile.TemporaryDirectory(prefix="mobiledet-convert-") as tmp:
        with meter.part("tensorflow import"):
            import tensorflow  # noqa: F401  (timed apart: every task process pays it once)
            from include.convert.converter import convert as convert_graph
            from include.convert.recipes import RECIPES, conversion_json_path, \
                conversion_json_uri
        with meter.part("download"):
            export = local_copy(graph, tmp, conn_id)
            local_calibration = None
            if calibration is not None and RECIPES[precision].calibrated:
                from include.convert.calibration import calibration_files

                local_calibration = dataset_copy(
                    calibration, Path(tmp) / "calibration", conn_id,
                    images=lambda root: coco_or_all(
                        root, lambda: calibration_files(root, calibration_count)))
        model = Path(tmp) / "out" / "model.tflite"
        with meter.part("conversion"):
            report = convert_graph(export, precision, model, calibration=local_calibration,
                                   calibration_count=calibration_count, options=options,
                                   output_type=output_type)
        # conversion.json times the converter itself (for int8 that includes the calibration
        # passes); the rest is reading the graph, decoding calibration images, the smoke run
        converter_s = report.get("seconds")
        part = meter.parts.get("conversion", {}).get("wall_s", 0.0)
        if isinstance(converter_s, (int, float)) and 0 < converter_s <= part:
            meter.split("conversion", {"graph load, calibration images, smoke run":
                                       part - converter_s})
            if RECIPES[precision].calibrated:
                meter.rename("conversion", "calibration and conversion")
        with meter.part("upload"):
            model_uri = upload(model, output, conn_id)
            conv_uri = upload(conversion_json_path(model), conversion_json_uri(str(output)),
                              conn_id)
    return {"model_uri": model_uri, "conversion_uri": conv_uri, "precision": precision,
            "size_bytes": report["size_bytes"], "sha256": report["sha256"],
            "input": report["inputs"][0], "warnings": report["warnings"]}
