"""int8 conversion time with TensorFlow's calibrator and with the LiteRT (XNNPACK) calibration
(`include/convert/fast_calibration.py`), side by side in one run, and how the two models'
tensor scales and zero points compare.

Full size by default (MobileDet-CPU, 90 classes, 320x320, multiplier 1.0; a freshly initialised
checkpoint: calibration time does not depend on the weights' values), 100 calibration images.
The two conversions alternate (--repeat rounds); the table shows each one's converter seconds
(conversion.json "seconds": calibration, quantisation and conversion).

    .venv/bin/python bench/calibration_time.py [--out DIR] [--variant cpu] [--images 100]
                                               [--repeat 1] [--small]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import include  # noqa: E402,F401

FULL = dict(num_classes=90, input_size=320, depth_multiplier=1.0)
SMALL = dict(num_classes=3, input_size=128, depth_multiplier=0.5)


def quant_params(model_path) -> dict:
    """{tensor name: (scale, zero point)} of the 8-bit per-tensor quantised tensors."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    out = {}
    for t in Interpreter(model_path=str(model_path)).get_tensor_details():
        q = t["quantization_parameters"]
        if len(q["scales"]) == 1 and t["name"] and t["dtype"] in (np.int8, np.uint8):
            out[t["name"]] = (float(q["scales"][0]), int(q["zero_points"][0]))
    return out


def compare(fast: dict, slow: dict) -> dict:
    same, wider_tf, other = 0, 0, 0
    ratios = []
    for name in fast.keys() & slow.keys():
        (sa, za), (sb, zb) = fast[name], slow[name]
        ratios.append(sa / sb if sb else 1.0)
        if abs(sa - sb) <= 1e-3 * sb and abs(za - zb) <= 1:
            same += 1
        elif (-128 - zb) * sb <= (-128 - za) * sa + 2 * sb and \
                (127 - za) * sa <= (127 - zb) * sb + 2 * sb:
            wider_tf += 1
        else:
            other += 1
    return {"tensors": len(fast.keys() & slow.keys()), "same": same,
            "tensorflow_range_wider": wider_tf, "other": other,
            "only_in_one": len(fast.keys() ^ slow.keys()),
            "scale_ratio_min": min(ratios) if ratios else None,
            "scale_ratio_max": max(ratios) if ratios else None}


def main(argv=None) -> int:
    from include.console import format_table
    from include.convert.converter import convert
    from models import make_export, make_image_folder

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--variant", default="cpu")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--small", action="store_true", help="128 px, multiplier 0.5, 3 classes")
    args = ap.parse_args(argv)
    spec = SMALL if args.small else FULL
    out = Path(args.out or tempfile.mkdtemp(prefix="mobiledet-calibration-"))
    export = out / f"{args.variant}-float" / "export"
    if not (export / "export.json").is_file():
        make_export(export.parent, variant=args.variant, **spec)
    calib = out / "calib"
    if not calib.is_dir():
        make_image_folder(calib, count=args.images, size=spec["input_size"])
    seconds = {True: [], False: []}
    for _ in range(args.repeat):
        for fast in (False, True):
            rep = convert(export, "int8", out / f"int8_{'fast' if fast else 'tf'}.tflite",
                          calibration=calib, calibration_count=args.images,
                          fast_calibration=fast)
            seconds[fast].append(rep["seconds"])
    tf_s, fast_s = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"{args.variant}, {spec['input_size']} px, multiplier {spec['depth_multiplier']}, "
          f"{args.images} calibration images, median of {args.repeat} alternating round(s)")
    print(format_table([["TensorFlow's calibrator", f"{tf_s:.1f}", "1.00x"],
                        ["LiteRT with XNNPACK", f"{fast_s:.1f}", f"{fast_s / tf_s:.2f}x"]],
                       ["calibration", "int8 conversion s", "x TensorFlow's"]))
    cmp = compare(quant_params(out / "int8_fast.tflite"), quant_params(out / "int8_tf.tflite"))
    print(f"scales/zero points of {cmp['tensors']} tensors: {cmp['same']} the same, "
          f"{cmp['tensorflow_range_wider']} with a wider range from TensorFlow's calibrator (it "
          f"reads buffers in-place ops already overwrote), {cmp['other']} otherwise different; "
          f"scale ratio fast/TensorFlow {cmp['scale_ratio_min']:.3f}..{cmp['scale_ratio_max']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
