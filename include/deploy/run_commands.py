"""CLI verb `run`: the mobiledet_convert DAG for checkpoints a user has, through Airflow.

    mobiledet run --checkpoint CKPT... --data COCO [--store URI] [--precisions ...] [--verbose]
    mobiledet run ... --airflow http://airflow:8080 [--user U --password P]

In this process (dag.test), the run shows as a live view, a line per step with its state and
time (include/deploy/run_view.py), then the results table; Airflow's task logs go to a log
file whose path is printed (include/deploy/live_run.py). `--verbose` streams the task logs
instead, as Airflow prints them. With `--airflow URL` the DAG is triggered on a running
deployment through its REST API and followed with the same view.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from include.console import print_json


def register(sub) -> None:
    p = sub.add_parser("run", help="run the mobiledet_convert DAG through Airflow for checkpoints")
    p.add_argument("--checkpoint", nargs="+", required=True, metavar="URI",
                   help="checkpoint folders, export folders, TFOD bundles, TFOD training folders (the newest step) or one step's prefix (.../model.ckpt-N); paths or s3:// URIs")
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
    p.add_argument("--json", action="store_true",
                   help="print the run's result as JSON (task logs go to the log file)")
    add_verbose_argument(p)
    add_airflow_arguments(p)   # --airflow URL, --user, --password, --timeout
    p.set_defaults(func=cmd_run)


def add_verbose_argument(parser) -> None:
    """--verbose after the verb, as before it (`mobiledet --verbose run`): stream Airflow's
    task logs (and TensorFlow's native lines) instead of the live view."""
    import argparse

    parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="stream Airflow's task logs as they come instead of the live view "
                             "(also TensorFlow's native start-up lines)")


def add_airflow_arguments(parser) -> None:
    """`mobiledet run`'s options for a running deployment (--airflow URL, --user, --password)."""
    parser.add_argument("--airflow", default=None, metavar="URL",
                        help="trigger mobiledet_convert on the Airflow at URL through its REST "
                             "API and follow the run (instead of dag.test() in this process)")
    parser.add_argument("--user", default="admin", help="Airflow user (with --airflow)")
    parser.add_argument("--password", default=None,
                        help="its password (default: $MOBILEDET_AIRFLOW_PASSWORD; none: the "
                             "deployment must allow everyone as admin)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds to follow the run before giving up (with --airflow)")


def print_results(report: dict, seconds: float | None = None, log_file: str | None = None) -> None:
    print()
    print(report["table"])
    print()
    for p in report["published"]:
        where = p.get("manifest_uri") or "-"
        print(f"{p['ckpt_id']}: {p['status']} {p['model']}/{p['version']}  manifest: {where}")
    print(f"run report: {report['report_uri']}")
    if log_file:
        print(f"task logs: {log_file}")
    if seconds is not None:
        print(f"{report['passed']}/{report['models']} models passed the gates; took {seconds:.0f} s")


def cmd_run(args) -> int:
    from include.config import parse_overrides

    conf = {"checkpoints": list(args.checkpoint), "data": run_data(args.data, args.image_dir),
            "calibration": args.calibration, "store": args.store, "model_name": args.model_name,
            "variants": args.variants, "precisions": args.precisions, "config": args.config,
            "overrides": parse_overrides(args.set)}
    if args.airflow:  # trigger on a running deployment through the REST API and follow it
        return run_on_airflow(args, conf)   # 0 on success, 1 on failed
    started = time.perf_counter()
    result = run_here(conf, verbose=getattr(args, "verbose", False), view=not args.json)
    if args.json:
        print_json(result)
    else:
        print_results(result["report"], time.perf_counter() - started, result.get("log_file"))
    return 0


def run_here(conf: dict, *, verbose: bool = False, view: bool = True) -> dict:
    """mobiledet_convert in this process (dag.test): run_dag's result, plus "log_file".

    `verbose`: the task logs stream to this process's output, as dag.test prints them.
    Otherwise they go to a new log file (its path is printed first, unless `view` is False),
    and the live view shows the run on stdout."""
    from include.deploy.airflow_env import run_dag
    from include.deploy.live_run import follow_dag_test, output_to, run_log_path
    from include.deploy.run_view import RunView

    if verbose:
        return {**run_dag(conf), "log_file": None}
    path = run_log_path()
    if view:
        print(f"Running mobiledet_convert in this process (dag.test); task logs: {path}",
              flush=True)
    with output_to(path) as screen:
        if not view:
            return {**run_dag(conf, logs=f"in {path}"), "log_file": str(path)}
        with RunView(screen) as live:
            result = follow_dag_test(conf, live, logs=f"in {path}")
    return {**result, "log_file": str(path)}


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


def remote_conf(conf: dict) -> dict:
    """The run conf for another process: existing local paths made absolute, empties dropped."""
    def fix(value):
        if isinstance(value, str) and value and "://" not in value and Path(value).exists():
            return str(Path(value).resolve())
        return value

    out = {}
    for key, value in conf.items():
        if value in (None, [], {}):
            continue
        out[key] = [fix(v) for v in value] if isinstance(value, list) else fix(value)
    return out


def run_on_airflow(args, conf: dict) -> int:
    """`mobiledet run --airflow URL`: trigger, follow the run in the live view (the task
    instances from the REST API), exit 0 on success, 1 if not."""
    from include.deploy.client import trigger_and_follow
    from include.deploy.run_view import RunView
    from include.settings import settings

    password = args.password or settings().airflow_password
    follow = dict(username=args.user, password=password, timeout=args.timeout)
    if getattr(args, "json", False):
        final = trigger_and_follow(args.airflow, remote_conf(conf), out=lambda line: None,
                                   **follow)
        print_json(final)
    elif getattr(args, "verbose", False):   # one line per task state change, as before
        final = trigger_and_follow(args.airflow, remote_conf(conf),
                                   out=lambda line: print(line, flush=True), **follow)
    else:
        with RunView(sys.stdout) as view:
            final = trigger_and_follow(
                args.airflow, remote_conf(conf), on_task_change=view.observe,
                out=lambda line: view.console.print(line, markup=False, highlight=False),
                **follow)
    return 0 if final.get("state") == "success" else 1
