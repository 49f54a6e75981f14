"""Stages of one conversion run: plan -> export -> convert -> check -> edgetpu -> gate -> publish -> report.

Each stage takes and returns small JSON-able dicts. Artifacts move only through the artifact
store (`include.store`): a stage downloads what it needs into a temporary folder, works there,
and uploads its outputs under the run's staging prefix ``runs/<run_id>/<checkpoint_id>/...``.
So the same stages run in one process (dag.test, `mobiledet run`), on a LocalExecutor, or on
Celery/Kubernetes workers that share nothing but the store.

Every stage is idempotent: running it again for the same run writes the same keys, and
publishing the same checkpoint twice is a no-op.

Every stage measures itself (`include.pipeline.costs`): wall time, CPU time and peak RSS, split
into its parts (download, tensorflow import, export, conversion, evaluation, validation,
benchmark, upload, ...), written to ``runs/<run_id>/costs/`` whether the stage passes or fails;
the report collects them under ``stages``, the manifest under each model's ``metrics.costs``.

No work is done twice in a run: the evaluation images are decoded and resized once per input
size (``runs/<run_id>/eval/<size>.npz``, by the export), each model is evaluated once and its
detections stored, and the gate computes drop and agreement against the float reference from
the stored detections; the Edge TPU analysis runs once per model.
"""
from __future__ import annotations

import json
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from include import __version__
from include.errors import CheckpointError, ConfigError
from include.pipeline.costs import task_meter

EDGETPU_PRECISIONS = ("int8", "uint8")


