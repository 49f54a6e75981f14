"""When int8 loses accuracy, on a trained MobileDet-EdgeTPU: plain int8 vs the recipe search.

    .venv/bin/python bench/int8_search.py [CHECKPOINT] [--data DIR] [--train] [--budget N]

CHECKPOINT: a float checkpoint folder (default demo/checkpoints/edgetpu-float, which `make demo`
trains). Without one, `--train` trains one first exactly as the demo does (~8 minutes on 2
cores); otherwise the script exits with a message saying so.

In one run it
  1. exports the checkpoint and converts float32 (the reference) and plain int8;
  2. makes a copy with one activation outlier channel (`inject_activation_outlier`: the BN scale
     of channel 0 of the first block's projection x1000, compensated in the next conv, so the
     float model is unchanged) and runs the int8 recipe search on it (`search_int8`);
  3. prints one table: AP50 on the held-out split, drop against the float reference, size,
     latency, Edge TPU ops mapped (offline prediction), the layers kept float, the int8 accuracy
     verdict and the Edge TPU mapping gate (`gates.require_edgetpu_mapped`), for plain int8 of the
     checkpoint, plain int8 with the outlier, and the chosen recipe; then the search table.

The search runs with `require_edgetpu_mapped` off by default, so that it can choose a float
fallback and show what the Edge TPU cut costs; `--require-edgetpu-mapped` runs it under the
pipeline's default gate, which rejects such a candidate (include/convert/search.py).
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
    """The demo's EdgeTPU float training (`mobiledet demo`: 6,000 synthetic images at 128 px,
    1,900 steps of 16, multiplier 0.5, Adam, flip), about 7-8 minutes on 2 cores."""
    from include.data.synth import synthesize
    from include.mobiledet.train import train
    from include.deploy.demo_commands import DEMO

    data = work / "data"
    print(f"training MobileDet-EdgeTPU as the demo does ({DEMO['images']} synthetic images, "
          f"{DEMO['input_size']} px, multiplier {DEMO['depth_multiplier']}, {DEMO['steps']} "
          f"steps x {DEMO['batch']}) ...", flush=True)
    synthesize(data, images=DEMO["images"], size=DEMO["input_size"], seed=0,
               val_fraction=DEMO["val_fraction"])
    train(data, work / "edgetpu-float", "edgetpu", DEMO["steps"], batch=DEMO["batch"],
          input_size=DEMO["input_size"], depth_multiplier=DEMO["depth_multiplier"],
          optimizer=DEMO["optimizer"], augment=DEMO["augment"], progress=False)
    return work / "edgetpu-float", data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", default=None)
    ap.add_argument("--data", default=None, help="COCO dataset with a val split (default "
                                                 "demo/data)")
    ap.add_argument("--train", action="store_true", help="train one as the demo does if none")
    ap.add_argument("--budget", type=int, default=8)
    ap.add_argument("--calibration-count", type=int, default=100)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--require-edgetpu-mapped", action="store_true",
                    help="search under the pipeline's default gate (every op on the Edge TPU): "
                         "then a float fallback is rejected for its cut; by default the search "
                         "accepts it and the table shows both verdicts")
    ap.add_argument("--layer", default=None, help="projection to give the outlier (default: "
                                                  "the first block's)")
    args = ap.parse_args(argv)

    from include.config import GateConfig
    from include.console import format_table
    from include.convert.quant_debug import inject_activation_outlier
    from include.convert.converter import convert, edgetpu_cost
    from include.convert.search import format_search, search_int8
    from include.gates import edgetpu_mapping_check
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
    strict = GateConfig()                       # the pipeline's gate: every op on the Edge TPU
    gate = strict if args.require_edgetpu_mapped else GateConfig(require_edgetpu_mapped=False)
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
    chosen = work / "outlier-search" / "model.tflite"
    candidates = work / "outlier-search-candidates"   # kept: every row is benchmarked below
    result = search_int8(outlier_export, calibration, data, outlier_reference, chosen,
                         budget=args.budget, gate_config=gate,
                         calibration_count=args.calibration_count, max_images=args.max_images,
                         work_dir=candidates, show_progress=True)
    searched = {r["candidate"]: r for r in result["candidates"]}

    def tpu_of(model, row=None):
        if row is not None and row.get("edgetpu"):
            return row["edgetpu"]
        cost = edgetpu_cost(model)
        return {"mapped": f"{cost['ops_on_tpu']}/{cost['total_ops']}",
                "ops_on_tpu": cost["ops_on_tpu"], "total_ops": cost["total_ops"],
                "ops_on_cpu": cost["ops_on_cpu"],
                "cut_layer": (cost.get("cut") or {}).get("layer")}

    def mapped_verdict(tpu):
        check = edgetpu_mapping_check(tpu, strict)
        if check.passed:
            return "PASS"
        return f"FAIL: cut at {tpu.get('cut_layer') or '?'}, {check.value} ops on the CPU"

    max_drop = gate.max_drop("int8")
    rows = []
    models = [("float32", reference, None, None),
              ("int8 (plain)", plain, reference, None),
              ("float32, outlier", outlier_reference, None, None),
              ("int8 (plain), outlier", candidates / "plain" / "model.tflite",
               outlier_reference, searched["plain"])]
    if result["passed"]:
        models.append((f"int8 ({result['chosen']}), outlier", chosen, outlier_reference,
                       searched[result["chosen"]]))
    for label, model, ref, row in models:
        b = benchmark(model, runs=30)
        size = f"{Path(model).stat().st_size / 1e6:.2f}"
        latency = f"{b['latency_ms']['p50']:.2f}"
        if ref is None:
            ev = evaluate(model, data, **kw)
            rows.append((label, f"{ev['metrics']['AP50']:.3f}", "+0.000", size, latency, "-",
                         "-", "reference", "-"))
            continue
        if row is not None:            # measured by the search on these very files
            ap50, drop = row["metric"], row["drop"]
        else:
            ev = evaluate(model, data, reference=ref, **kw)
            ap50, drop = ev["metrics"]["AP50"], ev["drop"]["AP50"]
        tpu = tpu_of(model, row)
        float_layers = ", ".join((row or {}).get("float_layers") or []) or "-"
        rows.append((label, f"{ap50:.3f}", f"{drop:+.3f}", size, latency, tpu["mapped"],
                     float_layers, "PASS" if drop <= max_drop + 1e-9 else "FAIL",
                     mapped_verdict(tpu)))
    if not result["passed"]:
        rows.append(("int8 (search), outlier", "-", "-", "-", "-", "-", "-",
                     "no candidate passed", "-"))
    print()
    print(f"checkpoint {ckpt} ({meta_text(ckpt)}); evaluated on {data} "
          f"(val split{'' if args.max_images is None else f', first {args.max_images} images'})")
    print(f"outlier in {outlier['layer']} channel {outlier['channel']} x{outlier['factor']:g}, "
          f"compensated in {', '.join(outlier['compensated_in'])}")
    print(format_table(rows, ["model", "AP50", "drop vs float", "size MB", "latency ms",
                              "Edge TPU ops", "float layers",
                              f"int8 gate (drop <= {max_drop})",
                              "Edge TPU mapping gate"]))
    print()
    print("search (gates.require_edgetpu_mapped: "
          f"{str(gate.require_edgetpu_mapped).lower()}):")
    print(format_search(result))
    print(f"\n{time.perf_counter() - started:.0f} s in all; work folder {work}")
    return 0


def meta_text(ckpt: Path) -> str:
    import json

    meta = json.loads((ckpt / "checkpoint.json").read_text())
    t = meta.get("training") or {}
    parts = [meta["variant"], f"{meta['input_size']} px", f"x{meta['depth_multiplier']:g}",
             f"{meta.get('steps', '?')} steps"]
    if t.get("batch"):
        parts[-1] += f" x {t['batch']}"
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
