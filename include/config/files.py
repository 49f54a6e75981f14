"""Loading the config: a YAML/JSON file, the environment, overrides (CLI --set, DAG params),
and the JSON schemas of the file and of the DAG's `overrides` param.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Mapping

from include.config.messages import non_null
from include.config.model import (DEFAULT_STORE_DIR, STORE_ENV, PipelineConfig,
                                  pipeline_schema, store_setting, validate_config)
from include.errors import ConfigError
from include.settings import settings


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------
def config_schema() -> dict:
    """The JSON schema of a config file (what `mobiledet config --schema` prints)."""
    schema = copy.deepcopy(pipeline_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mobiledet pipeline config"
    schema["description"] = ("Settings of the mobiledet conversion pipeline (a YAML or JSON "
                             "file); every setting has a default.")
    return schema


def overrides_schema() -> dict:
    """JSON schema of the DAG's `overrides` param: an object whose keys are top-level settings
    (a nested object is merged) or dotted key paths ("gates.min_map") to a nested setting. Pass
    it to Airflow as ``Param({}, **overrides_schema())``. Every value may also be null, which
    the DAG treats as "not set"."""
    root = pipeline_schema()
    props: dict = {}

    def nullable(node):
        node = {k: v for k, v in node.items() if k not in ("default", "title")}
        return {"anyOf": [node, {"type": "null"}]}

    def add(path, node):
        props[".".join(path)] = nullable(node)
        inner, _ = non_null(node)
        for key, sub in inner.get("properties", {}).items():
            add(path + (key,), sub)
        keys = inner.get("propertyNames", {}).get("enum")
        if keys and isinstance(inner.get("additionalProperties"), dict):
            for key in keys:
                add(path + (key,), inner["additionalProperties"])

    for key, node in root["properties"].items():
        add((key,), node)
    # Declared draft-07 (every keyword here means the same there as in 2020-12): Airflow
    # checks this schema against its metaschema in every task process, twice (at DAG parse
    # and when it builds the task's params), and the 2020-12 metaschema, split into
    # $dynamicRef'd vocabularies, takes 45 ms per check on this 15 KB schema; draft-07 8 ms.
    return {"$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object", "additionalProperties": False, "properties": props,
            "description": "config overrides: setting or dotted key path -> value, e.g. "
                           "{\"gates.min_map\": 0.3, \"threads\": 4}"}


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


def _nested(extra: Mapping) -> dict:
    """Dotted keys -> nested mappings: {"gates.min_map": 1} -> {"gates": {"min_map": 1}}."""
    out: dict = {}
    for key, value in extra.items():
        if isinstance(key, str) and "." in key:
            head, _, rest = key.partition(".")
            key, value = head, {rest: value}
        if isinstance(value, Mapping):
            value = _nested(value)
        out = _merge(out, {key: value})
    return out


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def parse_overrides(pairs) -> dict:
    """CLI ``--set KEY=VALUE`` pairs -> an overrides dict (VALUE is JSON when it parses, else
    a string): ["gates.min_map=0.3", "model_name=det"] -> {"gates.min_map": 0.3, ...}."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not KEY=VALUE.", where="--set",
                              fix="e.g. --set gates.min_map=0.3")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def load_config(path: str | None = None, *, overrides: Mapping | None = None,
                environ: Mapping | None = None) -> PipelineConfig:
    """Load the pipeline config: defaults < file < $MOBILEDET_STORE < overrides (module doc).

    `path` may also be a dict (e.g. Airflow run params used as the whole config). An error
    names the layer the bad value came from ("overrides: gates.min_map").
    """
    if isinstance(path, Mapping):
        data, source, base_dir = dict(path), "config", None
    elif path:
        data, source = read_config_file(path), os.fspath(path)
        base_dir = os.path.dirname(os.path.abspath(os.path.expanduser(source)))
    else:
        data, source, base_dir = {}, "defaults", None
    data = _nested(data)
    layers = [(source, data)]
    if isinstance(data.get("store_uri"), str) and data["store_uri"].strip():
        data["store_uri"] = store_setting(data["store_uri"], f"{source}: store_uri", base_dir)
    env_store = settings(environ).store
    if env_store:
        uri = store_setting(env_store, f"environment variable {STORE_ENV}", None)
        layers.append((f"${STORE_ENV}", {"store_uri": uri}))
        data = _merge(data, {"store_uri": uri})
    if overrides:
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"overrides must be a mapping, got {type(overrides).__name__}.",
                              where="overrides", fix="pass a dict of settings.")
        extra = _nested(overrides)
        layers.append(("overrides", extra))
        data = _merge(data, extra)
    if not data.get("store_uri"):
        data["store_uri"] = store_setting(DEFAULT_STORE_DIR, "store_uri", None)
    return validate_config(data, layers, None)
