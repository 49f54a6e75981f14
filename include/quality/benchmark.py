"""Latency and memory of a detector .tflite in the LiteRT interpreter (like TFLite's benchmark_model).

`benchmark(model, threads, warmup, runs)` measures in a FRESH Python subprocess, so that the memory
numbers are the model's and not whatever the calling process (a test run, an Airflow worker with
TensorFlow loaded) already holds:

* init_ms: creating the interpreter and allocating its tensors (model load);
* first_ms: the first inference (XNNPACK packs weights lazily; benchmark_model reports it apart);
* latency_ms: min / mean / p50 / p90 / max / std over `runs` timed invocations after `warmup`
  untimed ones; only `invoke()` is timed (the input is set before each run, outside the timer);
* throughput_per_s: 1000 / mean latency (one image at a time, as a phone app runs it);
* memory (from /proc/self/status of the subprocess, MiB):
  - baseline_rss_mb: resident memory of the bare subprocess (Python, numpy, Pillow and the LiteRT
    module imported) before the model is loaded;
  - peak_rss_mb: the subprocess's peak resident memory (VmHWM) after loading and running;
  - model_memory_mb: peak minus baseline, i.e. what loading and running this model added
    (interpreter, tensor arena, packed weights, the mapped model file).
  Where /proc is missing, resource.getrusage's ru_maxrss stands in for the peak.
* model_size_bytes: the .tflite file's size.
* delegate: how much of the model the interpreter's delegate (XNNPACK) took, read from the
  interpreter the timings came from: ops_total, ops_delegated, partitions, fallback_ops
  ({op: count} run by the interpreter's own kernels), delegate (`include/quality/delegate.py`).
* with `reference` (the float32 model of the same checkpoint; `mobiledet benchmark --reference`):
  latency_ratio_to_float32 = p50 of the model / p50 of the reference, both loaded in the same
  subprocess with the same threads and timed in interleaved rounds (model then reference,
  then reference then model, ...), so load on the machine hits both alike; `reference` holds
  the reference's latency_ms, delegate and size. The memory figures stay the model's own: the
  peak is read before the reference is loaded.

The input is one deterministic noise image through the product's preprocessing (and the model's
input quantisation for uint8 models); an untrained detector's latency does not depend on it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from include.errors import ConfigError, ModelContractError
from include.procstat import peak_rss_kb, status_kb

RESULT_MARKER = "MOBILEDET_BENCHMARK_RESULT "


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q, method="linear"))


def latency_stats(ms) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    return {"min": round(float(a.min()), 4), "mean": round(float(a.mean()), 4),
            "p50": round(_percentile(a, 50), 4), "p90": round(_percentile(a, 90), 4),
            "max": round(float(a.max()), 4), "std": round(float(a.std()), 4)}


def _runner(model_path, threads: int):
    """(Detector, a function that runs it once and returns the invoke() time in ms)."""
    from include.data.preprocess import preprocess
    from include.quality.runner import Detector

    det = Detector(model_path, threads=threads)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (det.input_size, det.input_size, 3), dtype=np.uint8)
    x = det.prepare(preprocess(image, det.input_size))
    interp, index = det.interpreter, det.input_detail["index"]

    def once() -> float:
        interp.set_tensor(index, x)
        start = time.perf_counter()
        interp.invoke()
        return (time.perf_counter() - start) * 1000.0
    return det, once


def measure(model_path, threads: int, warmup: int, runs: int, reference=None) -> dict:
    """The measurement itself; meant to run in a fresh process (see `benchmark`). With a
    `reference` model, both are loaded with the same settings and timed in interleaved rounds
    (model, reference; reference, model; ...) after the model's memory was read."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401  (part of the baseline)

    from include.quality.delegate import coverage_of

    baseline_kb = status_kb("VmRSS") or peak_rss_kb()

    t0 = time.perf_counter()
    det, once = _runner(model_path, threads)
    init_ms = (time.perf_counter() - t0) * 1000.0
    first_ms = once()
    for _ in range(max(0, warmup - 1)):
        once()
    if reference is None:
        timed = [once() for _ in range(runs)]
        peak_kb = peak_rss_kb()
    else:
        peak_kb = peak_rss_kb()  # the model's own memory, before the reference is loaded
        ref_det, ref_once = _runner(reference, threads)
        for _ in range(max(1, warmup)):
            ref_once()
        timed, ref_timed = [], []
        for i in range(runs):
            if i % 2:
                ref_timed.append(ref_once())
                timed.append(once())
            else:
                timed.append(once())
                ref_timed.append(ref_once())
    stats = latency_stats(timed)
    out = {
        "init_ms": round(init_ms, 3),
        "first_ms": round(first_ms, 3),
        "latency_ms": stats,
        "throughput_per_s": round(1000.0 / stats["mean"], 3) if stats["mean"] > 0 else None,
        "baseline_rss_mb": round(baseline_kb / 1024.0, 2),
        "peak_rss_mb": round(peak_kb / 1024.0, 2),
        "model_memory_mb": round((peak_kb - baseline_kb) / 1024.0, 2),
        "delegate": coverage_of(det.interpreter),
    }
    if reference is not None:
        ref_stats = latency_stats(ref_timed)
        out["latency_ratio_to_float32"] = (round(stats["p50"] / ref_stats["p50"], 4)
                                           if ref_stats["p50"] > 0 else None)
        out["reference"] = {"model": str(reference), "latency_ms": ref_stats,
                            "delegate": coverage_of(ref_det.interpreter),
                            "ratio_of": "p50 over p50, interleaved rounds in one process"}
    return out


