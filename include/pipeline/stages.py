"""Stages of one conversion run: plan -> export -> convert -> check -> edgetpu -> gate -> publish -> report.

Each stage takes and returns small JSON-able dicts. Artifacts move only through the artifact
store (`include.store`): a stage downloads what it needs into a temporary folder, works there,
and uploads its outputs under the run's staging prefix ``runs/<run_id>/<checkpoint_id>/...``.
So the same stages run in one process (dag.test, `mobiledet run`), on a LocalExecutor, or on
Celery/Kubernetes workers that share nothing but the store.

Every stage is idempotent: running it again for the same run writes the same keys, and
publishing the same checkpoint twice is a no-op.
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from include import __version__
from include.errors import CheckpointError, ConfigError

EDGETPU_PRECISIONS = ("int8", "uint8")


# ------------------------------------------------------------------------------------------
# run settings
# ------------------------------------------------------------------------------------------
def safe_run_id(run_id: str) -> str:
    """Airflow run ids hold ':' and '+'; store keys get a portable form."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") or "run"


def load_run_config(conf: dict):
    """The typed config for a run: config file (conf['config']) < env < run params."""
    from include.config import load_config

    overrides = {k: v for k, v in (conf.get("overrides") or {}).items() if v is not None}
    if conf.get("store"):
        overrides["store_uri"] = conf["store"]
    if conf.get("model_name"):
        overrides["model_name"] = conf["model_name"]
    return load_config(conf.get("config") or None, overrides=overrides)


def _config(settings: dict):
    from include.config import PipelineConfig
    return PipelineConfig.from_dict(settings["config"])


def _store(settings: dict):
    from include.store import open_store
    cfg = settings["config"]
    return open_store(cfg["store_uri"], conn_id=cfg.get("conn_id"))


def _local(uri: str, workdir: str, conn_id: str | None) -> Path:
    """A local path for a store URI or local path (downloaded when remote)."""
    if "://" not in uri or uri.startswith("file://"):
        return Path(uri[len("file://"):] if uri.startswith("file://") else uri)
    from include.store import materialize
    return Path(materialize(uri, workdir, conn_id=conn_id))


# ------------------------------------------------------------------------------------------
# plan
# ------------------------------------------------------------------------------------------
def describe_source(path: Path) -> dict:
    """What a checkpoint folder, export folder or TFOD bundle holds (variant, QAT, fingerprint)."""
    if (path / "checkpoint.json").is_file() or (path / "weights.h5").is_file():
        from include.mobiledet.checkpoint import read_checkpoint_meta
        meta = read_checkpoint_meta(path)
        return {"kind": "checkpoint", "variant": meta["variant"], "qat": bool(meta["qat"]),
                "fingerprint": meta.get("fingerprint"), "created": meta.get("created"),
                "spec": {k: meta[k] for k in ("variant", "num_classes", "input_size",
                                              "depth_multiplier")},
                "data_fingerprint": meta.get("data_fingerprint")}
    if (path / "tflite_graph.pb").is_file():
        from include.convert.source import open_graph
        src = open_graph(path)
        return {"kind": src.kind, "variant": src.spec.variant, "qat": bool(src.qat),
                "fingerprint": src.fingerprint, "created": None, "spec": src.spec.to_dict(),
                "data_fingerprint": None}
    raise CheckpointError(
        "not a checkpoint (checkpoint.json + weights.h5), export folder or TFOD bundle "
        "(pipeline.config + tflite_graph.pb).", where=str(path),
        fix="pass a folder written by `mobiledet train` or `mobiledet export`, or a TFOD bundle.")


