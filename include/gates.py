"""Release gates: decide whether one converted model may be published. Pure logic, no TF.

`evaluate_gates(entry_metrics, config, baseline)` runs every check and returns a GateDecision
whose checks all appear, each with its value and threshold, whether or not it applies:

==================  =========================================================================
map_drop            gate metric drop against the run's float32 reference <= max_map_drop[prec]
min_map             gate metric >= gates.min_map (0 = off)
contract            the output-contract validation passed (gates.require_contract)
latency             measured latency <= gates.max_latency_ms (None = off)
latency_ratio       an integer model's latency_ratio_to_float32 (p50 against the float32 model
                    of the same checkpoint, interleaved in one benchmark) <=
                    gates.max_latency_ratio (default 1.0: not slower than float32) on the cpu
                    and gpu variants; on edgetpu and dsp the ratio is "reported", not gated
                    (the host CPU is not the accelerator); "not_measured" when absent
edgetpu_mapping     every op except the SSD post-process maps to the Edge TPU, decided by the
                    compiler where it ran, else by the offline prediction (gates.edgetpu:
                    auto | compiler | prediction | off); the detail names which decided
regression          gate metric drop against the newest comparable release (same model,
                    variant, precision, source kind and evaluation dataset) <=
                    gates.regression_tolerance; none comparable: the detail says why
==================  =========================================================================

`entry_metrics` keys: variant, precision, map (the gate metric's value), reference_map (the
float32 value of the same run), contract_passed, latency_ms, latency_ratio_to_float32, and edgetpu (absent or None when
not applicable): {status: compiled|not_installed|failed|timeout|skipped, message, ops_total,
ops_on_tpu, ops_on_cpu, unmapped_ops: [name or {op|name, count, reason}], prediction: {the same
counts from the offline analysis}}, contract_failures (what the contract check found), and
baseline_reason (why there is no baseline). `baseline` is what
`include.store.comparable_baseline` returns (needs `map`, optionally `metric` and `version`).
Everything in a decision is plain JSON (it is written into the release manifest).
`device_latency_check(device, record)` is the latency gate of one device benchmark (a phone,
`include/quality/device.py`), checked apart from `evaluate_gates`: a missing or fallback figure
is "not measured" and passes, said so, unless the device's `max_device_latency_ms` is set.
`edgetpu_mapping_check(counts, config)` is the edgetpu_mapping check on the offline
prediction's op counts alone, for models that have not reached the gate yet: the int8 recipe
search rejects a float-fallback candidate with it (include/convert/search.py).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

CHECK_NAMES = ("map_drop", "min_map", "contract", "latency", "latency_ratio", "edgetpu_mapping",
               "regression")
#: integer models are gated on their latency against float32 on these variants (their CPU
#: or GPU runs them); the accelerators' ratio on the host CPU says nothing about the device
RATIO_GATED_VARIANTS = ("cpu", "gpu")
# The SSD post-process op always runs on the CPU; the compiler's log lists it as CUSTOM.
POSTPROCESS_OPS = ("TFLite_Detection_PostProcess", "CUSTOM")
EDGETPU_STATUSES = ("compiled", "not_installed", "failed", "timeout", "skipped")
_EPS = 1e-9
#: below this the metric says the model finds nothing at all
NOTHING_DETECTED = 0.01


@dataclass
class GateCheck:
    """One check. status: pass | fail | off | not_applicable | not_installed | skipped |
    no_baseline | not_comparable | not_measured | reported (the last eight pass)."""

    name: str
    passed: bool
    value: Any
    threshold: Any
    detail: str
    status: str = "pass"


@dataclass
class GateDecision:
    variant: str
    precision: str
    metric: str
    map: float | None
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def check(self, name: str) -> GateCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "GateDecision":
        data = dict(data)
        data["checks"] = [GateCheck(**c) for c in data.get("checks", [])]
        return cls(**data)

    def summary(self) -> str:
        head = f"{self.variant}/{self.precision}: {'PASS' if self.passed else 'FAIL'}"
        return head + ("" if self.passed else " - " + "; ".join(self.reasons))


def _num(value: Any) -> float | None:
    """A finite float, or None (missing, NaN, not a number). numpy scalars become floats."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _gates_of(config):
    return getattr(config, "gates", config)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------
