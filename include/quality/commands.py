"""CLI verbs of the quality checks: evaluate, validate, benchmark, visualize.

Each verb is a thin wrapper over one function of include.quality; heavy imports (LiteRT,
pycocotools, Great Expectations) happen inside the handlers.
"""
from __future__ import annotations

import argparse

from include.quality.device_commands import add_device_arguments, run_device_benchmark

LABELS_HELP = ("names for the model's classes, instead of its own label map: a TFOD "
               "label_map.pbtxt (item id N names output class N-1; id 0 is the background) or a "
               "labels.txt (line N names output class N-1, i.e. TFOD id N; '???' marks an unused "
               "id, no background line)")
DATA_HELP = ("dataset folder (annotations/instances_<split>.json beside <split>/) or an annotation "
             "file (instances_*.json)")
IMAGES_HELP = ("the image folder of an annotation file given as --data, when the images are not "
               "beside it in <split>/ or images/<split>/")


def add_image_dir(parser, *flags: str) -> None:
    """--images DIR (and the alias --image-dir; only --image-dir where --images is a count)."""
    parser.add_argument(*flags, dest="image_dir", default=None, metavar="DIR", help=IMAGES_HELP)


def register(sub) -> None:
    ev = sub.add_parser(
        "evaluate", help="COCO mAP of a .tflite detector on a COCO-format dataset",
        description="Run the model on a COCO-format dataset and report pycocotools' 12 metrics "
                    "(AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl) and AP "
                    "per category. With --reference: the reference's metrics, the drop and the "
                    "agreement of the two models.")
    ev.add_argument("--model", required=True, help="the .tflite to evaluate")
    ev.add_argument("--data", required=True, metavar="COCO", help=DATA_HELP)
    add_image_dir(ev, "--images", "--image-dir")
    ev.add_argument("--split", default=None, help="dataset split (default: val if present)")
    ev.add_argument("--labels", default=None, metavar="FILE",
                    help=LABELS_HELP + "; matched to the dataset's categories by name, else by "
                                       "id (TFOD: label id = category id)")
    ev.add_argument("--max-images", type=int, default=None, metavar="N",
                    help="evaluate the first N images only")
    ev.add_argument("--threads", type=int, default=None, metavar="T",
                    help="worker threads, one interpreter each (default: all cores)")
    ev.add_argument("--strategy", default="workers", choices=("workers", "interpreter"),
                    help="workers: T interpreters with 1 thread each (default); interpreter: "
                         "one interpreter with T threads")
    ev.add_argument("--reference", default=None, metavar="FLOAT_TFLITE",
                    help="the float32 model to compare with (drop and agreement)")
    ev.add_argument("--agreement-threshold", type=float, default=0.3, metavar="S",
                    help="reference detections at or above this score are the agreement's "
                         "ground truth (default 0.3)")
    ev.add_argument("--out", default=None, metavar="RESULTS_JSON",
                    help="write the detections in COCO results format here")
    ev.add_argument("--metrics-out", default=None, metavar="JSON",
                    help="write the summary (metrics) as JSON here")
    ev.add_argument("--json", action="store_true", help="print the summary as JSON")
    ev.set_defaults(func=cmd_evaluate)

    va = sub.add_parser(
        "validate", help="check a .tflite detector's output contract with Great Expectations",
        description="Run K images through the model and check its outputs with Great "
                    "Expectations: four float32 outputs of the right shapes, scores in [0, 1] "
                    "sorted best first, boxes ordered and in range, whole class numbers below "
                    "num_classes, num_detections <= D, no NaN/inf, the promised input dtype. "
                    "Writes the GX result JSON and Data Docs; exits non-zero when an "
                    "expectation fails.")
    va.add_argument("--model", required=True, help="the .tflite to check")
    va.add_argument("--data", default=None, metavar="DIR",
                    help="COCO dataset (folder or instances_*.json) or image folder (default: "
                         "seeded noise images)")
    add_image_dir(va, "--image-dir")
    va.add_argument("--images", type=int, default=8, metavar="K", help="images to run (default 8)")
    va.add_argument("--out-dir", default=None, metavar="DIR",
                    help="where the result JSON and Data Docs go (default: <stem>_validation/ "
                         "next to the model)")
    va.add_argument("--expect-input-dtype", default=None, choices=("uint8", "float32"),
                    help="the input dtype the recipe promised (default: from the conversion "
                         "report)")
    va.add_argument("--num-classes", type=int, default=None, metavar="N",
                    help="classes, when the model has no readable post-process op")
    va.add_argument("--json", action="store_true", help="print the summary as JSON")
    va.set_defaults(func=cmd_validate)

    be = sub.add_parser(
        "benchmark", help="latency and memory of a .tflite in the LiteRT interpreter",
        description="Time invoke() like TFLite's benchmark_model (min/mean/p50/p90/max/std), "
                    "in a fresh subprocess that also reports init time and peak memory.")
    be.add_argument("--model", default=None, help="the .tflite to benchmark")
    be.add_argument("--threads", type=int, default=None, metavar="T",
                    help="interpreter threads (default: all cores)")
    be.add_argument("--warmup", type=int, default=10, metavar="W", help="untimed runs (default 10)")
    be.add_argument("--runs", type=int, default=50, metavar="R", help="timed runs (default 50)")
    be.add_argument("--reference", default=None, metavar="FLOAT_TFLITE",
                    help="the float32 model of the same checkpoint: timed alongside in "
                         "interleaved rounds, giving latency_ratio_to_float32")
    be.add_argument("--json", action="store_true", help="print the result as JSON")
    add_device_arguments(be)  # --device adb:SERIAL, --delegate, --from-log (device_commands.py)
    be.set_defaults(func=cmd_benchmark)

    vi = sub.add_parser(
        "visualize", help="draw a model's detections on an image",
        description="Run the model on one image and draw the detections at or above the "
                    "threshold, with class names and scores, on the original image.")
    vi.add_argument("--model", required=True, help="the .tflite to run")
    vi.add_argument("--image", required=True, help="the image file")
    vi.add_argument("--threshold", type=float, default=0.3, help="score threshold (default 0.3)")
    vi.add_argument("--labels", default=None, metavar="FILE",
                    help=LABELS_HELP + "; or a JSON label map or a COCO dataset (default: the "
                                       "label map in the conversion report, else 'class N')")
    vi.add_argument("--out", required=True, help="the PNG to write")
    vi.add_argument("--json", action="store_true", help="print the detections as JSON")
    vi.set_defaults(func=cmd_visualize)


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from include.atomic import write_json_atomic
    from include.console import format_table, print_json
    from include.data.coco import dataset_arguments
    from include.quality.evaluate import METRIC_NAMES, evaluate

    # evaluate() checks the images itself (only the --max-images it reads)
    with dataset_arguments(args.data, args.image_dir, check=False):
        result = evaluate(args.model, args.data, split=args.split, max_images=args.max_images,
                          threads=args.threads, reference=args.reference, out=args.out,
                          agreement_threshold=args.agreement_threshold, strategy=args.strategy,
                          show_progress=not args.json, images=args.image_dir,
                          labels=args.labels)
    if args.metrics_out:
        write_json_atomic(args.metrics_out, result)
    if args.json:
        print_json(result)
        return 0
    print(f"{result['model']} on {result['data']} ({result['images']} images, "
          f"{result['detections']} detections, {result['categories_evaluated']} categories)")
    print(f"classes: {result['class_mapping']}")
    ref = result.get("reference")
    headers = ["metric", "model"] + (["reference", "drop"] if ref else [])
    rows = []
    for k in METRIC_NAMES:
        row = [k, _fmt(result["metrics"][k])]
        if ref:
            row += [_fmt(ref["metrics"][k]), _fmt(result["drop"].get(k))]
        rows.append(row)
    print(format_table(rows, headers))
    if ref:
        a = result["agreement"]
        print(f"agreement with the reference (its detections >= {a['score_threshold']} as ground "
              f"truth, {a['reference_boxes']} boxes): AP50 {_fmt(a['AP50'])}, AP {_fmt(a['AP'])}")
    print(f"{result['images_per_s']:.1f} images/s with {result['threads']} threads "
          f"({result['strategy']}); {result['seconds']:.1f} s in all")
    if result["results_file"]:
        print(f"detections written to {result['results_file']}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from include.console import format_table, print_json
    from include.quality.validate import failure_error, validate

    from include.data.coco import dataset_arguments

    with dataset_arguments(args.data, args.image_dir, images_flag="--image-dir"):
        summary = validate(args.model, data=args.data, images=args.images,
                           out_dir=args.out_dir, expect_input_dtype=args.expect_input_dtype,
                           num_classes=args.num_classes)
    if args.json:
        print_json(summary)
    else:
        rows = [("ok" if e["success"] else "FAILED", e["name"], e["table"], e["details"])
                for e in summary["expectations"]]
        print(format_table(rows, ["result", "expectation", "table", "details"]))
        print(f"result: {summary['result_json']}\ndata docs: {summary['data_docs']}")
    if not summary["success"]:
        raise failure_error(summary)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from include.console import format_table, print_json
    from include.quality.benchmark import benchmark

    device_rc = run_device_benchmark(args)  # --device / --from-log; None: the host benchmark
    if device_rc is not None:
        return device_rc
    r = benchmark(args.model, threads=args.threads, warmup=args.warmup, runs=args.runs,
                  reference=getattr(args, "reference", None))
    if args.json:
        print_json(r)
        return 0
    lat = r["latency_ms"]
    print(f"{r['model']} ({r['model_size_bytes'] / 1e6:.2f} MB), {r['threads']} threads, "
          f"{r['runs']} runs after {r['warmup']} warmup")
    print(format_table([[f"{lat[k]:.3f}" for k in ("min", "mean", "p50", "p90", "max", "std")]],
                       ["min ms", "mean ms", "p50 ms", "p90 ms", "max ms", "std ms"]))
    print(f"init {r['init_ms']:.1f} ms, first inference {r['first_ms']:.1f} ms, "
          f"{r['throughput_per_s']:.1f} images/s")
    print(f"memory: peak RSS {r['peak_rss_mb']:.1f} MiB, of which the model "
          f"{r['model_memory_mb']:.1f} MiB (baseline {r['baseline_rss_mb']:.1f} MiB)")
    print("delegate: " + delegate_text(r.get("delegate")))
    if r.get("reference"):
        ref = r["reference"]
        ratio = r.get("latency_ratio_to_float32")
        print(f"reference {ref['model']}: p50 {ref['latency_ms']['p50']:.3f} ms; ratio to "
              f"float32 {'-' if ratio is None else f'{ratio:.2f}x'} (p50, interleaved rounds)")
    return 0


def delegate_text(cov) -> str:
    """One line about a benchmark's delegate coverage."""
    if not cov:
        return "not measured"
    fallback = ", ".join(f"{k} x{v}" for k, v in (cov.get("fallback_ops") or {}).items())
    return (f"{cov.get('delegate') or 'none'}: {cov['ops_delegated']}/{cov['ops_total']} ops in "
            f"{cov['partitions']} partition(s); off the delegate: {fallback or 'none'}")


def cmd_visualize(args: argparse.Namespace) -> int:
    from include.console import print_json
    from include.quality.visualize import visualize

    r = visualize(args.model, args.image, args.out, threshold=args.threshold, labels=args.labels)
    if args.json:
        print_json(r)
        return 0
    print(f"{len(r['detections'])} detections >= {r['threshold']} drawn on {r['image']} "
          f"({r['width']}x{r['height']}) -> {r['out']} (names: {r['labels_source']})")
    for d in r["detections"]:
        print(f"  {d['name']} {d['score']:.3f} {d['box']}")
    return 0
