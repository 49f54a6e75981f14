"""Parse the output of TFLite's `benchmark_model` into the host benchmark's JSON keys.

`parse_benchmark_log(text, delegate=None)` reads one run's output, as printed by the native
binary (`adb shell .../benchmark_model ...`), by the Android benchmark app (logcat lines such as
``05-31 10:38:42.583 22206 22206 I tflite  : ...``) or pasted into a file. It knows both summary
formats the tool has printed over the years:

* ``Average inference timings in us: Warmup: W, Init: I, no stats: A`` (older releases; some
  print ``Inference: A`` instead of ``no stats: A``);
* ``Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference (avg): A``;

and the per-phase statistics lines ``count=N first=F curr=C min=m max=M avg=A std=S`` (with
``p5= median= p95=`` in newer releases). Every figure comes from the log; a number the log does
not print is None (or absent), never estimated. Microseconds become milliseconds.

The delegate that actually ran is read from the tool's own statements, never assumed from the
flag that asked for it:

==========================================================  =================================
the tool says                                               recorded as
==========================================================  =================================
``Explicitly applied X delegate, and the model graph will   delegation ``full``
be completely executed by the delegate.``
``... will be partially executed by the delegate w/ N       delegation ``partial`` (the rest of
delegate kernels.``; ``N operations will run on the GPU,    the graph runs on the CPU)
and the remaining M ...``; ``Replacing N out of M node(s)
with delegate (K) node``
``Though X delegate is explicitly applied, the model graph  delegation ``none``: a fallback;
will not be executed by the delegate.``; ``GPU acceleration  the figures are the CPU's
is unsupported on this platform.``
``Failed to apply X delegate.``; ``Node number N             status ``delegate_rejected``
(TfLiteXDelegate) failed to prepare.``; ``Disallowed CPU     (the model cannot run on it)
fallback detected.``
no such line for the delegate that was asked for            delegation ``not_reported``
==========================================================  =================================

`delegate_figure` is True only when the latency is the requested delegate's own (full or
partial delegation, or the CPU when the CPU was asked for); a fallback is recorded as a
fallback (`fallback` carries the tool's line), never as the delegate's figure.
"""
from __future__ import annotations

import re

from include.errors import DataError

# The delegates a device benchmark can ask for, and what benchmark_model calls them.
DELEGATES = ("cpu", "xnnpack", "gpu", "nnapi", "hexagon")
ACCELERATORS = ("gpu", "nnapi", "hexagon")
_TOOL_NAMES = {"xnnpack": "XNNPACK", "gpu": "GPU", "nnapi": "NNAPI", "hexagon": "Hexagon"}
# Kernel names in "Replacing N out of M node(s) with delegate (K) node ..." lines name their
# delegate: TfLiteXNNPackDelegate, TfLiteGpuDelegateV2, TfLiteNnapiDelegate, ...
_KERNEL_NEEDLES = ("xnnpack", "gpu", "nnapi", "hexagon")

_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_LOGCAT = re.compile(r"^\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+([VDIWEF])\s+[^:]*?\s*:\s?")
_LEVEL = re.compile(r"^(INFO|VERBOSE|ERROR|WARNING|WARN|DEBUG): ?")
_NEW_SUMMARY = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUM}), First inference: (?P<first>{_NUM}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUM}), Inference \(avg\): (?P<avg>{_NUM})")
_OLD_SUMMARY = re.compile(
    rf"Average inference timings in us: Warmup: (?P<warmup>{_NUM}), Init: (?P<init>{_NUM}), "
    rf"(?:no stats|Inference): (?P<avg>{_NUM})")
_STAT_FIELD = re.compile(rf"(\w+)=({_NUM})")
_PHASE = re.compile(r"^Running benchmark for (?:at least )?\d+ iterations")
_MEMORY = re.compile(rf"^(?P<what>Memory footprint delta from the start of the tool|Peak memory "
                     rf"footprint) \(MB\): init=(?P<init>{_NUM}) overall=(?P<overall>{_NUM})")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_SIZE = re.compile(rf"The input model file size \(MB\): ({_NUM})")
