"""Every key of the artifact store, named once.

::

    MODEL/VERSION/manifest.json                 the release; created once, by one publisher
    MODEL/VERSION/PUBLISHER/VARIANT/PRECISION/  model.tflite, model_edgetpu.tflite (where
                                                compiled), conversion.json, metrics.json,
                                                validation.json, picture-N.png
    MODEL/latest.json                           newest release of the model
    MODEL/latest/VARIANT.json                   newest release holding a model of VARIANT
    MODEL/latest/VARIANT/PRECISION.json         newest release of (VARIANT, PRECISION)
    MODEL/channels/NAME/VARIANT/PRECISION.json  a named channel (canary, stable, ...): moved by
                                                hand (promote), back on a yank
    MODEL/registry.json                         what ops did: yanked releases, channels,
                                                blessed models (one document, compare-and-set)
    MODEL/VERSION/yank.json                     the release's yank record (while yanked)
    MODEL/VERSION/blessed/VARIANT/PRECISION/    a model the gate rejected, published by hand
                                                (bless.json with who and why, and its files)
    MODEL/VERSION/benchmarks/VARIANT/PRECISION/DEVICE-DELEGATE.json  device figures attached
    MODEL/history/SEQ-ACTION.json               the audit log: who, when, what, why
    MODEL/baselines/VARIANT/PRECISION/KIND-DATA.json  newest release of (VARIANT, PRECISION)
                                                from a KIND (float|qat) checkpoint evaluated on
                                                the dataset DATA: the no-regression baseline
    ledger/MODEL/records/ID.json                one record per landed checkpoint (the record
                                                of work: state, attempts, run, reason, version)
    ledger/MODEL/open/ID                        a record not in a final state (the work queue)
    ledger/MODEL/seen/LANDING                   a landing (place + bytes) the ledger holds
    runs/RUN/                                   one run's intermediate files:
        RUN/CKPT/export/                          the export folder (tflite_graph.pb, ...)
        RUN/CKPT/PRECISION[-search]/              a model and its checks (metrics.json,
                                                  detections.json, validation.json,
                                                  data_docs/, pictures/, edgetpu.json)
        RUN/CKPT/failures/STAGE[-PRECISION].json  why a task failed, for the gate and report
        RUN/eval/SIZE.npz                         evaluation images decoded once per size
        RUN/costs/NAME.cost.json                  what each task cost
        RUN/report.json, RUN/report.md            the run report

Reading code (the dashboard, consumers, retention) and writing code (the pipeline's steps,
the publish protocol) both build keys with these functions, so the layout lives in one place.
Names are checked: a model, version, variant, precision or publisher must be a safe folder name.
"""
from __future__ import annotations

import re

from include.errors import StoreError

MANIFEST = "manifest.json"
LATEST = "latest.json"
POINTERS = "latest"
BASELINES = "baselines"
CHANNELS = "channels"
HISTORY = "history"
REGISTRY = "registry.json"
LEDGER = "ledger"
RUNS = "runs"
#: top-level folders that are not models
RESERVED_TOP = (RUNS, LEDGER, POINTERS, "claims")
COSTS = "costs"
FAILURES = "failures"
SEARCH_SUFFIX = "-search"
#: the asset alias through which the publish emits one event per published model
PUBLISHED_ALIAS = "mobiledet_published"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(value, what: str) -> str:
    """`value` when it is a safe folder name (letters, digits, '.', '_', '-'), else StoreError."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise StoreError(f"{what} {value!r} is not a safe folder name.", where=what,
                         fix="use letters, digits, '.', '_' and '-' only, starting with a letter "
                             "or digit.")
    return value


# -- releases ---------------------------------------------------------------------------------
def version_prefix(model: str, version: str) -> str:
    return f"{check_name(model, 'model name')}/{check_name(version, 'version')}"


def manifest_key(model: str, version: str) -> str:
    return f"{version_prefix(model, version)}/{MANIFEST}"


def release_folder(model: str, version: str, publisher: str) -> str:
    """Where one publisher copies a release's files (its own folder of the version)."""
    return f"{version_prefix(model, version)}/{check_name(publisher, 'publisher')}"


def release_model_folder(model: str, version: str, publisher: str, variant: str,
                         precision: str) -> str:
    return f"{release_folder(model, version, publisher)}/{variant}/{precision}"


def manifest_version(key: str) -> str | None:
    """The version of a MODEL/VERSION/manifest.json key, else None."""
    parts = key.split("/")
    return parts[1] if len(parts) == 3 and parts[2] == MANIFEST else None


# -- consumer pointers ---------------------------------------------------------------------
def pointer_key(model: str, variant: str | None = None, precision: str | None = None) -> str:
    """Where the consumer pointer of a model, a variant or a (variant, precision) lives."""
    model = check_name(model, "model name")
    if variant is None:
        return f"{model}/{LATEST}"
    variant = check_name(variant, "variant")
    if precision is None:
        return f"{model}/{POINTERS}/{variant}.json"
    return f"{model}/{POINTERS}/{variant}/{check_name(precision, 'precision')}.json"


def pointers_prefix(model: str) -> str:
    return f"{check_name(model, 'model name')}/{POINTERS}"


