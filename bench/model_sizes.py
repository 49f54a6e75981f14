"""Model sizes per variant x precision at the published configuration (90 classes, 320x320,
depth multiplier 1.0), through the product's own export and conversion code.

Sizes depend on the architecture and the recipe, not on the weights' values, so the checkpoints
are freshly initialised (training full-size models is out of reach on 2 cores). Prints one table
with each size and its ratio to the float32 model of the same variant, measured in one run.

    .venv/bin/python bench/model_sizes.py [--out DIR] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import include  # noqa: E402,F401
from include.console import format_table  # noqa: E402

FULL = dict(num_classes=90, input_size=320, depth_multiplier=1.0)
TABLE = [("cpu", False, ["float32", "dynamic", "float16", "int8"]),
         ("edgetpu", False, ["float32", "int8"]), ("edgetpu", True, ["uint8"]),
         ("dsp", False, ["float32", "int8"]), ("dsp", True, ["uint8"])]


def main() -> int:
    from include.convert.converter import convert
    from models import make_export, make_image_folder

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="mobiledet-sizes-"))
    calib = make_image_folder(root / "calib", count=16, size=320)
    rows, results, float_size = [], [], {}
    for variant, qat, precisions in TABLE:
        t = time.perf_counter()
        export = make_export(root / f"{variant}-{'qat' if qat else 'float'}", variant=variant,
                             qat=qat, **FULL)
        print(f"exported {variant} {'QAT' if qat else 'float'} in {time.perf_counter() - t:.0f} s",
              file=sys.stderr)
        for precision in precisions:
            out = root / "models" / f"{variant}_{precision}.tflite"
            rep = convert(export, precision, out, calibration=calib, calibration_count=16)
            size = rep["size_bytes"]
            if precision == "float32":
                float_size[variant] = size
            ratio = size / float_size[variant] if variant in float_size else None
            inp = rep["inputs"][0]
            results.append({"variant": variant, "precision": precision, "size_bytes": size,
                            "ratio_to_float32": ratio, "input_dtype": inp["dtype"],
                            "ops": rep["op_count"], "convert_seconds": rep["seconds"]})
            rows.append([variant, precision, f"{size / 2**20:.2f}",
                         "-" if ratio is None else f"{ratio:.2f}", inp["dtype"], rep["op_count"]])
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(rows, ["variant", "precision", "size MiB", "x float32", "input", "ops"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