_SESSION = re.compile(rf"Initialized session in ({_NUM}) ?ms")
_THREADS = re.compile(r"^(?:Num threads|#threads used for CPU inference): \[(-?\d+)\]")
_USE = re.compile(r"^Use (gpu|nnapi|hexagon|xnnpack)\s*: \[(\d)\]", re.IGNORECASE)
_APPLIED = re.compile(r"Explicitly applied (\w+) delegate, and the model graph will be "
                      r"(completely|partially) executed by the delegate"
                      r"(?: w/ (\d+) delegate kernels)?")
_NOT_APPLIED = re.compile(r"Though (\w+) delegate is explicitly applied, the model graph will "
                          r"not be executed by the delegate")
_FAILED_APPLY = re.compile(r"Failed to apply (\w+) delegate")
_REPLACING = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((\w+)\) node"
                        r"(?:, yielding (\d+) partitions)?")
_GPU_SPLIT = re.compile(r"(?:First )?(\d+) operations will run on the GPU, and the remaining "
                        r"(\d+)(?: operations will run)? on the CPU")
_GPU_UNSUPPORTED_HEAD = re.compile(r"(?:Following|Next) operations are not supported by GPU "
                                   r"delegate:?")
_NODE_FAILED = re.compile(r"Node number \d+ \((\w+)\) failed to (?:prepare|invoke)")
_NO_PLATFORM_GPU = "GPU acceleration is unsupported on this platform"
_NO_NNAPI_LIB = "unable to open library libneuralnetworks.so"
_FAILURE_MARKERS = ("Benchmarking failed", "Failed to allocate tensors", "failed to prepare",
                    "failed to invoke", "Disallowed CPU fallback detected", "Failed to apply",
                    "Failed to mmap model", "Could not build model", "Failed to create")


def _ms(us: str | float | None) -> float | None:
    return None if us is None else round(float(us) / 1000.0, 6)


def _kernel_delegate(kernel: str) -> str | None:
    low = kernel.lower()
    return next((name for name in _KERNEL_NEEDLES if name in low), None)


def _tool_delegate(name: str) -> str | None:
    low = name.lower()
    return low if low in _TOOL_NAMES else None


def clean_lines(text: str) -> list[tuple[str, str]]:
    """(level, message) per line: logcat prefixes, `INFO:`-style prefixes and indentation
    removed; level is E for error lines, else I."""
    out = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip()
        level = "I"
        m = _LOGCAT.match(line)
        if m:
            level = "E" if m.group(1) in "EF" else "I"
            line = line[m.end():].strip()
        m = _LEVEL.match(line)
        if m:
            if m.group(1) == "ERROR":
                level = "E"
            line = line[m.end():].strip()
        out.append((level, line))
    return out


def _stat_line(line: str) -> dict | None:
    """The fields of a `count=... first=... avg=... std=...` line (not the op-profiling
    `Timings (microseconds): count=...` lines, which start differently)."""
    if not line.startswith("count="):
        return None
    fields = {k: float(v) for k, v in _STAT_FIELD.findall(line)}
    return fields if "count" in fields else None


def _latency(fields: dict | None, summary_avg) -> dict:
    """latency_ms in the host benchmark's keys (mean, min, max, std; p50/p5/p95 where printed)."""
    lat = {"mean": _ms(fields.get("avg")) if fields and "avg" in fields else _ms(summary_avg),
           "min": _ms(fields.get("min")) if fields else None,
           "max": _ms(fields.get("max")) if fields else None,
           "std": _ms(fields.get("std")) if fields else None}
    if fields:
        for key, name in (("median", "p50"), ("p5", "p5"), ("p95", "p95")):
            if key in fields:
                lat[name] = _ms(fields[key])
    return lat


def _phases(lines: list[str]) -> tuple[dict | None, dict | None, str | None, str | None]:
    """(warmup stats, regular stats, warmup line, regular line) from the count= lines."""
    stats: list[tuple[int, dict, str]] = []  # (phase index, fields, line)
    phase = -1
    for line in lines:
        if _PHASE.match(line):
            phase += 1
            continue
        fields = _stat_line(line)
        if fields is not None:
            stats.append((phase, fields, line))
    if not stats:
        return None, None, None, None
    if phase >= 1:  # the tool printed its phase headers: 0 = warm-up, 1 = the timed runs
        warm = [s for s in stats if s[0] == 0]
        reg = [s for s in stats if s[0] >= 1]
        w = warm[-1] if warm else None
        r = reg[-1] if reg else None
    elif len(stats) >= 2:
        w, r = stats[0], stats[-1]
    else:
        w, r = None, stats[0]
    return (w[1] if w else None, r[1] if r else None, w[2] if w else None, r[2] if r else None)


