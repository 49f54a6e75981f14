"""PublishModelOperator: publish one checked model as a release of the artifact store.

    PublishModelOperator(task_id="publish", store="s3://models/mobiledet-releases",
                         model_name="mobiledet", variant="edgetpu", precision="int8",
                         model="{{ ti.xcom_pull('convert')['model_uri'] }}",
                         files={"validation.json": "{{ ti.xcom_pull('contract')"
                                                   "['validation_uri'] }}"},
                         fingerprint="{{ params.fingerprint }}")

Through `MobiledetStoreHook.publish` (`include.store.publish`): the files are copied into the
release's own folder ``MODEL/VERSION/<publisher>/VARIANT/PRECISION/``, then manifest.json is
created by conditional create (exactly one publisher of a version wins; a second publish of the
same version is ``already_published`` and copies nothing), then the consumer pointers
``MODEL/latest/VARIANT/PRECISION.json`` move forward (never back). Each published model becomes
an asset event of ``mobiledet/MODEL/VARIANT/PRECISION`` (through the asset alias
``mobiledet_published``) whose URI is its consumer pointer: schedule a downstream DAG on it.
"""
from __future__ import annotations

from typing import Any

from include.convert.recipes import PRECISIONS, conversion_json_uri  # light: no TensorFlow
from include.mobiledet.spec import VARIANTS
from include.store.layout import PUBLISHED_ALIAS
from operators.base import MobiledetOperator, bad_argument, check_choice, check_location, \
    is_static
from operators.lineage import LineageMixin


def emit_published(context, log, assets: list[dict]) -> None:
    """Asset events (through the alias) for the models a publish released."""
    from airflow.sdk import Asset, AssetAlias

    events = context["outlet_events"][AssetAlias(PUBLISHED_ALIAS)]
    for asset in assets:
        events.add(Asset(name=asset["name"], uri=asset["uri"]), extra=asset["extra"])
        log.info("published %s (%s)", asset["name"], asset["extra"]["version"])


def _check_name(operator: str, arg: str, value: Any, optional: bool = False) -> None:
    import re

    if (optional and value is None) or not is_static(value):
        return
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", value):
        raise bad_argument(operator, arg, f"{value!r} is not a safe folder name.",
                           "use letters, digits, '.', '_' and '-' only, starting with a letter "
                           "or digit.")


