"""CLI verb `import-tfod`: a TFOD training checkpoint -> a checkpoint folder of this project.

    mobiledet import-tfod --checkpoint training/model.ckpt-50000 --config training/pipeline.config
        --out ckpt/edgetpu-qat [--labels label_map.pbtxt] [--json]
    mobiledet import-tfod --checkpoint training/ --out ckpt/x [--step 50000]   (a training folder)
    mobiledet import-tfod --checkpoint PREFIX --config pipeline.config --check --json
"""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("import-tfod",
                       help="TFOD (TF1) training checkpoint -> checkpoint folder (no TF1 needed)")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint prefix (training/model.ckpt-50000) or a TFOD training folder")
    p.add_argument("--config", default=None,
                   help="the TFOD pipeline.config it was trained with (default: the one beside "
                        "the checkpoint)")
    p.add_argument("--out", default=None, help="checkpoint folder to write")
    p.add_argument("--labels", default=None,
                   help="label_map.pbtxt or labels.txt (default: the config's label_map_path, "
                        "or label_map.pbtxt beside the config)")
    p.add_argument("--step", type=int, default=None,
                   help="with a training folder: the global step (default: the newest landed)")
    p.add_argument("--check", action="store_true",
                   help="only map the names and shapes (reads only the .index file)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import_tfod)


def _resolve(args):
    """-> (prefix, config, step identity or None)."""
    from include.errors import CheckpointError, ConfigError
    from include.tfod import training

    ckpt = Path(args.checkpoint)
    identity = None
    if ckpt.is_dir():
        if not training.is_training_dir(ckpt):
            raise CheckpointError(
                "the folder is not a TFOD training folder (it needs pipeline.config, the "
                "`checkpoint` state file and model.ckpt-N.index files).", where=str(ckpt),
                fix="pass a checkpoint prefix such as training/model.ckpt-50000, or the folder "
                    "TFOD trained into.")
        steps = training.steps_of(ckpt)
        if args.step is None:
            if not steps:
                raise CheckpointError("no complete step in the training folder (the `checkpoint` "
                                      "file names no model.ckpt-N whose files are all there).",
                                      where=str(ckpt), fix="wait for training to write one, or "
                                                           "pass --step N.")
            identity = steps[-1]
        else:
            identity = next((s for s in steps if s.step == args.step), None)
        prefix = ckpt / (Path(identity.prefix).name if identity else f"model.ckpt-{args.step}")
    else:
        if args.step is not None:
            raise ConfigError("--step goes with a training folder, not a checkpoint prefix.",
                              where="--step", fix="leave --step out, or pass the folder.")
        prefix = ckpt
    config = Path(args.config) if args.config else Path(str(prefix)).parent / "pipeline.config"
    if not args.config and not config.is_file():
        raise ConfigError("no --config given and no pipeline.config beside the checkpoint.",
                          where=str(config), fix="pass --config PATH/pipeline.config (the TFOD "
                                                 "config the checkpoint was trained with).")
    return str(prefix), config, identity


def cmd_import_tfod(args) -> int:
    from include.console import print_json
    from include.errors import ConfigError

    prefix, config, identity = _resolve(args)
    if args.check:
        from include.tfod.importer import plan_import

        try:
            report = plan_import(prefix, config).report
        except Exception as exc:
            if args.json and getattr(exc, "report", None) is not None:
                print_json(exc.report)
            raise
        if args.json:
            print_json(report)
        else:
            _print_report(report)
        return 0
    if not args.out:
        raise ConfigError("--out is required (or use --check).", where="--out",
                          fix="pass --out DIR, the checkpoint folder to write.")
    from include.tfod.importer import import_tfod

    result = import_tfod(prefix, config, args.out, labels=args.labels,
                         identity=(identity.fingerprint, identity.created) if identity else None)
    if args.json:
        print_json(result)
    else:
        _print_report(result)
        print(f"wrote {result['out']} ({result['variant']}, "
              f"{'QAT' if result['qat'] else 'float'}, step {result['step']}, "
              f"{result['labels']} class names from {result['label_source'] or 'nowhere'})")
    return 0


def _print_report(r: dict) -> None:
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(r["ignored_kinds"].items())) or "none"
    print(f"{r['checkpoint']}: {r['variant']} {'QAT' if r['qat'] else 'float'}, step {r['step']}: "
          f"{r['mapped']} variables mapped ({r['values']:,} values, {r['ranges']} quantization "
          f"range bounds), {len(r['ignored'])} ignored ({kinds}); unmapped: "
          f"{len(r['unmapped_checkpoint'])} in the checkpoint, {len(r['unmapped_model'])} in "
          "the model")