def _requested_from_log(lines: list[str]) -> str | None:
    flags = {}
    for line in lines:
        m = _USE.match(line)
        if m:
            flags[m.group(1).lower()] = m.group(2) == "1"
    asked = [d for d in ("gpu", "nnapi", "hexagon") if flags.get(d)]
    if asked:
        return asked[0]
    if flags.get("xnnpack"):
        return "xnnpack"
    if flags:  # every "Use ...: [0]": the CPU path
        return "cpu"
    return None


def _delegation(requested: str | None, lines: list[tuple[str, str]]) -> dict:
    """What the tool says about each delegate: applied/not, node counts, unsupported ops."""
    applied: dict[str, dict] = {}
    not_applied: dict[str, str] = {}
    failed: dict[str, str] = {}
    nodes: dict[str, dict] = {}
    unsupported: list[str] = []
    statements: list[str] = []
    in_gpu_block = False
    for level, line in lines:
        if in_gpu_block:
            m = _GPU_SPLIT.search(line)
            if m:
                in_gpu_block = False
            elif line and ":" in line and not line.startswith(("INFO", "Created")):
                unsupported.append(line)
                continue
            else:
                in_gpu_block = False
        m = _APPLIED.search(line)
        if m and _tool_delegate(m.group(1)):
            d = _tool_delegate(m.group(1))
            applied[d] = {"how": "full" if m.group(2) == "completely" else "partial",
                          "kernels": int(m.group(3)) if m.group(3) else None, "line": line}
            statements.append(line)
            continue
        m = _NOT_APPLIED.search(line)
        if m and _tool_delegate(m.group(1)):
            not_applied[_tool_delegate(m.group(1))] = line
            statements.append(line)
            continue
        m = _FAILED_APPLY.search(line)
        if m and _tool_delegate(m.group(1)):
            failed[_tool_delegate(m.group(1))] = line
            statements.append(line)
            continue
        m = _REPLACING.search(line)
        if m:
            d = _kernel_delegate(m.group(3))
            if d:
                nodes[d] = {"kernel": m.group(3), "delegated": int(m.group(1)),
                            "total": int(m.group(2)),
                            "partitions": int(m.group(4)) if m.group(4) else None}
                statements.append(line)
            continue
        if _GPU_UNSUPPORTED_HEAD.search(line):
            in_gpu_block = True
            statements.append(line)
            continue
        m = _GPU_SPLIT.search(line)
        if m:
            on_gpu, on_cpu = int(m.group(1)), int(m.group(2))
            nodes.setdefault("gpu", {"kernel": None, "delegated": on_gpu,
                                     "total": on_gpu + on_cpu, "partitions": None})
            statements.append(line)
            continue
        if _NO_PLATFORM_GPU in line:
            not_applied.setdefault("gpu", line)
            statements.append(line)
        elif _NO_NNAPI_LIB in line:
            not_applied.setdefault("nnapi", line)
            statements.append(line)
        elif "Disallowed CPU fallback detected" in line and requested:
            failed.setdefault(requested, line)
            statements.append(line)
        else:
            m = _NODE_FAILED.search(line)
            if m and _kernel_delegate(m.group(1)):
                failed.setdefault(_kernel_delegate(m.group(1)), line)
                statements.append(line)
    return {"applied": applied, "not_applied": not_applied, "failed": failed, "nodes": nodes,
            "unsupported": unsupported, "statements": statements}


def _cpu_path(ev: dict) -> str:
    """What ran when no accelerator did: XNNPACK where the tool says it took nodes, else the
    built-in CPU kernels."""
    x = ev["applied"].get("xnnpack")
    if x or ev["nodes"].get("xnnpack"):
        return "xnnpack"
    return "cpu"