# ------------------------------------------------------------------------------------------
# run settings
# ------------------------------------------------------------------------------------------
def safe_run_id(run_id: str) -> str:
    """Airflow run ids hold ':' and '+'; store keys get a portable form."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") or "run"


def load_run_config(conf: dict):
    """The typed config for a run: config file (conf['config']) < env < run params."""
    from include.config import load_config

    overrides = {k: v for k, v in (conf.get("overrides") or {}).items() if v is not None}
    if conf.get("store"):
        overrides["store_uri"] = conf["store"]
    if conf.get("model_name"):
        overrides["model_name"] = conf["model_name"]
    return load_config(conf.get("config") or None, overrides=overrides)


def _config(settings: dict):
    from include.config import PipelineConfig
    return PipelineConfig.from_dict(settings["config"])


def _store(settings: dict):
    from include.store import open_store
    cfg = settings["config"]
    return open_store(cfg["store_uri"], conn_id=cfg.get("conn_id"))


def _local(uri: str, workdir: str, conn_id: str | None) -> Path:
    """A local path for a store URI or local path (downloaded when remote)."""
    if "://" not in uri or uri.startswith("file://"):
        return Path(uri[len("file://"):] if uri.startswith("file://") else uri)
    from include.store import materialize
    return Path(materialize(uri, workdir, conn_id=conn_id))


# ------------------------------------------------------------------------------------------
# plan
# ------------------------------------------------------------------------------------------
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


def plan(conf: dict, run_id: str) -> dict:
    """Run params -> settings shared by every task, and one entry per checkpoint."""
    rid = safe_run_id(run_id)
    where = {"run_id": rid}   # the cost record goes to the store once the config is known
    with task_meter("plan", where) as meter:
        with meter.part("config"):
            config = load_run_config(conf)
            where["config"] = config.to_dict()
        return _plan(conf, rid, config, meter)


def _plan(conf: dict, rid: str, config, meter) -> dict:
    checkpoints = conf.get("checkpoints") or []
    if isinstance(checkpoints, str):
        checkpoints = [checkpoints]
    if not checkpoints:
        raise ConfigError("no checkpoints given.", where="params.checkpoints",
                          fix="trigger the DAG with conf {\"checkpoints\": [\"/path/or/s3://uri\"]}.")
    if not conf.get("data"):
        raise ConfigError("no evaluation dataset given.", where="params.data",
                          fix="pass a COCO-format dataset folder (annotations/instances_*.json + "
                              "images) or its store URI as `data`.")
    variants = conf.get("variants") or None
    precisions = conf.get("precisions") or None
    entries, warnings, claimed = [], [], []
    from include.pipeline.inputs import checkpoint_header
    with tempfile.TemporaryDirectory(prefix="mobiledet-plan-") as tmp:
        with meter.part("download"):  # the annotation file only, never the images
            data_fp = evaluation_data_fingerprint(conf["data"], tmp, config.conn_id)
        for i, uri in enumerate(checkpoints):
            with meter.part("download"):  # checkpoint.json (or the bundle's header), no weights
                info = describe_source(checkpoint_header(uri, Path(tmp) / f"ckpt-{i}",
                                                         config.conn_id))
            if variants and info["variant"] not in variants:
                warnings.append(f"{uri}: variant {info['variant']} not in {variants}; skipped.")
                continue
            if precisions:
                from include.config import check_precisions
                warnings += check_precisions(info["variant"], info["qat"], list(precisions),
                                             where=f"params.precisions for {uri}")
                chosen = list(precisions)
            else:
                chosen, warn = config.plan_precisions(info["variant"], info["qat"])
                warnings += warn
            fp = info["fingerprint"] or "unknown"
            ckpt_id = f"{info['variant']}-{'qat' if info['qat'] else 'float'}-{fp[:8]}"
            if conf.get("claim"):
                with meter.part("claim"):
                    holder = claim_checkpoint(config, fp, uri, rid)
                if holder != rid:
                    claimed.append({"uri": uri, "fingerprint": fp, "claimed_by": holder})
                    warnings.append(f"{uri}: already claimed by run {holder}; not converted "
                                    "again.")
                    continue
            entries.append({**info, "uri": uri, "ckpt_id": ckpt_id, "precisions": chosen})
    ids = [e["ckpt_id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise ConfigError("the same checkpoint is listed twice.", where="params.checkpoints",
                          fix="list each checkpoint once.")
    return {"run_id": rid, "config": config.to_dict(), "data": conf["data"],
            "calibration": conf.get("calibration") or conf["data"],
            "evaluation_data_fingerprint": data_fp, "checkpoints": entries, "warnings": warnings,
            "already_claimed": claimed}


def claim_key(model_name: str, fingerprint: str) -> str:
    return f"claims/{model_name}/{fingerprint}.json"


def claim_checkpoint(config, fingerprint: str, uri: str, run_id: str) -> str:
    """Take the durable claim on converting this checkpoint; returns the run that holds it.

    One conditional create (O_EXCL locally, S3 IfNoneMatch) per checkpoint fingerprint: when
    a landing is reported twice (the trigger fires again, the triggerer restarts, two
    triggerers run), exactly one run converts it. A retry of the claiming run finds its own
    claim and goes on. The claim outlives a failed run: `mobiledet run` converts the checkpoint
    again by hand (it takes no claim), or delete claims/MODEL/FINGERPRINT.json to let the next
    landing event do it.
    """
    from include.store import open_store

    store = open_store(config.store_uri, conn_id=config.conn_id)
    key = claim_key(config.model_name, fingerprint)
    import datetime as _dt
    doc = {"run_id": run_id, "checkpoint_uri": uri, "fingerprint": fingerprint,
           "claimed_at": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    if store.create_json(key, doc):
        return run_id
    return str(store.read_json(key).get("run_id"))


def landed_checkpoints(triggering_asset_events) -> list[str]:
    """Checkpoint URIs from the asset events that started a run, in event order, each once.

    Two sources: the landing watcher's payload (``extra["payload"]["checkpoint_uri"]``), and
    S3 event notifications delivered through SQS by ``MessageQueueTrigger(scheme="sqs")``
    (``extra["payload"]["message_batch"]``: each message's Body is an S3 event whose records
    name ``s3://bucket/.../checkpoint.json``; the checkpoint is that key's folder).
    """
    found = []
    for events in (triggering_asset_events or {}).values():
        for event in events:
            payload = (getattr(event, "extra", None) or {}).get("payload") or {}
            uris = [payload.get("checkpoint_uri")] + _s3_notification_checkpoints(payload)
            for uri in uris:
                if uri and uri not in found:
                    found.append(uri)
    return found


def _s3_notification_checkpoints(payload: dict) -> list[str]:
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
            key = unquote_plus((s3.get("object") or {}).get("key") or "")
            if bucket and key.endswith("/checkpoint.json"):
                out.append(f"s3://{bucket}/{key.rpartition('/')[0]}")
    return out


def evaluation_data_fingerprint(uri: str, workdir: str, conn_id: str | None) -> str:
    """sha256 of the evaluation split's annotation file: two releases are comparable only when
    measured on the same images and labels. Reads the annotation file only, never images."""
    import hashlib

    from include.data.coco import open_dataset
    from include.pipeline.inputs import dataset_copy
    from include.quality.evaluate import default_split

    from include.errors import DataError

    root = dataset_copy(uri, Path(workdir) / "data", conn_id, images=lambda r: [])
    dataset = open_dataset(root, split=default_split(root))
    if len(dataset) == 0:  # fail in seconds, not after every conversion
        raise DataError("the evaluation dataset has 0 images, so no model could be evaluated.",
                        where=str(uri) + f" ({Path(dataset.annotation_file).name})",
                        fix="point `data` at a COCO split with images (annotations/instances_"
                            "val.json lists them in 'images').")
    digest = hashlib.sha256(Path(dataset.annotation_file).read_bytes()).hexdigest()
    return f"sha256:{digest}"


def jobs_of(settings: dict, exports: list[dict]) -> list[dict]:
    """One job per (checkpoint, precision), named variant/precision for the UI; the calibrated
    (int8) jobs first.

    The order is the order the workers start them in: Airflow queues the mapped instances of a
    task by priority weight, then run, then map index. The post-training calibration takes
    several times any other conversion (bench/pipeline.py: 30-36 s against 1.6-2.5 s at
    320 px) and its check comes after it, so started last, it kept both slots' work waiting
    at the end of the run while the other slot had nothing left to do (longest job first)."""
    with task_meter("jobs", settings) as meter, meter.part("jobs"):
        jobs = _jobs_of(settings, exports)
        return sorted(jobs, key=lambda job: not calibrated(job["precision"]))


def in_plan_order(settings: dict, jobs: list[dict]) -> list[dict]:
    """Jobs in the order the plan lists checkpoints and their precisions (the decisions, the
    report and the manifest read that way, whatever order the workers ran them in)."""
    rank = {(c["ckpt_id"], p): (i, j) for i, c in enumerate(settings["checkpoints"])
            for j, p in enumerate(c["precisions"])}
    return sorted(jobs, key=lambda job: rank.get((job["ckpt_id"], job["precision"]),
                                                 (len(rank), 0)))


def calibrated(precision: str) -> bool:
    """Whether a precision's recipe calibrates on representative data (the long conversion)."""
    from include.convert.recipes import RECIPES
    recipe = RECIPES.get(precision)
    return bool(recipe and recipe.settings.get("representative_dataset"))


def _jobs_of(settings: dict, exports: list[dict]) -> list[dict]:
    jobs = []
    by_id = {e["ckpt_id"]: e for e in exports if e}
    for ckpt in settings["checkpoints"]:
        exp = by_id.get(ckpt["ckpt_id"])
        if exp is None:  # its export failed: the gate rejects its models with that error
            continue
        for precision in ckpt["precisions"]:
            suffix = "" if not ckpt["qat"] else " (qat)"
            jobs.append({"name": f"{ckpt['variant']}/{precision}{suffix}", "ckpt_id": ckpt["ckpt_id"],
                         "variant": ckpt["variant"], "qat": ckpt["qat"], "precision": precision,
                         "export_uri": exp["export_uri"]})
    return jobs


def _prefix(settings: dict, ckpt_id: str) -> str:
    return f"runs/{settings['run_id']}/{ckpt_id}"


def model_key(settings: dict, model: dict) -> str:
    """The store folder of one model of the run: `<run>/<checkpoint>/<precision>`, or the
    model's own `key` (the recipe search's choice lives in `<precision>-search`, so checking
    it does not overwrite the rejected model's files)."""
    return model.get("key") or f"{_prefix(settings, model['ckpt_id'])}/{model['precision']}"


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------
def export_stage(settings: dict, ckpt: dict) -> dict:
    """Checkpoint -> export folder in the store (a TFOD bundle or export folder is staged as is);
    then the run's evaluation images at this checkpoint's input size, decoded once for every
    check of the run (unless another export of the run made them already)."""
    with task_meter("export", settings, ckpt) as meter:
        return _export(settings, ckpt, meter)


def _export(settings: dict, ckpt: dict, meter) -> dict:
    from include.store import stage_dir

    store = _store(settings)
    conn = settings["config"].get("conn_id")
    key = f"{_prefix(settings, ckpt['ckpt_id'])}/export"
    with tempfile.TemporaryDirectory(prefix="mobiledet-export-") as tmp:
        with meter.part("download"):
            src = _local(ckpt["uri"], tmp, conn)
        with meter.part("tensorflow import"):
            import tensorflow  # noqa: F401  (timed apart: every task process pays it once)
            from include.convert.source import open_graph
        if ckpt["kind"] == "checkpoint":
            from include.mobiledet.export import export_checkpoint
            out = Path(tmp) / "export"
            with meter.part("export"):
                export_checkpoint(src, out)
        else:
            out = src
        with meter.part("graph check"):
            graph = open_graph(out)
        with meter.part("upload"):
            uri = stage_dir(store, str(out), key)
        size = (ckpt.get("spec") or {}).get("input_size") or graph.to_dict().get("spec", {}).get(
            "input_size")
        inputs_uri = _ensure_eval_inputs(settings, store, int(size), Path(tmp), meter) \
            if size else None
    return {"ckpt_id": ckpt["ckpt_id"], "export_uri": uri, "graph": graph.to_dict(),
            "eval_inputs_uri": inputs_uri}


def eval_inputs_key(settings: dict, size: int) -> str:
    """Where a run keeps its evaluation images decoded and resized to `size` (uint8 .npz)."""
    return f"runs/{settings['run_id']}/eval/{int(size)}.npz"


def _ensure_eval_inputs(settings: dict, store, size: int, tmp: Path, meter) -> str | None:
    """Decode and resize the run's evaluation images once per input size; every check reads
    them instead of downloading and decoding the images itself. Best effort: when this fails,
    each check decodes the images as before (and names any broken image itself)."""
    from include.quality.evaluate import preprocess_inputs

    key = eval_inputs_key(settings, size)
    cfg = settings["config"]
    try:
        with meter.part("download"):
            if store.is_file(key):
                return store.uri(key)
            data = _eval_data_copy(settings, tmp / "eval-data", evaluated_only=True)
        with meter.part("evaluation data"):
            inputs = preprocess_inputs(data, size, max_images=cfg.get("eval_max_images"),
                                       threads=cfg.get("threads"))
            path = inputs.save(tmp / f"eval-{size}.npz")
        with meter.part("upload"):
            return store.put_file(str(path), key)
    except Exception:  # noqa: BLE001 - an optimisation only; the checks report real problems
        return None


def _eval_data_copy(settings: dict, workdir: Path, evaluated_only: bool = False,
                    annotations_only: bool = False) -> Path:
    """The evaluation dataset as a local folder with the images a task reads: none (the
    annotations), the evaluated ones, or what a check reads besides them."""
    from include.pipeline.inputs import dataset_copy

    cfg = settings["config"]
    if annotations_only:
        pick = lambda root: []  # noqa: E731
    elif evaluated_only:
        pick = lambda root: _coco_or_all(root, lambda: _evaluated_images(  # noqa: E731
            root, cfg.get("eval_max_images")))
    else:
        pick = lambda root: _coco_or_all(root, lambda: _check_images(  # noqa: E731
            root, cfg.get("eval_max_images")))
    return dataset_copy(settings["data"], workdir, cfg.get("conn_id"), images=pick)


# ------------------------------------------------------------------------------------------
# convert
# ------------------------------------------------------------------------------------------
def convert_stage(settings: dict, job: dict) -> dict:
    with task_meter("convert", settings, job) as meter:
        return _convert(settings, job, meter)


def _convert(settings: dict, job: dict, meter) -> dict:
    out = convert_step(**convert_args(settings, job), meter=meter)
    return {**job, **{k: v for k, v in out.items() if k != "precision"}}


def convert_args(settings: dict, job: dict) -> dict:
    """convert_step's arguments for one job of the plan (the DAG's convert task sets
    TFLiteConvertOperator's from the same)."""
    cfg = settings["config"]
    return {"graph": job["export_uri"], "precision": job["precision"],
            "output": _store(settings).uri(f"{model_key(settings, job)}/model.tflite"),
            "calibration": settings["calibration"] if job["precision"] == "int8" else None,
            "calibration_count": cfg.get("calibration_count", 100),
            "conn_id": cfg.get("conn_id")}


class _NoMeter:
    """Stands in for a task meter where nobody records costs (an operator in a user's DAG)."""

    parts: dict = {}

    @contextmanager
    def part(self, name: str):
        yield

    def split(self, name: str, pieces: dict) -> None:
        pass

    def rename(self, name: str, new: str) -> None:
        pass


def _put(local: Path, uri: str, conn_id: str | None) -> str:
    """Upload a local file to the file URI (or local path) `uri`; returns its URI."""
    from include.store import open_store

    parent, _, name = str(uri).rstrip("/").rpartition("/")
    return open_store(parent, conn_id=conn_id).put_file(str(local), name)


def convert_step(graph: str, precision: str, output: str, *, calibration: str | None = None,
                 calibration_count: int = 100, conn_id: str | None = None,
                 options: dict | None = None, output_type: str | None = None,
                 meter=None) -> dict:
    """One conversion with the store on both sides: the export folder or TFOD bundle `graph`
    (a local path or store URI) -> `output` (.../model.tflite, a local path or store URI) and
    conversion.json next to it. For int8, only the `calibration_count` sampled calibration
    images are downloaded. Used by the pipeline's convert stage and by TFLiteConvertOperator.

    Returns {model_uri, conversion_uri, size_bytes, sha256, input, warnings, precision}."""
    meter = meter or _NoMeter()
    with tempfile.TemporaryDirectory(prefix="mobiledet-convert-") as tmp:
        with meter.part("tensorflow import"):
            import tensorflow  # noqa: F401  (timed apart: every task process pays it once)
            from include.convert.converter import convert
        with meter.part("download"):
            export = _local(graph, tmp, conn_id)
            local_calibration = None
            if calibration is not None and precision == "int8":
                from include.convert.calibration import calibration_files
                from include.pipeline.inputs import dataset_copy

                local_calibration = dataset_copy(
                    calibration, Path(tmp) / "calibration", conn_id,
                    images=lambda root: _coco_or_all(
                        root, lambda: calibration_files(root, calibration_count)))
        model = Path(tmp) / "out" / "model.tflite"
        with meter.part("conversion"):
            report = convert(export, precision, model, calibration=local_calibration,
                             calibration_count=calibration_count, options=options,
                             output_type=output_type)
        # conversion.json times the converter itself (for int8 that includes the calibration
        # passes); the rest is reading the graph, decoding calibration images, the smoke run
        converter_s = report.get("seconds")
        part = meter.parts.get("conversion", {}).get("wall_s", 0.0)
        if isinstance(converter_s, (int, float)) and 0 < converter_s <= part:
            meter.split("conversion", {"graph load, calibration images, smoke run":
                                       part - converter_s})
            if precision == "int8":
                meter.rename("conversion", "calibration and conversion")
        with meter.part("upload"):
            model_uri = _put(model, output, conn_id)
            from include.convert.recipes import conversion_json_path, conversion_json_uri
            conv_uri = _put(conversion_json_path(model), conversion_json_uri(str(output)),
                            conn_id)
    return {"model_uri": model_uri, "conversion_uri": conv_uri, "precision": precision,
            "size_bytes": report["size_bytes"], "sha256": report["sha256"],
            "input": report["inputs"][0], "warnings": report["warnings"]}


# ------------------------------------------------------------------------------------------
# check: evaluate (against the float reference), validate, benchmark
# ------------------------------------------------------------------------------------------
def _reference_uri(settings: dict, model: dict) -> str | None:
    if model["precision"] == "float32":
        return None
    ckpt = next(c for c in settings["checkpoints"] if c["ckpt_id"] == model["ckpt_id"])
    if "float32" not in ckpt["precisions"]:
        return None
    return _store(settings).uri(f"{_prefix(settings, model['ckpt_id'])}/float32/model.tflite")


def _coco_or_all(root: Path, pick):
    """The images `pick()` names when `root` has COCO annotations, else None (every file)."""
    if not (root / "annotations").is_dir() and not list(root.glob("instances_*.json")):
        return None
    return pick()


def _evaluated_images(root: Path, max_images: int | None) -> list:
    from include.data.coco import open_dataset
    from include.quality.evaluate import default_split

    dataset = open_dataset(root, split=default_split(root))
    ids = dataset.image_ids[:max_images] if max_images else dataset.image_ids
    return [dataset.image_path(i) for i in ids]


def _check_images(root: Path, max_images: int | None, decoded: bool = False) -> list:
    """The images a check reads: the evaluated ones (unless the run decoded them once
    already), the contract's sample, the pictures'."""
    from include.convert.calibration import calibration_files
    from include.dashboard.pictures import COUNT as PICTURES
    from include.data.coco import open_dataset
    from include.quality.evaluate import default_split
    from include.quality.validate import DEFAULT_IMAGES

    dataset = open_dataset(root, split=default_split(root))
    if decoded:
        ids = dataset.image_ids[:PICTURES]
    else:
        ids = dataset.image_ids[:max(max_images, PICTURES)] if max_images else dataset.image_ids
    return [dataset.image_path(i) for i in ids] + calibration_files(root, DEFAULT_IMAGES)


def _input_size(settings: dict, model: dict) -> int | None:
    ckpt = next((c for c in settings["checkpoints"] if c["ckpt_id"] == model["ckpt_id"]), {})
    size = (ckpt.get("spec") or {}).get("input_size")
    return int(size) if size else None


def _store_file(store, key: str, workdir: Path) -> Path:
    """A local path of a store file (the file itself in a local store, else a download)."""
    if store.local:
        return Path(store.uri(key)[len("file://"):])
    target = workdir / key.replace("/", "_")
    store.get_file(key, str(target))
    return target


def detections_key(settings: dict, model: dict) -> str:
    return f"{model_key(settings, model)}/detections.json"


def check_stage(settings: dict, model: dict) -> dict:
    """Evaluate the model (once: drop and agreement against the float reference are computed
    by the gate from the stored detections), validate its output contract, benchmark it."""
    with task_meter("check", settings, model) as meter:
        return _check(settings, model, meter)


def _check(settings: dict, model: dict, meter) -> dict:
    from include.pipeline.inputs import dataset_copy
    from include.store import fetch, stage_dir

    cfg = settings["config"]
    store = _store(settings)
    conn = cfg.get("conn_id")
    key = model_key(settings, model)
    with tempfile.TemporaryDirectory(prefix="mobiledet-check-") as tmp:
        with meter.part("import"):
            from include.quality.benchmark import benchmark
            from include.quality.evaluate import EvalInputs, evaluate
            from include.quality.validate import validate
        with meter.part("download"):
            local = Path(tmp) / "model"
            local.mkdir()
            model_path = fetch(model["model_uri"], str(local / "model.tflite"), conn_id=conn,
                               sha256=model.get("sha256"))
            fetch(model["conversion_uri"], str(local / "conversion.json"), conn_id=conn)
            size = _input_size(settings, model)
            inputs_key = eval_inputs_key(settings, size) if size else None
            inputs_path = None
            if inputs_key and store.is_file(inputs_key):
                inputs_path = _store_file(store, inputs_key, Path(tmp))
            decoded = inputs_path is not None
            data = dataset_copy(settings["data"], Path(tmp) / "data", conn,
                                images=lambda root: _coco_or_all(
                                    root, lambda: _check_images(root, cfg.get("eval_max_images"),
                                                                decoded=decoded)))
        with meter.part("evaluation"):
            inputs = EvalInputs.load(inputs_path) if inputs_path else None
            metrics = evaluate(model_path, data, max_images=cfg.get("eval_max_images"),
                               threads=cfg.get("threads"), inputs=inputs,
                               out=str(Path(tmp) / "detections.json"), show_progress=False)
            del inputs
        with meter.part("validation"):
            validation = validate(model_path, data=data, out_dir=str(Path(tmp) / "validation"))
        with meter.part("benchmark"):
            bench = benchmark(model_path, threads=cfg.get("threads"),
                              warmup=cfg.get("benchmark_warmup", 3),
                              runs=cfg.get("benchmark_runs", 20))
        # for people: detections drawn on a few evaluation images (published with the model,
        # shown by the dashboard)
        with meter.part("pictures"):
            from include.dashboard.pictures import release_pictures
            pictures = release_pictures(model_path, data, Path(tmp) / "pictures")
        with meter.part("upload"):
            detections = json.loads((Path(tmp) / "detections.json").read_text())
            detections_uri = store.write_json(detections_key(settings, model), {
                "model_uri": model["model_uri"], "metrics": metrics["metrics"],
                "category_ids": metrics.get("category_ids"), "images": metrics.get("images"),
                "max_images": cfg.get("eval_max_images"), "detections": detections})
            metrics_doc = {"evaluation": metrics, "benchmark": bench}
            metrics_uri = store.write_json(f"{key}/metrics.json", metrics_doc)
            validation_uri = store.put_file(validation["result_json"], f"{key}/validation.json")
            # the Great Expectations Data Docs, for people
            data_docs_uri = stage_dir(store, str(Path(validation["data_docs"]).parent),
                                      f"{key}/data_docs")
            picture_uris = [store.put_file(str(p), f"{key}/pictures/{p.name}") for p in pictures]
    summary = {k: metrics["metrics"].get(k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl",
                                                      "AR100")}
    return {**model, "metrics": summary, "drop": metrics.get("drop"),
            "agreement": metrics.get("agreement"), "images": metrics.get("images"),
            "contract_passed": bool(validation["success"]),
            "contract_failed": [f"{r['name']}: {r['details']}" for r in validation["expectations"]
                                if not r["success"]],
            "latency_ms": bench["latency_ms"]["mean"], "latency": bench["latency_ms"],
            "metrics_uri": metrics_uri, "validation_uri": validation_uri,
            "data_docs_uri": data_docs_uri, "picture_uris": picture_uris,
            "detections_uri": detections_uri, "decoded_once": bool(metrics.get("decoded_once")),
            "evaluation_images_per_s": metrics.get("images_per_s")}


# ------------------------------------------------------------------------------------------
# Edge TPU
# ------------------------------------------------------------------------------------------
def edgetpu_applies(model: dict) -> bool:
    return model["variant"] == "edgetpu" and model["precision"] in EDGETPU_PRECISIONS


def _unmapped(rows) -> list[dict]:
    return [{"op": r["operator"], "count": r["count"], "reason": r["status"]}
            for r in rows if not r.get("mapped")]


def edgetpu_stage(settings: dict, model: dict) -> dict:
    """Offline mapping prediction + the real compiler where installed (integer EdgeTPU models).

    The result carries the compiler's status and message as they are (compiled, not_installed,
    failed, timeout), its op counts where it compiled, and the prediction's counts under
    `prediction`, so the gate can decide on either (gates.edgetpu).
    """
    base = edgetpu_base(model)
    with task_meter("edgetpu", settings, model) as meter:
        if not edgetpu_applies(model):
            with meter.part("not applicable"):
                return edgetpu_not_applicable(model)
        return {**base, **edgetpu_step(**edgetpu_args(settings, model), meter=meter)}


def edgetpu_base(model: dict) -> dict:
    """What every edgetpu result names: the model it is about."""
    return {k: model[k] for k in ("name", "ckpt_id", "precision", "variant")}


def edgetpu_not_applicable(model: dict) -> dict:
    """The edgetpu result of a model the Edge TPU stage does not apply to."""
    return {**edgetpu_base(model), "status": "not_applicable"}


def edgetpu_args(settings: dict, model: dict) -> dict:
    """edgetpu_step's arguments for one converted model of the run (the DAG's edgetpu task sets
    EdgeTPUCompileOperator's from the same)."""
    cfg = settings["config"]
    return {"model": model["model_uri"], "output": _store(settings).uri(model_key(settings, model)),
            "sha256": model.get("sha256"), "timeout_s": cfg.get("edgetpu_timeout_s", 180),
            "conn_id": cfg.get("conn_id")}


def edgetpu_step(model: str, output: str, *, sha256: str | None = None,
                 timeout_s: float = 180, conn_id: str | None = None, meter=None) -> dict:
    """The offline op-mapping prediction and the Edge TPU compiler (where installed) for the
    .tflite at `model` (a local path or store URI, checked against `sha256` when given); the
    compiled model_edgetpu.tflite (when it compiled) and edgetpu.json (compiler result and
    prediction) go into the folder `output`. Used by the pipeline's edgetpu stage and by
    EdgeTPUCompileOperator.

    Returns the compiler's status and message as they are (compiled, not_installed, failed,
    timeout), its op counts where it compiled (else the prediction's), and the prediction's
    counts under `prediction`, so a gate can decide on either."""
    from include.edgetpu.analyze import analyze_model
    from include.edgetpu.compiler import compile_model
    from include.store import fetch

    meter = meter or _NoMeter()
    output = str(output).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="mobiledet-edgetpu-") as tmp:
        with meter.part("download"):
            model_path = fetch(model, str(Path(tmp) / "model.tflite"), conn_id=conn_id,
                               sha256=sha256)
        with meter.part("analysis"):
            prediction = analyze_model(model_path)
        with meter.part("compile"):
            # the compiler's precheck reuses this analysis instead of running it again
            result = compile_model(model_path, str(Path(tmp) / "compiled"),
                                   timeout_s=timeout_s, analysis=prediction)
        predicted = {"ops_total": prediction["total_ops"], "ops_on_tpu": prediction["ops_on_tpu"],
                     "ops_on_cpu": prediction["ops_on_cpu"],
                     "all_mapped_except_postprocess":
                         prediction["all_mapped_except_postprocess"],
                     "unmapped_ops": _unmapped(prediction["operators"])}
        out = {"status": result.status, "message": result.message,
               "prediction": predicted, "decided_by": "prediction"}
        with meter.part("upload"):
            if result.status == "compiled" and result.edgetpu_model:
                out["edgetpu_model_uri"] = _put(Path(result.edgetpu_model),
                                                f"{output}/model_edgetpu.tflite", conn_id)
                rep = result.report.to_dict() if hasattr(result.report, "to_dict") \
                    else result.report
                out.update(ops_total=rep.get("total_ops"), ops_on_tpu=rep.get("ops_on_tpu"),
                           ops_on_cpu=rep.get("ops_on_cpu"), decided_by="compiler",
                           unmapped_ops=_unmapped(rep.get("operators", [])))
            else:
                out.update({k: predicted[k] for k in ("ops_total", "ops_on_tpu", "ops_on_cpu",
                                                      "unmapped_ops")})
            from include.store import open_store
            out["report_uri"] = open_store(output, conn_id=conn_id).write_json(
                "edgetpu.json", {"compiler": result.to_dict(), "prediction": prediction})
    return out


