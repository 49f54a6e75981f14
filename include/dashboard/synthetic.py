"""Synthetic releases for the dashboard's tests, benchmark and screenshots.

Each release goes through the real `include.store.publish_release` (so manifests, publisher folders
and consumer pointers are exactly what the pipeline writes), with gate decisions made by the
real `include.gates.evaluate_gates`. Model files are a few bytes: the dashboard reads sizes
and metrics from the manifest, not from the models.
"""
from __future__ import annotations

import hashlib
import random
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

DEFAULT_PAIRS = (("cpu", "float32"), ("cpu", "dynamic"), ("cpu", "float16"), ("cpu", "int8"),
                 ("edgetpu", "float32"), ("edgetpu", "int8"), ("gpu", "float32"),
                 ("gpu", "float16"))
START = datetime(2026, 1, 1, 4, 0, tzinfo=timezone.utc)
_SIZE = {"float32": 4.0e6, "dynamic": 1.45e6, "float16": 2.3e6, "int8": 1.6e6, "uint8": 1.2e6}
_OPS = {"CONV_2D": 60, "DEPTHWISE_CONV_2D": 40, "ADD": 12, "CONCATENATION": 2, "RESHAPE": 12,
        "LOGISTIC": 1, "CUSTOM": 1}


def _conversion(precision: str, i: int) -> dict:
    ops = dict(_OPS)
    settings = {"allow_custom_ops": True, "input_arrays": ["normalized_input_image_tensor"]}
    if precision != "float32":
        settings["optimizations"] = ["DEFAULT"]
    if precision == "int8":
        ops["QUANTIZE"] = 3
        settings.update(inference_input_type="uint8", representative_dataset=100 + (i % 2))
    if precision == "float16":
        ops["DEQUANTIZE"] = 230
        settings["supported_types"] = ["float16"]
    return {"precision": precision, "ops": ops, "op_count": sum(ops.values()),
            "recipe": {"description": f"{precision} recipe", "source_graph": "float",
                       "converter": "tf.compat.v1.lite.TFLiteConverter.from_frozen_graph",
                       "settings": settings}}


def make_releases(store, count: int, *, pairs=DEFAULT_PAIRS, model: str = "mobiledet",
                  start: datetime = START, seed: int = 0, reject_every: int = 5,
                  run_prefix: str = "synthetic") -> list[str]:
    """Publish `count` releases of `pairs` (one per day from `start`); returns the versions.

    Every `reject_every`-th release has its int8 models fail the drop gate (a rejection with
    the gate's own reason). Numbers drift slowly so the trends have something to show.
    """
    from include.config import PipelineConfig
    from include.gates import evaluate_gates
    from include.store import make_version, open_store, publish_release

    store = open_store(store)
    config = PipelineConfig()
    rng = random.Random(seed)
    versions = []
    with tempfile.TemporaryDirectory(prefix="mobiledet-synthetic-") as tmp:
        for i in range(count):
            created = start + timedelta(days=i)
            fp = hashlib.sha256(f"{model}-{seed}-{i}".encode()).hexdigest()
            version = make_version(fp, created)
            base_map = 0.42 + 0.08 * (i / max(1, count - 1)) + rng.uniform(-0.01, 0.01)
            artifacts = []
            for variant, precision in pairs:
                drop = 0.0 if precision == "float32" else rng.uniform(0.0, 0.012)
                if precision == "int8" and reject_every and i % reject_every == reject_every - 1:
                    drop = 0.09
                value = round(base_map - drop, 4)
                latency = round((1.2 if variant != "cpu" else 2.0) *
                                (1.6 if precision == "int8" else 1.0) + rng.uniform(0, 0.2), 3)
                size = int(_SIZE.get(precision, 2e6) * (1 + 0.001 * i))
                edgetpu = None
                if variant == "edgetpu" and precision in ("int8", "uint8"):
                    edgetpu = {"status": "not_installed", "prediction": {
                        "ops_total": 127, "ops_on_tpu": 126, "ops_on_cpu": 1,
                        "unmapped_ops": [{"op": "CUSTOM", "count": 1,
                                          "reason": "post-process"}]}}
                decision = evaluate_gates(
                    {"variant": variant, "precision": precision, "map": value,
                     "reference_map": round(base_map, 4), "contract_passed": True,
                     "latency_ms": latency, "edgetpu": edgetpu}, config)
                model_file = Path(tmp) / f"{i}-{variant}-{precision}.tflite"
                model_file.write_bytes(f"TFL3 {version} {variant} {precision}".encode())
                files = {}
                if decision.passed:
                    files = {"model.tflite": str(model_file),
                             "conversion.json": _conversion(precision, i),
                             "metrics.json": {"evaluation": {"metrics": {"AP50": value}},
                                              "benchmark": {"latency_ms": {"mean": latency}}}}
                artifacts.append({"variant": variant, "precision": precision,
                                  "passed": decision.passed, "files": files,
                                  "decision": decision.to_dict(),
                                  "metrics": {"AP50": value, "latency_ms": latency,
                                              "size_bytes": size}})
            lineage = {"checkpoint_uri": f"s3://checkpoints/{model}/{i:04d}",
                       "checkpoint_fingerprint": fp, "checkpoint_kind": "checkpoint",
                       "qat": False, "spec": {"variant": "edgetpu", "input_size": 320},
                       "data_fingerprint": "sha256:" + "d" * 64, "run_id": f"{run_prefix}_{i:04d}",
                       "evaluation_data": "s3://data/coco-val", "evaluation_data_fingerprint":
                           "sha256:" + "e" * 64, "code_version": "0.1.0",
                       "tensorflow_version": "2.21.0", "converter_version": "2.21.0",
                       "litert_version": "2.3.0"}
            publish_release(store, model, version, artifacts, lineage, now=created + timedelta(hours=1),
                    publisher=f"{run_prefix}_{i:04d}")
            versions.append(version)
    return versions
