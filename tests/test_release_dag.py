"""mobiledet_release through Airflow (dag.test) and the mobiledet release CLI: an action moves
pointers, the audit log names the Airflow user, and every moved pointer is an asset event."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from test_release_ops import _publish

REPO = Path(__file__).resolve().parents[1]


def _dag():
    spec = importlib.util.spec_from_file_location("mobiledet_release",
                                                  REPO / "dags" / "mobiledet_release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def test_a_yank_through_airflow_moves_the_pointer_and_is_an_asset_event(tmp_path, airflow_db):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from include.store import ArtifactStore, pointer
    from include.store.registry import Releases

    store = ArtifactStore(str(tmp_path / "store"))
    v1, v2 = _publish(store, 0), _publish(store, 1)
    run = _dag().test(run_conf={"action": "yank", "version": v2, "reason": "bad on device",
                                "store": str(tmp_path / "store")})
    assert str(run.state) == "success"
    assert pointer(store, "mobiledet", "edgetpu", "int8")["version"] == v1
    [entry] = Releases(store, "mobiledet").history(version=v2)
    assert entry["action"] == "yank" and entry["who"].endswith("(Airflow)")
    with create_session() as session:
        rows = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetModel.name == "mobiledet/mobiledet/edgetpu/int8").all())
        extras = [r.extra for r in rows if (r.extra or {}).get("action") == "yank"]
    assert any(e["version"] == v1 and e["from_version"] == v2 and e["model_uri"]
               for e in extras), extras


def test_release_cli_yank_history_restore(tmp_path):
    from include.store import ArtifactStore, pointer

    store = ArtifactStore(str(tmp_path / "store"))
    v1, v2 = _publish(store, 0), _publish(store, 1)
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "include.cli", "release", *args, "--store",
                              str(tmp_path / "store")], capture_output=True, text=True,
                             env=env, cwd=REPO, timeout=300)
        return out

    done = cli("yank", v2, "--reason", "NaN scores on the GPU delegate")
    assert done.returncode == 0, done.stderr
    assert f"latest/edgetpu/int8.json: {v2} -> {v1}" in done.stdout
    assert pointer(store, "mobiledet", "edgetpu", "int8")["version"] == v1
    history = json.loads(cli("history", "--json").stdout)
    assert history[-1]["reason"] == "NaN scores on the GPU delegate"
    assert cli("restore", v2).returncode == 0
    assert pointer(store, "mobiledet", "edgetpu", "int8")["version"] == v2
    bad = cli("promote", v2, "--channel", "prod")
    assert bad.returncode == 2 and "'prod'" in bad.stderr and "Fix:" in bad.stderr


def test_housekeeping_applies_the_channel_rules(tmp_path, airflow_db):
    """A canary that has named a release for longer than the rule's hours without a yank is
    promoted to stable by mobiledet_housekeeping; a fresher canary is not."""
    import datetime as dt

    from include.store import ArtifactStore
    from include.store.registry import Releases

    store_dir = tmp_path / "store"
    store = ArtifactStore(str(store_dir))
    v1, v2 = _publish(store, 0), _publish(store, 1)
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=30)
    Releases(store, "mobiledet", clock=lambda: long_ago).promote(
        v1, "canary", "edgetpu", "float32", who="alice", reason="canary")
    Releases(store, "mobiledet").promote(v2, "canary", "edgetpu", "int8", who="alice",
                                         reason="canary, fresh")
    config = tmp_path / "pipeline.json"
    config.write_text(json.dumps({"store_uri": str(store_dir), "channels": ["canary", "stable"],
                                  "channel_rules": [{"from": "canary", "to": "stable",
                                                     "after_hours": 24}]}))
    spec = importlib.util.spec_from_file_location("mobiledet_housekeeping",
                                                  REPO / "dags" / "mobiledet_housekeeping.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = module.dag.test(run_conf={"config": str(config)})
    assert str(run.state) == "success"
    stable = store.read_json("mobiledet/channels/stable/edgetpu/float32.json")
    assert stable["version"] == v1
    assert not store.exists("mobiledet/channels/stable/edgetpu/int8.json")
    [entry] = [e for e in Releases(store, "mobiledet").history()
               if e["action"] == "promote" and e["who"] == "housekeeping"]
    assert "canary named it for 30.0 h" in entry["reason"]