def plan(conf: dict, run_id: str) -> dict:
    """Run params -> settings shared by every task, and one entry per checkpoint."""
    config = load_run_config(conf)
    checkpoints = conf.get("checkpoints") or []
    if isinstance(checkpoints, str):
        checkpoints = [checkpoints]
    if not checkpoints:
        raise ConfigError("no checkpoints given.", where="params.checkpoints",
                          fix="trigger the DAG with conf {\"checkpoints\": [\"/path/or/s3://uri\"]}.")
    if not conf.get("data"):
        raise ConfigError("no evaluation dataset given.", where="params.data",
                          fix="pass a COCO-format dataset folder (annotations/instances_*.json + "
                              "images) or its store URI as `data`.")
    variants = conf.get("variants") or None
    precisions = conf.get("precisions") or None
    rid = safe_run_id(run_id)
    entries, warnings = [], []
    with tempfile.TemporaryDirectory(prefix="mobiledet-plan-") as tmp:
        for uri in checkpoints:
            info = describe_source(_local(uri, tmp, config.conn_id))
            if variants and info["variant"] not in variants:
                warnings.append(f"{uri}: variant {info['variant']} not in {variants}; skipped.")
                continue
            if precisions:
                from include.config import check_precisions
                warnings += check_precisions(info["variant"], info["qat"], list(precisions),
                                             where=f"params.precisions for {uri}")
                chosen = list(precisions)
            else:
                chosen, warn = config.plan_precisions(info["variant"], info["qat"])
                warnings += warn
            fp = info["fingerprint"] or "unknown"
            ckpt_id = f"{info['variant']}-{'qat' if info['qat'] else 'float'}-{fp[:8]}"
            entries.append({**info, "uri": uri, "ckpt_id": ckpt_id, "precisions": chosen})
    ids = [e["ckpt_id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise ConfigError("the same checkpoint is listed twice.", where="params.checkpoints",
                          fix="list each checkpoint once.")
    return {"run_id": rid, "config": config.to_dict(), "data": conf["data"],
            "calibration": conf.get("calibration") or conf["data"],
            "checkpoints": entries, "warnings": warnings}


def jobs_of(settings: dict, exports: list[dict]) -> list[dict]:
    """One job per (checkpoint, precision), named variant/precision for the UI."""
    jobs = []
    by_id = {e["ckpt_id"]: e for e in exports}
    for ckpt in settings["checkpoints"]:
        exp = by_id[ckpt["ckpt_id"]]
        for precision in ckpt["precisions"]:
            suffix = "" if not ckpt["qat"] else " (qat)"
            jobs.append({"name": f"{ckpt['variant']}/{precision}{suffix}", "ckpt_id": ckpt["ckpt_id"],
                         "variant": ckpt["variant"], "qat": ckpt["qat"], "precision": precision,
                         "export_uri": exp["export_uri"]})
    return jobs


def _prefix(settings: dict, ckpt_id: str) -> str:
    return f"runs/{settings['run_id']}/{ckpt_id}"


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------
def export_stage(settings: dict, ckpt: dict) -> dict:
    """Checkpoint -> export folder in the store (a TFOD bundle or export folder is staged as is)."""
    from include.convert.source import open_graph
    from include.store import stage_dir

    store = _store(settings)
    conn = settings["config"].get("conn_id")
    key = f"{_prefix(settings, ckpt['ckpt_id'])}/export"
    with tempfile.TemporaryDirectory(prefix="mobiledet-export-") as tmp:
        src = _local(ckpt["uri"], tmp, conn)
        if ckpt["kind"] == "checkpoint":
            from include.mobiledet.export import export_checkpoint
            out = Path(tmp) / "export"
            export_checkpoint(src, out)
        else:
            out = src
        graph = open_graph(out)
        uri = stage_dir(store, str(out), key)
    return {"ckpt_id": ckpt["ckpt_id"], "export_uri": uri, "graph": graph.to_dict()}


# ------------------------------------------------------------------------------------------
# convert
# ------------------------------------------------------------------------------------------
def convert_stage(settings: dict, job: dict) -> dict:
    from include.convert.recipes import convert

    store = _store(settings)
    conn = settings["config"].get("conn_id")
    key = f"{_prefix(settings, job['ckpt_id'])}/{job['precision']}"
    with tempfile.TemporaryDirectory(prefix="mobiledet-convert-") as tmp:
        export = _local(job["export_uri"], tmp, conn)
        calibration = None
        if job["precision"] == "int8":
            calibration = _local(settings["calibration"], tmp, conn)
        model = Path(tmp) / "out" / "model.tflite"
        report = convert(export, job["precision"], model, calibration=calibration,
                         calibration_count=settings["config"].get("calibration_count", 100))
        model_uri = store.put_file(str(model), f"{key}/model.tflite")
        conv_uri = store.put_file(str(model.parent / "conversion.json"), f"{key}/conversion.json")
    return {**job, "model_uri": model_uri, "conversion_uri": conv_uri,
            "size_bytes": report["size_bytes"], "sha256": report["sha256"],
            "input": report["inputs"][0], "warnings": report["warnings"]}


# ------------------------------------------------------------------------------------------
# check: evaluate (against the float reference), validate, benchmark
# ------------------------------------------------------------------------------------------
def _reference_uri(settings: dict, model: dict) -> str | None:
    if model["precision"] == "float32":
        return None
    ckpt = next(c for c in settings["checkpoints"] if c["ckpt_id"] == model["ckpt_id"])
    if "float32" not in ckpt["precisions"]:
        return None
    return _store(settings).uri(f"{_prefix(settings, model['ckpt_id'])}/float32/model.tflite")


def check_stage(settings: dict, model: dict) -> dict:
    from include.quality.benchmark import benchmark
    from include.quality.evaluate import evaluate
    from include.quality.validate import validate

    cfg = settings["config"]
    store = _store(settings)
    conn = cfg.get("conn_id")
    key = f"{_prefix(settings, model['ckpt_id'])}/{model['precision']}"
    with tempfile.TemporaryDirectory(prefix="mobiledet-check-") as tmp:
        local = Path(tmp) / "model"
        local.mkdir()
        from include.store import fetch
        model_path = fetch(model["model_uri"], str(local / "model.tflite"), conn_id=conn)
        fetch(model["conversion_uri"], str(local / "conversion.json"), conn_id=conn)
        data = _local(settings["data"], tmp, conn)
        ref_uri = _reference_uri(settings, model)
        reference = None
        if ref_uri:
            reference = fetch(ref_uri, str(Path(tmp) / "reference" / "model.tflite"), conn_id=conn)
        metrics = evaluate(model_path, data, max_images=cfg.get("eval_max_images"),
                           threads=cfg.get("threads"), reference=reference,
                           out=str(Path(tmp) / "detections.json"), show_progress=False)
        validation = validate(model_path, data=data, out_dir=str(Path(tmp) / "validation"))
        bench = benchmark(model_path, threads=cfg.get("threads"),
                          warmup=cfg.get("benchmark_warmup", 3), runs=cfg.get("benchmark_runs", 20))
        metrics_doc = {"evaluation": metrics, "benchmark": bench}
        metrics_uri = store.write_json(f"{key}/metrics.json", metrics_doc)
        validation_uri = store.put_file(validation["result_json"], f"{key}/validation.json")
    summary = {k: metrics["metrics"].get(k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl",
                                                      "AR100")}
    return {**model, "metrics": summary, "drop": metrics.get("drop"),
            "agreement": metrics.get("agreement"), "images": metrics.get("images"),
            "contract_passed": bool(validation["success"]),
            "contract_failed": validation.get("failed", []),
            "latency_ms": bench["latency_ms"]["mean"], "latency": bench["latency_ms"],
            "metrics_uri": metrics_uri, "validation_uri": validation_uri}


# ------------------------------------------------------------------------------------------
# Edge TPU
# ------------------------------------------------------------------------------------------
def edgetpu_applies(model: dict) -> bool:
    return model["variant"] == "edgetpu" and model["precision"] in EDGETPU_PRECISIONS


def edgetpu_stage(settings: dict, model: dict) -> dict:
    """Offline mapping prediction + the real compiler where installed (integer EdgeTPU models)."""
    base = {"name": model["name"], "ckpt_id": model["ckpt_id"], "precision": model["precision"],
            "variant": model["variant"]}
    if not edgetpu_applies(model):
        return {**base, "status": "not_applicable"}
    from include.edgetpu.analyze import analyze_model
    from include.edgetpu.compiler import compile_model
    from include.store import fetch

    store = _store(settings)
    conn = settings["config"].get("conn_id")
    key = f"{_prefix(settings, model['ckpt_id'])}/{model['precision']}"
    with tempfile.TemporaryDirectory(prefix="mobiledet-edgetpu-") as tmp:
        model_path = fetch(model["model_uri"], str(Path(tmp) / "model.tflite"), conn_id=conn)
        prediction = analyze_model(model_path)
        result = compile_model(model_path, str(Path(tmp) / "compiled"))
        out = {**base, "status": result.status, "message": result.message,
               "prediction": {k: prediction[k] for k in ("total_ops", "ops_on_tpu", "ops_on_cpu",
                                                         "all_mapped_except_postprocess")}}
        if result.status == "compiled" and result.edgetpu_model:
            out["edgetpu_model_uri"] = store.put_file(str(result.edgetpu_model),
                                                      f"{key}/model_edgetpu.tflite")
            rep = result.report.to_dict() if hasattr(result.report, "to_dict") else result.report
            out.update(ops_total=rep.get("total_ops"), ops_on_tpu=rep.get("ops_on_tpu"),
                       ops_on_cpu=rep.get("ops_on_cpu"),
                       unmapped_ops=[{"op": r["operator"], "count": r["count"], "reason": r["status"]}
                                     for r in rep.get("operators", []) if not r.get("mapped")])
        else:
            out.update(ops_total=prediction["total_ops"], ops_on_tpu=prediction["ops_on_tpu"],
                       ops_on_cpu=prediction["ops_on_cpu"],
                       unmapped_ops=[{"op": r["operator"], "count": r["count"], "reason": r["status"]}
                                     for r in prediction["operators"] if not r.get("mapped")])
        out["report_uri"] = store.write_json(f"{key}/edgetpu.json", {
            "compiler": result.to_dict(), "prediction": prediction})
    return out


# ------------------------------------------------------------------------------------------
# gate
# ------------------------------------------------------------------------------------------
def gate_stage(settings: dict, checks: list[dict], edgetpu: list[dict]) -> list[dict]:
    """One decision per model, with every check's numbers; reads the last published baseline."""
    from include.gates import evaluate_gates
    from include.store import last_published

    config = _config(settings)
    store = _store(settings)
    metric = config.gates.metric
    tpu = {(e["ckpt_id"], e["precision"]): e for e in edgetpu}
    reference = {c["ckpt_id"]: c["metrics"].get(metric) for c in checks
                 if c["precision"] == "float32"}
    out = []
    for c in checks:
        e = tpu.get((c["ckpt_id"], c["precision"]))
        edgetpu_info = None
        if e and e.get("status") != "not_applicable":
            edgetpu_info = {k: e.get(k) for k in ("status", "ops_total", "ops_on_tpu", "ops_on_cpu",
                                                  "unmapped_ops")}
        entry_metrics = {"variant": c["variant"], "precision": c["precision"],
                         "map": c["metrics"].get(metric), "reference_map": reference.get(c["ckpt_id"]),
                         "contract_passed": c["contract_passed"], "latency_ms": c["latency_ms"],
                         "edgetpu": edgetpu_info}
        baseline = last_published(store, config.model_name, c["variant"], c["precision"])
        decision = evaluate_gates(entry_metrics, config, baseline)
        out.append({**c, "edgetpu": e, "decision": decision.to_dict(), "passed": decision.passed})
    return out


# ------------------------------------------------------------------------------------------
# publish
# ------------------------------------------------------------------------------------------
def _tool_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"code_version": __version__}
    for name, pkg in (("tensorflow_version", "tensorflow"), ("converter_version", "tensorflow"),
                      ("litert_version", "ai-edge-litert")):
        try:
            out[name] = version(pkg)
        except PackageNotFoundError:
            out[name] = None
    return out


