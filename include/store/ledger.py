"""The checkpoint ledger: one durable record per landed checkpoint, the record of work.

Airflow's asset events only wake the scheduler; what has to be converted, what is being
converted, and what came of it is written here, in the artifact store::

    ledger/MODEL/records/ID.json   the record (ID: the checkpoint's fingerprint)
    ledger/MODEL/open/ID           present while the record is not final (the work queue)
    ledger/MODEL/seen/LANDING      a landing the ledger holds (LANDING: hash of place + bytes)

A record's states::

    landed -> claimed -> converting -> published | rejected | failed
                 ^                                              |
                 +----- retryable failure, after its backoff ---+
                 +----- a new landing (other bytes) of a checkpoint that failed on its input

* **What was read is the identity.** A record is keyed by the checkpoint's fingerprint (its
  content hash, from checkpoint.json); every landing of it (a place and the marker's tag: S3
  ETag or local mtime) is listed under ``landings``. The same checkpoint landed under another
  path is the same work (converted once); a landing whose bytes did not verify is marked
  ``bad`` and the record ``failed``, and a later landing with other bytes (the error's own fix:
  "copy the checkpoint folder again") makes it work again. A checkpoint.json that cannot be read
  or validated gets a record of its own (``bad-<landing>``), failed with the reason.
* **Every transition is a conditional write** (`ArtifactStore.update_json`: S3 ``IfMatch`` /
  ``IfNoneMatch``, a local ``flock``), so two triggerers, two schedulers or a retried task can
  never both win a claim or both move a record.
* **Claims are leases.** A run claims up to a batch of claimable records (landed; failed and
  retryable with the backoff passed; claimed or converting by a run whose lease expired), and
  only the claiming run moves a record on. A run that dies leaves a record that the next run
  claims once the lease is over; after `max_attempts` it is failed for good, saying why.
* **The open markers are the queue**: a plan lists ``open/`` (small) instead of reading every
  record, and the landing watcher lists ``seen/`` once at start instead of re-reporting what is
  already recorded. A marker without its record, or a record whose marker is missing, is
  repaired by the next claim or by :func:`repair`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
from typing import Any, Callable

from include.errors import StoreError
from include.store import layout
from include.store.store import ArtifactStore

SCHEMA = "mobiledet.ledger/1"
STATES = ("landed", "claimed", "converting", "published", "rejected", "failed")
FINAL = ("published", "rejected")
HISTORY = 50                 # transitions kept per record (the newest)
DEFAULTS = {"batch_size": 8, "max_attempts": 3, "lease_s": 3600.0, "backoff_s": 60.0,
            "max_backoff_s": 3600.0}
#: an open marker with no record, older than this, belongs to a watcher that died mid-way
ORPHAN_MARKER_S = 600.0


def now_utc() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def iso(when: _dt.datetime) -> str:
    return when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    return _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def landing_id(uri: str, tag: str) -> str:
    """The identity of one landing: where, and which bytes (the marker's ETag or mtime)."""
    return hashlib.sha256(f"{uri}\n{tag}".encode()).hexdigest()[:40]


def record_id_of(fingerprint: str | None, landing: str, kind: str = "checkpoint") -> str:
    """A record's id: the checkpoint's fingerprint; for a TFOD bundle (whose header names no
    fingerprint) tfod-<landing>; bad-<landing> for a checkpoint whose header is unreadable."""
    text = str(fingerprint or "").strip().lower().rpartition(":")[2]
    if text and all(c in "0123456789abcdef" for c in text):
        return text[:64]
    return f"{'tfod' if kind == 'tfod' else 'bad'}-{landing}"


def is_open(record: dict | None) -> bool:
    """Whether a record still needs work (or may: a retryable failure)."""
    if not record:
        return False
    state = record.get("state")
    return state in ("landed", "claimed", "converting") or (
        state == "failed" and bool(record.get("retryable")))


def _event(record: dict, state: str, when: _dt.datetime, **extra) -> dict:
    entry = {"state": state, "at": iso(when), **{k: v for k, v in extra.items() if v is not None}}
    record["history"] = (list(record.get("history") or []) + [entry])[-HISTORY:]
    record["state"] = state
    record["updated"] = iso(when)
    return record


class Ledger:
    """The ledger of one model in one artifact store."""

    def __init__(self, store: ArtifactStore, model: str, *,
                 clock: Callable[[], _dt.datetime] = now_utc, **settings):
        self.store = store
        self.model = layout.check_name(model, "model name")
        self.clock = clock
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown ledger settings {sorted(unknown)}")
        self.settings = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}

    # -- keys -----------------------------------------------------------------------------
    def record_key(self, record_id: str) -> str:
        return layout.ledger_record_key(self.model, record_id)

    def _open_key(self, record_id: str) -> str:
        return layout.ledger_open_key(self.model, record_id)

    def _seen_key(self, landing: str) -> str:
        return layout.ledger_seen_key(self.model, landing)

    # -- reading --------------------------------------------------------------------------
    def get(self, record_id: str) -> dict | None:
        return self.store.read_json_if_any(self.record_key(record_id))

    def records(self) -> list[dict]:
        """Every record (one read each: for people and retention, not the hot path)."""
        out = []
        for key in self.store.list(layout.ledger_prefix(self.model, "records")):
            if key.endswith(".json"):
                try:
                    out.append(self.store.read_json(key))
                except StoreError:
                    continue
        return out

    def open_ids(self) -> list[str]:
        return [k.rpartition("/")[2] for k in self.store.list(
            layout.ledger_prefix(self.model, "open"))]

    def seen(self) -> set[str]:
        """The landings already recorded (one listing)."""
        return {k.rpartition("/")[2] for k in self.store.list(
            layout.ledger_prefix(self.model, "seen"))}

    def find(self, uri_or_fingerprint: str) -> dict | None:
        """The record of a fingerprint, or of the newest landing at a URI."""
        text = str(uri_or_fingerprint).strip()
        direct = self.get(record_id_of(text, "")) if "://" not in text and "/" not in text \
            else None
        if direct:
            return direct
        want = text.rstrip("/")
        hits = [r for r in self.records()
                if any(str(l.get("uri", "")).rstrip("/") == want
                       for l in r.get("landings") or [])]
        return max(hits, key=lambda r: r.get("updated") or "") if hits else None

    # -- the watcher's side ---------------------------------------------------------------
    def record_landing(self, *, uri: str, tag: str, kind: str, marker: str | None = None,
                       metadata: dict | None = None, fingerprint: str | None = None,
                       created: str | None = None, invalid: str | None = None
                       ) -> tuple[dict, bool]:
        """Record one landing; returns (the record, whether it is new work to convert).

        `invalid`: why the checkpoint's header could not be read or validated (the record is
        failed with that reason, not retried until other bytes land)."""
        when = self.clock()
        lid = landing_id(uri, tag)
        rid = record_id_of(None if invalid else fingerprint, lid, "bad" if invalid else kind)
        landing = {"id": lid, "uri": uri, "tag": tag, "marker": marker, "kind": kind,
                   "seen_at": iso(when)}
        new_work = []

        def change(current):
            new_work.clear()
            if current is None:
                record = {"schema": SCHEMA, "id": rid, "model": self.model,
                          "fingerprint": None if invalid else fingerprint, "uri": uri,
                          "kind": kind, "metadata": dict(metadata or {}), "created": created,
                          "landings": [landing], "attempts": 0, "run_id": None,
                          "landed_at": iso(when), "reason": None, "retryable": False,
                          "version": None}
                if invalid:
                    record["reason"] = invalid
                    return _event(record, "failed", when, reason=invalid)
                new_work.append(True)
                return _event(record, "landed", when, uri=uri)
            record = dict(current)
            if any(l.get("id") == lid for l in record.get("landings") or []):
                return None   # this landing is recorded already
            record["landings"] = list(record.get("landings") or []) + [landing]
            if record.get("state") == "failed" and not record.get("retryable") and not invalid:
                # failed on its input: other bytes landed, so it is work again
                record.update(uri=uri, kind=kind, attempts=0, run_id=None, reason=None,
                              metadata=dict(metadata or record.get("metadata") or {}))
                new_work.append(True)
                return _event(record, "landed", when, uri=uri,
                              note="landed again after failing on its input")
            return record

        self._put_open(rid)   # before the record: a crash in between leaves an orphan marker
        record = self.store.update_json(self.record_key(rid), change, sort_keys=False)
        if not is_open(record):
            self._drop_open(rid)
        self.store.put_bytes(b"", self._seen_key(lid))
        return record, bool(new_work)

    # -- the runs' side -------------------------------------------------------------------
    def claim(self, run_id: str, limit: int | None = None) -> list[dict]:
        """Claim up to `limit` (default batch_size) claimable records for `run_id`, oldest
        landing first; each claim is one conditional write that only one run can win."""
        limit = int(limit or self.settings["batch_size"])
        claimed = []
        candidates = []
        for rid in self.open_ids():
            record = self.get(rid)
            if record is None:
                self._drop_orphan_marker(rid)
                continue
            if not is_open(record):
                self._drop_open(rid)
                continue
            candidates.append(record)
        candidates.sort(key=lambda r: (r.get("landed_at") or "", r["id"]))
        for record in candidates:   # a retry of the claiming run finds its own claims
            if record.get("run_id") == run_id and record.get("state") in ("claimed",
                                                                          "converting"):
                claimed.append(record)
        for record in candidates:
            if len(claimed) >= limit:
                break
            if record in claimed:
                continue
            got = self._try_claim(record["id"], run_id)
            if got is not None:
                claimed.append(got)
        return claimed

    def claimable(self, record: dict, when: _dt.datetime | None = None) -> bool:
        when = when or self.clock()
        state = record.get("state")
        if state == "landed":
            return True
        if state == "failed" and record.get("retryable"):
            due = _parse(record.get("next_attempt_at"))
            return due is None or due <= when
        if state in ("claimed", "converting"):
            lease = _parse(record.get("lease_until"))
            return lease is not None and lease <= when
        return False

    def _try_claim(self, rid: str, run_id: str) -> dict | None:
        when = self.clock()
        won = []

        def change(current):
            won.clear()
            if current is None or not self.claimable(current, when):
                return None
            record = dict(current)
            attempts = int(record.get("attempts") or 0)
            if attempts >= int(self.settings["max_attempts"]):
                why = (f"gave up after {attempts} attempt(s); the last: "
                       f"{record.get('reason') or 'its run did not finish (lease expired)'}")
                record.update(retryable=False, reason=why, run_id=None, lease_until=None)
                return _event(record, "failed", when, reason=why)
            lease = when + _dt.timedelta(seconds=float(self.settings["lease_s"]))
            record.update(attempts=attempts + 1, run_id=run_id, lease_until=iso(lease),
                          next_attempt_at=None)
            won.append(True)
            return _event(record, "claimed", when, run_id=run_id)

        record = self.store.update_json(self.record_key(rid), change, sort_keys=False)
        if record is not None and not is_open(record):
            self._drop_open(rid)
        return record if won else None

    def mark(self, record_id: str, run_id: str, state: str, *, reason: str | None = None,
             retryable: bool = False, version: str | None = None, uri: str | None = None,
             bad_landing: bool = False) -> dict | None:
        """Move a record the run holds to `state`; a record another run holds now (its lease
        passed and it was claimed again) is left as it is. Returns the record as stored."""
        if state not in STATES:
            raise ValueError(f"unknown ledger state {state!r}")
        when = self.clock()

        def change(current):
            if current is None or current.get("run_id") != run_id or \
                    current.get("state") in FINAL:
                return None
            record = dict(current)
            record.update(reason=reason, version=version or record.get("version"))
            if state in ("claimed", "converting"):
                lease = when + _dt.timedelta(seconds=float(self.settings["lease_s"]))
                record["lease_until"] = iso(lease)
            else:
                record["lease_until"] = None
            if state == "failed":
                record["retryable"] = bool(retryable)
                if retryable:
                    n = max(1, int(record.get("attempts") or 1))
                    wait = min(float(self.settings["backoff_s"]) * 2 ** (n - 1),
                               float(self.settings["max_backoff_s"]))
                    record["next_attempt_at"] = iso(when + _dt.timedelta(seconds=wait))
                if bad_landing:
                    bad = uri or record.get("uri")
                    record["landings"] = [dict(l, bad=reason) if l.get("uri") == bad else l
                                          for l in record.get("landings") or []]
            else:
                record["retryable"] = False
            if state in FINAL:
                record["run_id"] = run_id
            return _event(record, state, when, run_id=run_id, reason=reason, version=version)

        record = self.store.update_json(self.record_key(record_id), change, sort_keys=False)
        if record is not None and not is_open(record):
            self._drop_open(record_id)
        return record

    def retry(self, uri_or_fingerprint: str, *, who: str | None = None) -> dict:
        """Put a record back to work by hand (whatever its state, attempts from zero)."""
        found = self.find(uri_or_fingerprint)
        if found is None:
            raise StoreError(f"the ledger of {self.model!r} has no checkpoint "
                             f"{uri_or_fingerprint!r}.", where=self.store.uri(
                                 layout.ledger_prefix(self.model, "records")),
                             fix="pass a fingerprint or URI that `mobiledet checkpoints` lists.")
        when = self.clock()

        def change(current):
            record = dict(current)
            record.update(attempts=0, run_id=None, reason=None, retryable=False,
                          lease_until=None, next_attempt_at=None)
            record["landings"] = [{k: v for k, v in l.items() if k != "bad"}
                                  for l in record.get("landings") or []]
            return _event(record, "landed", when, note="retry by hand", who=who)

        self._put_open(found["id"])
        return self.store.update_json(self.record_key(found["id"]), change, sort_keys=False)

    # -- the queue markers ------------------------------------------------------------------
    def _put_open(self, rid: str) -> None:
        self.store.put_bytes(b"", self._open_key(rid))

    def _drop_open(self, rid: str) -> None:
        try:
            self.store.delete(self._open_key(rid))
        except StoreError:
            pass   # the next claim drops it

    def _drop_orphan_marker(self, rid: str) -> None:
        try:
            age = self.clock().timestamp() - self.store.modified(self._open_key(rid))
        except StoreError:
            return
        if age > ORPHAN_MARKER_S:
            self._drop_open(rid)

    def repair(self) -> dict:
        """Open markers for every open record that lost its marker (a crash between the two
        writes); returns what was repaired. The housekeeping DAG runs it."""
        markers = set(self.open_ids())
        added = []
        for record in self.records():
            if is_open(record) and record["id"] not in markers:
                self._put_open(record["id"])
                added.append(record["id"])
        return {"open_markers_added": added}


