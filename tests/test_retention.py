"""Retention (`mobiledet prune`, include/store/retention.py) on a local folder and on S3: what
goes, and that nothing a pointer names or the ledger holds is touched."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _release(store, i: int, run: str):
    from include.store import make_version, publish_release

    fp = "sha256:" + f"{i:02d}" * 32
    model = store.put_bytes(f"model-{i}".encode() * 64, f"runs/{run}/cpu/int8/model.tflite")
    arts = [{"variant": "cpu", "precision": "int8", "passed": True,
             "files": {"model.tflite": model, "metrics.json": {"AP50": 0.4}},
             "decision": {"passed": True, "metric": "AP50", "map": 0.4, "reasons": []}}]
    created = T0 + timedelta(days=i)
    return publish_release(store, "mobiledet", make_version(fp, created), arts,
                           {"checkpoint_fingerprint": fp, "qat": False}, publisher=run,
                           created=created).version


def _policy(**kw):
    from include.config import RetentionConfig
    return RetentionConfig(**kw)


def test_prune_keeps_the_newest_and_every_release_a_pointer_names(store):
    from include.store import read_manifest
    from include.store.retention import prune

    versions = [_release(store, i, f"run-{i}") for i in range(10)]
    # a consumer pointer that names an old release (a channel after issue 24 does the same)
    store.write_json("mobiledet/latest/edgetpu/int8.json", {"version": versions[1]})
    manifests = {v: read_manifest(store, "mobiledet", v) for v in versions}
    plan = prune(store, _policy(keep_releases=3), dry_run=True)
    kept = {r["version"]: r["why"] for r in plan["models"]["mobiledet"]["kept"]}
    assert set(kept) == {*versions[-3:], versions[1]}
    assert "named by latest/edgetpu/int8.json" in kept[versions[1]]
    assert len(store.list("mobiledet")) > 0 and all(
        store.is_file(f"mobiledet/{v}/manifest.json") for v in versions)   # dry run

    result = prune(store, _policy(keep_releases=3))
    assert result["deleted_files"] > 0
    from include.store import list_versions
    assert list_versions(store, "mobiledet") == sorted(kept)
    for version in kept:           # every file the kept manifests list, sha256 intact
        for f in manifests[version]["files"]:
            assert store.sha256(f"mobiledet/{version}/{f['path']}") == f["sha256"]
    for version in set(versions) - set(kept):
        assert store.list(f"mobiledet/{version}") == []


def test_prune_trims_finished_runs_and_spares_what_the_ledger_holds(tmp_path):
    from include.store import ArtifactStore
    from include.store.ledger import Ledger
    from include.store.retention import prune

    store = ArtifactStore(str(tmp_path / "store"))
    for run in ("old-done", "old-failed", "held", "fresh"):
        store.put_bytes(b"x" * 100, f"runs/{run}/ckpt/export/tflite_graph.pb")
        store.write_json(f"runs/{run}/ckpt/failures/convert-int8.json", {"error": "x"})
    for run in ("old-done", "fresh", "held"):
        store.write_json(f"runs/{run}/report.json", {"run_id": run})
    ledger = Ledger(store, "mobiledet")
    ledger.record_landing(uri="s3://c/a", tag="t", kind="checkpoint", fingerprint="a" * 64)
    ledger.claim("held")
    now = time.time()
    old = now - 10 * 86400
    for key in store.list("runs"):
        if not key.startswith("runs/fresh/"):
            os.utime(store.location(key).path, (old, old))
    result = prune(store, _policy(keep_runs_days=7, keep_failures_days=30), now=now)
    assert [r["run_id"] for r in result["runs"]["trimmed"]] == ["old-done"]
    assert store.list("runs/old-done") == ["runs/old-done/ckpt/failures/convert-int8.json",
                                           "runs/old-done/report.json"]
    assert len(store.list("runs/held")) == 3 and len(store.list("runs/fresh")) == 3
    # a run that never wrote its report goes when it is older than the failure records' limit
    assert store.list("runs/old-failed")
    result = prune(store, _policy(keep_runs_days=7, keep_failures_days=5), now=now)
    assert not store.list("runs/old-failed") and not store.list("runs/old-done")
    assert len(store.list("runs/held")) == 3


def test_prune_cli_dry_run_and_json(tmp_path):
    from include.store import ArtifactStore

    store = ArtifactStore(str(tmp_path / "store"))
    versions = [_release(store, i, f"r{i}") for i in range(4)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "include.cli", "prune", "--store",
                          str(tmp_path / "store"), "--keep", "2", "--dry-run", "--json"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["dry_run"] and [r["version"] for r in doc["models"]["mobiledet"]["deleted"]] \
        == versions[:2][::-1]
    bad = subprocess.run([sys.executable, "-m", "include.cli", "prune", "--store",
                          str(tmp_path / "store"), "--keep", "0"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "--keep" in bad.stderr and "Fix:" in bad.stderr
