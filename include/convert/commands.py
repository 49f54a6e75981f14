"""CLI verb `convert`."""
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    from include.convert.recipes import conversion_json_path, convert

    report = convert(args.graph, args.precision, args.out, calibration=args.calibration,
                     calibration_count=args.calibration_count, output_type=args.output_type)
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
    return 0
