"""The `mobiledet` command: one verb per stage, plus `run` and `demo`.

Each area of the library owns a small `commands.py` with a `register(subparsers)` function that
adds its verbs; this module only assembles them, so importing the CLI stays cheap and heavy
libraries (TensorFlow, Great Expectations) load only inside the verb that needs them.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import include  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from include.errors import MobiledetError

COMMAND_MODULES = (
    "include.mobiledet.commands",   # describe, train, export
    "include.data.commands",        # data synth
    "include.convert.commands",     # convert
    "include.quality.commands",     # evaluate, validate, benchmark, visualize
    "include.edgetpu.commands",     # edgetpu-check, edgetpu-compile
    "include.deploy.run_commands",  # run
    "include.deploy.demo_commands",  # demo
    "include.deploy.serve_commands",  # serve
    "include.dashboard.commands",   # dashboard
    "include.store.commands",       # checkpoints (the ledger), prune
    "include.store.release_commands",  # release promote|yank|restore|bless|history|...
    "include.config_commands",      # config
    "include.tfod.commands",        # import-tfod
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobiledet",
        description="Turn MobileDet + SSDLite checkpoints into checked, published on-device models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {include.__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's native start-up messages (CUDA probing, "
                             "oneDNN notices)")
    sub = parser.add_subparsers(dest="command", metavar="VERB")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        return _run(args)
    from include.console import QuietNativeStderr

    with QuietNativeStderr():
        return _run(args)


def _run(args) -> int:
    try:
        rc = args.func(args)
    except MobiledetError as exc:
        print(f"mobiledet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
