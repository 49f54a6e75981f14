"""The pipeline's one typed config: store, precisions per variant, gate thresholds, run sizes.

Load it with :func:`load_config`, from a YAML or JSON file, from a dict (Airflow run params), or
from nothing at all (every field has a default that works out of the box). It is validated when
loaded: an error names the field, the bad value and the allowed values.

Where the settings come from, lowest to highest precedence:

1. the defaults below;
2. the config file (YAML or JSON), if one is given;
3. the environment variable ``MOBILEDET_STORE`` (the store URI only);
4. ``overrides``: a dict such as Airflow run params or CLI ``--set`` pairs; dotted keys
   (``"gates.min_map": 0.3``) address nested fields.

The store (``store_uri``) is a local folder, ``file:///abs/path`` or ``s3://bucket/prefix``.
Without a setting it is ``./mobiledet-store`` in the current working directory. A relative
folder is resolved against the config file's folder when it comes from a file, and against the
current working directory otherwise; the loaded config always holds an absolute path, so every
task and the manifest see the same location.

Example (YAML)::

    store_uri: s3://models/mobiledet       # or a folder
    conn_id: aws_default                   # Airflow connection for s3://
    model_name: mobiledet
    precisions:
      cpu: [float32, int8]                 # for any checkpoint kind, or per kind:
      edgetpu: {float: [float32, int8], qat: [float32, uint8]}
    gates:
      metric: AP50
      max_map_drop: {int8: 0.04}           # merged with the defaults
      max_latency_ms: 150
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from include.errors import ConfigError
from include.mobiledet.spec import VARIANTS

PRECISIONS = ("float32", "dynamic", "float16", "int8", "uint8")
ACCELERATOR_VARIANTS = ("edgetpu", "dsp")   # need full-integer models
CHECKPOINT_KINDS = ("float", "qat", "any")  # keys of a per-variant precisions mapping
GATE_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCO summary metrics
EDGETPU_GATE_MODES = ("auto", "compiler", "prediction", "off")
STORE_ENV = "MOBILEDET_STORE"
DEFAULT_STORE_DIR = "mobiledet-store"
DEFAULT_CONN_ID = "aws_default"
DEFAULT_MODEL_NAME = "mobiledet"

# Absolute drop of the gate metric allowed against the float32 reference of the same run.
DEFAULT_MAX_MAP_DROP = {"float32": 0.0, "dynamic": 0.02, "float16": 0.01, "int8": 0.05,
                        "uint8": 0.05}

_DEFAULT_FLOAT = {
    "cpu": ["float32", "dynamic", "float16", "int8"],
    "edgetpu": ["float32", "int8"],
    "dsp": ["float32", "int8"],
    "gpu": ["float32", "float16"],
}
_DEFAULT_QAT = {variant: ["float32", "uint8"] for variant in VARIANTS}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------------------------
# Precisions
# --------------------------------------------------------------------------------------------
def _check_variant(variant: Any, where: str = "variant") -> str:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; allowed values: {', '.join(VARIANTS)}.",
                          where=where, fix="use one of the allowed variants.")
    return variant


def default_precisions(variant: str, qat: bool) -> list[str]:
    """The precisions converted by default for a checkpoint of `variant` (QAT or float)."""
    _check_variant(variant)
    return list((_DEFAULT_QAT if qat else _DEFAULT_FLOAT)[variant])


def _check_precision_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"expected a non-empty list of precisions, got {value!r}; allowed "
                          f"values: {', '.join(PRECISIONS)}.", where=where,
                          fix="e.g. [float32, int8].")
    seen = []
    for item in value:
        if item not in PRECISIONS:
            raise ConfigError(f"unknown precision {item!r}; allowed values: "
                              f"{', '.join(PRECISIONS)}.", where=where,
                              fix="use one of the allowed precisions.")
        if item in seen:
            raise ConfigError(f"precision {item!r} is listed twice.", where=where,
                              fix="list each precision once.")
        seen.append(item)
    return seen


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
# Value coercion with field-naming errors
# --------------------------------------------------------------------------------------------
def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off"):
        return False
    raise ConfigError(f"expected true or false, got {value!r}.", where=where,
                      fix="write true or false.")


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in
                             ("", "none", "null", "off"))


def _number(value: Any, where: str, *, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, optional: bool = False, integer: bool = False):
    if optional and _is_none(value):
        return None
    kind = "a whole number" if integer else "a number"
    rng = []
    if lo is not None:
        rng.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        rng.append(f"<= {hi:g}")
    allowed = kind + (" " + " and ".join(rng) if rng else "") + (" or null (off)" if optional
                                                                 else "")
    out = None
    if isinstance(value, bool):
        out = None
    elif isinstance(value, (int, float)):
        out = value
    elif isinstance(value, str):
        try:
            out = float(value) if not integer else int(value.strip())
        except ValueError:
            out = None
    if out is None or (isinstance(out, float) and not math.isfinite(out)) \
            or (integer and float(out) != int(out)):
        raise ConfigError(f"expected {allowed}, got {value!r}.", where=where,
                          fix=f"set {kind} in the allowed range.")
    out = int(out) if integer else float(out)
    if (lo is not None and (out < lo or (lo_open and out == lo))) or (hi is not None and out > hi):
        raise ConfigError(f"{value!r} is out of range; allowed: {allowed}.", where=where,
                          fix="set a value in the allowed range.")
    return out


def _check_keys(data: Mapping, allowed, where: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping of settings, got {type(data).__name__}.",
                          where=where, fix="write key: value pairs.")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(sorted(allowed))}.", where=where,
                          fix="check the spelling; remove settings this version does not know.")


def _store_uri(value: Any, where: str, base_dir: str | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"expected a folder, file:///abs/path or s3://bucket/prefix, got "
                          f"{value!r}.", where=where, fix=f"set a store location, or set "
                                                          f"{STORE_ENV}.")
    value = value.strip()
    if "://" not in value:
        path = os.path.expanduser(value)
        if not os.path.isabs(path):
            path = os.path.join(base_dir or os.getcwd(), path)
        return os.path.normpath(path)
    scheme, _, rest = value.partition("://")
    scheme = scheme.lower()
    if scheme == "file":
        if not rest.startswith("/"):
            raise ConfigError(f"{value!r} is not an absolute file URI.", where=where,
                              fix="write file:///absolute/path (three slashes) or a plain path.")
        return "file://" + os.path.normpath(rest)
    if scheme == "s3":
        bucket = rest.split("/", 1)[0].rpartition("@")[2]
        if not bucket:
            raise ConfigError(f"{value!r} names no bucket.", where=where,
                              fix="write s3://BUCKET/optional/prefix.")
        return value.rstrip("/")
    raise ConfigError(f"unsupported store scheme {scheme!r} in {value!r}; allowed: a local "
                      "folder, file:// or s3://.", where=where,
                      fix="use a folder or s3://bucket/prefix (MinIO too, via the connection's "
                          "endpoint_url).")


# --------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateConfig:
    """Thresholds the gates apply to each converted model.

    `metric` names the COCO metric the gates read (AP50 by default; AP is AP@[.5:.95]).
    `max_map_drop[precision]`: allowed absolute drop of that metric against the run's float32
    reference. `min_map`: floor on the metric (0 = off). `max_latency_ms`: None = off.
    `require_edgetpu_mapped`: every op but the SSD post-process must map to the Edge TPU.
    `edgetpu`: who decides that: ``auto`` the compiler where installed, else the offline
    prediction; ``compiler`` (a missing compiler fails; `require_edgetpu_compiler` is the old
    spelling of this); ``prediction``; ``off``. `regression_tolerance`: allowed absolute drop
    against the newest comparable release (same model, variant, precision, source kind and
    evaluation dataset; none on a first release).
    """

    metric: str = "AP50"
    max_map_drop: dict = field(default_factory=lambda: dict(DEFAULT_MAX_MAP_DROP))
    min_map: float = 0.0
    require_contract: bool = True
    max_latency_ms: float | None = None
    require_edgetpu_mapped: bool = True
    require_edgetpu_compiler: bool = False
    regression_tolerance: float = 0.02
    edgetpu: str = "auto"

    def __post_init__(self):
        if self.metric not in GATE_METRICS:
            raise ConfigError(f"unknown metric {self.metric!r}; allowed values: "
                              f"{', '.join(GATE_METRICS)}.", where="gates.metric",
                              fix="AP50 (IoU 0.5) or AP (IoU .5:.95) are the usual choices.")
        drops = self.max_map_drop
        _check_keys(drops, PRECISIONS, "gates.max_map_drop")
        merged = dict(DEFAULT_MAX_MAP_DROP)
        for p, v in drops.items():
            merged[p] = _number(v, f"gates.max_map_drop.{p}", lo=0.0, hi=1.0)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("max_map_drop", merged)
        set_("min_map", _number(self.min_map, "gates.min_map", lo=0.0, hi=1.0))
        set_("require_contract", _bool(self.require_contract, "gates.require_contract"))
        set_("max_latency_ms", _number(self.max_latency_ms, "gates.max_latency_ms", lo=0.0,
                                       lo_open=True, optional=True))
        set_("require_edgetpu_mapped", _bool(self.require_edgetpu_mapped,
                                             "gates.require_edgetpu_mapped"))
        set_("require_edgetpu_compiler", _bool(self.require_edgetpu_compiler,
                                               "gates.require_edgetpu_compiler"))
        set_("regression_tolerance", _number(self.regression_tolerance,
                                             "gates.regression_tolerance", lo=0.0, hi=1.0))
        if self.edgetpu not in EDGETPU_GATE_MODES:
            raise ConfigError(f"unknown Edge TPU gate mode {self.edgetpu!r}; allowed values: "
                              f"{', '.join(EDGETPU_GATE_MODES)}.", where="gates.edgetpu",
                              fix="auto (the compiler where installed, else the offline "
                                  "prediction), compiler, prediction or off.")

    def max_drop(self, precision: str) -> float:
        if precision not in self.max_map_drop:
            raise ConfigError(f"unknown precision {precision!r}; allowed values: "
                              f"{', '.join(PRECISIONS)}.", where="precision",
                              fix="use one of the allowed precisions.")
        return self.max_map_drop[precision]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of one pipeline run. Build it with `load_config` or `from_dict`."""

    store_uri: str = ""  # "" = $MOBILEDET_STORE, else ./mobiledet-store
    conn_id: str | None = DEFAULT_CONN_ID
    model_name: str = DEFAULT_MODEL_NAME
    precisions: dict = field(default_factory=dict)  # {variant: [..] | {float|qat|any: [..]}}
    gates: GateConfig = field(default_factory=GateConfig)
    calibration_count: int = 100
    eval_max_images: int | None = None
    threads: int = 2
    benchmark_runs: int = 20
    benchmark_warmup: int = 3
    edgetpu_timeout_s: float = 180.0
    warnings: tuple = field(default=(), compare=False)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        store = self.store_uri or os.environ.get(STORE_ENV, "").strip() or DEFAULT_STORE_DIR
        set_("store_uri", _store_uri(store, "store_uri", None))
        if self.conn_id is not None and (not isinstance(self.conn_id, str)
                                         or not self.conn_id.strip()):
            raise ConfigError(f"expected an Airflow connection id or null, got "
                              f"{self.conn_id!r}.", where="conn_id",
                              fix=f"e.g. {DEFAULT_CONN_ID}; null uses boto3's default "
                                  "credentials.")
        if not isinstance(self.model_name, str) or not _NAME.match(self.model_name):
            raise ConfigError(f"model_name {self.model_name!r} is not a safe folder name.",
                              where="model_name",
                              fix="use letters, digits, '.', '_' and '-', starting with a "
                                  "letter or digit.")
        gates = self.gates
        if isinstance(gates, Mapping):
            _check_keys(gates, {f.name for f in fields(GateConfig)}, "gates")
            gates = GateConfig(**gates)
        elif not isinstance(gates, GateConfig):
            raise ConfigError(f"expected a mapping of gate settings, got {gates!r}.",
                              where="gates", fix="e.g. gates: {min_map: 0.2}.")
        set_("gates", gates)
        set_("calibration_count", _number(self.calibration_count, "calibration_count", lo=1,
                                          integer=True))
        set_("eval_max_images", _number(self.eval_max_images, "eval_max_images", lo=1,
                                        integer=True, optional=True))
        set_("threads", _number(self.threads, "threads", lo=1, integer=True))
        set_("benchmark_runs", _number(self.benchmark_runs, "benchmark_runs", lo=1,
                                       integer=True))
        set_("benchmark_warmup", _number(self.benchmark_warmup, "benchmark_warmup", lo=0,
                                         integer=True))
        set_("edgetpu_timeout_s", _number(self.edgetpu_timeout_s, "edgetpu_timeout_s", lo=0.0,
                                          lo_open=True))
        precisions, warnings = _normalise_precisions(self.precisions)
        set_("precisions", precisions)
        set_("warnings", tuple(self.warnings) + tuple(warnings))

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

    def precisions_for(self, variant: str, qat: bool) -> list[str]:
        return self.plan_precisions(variant, qat)[0]

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-able form; `from_dict(to_dict())` gives an equal config."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "warnings"}
        out["gates"] = self.gates.to_dict()
        out["precisions"] = {v: {k: list(p) for k, p in kinds.items()}
                             for v, kinds in self.precisions.items()}
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, data: Mapping | None, *, source: str = "config",
                  base_dir: str | None = None) -> "PipelineConfig":
        """Build and validate a config from a mapping (unknown keys are errors).

        `source` names where the mapping came from (a file path, "run params") for error
        messages; relative store folders are resolved against `base_dir` (default: cwd).
        """
        data = dict(data or {})
        try:
            _check_keys(data, {f.name for f in fields(cls)} - {"warnings"}, "top level")
            if data.get("store_uri") not in (None, ""):
                data["store_uri"] = _store_uri(data["store_uri"], "store_uri", base_dir)
            else:
                data.pop("store_uri", None)
            return cls(**data)
        except ConfigError as exc:
            where = f"{source}: {exc.where}" if exc.where else source
            raise ConfigError(exc.problem, where=where, fix=exc.fix) from None

    def replace(self, **changes) -> "PipelineConfig":
        return replace(self, **changes)


