"""The pipeline's typed settings (pydantic v2): precisions per variant, gate thresholds, devices,
run sizes, the store. See `include.config` for where settings come from and how to load them.
"""
from __future__ import annotations

import contextvars
import copy
import json
from typing import Annotated, Any, ClassVar, Literal, Mapping, Optional, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr,
                      TypeAdapter, ValidationError, ValidationInfo, field_validator)

# Precision facts live in the recipe table (include/convert/recipes.py), read from there.
from include.config.messages import Problem, config_error, did_you_mean
from include.convert.recipes import (ACCELERATOR_VARIANTS, DEFAULT_MATRIX, DEFAULT_MAX_MAP_DROP,
                                     PRECISIONS)
from include.errors import ConfigError
from include.settings import settings
from include.mobiledet.spec import VARIANTS
from include.quality.device_log import DELEGATES as DEVICE_DELEGATES  # benchmark_model's

CHECKPOINT_KINDS = ("float", "qat", "any")  # keys of a per-variant precisions mapping
GATE_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCO summary metrics
EDGETPU_GATE_MODES = ("auto", "compiler", "prediction", "off")
STORE_ENV = "MOBILEDET_STORE"
DEFAULT_STORE_DIR = "mobiledet-store"
DEFAULT_CONN_ID = "aws_default"
DEFAULT_MODEL_NAME = "mobiledet"
#: the gates' default floor on the metric: below it a model detects nothing
MIN_MAP_FLOOR = 0.01

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------
def _no_bool(value: Any) -> Any:
    """Numbers: true/false are not 1/0 here (pydantic's lax mode would take them)."""
    if isinstance(value, bool):
        raise Problem(f"expected a number, got {value!r}.", "set a number, not true/false.")
    return value


def _none_words(value: Any) -> Any:
    """Optional settings: null, "", "none", "null" and "off" all mean off."""
    if isinstance(value, str) and value.strip().lower() in ("", "none", "null", "off"):
        return None
    return _no_bool(value)


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _unique(value: list) -> list:
    seen = []
    for item in value:
        if item in seen:
            raise Problem(f"precision {item!r} is listed twice.", "list each precision once.")
        seen.append(item)
    return seen


Precision = Literal[PRECISIONS]  # type: ignore[valid-type]
Variant = Literal[VARIANTS]  # type: ignore[valid-type]
# (constraints before the BeforeValidator, so the JSON schema shows them as minimum/maximum)
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False), BeforeValidator(_no_bool)]
Count = Annotated[int, Field(ge=1), BeforeValidator(_no_bool)]
PrecisionList = Annotated[list[Precision], BeforeValidator(_listify), Field(min_length=1)]


_VALIDATING = contextvars.ContextVar("mobiledet_config_validating", default=False)


