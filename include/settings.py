"""Every ``MOBILEDET_*`` environment variable, in one settings object, validated once.

A deployment tells the project what to do through the environment of its Airflow components
(docker-compose.yaml, `mobiledet serve`); the CLI reads the same variables. This module is the
one place that reads them:

    from include.settings import settings
    s = settings()                 # os.environ, validated; cached while the variables stay
    s.task_retries, s.pool, s.timeout_s("convert"), s.checkpoint_store_uri

`settings(environ)` reads another mapping (tests, a DAG file parsed with a given environment).
A bad value fails with `include.errors.ConfigError` naming the variable, the value and the fix,
the first time anything asks; an unknown ``MOBILEDET_*`` name is logged once with the nearest
known one. `Settings` is a pydantic-settings class whose one source is the environment
mapping (`EnvironSource`): `Settings()` reads os.environ and gives the same object as
`settings()`, unvalidated errors aside (pydantic's ValidationError, not ConfigError).

Unset and empty are the same ("use the default") except where the table below says what empty
means: the checkpoint store (empty: the landing watcher is off), the retrain schedule (empty:
no schedule) and the on/off flags (empty: off). `python -m include.settings` prints the table
the README shows. Nothing heavy is imported here: DAG files read it when they are parsed.
"""
from __future__ import annotations

import contextvars
import difflib
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (BaseSettings, NoDecode, PydanticBaseSettingsSource,
                               SettingsConfigDict)

from include.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "MOBILEDET_"
REPO = Path(__file__).resolve().parents[1]
#: execution_timeout of each stage's task, seconds (MOBILEDET_TIMEOUT_<STAGE>_S)
TIMEOUTS_S = {"plan": 600, "export": 1800, "convert": 3600, "check": 3600, "edgetpu": 900,
              "search": 7200, "gate": 1800, "publish": 1800, "report": 600}
OFF = ("", "off", "none", "false", "0")          # MOBILEDET_CHECKPOINT_STORE: watcher off
SCHEDULE_OFF = ("", "off", "none", "null", "false", "0")
FLAG_OFF = ("", "0", "false", "no", "off")
#: fields where an empty value means something of its own (all others: empty = unset)
EMPTY_MEANS_OFF = ("checkpoint_store", "retrain_schedule", "housekeeping_schedule",
                   "worker_preload", "verbose")


def _var(field: str) -> str:
    return PREFIX + field.upper()