def _normalise_precisions(value: Any) -> tuple[dict, list[str]]:
    if value is None:
        return {}, []
    _check_keys(value, VARIANTS, "precisions")
    out, warnings = {}, []
    for variant, spec in value.items():
        where = f"precisions.{variant}"
        if isinstance(spec, Mapping):
            _check_keys(spec, CHECKPOINT_KINDS, where)
            kinds = {}
            for kind, lst in spec.items():
                kinds[kind] = _check_precision_list(lst, f"{where}.{kind}")
                if kind != "any":
                    warnings += check_precisions(variant, kind == "qat", kinds[kind],
                                                 f"{where}.{kind}")
            out[variant] = kinds
        else:
            out[variant] = {"any": _check_precision_list(spec, where)}
    return out, warnings


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def read_config_file(path: str) -> dict:
    """Parse a YAML or JSON config file into a dict (ConfigError names the file and line)."""
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise ConfigError("the config file does not exist.", where=path,
                          fix="pass the path of a YAML or JSON config file, or none for the "
                              "defaults.")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"is not valid JSON: {exc.msg} at line {exc.lineno}, column "
                              f"{exc.colno}.", where=path, fix="fix the JSON syntax.") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"is not valid YAML{at}: {getattr(exc, 'problem', exc)}.",
                              where=path, fix="fix the YAML syntax.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping of settings, got "
                          f"{type(data).__name__}.", where=path,
                          fix="write key: value pairs, e.g. store_uri: ./store.")
    return data


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(key, str) and "." in key:
            head, _, rest = key.partition(".")
            value, key = {rest: value}, head
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config(path: str | None = None, *, overrides: Mapping | None = None,
                environ: Mapping | None = None) -> PipelineConfig:
    """Load the pipeline config: defaults < file < $MOBILEDET_STORE < overrides (module doc).

    `path` may also be a dict (e.g. Airflow run params used as the whole config).
    """
    environ = os.environ if environ is None else environ
    if isinstance(path, Mapping):
        data, source, base_dir = dict(path), "config", None
    elif path:
        data, source = read_config_file(path), os.fspath(path)
        base_dir = os.path.dirname(os.path.abspath(os.path.expanduser(source)))
    else:
        data, source, base_dir = {}, "defaults", None
    if isinstance(data.get("store_uri"), str) and data["store_uri"].strip():
        try:
            data["store_uri"] = _store_uri(data["store_uri"], "store_uri", base_dir)
        except ConfigError as exc:
            raise ConfigError(exc.problem, where=f"{source}: store_uri", fix=exc.fix) from None
    env_store = (environ.get(STORE_ENV) or "").strip()
    if env_store:
        try:
            data["store_uri"] = _store_uri(env_store, STORE_ENV, None)
        except ConfigError as exc:
            raise ConfigError(exc.problem, where=f"environment variable {STORE_ENV}",
                              fix=exc.fix) from None
        source += f" + ${STORE_ENV}"
    if overrides:
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"overrides must be a mapping, got {type(overrides).__name__}.",
                              where="overrides", fix="pass a dict of settings.")
        data = _merge(data, overrides)
        source += " + overrides"
    if not data.get("store_uri"):
        data["store_uri"] = _store_uri(DEFAULT_STORE_DIR, "store_uri", None)
    return PipelineConfig.from_dict(data, source=source, base_dir=None)
