"""Runs that overlap: N publishers of one checkpoint at once, and pointers under a race.

Each test races real writers (threads, and separate processes) against one store, a local
folder and S3 served over HTTP by moto on 127.0.0.1, and then checks what a consumer relies on:
one release, every file its manifest names present with the recorded sha256, no orphan files,
pointers at the newest release and never moved back. Every wait is bounded.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

from include.store import (ArtifactStore, clean_version, latest, list_versions, make_version,
                           pointer, publish_release as publish, read_manifest)

REPO = Path(__file__).resolve().parents[1]
N = 8
FP = "sha256:" + "c0ffee00" * 8
T0 = datetime(2026, 11, 30, 1, 2, 3, tzinfo=timezone.utc)
VERSION = make_version(FP, T0)
LINEAGE = {"checkpoint_uri": "s3://ckpts/edgetpu-qat", "checkpoint_fingerprint": FP, "qat": True}
PROCESS_TIMEOUT_S = 180


def artifacts(store: ArtifactStore, run: str) -> list[dict]:
    """What one run stages for the checkpoint: its own bytes, so a mix-up would show."""
    out = []
    for variant, precision in (("edgetpu", "float32"), ("edgetpu", "uint8")):
        base = f"runs/{run}/{variant}/{precision}"
        model = store.put_bytes(f"{run}:{variant}/{precision}".encode() * 64,
                                f"{base}/model.tflite")
        conv = store.write_json(f"{base}/conversion.json", {"run": run, "precision": precision})
        out.append({"variant": variant, "precision": precision, "passed": True,
                    "files": {"model.tflite": model, "conversion.json": conv,
                              "metrics.json": {"AP50": 0.5, "run": run}},
                    "decision": {"passed": True, "metric": "AP50", "map": 0.5, "reasons": []}})
    out.append({"variant": "edgetpu", "precision": "int8", "passed": False, "files": {},
                "decision": {"passed": False, "reasons": ["too slow"]}})
    return out


def assert_one_clean_release(store: ArtifactStore, results: list[dict]) -> dict:
    statuses = sorted(r["status"] for r in results)
    assert statuses == ["already_published"] * (len(results) - 1) + ["published"], statuses
    manifest = read_manifest(store, "mobiledet", VERSION)
    winner = manifest["publisher"]
    assert {r["winner"] for r in results} == {winner}
    assert {r["manifest_uri"] for r in results} == {manifest["manifest_uri"]}
    assert list_versions(store, "mobiledet") == [VERSION]
    # every file the manifest names is there, with the recorded size and hash, and is the
    # winner's own (its bytes carry the run that wrote them)
    for f in manifest["files"]:
        data = store.get_bytes(f"mobiledet/{VERSION}/{f['path']}")
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"], f
        assert f["path"].startswith(winner + "/")
    for entry in manifest["published"]:
        blob = store.get_bytes(f"mobiledet/{VERSION}/{entry['path']}/model.tflite")
        assert blob.startswith(f"{winner}:".encode())
    # no orphan: nothing under the version but the manifest and the winner's files, even
    # before any clean-up; and clean-up finds nothing to remove
    listed = set(store.list(f"mobiledet/{VERSION}"))
    expected = {f"mobiledet/{VERSION}/manifest.json"} | {
        f"mobiledet/{VERSION}/{f['path']}" for f in manifest["files"]}
    assert listed == expected, sorted(listed ^ expected)
    assert clean_version(store, "mobiledet", VERSION, stale_after_s=0) == []
    # the pointers name the release and the model file's hash
    for precision in ("float32", "uint8"):
        ptr = pointer(store, "mobiledet", "edgetpu", precision)
        model_file = next(e for e in manifest["published"]
                          if e["precision"] == precision)["files"]["model.tflite"]
        assert ptr["version"] == VERSION and ptr["manifest_uri"] == manifest["manifest_uri"]
        assert ptr["sha256"] == model_file["sha256"] and ptr["model_uri"] == model_file["uri"]
    assert pointer(store, "mobiledet", "edgetpu", "int8") is None  # rejected: never pointed at
    assert set(pointer(store, "mobiledet", "edgetpu")["models"]) == {"float32", "uint8"}
    assert latest(store, "mobiledet")["version"] == VERSION
    return manifest


def test_concurrent_publishers_threads(store):
    runs = [f"run-{i}" for i in range(N)]
    staged = {run: artifacts(store, run) for run in runs}
    barrier = threading.Barrier(N, timeout=60)

    def one(run):
        barrier.wait()
        return publish(store, "mobiledet", VERSION, staged[run], LINEAGE, publisher=run,
                       now=T0 + timedelta(hours=1)).to_dict()

    with ThreadPoolExecutor(N) as pool:
        results = list(pool.map(one, runs, timeout=120))
    assert_one_clean_release(store, results)


PUBLISHER_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {tests!r})
    from datetime import datetime, timezone
    from include.store import ArtifactStore, publish_release as publish
    from test_concurrency import LINEAGE, VERSION, artifacts
    run, base, conn, start = sys.argv[1:5]
    store = ArtifactStore(base, conn_id=conn or None)
    staged = artifacts(store, run)
    deadline = time.time() + 120
    while not os.path.exists(start):        # every publisher starts at the same moment
        if time.time() > deadline:
            sys.exit("start signal never came")
        time.sleep(0.005)
    result = publish(store, "mobiledet", VERSION, staged, LINEAGE, publisher=run)
    print("RESULT " + json.dumps(result.to_dict()))
""")


