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
    p.add_argument("--data", required=True, help="COCO-format evaluation dataset")
    p.add_argument("--calibration", default=None, help="int8 calibration data (default: --data)")
    p.add_argument("--store", default=None, help="artifact store (folder or s3://bucket/prefix)")
    p.add_argument("--model-name", default=None)
    p.add_argument("--variants", nargs="+", default=None)
    p.add_argument("--precisions", nargs="+", default=None)
    p.add_argument("--config", default=None, help="pipeline config file (YAML or JSON)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. gates.min_map=0.3 (JSON values allowed)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="synthetic data -> train CPU and EdgeTPU (float, QAT) -> "
                                    "the DAG -> published models and a results table")
    d.add_argument("--workdir", default="demo", help="where data, checkpoints and the store go")
    d.add_argument("--fresh", action="store_true", help="retrain even if checkpoints exist")
    d.add_argument("--steps", type=int, default=None, help="float training steps (default: demo size)")
    d.add_argument("--qat-steps", type=int, default=None)
    d.add_argument("--images", type=int, default=None)
    d.set_defaults(func=cmd_demo)


def _overrides(pairs) -> dict:
    from include.errors import ConfigError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not KEY=VALUE.", where="--set",
                              fix="e.g. --set gates.min_map=0.3")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


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
    from include.pipeline.airflow_env import run_dag

    conf = {"checkpoints": list(args.checkpoint), "data": args.data,
            "calibration": args.calibration, "store": args.store, "model_name": args.model_name,
            "variants": args.variants, "precisions": args.precisions, "config": args.config,
            "overrides": _overrides(args.set)}
    started = time.perf_counter()
    result = run_dag(conf)
    if args.json:
        print_json(result)
    else:
        print_results(result["report"], time.perf_counter() - started)
    return 0


# The demo's budget: 20 minutes on 2 cores for data, three trainings and the DAG run.
DEMO = dict(input_size=128, depth_multiplier=0.5, batch=16, steps=500, qat_steps=150, images=600)


def cmd_demo(args) -> int:
    from include.data.synth import synthesize
    from include.mobiledet.train import train
    from include.pipeline.airflow_env import prepare_airflow, run_dag

    DEMO_TRAINING, DEMO_QAT_STEPS = DEMO, DEMO["qat_steps"]
    started = time.perf_counter()
    work = Path(args.workdir).resolve()
    size = DEMO_TRAINING["input_size"]
    steps = args.steps or DEMO_TRAINING["steps"]
    qat_steps = args.qat_steps or DEMO_QAT_STEPS
    images = args.images or DEMO_TRAINING["images"]
    prepare_airflow()  # migrate the metadata DB first: a broken Airflow fails before training
    data = work / "data"
    if args.fresh or not (data / "synth.json").is_file():
        print(f"[demo] synthetic COCO data: {images} images at {size}px -> {data}")
        synthesize(data, images, size=size, seed=0, val_fraction=0.2)
    ckpts = work / "checkpoints"
    plan = [("cpu", False, None), ("edgetpu", False, None), ("edgetpu", True, "edgetpu-float")]
    for variant, qat, init in plan:
        name = f"{variant}-{'qat' if qat else 'float'}"
        out = ckpts / name
        if out.joinpath("checkpoint.json").is_file() and not args.fresh:
            print(f"[demo] {name}: checkpoint exists ({out}); --fresh retrains")
            continue
        print(f"[demo] training {name} ({qat_steps if qat else steps} steps)")
        train(data, out, variant, qat_steps if qat else steps, batch=DEMO_TRAINING["batch"],
              input_size=size, depth_multiplier=DEMO_TRAINING["depth_multiplier"],
              init=ckpts / init if init else None, qat=qat)
    store = work / "store"
    print(f"[demo] running the mobiledet_convert DAG through Airflow -> {store}")
    result = run_dag({"checkpoints": [str(ckpts / n) for n in ("cpu-float", "edgetpu-float",
                                                                "edgetpu-qat")],
                      "data": str(data), "store": str(store), "model_name": "mobiledet-demo"})
    print_results(result["report"], time.perf_counter() - started)
    print(f"artifacts: {store}/mobiledet-demo/")
    return 0
