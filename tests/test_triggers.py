"""CheckpointLandingTrigger and its Airflow-free core (include/pipeline/landing.py).

`run()` is driven for real, one event at a time, over a local folder and over S3 served by moto
on 127.0.0.1; every wait is bounded. Poll intervals are a few tens of milliseconds.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import pytest

from s3server import s3_client

POLL = 0.05
EVENT_TIMEOUT = 20.0
LOGGER = "operators.triggers"


def _meta(variant="edgetpu", qat=False, created="2026-01-02T03:04:05Z", fp="ab" * 32):
    return {"format": "mobiledet-checkpoint/1", "variant": variant, "qat": qat,
            "num_classes": 3, "input_size": 64, "depth_multiplier": 0.25, "fingerprint": fp,
            "created": created, "label_map": {}, "weights": {"weights.h5": "0" * 64}}


PIPELINE_CONFIG = """model { ssd { num_classes: 7
  image_resizer { fixed_shape_resizer { height: 320 width: 320 } }
  feature_extractor { type: "ssd_mobiledet_edgetpu" depth_multiplier: 1.0 } } }
graph_rewriter { quantization { delay: 0 } }
"""


class Driver:
    """Runs trigger.run() in a task and queues its events, so a test can wait for the next one
    (bounded) or check that none came, without cancelling the generator in between."""

    def __init__(self, trigger):
        self.trigger = trigger
        self.queue: asyncio.Queue = asyncio.Queue()
        self.handed_over: list[float] = []   # monotonic time each event came out of run()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self):
        async for event in self.trigger.run():
            self.handed_over.append(time.monotonic())
            await self.queue.put(event.payload)

    async def next(self, timeout=EVENT_TIMEOUT) -> dict:
        getter = asyncio.ensure_future(self.queue.get())
        done, _ = await asyncio.wait({getter, self.task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            if self.task.done():
                self.task.result()   # re-raise what ended run()
                raise AssertionError("run() ended without an event")
            raise AssertionError(f"no event within {timeout} s")
        return getter.result()

    async def quiet(self, seconds: float) -> None:
        """Let it poll for `seconds`; it must emit nothing and keep running."""
        await asyncio.sleep(seconds)
        assert self.queue.empty(), await self.queue.get()
        assert not self.task.done(), self.task.exception()

    async def close(self):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


def drive(trigger, scenario, timeout=60):
    """Run `scenario(driver)` (a coroutine function) against a trigger, bounded in time."""
    async def main():
        driver = Driver(trigger)
        try:
            await asyncio.wait_for(scenario(driver), timeout)
        finally:
            await driver.close()
    asyncio.run(main())


# ------------------------------------------------------------------------------------------
# writers: a local folder and S3, the same operations
# ------------------------------------------------------------------------------------------
class LocalWriter:
    def __init__(self, root):
        self.root = root
        self.uri = str(root)

    def put(self, key, data: bytes = b""):
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def uri_of(self, key):
        return "file://" + str(self.root / key)


class S3Writer:
    def __init__(self, endpoint, bucket, prefix="ckpts"):
        self.client = s3_client(endpoint)
        self.bucket, self.prefix = bucket, prefix
        self.uri = f"s3://{bucket}/{prefix}"

    def put(self, key, data: bytes = b""):
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)

    def uri_of(self, key):
        return f"{self.uri}/{key}"


@pytest.fixture(params=["local", "s3"])
def writer(request, tmp_path):
    if request.param == "local":
        (tmp_path / "store").mkdir()
        return LocalWriter(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_server")
    return S3Writer(endpoint, request.getfixturevalue("s3_bucket"))


def _trigger(uri, **kw):
    from operators.triggers import CheckpointLandingTrigger
    kw.setdefault("event_spacing", 0.05)
    return CheckpointLandingTrigger(store_uri=uri, poll_interval=kw.pop("poll_interval", POLL),
                                    **kw)


# ------------------------------------------------------------------------------------------
# serialization and Airflow wiring
# ------------------------------------------------------------------------------------------
def test_serialize_mirrors_init_and_round_trips():
    from operators.triggers import CheckpointLandingTrigger

    t = CheckpointLandingTrigger(store_uri="s3://bucket/ckpts")
    assert t.serialize() == ("operators.triggers.CheckpointLandingTrigger", {
        "store_uri": "s3://bucket/ckpts", "conn_id": "aws_default", "poll_interval": 10.0,
        "error_interval": 60.0, "known": None, "report_existing": True, "event_spacing": 0.0,
        "notify": True, "ledger_store_uri": None, "ledger_conn_id": "aws_default",
        "model_name": "mobiledet", "sweep_interval": 600.0})
    t2 = CheckpointLandingTrigger("/data/ckpts", conn_id=None, poll_interval=2,
                                  error_interval=30, known=["a/b"], report_existing=False,
                                  ledger_store_uri="s3://models/m", model_name="det",
                                  sweep_interval=60)
    classpath, kwargs = t2.serialize()
    assert kwargs == {"store_uri": "/data/ckpts", "conn_id": None, "poll_interval": 2.0,
                      "error_interval": 30.0, "known": ["a/b"], "report_existing": False,
                      "event_spacing": 0.0, "notify": True, "ledger_store_uri": "s3://models/m",
                      "ledger_conn_id": "aws_default", "model_name": "det",
                      "sweep_interval": 60.0}
    json.dumps(kwargs)                                    # JSON-safe
    again = CheckpointLandingTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    # the triggerer imports the class from the classpath
    import importlib
    module, _, name = classpath.rpartition(".")
    assert getattr(importlib.import_module(module), name) is CheckpointLandingTrigger


def test_asset_watcher_accepts_the_trigger():
    from airflow.sdk import DAG, Asset, AssetWatcher
    from airflow.triggers.base import BaseEventTrigger

    trigger = _trigger("s3://bucket/ckpts")
    assert isinstance(trigger, BaseEventTrigger)
    watcher = AssetWatcher(name="checkpoint_landing", trigger=trigger)
    asset = Asset(name="mobiledet_checkpoints", uri="s3://bucket/ckpts", watchers=[watcher])
    assert asset.watchers[0].trigger is trigger
    with DAG("watcher_wiring_check", schedule=[asset]) as dag:
        pass
    assert dag.timetable.asset_condition is not None
    # What the DAG processor stores for the triggerer: the classpath and the kwargs.
    from airflow.serialization.serialized_objects import DagSerialization
    text = json.dumps(DagSerialization.to_dict(dag))
    assert json.dumps({"classpath": "operators.triggers.CheckpointLandingTrigger",
                       "kwargs": trigger.serialize()[1]}) in text
    # The hash the scheduler identifies a watcher's trigger by is stable across instances.
    assert BaseEventTrigger.hash(*trigger.serialize()) == \
        BaseEventTrigger.hash(*_trigger("s3://bucket/ckpts").serialize())


# ------------------------------------------------------------------------------------------
# landing rules (pure)
# ------------------------------------------------------------------------------------------
def test_landed_checkpoints_rules():
    from include.pipeline.landing import landed_checkpoints, pending_bundles

    listing = [
        ("a/weights.h5", "1"), ("a/checkpoint.json", "2"),            # landed checkpoint
        ("deep/x/y/weights.h5", "3"), ("deep/x/y/checkpoint.json", "4"),  # nested
        ("half/weights.h5", "5"), ("half/pipeline.config", "6"),     # half-written
        ("tf/pipeline.config", "7"), ("tf/tflite_graph.pb", "8"),     # bundle, no marker
        ("tfok/pipeline.config", "9"), ("tfok/tflite_graph.pb", "10"), ("tfok/_SUCCESS", "11"),
        ("onlymark/_SUCCESS", "12"),                                  # marker without files
        (".b.partial-123/checkpoint.json", "13"),                     # staging name
        ("c/.tmp/checkpoint.json", "14"), "dir-placeholder/",
    ]
    found = {l.key: (l.kind, l.marker, l.marker_tag) for l in landed_checkpoints(listing)}
    assert found == {"a": ("checkpoint", "a/checkpoint.json", "2"),
                     "deep/x/y": ("checkpoint", "deep/x/y/checkpoint.json", "4"),
                     "tfok": ("tfod", "tfok/_SUCCESS", "11")}
    assert pending_bundles(listing) == ["tf"]


def test_metadata_helpers():
    from include.errors import CheckpointError
    from include.pipeline.landing import checkpoint_metadata, tfod_metadata

    meta = checkpoint_metadata(json.dumps(_meta(qat=True)).encode(), "x")
    assert meta == {"variant": "edgetpu", "qat": True, "num_classes": 3, "input_size": 64,
                    "depth_multiplier": 0.25, "fingerprint": "ab" * 32,
                    "created": "2026-01-02T03:04:05Z"}
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint_metadata(b'{"variant": "edg', "s3://b/k/checkpoint.json")
    assert tfod_metadata(PIPELINE_CONFIG, "T") == {
        "variant": "edgetpu", "qat": True, "num_classes": 7, "input_size": 320,
        "depth_multiplier": 1.0, "fingerprint": None, "created": "T"}
    assert tfod_metadata("model { not closed", "T") == {}


# ------------------------------------------------------------------------------------------
# run(): local folder and S3
# ------------------------------------------------------------------------------------------
def test_half_written_then_marker_gives_one_event(writer):
    async def scenario(d):
        writer.put("edgetpu-float/weights.h5", b"w" * 100)
        writer.put("edgetpu-float/pipeline.config", b"cfg")
        await d.quiet(0.4)                                   # weights only: nothing
        writer.put("edgetpu-float/checkpoint.json", json.dumps(_meta()).encode())
        ev = await d.next()
        assert ev["checkpoint_uri"] == writer.uri_of("edgetpu-float")
        assert ev["kind"] == "checkpoint"
        assert ev["marker"] == writer.uri_of("edgetpu-float/checkpoint.json")
        assert ev["marker_etag_or_mtime"]
        assert ev["metadata"] == {"variant": "edgetpu", "qat": False, "num_classes": 3,
                                  "input_size": 64, "depth_multiplier": 0.25,
                                  "fingerprint": "ab" * 32, "created": "2026-01-02T03:04:05Z"}
        await d.quiet(0.4)                                   # the same checkpoint: not again
    drive(_trigger(writer.uri), scenario)


def test_two_at_once_give_two_events_and_each_once(writer):
    async def scenario(d):
        ev0 = await d.next()                                 # present at first listing
        assert ev0["checkpoint_uri"] == writer.uri_of("old")
        writer.put("runs/a/checkpoint.json", json.dumps(_meta(fp="a" * 64)).encode())
        writer.put("runs/b/checkpoint.json", json.dumps(_meta(fp="b" * 64, qat=True)).encode())
        got = [await d.next(), await d.next()]
        assert sorted(e["checkpoint_uri"] for e in got) == [writer.uri_of("runs/a"),
                                                           writer.uri_of("runs/b")]
        assert {e["metadata"]["fingerprint"][:1] for e in got} == {"a", "b"}
        await d.quiet(0.4)
        # written again in the same folder (a new marker): a new landing
        time.sleep(0.02)
        writer.put("runs/a/checkpoint.json", json.dumps(_meta(fp="c" * 64)).encode())
        ev = await d.next()
        assert ev["checkpoint_uri"] == writer.uri_of("runs/a")
        assert ev["metadata"]["fingerprint"] == "c" * 64

    writer.put("old/checkpoint.json", json.dumps(_meta()).encode())
    drive(_trigger(writer.uri), scenario)


def test_landings_in_one_poll_are_reported_spaced(writer):
    """Airflow 3.3 gives a run only the asset events up to when it queued the run: events of
    the same instant would start one run. The trigger spaces them by event_spacing."""
    async def scenario(d):
        writer.put("x/checkpoint.json", json.dumps(_meta(fp="d" * 64)).encode())
        writer.put("y/checkpoint.json", json.dumps(_meta(fp="e" * 64)).encode())
        await d.next()
        await d.next()
        # measured where the triggerer takes them: as the events come out of run()
        assert d.handed_over[1] - d.handed_over[0] >= 0.3, d.handed_over

    drive(_trigger(writer.uri, event_spacing=0.3), scenario)


def test_a_landing_a_poll_later_is_not_held_back_by_the_spacing(writer):
    """The spacing is counted from the previous event: a checkpoint seen at a later poll, when
    the spacing has already passed, is reported at that poll, not event_spacing after it."""
    async def scenario(d):
        writer.put("x/checkpoint.json", json.dumps(_meta(fp="d" * 64)).encode())
        await d.next()
        await asyncio.sleep(2.2)                 # more than the spacing: it has passed
        writer.put("y/checkpoint.json", json.dumps(_meta(fp="e" * 64)).encode())
        seen = time.monotonic()
        ev = await d.next()
        assert ev["checkpoint_uri"] == writer.uri_of("y")
        # at the next poll (0.1 s here) plus listing, well under the 2 s spacing
        assert time.monotonic() - seen < 1.5

    drive(_trigger(writer.uri, event_spacing=2.0, poll_interval=0.1), scenario)


# ------------------------------------------------------------------------------------------
# a local store: file notifications cut the poll short
# ------------------------------------------------------------------------------------------
def _counting(trigger):
    listings = []
    real = trigger._list

    async def counted(loc):
        listings.append(time.monotonic())
        return await real(loc)
    trigger._list = counted
    return listings


def test_a_local_landing_is_listed_at_once_not_at_the_next_poll(tmp_path):
    """A 30 s poll: the checkpoint renamed into place is reported within seconds, because the
    kernel's notification wakes the wait (fails with a plain sleep between listings)."""
    store = tmp_path / "store"
    (store / "old").mkdir(parents=True)
    (store / "old" / "checkpoint.json").write_text(json.dumps(_meta()))

    async def scenario(d):
        await d.next()                                  # the first listing is done
        staged = tmp_path / "staged"
        staged.mkdir()
        (staged / "checkpoint.json").write_text(json.dumps(_meta(fp="f" * 64)))
        os.rename(staged, store / "new")
        landed = time.monotonic()
        ev = await d.next(timeout=10)
        assert ev["checkpoint_uri"] == "file://" + str(store / "new")
        assert time.monotonic() - landed < 5.0

    drive(_trigger(str(store), poll_interval=30.0), scenario)


