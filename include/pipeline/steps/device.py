"""The device step: one checked model benchmarked on one phone, for each of its delegates.

The DAG has one task per phone of the deployment's config (`devices`), on the Celery queue of
the worker the phone is plugged into (include/deploy/task_policy.device_task_args). Each runs
after its model's check and calls :func:`device_benchmarks`: the model is downloaded from the
run's store, TFLite's `benchmark_model` runs on the phone over adb once per delegate
(`include.quality.device.benchmark_on_device`), and each result becomes a device record
(`device_record`) kept in the store at ``<model folder>/device/<device>.json``.

A delegate the model cannot run on, or that fell back to another one, is a record like any
other (its status and fallback say so; the gate reads it as "not measured"). A phone that
cannot be used (offline, unauthorized, missing, the binary will not run) fails the task: the
gate (all_done) then says "not measured" for that phone, with the task's error, and decides
the model on the rest. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from include.pipeline.costs import task_meter
from include.pipeline.plan import ConvertedModel, RunPlan

#: what a record sheds on its way into XCom (the stored record keeps everything)
BULKY = ("tool_lines", "delegate_lines", "log", "command")
#: a device record's figures the gate, the report, the manifest and the dashboard read
SUMMARY_KEYS = ("status", "delegate_applied", "delegation", "delegate_figure", "fallback",
                "init_ms", "first_ms", "runs", "model_memory_mb", "measured_on", "recorded_at")


def stage_of(device: str) -> str:
    """The stage name of device `device`'s task (cost and failure records)."""
    return f"device_{device}"


def device_config(run: RunPlan, name: str):
    """The run config's DeviceConfig named `name`, or None."""
    return next((d for d in run.config.devices if d.name == name), None)


def device_key(run: RunPlan, model, name: str) -> str:
    return f"{run.model_key(model)}/device/{name}.json"


def _slim(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in BULKY}


def device_benchmarks(run: RunPlan, model: ConvertedModel, name: str, *,
                      adb: str = "adb") -> dict:
    """Benchmark `model` on device `name` (from the run's config) with each of its delegates.

    Returns {device, serial, queue, status, benchmarks: [device record per delegate, without
    the tool's lines], uri (the stored records)}. status: measured (at least one delegate ran
    and gave a figure or a verdict), not_configured (the run's config lists no such device: a
    config changed after the DAG was parsed). Raises DeviceError / ConfigError when the phone
    or its settings cannot be used for any delegate (the first error)."""
    from include.pipeline.steps.plan import as_model

    run, model = RunPlan.of(run), as_model(model)
    device = device_config(run, name)
    if device is None:
        return {"device": name, "ckpt_id": model.ckpt_id, "precision": model.precision,
                "status": "not_configured", "benchmarks": [], "serial": None, "queue": None,
                "uri": None, "reason": f"the run's config lists no device {name!r}"}
    with task_meter(stage_of(name), run, model) as meter:
        return _benchmarks(run, model, device, adb, meter)


def _benchmarks(run: RunPlan, model: ConvertedModel, device, adb: str, meter) -> dict:
    from include.quality.device import benchmark_on_device, device_record
    from include.store.transfer import fetch

    cfg = run.config
    records, errors = [], []
    with tempfile.TemporaryDirectory(prefix="mobiledet-device-") as tmp:
        with meter.part("download"):
            local = Path(tmp) / f"{model.variant}-{model.precision}.tflite"
            path = fetch(model.model_uri, str(local), conn_id=run.conn_id, sha256=model.sha256)
        for delegate in device.delegates:
            with meter.part(f"benchmark {delegate}"):
                try:
                    parsed = benchmark_on_device(
                        path, device.serial, delegate=delegate,
                        benchmark_binary=device.benchmark_binary, timeout_s=device.timeout_s,
                        adb=adb, runs=cfg.benchmark_runs, warmup=cfg.benchmark_warmup)
                except Exception as exc:  # noqa: BLE001 - recorded; all failed: the task fails
                    errors.append(exc)
                    records.append({"kind": "device_benchmark", "status": "failed",
                                    "delegate_requested": delegate,
                                    "device": {"name": device.name, "serial": device.serial},
                                    "errors": [f"{type(exc).__name__}: {exc}"]})
                    continue
                records.append(device_record(parsed, device=device.name, delegate=delegate,
                                             serial=device.serial))
    if errors and len(errors) == len(records):
        raise errors[0]
    with meter.part("upload"):
        uri = run.store.write_json(device_key(run, model, device.name), {
            "model_uri": model.model_uri, "device": device.name, "serial": device.serial,
            "queue": device.queue, "records": records})
    return {"device": device.name, "ckpt_id": model.ckpt_id, "precision": model.precision,
            "serial": device.serial, "queue": device.queue, "status": "measured", "benchmarks": [_slim(r) for r in records], "uri": uri}


def summary(record: dict | None, device: str, delegate: str) -> dict:
    """One (device, delegate) figure as the manifest, report and dashboard keep it: device,
    delegate, latency_ms (the mean, None when not the delegate's own figure), status, model
    and android of the phone, fallback, ..."""
    record = record or {}
    info = record.get("device") if isinstance(record.get("device"), dict) else {}
    latency = (record.get("latency_ms") or {}).get("mean") \
        if isinstance(record.get("latency_ms"), dict) else None
    own = record.get("delegate_figure") is not False and record.get("status") == "ok"
    return {"device": device, "delegate": delegate,
            "latency_ms": latency if own else None,
            "measured_latency_ms": latency,
            "phone": info.get("model"), "android": info.get("android_version"),
            "serial": info.get("serial"),
            **{k: record.get(k) for k in SUMMARY_KEYS},
            "status": record.get("status") or "not_measured",
            "errors": record.get("errors") or []}


def figures(run: RunPlan, results: dict[str, dict | None], reasons: dict[str, str]) -> list:
    """Every configured (device, delegate) of the run with its figure: `results` are the
    device tasks' results by device name (None where a task left none), `reasons` why (by
    device name). A pair without a record is status not_measured with the reason."""
    out = []
    for device in run.config.devices:
        result = results.get(device.name) or {}
        by_delegate = {r.get("delegate_requested"): r for r in result.get("benchmarks") or []}
        for delegate in device.delegates:
            record = by_delegate.get(delegate)
            if record is None:
                why = result.get("reason") or reasons.get(device.name) or \
                    f"the {stage_of(device.name)} task left no result"
                record = {"status": "not_measured", "delegate_requested": delegate,
                          "errors": [why]}
            out.append({**summary(record, device.name, delegate), "_record": record})
    return out


def cell(figure: dict) -> str:
    """One figure as a table cell: "12.3" ms, "12.3 (fell back to xnnpack)", "not measured"."""
    value = figure.get("latency_ms")
    if value is not None:
        return f"{value:.1f}"
    measured = figure.get("measured_latency_ms")
    fallback = figure.get("fallback") or {}
    if measured is not None and fallback.get("to"):
        return f"{measured:.1f} (fell back to {fallback['to']})"
    if figure.get("status") == "delegate_rejected":
        return "rejected by the delegate"
    return "not measured"