# ------------------------------------------------------------------------------------------
# failures: what a task that did not finish left for the gate and the report
# ------------------------------------------------------------------------------------------
def failure_key(settings: dict, stage: str, item: dict) -> str:
    precision = item.get("precision")
    name = f"{stage}-{precision}" if precision else stage
    return f"{_prefix(settings, item['ckpt_id'])}/failures/{name}.json"


def record_failure(settings: dict, stage: str, item: dict, exc: BaseException) -> str | None:
    """Write why `stage` failed for `item` (a checkpoint or a job); None if the store refuses
    (the store itself may be what failed: the gate then says the task did not finish)."""
    try:
        return _store(settings).write_json(failure_key(settings, stage, item), {
            "stage": stage, "name": item.get("name") or item.get("ckpt_id"),
            "error": f"{type(exc).__name__}: {exc}"})
    except Exception:  # noqa: BLE001 - best effort, the task is failing anyway
        return None


#: how a failure reason names a stage that is not a task of its own
STAGE_TASK_NAMES = {"edgetpu": "the Edge TPU stage of the check task"}


def failure_reason(store, settings: dict, stages: tuple[str, ...], item: dict) -> str:
    """Why the first of `stages` that failed for `item` failed, as users read it."""
    for stage in stages:
        key = failure_key(settings, stage, item)
        try:
            if store.is_file(key):
                what = STAGE_TASK_NAMES.get(stage, f"the {stage} task")
                return f"{what} failed: {store.read_json(key)['error']}"
        except Exception:  # noqa: BLE001 - unreadable record: fall through to the generic text
            continue
    return (f"the {' / '.join(stages)} task did not finish (killed, timed out or its worker "
            "was lost); see its log in Airflow")