def test_an_idle_local_store_is_listed_once_per_poll_and_writes_are_rate_limited(tmp_path):
    """Reading the store (the pipeline downloads checkpoints from it) wakes nothing; a file
    being written for a second wakes at most one listing per MIN_LISTING_GAP_S."""
    from operators.triggers import MIN_LISTING_GAP_S

    store = tmp_path / "store"
    (store / "a").mkdir(parents=True)
    (store / "a" / "weights.h5").write_bytes(b"w" * 1000)
    trigger = _trigger(str(store), poll_interval=0.4)
    listings = _counting(trigger)

    async def scenario(d):
        await asyncio.sleep(0.3)
        start = len(listings)
        for _ in range(20):                             # reads for 1.2 s
            (store / "a" / "weights.h5").read_bytes()
            os.listdir(store / "a")
            await asyncio.sleep(0.06)
        assert len(listings) - start <= 4, listings     # 1.2 s / 0.4 s poll, plus one
        start = len(listings)
        with open(store / "a" / "part.partial", "wb") as fh:   # writes for 1.2 s
            for _ in range(40):
                fh.write(b"x" * 100)
                fh.flush()
                await asyncio.sleep(0.03)
        assert len(listings) - start <= 1.2 / MIN_LISTING_GAP_S + 2, listings
        await d.quiet(0.1)

    drive(trigger, scenario)