class _Model(BaseModel):
    """Frozen, strict about keys; direct construction raises ConfigError, not ValidationError."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    _where: ClassVar[tuple] = ()  # the key path of this model inside PipelineConfig

    def __init__(self, **data):
        if _VALIDATING.get():  # inside an outer validation: it reports the whole key path
            super().__init__(**data)
            return
        token = _VALIDATING.set(True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self), pipeline_schema(),
                               prefix=self._where) from None
        finally:
            _VALIDATING.reset(token)


class PrecisionsPerKind(_Model):
    """Precisions for one variant, per checkpoint kind (any = both kinds)."""

    float: Optional[PrecisionList] = Field(None, description="for float checkpoints")
    qat: Optional[PrecisionList] = Field(None, description="for QAT checkpoints")
    any: Optional[PrecisionList] = Field(None, description="for either kind (checked against "
                                                           "the kind when the run is planned)")

    @field_validator("float", "qat", "any")
    @classmethod
    def _no_duplicates(cls, value):
        return None if value is None else _unique(value)


def _per_kind(value: Any) -> Any:
    """`cpu: [float32, int8]` is short for `cpu: {any: [float32, int8]}`."""
    return {"any": value} if isinstance(value, (str, list, tuple)) else value


_PRECISION_LIST = TypeAdapter(PrecisionList)
PrecisionSpec = Annotated[PrecisionsPerKind, BeforeValidator(
    _per_kind, json_schema_input_type=Union[PrecisionList, PrecisionsPerKind])]


# --------------------------------------------------------------------------------------------
# Precisions
# --------------------------------------------------------------------------------------------
def _check_variant(variant: Any, where: str = "variant") -> str:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; allowed values: {', '.join(VARIANTS)}."
                          + did_you_mean(variant, VARIANTS), where=where,
                          fix="use one of the allowed variants.")
    return variant


def default_precisions(variant: str, qat: bool) -> list[str]:
    """The precisions converted by default for a checkpoint of `variant` (QAT or float)."""
    _check_variant(variant)
    return list(DEFAULT_MATRIX["qat" if qat else "float"][variant])


def _check_precision_list(value: Any, where: str) -> list[str]:
    try:
        return _unique(_PRECISION_LIST.validate_python(value))
    except ValidationError as exc:
        raise config_error(exc, None, pipeline_schema(), where=where) from None
    except Problem as exc:
        raise ConfigError(exc.problem, where=where, fix=exc.fix) from None


def check_precisions(variant: str, qat: bool, precisions, where: str = "precisions") -> list[str]:
    """Validate `precisions` for a checkpoint of `variant`; return warnings, raise ConfigError.

    * uint8 needs a QAT graph (its fake-quant nodes carry the ranges): refused for a float
      checkpoint.
    * int8 is post-training quantization of a float graph: refused for a QAT checkpoint.
    * dynamic and float16 on edgetpu/dsp are allowed with a warning: those accelerators run only
      full-integer models, so such a model falls back to the CPU.
    """
    _check_variant(variant)
    kind = "QAT" if qat else "float"
    items = _check_precision_list(precisions, where)
    warnings = []
    for p in items:
        if p == "uint8" and not qat:
            raise ConfigError(
                f"uint8 was asked for a float {variant} checkpoint; uint8 needs a QAT graph "
                "whose fake-quant nodes hold the trained quantization ranges.", where=where,
                fix="use int8 (post-training quantization with calibration data) for float "
                    "checkpoints, or train with quantization-aware training for uint8.")
        if p == "int8" and qat:
            raise ConfigError(
                f"int8 was asked for a QAT {variant} checkpoint; int8 post-training quantization "
                "needs a float graph, and a QAT graph already carries its quantization ranges.",
                where=where, fix="use uint8 for QAT checkpoints (or a float checkpoint for int8).")
        if p in ("dynamic", "float16") and variant in ACCELERATOR_VARIANTS:
            warnings.append(f"{where}: {p} on {variant} is allowed but {variant} runs only "
                            "full-integer models; this model will fall back to the CPU.")
        if p in ("dynamic", "float16") and qat:
            warnings.append(f"{where}: {p} from a {kind} {variant} checkpoint ignores the "
                            "quantization ranges learned in training.")
    return warnings


# --------------------------------------------------------------------------------------------
# The store location
# --------------------------------------------------------------------------------------------
def store_setting(value: Any, where: str, base_dir: str | None) -> str:
    """Normalise a store location (folder, file:///abs, s3://bucket/prefix); ConfigError."""
    try:
        return _normalise_store(value, base_dir)
    except Problem as exc:
        raise ConfigError(exc.problem, where=where, fix=exc.fix) from None


def _normalise_store(value: Any, base_dir: str | None) -> str:
    """A store location as every task sees it (`include.store.uri.normalise`), or _Problem."""
    from include.errors import StoreError
    from include.store.uri import normalise

    if not isinstance(value, str) or not value.strip():
        raise Problem(f"expected a folder, file:///abs/path or s3://bucket/prefix, got "
                       f"{value!r}.", f"set a store location, or set {STORE_ENV}.")
    try:
        return normalise(value, base_dir=base_dir)
    except StoreError as exc:
        raise Problem(exc.problem, exc.fix or "use a folder or s3://bucket/prefix.") from None


# --------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------
class GateConfig(_Model):
    """Thresholds the gates apply to each converted model.

    `metric` names the COCO metric the gates read (AP50 by default; AP is AP@[.5:.95]).
    `max_map_drop[precision]`: allowed absolute drop of that metric against the run's float32
    reference (a partial mapping is merged with the defaults). `min_map`: floor on the metric;
    the default 0.01 rejects a model that detects nothing (an untrained or broken checkpoint),
    0 turns it off. `max_latency_ms`: None = off. `max_latency_ratio`: an integer cpu/gpu
    model's latency_ratio_to_float32 ceiling (default 1.0, None = off; edgetpu/dsp report it).
    `require_edgetpu_mapped`: every op but the SSD
    post-process must map to the Edge TPU. `edgetpu`: who decides that: ``auto`` the compiler
    where installed, else the offline prediction; ``compiler`` (a missing compiler fails;
    `require_edgetpu_compiler` is the old spelling of this); ``prediction``; ``off``.
    `regression_tolerance`: allowed absolute drop against the newest comparable release (same
    model, variant, precision, source kind and evaluation dataset; none on a first release).
    """

    _where: ClassVar[tuple] = ("gates",)

    metric: Literal[GATE_METRICS] = Field(  # type: ignore[valid-type]
        "AP50", description="the COCO summary metric the gates read (AP is AP@[.5:.95])")
    max_map_drop: dict[Precision, Fraction] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_MAP_DROP),
        json_schema_extra={"default": DEFAULT_MAX_MAP_DROP},
        description="allowed absolute drop of the metric against the run's float32 reference, "
                    "per precision; merged with the defaults "
                    + json.dumps(DEFAULT_MAX_MAP_DROP))
    min_map: Fraction = Field(MIN_MAP_FLOOR, description="floor on the metric (default 0.01: a "
                              "model that detects nothing is rejected; 0 = off)")
    require_contract: bool = Field(True, description="the output contract must hold")
    max_latency_ms: Annotated[Optional[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]],
                              BeforeValidator(_none_words)] = Field(
        None, description="latency ceiling in ms (null = off)")
    max_latency_ratio: Annotated[Optional[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]],
                                 BeforeValidator(_none_words)] = Field(
        1.0, description="an integer cpu/gpu model's latency against the float32 model of the "
                         "same checkpoint, measured side by side (1.0: not slower; null = off; "
                         "edgetpu/dsp: reported only)")
    require_edgetpu_mapped: bool = Field(
        True, description="every op but the SSD post-process must map to the Edge TPU")
    require_edgetpu_compiler: bool = Field(
        False, description="old spelling of edgetpu: compiler")
    regression_tolerance: Fraction = Field(
        0.02, description="allowed drop against the newest comparable release")
    edgetpu: Literal[EDGETPU_GATE_MODES] = Field(  # type: ignore[valid-type]
        "auto", description="who decides the Edge TPU mapping: auto (the compiler where "
                            "installed, else the offline prediction), compiler, prediction, off")

    @field_validator("max_map_drop")
    @classmethod
    def _merge_defaults(cls, value: dict) -> dict:
        return {**DEFAULT_MAX_MAP_DROP, **value}

    def max_drop(self, precision: str) -> float:
        if precision not in self.max_map_drop:
            raise ConfigError(f"unknown precision {precision!r}; allowed values: "
                              f"{', '.join(PRECISIONS)}.", where="precision",
                              fix="use one of the allowed precisions.")
        return self.max_map_drop[precision]

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class LedgerConfig(_Model):
    """How runs take work from the checkpoint ledger (include/store/ledger.py)."""

    _where: ClassVar[tuple] = ("ledger",)

    batch_size: Count = Field(8, description="checkpoints one run claims at most")
    max_attempts: Count = Field(3, description="conversions of one checkpoint before it is "
                                               "failed for good")
    lease_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False), BeforeValidator(_no_bool)] = \
        Field(7200.0, description="seconds a run holds its claim; a run that dies frees it then")
    backoff_s: Annotated[float, Field(ge=0.0, allow_inf_nan=False), BeforeValidator(_no_bool)] = \
        Field(60.0, description="wait before retrying a transient failure (doubling)")


