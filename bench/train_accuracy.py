"""Accuracy reached in the demo's training budget: float from scratch, then QAT fine-tuning.

The check behind the demo's recipe (`include.deploy.demo_commands.DEMO`), run the way the demo runs
it, on the same synthetic data:

1. synthesize the demo dataset (6,000 images at 128 px, 5% held out as `val`, seed 0);
2. train MobileDet-EdgeTPU + SSDLite from scratch (128 px, depth multiplier 0.5, batch 16,
   Adam with cosine LR, flip augmentation) for the demo's steps: wall time from the call to
   the complete checkpoint, so model building, tracing and data loading count;
3. COCO mAP on the held-out split (pycocotools, through `keras_eval.evaluate_keras`);
4. quantization-aware fine-tuning from that checkpoint for the demo's QAT steps, and the same
   evaluation of the fake-quantised model.

Targets: float AP50 >= 0.5 with training <= 600 s on 2 cores; QAT AP50 within 0.05 of float.
The script prints the table and exits 1 when a target is missed.

    .venv/bin/python bench/train_accuracy.py [--work DIR] [--steps N] [--qat-steps N]

About 11 minutes on 2 cores. Training time moves with whatever else runs on the machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import include  # noqa: E402,F401  (environment for TensorFlow before anything imports it)

TARGET_AP50 = 0.5
TARGET_SECONDS = 600.0
TARGET_QAT_DROP = 0.05


def main(argv=None) -> int:
    from include.atomic import write_json_atomic
    from include.data.synth import synthesize
    from include.mobiledet.keras_eval import evaluate_keras
    from include.mobiledet.train import train
    from include.deploy.demo_commands import DEMO, demo_data_matches

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/mobiledet-bench-train", help="data and checkpoints")
    ap.add_argument("--steps", type=int, default=DEMO["steps"])
    ap.add_argument("--qat-steps", type=int, default=DEMO["qat_steps"])
    ap.add_argument("--variant", default="edgetpu")
    args = ap.parse_args(argv)

    work = Path(args.work)
    data = work / "data"
    size = DEMO["input_size"]
    if not demo_data_matches(data, DEMO["images"], size, DEMO["val_fraction"]):
        print(f"synthesizing {DEMO['images']} images at {size}px -> {data}", flush=True)
        synthesize(data, DEMO["images"], size=size, seed=0, val_fraction=DEMO["val_fraction"])
    common = dict(batch=DEMO["batch"], optimizer=DEMO["optimizer"], augment=DEMO["augment"],
                  progress=False, log_every=100)

    rows = []
    t0 = time.perf_counter()
    float_ckpt = work / f"{args.variant}-float"
    fl = train(data, float_ckpt, args.variant, args.steps, input_size=size,
               depth_multiplier=DEMO["depth_multiplier"], **common)
    float_seconds = time.perf_counter() - t0
    ev_float = evaluate_keras(float_ckpt, data, split="val")
    rows.append(("float", args.steps, float_seconds, fl["training"]["images_per_second"],
                 ev_float))
    print(f"float: {float_seconds:.0f} s, val AP50 {ev_float['AP50']:.3f}", flush=True)

    t0 = time.perf_counter()
    qat_ckpt = work / f"{args.variant}-qat"
    q = train(data, qat_ckpt, args.variant, args.qat_steps, init=float_ckpt, qat=True, **common)
    qat_seconds = time.perf_counter() - t0
    ev_qat = evaluate_keras(qat_ckpt, data, split="val")
    rows.append(("qat", args.qat_steps, qat_seconds, q["training"]["images_per_second"], ev_qat))

    print()
    print(f"{args.variant}, {size}x{size}, depth multiplier {DEMO['depth_multiplier']}, batch "
          f"{DEMO['batch']}, {DEMO['optimizer']}, augment {DEMO['augment']}; "
          f"val: {ev_float['images']} held-out images")
    print(f"{'model':6} {'steps':>6} {'train s':>8} {'img/s':>6} {'AP50':>6} {'AP':>6} "
          f"{'AP75':>6}")
    for name, steps, seconds, ips, ev in rows:
        print(f"{name:6} {steps:6d} {seconds:8.0f} {ips or 0:6.1f} {ev['AP50']:6.3f} "
              f"{ev['AP']:6.3f} {ev['AP75']:6.3f}")
    drop = ev_float["AP50"] - ev_qat["AP50"]
    checks = {
        f"float AP50 >= {TARGET_AP50}": ev_float["AP50"] >= TARGET_AP50,
        f"float training <= {TARGET_SECONDS:.0f} s": float_seconds <= TARGET_SECONDS,
        f"QAT AP50 within {TARGET_QAT_DROP} of float (drop {drop:+.3f})":
            drop <= TARGET_QAT_DROP,
    }
    print()
    for text, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    write_json_atomic(work / "result.json", {
        "float": {"seconds": float_seconds, **ev_float},
        "qat": {"seconds": qat_seconds, **ev_qat}, "checks": checks})
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
