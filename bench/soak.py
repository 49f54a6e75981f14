"""The checkpoint-ledger soak at full size on the real services (tests/soak_lib.py).

30 tiny checkpoints land in 3 bursts of 10 (5 of them also under another path), one with
truncated weights that lands again good later, the Celery worker is SIGKILLed during a task
twice and the triggerer restarted once; then every checkpoint must end published or rejected
exactly once (one version each), nothing left landed, claimed or converting, no orphan file,
one asset event per published model. Prints a JSON summary with the figures (wall time from
the first landing to the last final record, slowest landing-to-published). Exit code 1 when
a check failed.

    .venv/bin/python bench/soak.py                       # 30 checkpoints, 3 bursts
    .venv/bin/python bench/soak.py --checkpoints 6 --bursts 2 --duplicates 1 --kills 1
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import include  # noqa: E402,F401  (environment for TensorFlow before anything imports it)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=30)
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--duplicates", type=int, default=5)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--triggerer-restarts", type=int, default=1)
    ap.add_argument("--no-truncated", action="store_true",
                    help="no truncated checkpoint landed again good")
    ap.add_argument("--timeout-s", type=float, default=2400.0,
                    help="bound on the wait for every record to be final")
    ap.add_argument("--burst-gap-s", type=float, default=120.0,
                    help="at most this long between two bursts (sooner when all is final)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="checkpoints and Airflow home (default: a fresh temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="also write the summary here")
    args = ap.parse_args(argv)
    if args.checkpoints < 2 or args.bursts < 1 or args.bursts > args.checkpoints:
        ap.error("need --checkpoints >= 2 and 1 <= --bursts <= --checkpoints")
    from soak_lib import Soak, SoakPlan

    plan = SoakPlan(checkpoints=args.checkpoints, bursts=args.bursts,
                    duplicates=args.duplicates, kills=args.kills,
                    triggerer_restarts=args.triggerer_restarts,
                    truncated=not args.no_truncated, timeout_s=args.timeout_s,
                    burst_gap_s=args.burst_gap_s)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="mobiledet-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary = Soak(plan, root, log=lambda m: print(m, file=sys.stderr, flush=True)).run()
    summary["total_s"] = round(time.monotonic() - started, 1)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    for finding in summary.get("findings") or []:
        print(f"FINDING: {finding}", file=sys.stderr)
    for problem in summary["problems"]:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
