"""Release operations (include/store/registry.py): channels, yank and restore, force-bless,
the audit log; on a local folder and on S3; bad input refused by name; concurrent actions."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
FPS = ["sha256:" + c * 64 for c in "abcdef"]


def _publish(store, i: int, *, reject_int8: bool = False):
    """Release i (checkpoint i, created T0 + i days): edgetpu/float32 published, edgetpu/int8
    published or rejected, with a run report naming the models (as the pipeline writes it)."""
    from include.store import make_version, publish_release

    run = f"run-{i}"
    ckpt_id = f"edgetpu-float-{FPS[i].rpartition(':')[2][:8]}"
    arts, models = [], []
    for precision in ("float32", "int8"):
        passed = not (reject_int8 and precision == "int8")
        prefix = f"runs/{run}/{ckpt_id}/{precision}"
        model = store.put_bytes(f"{i}-{precision}".encode() * 64, f"{prefix}/model.tflite")
        conv = store.write_json(f"{prefix}/conversion.json", {"precision": precision})
        decision = {"variant": "edgetpu", "precision": precision, "metric": "AP50", "map": 0.4,
                    "passed": passed, "checks": [],
                    "reasons": [] if passed else ["AP50 drop 0.08 > 0.05"]}
        arts.append({"variant": "edgetpu", "precision": precision, "passed": passed,
                     "files": {"model.tflite": model, "conversion.json": conv}
                     if passed else {}, "decision": decision})
        models.append({"variant": "edgetpu", "precision": precision, "ckpt_id": ckpt_id,
                       "model_uri": model, "conversion_uri": conv, "passed": passed})
    store.write_json(f"runs/{run}/report.json", {"run_id": run, "models": models})
    created = T0 + timedelta(days=i)
    return publish_release(store, "mobiledet", make_version(FPS[i], created), arts,
                           {"checkpoint_fingerprint": FPS[i], "run_id": run, "qat": False},
                           publisher=run, created=created).version


def _ops(store):
    from include.store.registry import Releases
    return Releases(store, "mobiledet", channels=("canary", "stable"))


def test_yank_moves_latest_back_and_restore_forward(store):
    from include.store import pointer, read_manifest

    v1, v2 = _publish(store, 0), _publish(store, 1)
    ops = _ops(store)
    assert pointer(store, "mobiledet", "edgetpu", "int8")["version"] == v2
    files = read_manifest(store, "mobiledet", v2)["files"]
    entry = ops.yank(v2, who="alice", reason="crashes on Pixel 6")
    assert pointer(store, "mobiledet", "edgetpu", "int8")["version"] == v1
    assert store.read_json("mobiledet/latest.json")["version"] == v1
    assert {"pointer": "latest/edgetpu/int8.json", "from": v2, "to": v1} in entry["moves"]
    for f in files:                       # the release and its files stay
        assert store.sha256(f"mobiledet/{v2}/{f['path']}") == f["sha256"]
    assert store.read_json(f"mobiledet/{v2}/yank.json")["reason"] == "crashes on Pixel 6"
    [logged] = ops.history(version=v2)
    assert logged["who"] == "alice" and logged["action"] == "yank" and \
        logged["reason"] == "crashes on Pixel 6"
    # a publish retry of the yanked release moves no pointer back to it
    from include.store.pointers import move_pointers
    assert not any(move_pointers(store, read_manifest(store, "mobiledet", v2)).values())
    ops.restore(v2, who="bob")
    assert pointer(store, "mobiledet", "edgetpu", "int8")["version"] == v2
    assert [h["action"] for h in ops.history(version=v2)] == ["yank", "restore"]


def test_channels_move_either_way_and_a_yank_takes_the_release_off(store):
    from include.store import pointer

    v1, v2, v3 = _publish(store, 0), _publish(store, 1), _publish(store, 2)
    ops = _ops(store)
    ops.promote(v1, "stable", who="ci")
    ops.promote(v3, "stable", "edgetpu", "int8", who="ci")
    ops.promote(v2, "stable", "edgetpu", "int8", who="ops", reason="v3 regressed in the field")
    assert pointer(store, "mobiledet", "edgetpu", "int8", channel="stable")["version"] == v2
    assert pointer(store, "mobiledet", "edgetpu", "float32", channel="stable")["version"] == v1
    ops.yank(v2, who="ops", reason="bad on device")
    assert pointer(store, "mobiledet", "edgetpu", "int8", channel="stable")["version"] == v3
    ops.restore(v2, who="ops")
    assert pointer(store, "mobiledet", "edgetpu", "int8", channel="stable")["version"] == v2


def test_yanking_the_only_release_leaves_no_release_not_a_yanked_one(store):
    from include.store import pointer

    v1 = _publish(store, 0)
    ops = _ops(store)
    ops.promote(v1, "canary", who="ci")
    ops.yank(v1, who="ops", reason="broken")
    doc = pointer(store, "mobiledet", "edgetpu", "int8")
    assert doc["version"] is None and doc["status"] == "no release"
    assert store.read_json("mobiledet/latest.json")["version"] is None
    assert pointer(store, "mobiledet", "edgetpu", "int8", channel="canary")["version"] is None


def test_bless_publishes_a_rejected_model_with_its_reason(store):
    from include.store import pointer

    v1 = _publish(store, 0, reject_int8=True)
    assert pointer(store, "mobiledet", "edgetpu", "int8") is None
    ops = _ops(store)
    ops.bless(v1, "edgetpu", "int8", who="lead", reason="the AP50 drop is in classes we drop")
    doc = pointer(store, "mobiledet", "edgetpu", "int8")
    assert doc["version"] == v1 and doc["blessed"]["reason"].startswith("the AP50 drop")
    record = store.read_json(f"mobiledet/{v1}/blessed/edgetpu/int8/bless.json")
    assert record["by"] == "lead" and store.get_bytes(record["files"]["model.tflite"]["key"]) \
        == b"0-int8" * 64
    assert ops.history(version=v1)[-1]["action"] == "bless"


@pytest.mark.parametrize("call, words", [
    (lambda ops, v: ops.yank("v20990101T000000Z-nosuchre", who="x", reason="r"),
     ["not published", "pick one of the published versions"]),
    (lambda ops, v: ops.promote(v, "prod", who="x"), ["'prod'", "not in the config"]),
    (lambda ops, v: ops.promote(v, "stabel", who="x"), ["did you mean 'stable'"]),
    (lambda ops, v: ops.yank(v, who="x", reason=" "), ["needs its reason"]),
    (lambda ops, v: ops.restore(v, who="x"), ["is not yanked"]),
    (lambda ops, v: ops.bless(v, "edgetpu", "float32", who="x", reason="r"),
     ["not a rejected model", "published: edgetpu/float32"]),
    (lambda ops, v: ops.promote(v, "stable", "cpu", who="x"), ["no published model cpu/*"]),
])
def test_bad_input_is_refused_by_name(store, call, words):
    from include.errors import MobiledetError

    v1 = _publish(store, 0)
    ops = _ops(store)
    with pytest.raises(MobiledetError) as exc:
        call(ops, v1)
    for word in words:
        assert word in str(exc.value), str(exc.value)
    assert "Fix:" in str(exc.value)
    ops.yank(v1, who="x", reason="r")
    with pytest.raises(MobiledetError, match="is yanked"):
        ops.promote(v1, "stable", who="x")


def test_concurrent_promote_yank_restore_end_on_releases_that_are_not_yanked(store):
    """8 actions at once on one model: every pointer and channel names a release that is not
    yanked, and the history has one entry per action that changed something, in order."""
    from include.store import pointer

    versions = [_publish(store, i) for i in range(3)]
    _ops(store).promote(versions[0], "stable", who="setup")
    actions = [
        lambda o: o.yank(versions[2], who="a", reason="r1"),
        lambda o: o.promote(versions[1], "stable", who="b"),
        lambda o: o.restore(versions[2], who="c"),
        lambda o: o.yank(versions[1], who="d", reason="r2"),
        lambda o: o.promote(versions[2], "canary", who="e"),
        lambda o: o.yank(versions[0], who="f", reason="r3"),
        lambda o: o.promote(versions[0], "canary", who="g"),
        lambda o: o.restore(versions[1], who="h"),
    ]
    barrier = threading.Barrier(len(actions), timeout=60)

    def run(action):
        barrier.wait()
        try:
            return action(_ops(store))
        except Exception as exc:  # a refusal (yanked, not yanked) is a valid outcome
            return exc

    with ThreadPoolExecutor(len(actions)) as pool:
        list(pool.map(run, actions, timeout=300))
    ops = _ops(store)
    yanked = ops.yanked()
    for precision in ("float32", "int8"):
        auto = pointer(store, "mobiledet", "edgetpu", precision)
        assert auto["version"] not in yanked
        for channel in ("stable", "canary"):
            doc = pointer(store, "mobiledet", "edgetpu", precision, channel=channel)
            assert doc is None or doc["version"] not in yanked
    history = ops.history()
    assert [h["seq"] for h in history] == list(range(1, len(history) + 1))
    state = ops.state()
    assert state["seq"] == len(history)


def test_the_dashboard_shows_yanked_blessed_channels_and_the_history(tmp_path):
    from fastapi.testclient import TestClient

    from include.dashboard.app import create_app
    from include.dashboard.reader import StoreReader
    from include.store import ArtifactStore

    store = ArtifactStore(str(tmp_path / "store"))
    v1, v2 = _publish(store, 0, reject_int8=True), _publish(store, 1)
    ops = _ops(store)
    ops.promote(v1, "stable", who="ci")
    ops.promote(v2, "stable", who="ci")
    ops.yank(v2, who="alice", reason="crashes on Pixel 6")
    ops.bless(v1, "edgetpu", "int8", who="lead", reason="known drop, accepted")
    with TestClient(create_app(StoreReader(str(tmp_path / "store"), pointer_ttl_s=0))) as c:
        rows = {r["version"]: r for r in c.get("/api/releases").json()["versions"]}
        assert rows[v2]["yanked"]["reason"] == "crashes on Pixel 6"
        assert rows[v1]["cells"]["edgetpu/int8"]["blessed"]["reason"] == "known drop, accepted"
        assert rows[v1]["channels"] == ["stable: edgetpu/float32"]   # back on v1 after the yank
        page = c.get("/").text
        assert "yanked" in page and "BLESSED by hand" in page
        history = c.get("/api/history").json()["entries"]
        assert [e["action"] for e in history] == ["bless", "yank", "promote", "promote"]
        assert "crashes on Pixel 6" in c.get(f"/releases/{v2}").text
