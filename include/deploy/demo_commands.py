"""CLI verb `demo`: synthetic data -> train EdgeTPU (float, then QAT) and CPU -> the
mobiledet_convert DAG through Airflow, shown as `mobiledet run` shows it -> the results table.
"""
from __future__ import annotations

import json
import time
from pathlib import Path


def register(sub) -> None:
    from include.deploy.run_commands import add_verbose_argument

    d = sub.add_parser("demo", help="synthetic data -> train EdgeTPU (float, QAT) and CPU -> "
                                    "the DAG -> published models and a results table")
    d.add_argument("--workdir", default="demo", help="where data, checkpoints and the store go")
    d.add_argument("--fresh", action="store_true", help="retrain even if checkpoints exist")
    d.add_argument("--steps", type=int, default=None,
                   help="EdgeTPU float training steps (default: the demo budget)")
    d.add_argument("--qat-steps", type=int, default=None)
    d.add_argument("--cpu-steps", type=int, default=None, help="CPU-variant float training steps")
    d.add_argument("--images", type=int, default=None)
    add_verbose_argument(d)
    d.set_defaults(func=cmd_demo)


# The demo's budget: at most 20 minutes on 2 cores for data, three trainings and the DAG run.
# The EdgeTPU float model gets the 10-minute training budget (measured by
# bench/train_accuracy.py: see the README's "Training"); its QAT fine-tune and a short
# CPU-variant run (to show a second architecture in the fan-out) share what is left.
DEMO = dict(input_size=128, depth_multiplier=0.5, batch=16, optimizer="adam", augment="flip",
            images=6000, val_fraction=0.05, steps=1900, qat_steps=300, cpu_steps=600)


def demo_data_matches(data: Path, images: int, size: int, val_fraction: float) -> bool:
    try:
        meta = json.loads((data / "synth.json").read_text())
        return (sum(meta["images"].values()), meta["size"], meta["val_fraction"]) == \
            (images, size, val_fraction)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def cmd_demo(args) -> int:
    from include.data.synth import synthesize
    from include.deploy.airflow_env import prepare_airflow
    from include.deploy.run_commands import print_results, run_here
    from include.mobiledet.train import train

    started = time.perf_counter()
    work = Path(args.workdir).resolve()
    size = DEMO["input_size"]
    steps = args.steps or DEMO["steps"]
    qat_steps = args.qat_steps or DEMO["qat_steps"]
    cpu_steps = args.cpu_steps or DEMO["cpu_steps"]
    images = args.images or DEMO["images"]
    prepare_airflow()  # migrate the metadata DB first: a broken Airflow fails before training
    data = work / "data"
    fresh = args.fresh
    if fresh or not demo_data_matches(data, images, size, DEMO["val_fraction"]):
        print(f"[demo] synthetic COCO data: {images} images at {size}px -> {data}")
        synthesize(data, images, size=size, seed=0, val_fraction=DEMO["val_fraction"])
        fresh = True   # checkpoints trained on other data are stale
    ckpts = work / "checkpoints"
    plan = [("edgetpu-float", "edgetpu", False, None, steps),
            ("edgetpu-qat", "edgetpu", True, "edgetpu-float", qat_steps),
            ("cpu-float", "cpu", False, None, cpu_steps)]
    names = [p[0] for p in plan]
    for name, variant, qat, init, n in plan:
        out = ckpts / name
        if out.joinpath("checkpoint.json").is_file() and not fresh:
            print(f"[demo] {name}: checkpoint exists ({out}); --fresh retrains")
            continue
        print(f"[demo] training {name} ({n} steps)")
        train(data, out, variant, n, batch=DEMO["batch"], input_size=size,
              depth_multiplier=DEMO["depth_multiplier"], optimizer=DEMO["optimizer"],
              augment=DEMO["augment"], init=ckpts / init if init else None, qat=qat)
    store = work / "store"
    print(f"[demo] running the mobiledet_convert DAG through Airflow -> {store}")
    result = run_here({"checkpoints": [str(ckpts / n) for n in names],
                       "data": str(data), "store": str(store), "model_name": "mobiledet-demo"},
                      verbose=getattr(args, "verbose", False))
    print_results(result["report"], time.perf_counter() - started, result.get("log_file"))
    print(f"artifacts: {store}/mobiledet-demo/")
    print()
    print(_demo_training_summary(ckpts, names))
    return 0


def _demo_training_summary(ckpts: Path, names) -> str:
    """What the table's models were trained with, and how to read their AP50."""
    from include.mobiledet.checkpoint import read_checkpoint_meta

    lines = ["How the demo's checkpoints were trained (held-out split: "
             f"{DEMO['val_fraction']:.0%} of the synthetic images):"]
    for name in names:
        t = read_checkpoint_meta(ckpts / name)["training"]
        lines.append(f"  {name:14} {t['steps']:5d} steps x {t['batch']} in {t['seconds']:4.0f} s "
                     f"({t['images_per_second']:.0f} images/s), {t['optimizer']['name']}, "
                     f"loss {t['initial_loss']:.2f} -> {t['final_loss']:.2f}")
    lines += [
        "cpu-float is a short run, there to show a second architecture and the CPU precisions",
        "(dynamic, float16): its mAP is low by design. The table's AP50 is the published .tflite",
        "models' (at most 10 detections, fast NMS, as on the device); `make bench-train` reports",
        "the checkpoints' COCO mAP (up to 100 detections per image)."]
    return "\n".join(lines)