def _rejected_by_failure(job: dict, reason: str, metric: str, check: dict | None = None) -> dict:
    from include.gates import GateCheck, GateDecision

    decision = GateDecision(variant=job["variant"], precision=job["precision"], metric=metric,
                            map=None, passed=False,
                            checks=[GateCheck("task", False, None, None, reason, "fail")],
                            reasons=[reason])
    base = {"size_bytes": None, "latency_ms": None, "metrics": {}, "edgetpu": None,
            "drop": None}
    return {**base, **job, **(check or {}), "failed": True, "passed": False,
            "decision": decision.to_dict()}


# ------------------------------------------------------------------------------------------
# gate
# ------------------------------------------------------------------------------------------
def gate_stage(settings: dict, jobs: list[dict], checks: list[dict],
               edgetpu: list[dict]) -> list[dict]:
    """One decision per job, each on its own: a job whose convert, check or Edge TPU task
    failed is rejected with that task's error; the others are gated on their numbers against
    the run's float32 reference and the newest comparable release. Drop and agreement against
    the float reference come from the two models' stored detections (each model is evaluated
    once per run, by its own check)."""
    with task_meter("gate", settings) as meter:
        return _gate(settings, jobs, checks, edgetpu, meter)


def _gate(settings: dict, jobs: list[dict], checks: list[dict], edgetpu: list[dict],
          meter) -> list[dict]:
    with meter.part("setup"):
        from include.gates import evaluate_gates
        from include.store import comparable_baseline

        config = _config(settings)
        store = _store(settings)
    metric = config.gates.metric
    key = lambda d: (d["ckpt_id"], d["precision"])  # noqa: E731
    checked = {key(c): c for c in checks if c}
    tpu = {key(e): e for e in edgetpu if e}
    by_ckpt = {c["ckpt_id"]: c for c in settings["checkpoints"]}
    reference = {c["ckpt_id"]: c["metrics"].get(metric) for c in checked.values()
                 if c["precision"] == "float32"}
    try:
        compared = _against_reference(settings, store, checked, meter)
    except Exception:  # noqa: BLE001 - drop and agreement are reported, not gated on
        compared = {}
    out = []
    for job in in_plan_order(settings, jobs):
        c = checked.get(key(job))
        if c is None:
            with meter.part("decisions"):
                out.append(_rejected_by_failure(
                    job, failure_reason(store, settings, ("convert", "check", "edgetpu"), job),
                    metric))
            continue
        c = {**c, **compared.get(key(job), {})}
        e = tpu.get(key(job))
        if e is None and edgetpu_applies(job):
            with meter.part("decisions"):
                out.append(_rejected_by_failure(
                    job, failure_reason(store, settings, ("edgetpu",), job), metric, c))
            continue
        edgetpu_info = None
        if e and e.get("status") != "not_applicable":
            edgetpu_info = {k: e.get(k) for k in ("status", "message", "ops_total", "ops_on_tpu",
                                                  "ops_on_cpu", "unmapped_ops", "prediction")}
        ckpt = by_ckpt[job["ckpt_id"]]
        with meter.part("baseline"):
            baseline, why = comparable_baseline(
                store, config.model_name, c["variant"], c["precision"], qat=bool(ckpt["qat"]),
                data_fingerprint=settings.get("evaluation_data_fingerprint"))
        with meter.part("decisions"):
            entry_metrics = {"variant": c["variant"], "precision": c["precision"],
                             "map": c["metrics"].get(metric),
                             "reference_map": reference.get(c["ckpt_id"]),
                             "contract_passed": c["contract_passed"],
                             "contract_failures": c.get("contract_failed"),
                             "latency_ms": c["latency_ms"], "edgetpu": edgetpu_info,
                             "baseline_reason": why}
            decision = evaluate_gates(entry_metrics, config, baseline)
            out.append({**c, "edgetpu": e, "decision": decision.to_dict(),
                        "passed": decision.passed,
                        "baseline": {"version": baseline["version"] if baseline else None,
                                     "reason": why}})
    return out


