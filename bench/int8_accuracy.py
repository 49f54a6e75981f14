"""Accuracy of the CPU int8 model with and without the hard-swish rewrite, on a small trained
MobileDet-CPU checkpoint (synthetic data, 128 px, depth multiplier 0.5).

Trains once (kept in --work), exports, converts float32, int8 (the recipe as the pipeline runs
it: hard-swish rewritten, `include/convert/graph_rewrite.py`) and int8 without the rewrite,
and prints COCO AP50/AP on the held-out split with each int8 model's drop against float32,
measured in one run. Target: the rewritten int8 model within 0.05 AP50 of float32.

    .venv/bin/python bench/int8_accuracy.py [--work DIR] [--steps N] [--images N]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import include  # noqa: E402,F401

TARGET_DROP = 0.05


def main(argv=None) -> int:
    from unittest import mock

    from include.console import format_table
    from include.convert import converter
    from include.convert.converter import convert
    from include.data.synth import synthesize
    from include.mobiledet.export import export_checkpoint
    from include.mobiledet.train import train
    from include.quality.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/mobiledet-bench-int8-accuracy")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--calibration-count", type=int, default=100)
    args = ap.parse_args(argv)
    work = Path(args.work)
    data, ckpt, export = work / "data", work / "cpu-float", work / "export"
    if not (data / "synth.json").is_file():
        synthesize(data, args.images, size=128, seed=0, val_fraction=0.1)
    if not (ckpt / "checkpoint.json").is_file():
        train(data, ckpt, "cpu", args.steps, batch=16, input_size=128, depth_multiplier=0.5,
              optimizer="adam", augment="flip", progress=False, log_every=100)
    if not (export / "export.json").is_file():
        export_checkpoint(ckpt, export)
    models = work / "models"
    calib = data / "annotations" / "instances_train.json"
    rows, results = [], {}
    for name, precision, rewrite in (("float32", "float32", True), ("int8", "int8", True),
                                     ("int8, no rewrite", "int8", False)):
        out = models / f"{name.replace(', ', '_').replace(' ', '_')}.tflite"
        with mock.patch.object(converter, "rewrite_for",
                               converter.rewrite_for if rewrite else (lambda *a: False)):
            rep = convert(export, precision, out, calibration=calib,
                          calibration_count=args.calibration_count)
        ev = evaluate(out, data, split="val", show_progress=False)["metrics"]
        results[name] = ev
        drop = results["float32"]["AP50"] - ev["AP50"]
        rows.append([name, f"{ev['AP50']:.3f}", f"{ev['AP']:.3f}", f"{drop:+.3f}",
                     rep["ops"].get("HARD_SWISH", 0), rep["seconds"]])
    print(format_table(rows, ["model", "AP50", "AP", "AP50 drop", "HARD_SWISH ops",
                              "convert s"]))
    drop = results["float32"]["AP50"] - results["int8"]["AP50"]
    ok = drop <= TARGET_DROP
    print(f"{'PASS' if ok else 'FAIL'}  int8 (rewritten) AP50 within {TARGET_DROP} of float32 "
          f"(drop {drop:+.3f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
