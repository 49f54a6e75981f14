"""Triggers for event-driven DAGs: `CheckpointLandingTrigger` watches a checkpoint store.

Use it through an AssetWatcher so that every newly landed checkpoint becomes an asset event::

    from airflow.sdk import Asset, AssetWatcher
    from operators.triggers import CheckpointLandingTrigger

    checkpoints = Asset("mobiledet_checkpoints", uri="s3://bucket/ckpts", watchers=[
        AssetWatcher(name="checkpoint_landing",
                     trigger=CheckpointLandingTrigger(store_uri="s3://bucket/ckpts"))])
    with DAG("mobiledet_convert", schedule=[checkpoints], ...): ...

The triggerer runs `run()`; each yielded TriggerEvent becomes one AssetEvent of the watched
asset whose ``extra`` is ``{"from_trigger": True, "payload": <the event payload>}``
(`airflow.models.trigger.Trigger.submit_event`). A run started by it reads the checkpoint with
``triggering_asset_events[asset][-1].extra["payload"]["checkpoint_uri"]``.

What counts as landed (checkpoint.json, a TFOD bundle with its ``_SUCCESS`` marker, a complete
step of a TFOD training folder) is defined in `include.pipeline.landing`; this module only
lists, waits and de-duplicates. A training folder's steps are reported one landing per step
(``checkpoint_uri`` = ``folder/model.ckpt-N``, kind ``"tfod-training"``); its small files (the
state file, pipeline.config, each step's index) are read once per version.

**With a ledger (``ledger_store_uri``; what the pipeline's DAG passes) each landing is
reported once, across restarts.** A landing (the place and the marker's ETag or mtime) is
first recorded in the checkpoint ledger (`include.store.ledger`, in the artifact store) by a
conditional write; only a landing the ledger did not hold yet becomes an event, with the
record's id (``ledger_id``). At start the trigger reads the ledger's list of landings once
(``seen/``, small), so a restarted triggerer reports nothing it already recorded, and two
triggerers never both win a record. The event only wakes the scheduler: the DAG's first task
claims its work from the ledger (a batch of claimable records, leased), so a folded, dropped or
duplicated event strands nothing, and every ``sweep_interval`` seconds the trigger also emits a
``{"sweep": true}`` event when the ledger holds claimable work (the safety net).

Without a ledger it keeps the landings it reported in memory: a checkpoint already in the store
when the trigger first lists it is reported once (``report_existing=True``, the default), so
a restart re-reports what is there. Pass ``report_existing=False`` to report only what lands
after the first listing, and ``known`` to skip named checkpoints. A checkpoint rewritten in the
same folder (new marker) is a new landing.

**A local store wakes the poll early.** Between listings of a local folder the trigger waits on
the kernel's file notifications (inotify, through watchfiles' RustNotify) as well as the poll
interval: a checkpoint renamed into place is listed within about a tenth of a second instead of
up to ``poll_interval`` later. Where notifications are not delivered (a network file system
written from another host) or cannot be set up (inotify watch limit), the poll interval still
lists the store; ``notify=False`` turns it off. S3 stores are polled.

Landings may be spaced ``event_spacing`` seconds apart (default 0: with the ledger a run claims
every claimable checkpoint, whatever events started it, so spacing buys nothing; it mattered
when each run converted only the checkpoints its own events named).

Keep the constructor arguments constant in the DAG file: the triggerer identifies a watcher's
trigger by its serialized arguments, so arguments that change at each parse restart it.

A store that cannot be listed (missing folder, missing bucket, wrong credentials, endpoint
down) is logged as ONE error per ``error_interval`` seconds naming the URI, the problem and the
fix; the trigger keeps polling and emits no event, so a fixed store starts working without a
restart.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from include.errors import MobiledetError, StoreError
from include.pipeline import landing
from include.store.aio import AsyncArtifactStore
from include.store.uri import StoreURI

CLASSPATH = "operators.triggers.CheckpointLandingTrigger"
# stdlib logging: Airflow renders it like its own loggers (in the triggerer too), and tests
# can read it with caplog.
log = logging.getLogger(__name__)


class CheckpointLandingTrigger(BaseEventTrigger):
    """Yield one TriggerEvent per checkpoint that lands in a checkpoint store.

    :param store_uri: the checkpoint store: a local folder (path or file:///...) or
        s3://bucket/prefix. Checkpoints are its sub-folders, at any depth.
    :param conn_id: Airflow AWS connection for s3:// stores (None: boto3's default chain).
    :param poll_interval: seconds between listings.
    :param error_interval: at most one error log line per this many seconds while the store
        cannot be listed.
    :param known: checkpoints (URIs, or folder keys relative to the store) never to report.
    :param report_existing: report checkpoints already present at the first listing (default);
        False reports only later landings.
    :param notify: for a local store, also list as soon as the kernel reports a change under
        it (default); the poll interval stays the upper bound.

    Event payload: ``{"checkpoint_uri", "kind" ("checkpoint" | "tfod"), "marker" (URI of
    checkpoint.json or _SUCCESS), "marker_etag_or_mtime", "metadata": {variant, qat,
    num_classes, input_size, depth_multiplier, fingerprint, created}}`` (metadata may be {} for
    a TFOD bundle whose pipeline.config is not readable).
    """

    def __init__(self, store_uri: str, conn_id: str | None = "aws_default",
                 poll_interval: float = 10.0, error_interval: float = 60.0,
                 known: list[str] | None = None, report_existing: bool = True,
                 event_spacing: float = 0.0, notify: bool = True,
                 ledger_store_uri: str | None = None, ledger_conn_id: str | None = "aws_default",
                 model_name: str = "mobiledet", sweep_interval: float = 600.0):
        super().__init__()
        self.store_uri = store_uri
        self.conn_id = conn_id
        self.poll_interval = float(poll_interval)
        self.error_interval = float(error_interval)
        self.known = list(known) if known else None
        self.report_existing = bool(report_existing)
        self.event_spacing = float(event_spacing)
        self.notify = bool(notify)
        self.ledger_store_uri = ledger_store_uri
        self.ledger_conn_id = ledger_conn_id
        self.model_name = model_name
        self.sweep_interval = float(sweep_interval)
        self._ledger: AsyncArtifactStore | None = None
        self._recorded: set[str] | None = None   # landing ids the ledger held at the start
        self._last_sweep = time.monotonic()
        self._changes: FolderChanges | None = None
        self._notify_failed = False
        self._seen: set[tuple[str, str]] = set()
        self._listed_once = False
        self._last_fired: float | None = None   # monotonic time of the last event
        self._last_error_at: float | None = None
        self._failing = False
        self._store: AsyncArtifactStore | None = None
        self._small_files: dict[tuple[str, str], bytes] = {}   # (key, tag) -> bytes

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (CLASSPATH, {
            "store_uri": self.store_uri,
            "conn_id": self.conn_id,
            "poll_interval": self.poll_interval,
            "error_interval": self.error_interval,
            "known": self.known,
            "report_existing": self.report_existing,
            "event_spacing": self.event_spacing,
            "notify": self.notify,
            "ledger_store_uri": self.ledger_store_uri,
            "ledger_conn_id": self.ledger_conn_id,
            "model_name": self.model_name,
            "sweep_interval": self.sweep_interval,
        })

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> AsyncIterator[TriggerEvent]:
        bad = None
        try:
            loc = StoreURI.parse(self.store_uri)
        except StoreError as exc:
            loc, bad = None, exc
        known = self._known_keys(loc) if loc else set()
        try:
            async for event in self._poll(loc, bad if loc is None else None, known):
                yield event
        finally:
            self._close_changes()

    async def _poll(self, loc, bad, known) -> AsyncIterator[TriggerEvent]:
        while True:
            if loc is None:
                self._error(bad)
                await asyncio.sleep(self.poll_interval)
                continue
            try:
                entries = await self._list(loc)
            except StoreError as exc:
                self._error(exc)
                await asyncio.sleep(self.poll_interval)
                continue
            self._recovered(loc)
            found = landing.landed_checkpoints(entries) + await self._steps(loc, entries)
            first = not self._listed_once
            self._listed_once = True
            for item in found:
                if item.identity in self._seen:
                    continue
                if item.key in known or (first and not self.report_existing):
                    self._seen.add(item.identity)
                    continue
                try:
                    payload = await self._landing(loc, item)
                except MobiledetError as exc:    # not readable yet, or the ledger's store
                    self._error(exc, store=False)
                    continue
                self._seen.add(item.identity)    # consumed before yielding: never fires twice
                if payload is None:              # known to the ledger, or nothing to convert
                    continue
                if self._last_fired is not None and self.event_spacing > 0:
                    wait = self._last_fired + self.event_spacing - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                log.info("checkpoint landed: %s (%s)", payload["checkpoint_uri"], item.kind)
                yield TriggerEvent(payload)
                self._last_fired = time.monotonic()   # spacing counts from the hand-over
            # forget landings that are gone, so the set stays as small as the store
            current = {item.identity for item in found}
            self._seen &= current
            sweep = await self._sweep()
            if sweep is not None:
                yield TriggerEvent(sweep)
            await self._until_next_listing(loc)

    # -- the ledger ---------------------------------------------------------------------------
    async def _landing(self, loc: StoreURI, item: landing.Landed) -> dict | None:
        """The event payload of a landing, or None when there is nothing to convert. With a
        ledger the landing is recorded first (once: the ledger's own list of landings is
        read at start, so a restarted triggerer re-reports nothing), and only new work is
        an event."""
        if not self.ledger_store_uri:
            return landing.event_payload(loc, item, await self._metadata(loc, item))
        from include.store.ledger import Ledger, landing_id

        uri = loc.join(item.key).uri
        tag = landing.landing_tag(item)
        if self._recorded is None:
            self._recorded = await self._ledger_call(lambda ledger: ledger.seen())
        if landing_id(uri, tag) in self._recorded:
            return None
        invalid, metadata = None, {}
        try:
            metadata = await self._metadata(loc, item)
        except StoreError:
            raise                               # the store, not the checkpoint: next poll
        except MobiledetError as exc:           # an unreadable or invalid checkpoint.json
            invalid = str(exc)

        def record(ledger: Ledger):
            return ledger.record_landing(
                uri=uri, tag=tag, kind=item.kind, marker=loc.join(item.marker).uri,
                metadata=metadata, fingerprint=metadata.get("fingerprint"),
                created=metadata.get("created"), invalid=invalid)
        found, new = await self._ledger_call(record)
        if invalid:
            log.error("checkpoint landing watcher: %s is recorded failed in the ledger: %s",
                      uri, invalid)
        if not new:
            return None
        return dict(landing.event_payload(loc, item, metadata), ledger_id=found["id"])

    async def _ledger_call(self, work):
        from include.store.ledger import Ledger

        if self._ledger is None:
            self._ledger = AsyncArtifactStore(self.ledger_store_uri, conn_id=self.ledger_conn_id)
        return await self._ledger.run(lambda store: work(Ledger(store, self.model_name)))

    async def _sweep(self) -> dict | None:
        """The safety net: every `sweep_interval` seconds, an event when the ledger holds work
        no run is doing (a landing no run claimed, a retry whose backoff passed, a claim whose
        run's lease expired), so a dropped or folded event strands nothing."""
        if not self.ledger_store_uri or self.sweep_interval <= 0 or \
                time.monotonic() - self._last_sweep < self.sweep_interval:
            return None
        self._last_sweep = time.monotonic()

        def claimable(ledger) -> list[str]:
            out = []
            for rid in ledger.open_ids():
                record = ledger.get(rid)
                if record and ledger.claimable(record):
                    out.append(rid)
            return out
        try:
            ids = await self._ledger_call(claimable)
        except MobiledetError as exc:
            self._error(exc, store=False)
            return None
        if not ids:
            return None
        log.info("checkpoint ledger: %d checkpoint(s) wait for a run; starting one", len(ids))
        return {"sweep": True, "claimable": ids[:50]}

    # -- waiting between listings ----------------------------------------------------------
    async def _until_next_listing(self, loc: StoreURI) -> None:
        """The poll interval, cut short by a change under a local store (at most one listing
        per MIN_LISTING_GAP_S while files are being written)."""
        started = time.monotonic()
        changes = self._folder_changes(loc)
        if changes is None:
            await asyncio.sleep(self.poll_interval)
            return
        try:
            await changes.wait(self.poll_interval)
        except OSError as exc:   # the watch broke (folder removed): poll from here on
            log.warning("checkpoint landing watcher: file notifications for %s stopped (%s); "
                        "polling every %.0f s", loc.uri, exc, self.poll_interval)
            self._close_changes()
            self._notify_failed = True
            await asyncio.sleep(max(0.0, self.poll_interval - (time.monotonic() - started)))
            return
        rest = MIN_LISTING_GAP_S - (time.monotonic() - started)
        if rest > 0:
            await asyncio.sleep(rest)

    def _folder_changes(self, loc: StoreURI) -> "FolderChanges | None":
        if not self.notify or self._notify_failed or not loc.local:
            return None
        if self._changes is None:
            try:
                self._changes = FolderChanges(loc.path)
            except Exception as exc:  # noqa: BLE001 - no inotify, watch limit, folder missing
                log.warning("checkpoint landing watcher: no file notifications for %s (%s); "
                            "polling every %.0f s", loc.uri, exc, self.poll_interval)
                self._notify_failed = True
                return None
        return self._changes

    def _close_changes(self) -> None:
        changes, self._changes = self._changes, None
        if changes is not None:
            changes.close()

    # -- helpers ----------------------------------------------------------------------------
    def _known_keys(self, loc: StoreURI) -> set[str]:
        keys = set()
        base = loc.uri.rstrip("/") + "/"
        for item in self.known or []:
            text = str(item)
            if text.startswith(base):
                text = text[len(base):]
            elif loc.local and text.startswith(loc.path.rstrip("/") + "/"):
                text = text[len(loc.path.rstrip("/")) + 1:]
            keys.add(text.strip("/"))
        return keys

    def _error(self, exc: Exception, *, store: bool = True) -> None:
        self._failing = self._failing or store
        now = time.monotonic()
        if self._last_error_at is None or now - self._last_error_at >= self.error_interval:
            self._last_error_at = now
            log.error("checkpoint landing watcher: %s (next report in %.0f s; polling "
                           "continues)", exc, self.error_interval)

    def _recovered(self, loc: StoreURI) -> None:
        if self._failing:
            self._failing = False
            log.info("checkpoint store %s can be listed again", loc.uri)

    def _opened(self, loc: StoreURI) -> AsyncArtifactStore:
        if self._store is None:
            self._store = AsyncArtifactStore(loc.uri, conn_id=loc.conn_id or self.conn_id)
        return self._store

    async def _list(self, loc: StoreURI) -> list:
        if loc.local:
            await asyncio.to_thread(landing.check_local_store, loc)
        return await self._opened(loc).list_entries("")

    async def _read(self, loc: StoreURI, key: str) -> bytes:
        return await self._opened(loc).get_bytes(key)

    async def _steps(self, loc: StoreURI, entries: list) -> list:
        """The landed steps of the TFOD training folders in the listing. Small files are read
        once per version (key, tag): a step's index is read when it lands, the state file and
        pipeline.config again only when they change."""
        from include.tfod.training import training_folders

        if not training_folders(entries):
            self._small_files = {}
            return []
        tags = {e.key: e.tag for e in entries}
        cache = {k: v for k, v in self._small_files.items() if tags.get(k[0]) == k[1]}

        def find(store):
            def read(key):
                version = (key, tags.get(key))
                if version not in cache:
                    cache[version] = store.get_bytes(key)
                return cache[version]
            return landing.landed_steps(entries, read)
        try:
            return await self._opened(loc).run(find)
        finally:
            self._small_files = cache

    async def _metadata(self, loc: StoreURI, item: landing.Landed) -> dict:
        if item.kind == "tfod-training":
            folder = item.key.rpartition("/")[0]
            config_key = f"{folder}/pipeline.config" if folder else "pipeline.config"
            cached = [v for (k, _), v in self._small_files.items() if k == config_key]
            data = cached[0] if cached else await self._read(loc, config_key)
            meta = landing.tfod_metadata(data.decode("utf-8", errors="replace"), item.modified)
            return dict(meta, fingerprint=item.marker_tag, created=item.modified)
        if item.kind == "checkpoint":
            data = await self._read(loc, item.marker)
            return landing.checkpoint_metadata(data, loc.join(item.marker).uri)
        config_key = f"{item.key}/pipeline.config" if item.key else "pipeline.config"
        try:
            text = (await self._read(loc, config_key)).decode("utf-8", errors="replace")
        except StoreError:
            return {}
        return landing.tfod_metadata(text, item.modified)


#: while files are being written under a local store, list it at most this often
MIN_LISTING_GAP_S = 0.5
#: changes closer together than this are taken as one (a checkpoint renamed into place is one)
DEBOUNCE_MS = 100
STEP_MS = 50


class FolderChanges:
    """Kernel notifications (inotify on Linux) of changes anywhere under a local folder.

    watchfiles' RustNotify records changes in its own thread from the moment it is made, so a
    change that comes while the store is being listed is not lost: the next `wait` returns at
    once. `wait` blocks a worker thread, never the triggerer's event loop."""

    def __init__(self, root: str):
        import threading

        from watchfiles._rust_notify import RustNotify

        # (paths, debug, force_polling, poll_delay_ms, recursive, ignore_permission_denied)
        self._notify = RustNotify([str(root)], False, False, 300, True, True)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False

    async def wait(self, timeout_s: float) -> None:
        """Until something changed under the folder, or `timeout_s` passed."""
        await asyncio.to_thread(self._watch, max(1, int(timeout_s * 1000)))

    def _watch(self, timeout_ms: int):
        with self._lock:
            if self._closed:
                return "stop"
            self._busy = True
        try:
            return self._notify.watch(DEBOUNCE_MS, STEP_MS, timeout_ms, self._stop)
        finally:
            with self._lock:
                self._busy = False
                if self._closed:
                    self._notify.close()

    def close(self) -> None:
        """Stop watching; a `wait` in progress returns within STEP_MS."""
        self._stop.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._busy:
                self._notify.close()
