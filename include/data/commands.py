"""CLI verbs of the data layer: `mobiledet data synth` and `mobiledet data check`.

Imports stay light at module level; the work is imported inside the handlers.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    data = subparsers.add_parser(
        "data", help="synthetic dataset, dataset checks",
        description="COCO-format datasets: write the synthetic shapes dataset, check a dataset.")
    sub = data.add_subparsers(dest="data_command", metavar="SUBVERB")
    sub.required = True

    synth = sub.add_parser(
        "synth", help="write a deterministic synthetic COCO-format dataset",
        description="Write DIR/annotations/instances_{train,val}.json and DIR/{train,val}/ images "
                    "of coloured shapes (circle, square, triangle, cross, ring). The same seed "
                    "gives byte-identical files.")
    synth.add_argument("--out", required=True, metavar="DIR",
                       help="output folder (new, empty, or an earlier synthetic dataset)")
    synth.add_argument("--images", required=True, type=int, metavar="N",
                       help="number of images over both splits")
    synth.add_argument("--size", type=int, default=320, metavar="S",
                       help="image side in pixels (default 320; a few images are 1.5:1)")
    synth.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    synth.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                       help="fraction of images in the val split (default 0.2)")
    synth.add_argument("--json", action="store_true", help="print the summary as JSON")
    synth.set_defaults(func=run_synth)

    check = sub.add_parser(
        "check", help="validate a COCO-format dataset and summarise it",
        description="Load the annotation file, check every reference and that every image file "
                    "exists (--decode: and decodes at its recorded size).")
    check.add_argument("path", help="an instances_<split>.json file or a dataset folder")
    check.add_argument("--images", "--image-dir", dest="image_dir", default=None, metavar="DIR",
                       help="the image folder of an annotation file, when the images are not "
                            "beside it in <split>/ or images/<split>/")
    check.add_argument("--split", default=None, help="which split of a dataset folder")
    check.add_argument("--decode", action="store_true", help="also decode every image")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    check.set_defaults(func=run_check)


def run_synth(args: argparse.Namespace) -> int:
    from include.console import format_table, print_json
    from include.data.synth import synthesize

    summary = synthesize(args.out, args.images, size=args.size, seed=args.seed,
                         val_fraction=args.val_fraction, show_progress=not args.json)
    if args.json:
        print_json(summary)
        return 0
    rows = [(s, summary["images"][s], summary["annotations"][s], summary["crowd_annotations"][s],
             summary["annotation_files"][s]) for s in ("train", "val")]
    print(f"synthetic dataset written to {summary['out']} (size {summary['size']}, "
          f"seed {summary['seed']})")
    print(format_table(rows, ["split", "images", "annotations", "crowd", "annotation file"]))
    print("categories: " + ", ".join(f"{c['id']}={c['name']}" for c in summary["categories"]))
    return 0


def run_check(args: argparse.Namespace) -> int:
    from include.console import format_table, print_json
    from include.data.coco import dataset_arguments, open_dataset

    with dataset_arguments(args.path, args.image_dir, data_flag="", check=False):
        ds = open_dataset(args.path, split=args.split, images=args.image_dir)
    ds.check_images(ds.image_ids, given=True if args.image_dir else None)
    ds.check_files(decode=args.decode)
    summary = ds.summary()
    summary["fingerprint"] = ds.fingerprint()
    if args.json:
        print_json(summary)
        return 0
    bad = summary["degenerate_boxes"]
    print(f"{ds.annotation_file}: {'OK' if not bad else 'usable, with a problem'} ({len(ds)} "
          f"images, {summary['annotations']} annotations, {summary['crowd_annotations']} crowd; "
          f"images in {ds.image_dir})")
    if bad:
        ids = ", ".join(map(str, summary["degenerate_annotation_ids"]))
        print(f"WARNING: {bad} annotation(s) have a box of zero or negative width or height "
              f"(annotation ids {ids}{', ...' if bad > 20 else ''}); training and evaluation "
              "drop them. Fix: correct their bbox [x, y, width, height] or remove them.")
    rows = [(i, ds.class_to_category_id(i), name) for i, name in enumerate(ds.class_names)]
    print(format_table(rows, ["class", "category id", "name"]))
    print(f"fingerprint: {summary['fingerprint']}")
    return 0
