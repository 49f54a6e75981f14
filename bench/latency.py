"""Latency of every variant x precision at the published size (90 classes, 320x320, depth
multiplier 1.0) in the LiteRT interpreter: p50/p90, size, delegate coverage and the ratio to
the float32 model of the same checkpoint, all models loaded in ONE process with the same
threads and timed in interleaved rounds, so the ratios are measured side by side.

Checkpoints are freshly initialised (latency depends on the architecture and the recipe, not on
the weights' values); the models are built through the product's export and conversion code.
Converted models are kept in --out and reused by the next run with the same --out.

    .venv/bin/python bench/latency.py [--out DIR] [--variants cpu,edgetpu,...] [--no-qat]
                                      [--threads 2] [--runs 30] [--json]
    .venv/bin/python bench/latency.py --models A.tflite B.tflite --reference R.tflite

With --models, those models are timed instead, each with its ratio to --reference.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import include  # noqa: E402,F401

FULL = dict(num_classes=90, input_size=320, depth_multiplier=1.0)
#: (variant, QAT checkpoint, precisions): the default matrix of each variant
TABLE = [("cpu", False, ["float32", "dynamic", "float16", "int8"]),
         ("edgetpu", False, ["float32", "int8"]), ("edgetpu", True, ["float32", "uint8"]),
         ("dsp", False, ["float32", "int8"]), ("dsp", True, ["float32", "uint8"]),
         ("gpu", False, ["float32", "float16"])]   # cpu has no QAT (hard-swish, SE)


def build(out: Path, variants: list[str], qat: bool) -> list[dict]:
    """Convert the table's models into `out` (reusing those already there)."""
    from include.convert.converter import convert
    from models import make_export, make_image_folder

    calib = make_image_folder(out / "calib", count=16, size=320)
    rows = []
    for variant, is_qat, precisions in TABLE:
        if variant not in variants or (is_qat and not qat):
            continue
        kind = "qat" if is_qat else "float"
        export = out / f"{variant}-{kind}" / "export"
        if not (export / "export.json").is_file():
            t = time.perf_counter()
            make_export(export.parent, variant=variant, qat=is_qat, **FULL)
            print(f"exported {variant} {kind} in {time.perf_counter() - t:.0f} s",
                  file=sys.stderr, flush=True)
        for precision in precisions:
            path = out / "models" / f"{variant}-{kind}_{precision}.tflite"
            if not path.is_file():
                convert(export, precision, path, calibration=calib, calibration_count=16)
            rows.append({"variant": variant, "checkpoint": kind, "precision": precision,
                         "path": path,
                         "reference": out / "models" / f"{variant}-{kind}_float32.tflite"})
    return rows


def main(argv=None) -> int:
    from include.console import format_table
    from include.quality.benchmark import measure_interleaved
    from include.quality.runner import default_threads

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="models folder (kept, reused)")
    ap.add_argument("--variants", default="cpu,edgetpu,dsp,gpu")
    ap.add_argument("--no-qat", action="store_true", help="leave out the QAT checkpoints")
    ap.add_argument("--models", nargs="*", default=None, metavar="TFLITE")
    ap.add_argument("--reference", default=None, metavar="FLOAT32_TFLITE")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    threads = args.threads or default_threads()
    if args.models:
        rows = [{"variant": "-", "checkpoint": "-", "precision": Path(m).stem, "path": Path(m),
                 "reference": Path(args.reference) if args.reference else None}
                for m in args.models]
    else:
        out = Path(args.out or tempfile.mkdtemp(prefix="mobiledet-latency-"))
        rows = build(out, args.variants.split(","), not args.no_qat)
        if args.reference:
            for r in rows:
                r["reference"] = Path(args.reference)
    paths = list(dict.fromkeys([r["path"] for r in rows] +
                               [r["reference"] for r in rows if r["reference"]]))
    measured = dict(zip(paths, measure_interleaved(paths, threads, args.warmup, args.runs)))
    table, results = [], []
    for r in rows:
        m = measured[r["path"]]
        ref = measured.get(r["reference"]) if r["reference"] else None
        ratio = m["latency_ms"]["p50"] / ref["latency_ms"]["p50"] if ref else None
        cov = m["delegate"]
        fallback = ", ".join(f"{k} x{v}" for k, v in cov["fallback_ops"].items()
                             if k != "TFLite_Detection_PostProcess")
        results.append({**{k: str(v) if isinstance(v, Path) else v for k, v in r.items()},
                        "size_bytes": r["path"].stat().st_size, "latency_ms": m["latency_ms"],
                        "delegate": cov, "latency_ratio_to_float32": ratio})
        table.append([r["variant"], r["checkpoint"], r["precision"],
                      f"{m['latency_ms']['p50']:.2f}", f"{m['latency_ms']['p90']:.2f}",
                      "-" if ratio is None else f"{ratio:.2f}x",
                      f"{r['path'].stat().st_size / 2**20:.2f}",
                      f"{cov['ops_delegated']}/{cov['ops_total']}", cov["partitions"],
                      fallback or "-"])
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{threads} threads, {args.runs} interleaved rounds after {args.warmup} warmup, "
              "one process; ratio = p50 / p50 of the float32 model of the same checkpoint")
        print(format_table(table, ["variant", "ckpt", "precision", "p50 ms", "p90 ms",
                                   "x float32", "MiB", "delegated", "parts",
                                   "off the delegate (besides the post-process)"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