def _flag(value: Any) -> bool:
    """On/off: anything but 0, false, no, off or empty is on."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in FLAG_OFF


def _setting(default: Any, meaning: str, expect: str = "", example: str = "",
             shown: str | None = None, **constraints):
    """A field with what the README's table says about it (`shown`: its default in words);
    `expect` and `example` make the fix of a bad value."""
    return Field(default, description=meaning, json_schema_extra={
        "expect": expect, "example": example, "shown": shown}, **constraints)


#: the mapping `Settings()` reads (None: os.environ); `Settings.from_environ` sets it
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = \
    contextvars.ContextVar("mobiledet_environ", default=None)


class EnvironSource(PydanticBaseSettingsSource):
    """pydantic-settings source: MOBILEDET_<FIELD> of one mapping, as strings (os.environ, or
    the mapping `Settings.from_environ` was given)."""

    def __init__(self, settings_cls, environ: Mapping[str, str]):
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field, field_name: str) -> tuple[Any, str, bool]:
        return self.environ.get(_var(field_name)), _var(field_name), False

    def __call__(self) -> dict[str, Any]:
        return {name: self.environ[_var(name)] for name in self.settings_cls.model_fields
                if _var(name) in self.environ}


class Settings(BaseSettings):
    """The MOBILEDET_* environment of this process: one field per variable (name: the variable
    without its prefix, lower case)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        # one source: the environment mapping (no .env or secrets files)
        environ = _ENVIRON.get()
        return (init_settings, EnvironSource(settings_cls, os.environ if environ is None
                                             else environ))

    # -- where things are -----------------------------------------------------------------
    store: Optional[str] = _setting(
        None, "the artifact store: a folder or s3://bucket/prefix (`--store`, the DAG param "
        "`store` and `store_uri` in the config win over it)", shown="`./mobiledet-store`")
    checkpoint_store: Optional[str] = _setting(
        None, "the checkpoint store the landing watcher lists and retraining writes to: a "
        "folder or s3://bucket/prefix; `off` (or empty) turns the landing watcher off",
        shown="`<repo>/checkpoints`")
    checkpoint_conn_id: str = _setting(
        "aws_default", "Airflow connection of an s3:// checkpoint store")
    watch_poll_s: float = _setting(
        10.0, "seconds between two listings of the checkpoint store (at least 1)",
        "a number of seconds > 0", "10", gt=0)
    sweep_s: float = _setting(
        600.0, "seconds between two looks of the landing watcher at the checkpoint ledger for "
        "work no run is doing (0: the safety net off)", "a number of seconds >= 0", "600", ge=0)
    housekeeping_schedule: Optional[str] = _setting(
        "@daily", "cron or preset of mobiledet_housekeeping (retention, ledger repair, channel "
        "rules); `off`, `none` or empty: no schedule")
    data: str = _setting(
        "", "the COCO-format evaluation dataset of runs started by a landing (the DAG param "
        "`data` defaults to it)")
    config: Optional[str] = _setting(
        None, "the pipeline config file (YAML/JSON) of every run; the DAG param `config` "
        "defaults to it")
    conn_id: Optional[str] = _setting(
        None, "Airflow connection of an s3:// artifact store, for the dashboard inside "
        "Airflow", shown="`aws_default`")
    airflow_password: Optional[str] = _setting(
        None, "the Airflow login's password for `mobiledet serve` and `mobiledet run "
        "--airflow`", shown="the one kept in AIRFLOW_HOME")

    # -- tasks ----------------------------------------------------------------------------
    task_retries: int = _setting(
        2, "retries of every task (store errors and crashes; bad input fails at once)",
        "a whole number >= 0", "2", ge=0)
    task_retry_delay_s: float = _setting(
        30.0, "seconds before a task's first retry (doubling after that)",
        "a number of seconds >= 0", "30", ge=0)
    pool: str = _setting(
        "default_pool", "Airflow pool of the heavy tasks (export, convert, check, search); "
        "`mobiledet serve` and docker-compose set `mobiledet` and create it")
    pool_slots: Optional[int] = _setting(
        None, "slots of that pool (docker-compose's airflow-init, `mobiledet serve`)",
        "a whole number >= 1", "2", shown="the workers' slots", ge=1)
    timeout_plan_s: float = _setting(TIMEOUTS_S["plan"], "", "a number of seconds > 0",
                                     "600", gt=0)
    timeout_export_s: float = _setting(TIMEOUTS_S["export"], "", "a number of seconds > 0",
                                       "1800", gt=0)
    timeout_convert_s: float = _setting(TIMEOUTS_S["convert"], "", "a number of seconds > 0",
                                        "3600", gt=0)
    timeout_check_s: float = _setting(TIMEOUTS_S["check"], "", "a number of seconds > 0",
                                      "3600", gt=0)
    timeout_edgetpu_s: float = _setting(TIMEOUTS_S["edgetpu"], "", "a number of seconds > 0",
                                        "900", gt=0)
    timeout_search_s: float = _setting(TIMEOUTS_S["search"], "", "a number of seconds > 0",
                                       "7200", gt=0)
    timeout_gate_s: float = _setting(TIMEOUTS_S["gate"], "", "a number of seconds > 0",
                                     "1800", gt=0)
    timeout_publish_s: float = _setting(TIMEOUTS_S["publish"], "", "a number of seconds > 0",
                                        "1800", gt=0)
    timeout_report_s: float = _setting(TIMEOUTS_S["report"], "", "a number of seconds > 0",
                                       "600", gt=0)

    # -- processes ------------------------------------------------------------------------
    worker_preload: bool = _setting(
        True, "workers import TensorFlow, Great Expectations and pycocotools once, before "
        "they fork tasks (`0` turns it off)")
    verbose: bool = _setting(
        False, "keep TensorFlow's native start-up lines (CUDA probing, oneDNN notices) in task "
        "and worker logs")

    # -- mobiledet_retrain ----------------------------------------------------------------
    retrain_schedule: Optional[str] = _setting(
        "@daily", "cron or preset of mobiledet_retrain; `off`, `none` or empty: no schedule "
        "(nor without MOBILEDET_RETRAIN_DATA)")
    retrain_variants: Annotated[list[str], NoDecode] = _setting(
        ["edgetpu"], "comma-separated variants to retrain: cpu, edgetpu, dsp, gpu",
        "a comma-separated list of cpu, edgetpu, dsp, gpu", "edgetpu,cpu")
    retrain_data: str = _setting(
        "", "COCO dataset (folder or s3://) with train and val splits to fine-tune on")
    retrain_steps: int = _setting(200, "float fine-tuning steps", "a whole number >= 1",
                                  "200", ge=1)
    retrain_qat_steps: int = _setting(100, "QAT fine-tuning steps; 0: no QAT",
                                      "a whole number >= 0", "100", ge=0)
    retrain_budget_s: float = _setting(
        1800.0, "time budget per variant, seconds (the QAT run is shortened to fit)",
        "a positive number of seconds", "1800", gt=0)
    retrain_batch: int = _setting(16, "batch size", "a whole number >= 1", "16", ge=1)
    retrain_eval_images: Optional[int] = _setting(
        None, "held-out images scored per checkpoint", "a whole number >= 1", "300",
        shown="all", ge=1)

    # -- mobiledet_rollout_example --------------------------------------------------------
    rollout_model: str = _setting("mobiledet", "model whose releases the example rolls out")
    rollout_variant: str = _setting("edgetpu", "variant whose releases the example rolls out")
    rollout_precision: str = _setting("uint8", "precision whose releases the example rolls out")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out = {}
        for key, value in data.items():
            if isinstance(value, str):
                value = value.strip()
                if not value and key not in EMPTY_MEANS_OFF:
                    continue
            out[key] = value
        return out

    @field_validator("worker_preload", "verbose", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> bool:
        return _flag(value)

    @field_validator("retrain_variants", mode="before")
    @classmethod
    def _variants(cls, value: Any) -> list[str]:
        from include.mobiledet.spec import VARIANTS

        items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
        out = [str(v).strip().lower() for v in items if str(v).strip()]
        bad = [v for v in out if v not in VARIANTS]
        if bad or not out:
            raise ValueError(f"unknown or no variants {bad or value!r}")
        return list(dict.fromkeys(out))

    @field_validator("watch_poll_s")
    @classmethod
    def _at_least_a_second(cls, value: float) -> float:
        return max(1.0, value)

    # -- derived values ---------------------------------------------------------------------
    def timeout_s(self, stage: str) -> float:
        """execution_timeout of `stage`'s task (KeyError for an unknown stage)."""
        if stage not in TIMEOUTS_S:
            raise KeyError(stage)
        return getattr(self, f"timeout_{stage}_s")

    @property
    def checkpoint_store_uri(self) -> str | None:
        """The watched checkpoint store as a URI (file:///abs or s3://...), None when off."""
        raw = str(REPO / "checkpoints") if self.checkpoint_store is None \
            else self.checkpoint_store
        if raw.lower() in OFF:
            return None
        if "://" in raw:
            return raw.rstrip("/")
        return "file://" + os.path.abspath(os.path.expanduser(raw))

    @property
    def retrain_store(self) -> str:
        """The checkpoint store retraining reads and writes (as given; default the repo's)."""
        return self.checkpoint_store or str(REPO / "checkpoints")

    @property
    def retrain_schedule_or_none(self) -> str | None:
        """The retrain DAG's schedule; None when off or when there is nothing to train on."""
        text = self.retrain_schedule or ""
        if text.lower() in SCHEDULE_OFF or not self.retrain_data:
            return None
        return text

    @property
    def housekeeping_schedule_or_none(self) -> str | None:
        """The housekeeping DAG's schedule; None when off."""
        text = self.housekeeping_schedule or ""
        return None if text.lower() in SCHEDULE_OFF else text

    # -- reading ----------------------------------------------------------------------------
    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Validate the MOBILEDET_* variables of `environ` (default os.environ)."""
        environ = os.environ if environ is None else environ
        token = _ENVIRON.set(environ)
        try:
            return cls()
        except ValidationError as exc:
            raise _config_error(exc, environ) from None
        finally:
            _ENVIRON.reset(token)


def _config_error(exc: ValidationError, environ: Mapping[str, str]) -> ConfigError:
    """The first problem of a ValidationError as the project's error: variable, value, fix."""
    first = exc.errors()[0]
    name = str(first["loc"][0]) if first.get("loc") else ""
    field = Settings.model_fields.get(name)
    var = _var(name)
    extra = (field.json_schema_extra or {}) if field else {}
    expect = extra.get("expect") or "a valid value"
    example = extra.get("example")
    default = field.get_default() if field else None
    if isinstance(default, list):
        default = ",".join(default)
    fix = f"set {var} to {expect}" + (f" (e.g. {var}={example})" if example else "") + \
        (f", or unset it for the default ({default})." if default is not None else
         ", or unset it.")
    msg = str(first.get("msg", ""))
    detail = f" ({msg.removeprefix('Value error, ')})" if msg.startswith("Value error") else ""
    return ConfigError(f"{environ.get(var)!r} is not {expect}{detail}.",
                       where=f"environment variable {var}", fix=fix)


_cache: tuple[tuple, Settings] | None = None
_warned: set[str] = set()


def settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The validated settings of `environ` (default os.environ), built again only when its
    MOBILEDET_* variables change. Raises ConfigError for a bad value."""
    global _cache
    environ = os.environ if environ is None else environ
    key = tuple(sorted((k, v) for k, v in environ.items() if k.startswith(PREFIX)))
    if _cache is not None and _cache[0] == key:
        return _cache[1]
    value = Settings.from_environ(environ)
    _warn_unknown(dict(key))
    _cache = (key, value)
    return value


def unknown_variables(environ: Mapping[str, str]) -> dict[str, str | None]:
    """MOBILEDET_* names no setting has, each with the nearest known name (or None)."""
    known = [_var(name) for name in Settings.model_fields]
    return {name: next(iter(difflib.get_close_matches(name, known, n=1)), None)
            for name in environ if name.startswith(PREFIX) and name not in known}


def _warn_unknown(environ: Mapping[str, str]) -> None:
    for name, near in unknown_variables(environ).items():
        if name not in _warned:
            _warned.add(name)
            log.warning("environment variable %s is not a mobiledet setting%s", name,
                        f" (did you mean {near}?)" if near else "")


def _shown(field) -> str:
    """A field's default as the table shows it."""
    shown = (field.json_schema_extra or {}).get("shown")
    default = field.get_default()
    if shown:
        return shown
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, list):
        return f"`{','.join(default)}`"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return "-" if default in (None, "") else f"`{default}`"


def variables_table() -> str:
    """The README's table of every variable: name, default, meaning (markdown)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if name.startswith("timeout_"):
            if name != "timeout_plan_s":
                continue
            stages = ", ".join(f"{s} {v}" for s, v in TIMEOUTS_S.items())
            rows.append(f"| MOBILEDET_TIMEOUT_<STAGE>_S | {stages} | execution_timeout of one "
                        "stage's task, seconds (STAGE: PLAN, EXPORT, CONVERT, CHECK, EDGETPU, "
                        "SEARCH, GATE, PUBLISH, REPORT) |")
            continue
        rows.append(f"| {_var(name)} | {_shown(field)} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":  # print the README's table
    print(variables_table())