def test_without_notifications_the_poll_still_lists(tmp_path, monkeypatch, caplog):
    """Where notifications cannot be set up (no inotify, watch limit), one warning, then
    polling as before; notify=False asks for that."""
    import operators.triggers as triggers

    def broken(root):
        raise OSError(28, "inotify watch limit reached")
    monkeypatch.setattr(triggers, "FolderChanges", broken)
    store = tmp_path / "store"
    store.mkdir()

    async def scenario(d):
        await asyncio.sleep(0.2)
        (store / "x").mkdir()
        (store / "x" / "checkpoint.json").write_text(json.dumps(_meta()))
        ev = await d.next()
        assert ev["checkpoint_uri"] == "file://" + str(store / "x")

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        drive(_trigger(str(store), poll_interval=0.1), scenario)
    warnings = [r.getMessage() for r in caplog.records if "no file notifications" in
                r.getMessage()]
    assert len(warnings) == 1 and "watch limit" in warnings[0], warnings

    from include.store.uri import StoreURI
    off = _trigger(str(store), notify=False)
    assert off._folder_changes(StoreURI.parse(str(store))) is None


def test_report_existing_false_and_known(writer):
    writer.put("old/checkpoint.json", json.dumps(_meta()).encode())
    writer.put("skip/checkpoint.json", json.dumps(_meta()).encode())

    async def scenario(d):
        await d.quiet(0.4)                                   # existing ones are not reported
        writer.put("skip2/checkpoint.json", json.dumps(_meta()).encode())
        writer.put("new/checkpoint.json", json.dumps(_meta()).encode())
        ev = await d.next()
        assert ev["checkpoint_uri"] == writer.uri_of("new")
        await d.quiet(0.3)
    drive(_trigger(writer.uri, report_existing=False, known=[writer.uri_of("skip2")]),
          scenario)


