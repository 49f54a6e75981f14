"""CLI verbs of the model family: describe, train, export."""
from __future__ import annotations

from include.console import format_table, print_json
from include.mobiledet.spec import VARIANTS


def _add_spec_args(p):
    # No argparse `choices`: ModelSpec's own error names the setting and the allowed values.
    p.add_argument("--variant", default=None, help=f"one of {', '.join(VARIANTS)}")
    p.add_argument("--num-classes", type=int, default=90)
    p.add_argument("--input-size", type=int, default=320)
    p.add_argument("--depth-multiplier", type=float, default=1.0)


def register(sub) -> None:
    p = sub.add_parser("describe", help="parameters, multiply-adds, anchors and feature maps of a variant")
    _add_spec_args(p)
    p.add_argument("--all", action="store_true", help="the four variants side by side")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("export", help="checkpoint -> TFLite-ready frozen graph (TFOD export layout)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-detections", type=int, default=10)
    p.add_argument("--score-threshold", type=float, default=1e-8)
    p.add_argument("--iou-threshold", type=float, default=0.6)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    from include.mobiledet import train_commands
    train_commands.register(sub)


def cmd_describe(args) -> int:
    from include.errors import ConfigError
    from include.mobiledet.describe import describe
    from include.mobiledet.spec import ModelSpec

    if args.all:
        variants = list(VARIANTS)
    elif args.variant:
        variants = [args.variant]
    else:
        raise ConfigError("no variant given.", where="--variant",
                          fix=f"pass --variant {{{','.join(VARIANTS)}}} or --all.")
    specs = [ModelSpec(v, args.num_classes, args.input_size, args.depth_multiplier) for v in variants]
    results = [describe(s) for s in specs]
    if args.json:
        print_json(results[0] if len(results) == 1 and not args.all else results)
        return 0
    rows = [
        ("params", *(f"{r['params'] / 1e6:.3f} M" for r in results)),
        ("trainable params", *(f"{r['trainable_params'] / 1e6:.3f} M" for r in results)),
        ("multiply-adds", *(f"{r['macs'] / 1e9:.3f} B" for r in results)),
        ("anchors", *(r["anchors"] for r in results)),
        ("feature maps", *(" ".join(f"{h}x{w}x{c}" for h, w, c in r["feature_maps"]) for r in results)),
    ]
    s = specs[0]
    print(f"SSDLite + MobileDet, {s.num_classes} classes, {s.input_size}x{s.input_size}, "
          f"depth multiplier {s.depth_multiplier}")
    print(format_table(rows, ["", *variants]))
    return 0


def cmd_export(args) -> int:
    from include.mobiledet.export import export_checkpoint

    info = export_checkpoint(args.checkpoint, args.out, max_detections=args.max_detections,
                             score_threshold=args.score_threshold, iou_threshold=args.iou_threshold)
    if args.json:
        print_json({"out": args.out, **info})
    else:
        s = info["spec"]
        print(f"exported {s['variant']} ({'QAT' if info['qat'] else 'float'}, {s['num_classes']} classes, "
              f"{s['input_size']}x{s['input_size']}) to {args.out}: tflite_graph.pb "
              f"({info['nodes']} nodes, {info['fake_quant_nodes']} fake-quant, {info['anchors']} anchors), "
              "pipeline.config, export.json")
    return 0
