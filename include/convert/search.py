"""Recipe search for int8: when the plain recipe loses too much accuracy, try others in order.

The candidates, in this order (one table; each differs from `plain` in one thing):

| candidate         | what changes                                                         |
| plain             | the int8 recipe as the pipeline runs it (calibration as given)       |
| more-calibration  | 4x the calibration images (skipped when the source has no more)      |
| train-calibration | calibration images from the training split (skipped when there is   |
|                   | none, or when plain already calibrates on it)                        |
| per-tensor        | one weight scale per tensor instead of per output channel           |
| int16-activations | 16x8: int16 activations, int8 weights, float input (CPU and GPU      |
|                   | variants only: the accelerators run 8-bit models only)               |
| float-worst-1/2/4 | the 1, 2, 4 worst layers of `quant-debug`'s ranking stay float       |

Budget: how many candidates are converted (skipped ones cost nothing); the rest are listed as
"not tried". Every converted candidate is evaluated against the float reference
(`include/quality/evaluate.py`, COCO AP with pycocotools), benchmarked in the LiteRT interpreter
(`include/quality/benchmark.py`) and analysed for the Edge TPU (offline prediction); those
within the accuracy gate are validated against the output contract (Great Expectations,
`include/quality/validate.py`).

A candidate passes when its drop of the gate metric against the float reference is within
`GateConfig.max_drop("int8")`, its metric is at least `min_map`, its output contract holds and
its latency is within `max_latency_ms` (when set), and, for the EdgeTPU variant, it passes the
gate's `edgetpu_mapping` check on the offline prediction (`include/gates.py`,
`edgetpu_mapping_check`). The Edge TPU fallback rule: a float layer makes the Edge TPU compiler
cut the graph at the first float op, and every op after it runs on the CPU. With
`gates.require_edgetpu_mapped` true (the default) such a candidate is rejected here, its verdict
saying how many ops the cut leaves on the CPU and where it falls, so the search never chooses
a model the gate would reject after it; with it false (or `gates.edgetpu: off`) it may pass,
and the table shows what it costs (Edge TPU ops mapped, cut layer).

Objective (default "fastest"): among the passing candidates, for the Edge TPU and DSP variants
those with the fewest ops predicted off the accelerator come first (a float fallback moves the
cut forward); then the fastest (p50 on the host CPU; within 5% counts as a tie); ties go to
the smallest file. "smallest" swaps the last two. The chosen model is written to `out_path`
with `conversion.json`, whose `search` key holds the whole table; `search.json` next to it
holds the table whether or not one passed.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from include.errors import ConfigError, MobiledetError

DEFAULT_BUDGET = 8
MORE_CALIBRATION_FACTOR = 4
LATENCY_TIE = 0.05
OBJECTIVES = ("fastest", "smallest")
FALLBACK_COUNTS = (1, 2, 4)

CANDIDATES = (
    ("plain", "the int8 recipe as the pipeline runs it", {}),
    ("more-calibration", f"{MORE_CALIBRATION_FACTOR}x the calibration images", {}),
    ("train-calibration", "calibration images from the training split", {}),
    ("per-tensor", "per-tensor instead of per-channel weights", {"per_tensor": True}),
    ("int16-activations", "16x8: int16 activations, int8 weights (float input)",
     {"activations": "int16"}),
) + tuple((f"float-worst-{n}", f"the {n} worst layer(s) of quant-debug stay float",
           {"float_worst": n}) for n in FALLBACK_COUNTS)
CANDIDATE_NAMES = tuple(c[0] for c in CANDIDATES)


def search_json_path(model_path) -> Path:
    model_path = Path(model_path)
    return model_path.parent / "search.json" if model_path.name == "model.tflite" \
        else model_path.with_suffix(".search.json")


def _check_budget(budget):
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"the search budget must be a whole number of candidates >= 1, got "
                          f"{budget!r}: a budget of {budget!r} tries nothing, so no recipe could "
                          "ever be chosen.", where="--budget",
                          fix=f"use e.g. {DEFAULT_BUDGET} (every candidate) or 3 (plain, more "
                              "calibration, training-split calibration).")
    return budget


def _train_source(calibration, data, train_calibration):
    if train_calibration is not None:
        return Path(train_calibration)
    for root in (calibration, data):
        if root is None:
            continue
        root = Path(root)
        if root.is_file():
            root = root.parent.parent if root.parent.name == "annotations" else root.parent
        candidate = root / "annotations" / "instances_train.json"
        if candidate.is_file():
            return candidate
    return None


def _plan(variant, calibration, data, calibration_count, train_calibration, seed):
    """-> [(name, description, options, calibration source, count, skip reason or None)]."""
    from include.convert.calibration import calibration_files
    from include.convert.recipes import ACCELERATOR_VARIANTS

    base_files = calibration_files(calibration, calibration_count, seed)
    plan = []
    for name, description, options in CANDIDATES:
        source, count, skip = calibration, calibration_count, None
        if name == "more-calibration":
            count = calibration_count * MORE_CALIBRATION_FACTOR
            available = len(calibration_files(calibration, count, seed))
            if available <= len(base_files):
                skip = (f"the calibration source has {available} image(s), all of them used by "
                        "plain")
            else:
                description = f"{available} calibration images instead of {len(base_files)}"
        elif name == "train-calibration":
            source = _train_source(calibration, data, train_calibration)
            if source is None:
                skip = "no training split found (annotations/instances_train.json)"
            else:
                files = calibration_files(source, calibration_count, seed)
                if {str(f) for f in files} == {str(f) for f in base_files}:
                    skip = "plain already calibrates on the training split"
        elif name == "int16-activations" and variant in ACCELERATOR_VARIANTS:
            skip = f"the {variant} accelerator runs 8-bit models only"
        plan.append((name, description, dict(options), source, count, skip))
    return plan


def _verdict(row, gate, max_drop):
    problems = []
    if row["drop"] is None or row["drop"] > max_drop + 1e-9:
        problems.append(f"{gate.metric} drop {row['drop']:+.3f} > {max_drop:.3f}")
    if row["metric"] is not None and row["metric"] < gate.min_map:
        problems.append(f"{gate.metric} {row['metric']:.3f} < min {gate.min_map:.3f}")
    if row["contract"] is False:
        problems.append("output contract failed")
    if gate.max_latency_ms is not None and row["latency_ms"] is not None and \
            row["latency_ms"] > gate.max_latency_ms:
        problems.append(f"latency {row['latency_ms']:.2f} ms > {gate.max_latency_ms} ms")
    return problems


def choose(rows: list[dict], variant: str, objective: str = "fastest") -> dict | None:
    """The best passing row by the objective (module docstring), or None."""
    from include.convert.recipes import ACCELERATOR_VARIANTS

    passing = [r for r in rows if r["status"] == "pass"]
    if not passing:
        return None
    if variant in ACCELERATOR_VARIANTS:
        off = lambda r: (r["edgetpu"] or {}).get("unexpected_on_cpu", 0)  # noqa: E731
        fewest = min(off(r) for r in passing)
        passing = [r for r in passing if off(r) == fewest]
    first, second = ("latency_ms", "size_bytes") if objective == "fastest" else \
        ("size_bytes", "latency_ms")
    best = min(r[first] for r in passing)
    tie = LATENCY_TIE if first == "latency_ms" else 0.0
    close = [r for r in passing if r[first] <= best * (1 + tie)]
    return min(close, key=lambda r: (r[second], r[first]))


def search_int8(graph_dir, calibration, data, reference_model, out_path, *,
                budget: int = DEFAULT_BUDGET, gate_config=None, calibration_count: int = 100,
                train_calibration=None, max_images: int | None = None,
                threads: int | None = None, benchmark_runs: int = 20, validate_images: int = 4,
                objective: str = "fastest", seed: int = 0, work_dir=None,
                show_progress: bool = False) -> dict:
    """Try int8 recipes in order within `budget`; write the best passing one to `out_path`.

    graph_dir: float export folder or TFOD bundle. calibration: COCO dataset or image folder
    (the plain recipe's representative data). data: COCO dataset the candidates are evaluated
    on. reference_model: the float32 .tflite of the same graph. gate_config: GateConfig (default
    thresholds). train_calibration: the training split for `train-calibration` (default:
    annotations/instances_train.json of `calibration` or `data`). max_images: evaluate on the
    first N images. Returns a JSON-safe dict:
    {passed, chosen, model, conversion_json, search_json, objective, order, budget, tried, gate,
     reference, candidates: [row, ...], worst_layers, seconds}; each row:
    {candidate, description, status (pass|fail|skipped|not tried|error), verdict, options,
     calibration, metric, reference_metric, drop, agreement, size_bytes, latency_ms,
     edgetpu {ops_on_tpu, total_ops, ops_on_cpu, unexpected_on_cpu, mapped, cut_layer},
     edgetpu_gate {status, passed, value, detail} (EdgeTPU variant), rejected_by
     ("edgetpu_mapping" when only the mapping rule failed it), float_layers, contract,
     seconds}.
    """
    from include.config import GateConfig
    from include.convert.converter import convert, edgetpu_cost
    from include.convert.recipes import check_request
    from include.convert.source import open_graph
    from include.quality.runner import check_model_file

    started = time.perf_counter()
    budget = _check_budget(budget)
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; allowed: {', '.join(OBJECTIVES)}.",
                          where="--objective", fix="fastest (default) or smallest.")
    gate = gate_config or GateConfig()
    max_drop = gate.max_drop("int8")
    source = open_graph(graph_dir)
    check_request("int8", source.qat, None, calibration is not None)
    reference_model = check_model_file(reference_model)
    variant = source.spec.variant
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    plan = _plan(variant, calibration, data, calibration_count, train_calibration, seed)

    work = Path(work_dir) if work_dir is not None else \
        Path(tempfile.mkdtemp(prefix=f".{out_path.stem}.search-", dir=out_path.parent))
    own_work = work_dir is None
    rows, reports, session, worst = [], {}, None, None
    tried = 0

    def say(text):
        if show_progress:
            print(f"search: {text}", file=sys.stderr, flush=True)

    try:
        for name, description, options, calib, count, skip in plan:
            row = {"candidate": name, "description": description, "status": None,
                   "verdict": None, "options": options,
                   "calibration": {"source": str(calib) if calib is not None else None,
                                   "requested": count},
                   "metric": None, "reference_metric": None, "drop": None, "agreement": None,
                   "size_bytes": None, "latency_ms": None, "edgetpu": None,
                   "float_layers": [], "contract": None, "seconds": None}
            rows.append(row)
            if skip:
                row.update(status="skipped", verdict=f"skipped: {skip}")
                continue
            if tried >= budget:
                row.update(status="not tried", verdict=f"not tried: budget of {budget} used")
                continue
            tried += 1
            t0 = time.perf_counter()
            model = work / name / "model.tflite"
            try:
                if "float_worst" in options and session is None:
                    from include.convert.quant_debug import open_session
                    say("calibrating once for the per-layer analysis")
                    session = open_session(graph_dir, calibration,
                                           calibration_count=calibration_count, seed=seed)
                    worst = [{k: l[k] for k in ("rank", "name", "where", "op", "channel_error",
                                                 "rmse_scaled", "snr_db")}
                             for l in session.layers()[:max(FALLBACK_COUNTS) + 1]]
                say(f"{name}: converting")
                report = convert(graph_dir, "int8", model, calibration=calib,
                                 calibration_count=count, seed=seed, options=options,
                                 session=session if "float_worst" in options else None)
                reports[name] = report
                row["calibration"] = report.get("calibration") or row["calibration"]
                row["size_bytes"] = report["size_bytes"]
                if report.get("fallback"):
                    row["float_layers"] = [l["name"] for l in report["fallback"]["float_layers"]]
                _measure(row, model, data, reference_model, gate, max_images, threads,
                         benchmark_runs, validate_images, max_drop, say)
                cost = (report.get("fallback") or {}).get("edgetpu") or edgetpu_cost(model)
                row["edgetpu"] = _tpu_summary(cost)
                if variant == "edgetpu":
                    _edgetpu_rule(row, gate)
            except MobiledetError as exc:
                if name == "plain":
                    raise  # the graph cannot take the int8 recipe at all: say so, try nothing
                row.update(status="error", verdict=f"error: {exc}")
            row["seconds"] = round(time.perf_counter() - t0, 3)
            say(f"{name}: {row['verdict']}")

        best = choose(rows, variant, objective)
        result = {
            "passed": best is not None,
            "chosen": best["candidate"] if best else None,
            "model": str(out_path) if best else None,
            "conversion_json": None,
            "search_json": str(search_json_path(out_path)),
            "objective": _objective_text(objective),
            "order": list(CANDIDATE_NAMES),
            "budget": budget,
            "tried": tried,
            "gate": {"precision": "int8", "metric": gate.metric, "max_drop": max_drop,
                     "min_map": gate.min_map, "max_latency_ms": gate.max_latency_ms,
                     "require_edgetpu_mapped": gate.require_edgetpu_mapped,
                     "edgetpu": gate.edgetpu},
            "graph": str(source.path),
            "variant": variant,
            "reference": str(reference_model),
            "data": str(data),
            "candidates": rows,
            "worst_layers": worst,
            "seconds": None,
        }
        if best is not None:
            from include.convert.recipes import conversion_json_path

            report = dict(reports[best["candidate"]])
            result["conversion_json"] = str(conversion_json_path(out_path))
            result["seconds"] = round(time.perf_counter() - started, 3)
            report["search"] = {k: v for k, v in result.items() if k not in ("model",)}
            _publish(work / best["candidate"] / "model.tflite", out_path, report)
        result["seconds"] = round(time.perf_counter() - started, 3)
        _write_json(search_json_path(out_path), result)
        return result
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def _measure(row, model, data, reference_model, gate, max_images, threads, runs,
             validate_images, max_drop, say):
    from include.quality.benchmark import benchmark
    from include.quality.evaluate import evaluate
    from include.quality.validate import validate

    say(f"{row['candidate']}: evaluating")
    ev = evaluate(model, data, reference=reference_model, max_images=max_images,
                  threads=threads, show_progress=False)
    metric = gate.metric
    row["metric"] = ev["metrics"][metric]
    row["reference_metric"] = ev["reference"]["metrics"][metric]
    row["drop"] = round(ev["reference"]["metrics"][metric] - ev["metrics"][metric], 6)
    row["agreement"] = ev["agreement"].get(metric, ev["agreement"]["AP50"])
    bench = benchmark(model, threads=threads, warmup=min(5, runs), runs=runs)
    row["latency_ms"] = bench["latency_ms"]["p50"]
    row["latency_mean_ms"] = bench["latency_ms"]["mean"]
    if not _verdict({**row, "contract": None}, gate, max_drop):
        say(f"{row['candidate']}: validating the output contract")
        summary = validate(model, data=data, images=validate_images,
                           out_dir=Path(model).parent / "validation")
        row["contract"] = bool(summary["success"])
        if not summary["success"]:
            row["contract_failed"] = summary["failed"]
    problems = _verdict(row, gate, max_drop)
    if problems:
        row.update(status="fail", verdict="fail: " + "; ".join(problems))
    else:
        row.update(status="pass", verdict=f"pass: {metric} drop {row['drop']:+.3f} <= "
                                          f"{max_drop:.3f}, contract ok")


def _edgetpu_rule(row: dict, gate) -> None:
    """The gate's edgetpu_mapping check on the candidate's offline prediction (module
    docstring): a candidate within the accuracy gate whose float layers leave ops on the CPU
    fails when `require_edgetpu_mapped` holds, and says what the cut costs either way."""
    from include.gates import edgetpu_mapping_check

    tpu = row["edgetpu"]
    check = edgetpu_mapping_check({"ops_total": tpu["total_ops"], "ops_on_tpu": tpu["ops_on_tpu"],
                                   "ops_on_cpu": tpu["ops_on_cpu"]}, gate)
    row["edgetpu_gate"] = {"status": check.status, "passed": check.passed,
                           "value": check.value, "detail": check.detail}
    if not tpu["unexpected_on_cpu"] or row["status"] != "pass":
        return
    where = f" at {tpu['cut_layer']}" if tpu.get("cut_layer") else ""
    cost = (f"Edge TPU cut{where}: {tpu['unexpected_on_cpu']} op(s) after it on the CPU "
            f"({tpu['mapped']} mapped)")
    if check.passed:
        why = "gates.edgetpu is off" if check.status == "off" and "edgetpu is off" in \
            check.detail else "gates.require_edgetpu_mapped is false"
        row["verdict"] += f"; {cost}; {why}: accepted"
    else:
        row.update(status="fail", verdict=f"fail: {cost}; gates.require_edgetpu_mapped is true "
                                           f"({gate.metric} drop {row['drop']:+.3f} within the "
                                           "gate; false accepts the cut)")
        row["rejected_by"] = "edgetpu_mapping"


def _tpu_summary(cost: dict) -> dict:
    cut = cost.get("cut") or {}
    return {"ops_on_tpu": cost["ops_on_tpu"], "total_ops": cost["total_ops"],
            "ops_on_cpu": cost.get("ops_on_cpu", cost["total_ops"] - cost["ops_on_tpu"]),
            "unexpected_on_cpu": cost["unexpected_on_cpu"],
            "mapped": f"{cost['ops_on_tpu']}/{cost['total_ops']}",
            "cut_layer": cut.get("layer"), "cut_operator": cut.get("operator"),
            "prediction": True}


def _objective_text(objective: str) -> str:
    speed = "the fastest (p50 latency on the host CPU, within 5% is a tie)"
    if objective == "fastest":
        return ("passing candidates only (drop within the gate, contract, min metric, latency "
                "ceiling); for Edge TPU/DSP variants the fewest ops predicted off the "
                f"accelerator first; then {speed}; ties to the smallest file")
    return ("passing candidates only; for Edge TPU/DSP variants the fewest ops predicted off "
            "the accelerator first; then the smallest file; ties to the fastest")


def _write_json(path: Path, obj) -> None:
    from include.atomic import write_json_atomic

    write_json_atomic(path, obj)


def _publish(model: Path, out_path: Path, report: dict) -> None:
    """The chosen model and its conversion.json (include.convert.converter.publish_model)."""
    from include.convert.converter import publish_model

    publish_model(model, out_path, report)


def format_search(result: dict) -> str:
    from include.console import format_table

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    rows = []
    for r in result["candidates"]:
        tpu = r["edgetpu"] or {}
        rows.append((r["candidate"] + (" *" if r["candidate"] == result["chosen"] else ""),
                     num(r["drop"], "+.3f"), num(r["agreement"], ".3f"),
                     num(r["size_bytes"] and r["size_bytes"] / 1e6, ".2f"),
                     num(r["latency_ms"], ".2f"), tpu.get("mapped", "-"),
                     ", ".join(r["float_layers"]) or "-", r["verdict"]))
    head = format_table(rows, ["candidate", "drop", "agreement", "size MB", "latency ms",
                               "Edge TPU ops", "float layers", "verdict"])
    tail = (f"chosen: {result['chosen']} -> {result['model']}" if result["passed"] else
            f"no candidate passed the int8 gate ({result['gate']['metric']} drop <= "
            f"{result['gate']['max_drop']}); nothing written but {result['search_json']}")
    cut = [r["candidate"] for r in result["candidates"]
           if r.get("rejected_by") == "edgetpu_mapping"]
    if cut:
        tail += (f"\nwithin the accuracy gate but rejected for the Edge TPU cut: {', '.join(cut)} "
                 "(gates.require_edgetpu_mapped: false accepts a partly mapped model)")
    return head + "\n" + tail + "\n(* = chosen; Edge TPU ops are the offline prediction)"


__all__ = ["search_int8", "choose", "CANDIDATES", "CANDIDATE_NAMES", "DEFAULT_BUDGET",
           "format_search", "search_json_path"]