def test_tfod_bundle_needs_success_marker(writer):
    async def scenario(d):
        writer.put("tfod/ssdlite_mobiledet_edgetpu/pipeline.config", PIPELINE_CONFIG.encode())
        writer.put("tfod/ssdlite_mobiledet_edgetpu/tflite_graph.pb", b"\x08" * 64)
        await d.quiet(0.4)                                   # both files, no _SUCCESS: waiting
        writer.put("tfod/ssdlite_mobiledet_edgetpu/_SUCCESS")
        ev = await d.next()
        assert ev["kind"] == "tfod"
        assert ev["checkpoint_uri"] == writer.uri_of("tfod/ssdlite_mobiledet_edgetpu")
        assert ev["marker"] == writer.uri_of("tfod/ssdlite_mobiledet_edgetpu/_SUCCESS")
        meta = ev["metadata"]
        assert (meta["variant"], meta["qat"], meta["num_classes"], meta["input_size"]) == \
            ("edgetpu", True, 7, 320)
        assert meta["created"]
        await d.quiet(0.3)
    drive(_trigger(writer.uri), scenario)


def test_unreadable_checkpoint_json_waits_then_fires(tmp_path, caplog):
    store = tmp_path / "store"
    (store / "a").mkdir(parents=True)
    (store / "a" / "checkpoint.json").write_text('{"variant": "edg')   # cp still copying

    async def scenario(d):
        await d.quiet(0.3)
        (store / "a" / "checkpoint.json").write_text(json.dumps(_meta()))
        ev = await d.next()
        assert ev["metadata"]["variant"] == "edgetpu"

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        drive(_trigger(str(store), error_interval=60), scenario)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "not valid JSON" in errors[0].getMessage()