class RetentionConfig(_Model):
    """What housekeeping keeps (`mobiledet prune`, the mobiledet_housekeeping DAG). A release
    that a pointer or channel names, or that is yanked, is always kept."""

    _where: ClassVar[tuple] = ("retention",)

    keep_releases: Count = Field(10, description="newest releases kept per model")
    keep_runs_days: Annotated[float, Field(ge=0.0, allow_inf_nan=False),
                              BeforeValidator(_no_bool)] = Field(
        7.0, description="days a finished run's intermediate files are kept")
    keep_failures_days: Annotated[float, Field(ge=0.0, allow_inf_nan=False),
                                  BeforeValidator(_no_bool)] = Field(
        30.0, description="days a run's failure records are kept")


class ChannelRule(_Model):
    """Promote what one channel names to another once it has named it for `after_hours`
    without a yank (applied by the housekeeping DAG)."""

    _where: ClassVar[tuple] = ("channel_rules",)

    source: str = Field(..., alias="from", pattern=_NAME_PATTERN, description="e.g. canary")
    target: str = Field(..., alias="to", pattern=_NAME_PATTERN, description="e.g. stable")
    after_hours: Annotated[float, Field(gt=0.0, allow_inf_nan=False),
                           BeforeValidator(_no_bool)] = Field(24.0, description="hours")

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              populate_by_name=True)