def summary(record: dict) -> dict:
    """What `mobiledet checkpoints --json` prints of a record."""
    return {"id": record.get("id"), "uri": record.get("uri"),
            "fingerprint": record.get("fingerprint"), "state": record.get("state"),
            "attempts": record.get("attempts"), "run_id": record.get("run_id"),
            "reason": record.get("reason"), "version": record.get("version"),
            "updated": record.get("updated"), "retryable": record.get("retryable"),
            "landings": len(record.get("landings") or [])}


def stuck(record: dict, when: _dt.datetime | None = None) -> bool:
    """A record held by a run whose lease has passed."""
    lease = _parse(record.get("lease_until"))
    return record.get("state") in ("claimed", "converting") and lease is not None and \
        lease <= (when or now_utc())


def order_for_people(records: list[dict], when: _dt.datetime | None = None) -> list[dict]:
    """Failed first, then stuck, then open work, then the rest; newest first in each."""
    def rank(r: dict) -> int:
        if r.get("state") == "failed":
            return 0
        if stuck(r, when):
            return 1
        return 2 if is_open(r) else 3
    return sorted(sorted(records, key=lambda r: r.get("updated") or "", reverse=True), key=rank)


def as_json(records: list[dict]) -> list[Any]:
    return [summary(r) for r in records]
