"""CLI verbs `edgetpu-check` (offline prediction) and `edgetpu-compile` (runs the compiler).

Exit codes: edgetpu-check 0 (1 with --strict when an op other than the expected post-process
stays on the CPU); edgetpu-compile 0 compiled, 1 failed or timed out, 3 compiler not installed.
Bad input (missing or unreadable model) raises the project's exceptions: the CLI prints them and
exits 2. Heavy modules load inside the handlers only.
"""
from __future__ import annotations

import argparse
import sys

EXIT_NOT_INSTALLED = 3


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "edgetpu-check",
        help="predict offline which ops of a .tflite model map to the Edge TPU (no compiler)",
        description="Read a .tflite model and apply the documented Edge TPU rules (8-bit "
                    "tensors, constant shapes, rank, supported ops and their conditions, the "
                    "single cut). Prints the prediction in the compiler's log layout. It is a "
                    "prediction: only edgetpu_compiler gives the real mapping.")
    p.add_argument("model", help="the .tflite model")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 unless every op maps except the expected post-process")
    p.set_defaults(func=_check)

    p = subparsers.add_parser(
        "edgetpu-compile",
        help="compile a .tflite model with edgetpu_compiler (if installed)",
        description="Run Coral's edgetpu_compiler (-s -o OUT_DIR ...) and report its result. "
                    "The compiler is found at --compiler, $EDGETPU_COMPILER or on PATH; when it "
                    "is not installed this says so and exits 3.")
    p.add_argument("model", help="the .tflite model (full-integer int8)")
    p.add_argument("-o", "--out-dir", default=None,
                   help="folder for <name>_edgetpu.tflite and .log (default: the model's folder)")
    p.add_argument("--compiler", default=None, help="path of edgetpu_compiler")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds (default 180)")
    p.add_argument("-m", "--min-runtime-version", type=int, default=None,
                   help="lowest Edge TPU runtime version the model must run on")
    p.add_argument("-n", "--num-segments", type=int, default=None,
                   help="split into this many segments (pipelining over several Edge TPUs)")
    p.add_argument("-d", "--search-delegate", action="store_true",
                   help="let the compiler search for a delegate split when compilation fails")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_compile)


def _check(args: argparse.Namespace) -> int:
    from include.console import print_json
    from include.edgetpu.analyze import analyze_model, format_report

    result = analyze_model(args.model)
    if args.json:
        print_json(result)
    else:
        print(format_report(result))
    if args.strict and not result["all_mapped_except_postprocess"]:
        return 1
    return 0


def _compile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from include.console import format_table, print_json
    from include.edgetpu.compiler import compile_model

    out_dir = args.out_dir or str(Path(args.model).resolve().parent)
    res = compile_model(args.model, out_dir, compiler=args.compiler, timeout_s=args.timeout,
                        min_runtime_version=args.min_runtime_version,
                        num_segments=args.num_segments, search_delegate=args.search_delegate)
    if args.json:
        print_json(res.to_dict())
    else:
        stream = sys.stdout if res.ok else sys.stderr
        print(f"edgetpu-compile: {res.status}: {res.message}", file=stream)
        if res.how_to_install:
            print(res.how_to_install, file=stream)
        for warning in res.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if res.ok:
            rep = res.report or {}
            rows = [(k, rep.get(k)) for k in (
                "compiler_version", "total_ops", "ops_on_tpu", "ops_on_cpu", "subgraphs",
                "output_size_bytes", "on_chip_memory_used_bytes", "off_chip_memory_used_bytes")]
            print(format_table(rows, headers=("field", "value")))
            for path in res.edgetpu_models:
                print(f"wrote {path}")
        elif res.status == "failed" and res.stdout.strip():
            print("--- compiler output ---", file=stream)
            print(res.stdout.rstrip(), file=stream)
            if res.stderr.strip():
                print(res.stderr.rstrip(), file=stream)
    if res.status == "compiled":
        return 0
    if res.status == "not_installed":
        return EXIT_NOT_INSTALLED
    return 1