def _against_reference(settings: dict, store, checked: dict, meter) -> dict:
    """{(ckpt_id, precision): {drop, agreement}} of every checked non-float32 model whose
    float32 reference was checked in this run, from the detections both checks stored; each
    model's metrics.json gains the reference's metrics, the drop and the agreement (as when
    the check evaluated the reference itself). Nothing is run through a model here."""
    from include.quality.evaluate import AGREEMENT_THRESHOLD, agreement, drop_of

    pairs = []
    for (ckpt_id, precision), c in checked.items():
        ref = checked.get((ckpt_id, "float32"))
        if precision != "float32" and ref and c.get("detections_uri") \
                and ref.get("detections_uri"):
            pairs.append((c, ref))
    if not pairs:
        return {}
    out = {}
    with tempfile.TemporaryDirectory(prefix="mobiledet-gate-") as tmp:
        with meter.part("download"):
            from include.data.coco import open_dataset
            from include.quality.evaluate import default_split, load_ground_truth

            root = _eval_data_copy(settings, Path(tmp) / "data", annotations_only=True)
            dataset = open_dataset(root, split=default_split(root))
            docs = {}
            for c, ref in pairs:
                for d in (c, ref):
                    if d["detections_uri"] not in docs:
                        docs[d["detections_uri"]] = store.read_json(
                            store.key_of(d["detections_uri"]))
        with meter.part("agreement"):
            gt = load_ground_truth(dataset)
            for c, ref in pairs:
                mine, theirs = docs[c["detections_uri"]], docs[ref["detections_uri"]]
                limit = mine.get("max_images")
                image_ids = dataset.image_ids[:limit] if limit else dataset.image_ids
                category_ids = mine.get("category_ids") or sorted(
                    {d["category_id"] for d in mine["detections"]})
                drop = drop_of(mine["metrics"], theirs["metrics"])
                agree = agreement(gt, mine["detections"], theirs["detections"], image_ids,
                                  category_ids, AGREEMENT_THRESHOLD)
                out[(c["ckpt_id"], c["precision"])] = {"drop": drop, "agreement": agree}
                out[(c["ckpt_id"], c["precision"])]["_reference"] = {
                    "model": ref.get("model_uri"), "metrics": theirs["metrics"],
                    "detections": len(theirs["detections"]),
                    "evaluated_by": "the float32 model's own check in this run"}
        with meter.part("upload"):
            for k, v in out.items():
                c = checked[k]
                try:
                    mkey = store.key_of(c["metrics_uri"])
                    doc = store.read_json(mkey)
                    doc["evaluation"].update(reference=v["_reference"], drop=v["drop"],
                                             agreement=v["agreement"])
                    store.write_json(mkey, doc)
                except Exception:  # noqa: BLE001 - the decision does not depend on it
                    pass
    return {k: {"drop": v["drop"], "agreement": v["agreement"]} for k, v in out.items()}