def _check_map_drop(m, ref, precision, metric, gates) -> GateCheck:
    limit = gates.max_drop(precision)
    if ref is None and precision == "float32":
        ref = m  # float32 is the reference itself
    if m is None:
        return GateCheck("map_drop", False, None, limit, f"no {metric} was measured for this "
                         "model, so its drop cannot be checked", "fail")
    if ref is None:
        return GateCheck("map_drop", False, None, limit, f"no float32 reference {metric} from "
                         "this run to compare with", "fail")
    drop = ref - m
    ok = drop <= limit + _EPS
    detail = (f"{metric} {_fmt(m)} vs float32 reference {_fmt(ref)}: drop {drop:.3f}, "
              f"limit {limit:.3f} for {precision}")
    return GateCheck("map_drop", ok, _r(drop), limit, detail, "pass" if ok else "fail")


def _check_min_map(m, metric, gates) -> GateCheck:
    floor = gates.min_map
    if floor <= 0:
        return GateCheck("min_map", True, _r(m), floor, "gates.min_map is 0: off", "off")
    if m is None:
        return GateCheck("min_map", False, None, floor, f"no {metric} was measured", "fail")
    ok = m >= floor - _EPS
    detail = f"{metric} {_fmt(m)} {'>=' if ok else '<'} minimum {floor:.3f}"
    if not ok and m < NOTHING_DETECTED:
        detail += ": the model detects nothing (an untrained or broken checkpoint)"
    return GateCheck("min_map", ok, _r(m), floor, detail, "pass" if ok else "fail")


def _check_contract(entry, gates) -> GateCheck:
    value = entry.get("contract_passed")
    value = None if value is None else bool(value)
    failures = entry.get("contract_failures")
    if not gates.require_contract:
        return GateCheck("contract", True, value, True, "gates.require_contract is false: off",
                         "off")
    if value is None:
        return GateCheck("contract", False, None, True, "the output contract was not validated",
                         "fail")
    detail = "output contract validated" if value else "output contract validation failed"
    if not value and failures:
        detail += ": " + "; ".join(str(f) for f in failures)
    return GateCheck("contract", value, value, True, detail, "pass" if value else "fail")


def _check_latency(entry, gates) -> GateCheck:
    lat = _num(entry.get("latency_ms"))
    limit = gates.max_latency_ms
    if limit is None:
        return GateCheck("latency", True, _r(lat), None, "gates.max_latency_ms is not set: off",
                         "off")
    if lat is None:
        return GateCheck("latency", False, None, limit, "latency was not measured", "fail")
    ok = lat <= limit + _EPS
    return GateCheck("latency", ok, _r(lat), limit,
                     f"{lat:.2f} ms {'<=' if ok else '>'} limit {limit:.2f} ms",
                     "pass" if ok else "fail")


def latency_ratio_check(ratio, variant: str, precision: str, config) -> GateCheck:
    """The `latency_ratio` check: an integer model's latency against its float32 model (module
    docstring). `config`: a PipelineConfig or GateConfig; `ratio`: latency_ratio_to_float32 of
    the model's benchmark, or None."""
    from include.convert.recipes import RECIPES

    gates = _gates_of(config)
    name = "latency_ratio"
    limit = _num(getattr(gates, "max_latency_ratio", 1.0))
    value = _num(ratio)
    recipe = RECIPES.get(precision)
    if recipe is None or not recipe.integer:
        return GateCheck(name, True, _r(value), limit, f"{precision} is not an integer model: "
                         "not applicable", "not_applicable")
    if value is None:
        return GateCheck(name, True, None, limit, f"no latency ratio to float32 was measured "
                         f"for {variant}/{precision} (no float32 model of the same checkpoint "
                         "was benchmarked alongside)", "not_measured")
    what = f"{variant}/{precision} runs at {value:.2f}x the latency of its float32 model"
    if variant not in RATIO_GATED_VARIANTS:
        return GateCheck(name, True, _r(value), limit, f"{what} on the host CPU; reported, not "
                         f"gated: the {variant} accelerator runs the integer model",
                         "reported")
    if limit is None:
        return GateCheck(name, True, _r(value), None,
                         f"{what}; gates.max_latency_ratio is not set: off", "off")
    ok = value <= limit + _EPS
    detail = f"{what} ({'<=' if ok else '>'} limit {limit:.2f}x)"
    if not ok:
        detail += ": the integer model is slower than float32 on the CPU"
    return GateCheck(name, ok, _r(value), limit, detail, "pass" if ok else "fail")


