"""Evaluation throughput vs the interpreter's own throughput, measured side by side in one run.

For an untrained MobileDet-EdgeTPU + SSDLite detector at a realistic size (320 x 320 input, depth
multiplier 1.0, 90 classes), float32 and int8, and each thread count T:

* interpreter: 1000 / mean latency (ms) of `include.quality.benchmark` with num_threads=T, one
  image at a time, input already in place (TFLite benchmark_model's figure);
* evaluate: images/s of the detection pass of `include.quality.evaluate` on a synthetic dataset
  (decode + preprocess + inference + box conversion), for both strategies:
  workers (T interpreters with 1 thread each) and interpreter (one interpreter with T threads,
  T threads preparing images ahead);
* ratio: evaluate / interpreter (target >= 0.9).

    .venv/bin/python bench/eval_throughput.py [--work DIR] [--images N] [--threads 1 2]

Models and data are built once into --work (default /tmp/mobiledet-bench-eval) and reused.
Numbers move with whatever else runs on the machine; each figure is the better of --repeat runs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import include  # noqa: E402,F401  (environment for TensorFlow before anything imports it)

SIZE = dict(num_classes=90, input_size=320, depth_multiplier=1.0)


def build(work: Path, images: int) -> tuple[dict[str, Path], Path]:
    from models import make_tflite

    from include.data.synth import synthesize

    models = {}
    for precision in ("float32", "int8"):
        folder = work / precision
        path = folder / f"edgetpu_{precision}.tflite"
        if not path.is_file():
            t0 = time.perf_counter()
            print(f"building {precision} model (320x320, multiplier 1.0, 90 classes) ...",
                  flush=True)
            path = make_tflite(folder, precision, **SIZE)
            print(f"  {path} in {time.perf_counter() - t0:.0f} s", flush=True)
        models[precision] = path
    data = work / f"synth_{images}"
    if not (data / "annotations" / "instances_val.json").is_file():
        # val_fraction 0.5: `images` validation images out of 2 x images.
        synthesize(data, 2 * images, size=320, seed=0, val_fraction=0.5)
    return models, data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/mobiledet-bench-eval")
    p.add_argument("--images", type=int, default=48, help="validation images evaluated")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=30, help="timed benchmark runs")
    p.add_argument("--repeat", type=int, default=2, help="take the best of this many passes")
    p.add_argument("--precisions", nargs="+", default=["float32", "int8"])
    args = p.parse_args(argv)

    from include.console import format_table
    from include.quality.benchmark import benchmark
    from include.quality.evaluate import evaluate

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    models, data = build(work, args.images)
    rows = []
    for precision in args.precisions:
        model = models[precision]
        for t in args.threads:
            interp, ev = 0.0, {"workers": 0.0, "interpreter": 0.0}
            mean_ms = None
            for _ in range(args.repeat):  # interleaved, so background load hits both alike
                b = benchmark(model, threads=t, warmup=5, runs=args.runs)
                if b["throughput_per_s"] > interp:
                    interp, mean_ms = b["throughput_per_s"], b["latency_ms"]["mean"]
                for strategy in ev:
                    r = evaluate(model, data, threads=t, strategy=strategy,
                                 max_images=args.images, show_progress=False)
                    ev[strategy] = max(ev[strategy], r["images_per_s"])
            rows.append([precision, t, f"{mean_ms:.1f}", f"{interp:.1f}",
                         f"{ev['workers']:.1f}", f"{ev['workers'] / interp:.2f}",
                         f"{ev['interpreter']:.1f}", f"{ev['interpreter'] / interp:.2f}"])
            print(f"  {precision} T={t}: interpreter {interp:.1f}/s, evaluate workers "
                  f"{ev['workers']:.1f}/s, interpreter-strategy {ev['interpreter']:.1f}/s",
                  flush=True)
    print()
    print(f"evaluation throughput vs interpreter throughput ({args.images} images of 320x320, "
          f"untrained edgetpu detector 320/1.0/90 classes; best of {args.repeat})")
    print(format_table(rows, ["precision", "threads", "latency ms", "interpreter img/s",
                              "eval workers img/s", "ratio", "eval 1-interp img/s", "ratio"]))
    print("ratio = evaluation images/s (decode + preprocess + inference + boxes) / "
          "(1000 / mean invoke latency at the same thread count); target >= 0.9")
    return 0


if __name__ == "__main__":
    sys.exit(main())