_SERIAL_PATTERN = r"^\S+$"
_QUEUE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"


class DeviceConfig(_Model):
    """A phone plugged into a Celery worker's machine, benchmarked over adb with TFLite's
    benchmark_model (include/quality/device.py). `queue`: the Celery queue of that worker
    (default device-<name>). `max_device_latency_ms`: this device's latency gate (null = off:
    a missing figure is then "not measured" and passes)."""

    _where: ClassVar[tuple] = ("devices",)

    name: str = Field(..., pattern=_NAME_PATTERN, description="the device's name (a column "
                                                              "on the dashboard)")
    serial: str = Field(..., pattern=_SERIAL_PATTERN, description="its adb serial, as `adb "
                                                                  "devices` lists it")
    delegates: Annotated[list[Literal[DEVICE_DELEGATES]],  # type: ignore[valid-type]
                         BeforeValidator(_listify), Field(min_length=1)] = Field(
        default_factory=lambda: ["cpu"], description="delegates to benchmark: "
                                                     + ", ".join(DEVICE_DELEGATES))
    queue: Optional[str] = Field(None, pattern=_QUEUE_PATTERN, description="Celery queue of the "
                                 "worker the device is plugged into (default device-<name>)")
    max_device_latency_ms: Annotated[
        Optional[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]],
        BeforeValidator(_none_words)] = Field(None, description="latency gate on this device "
                                                                "in ms (null = off)")
    benchmark_binary: Optional[str] = Field(None, description="path of the Android build of "
                                            "TFLite's benchmark_model on the worker")
    timeout_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False),
                         BeforeValidator(_no_bool)] = Field(
        600.0, description="time limit of one benchmark run in seconds")

    @field_validator("delegates")
    @classmethod
    def _one_each(cls, value: list) -> list:
        if len(set(value)) != len(value):
            raise Problem(f"a delegate is listed twice in {value!r}.", "list each delegate once.")
        return value

    @field_validator("queue")
    @classmethod
    def _default_queue(cls, value, info: ValidationInfo):
        return value if value is not None else f"device-{info.data.get('name', 'device')}"


def _unique_devices(value: list) -> list:
    for key in ("name", "serial"):
        seen = set()
        for dev in value:
            item = getattr(dev, key)
            if item in seen:
                raise Problem(f"device {key} {item!r} is listed twice.",
                               f"give each device its own {key}.")
            seen.add(item)
    return value