def _op_name(op) -> str:
    if isinstance(op, Mapping):
        return str(op.get("op") or op.get("name") or op.get("operator") or "?")
    return str(op)


def _op_count(op) -> int:
    if isinstance(op, Mapping):
        count = _num(op.get("count"))
        return int(count) if count is not None else 1
    return 1


def _edgetpu_mode(gates) -> str:
    mode = getattr(gates, "edgetpu", "auto")
    if mode == "auto" and getattr(gates, "require_edgetpu_compiler", False):
        return "compiler"
    return mode


def _check_edgetpu(entry, gates) -> GateCheck:
    """Edge TPU op mapping, decided by the compiler or by the offline prediction.

    gates.edgetpu: ``auto`` (default) uses the compiler's result where it ran and the offline
    prediction where it is not installed; ``compiler`` needs the compiler (not installed
    fails); ``prediction`` always decides on the prediction; ``off`` skips the check. The
    detail says which one decided.
    """
    tpu = entry.get("edgetpu")
    name = "edgetpu_mapping"
    if not tpu:
        return GateCheck(name, True, None, None, "not compiled for the Edge TPU: not applicable",
                         "not_applicable")
    mode = _edgetpu_mode(gates)
    if mode == "off":
        return GateCheck(name, True, None, 0, "gates.edgetpu is off", "off")
    status = tpu.get("status")
    prediction = tpu.get("prediction")
    if mode == "prediction" or (mode == "auto" and status == "not_installed"):
        if not prediction:
            return GateCheck(name, False, None, 0, "decided by: offline prediction; but the "
                             "Edge TPU stage made no prediction", "fail")
        why = ("gates.edgetpu is 'prediction'" if mode == "prediction"
               else "edgetpu_compiler is not installed")
        return _mapping_check(prediction, gates, f"decided by: offline prediction ({why})")
    if status == "not_installed":  # mode == compiler
        return GateCheck(name, False, None, 0, "decided by: compiler; gates.edgetpu is "
                         "'compiler' but edgetpu_compiler is not installed, so op mapping was "
                         "not checked", "not_installed")
    if status == "skipped":
        why = tpu.get("message") or tpu.get("reason") or "compilation was skipped"
        return GateCheck(name, True, None, 0, str(why), "skipped")
    if status in ("failed", "timeout"):
        ok = not gates.require_edgetpu_mapped
        err = tpu.get("message") or tpu.get("error") or tpu.get("detail") or "no message"
        what = "timed out" if status == "timeout" else "failed"
        return GateCheck(name, ok, None, 0, f"decided by: compiler; the Edge TPU compiler "
                         f"{what}: {err}", "off" if ok else "fail")
    if status != "compiled":
        return GateCheck(name, False, None, 0, f"unknown Edge TPU status {status!r}; expected "
                         f"one of {', '.join(EDGETPU_STATUSES)}", "fail")
    return _mapping_check(tpu, gates, "decided by: compiler")


