"""The publish step: each checkpoint's passing models as one release (`include.store.manifest`:
files, then the manifest by conditional create, then the consumer pointers), and the asset
events that announce them.

Each model's manifest entry carries under ``metrics.costs`` what its tasks cost (convert,
check, edgetpu) and what the checkpoint's shared tasks cost (plan, export, gate).
"""
from __future__ import annotations

from include import __version__
from include.pipeline.costs import task_meter
from include.pipeline.plan import RunPlan
from include.store import layout

UNKNOWN_CREATED = "1970-01-01T00:00:00Z"


def tool_versions() -> dict:
    """The code, TensorFlow, converter and LiteRT versions a release was made with."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"code_version": __version__}
    for name, pkg in (("tensorflow_version", "tensorflow"), ("converter_version", "tensorflow"),
                      ("litert_version", "ai-edge-litert")):
        try:
            out[name] = version(pkg)
        except PackageNotFoundError:
            out[name] = None
    return out


def publish_run(run: RunPlan, decided: list[dict]) -> list[dict]:
    """Publish each checkpoint's passing models as one version; one result per checkpoint."""
    run = RunPlan.of(run)
    with task_meter("publish", run) as meter:
        return _publish(run, decided, meter)


def _costs_of_models(run: RunPlan) -> dict:
    """{(ckpt_id or None, precision or None): {stage: brief record}} of the run so far."""
    from include.pipeline import costs

    out: dict = {}
    for r in costs.load(run.store, run.run_id):
        out.setdefault((r.get("ckpt_id"), r.get("precision")), {})[r["stage"]] = costs.brief(r)
    return out


def release_files(d: dict) -> dict:
    """The files a passing model's release entry holds, name -> store URI."""
    if not d["passed"]:
        return {}
    files = {"model.tflite": d["model_uri"], "conversion.json": d["conversion_uri"],
             "metrics.json": d["metrics_uri"], "validation.json": d["validation_uri"]}
    files.update({f"picture-{i}.png": uri for i, uri in enumerate(d.get("picture_uris") or [])})
    if (d.get("edgetpu") or {}).get("edgetpu_model_uri"):
        files["model_edgetpu.tflite"] = d["edgetpu"]["edgetpu_model_uri"]
    return files


def _publish(run: RunPlan, decided: list[dict], meter) -> list[dict]:
    from include.store import make_version
    from include.store.manifest import publish_release

    with meter.part("costs"):
        try:
            spent = _costs_of_models(run)
        except Exception:  # noqa: BLE001 - figures only
            spent = {}
    results = []
    for ckpt in run.checkpoints:
        entries = [d for d in decided if d["ckpt_id"] == ckpt.ckpt_id]
        if not entries:
            continue
        shared = {**spent.get((None, None), {}), **spent.get((ckpt.ckpt_id, None), {})}
        artifacts = []
        for d in entries:
            model_costs = {**shared, **spent.get((d["ckpt_id"], d["precision"]), {})}
            metrics = {**d["metrics"], "latency_ms": d["latency_ms"], "size_bytes": d["size_bytes"]}
            for key in ("latency_ratio_to_float32", "delegate"):
                if d.get(key) is not None:
                    metrics[key] = d[key]
            if model_costs:
                metrics["costs"] = model_costs
            artifacts.append({"variant": d["variant"], "precision": d["precision"],
                              "files": release_files(d), "passed": d["passed"],
                              "decision": d["decision"], "metrics": metrics})
        version = make_version(ckpt.fingerprint or "unknown", ckpt.created or UNKNOWN_CREATED)
        lineage = {"checkpoint_uri": ckpt.uri, "checkpoint_fingerprint": ckpt.fingerprint,
                   "checkpoint_kind": ckpt.kind, "qat": ckpt.qat, "spec": ckpt.spec,
                   "data_fingerprint": ckpt.data_fingerprint, "run_id": run.run_id,
                   "evaluation_data": run.data,
                   "evaluation_data_fingerprint": run.evaluation_data_fingerprint,
                   **ckpt.lineage, **tool_versions()}
        with meter.part("upload"):
            result = publish_release(run.store, run.config.model_name, version, artifacts,
                                     lineage, publisher=run.run_id, created=ckpt.created)
        results.append({"ckpt_id": ckpt.ckpt_id, **result.to_dict()})
    return results


def asset_of(store, model_name: str, version: str, manifest_uri: str, entry: dict,
             decision: dict | None = None) -> dict:
    """The asset event of one published model: name ``mobiledet/MODEL/VARIANT/PRECISION``, URI
    its consumer pointer, extra the manifest URI, version, model file and gate metric."""
    variant, precision = entry["variant"], entry["precision"]
    model_file = (entry.get("files") or {}).get("model.tflite") or {}
    decision = decision or {}
    return {"name": layout.published_asset_name(model_name, variant, precision),
            "uri": store.uri(layout.pointer_key(model_name, variant, precision)),
            "extra": {"model": model_name, "version": version, "variant": variant,
                      "precision": precision, "manifest_uri": manifest_uri,
                      "model_uri": model_file.get("uri"), "sha256": model_file.get("sha256"),
                      "metric": decision.get("metric"), "map": decision.get("map")}}


def published_assets(run: RunPlan, results: list[dict], decided: list[dict]) -> list[dict]:
    """One asset per model this run published (see :func:`asset_of`). A downstream DAG (an
    app build, a roll-out) schedules on it."""
    run = RunPlan.of(run)
    assets = []
    for result in results:
        if result.get("status") != "published":
            continue
        decisions = {(d["variant"], d["precision"]): d["decision"] for d in decided
                     if d["ckpt_id"] == result["ckpt_id"]}
        for entry in result.get("published", []):
            assets.append(asset_of(run.store, run.config.model_name, result["version"],
                                   result["manifest_uri"], entry,
                                   decisions.get((entry["variant"], entry["precision"]))))
    return assets
