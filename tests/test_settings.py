"""The one settings object for every MOBILEDET_* variable (include/settings.py)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from include.errors import ConfigError
from include.settings import Settings, settings, variables_table

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_documented_ones():
    s = settings({})
    assert (s.task_retries, s.task_retry_delay_s, s.pool) == (2, 30.0, "default_pool")
    assert (s.timeout_s("convert"), s.timeout_s("edgetpu"), s.timeout_s("search")) == \
        (3600, 900, 7200)
    assert s.checkpoint_store_uri == "file://" + str(REPO / "checkpoints")
    assert (s.checkpoint_conn_id, s.watch_poll_s, s.data, s.config) == \
        ("aws_default", 10.0, "", None)
    assert (s.worker_preload, s.verbose) == (True, False)
    assert (s.retrain_schedule_or_none, s.retrain_variants, s.retrain_steps) == \
        (None, ["edgetpu"], 200)          # no MOBILEDET_RETRAIN_DATA: no schedule
    assert (s.rollout_model, s.rollout_variant, s.rollout_precision) == \
        ("mobiledet", "edgetpu", "uint8")
    with pytest.raises(KeyError):
        s.timeout_s("nonsense")


def test_values_are_read_and_normalised():
    s = settings({"MOBILEDET_TASK_RETRIES": " 5 ", "MOBILEDET_POOL": "mobiledet",
                  "MOBILEDET_TIMEOUT_EDGETPU_S": "60", "MOBILEDET_CHECKPOINT_STORE": "s3://b/c/",
                  "MOBILEDET_WATCH_POLL_S": "0.2", "MOBILEDET_RETRAIN_VARIANTS": "gpu, cpu,gpu",
                  "MOBILEDET_RETRAIN_DATA": "/data/coco", "MOBILEDET_POOL_SLOTS": "3"})
    assert (s.task_retries, s.pool, s.timeout_s("edgetpu"), s.pool_slots) == \
        (5, "mobiledet", 60.0, 3)
    assert s.checkpoint_store_uri == "s3://b/c"
    assert s.watch_poll_s == 1.0                      # at least a second, as before
    assert s.retrain_variants == ["gpu", "cpu"] and s.retrain_schedule_or_none == "@daily"


@pytest.mark.parametrize("value,preload", [("0", False), ("off", False), ("", False),
                                           ("1", True), ("yes", True)])
def test_flags(value, preload):
    assert settings({"MOBILEDET_WORKER_PRELOAD": value}).worker_preload is preload
    assert settings({"MOBILEDET_VERBOSE": value}).verbose is preload


def test_empty_is_unset_except_where_it_means_off():
    s = settings({"MOBILEDET_TASK_RETRIES": "", "MOBILEDET_POOL": " ",
                  "MOBILEDET_CHECKPOINT_STORE": "", "MOBILEDET_RETRAIN_SCHEDULE": "",
                  "MOBILEDET_RETRAIN_DATA": "/d"})
    assert (s.task_retries, s.pool) == (2, "default_pool")
    assert s.checkpoint_store_uri is None             # the landing watcher is off
    assert s.retrain_store == str(REPO / "checkpoints")   # retraining keeps the default
    assert s.retrain_schedule_or_none is None
    for off in ("off", "None", "false"):
        assert settings({"MOBILEDET_CHECKPOINT_STORE": off}).checkpoint_store_uri is None


@pytest.mark.parametrize("name,value,expect", [
    ("MOBILEDET_TASK_RETRIES", "many", "a whole number >= 0"),
    ("MOBILEDET_TASK_RETRY_DELAY_S", "-3", "a number of seconds >= 0"),
    ("MOBILEDET_TIMEOUT_CHECK_S", "0", "a number of seconds > 0"),
    # this one used to fall back to 10 s without a word
    ("MOBILEDET_WATCH_POLL_S", "soon", "a number of seconds > 0"),
    ("MOBILEDET_POOL_SLOTS", "0", "a whole number >= 1"),
    ("MOBILEDET_RETRAIN_VARIANTS", "edgetpu,tpu", "a comma-separated list"),
    ("MOBILEDET_RETRAIN_STEPS", "lots", "a whole number >= 1"),
    ("MOBILEDET_RETRAIN_BUDGET_S", "0", "a positive number of seconds"),
    ("MOBILEDET_RETRAIN_EVAL_IMAGES", "all", "a whole number >= 1"),
])
def test_a_bad_value_names_the_variable_the_value_and_the_fix(name, value, expect):
    with pytest.raises(ConfigError) as info:
        settings({name: value})
    err = info.value
    assert err.where == f"environment variable {name}"
    assert repr(value) in err.problem and expect in err.problem
    assert err.fix.startswith(f"set {name} to {expect}") and f"{name}=" in err.fix


def test_settings_class_reads_os_environ_like_the_accessor(monkeypatch):
    monkeypatch.setenv("MOBILEDET_RETRAIN_VARIANTS", "cpu,dsp")
    monkeypatch.setenv("MOBILEDET_TASK_RETRIES", "7")
    assert Settings() == settings() == Settings.from_environ()
    assert settings().retrain_variants == ["cpu", "dsp"] and settings().task_retries == 7
    monkeypatch.setenv("MOBILEDET_TASK_RETRIES", "4")       # read again when it changes
    assert settings().task_retries == 4


def test_an_unknown_variable_is_logged_with_the_nearest_name(caplog):
    with caplog.at_level(logging.WARNING, logger="include.settings"):
        settings({"MOBILEDET_TASK_RETRYS": "3"})
    assert "MOBILEDET_TASK_RETRYS is not a mobiledet setting (did you mean " \
           "MOBILEDET_TASK_RETRIES?)" in caplog.text


def test_the_readme_table_lists_every_variable():
    readme = (REPO / "README.md").read_text()
    assert variables_table() in readme
    for name in Settings.model_fields:
        if not name.startswith("timeout_"):
            assert f"| MOBILEDET_{name.upper()} |" in readme


def test_no_module_reads_a_mobiledet_variable_but_the_settings():
    read = re.compile(r"""(environ(\.get)?\s*[\[(]|getenv\()\s*f?["']MOBILEDET_""")
    found = []
    for folder in ("include", "dags", "operators", "plugins"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name != "settings.py" and read.search(path.read_text()):
                found.append(str(path.relative_to(REPO)))
    assert found == []