def _mapping_check(counts_of: Mapping, gates, source: str) -> GateCheck:
    """The mapping verdict from op counts (compiler report or prediction alike)."""
    name = "edgetpu_mapping"
    total = counts_of.get("ops_total", counts_of.get("total_ops"))
    on_tpu = counts_of.get("ops_on_tpu")
    on_cpu = _num(counts_of.get("ops_on_cpu"))
    listed = counts_of.get("unmapped_ops")
    if listed is not None:
        bad = [op for op in listed if _op_name(op) not in POSTPROCESS_OPS]
        bad_count = sum(_op_count(op) for op in bad)
        bad_names = sorted({_op_name(op) for op in bad})
    elif on_cpu is not None:  # counts only: the post-process op is expected on the CPU
        bad_count, bad_names = max(0, int(on_cpu) - 1), []
    else:
        ok = not gates.require_edgetpu_mapped
        return GateCheck(name, ok, None, 0,
                         f"{source}; no op counts were reported, so mapping cannot be checked",
                         "fail" if not ok else "off")
    counts = f"{source}; {on_tpu}/{total} ops on the Edge TPU, {_fmt_int(on_cpu)} on the CPU"
    if bad_count == 0:
        return GateCheck(name, True, 0, 0, counts + " (only the SSD post-process op on the CPU)",
                         "pass")
    detail = counts + f"; {bad_count} op(s) besides the post-process stay on the CPU"
    if bad_names:
        detail += ": " + ", ".join(bad_names)
    if not gates.require_edgetpu_mapped:
        return GateCheck(name, True, bad_count, 0,
                         detail + " (gates.require_edgetpu_mapped is false: off)", "off")
    return GateCheck(name, False, bad_count, 0, detail, "fail")


def edgetpu_mapping_check(counts: Mapping, config,
                          source: str = "decided by: offline prediction") -> GateCheck:
    """The `edgetpu_mapping` check on op counts alone, as the gate decides a prediction: for
    models that have not reached the gate yet (the int8 recipe search's candidates, whose
    float fallback makes the Edge TPU compiler cut the graph at the first float op). `counts`:
    ops_total (or total_ops), ops_on_tpu, ops_on_cpu, optionally unmapped_ops. gates.edgetpu
    'off' turns it off; `require_edgetpu_mapped` false reports the cost and passes."""
    gates = _gates_of(config)
    if _edgetpu_mode(gates) == "off":
        return GateCheck("edgetpu_mapping", True, None, 0, "gates.edgetpu is off", "off")
    return _mapping_check(counts, gates, source)


def _fmt_int(value) -> str:
    return "?" if value is None else str(int(value))


def _check_regression(m, metric, baseline, variant, precision, gates,
                      reason: str | None = None) -> GateCheck:
    tol = gates.regression_tolerance
    if not baseline:
        return GateCheck("regression", True, None, tol, reason or f"first release of "
                         f"{variant}/{precision}: no published baseline", "no_baseline")
    base = _num(baseline.get("map"))
    base_metric = baseline.get("metric")
    version = baseline.get("version", "?")
    if base is None or (base_metric and base_metric != metric):
        what = f"measured {base_metric}" if base_metric and base_metric != metric else \
            f"has no {metric} value"
        return GateCheck("regression", True, None, tol, f"baseline {version} {what}; the gates "
                         f"read {metric}: not comparable", "not_comparable")
    if m is None:
        return GateCheck("regression", False, None, tol, f"no {metric} was measured to compare "
                         f"with release {version}", "fail")
    drop = base - m
    ok = drop <= tol + _EPS
    detail = (f"{metric} {_fmt(m)} vs {_fmt(base)} in release {version}: drop {drop:.3f}, "
              f"tolerance {tol:.3f}")
    return GateCheck("regression", ok, _r(drop), tol, detail, "pass" if ok else "fail")


_REASON = {
    "map_drop": "{metric} drop against the float32 reference is too large: {detail}",
    "min_map": "{metric} is below the minimum: {detail}",
    "contract": "output contract: {detail}",
    "latency": "too slow: {detail}",
    "latency_ratio": "slower than float32: {detail}",
    "edgetpu_mapping": "Edge TPU mapping: {detail}",
    "regression": "regression against the last release: {detail}",
}


