"""When int8 loses accuracy, on a trained MobileDet-EdgeTPU: plain int8 vs the recipe search.

    .venv/bin/python bench/int8_search.py [CHECKPOINT] [--data DIR] [--train] [--budget N]

CHECKPOINT: a float checkpoint folder (default demo/checkpoints/edgetpu-float, which `make demo`
trains). Without one, `--train` trains a small one first (synthetic data, ~8 minutes on 2
cores); otherwise the script exits with a message saying so.

In one run it
  1. exports the checkpoint and converts float32 (the reference) and plain int8;
  2. makes a copy with one activation outlier channel (`inject_activation_outlier`: the BN scale
     of channel 0 of the first block's projection x1000, compensated in the next conv, so the
     float model is unchanged) and runs the int8 recipe search on it (`search_int8`);
  3. prints one table: AP50 on the held-out split, drop against the float reference, size and
     latency, for plain int8 of the checkpoint, plain int8 with the outlier, and the chosen
     recipe; then the search table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import include  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)

DEFAULT_CHECKPOINT = ROOT / "demo" / "checkpoints" / "edgetpu-float"
DEFAULT_DATA = ROOT / "demo" / "data"


def _train_small(work: Path) -> tuple[Path, Path]:
    from include.data.synth import synthesize
    from include.mobiledet.train import train

    data = work / "data"
    print("training a small MobileDet-EdgeTPU (synthetic data, 128 px, multiplier 0.5) ...",
          flush=True)
    synthesize(data, images=2000, size=128, seed=0, val_fraction=0.1)
    train(data, work / "edgetpu-float", "edgetpu", 1000, batch=16, input_size=128,
          depth_multiplier=0.5, optimizer="adam", augment="flip", progress=False)
    return work / "edgetpu-float", data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", default=None)
    ap.add_argument("--data", default=None, help="COCO dataset with a val split (default "
                                                 "demo/data)")
    ap.add_argument("--train", action="store_true", help="train a small checkpoint if none")
    ap.add_argument("--budget", type=int, default=8)
    ap.add_argument("--calibration-count", type=int, default=100)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--layer", default=None, help="projection to give the outlier (default: "
                                                  "the first block's)")
    args = ap.parse_args(argv)

    from include.config import GateConfig
    from include.console import format_table
    from include.convert.quant_debug import inject_activation_outlier
    from include.convert.recipes import convert
    from include.convert.search import format_search, search_int8
    from include.mobiledet.export import export_checkpoint
    from include.quality.benchmark import benchmark
    from include.quality.evaluate import evaluate

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="mobiledet-bench-int8-search-"))
    ckpt = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    data = Path(args.data) if args.data else DEFAULT_DATA
    if not (ckpt / "checkpoint.json").is_file():
        if not args.train:
            print(f"no float checkpoint at {ckpt}: run `make demo` (it trains "
                  "demo/checkpoints/edgetpu-float), pass a checkpoint folder, or add --train to "
                  "train a small one here (~8 minutes).", file=sys.stderr)
            return 2
        ckpt, data = _train_small(work)
    if not (data / "annotations" / "instances_val.json").is_file():
        print(f"no evaluation split at {data}/annotations/instances_val.json: pass --data "
              "(the dataset the checkpoint was trained on, with a val split).", file=sys.stderr)
        return 2
    gate = GateConfig()
    kw = dict(max_images=args.max_images, show_progress=False)

    export = work / "export"
    export_checkpoint(ckpt, export)
    reference = work / "float32.tflite"
    convert(export, "float32", reference)
    calibration = data  # the pipeline's default: the evaluation dataset (train split if any)
    plain = work / "int8.tflite"
    convert(export, "int8", plain, calibration=calibration,
            calibration_count=args.calibration_count)

    outlier = inject_activation_outlier(ckpt, work / "outlier-ckpt", layer=args.layer)
    outlier_export = work / "outlier-export"
    export_checkpoint(work / "outlier-ckpt", outlier_export)
    outlier_reference = work / "outlier-float32.tflite"
    convert(outlier_export, "float32", outlier_reference)
    outlier_plain = work / "outlier-int8.tflite"
    convert(outlier_export, "int8", outlier_plain, calibration=calibration,
            calibration_count=args.calibration_count)
    chosen = work / "outlier-search" / "model.tflite"
    result = search_int8(outlier_export, calibration, data, outlier_reference, chosen,
                         budget=args.budget, gate_config=gate,
                         calibration_count=args.calibration_count,
                         max_images=args.max_images, show_progress=True)

    rows = []
    for label, model, ref in (("float32", reference, None),
                              ("int8 (plain)", plain, reference),
                              ("float32, outlier", outlier_reference, None),
                              ("int8 (plain), outlier", outlier_plain, outlier_reference),
                              (f"int8 ({result['chosen']}), outlier", chosen if result["passed"]
                               else None, outlier_reference)):
        if model is None:
            rows.append((label, "-", "-", "-", "-", "no candidate passed"))
            continue
        ev = evaluate(model, data, reference=ref, **kw)
        b = benchmark(model, runs=30)
        drop = ev["drop"]["AP50"] if ref is not None else 0.0
        rows.append((label, f"{ev['metrics']['AP50']:.3f}", f"{drop:+.3f}",
                     f"{Path(model).stat().st_size / 1e6:.2f}",
                     f"{b['latency_ms']['p50']:.2f}",
                     "PASS" if drop <= gate.max_drop("int8" if ref is not None else "float32")
                     else "FAIL"))
    print()
    print(f"checkpoint {ckpt}; outlier in {outlier['layer']} channel {outlier['channel']} "
          f"x{outlier['factor']:g}, compensated in {', '.join(outlier['compensated_in'])}")
    print(format_table(rows, ["model", "AP50", "drop vs float", "size MB", "latency ms",
                              f"gate (int8 drop <= {gate.max_drop('int8')})"]))
    print()
    print(format_search(result))
    print(f"\n{time.perf_counter() - started:.0f} s in all; work folder {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
