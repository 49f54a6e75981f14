"""The checkpoint ledger (include/store/ledger.py) on a local folder and on S3 over HTTP: one
record per checkpoint, conditional transitions, leases, backoff, bad bytes and new landings.
"""
from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

FP = "ab" * 32
N = 8


class Clock:
    def __init__(self):
        self.now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)

    def __call__(self):
        return self.now

    def advance(self, seconds: float):
        self.now += dt.timedelta(seconds=seconds)


def _ledger(store, clock=None, **settings):
    from include.store.ledger import Ledger
    return Ledger(store, "mobiledet", clock=clock or Clock(), **settings)


def _land(ledger, uri="s3://ckpts/a", tag="t1", fp=FP, **kw):
    return ledger.record_landing(uri=uri, tag=tag, kind="checkpoint", fingerprint=fp,
                                 created="2026-11-30T00:00:00Z", **kw)


def test_a_landing_is_new_work_once_and_the_same_checkpoint_elsewhere_is_not(store):
    ledger = _ledger(store)
    record, new = _land(ledger)
    assert new and record["state"] == "landed" and record["id"] == FP
    assert _land(ledger)[1] is False                       # the same landing again
    again, new = _land(ledger, uri="s3://ckpts/copy-of-a", tag="t9")
    assert not new and len(again["landings"]) == 2         # the same bytes under another path
    assert ledger.open_ids() == [FP]
    from include.store.ledger import landing_id
    assert ledger.seen() == {landing_id("s3://ckpts/a", "t1"),
                             landing_id("s3://ckpts/copy-of-a", "t9")}


def test_claims_lease_and_one_winner(store):
    clock = Clock()
    ledger = _ledger(store, clock, lease_s=100)
    _land(ledger)
    [mine] = ledger.claim("run-1")
    assert mine["state"] == "claimed" and mine["run_id"] == "run-1" and mine["attempts"] == 1
    assert ledger.claim("run-2") == []                     # held, lease not over
    assert [r["id"] for r in ledger.claim("run-1")] == [FP]   # a retry finds its own claim
    clock.advance(101)                                     # run-1 died: its lease passes
    [taken] = ledger.claim("run-2")
    assert taken["run_id"] == "run-2" and taken["attempts"] == 2
    # the run that lost the record can no longer move it
    assert ledger.mark(FP, "run-1", "published", version="v1")["state"] == "claimed"
    done = ledger.mark(FP, "run-2", "published", version="v2")
    assert done["state"] == "published" and done["version"] == "v2"
    assert ledger.open_ids() == [] and ledger.claim("run-3") == []
    assert [h["state"] for h in done["history"]] == ["landed", "claimed", "claimed",
                                                     "published"]


def test_racing_runs_claim_a_checkpoint_once(store):
    ledger = _ledger(store)
    _land(ledger)
    barrier = threading.Barrier(N, timeout=60)

    def one(i):
        barrier.wait()
        return _ledger(store).claim(f"run-{i}")

    with ThreadPoolExecutor(N) as pool:
        got = list(pool.map(one, range(N), timeout=120))
    assert sum(len(g) for g in got) == 1


def test_racing_watchers_record_one_landing_once(store):
    """Two triggerers (HA) or a restart racing the old one: the landing is new work once."""
    barrier = threading.Barrier(N, timeout=60)

    def one(i):
        barrier.wait()
        return _land(_ledger(store))[1]

    with ThreadPoolExecutor(N) as pool:
        news = list(pool.map(one, range(N), timeout=120))
    assert news.count(True) == 1
    assert len(_ledger(store).get(FP)["landings"]) == 1


def test_bad_bytes_fail_for_good_until_other_bytes_land(store):
    clock = Clock()
    ledger = _ledger(store, clock)
    _land(ledger, tag="truncated")
    ledger.claim("run-1")
    failed = ledger.mark(FP, "run-1", "failed", reason="CheckpointError: weights.h5 is "
                         "truncated", uri="s3://ckpts/a", bad_landing=True)
    assert failed["state"] == "failed" and not failed["retryable"]
    assert failed["landings"][0]["bad"].startswith("CheckpointError")
    clock.advance(10 ** 6)
    assert ledger.claim("run-2") == [] and ledger.open_ids() == []
    assert _land(ledger, tag="truncated")[1] is False      # the same bad bytes: nothing new
    record, new = _land(ledger, tag="copied-again")         # the error's fix: copy it again
    assert new and record["state"] == "landed" and record["attempts"] == 0
    assert ledger.claim("run-3")[0]["run_id"] == "run-3"