class PipelineConfig(_Model):
    """Every setting of one pipeline run. Build it with `load_config` or `from_dict`.

    `warnings` (not a setting) holds what loading the config found worth saying, e.g. a
    precision that makes an accelerator model fall back to the CPU.
    """

    store_uri: str = Field("", description="artifact store: a folder, file:///abs/path or "
                                           f"s3://bucket/prefix (empty: ${STORE_ENV}, else "
                                           f"./{DEFAULT_STORE_DIR})")
    conn_id: Optional[str] = Field(DEFAULT_CONN_ID, description="Airflow connection for s3:// "
                                   "(null: boto3's default credentials)")
    model_name: str = Field(DEFAULT_MODEL_NAME, pattern=_NAME_PATTERN,
                            description="name of the published model (a folder name)")
    precisions: dict[Variant, PrecisionSpec] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="precisions per variant instead of the default "
        "matrix: a list, or {float: [...], qat: [...], any: [...]}")
    gates: GateConfig = Field(default_factory=GateConfig, description="gate thresholds")
    calibration_count: Count = Field(100, description="int8 calibration images")
    eval_max_images: Annotated[Optional[Annotated[int, Field(ge=1)]],
                               BeforeValidator(_none_words)] = Field(
        None, description="evaluate on at most this many images (null = all)")
    threads: Count = Field(2, description="interpreter threads")
    benchmark_runs: Count = Field(20, description="timed benchmark runs")
    benchmark_warmup: Annotated[int, Field(ge=0), BeforeValidator(_no_bool)] = Field(
        3, description="untimed warm-up runs")
    edgetpu_timeout_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False),
                                 BeforeValidator(_no_bool)] = Field(
        180.0, description="Edge TPU compiler time limit in seconds")
    search_budget: Annotated[int, Field(ge=0), BeforeValidator(_no_bool)] = Field(
        4, description="int8 recipe search for a model that fails the accuracy gate: how many "
                       "candidate recipes may be converted (0 = no search)")
    devices: Annotated[list[DeviceConfig], AfterValidator(_unique_devices)] = Field(
        default_factory=list, description="phones benchmarked over adb (none: no device "
                                          "benchmarks)")
    channels: Annotated[list[Annotated[str, Field(pattern=_NAME_PATTERN)]],
                        BeforeValidator(_listify)] = Field(
        default_factory=lambda: ["canary", "stable"],
        description="named release channels ops move by hand (mobiledet release promote)")
    channel_rules: list[ChannelRule] = Field(
        default_factory=list, description="e.g. [{from: canary, to: stable, after_hours: 24}]: "
                                          "promote after that long without a yank")
    ledger: LedgerConfig = Field(default_factory=LedgerConfig,
                                 description="how runs take work from the checkpoint ledger")
    retention: RetentionConfig = Field(default_factory=RetentionConfig,
                                       description="what housekeeping keeps")

    _warnings: tuple = PrivateAttr(())

    @field_validator("store_uri")
    @classmethod
    def _resolve_store(cls, value: str, info: ValidationInfo) -> str:
        base_dir = (info.context or {}).get("base_dir")
        if not value:
            value = settings().store or DEFAULT_STORE_DIR
            base_dir = None
        return _normalise_store(value, base_dir)

    @field_validator("conn_id")
    @classmethod
    def _conn_id(cls, value):
        if value is not None and not value.strip():
            raise Problem(f"expected an Airflow connection id or null, got {value!r}.",
                           f"e.g. {DEFAULT_CONN_ID}; null uses boto3's default credentials.")
        return value

    @field_validator("precisions")
    @classmethod
    def _plain_precisions(cls, value: dict) -> dict:
        """Stored as {variant: {kind: [precisions]}} (kinds given only)."""
        out = {}
        for variant, spec in value.items():
            out[variant] = {k: list(v) for k, v in
                            (spec.model_dump(exclude_none=True) if isinstance(spec, BaseModel)
                             else spec).items()}
        return out

    def model_post_init(self, context: Any) -> None:
        for rule in self.channel_rules:
            for name in (rule.source, rule.target):
                if name not in self.channels:
                    raise ConfigError(f"channel rule names {name!r}, which is not one of the "
                                      f"channels ({', '.join(self.channels)}).",
                                      where="channel_rules",
                                      fix="add it to `channels`, or correct the rule.")
        warnings = []
        for variant, kinds in self.precisions.items():
            for kind, lst in kinds.items():
                if kind != "any":
                    warnings += check_precisions(variant, kind == "qat", lst,
                                                 f"precisions.{variant}.{kind}")
        self._warnings = tuple(warnings)

    @property
    def warnings(self) -> tuple:
        return self._warnings

    def __eq__(self, other) -> bool:  # the warnings are not part of the settings
        if not isinstance(other, PipelineConfig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # holds dicts

    # -- precisions ---------------------------------------------------------------------------
    def plan_precisions(self, variant: str, qat: bool) -> tuple[list[str], list[str]]:
        """(precisions to convert, warnings) for a checkpoint of `variant`; ConfigError if the
        configured list cannot work for this kind of checkpoint."""
        _check_variant(variant)
        chosen = self.precisions.get(variant, {})
        kind = "qat" if qat else "float"
        if kind in chosen:
            return list(chosen[kind]), check_precisions(variant, qat, chosen[kind],
                                                        f"precisions.{variant}.{kind}")
        if "any" in chosen:
            where = f"precisions.{variant}"
            try:
                return list(chosen["any"]), check_precisions(variant, qat, chosen["any"], where)
            except ConfigError as exc:
                raise ConfigError(exc.problem, where=where,
                                  fix=f"{exc.fix} Or give separate lists per checkpoint kind: "
                                      f"precisions.{variant}: {{float: [...], qat: [...]}}.")
        return default_precisions(variant, qat), []

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-able form; `from_dict(to_dict())` gives an equal config."""
        out = self.model_dump(mode="json", exclude={"precisions"})
        out["precisions"] = copy.deepcopy(self.precisions)
        return out

    @classmethod
    def from_dict(cls, data: Mapping | None, *, source: str = "config",
                  base_dir: str | None = None) -> "PipelineConfig":
        """Build and validate a config from a mapping (unknown keys are errors).

        `source` names where the mapping came from (a file path, "run params") for error
        messages; relative store folders are resolved against `base_dir` (default: cwd).
        """
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping of settings, got {type(data).__name__}.",
                              where=source, fix="write key: value pairs.")
        return validate_config(dict(data or {}), [(source, dict(data or {}))], base_dir)


def validate_config(data: dict, layers: list, base_dir: str | None) -> PipelineConfig:
    """model_validate `data`; an error names the highest layer that holds the bad key."""
    token = _VALIDATING.set(True)
    try:
        return PipelineConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        loc = tuple(k for k in exc.errors()[0]["loc"] if isinstance(k, str) and k != "[key]")
        raise config_error(exc, PipelineConfig, pipeline_schema(),
                           source=_layer_of(layers, loc), data=data) from None
    except ConfigError as exc:  # a rule across fields (model_post_init): where is a key path
        loc = tuple((exc.where or "").split("."))
        raise ConfigError(exc.problem, where=f"{_layer_of(layers, loc)}: {exc.where}",
                          fix=exc.fix) from None
    finally:
        _VALIDATING.reset(token)


def _layer_of(layers: list, loc: tuple) -> str:
    """The name of the highest-precedence layer that set the key at `loc` (or a parent)."""
    for n in range(len(loc), 0, -1):
        for name, layer in reversed(layers):
            if _holds(layer, loc[:n]):
                return name
    return " + ".join(name for name, _ in layers)


def _holds(layer: Any, path: tuple) -> bool:
    node = layer
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True




_SCHEMA: dict | None = None


def pipeline_schema() -> dict:
    """PipelineConfig's JSON schema with every $ref inlined (computed once)."""
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = inline_refs(PipelineConfig.model_json_schema())
    return _SCHEMA


def inline_refs(schema: dict) -> dict:
    """The schema with every $ref replaced by its definition (no $defs: simpler for Airflow's
    Param and its form)."""
    defs = schema.get("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                target = defs[node["$ref"].rsplit("/", 1)[-1]]
                extra = {k: v for k, v in node.items() if k != "$ref"}
                return walk({**target, **extra})
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)
