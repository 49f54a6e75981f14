"""CLI verbs `convert` (with `--search`) and `quant-debug`."""
from __future__ import annotations

from include.console import print_json


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert an export folder or TFOD bundle to .tflite with one recipe")
    p.add_argument("--graph", required=True, help="export folder (mobiledet export) or TFOD bundle")
    p.add_argument("--precision", required=True,
                   help="float32 | dynamic | float16 | int8 | uint8")
    p.add_argument("--calibration", default=None,
                   help="COCO dataset or image folder for int8 representative data")
    p.add_argument("--calibration-count", type=int, default=100)
    p.add_argument("--output-type", default=None,
                   help="only float32 is possible: the post-process op has float outputs")
    p.add_argument("--out", required=True, help="path of the .tflite to write")
    g = p.add_argument_group("int8 recipe options")
    g.add_argument("--per-tensor", action="store_true",
                   help="one weight scale per tensor instead of per output channel")
    g.add_argument("--activations", default=None, help="int8 (default) | int16 (16x8, CPU only)")
    g.add_argument("--float-layers", nargs="+", default=None, metavar="PATTERN",
                   help="keep these layers float (names as quant-debug prints them, or shell "
                        "patterns such as 'edgetpu/C1/*')")
    g.add_argument("--float-worst", type=int, default=0, metavar="N",
                   help="keep the N worst layers of quant-debug's ranking float")
    s = p.add_argument_group("recipe search (--precision int8 --search)")
    s.add_argument("--search", action="store_true",
                   help="try int8 recipes in order and keep the best passing one")
    s.add_argument("--data", default=None,
                   help="COCO dataset the candidates are evaluated on: a dataset folder or an "
                        "annotation file (instances_*.json)")
    s.add_argument("--images", "--image-dir", dest="image_dir", default=None, metavar="DIR",
                   help="the image folder of an annotation file given as --data, when the "
                        "images are not beside it in <split>/ or images/<split>/ (also used "
                        "when --calibration is the same file)")
    s.add_argument("--reference", default=None,
                   help="float32 .tflite of the same graph (default: converted on the fly)")
    s.add_argument("--budget", type=int, default=None, help="how many candidates to convert")
    s.add_argument("--train-calibration", default=None,
                   help="training split for the train-calibration candidate")
    s.add_argument("--max-images", type=int, default=None, help="evaluate on the first N images")
    s.add_argument("--objective", default="fastest", help="fastest (default) | smallest")
    s.add_argument("--config", default=None, help="pipeline config file (gate thresholds)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_convert)

    q = sub.add_parser("quant-debug", help="per-layer error of the int8 recipe, worst layer first")
    q.add_argument("--graph", required=True, help="float export folder or TFOD bundle")
    q.add_argument("--calibration", required=True,
                   help="COCO dataset or image folder for the representative data")
    q.add_argument("--data", default=None,
                   help="COCO dataset (folder or instances_*.json) or image folder to measure "
                        "on (default: the calibration images)")
    q.add_argument("--image-dir", dest="image_dir", default=None, metavar="DIR",
                   help="the image folder of an annotation file given as --data, when the "
                        "images are not beside it in <split>/ or images/<split>/")
    q.add_argument("--calibration-count", type=int, default=100)
    q.add_argument("--images", type=int, default=None,
                   help="how many images to measure on (default 32)")
    q.add_argument("--per-tensor", action="store_true", help="analyse per-tensor weights")
    q.add_argument("--top", type=int, default=15, help="rows to print (text output)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_quant_debug)


def _options(args) -> dict:
    return {k: v for k, v in {"per_tensor": args.per_tensor, "activations": args.activations,
                              "float_layers": args.float_layers,
                              "float_worst": args.float_worst}.items() if v}


def cmd_convert(args) -> int:
    from include.convert.converter import convert
    from include.convert.recipes import conversion_json_path
    from include.data.coco import dataset_arguments

    if args.search:
        with dataset_arguments(args.data, args.image_dir):
            return _cmd_search(args)
    if args.image_dir is not None:
        from include.errors import ConfigError
        raise ConfigError("--images goes with --search --data FILE.json (the evaluation "
                          "dataset); a plain conversion reads only --calibration.",
                          where="--images",
                          fix="pass the image folder itself as --calibration, or add --search.")
    report = convert(args.graph, args.precision, args.out, calibration=args.calibration,
                     calibration_count=args.calibration_count, output_type=args.output_type,
                     options=_options(args) or None)
    if args.json:
        print_json({"model": args.out, "conversion_json": str(conversion_json_path(args.out)),
                    **report})
        return 0
    for w in report["warnings"]:
        print(f"warning: {w}")
    inp = report["inputs"][0]
    q = inp["quantization"]
    print(f"{args.out}: {report['precision']} ({report['recipe']['description']})")
    print(f"  size {report['size_bytes'] / 1e6:.2f} MB, sha256 {report['sha256'][:16]}..., "
          f"{report['op_count']} ops, converted in {report['seconds']:.1f} s")
    print(f"  input {inp['name']} {inp['dtype']} {inp['shape']}"
          + (f" scale {q['scale']:.6g} zero point {q['zero_point']}" if q else ""))
    print(f"  outputs {', '.join(o['dtype'] for o in report['outputs'])}")
    print(f"  tensor dtypes {report['tensor_dtype_share']}")
    fb = report.get("fallback")
    if fb:
        print(f"  float layers {', '.join(l['name'] for l in fb['float_layers'])}")
        tpu = fb["edgetpu"]
        cut = tpu["cut"] or {}
        print(f"  Edge TPU (prediction): {tpu['ops_on_tpu']}/{tpu['total_ops']} ops mapped"
              + (f", cut at {cut.get('layer')} ({cut.get('operator')})" if cut else ""))
    return 0


def _cmd_search(args) -> int:
    import tempfile
    from pathlib import Path

    from include.config import load_config
    from include.convert.converter import convert
    from include.convert.search import DEFAULT_BUDGET, format_search, search_int8
    from include.errors import ConfigError

    if args.precision != "int8":
        raise ConfigError(f"--search tries int8 recipes; --precision is {args.precision}.",
                          where="--search", fix="use --precision int8 --search.")
    if args.data is None or args.calibration is None:
        raise ConfigError("--search needs --data (the evaluation dataset) and --calibration.",
                          where="--search", fix="pass --data COCO_DIR --calibration DIR.")
    if _options(args):
        raise ConfigError("--search chooses the recipe options itself.", where="--search",
                          fix="drop --per-tensor/--activations/--float-layers/--float-worst.")
    gate = load_config(args.config).gates
    budget = DEFAULT_BUDGET if args.budget is None else args.budget
    with tempfile.TemporaryDirectory(prefix="mobiledet-search-ref-") as tmp:
        reference = args.reference
        if reference is None:
            reference = Path(tmp) / "float32.tflite"
            convert(args.graph, "float32", reference)
        result = search_int8(args.graph, args.calibration, args.data, reference, args.out,
                             budget=budget, gate_config=gate,
                             calibration_count=args.calibration_count,
                             train_calibration=args.train_calibration,
                             max_images=args.max_images, objective=args.objective,
                             show_progress=not args.json)
    if args.json:
        print_json(result)
    else:
        print(format_search(result))
    return 0 if result["passed"] else 1


def cmd_quant_debug(args) -> int:
    from include.convert.quant_debug import DEFAULT_DEBUG_IMAGES, format_layers, quant_debug
    from include.data.coco import dataset_arguments

    with dataset_arguments(args.data, args.image_dir, images_flag="--image-dir"):
        result = quant_debug(args.graph, args.calibration, data=args.data,
                             calibration_count=args.calibration_count,
                             images=DEFAULT_DEBUG_IMAGES if args.images is None else args.images,
                             per_tensor=args.per_tensor)
    if args.json:
        print_json(result)
        return 0
    print(f"{result['graph']}: {result['recipe']}, {len(result['layers'])} quantized layers, "
          f"measured on {result['debug_images']['images']} image(s) "
          f"({result['debug_images']['source']}); {result['sorted_by']}")
    print(format_layers(result, args.top))
    print(f"rmse/scale ~{result['rounding_rmse_scaled']} is plain rounding; channel err 1 = a "
          "channel lost. Keep layers float with `mobiledet convert --precision int8 "
          "--float-layers NAME` or --float-worst N.")
    return 0