# ------------------------------------------------------------------------------------------
# publish
# ------------------------------------------------------------------------------------------
def _tool_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"code_version": __version__}
    for name, pkg in (("tensorflow_version", "tensorflow"), ("converter_version", "tensorflow"),
                      ("litert_version", "ai-edge-litert")):
        try:
            out[name] = version(pkg)
        except PackageNotFoundError:
            out[name] = None
    return out


def publish_stage(settings: dict, decided: list[dict]) -> list[dict]:
    """Publish each checkpoint's passing models as one version (manifest last, latest.json after).

    Each model's manifest entry carries under ``metrics.costs`` what its tasks cost (convert,
    check, edgetpu) and what the checkpoint's shared tasks cost (plan, export, gate)."""
    with task_meter("publish", settings) as meter:
        return _publish(settings, decided, meter)


def _costs_of_models(store, settings: dict) -> dict:
    """{(ckpt_id or None, precision or None): {stage: brief record}} of the run so far."""
    from include.pipeline import costs

    out: dict = {}
    for r in costs.load(store, settings["run_id"]):
        out.setdefault((r.get("ckpt_id"), r.get("precision")), {})[r["stage"]] = costs.brief(r)
    return out


def _publish(settings: dict, decided: list[dict], meter) -> list[dict]:
    from include.store import make_version, publish

    config = _config(settings)
    store = _store(settings)
    with meter.part("costs"):
        try:
            spent = _costs_of_models(store, settings)
        except Exception:  # noqa: BLE001 - figures only
            spent = {}
    results = []
    for ckpt in settings["checkpoints"]:
        entries = [d for d in decided if d["ckpt_id"] == ckpt["ckpt_id"]]
        if not entries:
            continue
        shared = {**spent.get((None, None), {}), **spent.get((ckpt["ckpt_id"], None), {})}
        artifacts = []
        for d in entries:
            files = {}
            if d["passed"]:
                files = {"model.tflite": d["model_uri"], "conversion.json": d["conversion_uri"],
                         "metrics.json": d["metrics_uri"], "validation.json": d["validation_uri"]}
                files.update({f"picture-{i}.png": uri
                              for i, uri in enumerate(d.get("picture_uris") or [])})
            if d["passed"] and (d.get("edgetpu") or {}).get("edgetpu_model_uri"):
                files["model_edgetpu.tflite"] = d["edgetpu"]["edgetpu_model_uri"]
            model_costs = {**shared, **spent.get((d["ckpt_id"], d["precision"]), {})}
            metrics = {**d["metrics"], "latency_ms": d["latency_ms"], "size_bytes": d["size_bytes"]}
            if model_costs:
                metrics["costs"] = model_costs
            artifacts.append({"variant": d["variant"], "precision": d["precision"], "files": files,
                              "passed": d["passed"], "decision": d["decision"],
                              "metrics": metrics})
        version = make_version(ckpt["fingerprint"] or "unknown", ckpt.get("created") or "1970-01-01T00:00:00Z")
        lineage = {"checkpoint_uri": ckpt["uri"], "checkpoint_fingerprint": ckpt["fingerprint"],
                   "checkpoint_kind": ckpt["kind"], "qat": ckpt["qat"], "spec": ckpt["spec"],
                   "data_fingerprint": ckpt.get("data_fingerprint"), "run_id": settings["run_id"],
                   "evaluation_data": settings["data"],
                   "evaluation_data_fingerprint": settings.get("evaluation_data_fingerprint"),
                   **_tool_versions()}
        with meter.part("upload"):
            result = publish(store, config.model_name, version, artifacts, lineage,
                             publisher=settings["run_id"])
        results.append({"ckpt_id": ckpt["ckpt_id"], **result.to_dict()})
    return results