def _verdict(requested: str | None, ev: dict, has_figures: bool) -> dict:
    """delegate_applied / delegation / delegate_figure / fallback for the requested delegate."""
    out = {"delegate_applied": None, "delegation": "not_reported", "delegate_figure": False,
           "fallback": None, "delegate_error": None,
           "delegated_nodes": ev["nodes"].get(requested) if requested else None}
    if requested in (None, "cpu"):
        path = _cpu_path(ev)
        out.update(delegate_applied=path if requested or ev["statements"] else None,
                   delegation="cpu" if requested else "not_reported",
                   delegate_figure=requested == "cpu")
        if requested is None and path == "xnnpack":
            out.update(delegate_applied="xnnpack", delegated_nodes=ev["nodes"].get("xnnpack"))
        return out
    if requested in ev["failed"]:
        line = ev["failed"][requested]
        out.update(delegation="failed", delegate_error=line)
        if has_figures:  # the tool went on without the delegate: the figures are the CPU's
            path = _cpu_path(ev)
            out.update(delegate_applied=path, delegation="none",
                       fallback={"to": path, "partial": False, "line": line,
                                 "unsupported_ops": list(ev["unsupported"])})
        return out
    applied = ev["applied"].get(requested)
    nodes = ev["nodes"].get(requested)
    if applied or (nodes and nodes["delegated"] > 0):
        how = applied["how"] if applied else (
            "full" if nodes["delegated"] == nodes["total"] else "partial")
        out.update(delegate_applied=requested, delegation=how, delegate_figure=True)
        if how == "partial":
            line = applied["line"] if applied else next(
                (s for s in ev["statements"] if "operations will run on the GPU" in s
                 or "Replacing" in s), None)
            out["fallback"] = {"to": "cpu", "partial": True, "line": line,
                               "unsupported_ops": list(ev["unsupported"])}
        return out
    line = ev["not_applied"].get(requested)
    if line is None and nodes is not None and nodes["delegated"] == 0:
        line = next((s for s in ev["statements"] if "operations will run on the GPU" in s), None)
    if line is not None:
        path = _cpu_path(ev)
        out.update(delegate_applied=path, delegation="none",
                   fallback={"to": path, "partial": False, "line": line,
                             "unsupported_ops": list(ev["unsupported"])})
    return out


