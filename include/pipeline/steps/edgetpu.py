"""The Edge TPU step: the offline op-mapping prediction and the real compiler where installed,
for integer EdgeTPU models (it runs inside their check task).

:func:`edgetpu_compile` is the one implementation; the pipeline (:func:`edgetpu`) and
`EdgeTPUCompileOperator` call it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from include.convert.recipes import RECIPES
from include.pipeline.costs import NoMeter, task_meter
from include.pipeline.plan import ConvertedModel, RunPlan


def applies(job) -> bool:
    """The Edge TPU stage applies to the integer models of the EdgeTPU variant."""
    get = job.get if isinstance(job, dict) else lambda k: getattr(job, k)
    return get("variant") == "edgetpu" and RECIPES[get("precision")].integer


def not_applicable(job) -> dict:
    """The edgetpu result of a model the Edge TPU stage does not apply to."""
    return {**base(job), "status": "not_applicable"}


def base(job) -> dict:
    """What every edgetpu result names: the model it is about."""
    get = job.get if isinstance(job, dict) else lambda k: getattr(job, k)
    return {k: get(k) for k in ("name", "ckpt_id", "precision", "variant")}


def edgetpu(run: RunPlan, model: ConvertedModel) -> dict:
    """The Edge TPU result of one converted model of the run (see `edgetpu_compile`)."""
    from include.pipeline.steps.plan import as_model

    run, model = RunPlan.of(run), as_model(model)
    with task_meter("edgetpu", run, model) as meter:
        if not applies(model):
            with meter.part("not applicable"):
                return not_applicable(model)
        return {**base(model), **edgetpu_compile(
            model.model_uri, run.store.uri(run.model_key(model)), sha256=model.sha256,
            timeout_s=run.config.edgetpu_timeout_s, conn_id=run.conn_id, meter=meter)}


def _unmapped(rows) -> list[dict]:
    return [{"op": r["operator"], "count": r["count"], "reason": r["status"]}
            for r in rows if not r.get("mapped")]


def edgetpu_compile(model: str, output: str, *, sha256: str | None = None,
                    timeout_s: float = 180, conn_id: str | None = None, meter=None) -> dict:
    """The offline op-mapping prediction and the Edge TPU compiler (where installed) for the
    .tflite at `model` (a local path or store URI, checked against `sha256` when given); the
    compiled model_edgetpu.tflite (when it compiled) and edgetpu.json (compiler result and
    prediction) go into the folder `output`.

    Returns the compiler's status and message as they are (compiled, not_installed, failed,
    timeout), its op counts where it compiled (else the prediction's), and the prediction's
    counts under `prediction`, so a gate can decide on either."""
    from include.edgetpu.analyze import analyze_model
    from include.edgetpu.compiler import compile_model
    from include.store.transfer import fetch, upload, upload_json

    meter = meter or NoMeter()
    output = str(output).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="mobiledet-edgetpu-") as tmp:
        with meter.part("download"):
            model_path = fetch(model, str(Path(tmp) / "model.tflite"), conn_id=conn_id,
                               sha256=sha256)
        with meter.part("analysis"):
            prediction = analyze_model(model_path)
        with meter.part("compile"):
            # the compiler's precheck reuses this analysis instead of running it again
            result = compile_model(model_path, str(Path(tmp) / "compiled"),
                                   timeout_s=timeout_s, analysis=prediction)
        predicted = {"ops_total": prediction["total_ops"], "ops_on_tpu": prediction["ops_on_tpu"],
                     "ops_on_cpu": prediction["ops_on_cpu"],
                     "all_mapped_except_postprocess":
                         prediction["all_mapped_except_postprocess"],
                     "unmapped_ops": _unmapped(prediction["operators"])}
        out = {"status": result.status, "message": result.message,
               "prediction": predicted, "decided_by": "prediction"}
        with meter.part("upload"):
            if result.status == "compiled" and result.edgetpu_model:
                out["edgetpu_model_uri"] = upload(Path(result.edgetpu_model),
                                                  f"{output}/model_edgetpu.tflite", conn_id)
                rep = result.report.to_dict() if hasattr(result.report, "to_dict") \
                    else result.report
                out.update(ops_total=rep.get("total_ops"), ops_on_tpu=rep.get("ops_on_tpu"),
                           ops_on_cpu=rep.get("ops_on_cpu"), decided_by="compiler",
                           unmapped_ops=_unmapped(rep.get("operators", [])))
            else:
                out.update({k: predicted[k] for k in ("ops_total", "ops_on_tpu", "ops_on_cpu",
                                                      "unmapped_ops")})
            out["report_uri"] = upload_json({"compiler": result.to_dict(),
                                             "prediction": prediction},
                                            f"{output}/edgetpu.json", conn_id)
    return out
