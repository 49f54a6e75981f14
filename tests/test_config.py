"""The typed pipeline config: defaults, files, env override, validation messages."""
from __future__ import annotations

import json

import pytest

from include.config import (
    DEFAULT_MAX_MAP_DROP,
    GATE_METRICS,
    PRECISIONS,
    STORE_ENV,
    GateConfig,
    PipelineConfig,
    check_precisions,
    default_precisions,
    load_config,
)
from include.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_store_env(monkeypatch):
    monkeypatch.delenv(STORE_ENV, raising=False)


def test_defaults_work_out_of_the_box(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.store_uri == str(tmp_path / "mobiledet-store")
    assert cfg.conn_id == "aws_default" and cfg.model_name == "mobiledet"
    assert (cfg.calibration_count, cfg.eval_max_images, cfg.threads) == (100, None, 2)
    assert (cfg.benchmark_runs, cfg.benchmark_warmup) == (20, 3)
    g = cfg.gates
    assert g.metric == "AP50" and g.max_map_drop == DEFAULT_MAX_MAP_DROP
    assert g.max_map_drop == {"float32": 0.0, "dynamic": 0.02, "float16": 0.01, "int8": 0.05,
                              "uint8": 0.05}
    # a model that detects nothing (AP50 under 0.01) is rejected by default
    assert (g.min_map, g.require_contract, g.max_latency_ms) == (0.01, True, None)
    assert (g.require_edgetpu_mapped, g.require_edgetpu_compiler) == (True, False)
    assert g.regression_tolerance == 0.02
    assert cfg.warnings == ()
    for precision in PRECISIONS:  # every precision has a drop gate; others are refused
        assert g.max_drop(precision) == DEFAULT_MAX_MAP_DROP[precision]
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        g.max_drop("int4")
    assert PipelineConfig() == cfg  # direct construction uses the same defaults


def test_default_precision_matrix():
    assert default_precisions("cpu", False) == ["float32", "dynamic", "float16", "int8"]
    assert default_precisions("cpu", True) == ["float32", "uint8"]
    for accel in ("edgetpu", "dsp"):
        assert default_precisions(accel, False) == ["float32", "int8"]
        assert default_precisions(accel, True) == ["float32", "uint8"]
    assert default_precisions("gpu", False) == ["float32", "float16"]
    assert default_precisions("gpu", True) == ["float32", "uint8"]
    with pytest.raises(ConfigError, match="unknown variant 'tpu'.*cpu, edgetpu, dsp, gpu"):
        default_precisions("tpu", False)
    cfg = PipelineConfig()
    assert cfg.plan_precisions("edgetpu", False)[0] == ["float32", "int8"]
    assert cfg.plan_precisions("gpu", True) == (["float32", "uint8"], [])


def test_precision_rules():
    with pytest.raises(ConfigError) as exc:
        check_precisions("cpu", False, ["float32", "uint8"])
    assert "uint8" in str(exc.value) and "QAT graph" in str(exc.value) and "fake-quant" in \
        str(exc.value)
    with pytest.raises(ConfigError, match="int8 post-training quantization needs a float graph"):
        check_precisions("edgetpu", True, ["int8"])
    warnings = check_precisions("edgetpu", False, ["float32", "dynamic", "float16", "int8"])
    assert len(warnings) == 2 and all("full-integer" in w for w in warnings)
    assert check_precisions("dsp", True, ["float32", "uint8"]) == []
    with pytest.raises(ConfigError, match="unknown precision 'int4'.*float32, dynamic"):
        check_precisions("cpu", False, ["int4"])
    with pytest.raises(ConfigError, match="listed twice"):
        check_precisions("cpu", False, ["int8", "int8"])
    with pytest.raises(ConfigError, match="non-empty list"):
        check_precisions("cpu", False, [])


def test_precisions_in_config_per_kind_and_shorthand():
    cfg = PipelineConfig.from_dict({"precisions": {
        "edgetpu": {"float": ["float32", "float16", "int8"], "qat": ["uint8"]},
        "cpu": ["float32", "int8"],
    }})
    assert cfg.plan_precisions("edgetpu", False)[0] == ["float32", "float16", "int8"]
    assert cfg.plan_precisions("edgetpu", True)[0] == ["uint8"]
    assert any("float16 on edgetpu" in w for w in cfg.warnings)  # warned at load
    assert cfg.plan_precisions("cpu", False)[0] == ["float32", "int8"]
    # the shorthand list is checked against the checkpoint's kind when the run is planned
    with pytest.raises(ConfigError) as exc:
        cfg.plan_precisions("cpu", True)[0]
    assert exc.value.where == "precisions.cpu" and "qat:" in exc.value.fix
    assert cfg.plan_precisions("gpu", False)[0] == ["float32", "float16"]  # untouched default
    with pytest.raises(ConfigError, match="precisions.dsp.float.*uint8"):
        PipelineConfig.from_dict({"precisions": {"dsp": {"float": ["uint8"]}}})
    with pytest.raises(ConfigError, match="unknown setting.*fp.*allowed: any, float, qat"):
        PipelineConfig.from_dict({"precisions": {"dsp": {"fp": ["int8"]}}})
    with pytest.raises(ConfigError, match="unknown setting.*npu"):
        PipelineConfig.from_dict({"precisions": {"npu": ["int8"]}})


def test_yaml_and_json_files(tmp_path):
    y = tmp_path / "conf" / "pipeline.yaml"
    y.parent.mkdir()
    y.write_text("store_uri: ./store\nmodel_name: detector\ngates:\n  max_map_drop: {int8: 0.04}"
                 "\n  max_latency_ms: 150\n  metric: AP\nthreads: 4\neval_max_images: 50\n")
    cfg = load_config(str(y))
    assert cfg.store_uri == str(tmp_path / "conf" / "store")  # relative to the file
    assert cfg.model_name == "detector" and cfg.threads == 4 and cfg.eval_max_images == 50
    assert cfg.gates.max_map_drop["int8"] == 0.04 and cfg.gates.max_map_drop["uint8"] == 0.05
    assert cfg.gates.max_latency_ms == 150.0 and cfg.gates.metric == "AP"
    j = tmp_path / "pipeline.json"
    j.write_text(json.dumps(cfg.to_dict()))
    assert load_config(str(j)) == cfg  # to_dict round-trips
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(str(empty)).model_name == "mobiledet"


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("gates: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(bad))
    assert str(bad) in str(exc.value) and "line" in str(exc.value)
    badj = tmp_path / "bad.json"
    badj.write_text("{'single': 1}")
    with pytest.raises(ConfigError, match="not valid JSON.*line 1"):
        load_config(str(badj))
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(str(lst))
    typo = tmp_path / "typo.yaml"
    typo.write_text("gates:\n  min_mAP: 0.3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(typo))
    assert str(typo) in str(exc.value) and "min_mAP" in str(exc.value) and "min_map" in \
        str(exc.value)


def test_env_overrides_file_and_overrides_win(tmp_path, monkeypatch):
    y = tmp_path / "p.yaml"
    y.write_text("store_uri: /data/from-file\n")
    monkeypatch.setenv(STORE_ENV, "s3://bucket/from-env/")
    assert load_config(str(y)).store_uri == "s3://bucket/from-env"
    assert PipelineConfig().store_uri == "s3://bucket/from-env"
    cfg = load_config(str(y), overrides={"store_uri": "/data/from-params",
                                         "gates.min_map": "0.25", "gates": {"metric": "AP75"}})
    assert cfg.store_uri == "/data/from-params"
    assert cfg.gates.min_map == 0.25 and cfg.gates.metric == "AP75"
    monkeypatch.setenv(STORE_ENV, "gs://nope")
    with pytest.raises(ConfigError, match=f"environment variable {STORE_ENV}"):
        load_config()


def test_from_dict_airflow_params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {"store_uri": "file://" + str(tmp_path / "s"), "conn_id": None,
              "gates": {"require_contract": "false", "max_latency_ms": None},
              "benchmark_runs": "5"}
    cfg = load_config(params)
    assert cfg.store_uri == "file://" + str(tmp_path / "s")
    assert cfg.conn_id is None and cfg.gates.require_contract is False
    assert cfg.benchmark_runs == 5
    assert isinstance(cfg.gates, GateConfig)
    json.dumps(cfg.to_dict())


@pytest.mark.parametrize("data, field, needle", [
    ({"threads": 0}, "threads", ">= 1"),
    ({"threads": 1.5}, "threads", "whole number"),
    ({"threads": True}, "threads", "whole number"),
    ({"calibration_count": "many"}, "calibration_count", "'many'"),
    ({"eval_max_images": 0}, "eval_max_images", "or null"),
    ({"benchmark_warmup": -1}, "benchmark_warmup", ">= 0"),
    ({"gates": {"max_map_drop": {"int8": 1.5}}}, "gates.max_map_drop.int8", "<= 1"),
    ({"gates": {"max_map_drop": {"int4": 0.1}}}, "gates.max_map_drop", "int4"),
    ({"gates": {"min_map": -0.1}}, "gates.min_map", ">= 0"),
    ({"gates": {"max_latency_ms": 0}}, "gates.max_latency_ms", "> 0"),
    ({"gates": {"regression_tolerance": float("nan")}}, "gates.regression_tolerance", "nan"),
    ({"gates": {"require_contract": "maybe"}}, "gates.require_contract", "true or false"),
    ({"gates": {"metric": "mAP"}}, "gates.metric", "AP, AP50, AP75"),
    ({"gates": 3}, "gates", "mapping"),
    ({"model_name": "my model"}, "model_name", "safe folder name"),
    ({"conn_id": ""}, "conn_id", "connection id"),
    ({"store_uri": "ftp://x/y"}, "store_uri", "file:// or s3://"),
    ({"store_uri": "s3:///nobucket"}, "store_uri", "names no bucket"),
    ({"store_uri": "file://relative"}, "store_uri", "absolute"),
    ({"stores": "x"}, "top level", "stores"),
])
def test_validation_names_field_value_and_allowed(data, field, needle):
    with pytest.raises(ConfigError) as exc:
        PipelineConfig.from_dict(data, source="run params")
    assert exc.value.where == f"run params: {field}"
    assert needle in str(exc.value)
    assert exc.value.fix


# ---------------------------------------------------------------------------- pydantic models
@pytest.mark.parametrize("data, where, near", [
    ({"threds": 4}, "top level", "threads"),
    ({"gates": {"min_mAP": 0.3}}, "gates", "gates.min_map"),
    ({"gates": {"max_map_drop": {"int9": 0.1}}}, "gates.max_map_drop", "gates.max_map_drop.int8"),
    ({"precisions": {"edgtpu": ["int8"]}}, "precisions", "precisions.edgetpu"),
    ({"precisions": {"cpu": {"flaot": ["int8"]}}}, "precisions.cpu", "precisions.cpu.float"),
])
def test_unknown_keys_get_the_nearest_valid_name(data, where, near):
    with pytest.raises(ConfigError) as exc:
        PipelineConfig.from_dict(data, source="run params")
    assert exc.value.where == f"run params: {where}"
    assert f"did you mean {near}?" in str(exc.value).lower()


def test_error_names_the_layer_that_set_the_bad_value(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("gates:\n  min_map: 0.2\nthreads: 0\n")
    with pytest.raises(ConfigError) as exc:  # the file's bad value
        load_config(str(y))
    assert exc.value.where == f"{y}: threads"
    with pytest.raises(ConfigError) as exc:  # the override's bad value, dotted or nested
        load_config(str(y), overrides={"threads": 2, "gates.min_map": 2})
    assert exc.value.where == "overrides: gates.min_map" and "<= 1" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_config(overrides={"gates": {"metric": "ap50"}})
    assert exc.value.where == "overrides: gates.metric" and "did you mean ap50" in \
        str(exc.value).lower()
    with pytest.raises(ConfigError) as exc:  # a shorthand list is named as written
        load_config(overrides={"precisions.cpu": ["float32", "int4"]})
    assert exc.value.where == "overrides: precisions.cpu" and "did you mean int8" in \
        str(exc.value).lower()
    with pytest.raises(ConfigError) as exc:  # a rule across settings, from the file
        y.write_text("precisions: {dsp: {float: [uint8]}}\n")
        load_config(str(y), overrides={"threads": 3})
    assert exc.value.where == f"{y}: precisions.dsp.float"


def test_models_are_frozen_and_refuse_bad_values_when_built_directly():
    from pydantic import ValidationError

    gates = GateConfig(max_map_drop={"int8": 0.04}, max_latency_ms="off")
    assert gates.max_map_drop["int8"] == 0.04 and gates.max_map_drop["uint8"] == 0.05
    assert gates.max_latency_ms is None
    with pytest.raises((ValidationError, TypeError, AttributeError)):
        gates.min_map = 0.5
    with pytest.raises(ConfigError) as exc:
        GateConfig(max_latency_ms=True)
    assert exc.value.where == "gates.max_latency_ms" and "got True" in str(exc.value)
    with pytest.raises(ConfigError, match="threads.*whole number"):
        PipelineConfig(threads="x")
    with pytest.raises(ConfigError, match="unknown setting 'warnings'"):
        PipelineConfig.from_dict({"warnings": ["x"]})  # computed, not a setting
    cfg = PipelineConfig(precisions={"gpu": ["float32", "float16"]})
    assert cfg.plan_precisions("gpu", False) == (["float32", "float16"], [])
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg


def test_config_schema_is_generated_from_the_model(tmp_path):
    import jsonschema

    from include.config import config_schema

    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    # every setting of the model is in the schema, with the model's default
    defaults = PipelineConfig.from_dict({"store_uri": str(tmp_path)}).to_dict()
    assert set(schema["properties"]) == set(defaults)
    gates = schema["properties"]["gates"]["properties"]
    assert {k: v["default"] for k, v in gates.items()} == GateConfig().to_dict()
    assert gates["metric"]["enum"] == list(GATE_METRICS)
    # what the schema accepts loads, what it refuses the loader refuses too
    good = {"gates": {"min_map": 0.2, "max_map_drop": {"int8": 0.04}},
            "precisions": {"cpu": ["float32", "int8"], "edgetpu": {"qat": ["uint8"]}},
            "threads": 4, "eval_max_images": None}
    jsonschema.validate(good, schema)
    PipelineConfig.from_dict(good)
    for bad in ({"threads": 0}, {"gates": {"min_mAP": 0.3}}, {"gates": {"metric": "mAP"}},
                {"precisions": {"cpu": ["int4"]}}, {"gates": {"max_latency_ms": 0}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        with pytest.raises(ConfigError):
            PipelineConfig.from_dict(bad)


def test_overrides_schema_validates_the_dag_param():
    import jsonschema
    from airflow.sdk import Param

    from include.config import overrides_schema

    param = Param({}, **overrides_schema())
    assert param.resolve() == {}
    # every task process checks this schema against its metaschema twice: draft-07's is the
    # cheap one (include/config.py says why)
    assert jsonschema.validators.validator_for(overrides_schema()) is jsonschema.Draft7Validator
    fast = {"calibration_count": 4, "benchmark_runs": 3, "benchmark_warmup": 1, "threads": 2}
    for ok in (fast, {"gates.min_map": 0.3}, {"gates": {"metric": "AP75"}},
               {"precisions.edgetpu.float": ["float32", "int8"]}, {"gates.max_latency_ms": None},
               {"gates.max_map_drop.int8": 0.04}):
        assert param.resolve(ok) == ok
        load_config(overrides={k: v for k, v in ok.items() if v is not None})
    for bad in ({"gates.min_mAP": 0.3}, {"gates.min_map": 3}, {"threads": 0},
                {"precisions.cpu": ["int4"]}, {"gates": {"metric": "mAP"}}):
        with pytest.raises(Exception, match="min_mAP|maximum|minimum|int4|mAP"):
            param.resolve(bad)


def test_cli_config_verb(tmp_path, monkeypatch, capsys):
    from include.cli import build_parser

    def run(*argv):
        args = build_parser().parse_args(["config", *argv])
        return args.func(args)

    monkeypatch.chdir(tmp_path)
    assert run("--schema") == 0
    schema = json.loads(capsys.readouterr().out)
    assert "gates" in schema["properties"] and schema["additionalProperties"] is False
    assert run("--set", "gates.min_map=0.3", "--set",
               'precisions.edgetpu.float=["float32","float16"]', "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["gates"]["min_map"] == 0.3
    assert out["config"]["store_uri"] == str(tmp_path / "mobiledet-store")
    assert any("float16 on edgetpu" in w for w in out["warnings"])
    y = tmp_path / "p.yaml"
    y.write_text("model_name: detector\n")
    assert run("--config", str(y)) == 0
    assert "model_name: detector" in capsys.readouterr().out
    with pytest.raises(ConfigError) as exc:  # the CLI prints it and exits 2
        run("--set", "gates.min_mAP=0.3")
    assert exc.value.where == "overrides: gates" and "Did you mean gates.min_map?" in \
        str(exc.value)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        run("--set", "novalue")