def measure_interleaved(model_paths, threads: int, warmup: int, runs: int) -> list[dict]:
    """Several models in this process with the same settings, timed in interleaved rounds (the
    order rotates each round): [{model, latency_ms, delegate}] in the given order. For tables
    whose ratios must come from one run (bench/latency.py); `benchmark` is the product's
    measurement of one model."""
    from include.quality.delegate import coverage_of

    runners = [_runner(p, threads) for p in model_paths]
    for _, once in runners:
        for _ in range(max(1, warmup)):
            once()
    timed: list[list[float]] = [[] for _ in runners]
    n = len(runners)
    for r in range(runs):
        for k in range(n):
            i = (r + k) % n
            timed[i].append(runners[i][1]())
    return [{"model": str(p), "latency_ms": latency_stats(t), "delegate": coverage_of(d.interpreter)}
            for p, (d, _), t in zip(model_paths, runners, timed)]


def _check_count(value, name, flag, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}.",
                          where=flag, fix=f"use e.g. {max(minimum, 10)}.")


def benchmark(model, *, threads: int | None = None, warmup: int = 10, runs: int = 50,
              timeout_s: float = 600.0, reference=None) -> dict:
    """Benchmark `model` in a fresh subprocess; see the module docstring for every number.
    `reference`: the float32 model of the same checkpoint, timed alongside (module
    docstring: latency_ratio_to_float32)."""
    from include.quality.runner import Detector, check_model_file, default_threads

    model = check_model_file(model).resolve()
    threads = default_threads() if threads is None else threads
    _check_count(threads, "threads", "--threads", 1)
    _check_count(warmup, "warmup", "--warmup", 0)
    _check_count(runs, "runs", "--runs", 1)
    Detector(model, threads=1)  # the contract errors surface here, in the caller's process
    if reference is not None:
        reference = check_model_file(reference).resolve()
        Detector(reference, threads=1)

    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "include.quality.benchmark", str(model), str(threads),
           str(warmup), str(runs)] + ([str(reference)] if reference is not None else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ModelContractError(f"the benchmark did not finish within {timeout_s:.0f} s.",
                                 where=str(model), fix="use fewer --runs, or more --threads.") \
            from None
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ModelContractError(f"the benchmark subprocess failed (exit {proc.returncode}): "
                                 f"{tail}", where=str(model),
                                 fix="check that the model runs: `mobiledet validate --model "
                                     f"{model}`.")
    measured = json.loads(lines[-1][len(RESULT_MARKER):])
    if reference is not None:
        measured["reference"]["model_size_bytes"] = reference.stat().st_size
    return {"model": str(model), "model_size_bytes": model.stat().st_size, "threads": threads,
            "warmup": warmup, "runs": runs, **measured,
            "memory_measured_in": "fresh subprocess (/proc/self/status VmRSS before the model, "
                                  "VmHWM after the runs)"}


def _main(argv) -> int:
    model, threads, warmup, runs = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    result = measure(model, threads, warmup, runs, argv[4] if len(argv) > 4 else None)
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