def published_assets(settings: dict, results: list[dict], decided: list[dict]) -> list[dict]:
    """One asset per model this run published: name ``mobiledet/MODEL/VARIANT/PRECISION``, URI
    the consumer pointer of that variant and precision, extra the manifest URI, version, gate
    metric and model file. A downstream DAG (an app build, a roll-out) schedules on it."""
    from include.store import open_store, pointer_key

    config = _config(settings)
    store = open_store(config.store_uri, conn_id=config.conn_id)
    assets = []
    for result in results:
        if result.get("status") != "published":
            continue
        decisions = {(d["variant"], d["precision"]): d["decision"] for d in decided
                     if d["ckpt_id"] == result["ckpt_id"]}
        for entry in result.get("published", []):
            variant, precision = entry["variant"], entry["precision"]
            model_file = (entry.get("files") or {}).get("model.tflite") or {}
            decision = decisions.get((variant, precision)) or {}
            assets.append({
                "name": f"mobiledet/{config.model_name}/{variant}/{precision}",
                "uri": store.uri(pointer_key(config.model_name, variant, precision)),
                "extra": {"model": config.model_name, "version": result["version"],
                          "variant": variant, "precision": precision,
                          "manifest_uri": result["manifest_uri"],
                          "model_uri": model_file.get("uri"), "sha256": model_file.get("sha256"),
                          "metric": decision.get("metric"), "map": decision.get("map")}})
    return assets


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------
STAGES_NOTE = ("wall_s, cpu_s and peak_rss_mb per task, measured by the task itself "
               "(include/pipeline/costs.py); the report's own entry is measured up to writing "
               "report.json (partial: true). {tasks} tasks ran in {processes} process(es): on a "
               "real executor each task is its own process and peak_rss_mb is the task's; under "
               "dag.test (mobiledet run) every task shares one process, so peak_rss_mb is that "
               "process's peak while the task ran, including what earlier tasks left loaded.")