def test_transient_failures_retry_after_backoff_up_to_max_attempts(store):
    clock = Clock()
    ledger = _ledger(store, clock, backoff_s=30, max_attempts=2)
    _land(ledger)
    ledger.claim("run-1")
    failed = ledger.mark(FP, "run-1", "failed", reason="StoreError: S3 down", retryable=True)
    assert failed["retryable"] and failed["next_attempt_at"]
    assert ledger.claim("run-2") == []                     # backoff not over
    clock.advance(31)
    [again] = ledger.claim("run-2")
    assert again["attempts"] == 2
    ledger.mark(FP, "run-2", "failed", reason="StoreError: S3 down", retryable=True)
    clock.advance(10 ** 4)
    assert ledger.claim("run-3") == []                     # max_attempts reached
    final = ledger.get(FP)
    assert final["state"] == "failed" and not final["retryable"]
    assert "gave up after 2 attempt(s)" in final["reason"] and "S3 down" in final["reason"]


def test_an_unreadable_checkpoint_json_is_recorded_failed_with_its_reason(store):
    ledger = _ledger(store)
    record, new = ledger.record_landing(uri="s3://ckpts/b", tag="t", kind="checkpoint",
                                        invalid="CheckpointError: checkpoint.json has no "
                                                "'fingerprint'.")
    assert not new and record["state"] == "failed" and record["id"].startswith("bad-")
    assert "fingerprint" in record["reason"] and ledger.open_ids() == []


def test_retry_by_hand_and_repair(store):
    ledger = _ledger(store)
    _land(ledger)
    ledger.claim("run-1")
    ledger.mark(FP, "run-1", "failed", reason="DataError: bad image", uri="s3://ckpts/a",
                bad_landing=True)
    again = ledger.retry("s3://ckpts/a", who="ops")
    assert again["state"] == "landed" and again["attempts"] == 0
    assert again["history"][-1]["note"] == "retry by hand" and ledger.open_ids() == [FP]
    with pytest.raises(Exception, match="no checkpoint"):
        ledger.retry("s3://ckpts/never-landed")
    # a crash between the record and its queue marker: repair puts the marker back
    store.delete(f"ledger/mobiledet/open/{FP}")
    assert ledger.repair() == {"open_markers_added": [FP]} and ledger.open_ids() == [FP]


def test_people_see_failed_and_stuck_first():
    from include.store.ledger import order_for_people

    when = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    records = [{"id": "p", "state": "published", "updated": "3"},
               {"id": "s", "state": "converting", "lease_until": "2026-11-30T00:00:00Z",
                "updated": "2"},
               {"id": "f", "state": "failed", "updated": "1"},
               {"id": "l", "state": "landed", "updated": "4"}]
    assert [r["id"] for r in order_for_people(records, when)] == ["f", "s", "l", "p"]


def test_checkpoints_cli_and_the_dashboard_show_the_ledger_failed_first(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from fastapi.testclient import TestClient

    from include.dashboard.app import create_app
    from include.dashboard.reader import StoreReader
    from include.store import ArtifactStore

    repo = Path(__file__).resolve().parents[1]
    store = ArtifactStore(str(tmp_path / "store"))
    ledger = _ledger(store)
    _land(ledger, uri="s3://ckpts/good", fp="a" * 64)
    ledger.claim("run-1")
    ledger.mark("a" * 64, "run-1", "published", version="v20261130T000000Z-aaaaaaaa")
    _land(ledger, uri="s3://ckpts/truncated", fp="b" * 64)
    ledger.claim("run-2")
    ledger.mark("b" * 64, "run-2", "failed", reason="CheckpointError: weights.h5 truncated",
                uri="s3://ckpts/truncated", bad_landing=True)
    env = dict(os.environ, PYTHONPATH=str(repo))
    out = subprocess.run([sys.executable, "-m", "include.cli", "checkpoints", "--store",
                          str(tmp_path / "store"), "--json"], capture_output=True, text=True,
                         env=env, cwd=repo, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["state"] for r in rows] == ["failed", "published"]
    assert set(rows[0]) >= {"uri", "fingerprint", "state", "attempts", "run_id", "reason",
                            "version", "updated"}
    assert "weights.h5" in rows[0]["reason"] and rows[1]["version"].startswith("v2026")
    retried = subprocess.run([sys.executable, "-m", "include.cli", "checkpoints", "retry",
                              "s3://ckpts/truncated", "--store", str(tmp_path / "store")],
                             capture_output=True, text=True, env=env, cwd=repo, timeout=300)
    assert retried.returncode == 0 and "landed again" in retried.stdout, retried.stderr
    with TestClient(create_app(StoreReader(str(tmp_path / "store"), model="mobiledet"))) as c:
        page = c.get("/checkpoints")
        assert page.status_code == 200 and "s3://ckpts/truncated" in page.text
        api = c.get("/api/checkpoints").json()
        assert [r["state"] for r in api["checkpoints"]] == ["landed", "published"]
