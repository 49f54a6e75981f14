"""`checkpoint.json` validated: the fields every reader relies on, checked once, with errors that
name the field and the fix.

A landed checkpoint's `checkpoint.json` is read by the landing watcher (to record it in the
ledger), by the plan (to name its jobs) and by the export; a wrong type, a missing fingerprint
or an absurd size used to surface as a TypeError deep in a task, or to put every such
checkpoint on one claim. Fields this version does not know are kept (newer writers may add
some); the ones below must be right.
"""
from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, \
    field_validator

from include.errors import CheckpointError
from include.mobiledet.spec import VARIANTS

META = "checkpoint.json"
FINGERPRINT = re.compile(r"^(sha256:)?[0-9a-fA-F]{16,128}$")
MAX_CLASSES = 10000
MAX_INPUT_SIZE = 4096
FIXES = {
    "fingerprint": "write the checkpoint with `mobiledet train` (or `mobiledet import-tfod`), "
                   "which records the sha256 of its weights as `fingerprint`.",
    "variant": f"set variant to one of {', '.join(VARIANTS)}.",
    "num_classes": f"set num_classes to the class count of the model (1..{MAX_CLASSES}).",
    "input_size": f"set input_size to the model's square input side (33..{MAX_INPUT_SIZE}, a "
                  "multiple of 32).",
    "depth_multiplier": "set depth_multiplier to the model's width multiplier (e.g. 1.0).",
    "qat": "set qat to true for a quantization-aware-trained checkpoint, else false.",
    "created": "write created as ISO-8601 UTC, e.g. 2026-11-24T04:12:00Z.",
    "weights": "list the weight files with their sha256: {\"weights.h5\": \"<64 hex digits>\"}.",
}


class CheckpointMeta(BaseModel):
    """The fields of `checkpoint.json` the pipeline reads."""

    model_config = ConfigDict(extra="allow", frozen=True)

    variant: str
    qat: StrictBool = False
    num_classes: StrictInt = Field(ge=1, le=MAX_CLASSES)
    input_size: StrictInt = Field(ge=33, le=MAX_INPUT_SIZE)
    depth_multiplier: float = Field(gt=0.0, le=4.0, allow_inf_nan=False)
    fingerprint: str
    created: Optional[str] = None
    weights: dict[str, str] = Field(default_factory=dict)

    @field_validator("variant")
    @classmethod
    def _variant(cls, value):
        if value not in VARIANTS:
            raise ValueError(f"unknown variant {value!r}; allowed: {', '.join(VARIANTS)}")
        return value

    @field_validator("fingerprint", mode="before")
    @classmethod
    def _fingerprint(cls, value):
        if not isinstance(value, str) or not FINGERPRINT.match(value):
            raise ValueError(f"must be the checkpoint's content hash (16 to 128 hex digits), "
                             f"got {value!r}")
        return value

    @field_validator("depth_multiplier", mode="before")
    @classmethod
    def _number(cls, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, got {value!r}")
        return value

    @field_validator("created")
    @classmethod
    def _created(cls, value):
        if value is None:
            return value
        try:
            _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"is not an ISO-8601 time: {value!r}") from None
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value):
        bad = [k for k, v in value.items() if not re.match(r"^[0-9a-f]{64}$", str(v))]
        if bad:
            raise ValueError(f"the sha256 of {', '.join(bad)} is not 64 hex digits")
        return value


def validate_meta(meta: Any, where: str) -> dict:
    """`meta` (checkpoint.json parsed) checked; CheckpointError naming the field and the fix."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{META} holds a {type(meta).__name__}, not an object.",
                              where=where, fix="train the checkpoint again with mobiledet train.")
    try:
        CheckpointMeta.model_validate(meta)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        top = str(err["loc"][0]) if err["loc"] else ""
        if err["type"] == "missing":
            problem = f"{META} has no {field!r}"
        else:
            detail = str(err["msg"]).removeprefix("Value error, ")
            got = "" if "got " in detail or ": " in detail else f" (got {err.get('input')!r})"
            problem = f"{META} field {field!r}: {detail}{got}"
        raise CheckpointError(problem + ".", where=where,
                              fix=FIXES.get(top, "write checkpoint.json with `mobiledet train`.")
                              ) from None
    return meta
