"""What every MobileDet operator shares: quiet native start-up noise, bad input that fails at
once, argument checks that name the argument and the fix.

Nothing heavy is imported here or in the operator modules: TensorFlow, LiteRT and Great
Expectations load inside `execute`, so a DAG file using these operators still parses in a
fraction of a second.

An operator's `output=` argument is kept as the attribute (and template field) `output_uri`:
`.output` is Airflow's own (the task's XComArg, e.g. ``convert.output["model_uri"]``).
"""
from __future__ import annotations

import difflib
import os
from typing import Any

from airflow.sdk import BaseOperator

from include.console import quiet_native_stderr  # MOBILEDET_VERBOSE=1 keeps TF's native lines
from operators.hooks import MobiledetStoreHook


def fail_fast(exc: BaseException) -> BaseException:
    """Bad input fails without retrying (another attempt reads the same input); store errors
    and anything unexpected are raised as they are, so Airflow retries them."""
    from include.errors import MobiledetError, StoreError

    if isinstance(exc, MobiledetError) and not isinstance(exc, StoreError):
        from airflow.sdk.exceptions import AirflowFailException
        return AirflowFailException(str(exc))
    return exc


def is_static(value: Any) -> bool:
    """True for a value known when the DAG is parsed: not a Jinja template, not an XComArg."""
    if isinstance(value, str):
        return "{{" not in value and "{%" not in value
    return not hasattr(value, "resolve") and not hasattr(value, "iter_references")


def bad_argument(operator: str, name: str, problem: str, fix: str):
    from include.errors import ConfigError
    return ConfigError(problem, where=f"{operator}({name}=...)", fix=fix)


def check_choice(operator: str, name: str, value: Any, allowed: tuple[str, ...],
                 optional: bool = False) -> None:
    if (optional and value is None) or not is_static(value):
        return
    if value not in allowed:
        near = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise bad_argument(operator, name, f"{value!r} is not one of {', '.join(allowed)}"
                           f"{hint}.", f"pass one of {', '.join(allowed)}.")


def check_count(operator: str, name: str, value: Any, minimum: int, optional: bool = False,
                example: int = 10) -> None:
    if (optional and value is None) or not is_static(value):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_argument(operator, name, f"must be a whole number >= {minimum}, got "
                           f"{value!r}.", f"pass e.g. {name}={max(minimum, example)}"
                           + (" or leave it out." if optional else "."))


def check_number(operator: str, name: str, value: Any, optional: bool = True) -> None:
    if (optional and value is None) or not is_static(value):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise bad_argument(operator, name, f"must be a number > 0, got {value!r}.",
                           f"pass e.g. {name}=10" + (" or leave it out." if optional else "."))


def check_location(operator: str, name: str, value: Any, optional: bool = False,
                   suffix: str | None = None) -> None:
    """A path or URI: a non-empty string (file://, s3:// or a local path), ending in
    `suffix` when given."""
    if optional and value is None:
        return
    if value is None or (isinstance(value, str) and not value.strip()):
        raise bad_argument(operator, name, "is required and was not given.",
                           f"pass a local path or a store URI (s3://bucket/key) as {name}.")
    if not is_static(value):
        return
    if not isinstance(value, (str, os.PathLike)):
        raise bad_argument(operator, name, f"must be a path or URI string, got "
                           f"{type(value).__name__}.", f"pass {name}='/data/...' or "
                                                       f"'s3://bucket/...'.")
    text = os.fspath(value)
    if "://" in text and text.split("://", 1)[0].lower() not in ("file", "s3", "s3a", "s3n"):
        raise bad_argument(operator, name, f"{text!r} has an unsupported scheme.",
                           "use a local path, file:///abs/path or s3://bucket/key.")
    if suffix and not text.endswith(suffix):
        raise bad_argument(operator, name, f"{text!r} does not end in {suffix}.",
                           f"name the file to write, e.g. .../model{suffix}.")


class MobiledetOperator(BaseOperator):
    """Base of the MobileDet operators: `execute` runs `run(context)` with native start-up
    noise kept out of the task log (unless MOBILEDET_VERBOSE=1) and turns bad input (the
    project's own errors other than StoreError) into a failure without retries."""

    ui_color = "#e8f0fe"

    def __init__(self, *, conn_id: str | None = MobiledetStoreHook.default_conn_name,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    @property
    def hook(self) -> MobiledetStoreHook:
        if getattr(self, "_hook", None) is None or self._hook.conn_id != self.conn_id:
            self._hook = MobiledetStoreHook(conn_id=self.conn_id)
        return self._hook

    def run(self, context) -> Any:  # pragma: no cover - every operator defines it
        raise NotImplementedError

    def execute(self, context) -> Any:
        try:
            with quiet_native_stderr():
                return self.run(context)
        except Exception as exc:
            raised = fail_fast(exc)
            if raised is exc:
                raise
            raise raised from exc
