"""The plan step: run params -> a typed RunPlan (one Checkpoint entry per checkpoint), and the
jobs the model tasks fan out over.

Only headers are read: `checkpoint.json` (or a bundle's `pipeline.config` and graph), never
weights; the evaluation dataset's annotation file (its sha256 is the dataset's fingerprint),
never images.

Two ways to say what to convert: the checkpoints given (`mobiledet run`, a run triggered with
conf), or, for a run started by a landing (``reconcile``), the checkpoint ledger
(`include.store.ledger`): the run claims every checkpoint the ledger holds as new, retryable
(its backoff passed) or held by a run whose lease expired, up to `ledger.batch_size`. The
events that started the run are hints; a folded, dropped or repeated event strands nothing.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from include.errors import CheckpointError, ConfigError, DataError
from include.pipeline.costs import task_meter
from include.pipeline.plan import Checkpoint, ConvertedModel, Job, RunPlan, job_name, safe_run_id


def load_run_config(conf: dict):
    """The typed config for a run: config file (conf['config']) < env < run params."""
    from include.config import load_config

    overrides = {k: v for k, v in (conf.get("overrides") or {}).items() if v is not None}
    if conf.get("store"):
        overrides["store_uri"] = conf["store"]
    if conf.get("model_name"):
        overrides["model_name"] = conf["model_name"]
    return load_config(conf.get("config") or None, overrides=overrides)


def describe_source(path: Path) -> dict:
    """What a checkpoint folder, export folder or TFOD bundle holds (variant, QAT, fingerprint)."""
    if (path / "checkpoint.json").is_file() or (path / "weights.h5").is_file():
        from include.mobiledet.checkpoint import read_checkpoint_meta
        meta = read_checkpoint_meta(path)
        return {"kind": "checkpoint", "variant": meta["variant"], "qat": bool(meta["qat"]),
                "fingerprint": meta.get("fingerprint"), "created": meta.get("created"),
                "spec": {k: meta[k] for k in ("variant", "num_classes", "input_size",
                                              "depth_multiplier")},
                "data_fingerprint": meta.get("data_fingerprint")}
    if (path / "tflite_graph.pb").is_file():
        from include.convert.source import open_graph
        src = open_graph(path)
        return {"kind": src.kind, "variant": src.spec.variant, "qat": bool(src.qat),
                "fingerprint": src.fingerprint, "created": None, "spec": src.spec.to_dict(),
                "data_fingerprint": None}
    raise CheckpointError(
        "not a checkpoint (checkpoint.json + weights.h5), export folder or TFOD bundle "
        "(pipeline.config + tflite_graph.pb).", where=str(path),
        fix="pass a folder written by `mobiledet train` or `mobiledet export`, or a TFOD bundle.")


def describe(uri: str, workdir: Path, conn_id: str | None) -> dict:
    """What the checkpoint at `uri` is (describe_source's keys): a TFOD training folder or
    step (`include.tfod.source`: its pipeline.config and the step's identity), else the
    folder's header files."""
    from include.pipeline.inputs import checkpoint_header
    from include.tfod.source import checkpoint_info, find_step

    step = find_step(uri, conn_id)
    if step is not None:
        return checkpoint_info(step, Path(workdir), conn_id)
    return describe_source(checkpoint_header(uri, workdir, conn_id))


def plan(conf: dict, run_id: str) -> RunPlan:
    """Run params -> the run plan shared by every task, one entry per checkpoint."""
    from include.store import open_store

    rid = safe_run_id(run_id)
    with task_meter("plan", None, run_id=rid) as meter:
        with meter.part("config"):
            config = load_run_config(conf)
            # the cost record goes to the run's store, known once the config is
            meter.store = open_store(config.store_uri, conn_id=config.conn_id)
        return _plan(conf, rid, config, meter)


def _plan(conf: dict, rid: str, config, meter) -> RunPlan:
    from include.config import check_precisions

    checkpoints = conf.get("checkpoints") or []
    if isinstance(checkpoints, str):
        checkpoints = [checkpoints]
    if not checkpoints and not conf.get("reconcile"):
        raise ConfigError("no checkpoints given.", where="params.checkpoints",
                          fix="trigger the DAG with conf {\"checkpoints\": [\"/path/or/s3://uri\"]}.")
    if not conf.get("data"):
        raise ConfigError("no evaluation dataset given.", where="params.data",
                          fix="pass a COCO-format dataset folder (annotations/instances_*.json + "
                              "images) or its store URI as `data`.")
    variants = conf.get("variants") or None
    precisions = conf.get("precisions") or None
    entries, warnings, claimed = [], [], []
    ledger = None
    if conf.get("reconcile"):
        from include.store.ledger import Ledger
        from include.store import open_store
        ledger = Ledger(open_store(config.store_uri, conn_id=config.conn_id), config.model_name,
                        **config.ledger.model_dump())
    with tempfile.TemporaryDirectory(prefix="mobiledet-plan-") as tmp:
        with meter.part("download"):  # the annotation file only, never the images
            data_fp = evaluation_data_fingerprint(conf["data"], tmp, config.conn_id)
        todo = [(uri, None) for uri in checkpoints]
        if ledger is not None:
            with meter.part("claim"):
                todo, claimed = _claim(ledger, conf.get("landings") or [], rid,
                                       Path(tmp) / "landings", config.conn_id)
        for i, (uri, record) in enumerate(todo):
            try:
                with meter.part("download"):  # checkpoint.json (or the bundle's header)
                    info = describe(uri, Path(tmp) / f"ckpt-{i}", config.conn_id)
            except Exception as exc:
                if record is None:
                    raise
                fail_record(ledger, record, rid, exc)
                warnings.append(f"{uri}: {type(exc).__name__}: {exc}")
                continue
            if variants and info["variant"] not in variants:
                warnings.append(f"{uri}: variant {info['variant']} not in {variants}; skipped.")
                continue
            if precisions:
                warnings += check_precisions(info["variant"], info["qat"], list(precisions),
                                             where=f"params.precisions for {uri}")
                chosen = list(precisions)
            else:
                chosen, warn = config.plan_precisions(info["variant"], info["qat"])
                warnings += warn
            fp = info["fingerprint"] or "unknown"
            ckpt_id = f"{info['variant']}-{'qat' if info['qat'] else 'float'}-{fp[:8]}"
            entries.append(Checkpoint(**info, uri=uri, ckpt_id=ckpt_id, precisions=chosen,
                                      ledger_id=record["id"] if record else None))
    ids = [e.ckpt_id for e in entries]
    if len(set(ids)) != len(ids):
        raise ConfigError("the same checkpoint is listed twice.", where="params.checkpoints",
                          fix="list each checkpoint once.")
    return RunPlan(run_id=rid, config=config, data=conf["data"],
                   calibration=conf.get("calibration") or conf["data"],
                   evaluation_data_fingerprint=data_fp, checkpoints=entries, warnings=warnings,
                   already_claimed=claimed)


def _claim(ledger, landings: list[dict], run_id: str, workdir: Path,
           conn_id: str | None) -> tuple[list, list]:
    """([(uri, record)] this run claimed, [what the landings named that it did not claim])."""
    named = {}
    for landing in landings:
        rid = landing.get("ledger_id")
        if not rid:   # a landing no watcher recorded (S3 notifications via SQS, conf)
            rid = record_landing(ledger, landing, workdir, conn_id)["id"]
        named[landing["uri"]] = rid
    records = ledger.claim(run_id)
    mine = {r["id"] for r in records}
    others = []
    for uri, rid in named.items():
        if rid in mine:
            continue
        record = ledger.get(rid) or {}
        others.append({"uri": uri, "fingerprint": record.get("fingerprint"),
                       "claimed_by": record.get("run_id"), "state": record.get("state"),
                       "version": record.get("version")})
    return [(r["uri"], r) for r in records], others


def fail_record(ledger, record: dict, run_id: str, exc: BaseException) -> None:
    """A claimed checkpoint that cannot be planned: failed for good when its input is bad (the
    landing's bytes are marked bad), else retryable after the backoff."""
    from include.errors import MobiledetError, StoreError

    bad_input = isinstance(exc, MobiledetError) and not isinstance(exc, StoreError)
    ledger.mark(record["id"], run_id, "failed", reason=f"{type(exc).__name__}: {exc}",
                retryable=not bad_input, uri=record.get("uri"), bad_landing=bad_input)


def record_landing(ledger, landing: dict, workdir: Path, conn_id: str | None) -> dict:
    """Record a landing no watcher recorded (an S3 event notification through SQS, a run
    triggered with conf): its header read and validated here; an unreadable one is recorded
    failed with the reason. Returns the record."""
    uri, tag = landing["uri"], landing.get("tag") or ""
    folder = workdir / hashlib.sha256(uri.encode()).hexdigest()[:16]
    try:
        info = describe(uri, folder, conn_id)
    except (CheckpointError, DataError) as exc:
        return ledger.record_landing(uri=uri, tag=tag, kind="checkpoint",
                                     invalid=f"{type(exc).__name__}: {exc}")[0]
    return ledger.record_landing(uri=uri, tag=tag, kind=info["kind"],
                                 fingerprint=info["fingerprint"], created=info["created"],
                                 metadata={k: info[k] for k in ("variant", "qat")})[0]


def landings_from_events(triggering_asset_events) -> list[dict]:
    """The landings ({uri, tag, ledger_id}) named by the asset events that started a run, in
    event order, each once.

    Two sources: the landing watcher's payload (``extra["payload"]``: ``checkpoint_uri`` and
    the ``ledger_id`` it recorded), and S3 event notifications delivered through SQS by
    ``MessageQueueTrigger(scheme="sqs")`` (``extra["payload"]["message_batch"]``: each
    message's Body is an S3 event whose records name ``s3://bucket/.../checkpoint.json``; the
    checkpoint is that key's folder, the tag its eTag and sequencer).
    """
    found: dict[str, dict] = {}
    for events in (triggering_asset_events or {}).values():
        for event in events:
            payload = (getattr(event, "extra", None) or {}).get("payload") or {}
            items = s3_notification_landings(payload)
            if payload.get("checkpoint_uri"):
                items.insert(0, {"uri": payload["checkpoint_uri"],
                                 "tag": payload.get("marker_etag_or_mtime") or "",
                                 "ledger_id": payload.get("ledger_id")})
            for item in items:
                found.setdefault(item["uri"], item)
    return list(found.values())


def checkpoints_from_events(triggering_asset_events) -> list[str]:
    """Checkpoint URIs from the asset events that started a run, in event order, each once."""
    return [item["uri"] for item in landings_from_events(triggering_asset_events)]


def s3_notification_landings(payload: dict) -> list[dict]:
    """Checkpoint folders (with the tag of their checkpoint.json) named by the S3 event
    notifications in an SQS message batch."""
    from urllib.parse import unquote_plus

    out = []
    for message in payload.get("message_batch") or []:
        try:
            body = json.loads(message.get("Body") or "{}")
        except (TypeError, ValueError, AttributeError):
            continue
        for record in body.get("Records") or [] if isinstance(body, dict) else []:
            s3 = record.get("s3") or {}
            bucket = (s3.get("bucket") or {}).get("name")
            obj = s3.get("object") or {}
            key = unquote_plus(obj.get("key") or "")
            if bucket and key.endswith("/checkpoint.json"):
                out.append({"uri": f"s3://{bucket}/{key.rpartition('/')[0]}",
                            "tag": f"{obj.get('eTag') or ''}|{obj.get('sequencer') or ''}"})
    return out


def evaluation_data_fingerprint(uri: str, workdir: str, conn_id: str | None) -> str:
    """sha256 of the evaluation split's annotation file: two releases are comparable only when
    measured on the same images and labels. Reads the annotation file only, never images."""
    from include.data.coco import open_dataset
    from include.pipeline.inputs import dataset_copy
    from include.quality.evaluate import default_split

    root = dataset_copy(uri, Path(workdir) / "data", conn_id, images=lambda r: [])
    dataset = open_dataset(root, split=default_split(root))
    if len(dataset) == 0:  # fail in seconds, not after every conversion
        raise DataError("the evaluation dataset has 0 images, so no model could be evaluated.",
                        where=str(uri) + f" ({Path(dataset.annotation_file).name})",
                        fix="point `data` at a COCO split with images (annotations/instances_"
                            "val.json lists them in 'images').")
    digest = hashlib.sha256(Path(dataset.annotation_file).read_bytes()).hexdigest()
    return f"sha256:{digest}"


def jobs_of(run: RunPlan, exports: list[dict]) -> list[Job]:
    """One job per (checkpoint, precision), named variant/precision for the UI; the calibrated
    (int8) jobs first.

    The order is the order the workers start them in: Airflow queues the mapped instances of a
    task by priority weight, then run, then map index. The post-training calibration takes
    several times any other conversion (bench/pipeline.py: 30-36 s against 1.6-2.5 s at
    320 px) and its check comes after it, so started last, it kept both slots' work waiting
    at the end of the run while the other slot had nothing left to do (longest job first)."""
    run = RunPlan.of(run)
    with task_meter("jobs", run) as meter, meter.part("jobs"):
        jobs = []
        by_id = {e["ckpt_id"]: e for e in exports if e}
        for ckpt in run.checkpoints:
            exp = by_id.get(ckpt.ckpt_id)
            if exp is None:  # its export failed: the gate rejects its models with that error
                continue
            for precision in ckpt.precisions:
                jobs.append(Job(name=job_name(ckpt.variant, precision, ckpt.qat),
                                ckpt_id=ckpt.ckpt_id, variant=ckpt.variant, qat=ckpt.qat,
                                precision=precision, export_uri=exp["export_uri"]))
        return sorted(jobs, key=lambda job: not job.calibrated)


def as_checkpoint(item) -> Checkpoint:
    """A Checkpoint from a task's argument (a Checkpoint, or its JSON)."""
    return item if isinstance(item, Checkpoint) else Checkpoint.model_validate(item)


def as_job(item) -> Job:
    """A Job from a task's argument (a Job, or its JSON)."""
    return item if isinstance(item, Job) else Job.model_validate(
        {k: v for k, v in dict(item).items() if k in Job.model_fields})


def as_model(item) -> ConvertedModel:
    """A ConvertedModel from a task's argument (the convert step's JSON)."""
    return item if isinstance(item, ConvertedModel) else ConvertedModel.model_validate(
        {k: v for k, v in dict(item).items() if k in ConvertedModel.model_fields})
