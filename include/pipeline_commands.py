"""CLI verbs `run` (the mobiledet_convert DAG for checkpoints a user has) and `demo`."""
from __future__ import annotations

import json
import time
from pathlib import Path

from include.console import print_json


def register(sub) -> None:
    p = sub.add_parser("run", help="run the mobiledet_convert DAG through Airflow for checkpoints")
    p.add_argument("--checkpoint", nargs="+", required=True, metavar="URI",
                   help="checkpoint folders, export folders or TFOD bundles (paths or s3:// URIs)")
    p.add_argument("--data", required=True,
                   help="COCO-format evaluation dataset: a folder (annotations/instances_<split>"
                        ".json beside <split>/) or an annotation file")
    p.add_argument("--images", "--image-dir", dest="image_dir", default=None, metavar="DIR",
                   help="the images of the --data annotation file, when they are not where the "
                        "layout puts them (local paths)")
    p.add_argument("--calibration", default=None, help="int8 calibration data (default: --data)")
    p.add_argument("--store", default=None, help="artifact store (folder or s3://bucket/prefix)")
    p.add_argument("--model-name", default=None)
    p.add_argument("--variants", nargs="+", default=None)
    p.add_argument("--precisions", nargs="+", default=None)
    p.add_argument("--config", default=None, help="pipeline config file (YAML or JSON)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. gates.min_map=0.3 (JSON values allowed)")
    p.add_argument("--json", action="store_true")
    from include.pipeline.serve_commands import add_airflow_arguments
    add_airflow_arguments(p)   # --airflow URL, --user, --password, --timeout
    p.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="synthetic data -> train EdgeTPU (float, QAT) and CPU -> "
                                    "the DAG -> published models and a results table")
    d.add_argument("--workdir", default="demo", help="where data, checkpoints and the store go")
    d.add_argument("--fresh", action="store_true", help="retrain even if checkpoints exist")
    d.add_argument("--steps", type=int, default=None,
                   help="EdgeTPU float training steps (default: the demo budget)")
    d.add_argument("--qat-steps", type=int, default=None)
    d.add_argument("--cpu-steps", type=int, default=None, help="CPU-variant float training steps")
    d.add_argument("--images", type=int, default=None)
    d.set_defaults(func=cmd_demo)


def print_results(report: dict, seconds: float | None = None) -> None:
    print()
    print(report["table"])
    print()
    for p in report["published"]:
        where = p.get("manifest_uri") or "-"
        print(f"{p['ckpt_id']}: {p['status']} {p['model']}/{p['version']}  manifest: {where}")
    print(f"run report: {report['report_uri']}")
    if seconds is not None:
        print(f"{report['passed']}/{report['models']} models passed the gates; took {seconds:.0f} s")


def cmd_run(args) -> int:
    from include.config import parse_overrides
    from include.pipeline.airflow_env import run_dag

    conf = {"checkpoints": list(args.checkpoint), "data": run_data(args.data, args.image_dir),
            "calibration": args.calibration, "store": args.store, "model_name": args.model_name,
            "variants": args.variants, "precisions": args.precisions, "config": args.config,
            "overrides": parse_overrides(args.set)}
    if args.airflow:  # trigger on a running deployment through the REST API and follow it
        from include.pipeline.serve_commands import run_on_airflow
        return run_on_airflow(args, conf)   # 0 on success, 1 on failed
    started = time.perf_counter()
    result = run_dag(conf)
    if args.json:
        print_json(result)
    else:
        print_results(result["report"], time.perf_counter() - started)
    return 0


def run_data(data: str, images: str | None) -> str:
    """The DAG's `data` for `--data [--images DIR]`: as given, or with --images a dataset
    folder in the project's layout whose links point at the annotation file and the images
    (include.data.coco.dataset_view), under ~/.cache/mobiledet/datasets/. Checked up front:
    every image the annotation file lists must be in DIR."""
    if images is None:
        return data
    import hashlib
    import os

    from include.data.coco import dataset_arguments, dataset_view
    from include.errors import DataError
    if "://" in data or "://" in images:
        raise DataError("--images takes local paths; a store URI is read as a dataset folder.",
                        where=f"--data {data} --images {images}",
                        fix="lay the dataset out in the store as annotations/instances_<split>"
                            ".json beside <split>/, and pass that prefix as --data alone.")
    with dataset_arguments(data, images) as ann:
        key = hashlib.sha256(f"{Path(ann).resolve()}\n{Path(images).resolve()}".encode())
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return str(dataset_view(ann, images, cache / "mobiledet" / "datasets"
                                / key.hexdigest()[:16]))


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
    from include.mobiledet.train import train
    from include.pipeline.airflow_env import prepare_airflow, run_dag

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
    result = run_dag({"checkpoints": [str(ckpts / n) for n in names],
                      "data": str(data), "store": str(store), "model_name": "mobiledet-demo"})
    print_results(result["report"], time.perf_counter() - started)
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
