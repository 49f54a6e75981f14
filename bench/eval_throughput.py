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
Numbers move with whatever else runs on the machine: each pass measures the interpreter and
both evaluation strategies back to back, and the table shows the best pass and the median of
the per-pass ratios.
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
    p.add_argument("--repeat", type=int, default=3, help="interleaved passes")
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
            interp: list[float] = []
            latency: list[float] = []
            ev: dict[str, list[float]] = {"workers": [], "interpreter": []}
            for _ in range(args.repeat):  # interleaved, so background load hits both alike
                b = benchmark(model, threads=t, warmup=5, runs=args.runs)
                interp.append(b["throughput_per_s"])
                latency.append(b["latency_ms"]["mean"])
                for strategy in ev:
                    r = evaluate(model, data, threads=t, strategy=strategy,
                                 max_images=args.images, show_progress=False)
                    ev[strategy].append(r["images_per_s"])
            best = max(interp)
            row = [precision, t, f"{min(latency):.1f}", f"{best:.1f}"]
            for strategy in ("workers", "interpreter"):
                paired = sorted(e / i for e, i in zip(ev[strategy], interp))
                row += [f"{max(ev[strategy]):.1f}", f"{max(ev[strategy]) / best:.2f}",
                        f"{paired[len(paired) // 2]:.2f}"]
            rows.append(row)
            print(f"  {precision} T={t}: interpreter {', '.join(f'{v:.1f}' for v in interp)}/s; "
                  + "; ".join(f"evaluate {k} {', '.join(f'{v:.1f}' for v in vals)}/s"
                              for k, vals in ev.items()), flush=True)
    print()
    print(f"evaluation throughput vs interpreter throughput ({args.images} images of 320x320, "
          f"untrained edgetpu detector 320/1.0/90 classes; {args.repeat} interleaved passes)")
    print(format_table(rows, ["precision", "T", "latency ms", "interp img/s",
                              "workers img/s", "ratio", "paired", "1-interp img/s", "ratio",
                              "paired"]))
    print("interp = 1000 / mean invoke latency with num_threads=T (best pass); workers = "
          "evaluate with T interpreters x 1 thread; 1-interp = evaluate with one interpreter x T "
          "threads; ratio = best evaluate / best interp; paired = median over passes of "
          "evaluate / interp measured back to back. Target >= 0.9.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