def publish_stage(settings: dict, decided: list[dict]) -> list[dict]:
    """Publish each checkpoint's passing models as one version (manifest last, latest.json after)."""
    from include.store import make_version, publish

    config = _config(settings)
    store = _store(settings)
    results = []
    for ckpt in settings["checkpoints"]:
        entries = [d for d in decided if d["ckpt_id"] == ckpt["ckpt_id"]]
        if not entries:
            continue
        artifacts = []
        for d in entries:
            files = {"model.tflite": d["model_uri"], "conversion.json": d["conversion_uri"],
                     "metrics.json": d["metrics_uri"], "validation.json": d["validation_uri"]}
            if (d.get("edgetpu") or {}).get("edgetpu_model_uri"):
                files["model_edgetpu.tflite"] = d["edgetpu"]["edgetpu_model_uri"]
            artifacts.append({"variant": d["variant"], "precision": d["precision"], "files": files,
                              "passed": d["passed"], "decision": d["decision"],
                              "metrics": {**d["metrics"], "latency_ms": d["latency_ms"],
                                          "size_bytes": d["size_bytes"]}})
        version = make_version(ckpt["fingerprint"] or "unknown", ckpt.get("created") or "1970-01-01T00:00:00Z")
        lineage = {"checkpoint_uri": ckpt["uri"], "checkpoint_fingerprint": ckpt["fingerprint"],
                   "checkpoint_kind": ckpt["kind"], "qat": ckpt["qat"], "spec": ckpt["spec"],
                   "data_fingerprint": ckpt.get("data_fingerprint"), "run_id": settings["run_id"],
                   "evaluation_data": settings["data"], **_tool_versions()}
        result = publish(store, config.model_name, version, artifacts, lineage)
        results.append({"ckpt_id": ckpt["ckpt_id"], **result.to_dict()})
    return results


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------
RESULT_COLUMNS = ["model", "size MB", "metric", "drop vs float", "latency ms", "Edge TPU ops",
                  "gate"]