def evaluate_gates(entry_metrics: Mapping, config, baseline: Mapping | None = None
                   ) -> GateDecision:
    """Run every gate on one converted model; `config` is a PipelineConfig or GateConfig."""
    gates = _gates_of(config)
    entry = dict(entry_metrics or {})
    variant = str(entry.get("variant", "?"))
    precision = str(entry.get("precision", "?"))
    metric = gates.metric
    m = _num(entry.get("map"))
    ref = _num(entry.get("reference_map"))
    checks = [
        _check_map_drop(m, ref, precision, metric, gates),
        _check_min_map(m, metric, gates),
        _check_contract(entry, gates),
        _check_latency(entry, gates),
        latency_ratio_check(entry.get("latency_ratio_to_float32"), variant, precision, gates),
        _check_edgetpu(entry, gates),
        _check_regression(m, metric, dict(baseline) if baseline else None, variant, precision,
                          gates, entry.get("baseline_reason")),
    ]
    reasons = [_REASON[c.name].format(metric=metric, detail=c.detail)
               for c in checks if not c.passed]
    return GateDecision(variant=variant, precision=precision, metric=metric, map=_r(m),
                        passed=all(c.passed for c in checks), checks=checks, reasons=reasons)


# --------------------------------------------------------------------------------------------
# Device latency (a phone's benchmark_model figure), one check per device and delegate
# --------------------------------------------------------------------------------------------
def _device_missing_reason(record: Mapping | None, delegate: str) -> str | None:
    """Why a device record holds no figure of the requested delegate; None when it does."""
    if not record:
        return "no benchmark ran on it"
    status = record.get("status")
    if status == "delegate_rejected":
        why = record.get("delegate_error") or "; ".join(record.get("errors") or []) or "?"
        return f"the {delegate} delegate could not run the model ({why})"
    if status not in (None, "ok"):
        return "the benchmark failed (" + ("; ".join(record.get("errors") or []) or
                                           str(status)) + ")"
    fallback = record.get("fallback") or {}
    if record.get("delegate_figure") is False:
        if record.get("delegation") == "none" and fallback:
            return (f"the {delegate} delegate did not run; it fell back to {fallback.get('to')} "
                    f"(\"{fallback.get('line')}\"), and that figure is not {delegate}'s")
        return f"the log does not show that the {delegate} delegate ran"
    if _num((record.get("latency_ms") or {}).get("mean")) is None:
        return "no latency in its result"
    return None


def device_latency_check(device, record: Mapping | None = None) -> GateCheck:
    """The latency gate of one device benchmark. `device`: a DeviceConfig (or a mapping with
    name and max_device_latency_ms). `record`: `device_record(...)` or the benchmark result
    (status, latency_ms.mean, delegate_requested, delegate_figure, fallback, ...), or None when
    nothing ran. The check is named device_latency:<device>:<delegate>; its value is the mean
    latency in ms. Without a device gate a missing figure passes as not_measured; with one it
    fails. A fallback never counts as the requested delegate's figure."""
    get = device.get if isinstance(device, Mapping) else (lambda k: getattr(device, k, None))
    name = str(get("name") or "?")
    limit = _num(get("max_device_latency_ms"))
    delegate = str((record or {}).get("delegate_requested") or "?")
    check = f"device_latency:{name}:{delegate}"
    gate = f"devices[{name}].max_device_latency_ms"
    missing = _device_missing_reason(record, delegate)
    if missing is not None:
        if limit is None:
            return GateCheck(check, True, None, None, f"not measured on {name} ({delegate}): "
                             f"{missing}; {gate} is not set, so this does not block",
                             "not_measured")
        return GateCheck(check, False, None, limit, f"not measured on {name} ({delegate}): "
                         f"{missing}; {gate} is {limit:g} ms and needs a figure", "fail")
    lat = _num(record["latency_ms"]["mean"])
    how = ""
    nodes = record.get("delegated_nodes") or {}
    if record.get("delegation") == "partial":
        how = (f", partially delegated ({nodes['delegated']}/{nodes['total']} nodes)"
               if nodes.get("total") else ", partially delegated")
    where = f"{lat:.2f} ms on {name} ({delegate}{how})"
    if limit is None:
        return GateCheck(check, True, _r(lat), None, f"{where}; {gate} is not set: off", "off")
    ok = lat <= limit + _EPS
    return GateCheck(check, ok, _r(lat), limit,
                     f"{where} {'<=' if ok else '>'} limit {limit:.2f} ms",
                     "pass" if ok else "fail")