class PublishModelOperator(LineageMixin, MobiledetOperator):
    """Publish one model (and the files that go with it) as MODEL/VERSION in the store.

    :param store: the artifact store (a folder or s3://bucket/prefix). Templated.
    :param model: the model.tflite to publish (path or URI). Templated.
    :param variant: cpu, edgetpu, dsp or gpu. Templated.
    :param precision: float32, dynamic, float16, int8 or uint8. Templated.
    :param fingerprint: the checkpoint's content hash: it decides whether a re-run is the same
        release (lineage.checkpoint_fingerprint). Templated.
    :param model_name: the release's model name (default mobiledet). Templated.
    :param version: the version folder (default: derived from fingerprint and `created`, as
        the pipeline does, so publishing the same checkpoint again is a no-op). Templated.
    :param created: the checkpoint's creation time (ISO 8601), for the version. Templated.
    :param files: more files of the release, name -> path or URI (conversion.json,
        validation.json, metrics.json ...); conversion.json next to the model is added when
        the model came from TFLiteConvertOperator. Templated.
    :param metrics: figures recorded with the model in the manifest. Templated.
    :param decision: the gate decision recorded with it (default: passed, no checks).
    :param lineage: more lineage (checkpoint_uri, evaluation data ...). Templated.
    :param publisher: names this publish (default: the run id; a retry reuses its folder).
    :param emit_asset: emit the asset event of the published model (default True).
    """

    template_fields = ("store", "model", "variant", "precision", "fingerprint", "model_name",
                       "version", "created", "files", "metrics", "lineage", "publisher",
                       "conn_id")
    ui_color = "#e8eaed"

    def __init__(self, *, store: str | None = None, model: str | None = None,
                 variant: str | None = None, precision: str | None = None,
                 fingerprint: str | None = None, model_name: str = "mobiledet",
                 version: str | None = None, created: str | None = None,
                 files: dict[str, str] | None = None, metrics: dict[str, Any] | None = None,
                 decision: dict[str, Any] | None = None, lineage: dict[str, Any] | None = None,
                 publisher: str | None = None, emit_asset: bool = True, **kwargs) -> None:
        if emit_asset:
            from airflow.sdk import AssetAlias
            kwargs.setdefault("outlets", [AssetAlias(PUBLISHED_ALIAS)])
        super().__init__(**kwargs)
        self.store = store
        self.model = model
        self.variant = variant
        self.precision = precision
        self.fingerprint = fingerprint
        self.model_name = model_name
        self.version = version
        self.created = created
        self.files = files
        self.metrics = metrics
        self.decision = decision
        self.lineage = lineage
        self.publisher = publisher
        self.emit_asset = emit_asset
        self.check_arguments()

    def check_arguments(self) -> None:
        name = type(self).__name__
        check_location(name, "store", self.store)
        check_location(name, "model", self.model, suffix=".tflite")
        for arg, allowed in (("variant", VARIANTS), ("precision", PRECISIONS)):
            if getattr(self, arg) is None:
                raise bad_argument(name, arg, "is required and was not given.",
                                   f"pass one of {', '.join(allowed)}.")
            check_choice(name, arg, getattr(self, arg), allowed)
        if self.fingerprint is None and self.version is None:
            raise bad_argument(name, "fingerprint", "is required (it names the release and "
                               "makes a second publish of the same checkpoint a no-op).",
                               "pass the checkpoint's fingerprint (checkpoint.json "
                               "'fingerprint'), or an explicit version and fingerprint.")
        _check_name(name, "model_name", self.model_name)
        _check_name(name, "version", self.version, optional=True)
        _check_name(name, "publisher", self.publisher, optional=True)
        if self.files is not None and is_static(self.files) and (
                not isinstance(self.files, dict) or not all(isinstance(v, str)
                                                            for v in self.files.values())):
            raise bad_argument(name, "files", "must map file names to paths or URIs.",
                               "pass e.g. files={'validation.json': 's3://.../validation.json'}.")

    def run(self, context) -> dict:
        from include import __version__
        from include.pipeline.plan import safe_run_id
        from include.pipeline.steps.publish import UNKNOWN_CREATED, asset_of
        from include.store import make_version

        self.check_arguments()
        model = str(self.model)
        files = {"model.tflite": model, **dict(self.files or {})}
        conversion = conversion_json_uri(model)   # where convert put the model's report
        if "conversion.json" not in files:
            try:
                parent, _, name = conversion.rpartition("/")
                if self.hook.get_conn(parent).is_file(name):
                    files["conversion.json"] = conversion
            except Exception:  # noqa: BLE001 - optional file
                pass
        fingerprint = self.fingerprint or self.version
        version = self.version or make_version(str(fingerprint), self.created or UNKNOWN_CREATED)
        decision = {"variant": self.variant, "precision": self.precision, "passed": True,
                    "checks": [], "reasons": [], **dict(self.decision or {})}
        artifact = {"variant": self.variant, "precision": self.precision, "files": files,
                    "passed": True, "decision": decision, "metrics": dict(self.metrics or {})}
        lineage = {"checkpoint_fingerprint": str(fingerprint), "code_version": __version__,
                   **dict(self.lineage or {})}
        publisher = self.publisher or safe_run_id(str(context.get("run_id") or "manual"))
        result = self.hook.publish(str(self.store), str(self.model_name), version, [artifact],
                                   lineage, publisher=publisher)
        self.log.info("%s/%s: %s", self.model_name, version, result["status"])
        released = [((e.get("files") or {}).get("model.tflite") or {}).get("uri")
                    for e in result.get("published") or []]
        self.ol_datasets = ([model], released)
        self.ol_verdicts = {uri: decision.get("checks") for uri in released}
        if self.emit_asset and result["status"] == "published":
            store = self.hook.get_conn(str(self.store))
            emit_published(context, self.log, [
                asset_of(store, str(self.model_name), result["version"], result["manifest_uri"],
                         entry, decision) for entry in result.get("published", [])])
        return {k: result.get(k) for k in ("model", "version", "status", "manifest_uri",
                                           "latest_uri", "publisher", "winner", "pointers")}
