"""The artifact store and publishing, on a local folder and on S3 (moto server over HTTP)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest

from include.errors import StoreError
from include.store import (
    ArtifactStore,
    clean_version,
    fetch,
    last_published,
    latest,
    list_versions,
    make_version,
    materialize,
    open_store,
    pointer,
    publish_release as publish,
    read_manifest,
    stage_dir,
)
from include.store import manifest as manifest_mod

FP_A = "sha256:" + "a1b2c3d4" * 8
FP_B = "sha256:" + "ffee0011" * 8
T0 = datetime(2026, 11, 24, 4, 12, tzinfo=timezone.utc)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return str(path)


class WriteLog:
    """Records every write the store makes, in order (key of each put/copy/create/update)."""

    def __init__(self, monkeypatch, store):
        self.keys: list[str] = []
        for name in ("put_bytes", "put_file", "copy", "create_bytes"):
            original = getattr(store, name)

            def wrapped(*args, _orig=original, _name=name, **kwargs):
                key = args[1] if len(args) > 1 else kwargs.get("key", kwargs.get("dst_key"))
                self.keys.append(key)
                return _orig(*args, **kwargs)

            monkeypatch.setattr(store, name, wrapped)
        update = store.update_json

        def logged_update(key, change, **kwargs):  # a compare-and-set that changes nothing
            def logged(current):                   # writes nothing
                new = change(current)
                if new is not None:
                    self.keys.append(key)
                return new
            return update(key, logged, **kwargs)

        monkeypatch.setattr(store, "update_json", logged_update)


# ------------------------------------------------------------------------------------------
# Basic operations
# ------------------------------------------------------------------------------------------
def test_bytes_json_exists_size_sha_list(store):
    assert not store.exists("a/b.bin")
    uri = store.put_bytes(b"hello world", "a/b.bin")
    assert uri == store.uri("a/b.bin")
    assert uri.startswith("file:///" if store.local else "s3://")
    assert store.exists("a/b.bin") and store.is_file("a/b.bin")
    assert store.exists("a")  # a prefix counts
    assert store.get_bytes("a/b.bin") == b"hello world"
    assert store.size("a/b.bin") == 11
    assert store.sha256("a/b.bin") == _sha(b"hello world")
    store.write_json("a/c/doc.json", {"x": 1, "y": [1.5, None]})
    assert store.read_json("a/c/doc.json") == {"x": 1, "y": [1.5, None]}
    assert store.list("a") == ["a/b.bin", "a/c/doc.json"]
    assert store.list("") == ["a/b.bin", "a/c/doc.json"]
    assert store.list("nothing/here") == []
    # overwrite is a plain replace, never a temp file left behind
    store.put_bytes(b"v2", "a/b.bin")
    assert store.get_bytes("a/b.bin") == b"v2"
    if store.local:
        leftovers = [f for _, _, fs in os.walk(store._root_path) for f in fs if ".partial-" in f]
        assert leftovers == []


def test_path_is_object_storage_path(store):
    from airflow.sdk import ObjectStoragePath

    store.put_bytes(b"x", "k/f.txt")
    p = store.path("k/f.txt")
    assert isinstance(p, ObjectStoragePath)
    assert p.read_bytes() == b"x"
    if not store.local:
        assert p.conn_id == "aws_default"
        assert p.bucket == store._root_path.split("/")[0]


def test_files_copy_delete(store, tmp_path):
    src = _write(tmp_path / "in" / "model.tflite", b"\x00TFL3" * 100)
    uri = store.put_file(src, "runs/r1/cpu/int8/model.tflite")
    out = store.get_file("runs/r1/cpu/int8/model.tflite", str(tmp_path / "out" / "m.tflite"))
    assert open(out, "rb").read() == open(src, "rb").read()
    store.copy("runs/r1/cpu/int8/model.tflite", "copies/by_key.tflite")      # key
    store.copy(uri, "copies/by_uri.tflite")                                    # store URI
    store.copy(src, "copies/by_local_path.tflite")                             # local path
    for key in ("copies/by_key.tflite", "copies/by_uri.tflite", "copies/by_local_path.tflite"):
        assert store.sha256(key) == _sha(b"\x00TFL3" * 100)
    assert store.delete_prefix("copies") == 3
    assert store.list("copies") == []
    assert store.exists("runs/r1/cpu/int8/model.tflite")
    with pytest.raises(StoreError, match="whole store"):
        store.delete_prefix("")


def test_stage_and_materialize(store, tmp_path):
    src = _write(tmp_path / "w1" / "model.tflite", b"model-bytes")
    uri = store.put_file(src, "runs/r1/cpu/float32/model.tflite")
    # another worker: only the URI travels
    local = materialize(uri, str(tmp_path / "w2"))
    assert local == str(tmp_path / "w2" / "model.tflite")
    assert open(local, "rb").read() == b"model-bytes"
    assert fetch(uri, str(tmp_path / "w3" / "x.tflite")) == str(tmp_path / "w3" / "x.tflite")

    export = tmp_path / "w1" / "saved_model"
    _write(export / "saved_model.pb", b"pb")
    _write(export / "variables" / "variables.index", b"idx")
    dir_uri = stage_dir(store, str(export), "runs/r1/export/saved_model")
    got = materialize(dir_uri, str(tmp_path / "w4"))
    assert got == str(tmp_path / "w4" / "saved_model")
    assert open(os.path.join(got, "saved_model.pb"), "rb").read() == b"pb"
    assert open(os.path.join(got, "variables", "variables.index"), "rb").read() == b"idx"
    # materializing again replaces the folder in one step
    assert materialize(dir_uri, str(tmp_path / "w4")) == got
    assert sorted(os.listdir(tmp_path / "w4")) == ["saved_model"]


def test_errors_name_the_uri_and_fix(store):
    with pytest.raises(StoreError) as exc:
        store.read_json("missing/doc.json")
    assert store.uri("missing/doc.json") in str(exc.value) and "Fix:" in str(exc.value)
    for bad in ("../escape", "/abs/key", "a//b", "a/./b"):
        with pytest.raises(StoreError, match="invalid store key"):
            store.put_bytes(b"x", bad)
    with pytest.raises(StoreError, match="JSON"):
        store.write_json("bad.json", {"nan": float("nan")})
    assert not store.exists("bad.json")


def test_open_store_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = open_store("rel/store")
    assert a.local and a.base_uri == "file://" + str(tmp_path / "rel" / "store")
    b = open_store("file://" + str(tmp_path / "rel" / "store"))
    assert b.base_uri == a.base_uri and open_store(b) is b
    with pytest.raises(StoreError, match="unsupported storage scheme"):
        open_store("ftp://host/x")
    with pytest.raises(StoreError, match="names no bucket"):
        open_store("s3:///prefix")
    assert a.key_of(a.uri("x/y.json")) == "x/y.json" and a.key_of("s3://b/x") is None


def test_s3_missing_bucket_is_a_store_error(s3_server):
    store = ArtifactStore("s3://no-such-bucket-here/p", conn_id="aws_default")
    with pytest.raises(StoreError) as exc:
        store.put_bytes(b"x", "k.bin")
    assert "s3://no-such-bucket-here/p/k.bin" in str(exc.value)
    assert "aws_default" in str(exc.value)


def test_s3_store_needs_no_metadata_database(s3_server, s3_bucket, tmp_path):
    """The CLI path: connection from the environment, an Airflow home with no database."""
    script = textwrap.dedent(f"""
        from include.store import ArtifactStore
        s = ArtifactStore("s3://{s3_bucket}/cli", conn_id="aws_default")
        s.write_json("a.json", {{"ok": True}})
        assert s.read_json("a.json") == {{"ok": True}}, "round trip"
        print("OK", s.list(""))
    """)
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "sqlite:////nonexistent-dir/never.db"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK ['a.json']" in proc.stdout
    assert not os.path.exists(tmp_path / "airflow-home" / "airflow.db")


# ------------------------------------------------------------------------------------------
# Publishing
# ------------------------------------------------------------------------------------------
def _artifacts(store, tmp_path, tag=b""):
    """cpu/int8 passes (sources: store URIs), edgetpu/int8 passes (local paths), cpu/float16
    is rejected."""
    cpu_model = _write(tmp_path / "src" / "cpu_int8.tflite", b"cpu-int8" + tag)
    cpu_uri = store.put_file(cpu_model, "runs/r1/cpu/int8/model.tflite")
    conv_uri = store.write_json("runs/r1/cpu/int8/conversion.json", {"recipe": "int8"})
    tpu_model = _write(tmp_path / "src" / "tpu_int8.tflite", b"tpu-int8" + tag)
    tpu_compiled = _write(tmp_path / "src" / "tpu_int8_edgetpu.tflite", b"tpu-compiled" + tag)
    decision_ok = {"passed": True, "metric": "AP50", "map": 0.41, "checks": [], "reasons": []}
    return [
        {"variant": "cpu", "precision": "int8", "passed": True, "decision": decision_ok,
         "files": {"model.tflite": cpu_uri, "conversion.json": conv_uri,
                   "metrics.json": {"AP50": 0.41, "map": 0.41},
                   "validation.json": {"success": True}}},
        {"variant": "edgetpu", "precision": "int8", "passed": True,
         "decision": dict(decision_ok, map=0.38),
         "files": {"model.tflite": tpu_model, "model_edgetpu.tflite": tpu_compiled,
                   "metrics.json": {"AP50": 0.38, "map": 0.38}}},
        {"variant": "cpu", "precision": "float16", "passed": False,
         "decision": {"passed": False, "metric": "AP50", "map": 0.20,
                      "reasons": ["AP50 dropped 0.210 below the float32 reference (max 0.010)"]},
         "files": {"model.tflite": cpu_model}},
    ]


LINEAGE_A = {"checkpoint_uri": "s3://ckpt/mobiledet_cpu/ckpt-100", "checkpoint_fingerprint": FP_A,
             "code_version": "0.1.0", "tensorflow_version": "2.21.0",
             "converter_version": "2.21.0"}


def _object_count(store, s3_endpoint=None):
    if store.local:  # lock sidecars and in-flight temp files are the disk's, not objects
        from include.store.store import hidden
        return sum(1 for _, _, fs in os.walk(store._root_path) for f in fs if not hidden(f))
    from s3server import count_objects

    bucket = store._root_path.split("/")[0]
    return count_objects(s3_endpoint, bucket)


def test_make_version():
    v = make_version(FP_A, T0)
    assert v == "v20261124T041200Z-a1b2c3d4"
    assert make_version(FP_A, "2026-11-24T04:12:00Z") == v
    assert make_version(FP_A, T0.timestamp()) == v
    assert make_version(FP_A, datetime(2026, 11, 24, 4, 12)) == v  # naive = UTC
    with pytest.raises(StoreError, match="fingerprint"):
        make_version("ab", T0)
    with pytest.raises(StoreError, match="creation time"):
        make_version(FP_A, "yesterday")


def test_publish_copies_passed_and_lists_rejected(store, tmp_path, monkeypatch):
    arts = _artifacts(store, tmp_path)
    version = make_version(FP_A, T0)
    log = WriteLog(monkeypatch, store)
    result = publish(store, "mobiledet", version, arts, LINEAGE_A, publisher="run-1")
    assert result.status == "published" and not result.already_published
    assert result.winner == result.publisher == "run-1"
    # the manifest is the last write of the release; the pointers all come after it
    mkey = f"mobiledet/{version}/manifest.json"
    release_writes = [k for k in log.keys if k.startswith(f"mobiledet/{version}/")]
    assert release_writes[-1] == mkey
    pointer_writes = [i for i, k in enumerate(log.keys) if k.startswith("mobiledet/latest")]
    assert set(log.keys[pointer_writes[0]:]) == {
        "mobiledet/latest.json", "mobiledet/latest/cpu.json", "mobiledet/latest/edgetpu.json",
        "mobiledet/latest/cpu/int8.json", "mobiledet/latest/edgetpu/int8.json"}
    assert min(pointer_writes) > log.keys.index(mkey)

    m = read_manifest(store, "mobiledet", version)
    assert m["lineage"]["checkpoint_fingerprint"] == FP_A
    assert m["lineage"]["tensorflow_version"] == "2.21.0"
    assert m["decisions"][0]["map"] == 0.41
    names = {(e["variant"], e["precision"]): e for e in m["published"]}
    assert set(names) == {("cpu", "int8"), ("edgetpu", "int8")}
    assert set(names[("edgetpu", "int8")]["files"]) == {"model.tflite", "model_edgetpu.tflite",
                                                        "metrics.json"}
    assert names[("cpu", "int8")]["metrics"]["AP50"] == 0.41
    # every recorded file exists with the recorded size and hash
    assert len(m["files"]) == 7
    for f in m["files"]:
        key = f"mobiledet/{version}/{f['path']}"
        assert store.exists(key)
        assert store.size(key) == f["size"]
        assert store.sha256(key) == f["sha256"]
        assert f["uri"] == store.uri(key)
    assert store.get_bytes(f"mobiledet/{version}/run-1/cpu/int8/model.tflite") == b"cpu-int8"
    # the rejected entry is listed with its reason and not copied
    assert m["rejected"] == [{
        "variant": "cpu", "precision": "float16", "metrics": {},
        "reasons": ["AP50 dropped 0.210 below the float32 reference (max 0.010)"],
        "decision": arts[2]["decision"]}]
    assert not store.exists(f"mobiledet/{version}/run-1/cpu/float16")
    assert result.rejected[0]["reasons"][0].startswith("AP50 dropped")
    # latest points at the new manifest
    head = latest(store, "mobiledet")
    assert head["version"] == version and head["manifest_uri"] == result.manifest_uri
    assert result.manifest_uri == store.uri(f"mobiledet/{version}/manifest.json")
    assert list_versions(store, "mobiledet") == [version]
    json.dumps(result.to_dict())


def test_republish_same_checkpoint_is_a_noop(store, tmp_path, monkeypatch, request):
    endpoint = None if store.local else request.getfixturevalue("s3_server")
    arts = _artifacts(store, tmp_path)
    version = make_version(FP_A, T0)
    publish(store, "mobiledet", version, arts, LINEAGE_A)
    before = _object_count(store, endpoint)
    manifest_before = store.get_bytes(f"mobiledet/{version}/manifest.json")
    log = WriteLog(monkeypatch, store)
    again = publish(store, "mobiledet", version, arts, LINEAGE_A)
    assert again.already_published and again.status == "already_published"
    assert log.keys == []  # not a single write
    assert _object_count(store, endpoint) == before
    assert store.get_bytes(f"mobiledet/{version}/manifest.json") == manifest_before
    assert {(e["variant"], e["precision"]) for e in again.published} == {("cpu", "int8"),
                                                                        ("edgetpu", "int8")}


def test_same_version_other_checkpoint_is_refused(store, tmp_path):
    version = make_version(FP_A, T0)
    publish(store, "mobiledet", version, _artifacts(store, tmp_path), LINEAGE_A)
    lineage_b = dict(LINEAGE_A, checkpoint_fingerprint=FP_B)
    with pytest.raises(StoreError) as exc:
        publish(store, "mobiledet", version, _artifacts(store, tmp_path, b"-b"), lineage_b)
    text = str(exc.value)
    assert version in text and "new version" in text and exc.value.fix
    # the published release is untouched, and the refused publisher left nothing behind
    m = read_manifest(store, "mobiledet", version)
    assert store.get_bytes(f"mobiledet/{version}/{m['publisher']}/cpu/int8/model.tflite") == \
        b"cpu-int8"
    assert {k.split("/")[2] for k in store.list(f"mobiledet/{version}")} == {
        "manifest.json", m["publisher"]}


def test_failure_before_manifest_leaves_no_release(store, tmp_path, monkeypatch):
    # a first, good release
    v1 = make_version(FP_A, T0)
    publish(store, "mobiledet", v1, _artifacts(store, tmp_path), LINEAGE_A)
    latest_before = store.get_bytes("mobiledet/latest.json")
    # the second publish dies while copying its second file
    v2 = make_version(FP_B, datetime(2026, 11, 25, tzinfo=timezone.utc))
    arts = _artifacts(store, tmp_path, b"-2")
    calls = {"n": 0}
    real_copy = store.copy

    def flaky_copy(src, dst_key):
        calls["n"] += 1
        if calls["n"] == 2:
            raise StoreError("injected failure", where=dst_key)
        return real_copy(src, dst_key)

    monkeypatch.setattr(store, "copy", flaky_copy)
    with pytest.raises(StoreError, match="injected failure"):
        publish(store, "mobiledet", v2, arts, dict(LINEAGE_A, checkpoint_fingerprint=FP_B))
    assert not store.exists(f"mobiledet/{v2}/manifest.json")
    assert store.list(f"mobiledet/{v2}") == []  # nothing half-written left behind
    assert store.get_bytes("mobiledet/latest.json") == latest_before
    assert latest(store, "mobiledet")["version"] == v1
    assert list_versions(store, "mobiledet") == [v1]


def test_first_publish_failure_leaves_no_latest(store, tmp_path, monkeypatch):
    def broken_sha(key):
        raise StoreError("injected hash failure", where=key)

    monkeypatch.setattr(store, "sha256", broken_sha)
    with pytest.raises(StoreError, match="injected"):
        publish(store, "mobiledet", make_version(FP_A, T0), _artifacts(store, tmp_path),
                LINEAGE_A)
    assert latest(store, "mobiledet") is None
    assert list_versions(store, "mobiledet") == []


def test_own_partial_attempt_is_replaced_others_are_left_alone(store, tmp_path):
    version = make_version(FP_A, T0)
    # run-a's earlier attempt died after copying some files (no manifest): not a release
    store.put_bytes(b"stale", f"mobiledet/{version}/run-a/cpu/int8/model.tflite")
    store.put_bytes(b"junk", f"mobiledet/{version}/run-a/gpu/float16/model.tflite")
    # another run is copying its files right now (or died a moment ago)
    store.put_bytes(b"busy", f"mobiledet/{version}/run-b/cpu/int8/model.tflite")
    assert latest(store, "mobiledet") is None and list_versions(store, "mobiledet") == []
    result = publish(store, "mobiledet", version, _artifacts(store, tmp_path), LINEAGE_A,
                     publisher="run-a")
    assert result.cleaned_partial and result.status == "published"
    assert store.get_bytes(f"mobiledet/{version}/run-a/cpu/int8/model.tflite") == b"cpu-int8"
    assert not store.exists(f"mobiledet/{version}/run-a/gpu")
    # never deleted by another publisher while it may still be at work ...
    assert store.get_bytes(f"mobiledet/{version}/run-b/cpu/int8/model.tflite") == b"busy"
    # ... only once it is older than the grace period, and then by clean_version
    assert clean_version(store, "mobiledet", version, stale_after_s=0) == [
        f"mobiledet/{version}/run-b"]
    assert not store.exists(f"mobiledet/{version}/run-b")
    assert latest(store, "mobiledet")["version"] == version


def test_crash_between_manifest_and_latest_is_finished_by_rerun(store, tmp_path, monkeypatch):
    version = make_version(FP_A, T0)
    real = manifest_mod.move_pointers
    monkeypatch.setattr(manifest_mod, "move_pointers",
                        lambda *a, **k: (_ for _ in ()).throw(StoreError("injected")))
    with pytest.raises(StoreError):
        publish(store, "mobiledet", version, _artifacts(store, tmp_path), LINEAGE_A)
    assert store.exists(f"mobiledet/{version}/manifest.json")  # the release is complete
    assert latest(store, "mobiledet") is None
    monkeypatch.setattr(manifest_mod, "move_pointers", real)
    again = publish(store, "mobiledet", version, _artifacts(store, tmp_path), LINEAGE_A)
    assert again.already_published and again.latest_moved
    assert latest(store, "mobiledet")["version"] == version
    assert pointer(store, "mobiledet", "edgetpu", "int8")["version"] == version
    # the loser's own files are gone; only the winner's folder is left
    assert {k.split("/")[2] for k in store.list(f"mobiledet/{version}")} == {
        "manifest.json", read_manifest(store, "mobiledet", version)["publisher"]}


def test_source_hash_mismatch_stops_before_manifest(store, tmp_path, monkeypatch):
    real_sha = store.sha256
    monkeypatch.setattr(store, "sha256",
                        lambda key: "0" * 64 if key.endswith("model.tflite") else real_sha(key))
    with pytest.raises(StoreError, match="does not match its source"):
        publish(store, "mobiledet", make_version(FP_A, T0), _artifacts(store, tmp_path),
                LINEAGE_A)
    assert list_versions(store, "mobiledet") == [] and latest(store, "mobiledet") is None


def test_nothing_passed_publishes_nothing(store, tmp_path):
    arts = [a for a in _artifacts(store, tmp_path) if not a["passed"]]
    result = publish(store, "mobiledet", make_version(FP_A, T0), arts, LINEAGE_A)
    assert result.status == "nothing_to_publish" and result.manifest_uri is None
    assert result.rejected[0]["variant"] == "cpu"
    assert latest(store, "mobiledet") is None


def test_bad_publish_input_fails_before_any_write(store, tmp_path):
    arts = _artifacts(store, tmp_path)
    with pytest.raises(StoreError, match="checkpoint_fingerprint"):
        publish(store, "mobiledet", "v1", arts, {"checkpoint_uri": "x"})
    with pytest.raises(StoreError, match="appears twice"):
        publish(store, "mobiledet", "v1", arts + [arts[0]], LINEAGE_A)
    with pytest.raises(StoreError, match="no model.tflite"):
        publish(store, "mobiledet", "v1", [dict(arts[0], files={"metrics.json": {}})], LINEAGE_A)
    with pytest.raises(StoreError, match="safe folder name"):
        publish(store, "mobiledet", "../v1", arts, LINEAGE_A)
    with pytest.raises(StoreError, match="manifest"):
        publish(store, "mobiledet", "v1", arts, dict(LINEAGE_A, bad=float("nan")))
    assert not store.exists("mobiledet")


def test_last_published_is_the_newest_release_with_that_entry(store, tmp_path):
    assert last_published(store, "mobiledet", "cpu", "int8") is None
    v1 = make_version(FP_A, T0)
    publish(store, "mobiledet", v1, _artifacts(store, tmp_path), LINEAGE_A,
            now=datetime(2026, 11, 24, 5, tzinfo=timezone.utc))
    base = last_published(store, "mobiledet", "cpu", "int8")
    assert base["version"] == v1 and base["map"] == 0.41 and base["metric"] == "AP50"
    assert base["metrics"]["AP50"] == 0.41
    # v2 rejects cpu/int8: the baseline for cpu/int8 stays v1, edgetpu/int8 moves to v2
    arts = _artifacts(store, tmp_path, b"-2")
    arts[0] = dict(arts[0], passed=False, decision={"passed": False, "reasons": ["regressed"]})
    arts[1]["decision"] = dict(arts[1]["decision"], map=0.39)
    v2 = make_version(FP_B, datetime(2026, 11, 25, tzinfo=timezone.utc))
    publish(store, "mobiledet", v2, arts, dict(LINEAGE_A, checkpoint_fingerprint=FP_B),
            now=datetime(2026, 11, 25, 5, tzinfo=timezone.utc))
    assert latest(store, "mobiledet")["version"] == v2
    assert last_published(store, "mobiledet", "cpu", "int8")["version"] == v1
    tpu = last_published(store, "mobiledet", "edgetpu", "int8")
    assert tpu["version"] == v2 and tpu["map"] == 0.39
    assert last_published(store, "mobiledet", "gpu", "float16") is None
