"""Checks of one .tflite detector, each its own operator:

- CocoEvaluateOperator: COCO mAP with pycocotools (`include.quality.evaluate`), optionally the
  drop against a float reference, optionally failing below a minimum.
- OutputContractOperator: the output contract with Great Expectations
  (`include.quality.validate`): shapes, dtypes, box order and range, class ids, scores, count.
- TFLiteBenchmarkOperator: latency, size and memory in the LiteRT interpreter
  (`include.quality.benchmark`), optionally failing above a latency ceiling.

Each takes the model as a local path or store URI (with the sha256 it was recorded with, when
known: a different file is refused), writes its result files to `output` when given, and
returns a small JSON-able dict as its XCom. TensorFlow, LiteRT, pycocotools and Great
Expectations load inside `execute`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from include.convert.recipes import conversion_json_uri
from include.pipeline.steps.check import SUMMARY_METRICS
from operators.base import (MobiledetOperator, bad_argument, check_count, check_location,
                            check_number, is_static)

class _ModelOperator(MobiledetOperator):
    """A check of one model: `model` (path or URI) and its recorded `sha256`."""

    def __init__(self, *, model: str | None = None, sha256: str | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.sha256 = sha256

    def check_arguments(self) -> None:
        check_location(type(self).__name__, "model", self.model)

    def local_model(self, workdir: Path) -> Path:
        """The model as a local file (downloaded when remote, with its conversion.json, which
        names the classes and the input the recipe promised)."""
        uri = str(self.model)
        if not self.hook.is_remote(uri):
            local = self.hook.local_copy(uri, workdir)
            if self.sha256:
                from include.store import sha256_file
                got = sha256_file(local)
                if got != str(self.sha256).rpartition(":")[2]:
                    from include.errors import StoreError
                    raise StoreError(f"the model is not the one that was recorded: sha256 {got}"
                                     f" instead of {self.sha256}.", where=uri,
                                     fix="pass the sha256 of this file, or the file it names.")
            return local
        target = workdir / "model" / "model.tflite"
        path = self.hook.fetch(uri, target, sha256=self.sha256)
        try:
            self.hook.fetch(conversion_json_uri(uri), target.parent / "conversion.json")
        except Exception:  # noqa: BLE001 - optional: the checks then read the model itself
            self.log.info("no conversion.json next to %s; reading the model itself", uri)
        return path


class CocoEvaluateOperator(_ModelOperator):
    """COCO evaluation of one .tflite detector.

    :param model: the .tflite (local path or store URI). Templated.
    :param data: a COCO-format dataset (annotations/instances_*.json + images). Templated.
    :param output: a folder (path or URI) for metrics.json and detections.json. Templated.
    :param reference: a float .tflite to compare with (drop and agreement). Templated.
    :param max_images: evaluate the first N images only.
    :param threads: interpreter threads (default: the cores available).
    :param metric: the metric `min_metric` applies to (AP, AP50, ...; default AP50).
    :param min_metric: fail the task when `metric` is below it.
    :param sha256: the model's recorded sha256; another file is refused.
    """

    template_fields = ("model", "data", "output_uri", "reference", "sha256", "conn_id")
    ui_color = "#e6f4ea"

    def __init__(self, *, data: str | None = None, output: str | None = None,
                 reference: str | None = None, max_images: int | None = None,
                 threads: int | None = None, metric: str = "AP50",
                 min_metric: float | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data = data
        self.output_uri = output
        self.reference = reference
        self.max_images = max_images
        self.threads = threads
        self.metric = metric
        self.min_metric = min_metric
        self.check_arguments()

    def check_arguments(self) -> None:
        name = type(self).__name__
        super().check_arguments()
        check_location(name, "data", self.data)
        check_location(name, "output", self.output_uri, optional=True)
        check_location(name, "reference", self.reference, optional=True)
        check_count(name, "max_images", self.max_images, 1, optional=True, example=100)
        check_count(name, "threads", self.threads, 1, optional=True, example=2)
        if is_static(self.metric) and self.metric not in SUMMARY_METRICS:
            raise bad_argument(name, "metric", f"{self.metric!r} is not a COCO summary metric.",
                               f"pass one of {', '.join(SUMMARY_METRICS)}.")
        if self.min_metric is not None and is_static(self.min_metric) and (
                isinstance(self.min_metric, bool) or not isinstance(self.min_metric, (int, float))
                or not 0.0 <= self.min_metric <= 1.0):
            raise bad_argument(name, "min_metric", f"must be a number in [0, 1], got "
                               f"{self.min_metric!r}.", "pass e.g. min_metric=0.3.")

    def run(self, context) -> dict:
        from include.console import to_jsonable
        from include.pipeline.inputs import coco_or_all, evaluated_images

        self.check_arguments()
        with tempfile.TemporaryDirectory(prefix="mobiledet-evaluate-") as tmp:
            tmp = Path(tmp)
            model = self.local_model(tmp)
            reference = None
            if self.reference:
                reference = self.hook.fetch(str(self.reference), tmp / "reference" /
                                            "model.tflite") if self.hook.is_remote(
                    str(self.reference)) else self.hook.local_copy(str(self.reference), tmp)
            data = self.hook.dataset(str(self.data), tmp / "data", images=lambda root:
                                     coco_or_all(root, lambda: evaluated_images(
                                         root, self.max_images)))
            from include.quality.evaluate import evaluate
            result = evaluate(model, data, max_images=self.max_images, threads=self.threads,
                              reference=reference, out=str(tmp / "detections.json"),
                              show_progress=False)
            result = to_jsonable(result)
            out = {"metrics": {k: result["metrics"].get(k) for k in SUMMARY_METRICS},
                   "images": result.get("images"), "drop": result.get("drop"),
                   "agreement": result.get("agreement"), "metric": self.metric}
            if self.output_uri:
                base = str(self.output_uri).rstrip("/")
                out["metrics_uri"] = self.hook.write_json(result, f"{base}/metrics.json")
                out["detections_uri"] = self.hook.upload(tmp / "detections.json",
                                                         f"{base}/detections.json")
        value = out["metrics"].get(self.metric)
        self.log.info("%s: %s = %s on %s images", self.model, self.metric, value, out["images"])
        if self.min_metric is not None and (value is None or value < self.min_metric):
            from include.errors import ValidationFailed
            raise ValidationFailed(f"{self.metric} is {value}, below min_metric "
                                   f"{self.min_metric}.", where=str(self.model),
                                   fix="convert with a more accurate recipe (float32, or int8 "
                                       "with more calibration images), or lower min_metric.")
        return out


class OutputContractOperator(_ModelOperator):
    """The model's output contract, checked with Great Expectations.

    :param model: the .tflite (local path or store URI). Templated.
    :param data: images to run the model on (a COCO dataset or an image folder; default:
        seeded noise images). Templated.
    :param output: a folder (path or URI) for validation.json and the Data Docs. Templated.
    :param images: how many images are run.
    :param expect_input_dtype: the input dtype the model must have (default: what its
        conversion.json promises).
    :param num_classes: the class count (default: from conversion.json or the model).
    :param fail_on_violation: fail the task when an expectation fails (default); otherwise the
        XCom says which failed and the task succeeds.
    :param sha256: the model's recorded sha256; another file is refused.
    """

    template_fields = ("model", "data", "output_uri", "sha256", "conn_id")
    ui_color = "#e6f4ea"

    def __init__(self, *, data: str | None = None, output: str | None = None,
                 images: int = 8, expect_input_dtype: str | None = None,
                 num_classes: int | None = None, fail_on_violation: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.data = data
        self.output_uri = output
        self.images = images
        self.expect_input_dtype = expect_input_dtype
        self.num_classes = num_classes
        self.fail_on_violation = fail_on_violation
        self.check_arguments()

    def check_arguments(self) -> None:
        name = type(self).__name__
        super().check_arguments()
        check_location(name, "data", self.data, optional=True)
        check_location(name, "output", self.output_uri, optional=True)
        check_count(name, "images", self.images, 1, example=8)
        check_count(name, "num_classes", self.num_classes, 1, optional=True, example=90)
        if self.expect_input_dtype is not None and is_static(self.expect_input_dtype) and \
                self.expect_input_dtype not in ("uint8", "int8", "float32"):
            raise bad_argument(name, "expect_input_dtype", f"{self.expect_input_dtype!r} is "
                               "not an input dtype a MobileDet model has.",
                               "pass uint8, int8 or float32, or leave it out.")

    def run(self, context) -> dict:
        from include.convert.calibration import calibration_files
        from include.pipeline.inputs import coco_or_all

        self.check_arguments()
        with tempfile.TemporaryDirectory(prefix="mobiledet-validate-") as tmp:
            tmp = Path(tmp)
            model = self.local_model(tmp)
            data = None
            if self.data:
                data = self.hook.dataset(str(self.data), tmp / "data", images=lambda root:
                                         coco_or_all(root, lambda: calibration_files(
                                             root, self.images)))
            from include.quality.validate import validate
            summary = validate(model, data=data, images=self.images,
                               out_dir=str(tmp / "validation"),
                               expect_input_dtype=self.expect_input_dtype,
                               num_classes=self.num_classes)
            out = {"success": bool(summary["success"]), "failed": list(summary["failed"]),
                   "expectations": [{k: r.get(k) for k in ("name", "success", "details")}
                                    for r in summary["expectations"]],
                   "images": summary["images"], "num_classes": summary["num_classes"],
                   "max_detections": summary["max_detections"], "input": summary["input"]}
            if self.output_uri:
                base = str(self.output_uri).rstrip("/")
                out["validation_uri"] = self.hook.upload(summary["result_json"],
                                                         f"{base}/validation.json")
                out["data_docs_uri"] = self.hook.upload_dir(
                    Path(summary["data_docs"]).parent, f"{base}/data_docs")
        self.log.info("output contract of %s: %s (%d expectations)", self.model,
                      "passed" if out["success"] else "FAILED " + ", ".join(out["failed"]),
                      len(out["expectations"]))
        if self.fail_on_violation and not out["success"]:
            from include.quality.validate import failure_error
            raise failure_error({**summary, "result_json": out.get("validation_uri",
                                                                   summary["result_json"])})
        return out


class TFLiteBenchmarkOperator(_ModelOperator):
    """Latency (min, mean, p50, p90, max), size and memory of one .tflite model.

    :param model: the .tflite (local path or store URI). Templated.
    :param output: a JSON file (path or URI) for the full result. Templated.
    :param threads: interpreter threads (default: the cores available).
    :param warmup: untimed runs first. :param runs: timed runs.
    :param max_latency_ms: fail the task when the mean latency is above it.
    :param sha256: the model's recorded sha256; another file is refused.
    """

    template_fields = ("model", "output_uri", "sha256", "conn_id")
    ui_color = "#e6f4ea"

    def __init__(self, *, output: str | None = None, threads: int | None = None,
                 warmup: int = 10, runs: int = 50, max_latency_ms: float | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.output_uri = output
        self.threads = threads
        self.warmup = warmup
        self.runs = runs
        self.max_latency_ms = max_latency_ms
        self.check_arguments()

    def check_arguments(self) -> None:
        name = type(self).__name__
        super().check_arguments()
        check_location(name, "output", self.output_uri, optional=True, suffix=".json")
        check_count(name, "threads", self.threads, 1, optional=True, example=2)
        check_count(name, "warmup", self.warmup, 0)
        check_count(name, "runs", self.runs, 1, example=50)
        check_number(name, "max_latency_ms", self.max_latency_ms)

    def run(self, context) -> dict[str, Any]:
        from include.console import to_jsonable

        self.check_arguments()
        with tempfile.TemporaryDirectory(prefix="mobiledet-benchmark-") as tmp:
            model = self.local_model(Path(tmp))
            from include.quality.benchmark import benchmark
            result = to_jsonable(benchmark(model, threads=self.threads, warmup=self.warmup,
                                           runs=self.runs))
        result["model"] = str(self.model)
        if self.output_uri:
            result["result_uri"] = self.hook.write_json(result, str(self.output_uri))
        mean = result["latency_ms"]["mean"]
        self.log.info("%s: mean latency %.2f ms over %d runs", self.model, mean, self.runs)
        if self.max_latency_ms is not None and mean > self.max_latency_ms:
            from include.errors import ValidationFailed
            raise ValidationFailed(f"mean latency {mean:.2f} ms is above max_latency_ms "
                                   f"{self.max_latency_ms}.", where=str(self.model),
                                   fix="use a faster precision (int8) or more threads, or "
                                       "raise max_latency_ms.")
        return result
