"""The checkpoint-ledger soak, small: the real services (tests/soak_lib.py) under landings in
bursts, a duplicate under another path, a truncated checkpoint landed again good, a Celery
worker SIGKILLed during a task and a triggerer restart. Every checkpoint ends published or
rejected exactly once (one version), nothing is left open, no file is orphaned, and each
published model has one asset event. bench/soak.py runs the same code at full size.
"""
from __future__ import annotations

import json

import pytest

from soak_lib import Soak, SoakPlan

pytestmark = pytest.mark.slow


def test_soak_small(tmp_path):
    plan = SoakPlan(checkpoints=6, bursts=2, duplicates=1, kills=1, triggerer_restarts=1,
                    truncated=True, timeout_s=600, burst_gap_s=45)
    summary = Soak(plan, tmp_path).run()
    print(json.dumps({k: v for k, v in summary.items() if k not in ("landings", "events")},
                     indent=1))
    for finding in summary.get("findings") or []:
        print("FINDING:", finding)
    assert summary["problems"] == [], json.dumps(summary, indent=1)
    assert summary["kills"] == 1 and summary["triggerer_restarts"] == 1
    assert summary["published"] + summary["rejected"] == 6
    assert summary["manifests"] == summary["published"]