def result_rows(decided: list[dict], metric: str) -> list[list[Any]]:
    rows = []
    for d in decided:
        e = d.get("edgetpu") or {}
        if e.get("status") in (None, "not_applicable"):
            tpu = "-"
        else:
            tpu = f"{e.get('ops_on_tpu')}/{e.get('ops_total')}"
            tpu += " (predicted)" if e.get("status") != "compiled" else ""
        check = next((c for c in d["decision"]["checks"] if c["name"] == "map_drop"), {})
        drop = check.get("value")
        reasons = d["decision"].get("reasons") or []
        rows.append([d["name"], f"{d['size_bytes'] / 1e6:.2f}",
                     f"{d['metrics'].get(metric, 0) or 0:.3f}",
                     "-" if drop is None else f"{drop:+.3f}", f"{d['latency_ms']:.1f}", tpu,
                     "PASS" if d["passed"] else "FAIL: " + "; ".join(reasons)])
    return rows


def report_stage(settings: dict, decided: list[dict], published: list[dict]) -> dict:
    from include.console import format_table

    config = _config(settings)
    store = _store(settings)
    metric = config.gates.metric
    rows = result_rows(decided, metric)
    table = format_table(rows, [c if c != "metric" else metric for c in RESULT_COLUMNS])
    report = {"run_id": settings["run_id"], "metric": metric, "store": config.store_uri,
              "model_name": config.model_name, "checkpoints": settings["checkpoints"],
              "warnings": settings.get("warnings", []), "models": decided, "published": published,
              "table": table}
    key = f"runs/{settings['run_id']}/report"
    report_uri = store.write_json(f"{key}.json", report)
    lines = [f"# MobileDet conversion run {settings['run_id']}", "", "```", table, "```", ""]
    for p in published:
        lines.append(f"- {p['ckpt_id']}: {p['status']} as {p['model']}/{p['version']}"
                     + (f" ({p['manifest_uri']})" if p.get("manifest_uri") else ""))
    store.put_bytes("\n".join(lines).encode(), f"{key}.md")
    return {"report_uri": report_uri, "table": table, "published": [
        {k: p.get(k) for k in ("ckpt_id", "status", "model", "version", "manifest_uri")}
        for p in published], "passed": sum(d["passed"] for d in decided), "models": len(decided)}