def _task_id(record: dict) -> str:
    stage = record.get("stage")
    if stage == "edgetpu":   # the Edge TPU stage runs inside its model's check task
        return "model.check"
    return f"model.{stage}" if stage in ("convert", "check") else str(stage)


def _duration_s(stages: list[dict]) -> float | None:
    """From the first task's start to the last recorded task's end (the report's not yet)."""
    from datetime import datetime

    try:
        starts = [datetime.fromisoformat(r["started_at"]) for r in stages]
        ends = [datetime.fromisoformat(r["ended_at"]) for r in stages]
    except (KeyError, TypeError, ValueError):
        return None
    return round((max(ends) - min(starts)).total_seconds(), 3) if stages else None


RESULT_COLUMNS = ["model", "size MB", "metric", "drop vs float", "latency ms", "Edge TPU ops",
                  "gate"]


def _num_text(value, fmt: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, fmt)


def result_rows(decided: list[dict], metric: str) -> list[list[Any]]:
    rows = []
    for d in decided:
        e = d.get("edgetpu") or {}
        if e.get("status") in (None, "not_applicable"):
            tpu = "-"
        else:
            tpu = f"{e.get('ops_on_tpu')}/{e.get('ops_total')}"
            tpu += " (predicted)" if e.get("status") != "compiled" else ""
        check = next((c for c in d["decision"]["checks"] if c["name"] == "map_drop"), {})
        drop = check.get("value")
        reasons = d["decision"].get("reasons") or []
        value = (d.get("metrics") or {}).get(metric)
        rows.append([d["name"], _num_text(d.get("size_bytes"), ".2f", 1e6),
                     _num_text(value, ".3f") if not d.get("failed") or value is not None else "-",
                     "-" if drop is None else f"{drop:+.3f}",
                     _num_text(d.get("latency_ms"), ".1f"), tpu,
                     "PASS" if d["passed"] else "FAIL: " + "; ".join(reasons)])
    return rows


def report_stage(settings: dict, decided: list[dict] | None,
                 published: list[dict] | None) -> dict:
    """The run report (report.json, report.md under runs/<run_id>/), written whatever happened
    upstream; then the run fails if no model could be decided or the publish failed."""
    with task_meter("report", settings) as meter:
        return _report(settings, decided, published, meter)


def _report(settings: dict, decided: list[dict] | None, published: list[dict] | None,
            meter) -> dict:
    from include.console import format_table
    from include.errors import PipelineError
    from include.pipeline import costs

    with meter.part("summary"):
        config = _config(settings)
        store = _store(settings)
        metric = config.gates.metric
        gate_ran = decided is not None
        decided = list(decided or [])
        rows = result_rows(decided, metric)
        table = format_table(rows, [c if c != "metric" else metric for c in RESULT_COLUMNS])
        with_jobs = {d["ckpt_id"] for d in decided}
        failed_ckpts = [{"ckpt_id": c["ckpt_id"], "uri": c["uri"],
                         "reason": failure_reason(store, settings, ("export",), c)}
                        for c in settings["checkpoints"]
                        if gate_ran and c["ckpt_id"] not in with_jobs]
        problems = [f"{f['uri']}: {f['reason']}" for f in failed_ckpts]
        fatal = []
        if not gate_ran:
            fatal.append("the gate task failed (see its log), so no model was decided")
        elif settings["checkpoints"] and not any(not d.get("failed") for d in decided):
            fatal.append("no model could be decided: every export, conversion or check failed")
        if published is None:
            fatal.append("the publish task failed (see its log); nothing new is published")
        problems += fatal
    with meter.part("costs"):
        stages = [r for r in costs.load(store, settings["run_id"]) if r.get("stage") != "report"]
    stages.append(meter.snapshot())  # this task, up to writing the report
    stages = [dict(r, task_id=_task_id(r)) for r in stages]
    report = {"run_id": settings["run_id"], "metric": metric, "store": config.store_uri,
              "model_name": config.model_name, "checkpoints": settings["checkpoints"],
              "warnings": settings.get("warnings", []), "models": decided,
              "published": published or [], "failed_checkpoints": failed_ckpts,
              "already_claimed": settings.get("already_claimed", []),
              "problems": problems, "table": table, "stages": stages,
              "stage_totals": costs.totals(stages), "time_by_part": costs.parts_total(stages),
              "duration_s": _duration_s(stages),
              "stages_note": STAGES_NOTE.format(
                  processes=len({(r.get("host"), r.get("pid")) for r in stages}),
                  tasks=len(stages))}
    key = f"runs/{settings['run_id']}/report"
    with meter.part("upload"):
        report_uri = store.write_json(f"{key}.json", report)
        lines = [f"# MobileDet conversion run {settings['run_id']}", "", "```", table, "```", ""]
        for p in published or []:
            lines.append(f"- {p['ckpt_id']}: {p['status']} as {p['model']}/{p['version']}"
                         + (f" ({p['manifest_uri']})" if p.get("manifest_uri") else ""))
        lines += [f"- FAILED: {p}" for p in problems]
        lines += [f"- {c['uri']}: already claimed by run {c['claimed_by']}; not converted again"
                  for c in settings.get("already_claimed", [])]
        store.put_bytes("\n".join(lines).encode(), f"{key}.md")
    summary = {"report_uri": report_uri, "table": table, "published": [
        {k: p.get(k) for k in ("ckpt_id", "status", "model", "version", "manifest_uri")}
        for p in published or []], "passed": sum(d["passed"] for d in decided),
        "models": len(decided), "problems": problems,
        "already_claimed": settings.get("already_claimed", []), "run_id": settings["run_id"]}
    if fatal:  # a run fails only when nothing could be decided or published
        raise PipelineError("; ".join(problems), where=report_uri,
                            fix="read the report and the failed task's log; fix the input it "
                                "names and trigger the run again.")
    return summary