def parse_pointer_key(key: str) -> tuple[str | None, str | None] | None:
    """(variant, precision) of MODEL/latest/VARIANT[/PRECISION].json, (None, None) for
    MODEL/latest.json, None for any other key."""
    parts = key.split("/")
    if len(parts) == 2 and parts[1] == LATEST:
        return None, None
    if len(parts) < 3 or parts[1] != POINTERS or not key.endswith(".json"):
        return None
    if len(parts) == 3:
        return parts[2][:-5], None
    if len(parts) == 4:
        return parts[2], parts[3][:-5]
    return None


def channel_key(model: str, channel: str, variant: str, precision: str) -> str:
    return "/".join((check_name(model, "model name"), CHANNELS, check_name(channel, "channel"),
                     check_name(variant, "variant"), check_name(precision, "precision") + ".json"))


def registry_key(model: str) -> str:
    return f"{check_name(model, 'model name')}/{REGISTRY}"


def yank_key(model: str, version: str) -> str:
    return f"{version_prefix(model, version)}/yank.json"


def bless_prefix(model: str, version: str, variant: str, precision: str) -> str:
    return "/".join((version_prefix(model, version), "blessed", check_name(variant, "variant"),
                     check_name(precision, "precision")))


def device_benchmark_key(model: str, version: str, variant: str, precision: str, device: str,
                         delegate: str) -> str:
    """A device benchmark of a released model, attached beside its manifest."""
    return "/".join((version_prefix(model, version), "benchmarks", check_name(variant, "variant"),
                     check_name(precision, "precision"),
                     f"{check_name(device, 'device')}-{check_name(delegate, 'delegate')}.json"))


def history_key(model: str, seq: int, action: str) -> str:
    return f"{check_name(model, 'model name')}/{HISTORY}/{int(seq):010d}-{check_name(action, 'action')}.json"


def baselines_prefix(model: str, variant: str, precision: str) -> str:
    return "/".join((check_name(model, "model name"), BASELINES, check_name(variant, "variant"),
                     check_name(precision, "precision")))


def baseline_key(model: str, variant: str, precision: str, qat: bool,
                 data_fingerprint: str | None) -> str:
    """The no-regression baseline of one (variant, precision, source kind, dataset)."""
    data = str(data_fingerprint or "none").rpartition(":")[2][:16] or "none"
    return f"{baselines_prefix(model, variant, precision)}/{'qat' if qat else 'float'}-{data}.json"


def published_asset_name(model: str, variant: str, precision: str) -> str:
    """The Airflow asset of a published (model, variant, precision); its URI is the store URI
    of :func:`pointer_key` (model, variant, precision)."""
    return f"mobiledet/{model}/{variant}/{precision}"


# -- the checkpoint ledger ----------------------------------------------------------------
def ledger_prefix(model: str, part: str) -> str:
    return f"{LEDGER}/{check_name(model, 'model name')}/{part}"


def ledger_record_key(model: str, record_id: str) -> str:
    return f"{ledger_prefix(model, 'records')}/{check_name(record_id, 'ledger record')}.json"


def ledger_open_key(model: str, record_id: str) -> str:
    return f"{ledger_prefix(model, 'open')}/{check_name(record_id, 'ledger record')}"


def ledger_seen_key(model: str, landing_id: str) -> str:
    return f"{ledger_prefix(model, 'seen')}/{check_name(landing_id, 'landing')}"


# -- runs -----------------------------------------------------------------------------------
def run_prefix(run_id: str) -> str:
    return f"{RUNS}/{run_id}"


def checkpoint_prefix(run_id: str, ckpt_id: str) -> str:
    return f"{run_prefix(run_id)}/{ckpt_id}"


def export_prefix(run_id: str, ckpt_id: str) -> str:
    return f"{checkpoint_prefix(run_id, ckpt_id)}/export"


def model_prefix(run_id: str, ckpt_id: str, precision: str, *, search: bool = False) -> str:
    """A model of the run and its checks; the recipe search's choice sits beside the model it
    replaces (PRECISION-search), so checking it leaves the rejected model's files as they are."""
    return f"{checkpoint_prefix(run_id, ckpt_id)}/{precision}{SEARCH_SUFFIX if search else ''}"


def failure_key(run_id: str, ckpt_id: str, stage: str, precision: str | None = None) -> str:
    name = f"{stage}-{precision}" if precision else stage
    return f"{checkpoint_prefix(run_id, ckpt_id)}/{FAILURES}/{name}.json"


def eval_inputs_key(run_id: str, size: int) -> str:
    """The run's evaluation images decoded and resized to `size` (uint8 .npz)."""
    return f"{run_prefix(run_id)}/eval/{int(size)}.npz"


def costs_prefix(run_id: str) -> str:
    return f"{run_prefix(run_id)}/{COSTS}"


def cost_key(run_id: str, stage: str, ckpt_id: str | None = None,
             precision: str | None = None) -> str:
    name = "-".join(x for x in (stage, ckpt_id, precision) if x)
    return f"{costs_prefix(run_id)}/{name}.cost.json"


def report_key(run_id: str, suffix: str = ".json") -> str:
    return f"{run_prefix(run_id)}/report{suffix}"


def parse_run_key(key: str) -> str | None:
    """The run id of any key under runs/RUN/, else None."""
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == RUNS else None
