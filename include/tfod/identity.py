"""The identity of one TFOD training step: a fingerprint of what was read, and a time.

    fingerprint = sha256 over "tfod-step/1", the step number, sha256(the .index file) and
                  sha256(pipeline.config). The index records every tensor's offset, length and
                  CRC32C, so it stands for the data files too.
    created     = the newest modification time of the step's index and data files, UTC,
                  seconds ("2026-01-01T12:00:00Z", the form checkpoint.json uses).
"""
from __future__ import annotations

import datetime as _dt
import hashlib

FINGERPRINT_FORMAT = "tfod-step/1"


def step_fingerprint(step: int, index_bytes: bytes, config_bytes: bytes) -> str:
    h = hashlib.sha256()
    h.update(f"{FINGERPRINT_FORMAT}\n{int(step)}\n".encode())
    h.update(hashlib.sha256(index_bytes).hexdigest().encode() + b"\n")
    h.update(hashlib.sha256(config_bytes).hexdigest().encode() + b"\n")
    return h.hexdigest()


def iso_utc(mtime) -> str | None:
    """epoch seconds, a datetime or an ISO string -> "YYYY-MM-DDTHH:MM:SSZ" (None stays None)."""
    if mtime is None:
        return None
    if isinstance(mtime, str):
        text = mtime.strip().replace("Z", "+00:00")
        ts = _dt.datetime.fromisoformat(text)
    elif isinstance(mtime, _dt.datetime):
        ts = mtime
    else:
        ts = _dt.datetime.fromtimestamp(float(mtime), tz=_dt.timezone.utc)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=_dt.timezone.utc)
    return ts.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
