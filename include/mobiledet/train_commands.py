"""CLI verb `mobiledet train` (float training and quantization-aware fine-tuning).

Registered by `include.mobiledet.commands.register`; TensorFlow is imported only when the verb
runs, so `mobiledet --help` stays fast.
"""
from __future__ import annotations

from include.mobiledet.augment import PRESETS
from include.mobiledet.spec import VARIANTS
from include.mobiledet.train import OPTIMIZERS


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a detector on a COCO-format dataset (float, or QAT fine-tuning)",
        description="Train SSDLite + MobileDet on a COCO-format dataset and write a checkpoint "
                    "folder (weights.h5, pipeline.config, checkpoint.json written last). "
                    "With --qat, fine-tune a float checkpoint (--init) quantization-aware.")
    p.add_argument("--variant", required=True, choices=VARIANTS)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="dataset folder (annotations/instances_<split>.json beside <split>/) or "
                        "an annotation file (instances_*.json)")
    p.add_argument("--images", "--image-dir", dest="image_dir", default=None, metavar="DIR",
                   help="the image folder of an annotation file given as --data, when the "
                        "images are not beside it in <split>/ or images/<split>/")
    p.add_argument("--split", default="train", help="split of a dataset folder (default train)")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint folder to write")
    p.add_argument("--steps", required=True, type=int)
    p.add_argument("--batch", type=int, default=None, help="batch size (default 32)")
    p.add_argument("--input-size", type=int, default=None,
                   help="input side in pixels (default: --init's, else 320)")
    p.add_argument("--depth-multiplier", type=float, default=None,
                   help="channel multiplier (default: --init's, else 1.0)")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from this checkpoint's weights (required with --qat)")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware fine-tuning of the --init float checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="momentum",
                   help="momentum: SGD with momentum 0.9, as the TFOD configs (default); "
                        "adam: learns much faster in short runs from scratch (the demo's)")
    p.add_argument("--lr", type=float, default=None,
                   help="base learning rate of the cosine schedule (default x batch/32: 0.08 "
                        "for momentum, 0.006 for adam; a tenth of that with --qat)")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="linear warm-up steps (default 10%% of --steps)")
    p.add_argument("--augment", choices=tuple(PRESETS), default="ssd",
                   help="ssd: horizontal flip + SSD random crop (the TFOD configs, default); "
                        "flip: horizontal flip only; none")
    p.add_argument("--eval-split", default=None, metavar="SPLIT",
                   help="after training, COCO mAP (pycocotools, up to 100 detections per image) "
                        "of the checkpoint on this split of --data, e.g. val")
    p.add_argument("--json", action="store_true", help="print the checkpoint metadata as JSON")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from pathlib import Path

    from include.data.coco import dataset_arguments
    from include.errors import ConfigError

    if args.eval_split is not None and Path(args.data).is_file():
        raise ConfigError(f"--eval-split {args.eval_split} names a split of a dataset folder, "
                          f"and --data is one annotation file ({Path(args.data).name}), so the "
                          "evaluation would run on the training images.", where="--eval-split",
                          fix="pass --data the dataset folder (annotations/instances_<split>"
                              ".json), or leave out --eval-split and evaluate the converted "
                              "model with `mobiledet evaluate --data instances_val.json "
                              "[--images DIR]`.")
    with dataset_arguments(args.data, args.image_dir):   # images checked before training
        return _train(args)


def _train(args) -> int:
    from include.console import print_json
    from include.mobiledet.train import DEFAULT_BATCH, open_split, train

    if args.eval_split is not None:
        open_split(args.data, args.eval_split)   # a missing split fails before training
    result = train(args.data, args.out, args.variant, args.steps,
                   batch=DEFAULT_BATCH if args.batch is None else args.batch,
                   input_size=args.input_size, depth_multiplier=args.depth_multiplier,
                   init=args.init, qat=args.qat, seed=args.seed, learning_rate=args.lr,
                   warmup_steps=args.warmup_steps, progress=not args.json, split=args.split,
                   augment=args.augment, optimizer=args.optimizer)
    if args.eval_split is not None:
        from include.mobiledet.keras_eval import evaluate_keras

        ev = evaluate_keras(result["out"], args.data, split=args.eval_split)
        result["evaluation"] = {"split": args.eval_split, **ev}
    if args.json:
        print_json(result)
        return 0
    t = result["training"]
    kind = "QAT" if result["qat"] else "float"
    print(f"wrote {kind} checkpoint {result['out']}: {result['variant']}, "
          f"{result['num_classes']} classes, {result['input_size']}x{result['input_size']}, "
          f"depth multiplier {result['depth_multiplier']}")
    print(f"  {t['steps']} steps of batch {t['batch']} in {t['seconds']:.0f} s "
          f"({t['images_per_second']} images/s); loss {t['initial_loss']:.3f} -> "
          f"{t['final_loss']:.3f}")
    if "evaluation" in result:
        ev = result["evaluation"]
        print(f"  {ev['split']} split ({ev['images']} images): AP50 {ev['AP50']:.3f}, "
              f"AP {ev['AP']:.3f}, AP75 {ev['AP75']:.3f}")
    return 0