# ------------------------------------------------------------------------------------------
# bad stores: one error per interval, no event, no exception
# ------------------------------------------------------------------------------------------
# Errors are reported once per error_interval (0.5 s), not once per poll (0.05 s). The window
# runs until two reports came (bounded: MAX_WAIT_S, a slow machine's listing can take seconds)
# and one more interval after, and the count must stay within one report per interval of it.
INTERVAL_S = 0.5
MAX_WAIT_S = 30.0


def _errors_over(trigger, seconds, caplog, *, want: int = 2) -> list[str]:
    """The ERROR records the trigger's logger emits while it polls: at least `seconds`, and
    until `want` came (at most MAX_WAIT_S). A handler on that logger itself: Airflow may
    reconfigure the root logger (dropping caplog's handler) the first time a test in the
    session touches its logging. Asserts the rate: at most one report per interval."""
    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.ERROR)
            self.messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    logger, collect = logging.getLogger(LOGGER), Collect()
    elapsed = {}

    async def scenario(d):
        started = time.monotonic()
        await d.quiet(seconds)
        deadline = started + MAX_WAIT_S
        while len(collect.messages) < want and time.monotonic() < deadline:
            await d.quiet(0.1)
        await d.quiet(INTERVAL_S)
        elapsed["s"] = time.monotonic() - started

    logger.addHandler(collect)
    try:
        drive(trigger, scenario)
    finally:
        logger.removeHandler(collect)
    limit = int(elapsed["s"] / INTERVAL_S) + 1
    assert len(collect.messages) <= limit, (limit, collect.messages)
    return collect.messages