def test_concurrent_publishers_processes(store, tmp_path):
    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER_SCRIPT.format(tests=str(REPO / "tests")))
    start = tmp_path / "start"
    procs = [subprocess.Popen([sys.executable, str(script), f"proc-{i}", store.base_uri,
                               store.conn_id or "", str(start)], cwd=REPO, env=os.environ.copy(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(N)]
    try:
        # let every process import and stage first (bounded), then fire the start signal
        deadline = time.time() + 120
        while time.time() < deadline and len(list_runs(store)) < N:
            time.sleep(0.2)
        start.write_text("go")
        outs = [p.communicate(timeout=PROCESS_TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = []
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT "):]))
    assert_one_clean_release(store, results)


def list_runs(store: ArtifactStore) -> set[str]:
    """Runs whose staging is complete (their conversion.json of uint8 is written last)."""
    return {k.split("/")[1] for k in store.list("runs") if k.endswith("uint8/conversion.json")}


def test_pointers_move_forward_only_under_a_race(store):
    """N runs publish N different checkpoints at once, in shuffled order: every pointer ends
    at the newest release, and a late publisher of an older release never moves it back."""
    releases = []
    for i in range(N):
        fp = "sha256:" + f"{i:02d}" * 32
        created = T0 + timedelta(minutes=i)
        releases.append((make_version(fp, created), fp, T0 + timedelta(hours=2, minutes=i)))
    order = [3, 7, 0, 5, 1, 6, 2, 4]
    staged = {i: artifacts(store, f"run-{i}") for i in order}
    barrier = threading.Barrier(N, timeout=60)

    def one(i):
        version, fp, published_at = releases[i]
        barrier.wait()
        return publish(store, "mobiledet", version, staged[i],
                       dict(LINEAGE, checkpoint_fingerprint=fp), publisher=f"run-{i}",
                       now=published_at).to_dict()

    with ThreadPoolExecutor(N) as pool:
        results = list(pool.map(one, order, timeout=120))
    assert all(r["status"] == "published" for r in results)
    newest = releases[-1][0]
    for key in (("edgetpu", "float32"), ("edgetpu", "uint8"), ("edgetpu", None)):
        assert pointer(store, "mobiledet", *key)["version"] == newest, key
    assert latest(store, "mobiledet")["version"] == newest
    # an older release published afterwards does not move anything back
    fp = "sha256:" + "ee" * 32
    old = make_version(fp, T0 - timedelta(days=1))
    late = publish(store, "mobiledet", old, artifacts(store, "late"),
                   dict(LINEAGE, checkpoint_fingerprint=fp), publisher="late",
                   now=T0 + timedelta(hours=1))
    assert late.status == "published" and not late.latest_moved
    assert not any(late.pointers.values())
    assert pointer(store, "mobiledet", "edgetpu", "uint8")["version"] == newest
    assert len(list_versions(store, "mobiledet")) == N + 1


def test_one_claim_per_checkpoint_among_racing_runs(store):
    """A landing reported N times (the trigger fired again, the triggerer restarted, two
    triggerers) starts N runs: exactly one claims the checkpoint in the ledger; a retry of
    that run finds its own claim; the others see who holds it."""
    from include.store.ledger import Ledger

    ledger = Ledger(store, "mobiledet")
    ledger.record_landing(uri="s3://ckpts/edgetpu-qat", tag="t1", kind="checkpoint",
                          fingerprint="f" * 64)
    barrier = threading.Barrier(N, timeout=60)

    def one(i):
        barrier.wait()
        return [r["run_id"] for r in ledger.claim(f"run-{i}")]

    with ThreadPoolExecutor(N) as pool:
        holders = list(pool.map(one, range(N), timeout=120))
    winners = [h for h in holders if h]
    assert len(winners) == 1 and len(set(sum(holders, []))) == 1
    [[winner]] = winners
    assert [r["run_id"] for r in ledger.claim(winner)] == [winner]
    assert store.read_json(f"ledger/mobiledet/records/{'f' * 64}.json")["run_id"] == winner


def test_landed_checkpoints_from_watcher_and_s3_notifications():
    from types import SimpleNamespace

    from include.pipeline.steps.plan import checkpoints_from_events

    notification = {"Records": [
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "ckpts"},
                                                  "object": {"key": "team/edgetpu+qat/checkpoint.json"}}},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "ckpts"},
                                                  "object": {"key": "team/edgetpu+qat/weights.h5"}}}]}
    events = {"asset": [
        SimpleNamespace(extra={"from_trigger": True,
                               "payload": {"checkpoint_uri": "s3://ckpts/a"}}),
        SimpleNamespace(extra={"from_trigger": True, "payload": {
            "status": "success", "message_batch": [{"Body": json.dumps(notification)},
                                                   {"Body": "not json"}]}}),
        SimpleNamespace(extra={"from_trigger": True,
                               "payload": {"checkpoint_uri": "s3://ckpts/a"}})]}
    assert checkpoints_from_events(events) == ["s3://ckpts/a", "s3://ckpts/team/edgetpu qat"]
    assert checkpoints_from_events(None) == []