def parse_benchmark_log(text: str, *, delegate: str | None = None,
                        where: str = "benchmark_model output") -> dict:
    """Parse one `benchmark_model` run (see the module docstring). `delegate` is the delegate
    that was asked for (cpu, xnnpack, gpu, nnapi, hexagon); without it, the log's own
    `Use gpu: [1]`-style lines say, or None when the log does not. Raises DataError when the
    text holds no benchmark_model result nor failure, or more than one run.

    Returns: status (ok | delegate_rejected | failed), format (inference_timings |
    average_inference_timings | None), init_ms, first_ms, latency_ms {mean, min, max, std and
    p50/p5/p95 where printed}, warmup_ms {mean, ...}, runs, warmup, throughput_per_s,
    model_memory_mb, memory {init_mb, overall_mb, peak_mb, reported_as}, model_size_mb, threads,
    delegate_requested, delegate_applied, delegation (full | partial | none | failed | cpu |
    not_reported), delegate_figure, fallback {to, partial, line, unsupported_ops} or None,
    delegate_error (the tool's line when the delegate failed), delegated_nodes {kernel,
    delegated, total, partitions} or None, unsupported_ops, errors,
    delegate_lines (the tool's own delegate statements), tool_lines {summary, latency, warmup},
    warnings.
    """
    if delegate is not None and delegate not in DELEGATES:
        from include.errors import ConfigError

        raise ConfigError(f"unknown delegate {delegate!r}; allowed: {', '.join(DELEGATES)}.",
                          where="--delegate", fix="use one of the allowed delegates.")
    pairs = clean_lines(text or "")
    lines = [line for _, line in pairs]
    starts = sum(1 for line in lines if line == "STARTING!")
    summaries = [line for line in lines if _NEW_SUMMARY.search(line) or _OLD_SUMMARY.search(line)]
    if starts > 1 or len(summaries) > 1:
        raise DataError(f"holds {max(starts, len(summaries))} benchmark_model runs; one file "
                        "must hold one run.", where=where,
                        fix="save each run's output in its own file.")
    warmup, regular, warmup_line, regular_line = _phases(lines)
    summary = summaries[0] if summaries else None
    m_new = _NEW_SUMMARY.search(summary) if summary else None
    m_old = None if m_new or not summary else _OLD_SUMMARY.search(summary)
    m = m_new or m_old
    errors = [line for level, line in pairs if line and (
        level == "E" or any(k in line for k in _FAILURE_MARKERS))]
    if m is None and regular is None and not errors:
        raise DataError("no benchmark_model result in it (neither an 'Inference timings in us' "
                        "line nor 'count=... avg=...' statistics, nor a failure message).",
                        where=where, fix="pass the complete output of one benchmark_model run.")

    requested = delegate or _requested_from_log(lines)
    ev = _delegation(requested, pairs)
    has_figures = m is not None or (regular is not None and "avg" in regular)
    verdict = _verdict(requested, ev, has_figures)
    if has_figures:
        status = "ok"
    elif requested in ACCELERATORS + ("xnnpack",) and (
            requested in ev["failed"] or any(_kernel_delegate(k) == requested for k in
                                             re.findall(r"\((\w+Delegate\w*)\)", " ".join(errors)))):
        status = "delegate_rejected"
    else:
        status = "failed"
    if status != "ok":
        verdict["delegate_figure"] = False

    summary_avg = m.group("avg") if m else None
    init_us = m.group("init") if m else None
    init_ms = _ms(init_us)
    if init_ms is None:
        s = next((_SESSION.search(line) for line in lines if _SESSION.search(line)), None)
        init_ms = round(float(s.group(1)), 6) if s else None
    first_ms = _ms(m_new.group("first")) if m_new else None
    if first_ms is None and warmup is not None:
        if "first" in warmup:
            first_ms = _ms(warmup["first"])
        elif warmup.get("count") == 1 and "curr" in warmup:  # one warm-up run: it is the first
            first_ms = _ms(warmup["curr"])
    latency = _latency(regular, summary_avg) if has_figures else None
    warm = None
    if warmup is not None or m is not None:
        warm = _latency(warmup, m.group("warmup") if m else None)

    memory = None
    for line in lines:
        mm = _MEMORY.search(line)
        if mm:
            memory = {"init_mb": float(mm.group("init")), "overall_mb": float(mm.group("overall")),
                      "peak_mb": None, "reported_as": line}
        pk = _PEAK.search(line)
        if pk:
            memory = memory or {"init_mb": None, "overall_mb": None, "reported_as": line}
            memory["peak_mb"] = float(pk.group(1))
    size = next((_SIZE.search(line) for line in lines if _SIZE.search(line)), None)
    threads = next((int(_THREADS.match(line).group(1)) for line in lines
                    if _THREADS.match(line)), None)
    warnings = []
    if requested in ACCELERATORS and verdict["delegation"] == "not_reported":
        warnings.append(f"the log does not show whether the {_TOOL_NAMES[requested]} delegate "
                        "was applied (no 'Explicitly applied', 'Though ... delegate', "
                        "'Replacing ... node(s)' or failure line); its figures are not recorded "
                        f"as the {requested} delegate's.")
    if requested is None:
        warnings.append("the log does not say which delegate was asked for; pass --delegate.")
    mean = latency["mean"] if latency else None
    return {
        "status": status,
        "format": ("inference_timings" if m_new else "average_inference_timings" if m_old
                   else None),
        "init_ms": init_ms,
        "first_ms": first_ms,
        "latency_ms": latency,
        "warmup_ms": warm,
        "runs": int(regular["count"]) if regular else None,
        "warmup": int(warmup["count"]) if warmup else None,
        "throughput_per_s": round(1000.0 / mean, 3) if mean else None,
        "model_memory_mb": memory.get("overall_mb") if memory else None,
        "memory": memory,
        "model_size_mb": float(size.group(1)) if size else None,
        "threads": threads,
        "delegate_requested": requested,
        **verdict,
        "unsupported_ops": list(ev["unsupported"]),
        "errors": errors,
        "delegate_lines": ev["statements"],
        "tool_lines": {"summary": summary, "latency": regular_line, "warmup": warmup_line},
        "warnings": warnings,
    }