def test_missing_folder_logs_once_per_interval(tmp_path, caplog):
    missing = tmp_path / "nope"
    errors = _errors_over(_trigger(str(missing), error_interval=0.5), 1.2, caplog)
    assert len(errors) >= 2, errors     # ~60 polls, one report per interval
    assert f"file://{missing}" in errors[0]
    assert "does not exist" in errors[0] and "Fix: create it" in errors[0]

    # the folder appears: the same trigger starts reporting, without a restart
    async def scenario(d):
        await d.quiet(0.2)
        (missing / "a").mkdir(parents=True)
        (missing / "a" / "checkpoint.json").write_text(json.dumps(_meta()))
        assert (await d.next())["checkpoint_uri"] == f"file://{missing}/a"
    drive(_trigger(str(missing), error_interval=60), scenario)


def test_missing_bucket_logs_once_per_interval(s3_server, caplog):
    errors = _errors_over(_trigger("s3://no-such-bucket-x/ckpts", error_interval=0.5),
                          1.2, caplog)
    assert len(errors) >= 2, errors
    assert "s3://no-such-bucket-x/ckpts" in errors[0]
    assert "bucket does not exist" in errors[0] and "Fix:" in errors[0]


def test_wrong_credentials_log_once_per_interval(s3_server, s3_bucket, caplog):
    import requests

    # moto checks credentials only when its authentication is switched on.
    requests.post(f"{s3_server}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    try:
        errors = _errors_over(_trigger(f"s3://{s3_bucket}/ckpts", error_interval=0.5),
                              1.2, caplog)
    finally:
        requests.post(f"{s3_server}/moto-api/reset-auth", data=b"inf", timeout=5)
    assert len(errors) >= 2, errors
    assert f"s3://{s3_bucket}/ckpts" in errors[0]
    assert "refused the credentials" in errors[0] and "AIRFLOW_CONN_AWS_DEFAULT" in errors[0]


def test_unreachable_endpoint_and_missing_connection(s3_server, caplog, monkeypatch):
    from s3server import connection_json, reset_airflow_fs_cache

    monkeypatch.setenv("AIRFLOW_CONN_DEAD_S3", connection_json("http://127.0.0.1:9"))
    reset_airflow_fs_cache()
    errors = _errors_over(_trigger("s3://b/ckpts", conn_id="dead_s3", error_interval=60),
                          4.0, caplog, want=1)          # botocore retries once: ~2 s a poll
    assert len(errors) == 1, errors
    assert "cannot be reached" in errors[0] and "endpoint_url" in errors[0]

    errors = _errors_over(_trigger("s3://b/ckpts", conn_id="not_defined_conn",
                                   error_interval=60), 0.5, caplog, want=1)
    assert len(errors) == 1, errors
    assert "'not_defined_conn'" in errors[0]


def test_unusable_store_uri_logs_and_keeps_running(caplog):
    errors = _errors_over(_trigger("ftp://host/ckpts", error_interval=60), 0.3, caplog,
                          want=1)
    assert len(errors) == 1 and "unsupported storage scheme 'ftp'" in errors[0], errors


# ------------------------------------------------------------------------------------------
# with the checkpoint ledger: landings recorded once, a restart re-reports nothing, a sweep
# ------------------------------------------------------------------------------------------
def test_with_a_ledger_a_restarted_watcher_reports_only_new_landings(tmp_path):
    """1,000 checkpoints already recorded in the ledger: a new trigger (a restarted
    triggerer) lists the store and the ledger's landings once, reports none of them, and
    reports a new landing at once (measured: what that costs is printed)."""
    from include.pipeline.landing import landing_tag, landed_checkpoints
    from include.store import ArtifactStore
    from include.store.ledger import Ledger

    ckpts, models = tmp_path / "ckpts", tmp_path / "models"
    n = 1000
    for i in range(n):
        (ckpts / f"c{i}").mkdir(parents=True)
        (ckpts / f"c{i}" / "checkpoint.json").write_text(json.dumps(_meta(fp=f"{i:064x}")))
    ledger = Ledger(ArtifactStore(str(models)), "mobiledet")
    store = ArtifactStore(str(ckpts))
    started = time.monotonic()
    for item in landed_checkpoints(store.list_entries("")):
        ledger.record_landing(uri=store.uri(item.key), tag=landing_tag(item), kind=item.kind,
                              fingerprint=str(int(item.key[1:])).zfill(64))
    print(f"\nrecording {n} landings took {time.monotonic() - started:.1f} s")

    async def scenario(d):
        await d.quiet(1.0)                       # the 1,000 are not reported again
        (ckpts / "new").mkdir()
        (ckpts / "new" / "checkpoint.json").write_text(json.dumps(_meta(fp="9" * 64)))
        landed = time.monotonic()
        ev = await d.next()
        assert ev["checkpoint_uri"] == "file://" + str(ckpts / "new") and ev["ledger_id"]
        print(f"new landing reported {time.monotonic() - landed:.2f} s after it landed")

    trigger = _trigger(str(ckpts), ledger_store_uri=str(models), sweep_interval=0)
    started = time.monotonic()
    drive(trigger, scenario)
    assert Ledger(ArtifactStore(str(models)), "mobiledet").get("9" * 64)["state"] == "landed"


def test_with_a_ledger_an_invalid_checkpoint_json_is_failed_and_not_an_event(tmp_path, caplog):
    from include.store import ArtifactStore
    from include.store.ledger import Ledger

    ckpts, models = tmp_path / "ckpts", tmp_path / "models"
    (ckpts / "bad").mkdir(parents=True)
    (ckpts / "bad" / "checkpoint.json").write_text(json.dumps(dict(_meta(), fingerprint=123)))

    async def scenario(d):
        await d.quiet(0.8)
        (ckpts / "good").mkdir()
        (ckpts / "good" / "checkpoint.json").write_text(json.dumps(_meta(fp="7" * 64)))
        assert (await d.next())["checkpoint_uri"].endswith("/good")

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        drive(_trigger(str(ckpts), ledger_store_uri=str(models), sweep_interval=0), scenario)
    [bad] = [r for r in Ledger(ArtifactStore(str(models)), "mobiledet").records()
             if r["state"] == "failed"]
    assert "fingerprint" in bad["reason"] and bad["id"].startswith("bad-")
    assert any("recorded failed in the ledger" in r.getMessage() for r in caplog.records)


def test_the_sweep_starts_a_run_for_work_no_run_took(tmp_path):
    """A landing whose event was dropped (or folded by the scheduler) is still `landed` in the
    ledger: the watcher's safety net emits an event for it; nothing claimable, no event."""
    from include.store import ArtifactStore
    from include.store.ledger import Ledger

    ckpts, models = tmp_path / "ckpts", tmp_path / "models"
    ckpts.mkdir()
    ledger = Ledger(ArtifactStore(str(models)), "mobiledet")

    async def scenario(d):
        await d.quiet(0.6)                       # nothing in the ledger: no sweep event
        ledger.record_landing(uri="s3://elsewhere/x", tag="t", kind="checkpoint",
                              fingerprint="5" * 64)
        ev = await d.next()
        assert ev["sweep"] and ev["claimable"] == ["5" * 64]
        ledger.claim("run-1")                    # a run took it: the sweep stays quiet
        await d.quiet(0.6)

    drive(_trigger(str(ckpts), ledger_store_uri=str(models), sweep_interval=0.2), scenario)


def test_the_same_bytes_landed_again_at_one_place_are_a_new_landing(s3_server, s3_bucket,
                                                                    tmp_path):
    """S3 keeps the ETag of an object written again with the same bytes: the running watcher
    still sees the folder copied again (the fix a failed checkpoint's error gives) as a new
    landing, recorded in the ledger, without a restart."""
    from include.store import ArtifactStore
    from include.store.ledger import Ledger

    writer = S3Writer(s3_server, s3_bucket)
    body = json.dumps(_meta(fp="5" * 64)).encode()
    models = tmp_path / "models"

    async def scenario(d):
        writer.put("a/checkpoint.json", body)
        first = await d.next()
        await asyncio.sleep(1.1)                 # S3's LastModified has 1 s resolution
        writer.put("a/checkpoint.json", body)    # the same bytes: the same ETag
        await d.quiet(1.5)                       # the same checkpoint: recorded, no new work
        record = Ledger(ArtifactStore(str(models)), "mobiledet").get("5" * 64)
        assert len(record["landings"]) == 2, record["landings"]
        assert first["ledger_id"] == record["id"]

    drive(_trigger(writer.uri, ledger_store_uri=str(models), sweep_interval=0), scenario)
