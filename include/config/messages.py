"""Config validation errors as ConfigErrors a person can act on: the key path (and the layer
it came from), the bad value, the allowed values and the fix, with the nearest valid name for
a misspelt key or value. Pure functions over the config's JSON schema.
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping

from pydantic import ValidationError

from include.convert.recipes import PRECISIONS
from include.errors import ConfigError

# Fixes for values outside a field's allowed set, where the generic one says too little.
FIXES = {
    "gates.metric": "AP50 (IoU 0.5) or AP (IoU .5:.95) are the usual choices.",
    "gates.edgetpu": "auto (the compiler where installed, else the offline prediction), "
                     "compiler, prediction or off.",
}
_DEVICE_PATTERNFIXES = {
    "devices.name": "use letters, digits, '.', '_' and '-', starting with a letter or digit.",
    "devices.serial": "write the serial as `adb devices` lists it (no spaces).",
    "devices.queue": "use letters, digits and '.', '_', ':', '@', '-', starting with a letter "
                     "or digit.",
}
NOUNS = {"gates.metric": "metric", "gates.edgetpu": "Edge TPU gate mode",
          "devices.delegates": "delegate"}


class Problem(ValueError):
    """Raised inside a validator: pydantic records it at the field's location."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def did_you_mean(name: Any, choices, prefix: str = "") -> str:
    near = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    if not near:
        lowered = {str(c).lower(): str(c) for c in choices}
        near = [lowered[str(name).lower()]] if str(name).lower() in lowered else []
    return f" Did you mean {prefix}{near[0]}?" if near else ""


def schema_at(schema: dict, path) -> tuple[dict, bool]:
    """The JSON schema at a key path of `schema` -> (schema, nullable)."""
    node, nullable = schema, False
    for key in path:
        node, nullable = non_null(node)
        if isinstance(key, int):
            node = node.get("items", {})
        elif key in node.get("properties", {}):
            node = node["properties"][key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return {}, False
    return non_null(node)


def non_null(node: dict) -> tuple[dict, bool]:
    options = node.get("anyOf")
    if not options:
        return node, False
    rest = [o for o in options if o.get("type") != "null"]
    objects = [o for o in rest if o.get("type") == "object"]
    return (objects or rest or [{}])[0], len(rest) < len(options)


def allowed(node: dict, nullable: bool) -> str:
    kind = {"integer": "a whole number", "number": "a number", "boolean": "true or false",
            "string": "a string", "object": "a mapping", "array": "a list"}.get(
        node.get("type"), "a value")
    rng = []
    if "minimum" in node:
        rng.append(f">= {node['minimum']:g}")
    if "exclusiveMinimum" in node:
        rng.append(f"> {node['exclusiveMinimum']:g}")
    if "maximum" in node:
        rng.append(f"<= {node['maximum']:g}")
    return kind + (" " + " and ".join(rng) if rng else "") + (" or null (off)" if nullable else "")


def names(schema: dict, path) -> list[str]:
    """The valid keys at `path` (for unknown-key messages)."""
    node, _ = schema_at(schema, path)
    if "properties" in node:
        return list(node["properties"])
    names = node.get("propertyNames", {}).get("enum")
    return list(names or [])


def config_error(exc: ValidationError, model: type | None, schema: dict, *,
                 prefix: tuple = (), where: str | None = None, source: str | None = None,
                 data: Mapping | None = None) -> ConfigError:
    """The first error of a pydantic ValidationError as a ConfigError that names the key.

    `schema` is the whole config's JSON schema (refs inlined); `data` (the validated mapping)
    lets a shorthand precision list be named as written (precisions.cpu, not
    precisions.cpu.any)."""
    err = exc.errors()[0]
    loc = tuple(prefix) + tuple(err["loc"])
    typ, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    keys = [k for k in loc if isinstance(k, str) and k != "[key]"]
    if keys[:1] == ["precisions"] and keys[2:3] == ["any"] and data is not None and \
            not isinstance((data.get("precisions") or {}).get(keys[1]), Mapping):
        del keys[2]
    if model is None:  # a bare precision list
        keys, schema_path = [], ("precisions", "cpu", "any") + tuple(
            k for k in err["loc"] if isinstance(k, int))
    else:
        schema_path = loc
    dotted = plain = ".".join(keys)
    if loc[:1] == ("devices",) and model is not None:  # name the entry: devices[1].serial
        dotted = label(loc)

    if typ == "extra_forbidden" or (loc and loc[-1] == "[key]"):
        name = keys[-1] if typ == "extra_forbidden" else value
        parent = keys[:-1]
        parent_loc = tuple(k for k in loc[:-1] if k != "[key]")
        valid = names(schema, parent_loc if loc[:1] == ("devices",) else tuple(parent))
        parent_dotted = label(parent_loc) if loc[:1] == ("devices",) else ".".join(parent)
        problem = (f"unknown setting {name!r}; allowed: {', '.join(sorted(map(str, valid)))}."
                   + did_you_mean(name, valid, parent_dotted + "." if parent_dotted else ""))
        return located(problem, "check the spelling; remove settings this version does not "
                                 "know.", parent_dotted or "top level", where, source)

    node, nullable = schema_at(schema, tuple(k for k in schema_path if k != "[key]"))
    fix = FIXES.get(plain)
    if typ == "value_error" and isinstance(ctx.get("error"), Problem):
        problem, fix = ctx["error"].problem, ctx["error"].fix
        if problem.startswith("expected a number") and node.get("type") in ("integer", "number"):
            problem = f"expected {allowed(node, nullable)}, got {value!r}."
            fix = "set a number in the allowed range."
    elif typ in ("literal_error", "enum"):
        choices = node.get("enum") or []
        noun = NOUNS.get(plain) or ("precision" if "precisions" in keys or model is None
                                      else "value")
        problem = (f"unknown {noun} {value!r}; allowed values: {', '.join(map(str, choices))}."
                   + did_you_mean(value, choices))
        fix = fix or f"use one of the allowed {noun}s."
    elif typ.startswith("bool_"):
        problem, fix = f"expected true or false, got {value!r}.", "write true or false."
    elif typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        problem = f"{value!r} is out of range; allowed: {allowed(node, nullable)}."
        fix = fix or "set a value in the allowed range."
    elif typ.startswith(("int_", "float_")) or typ in ("finite_number", "number_type"):
        kind = "a whole number" if node.get("type") == "integer" else "a number"
        problem = f"expected {allowed(node, nullable)}, got {value!r}."
        fix = fix or f"set {kind} in the allowed range."
    elif typ in ("dict_type", "model_type", "model_attributes_type", "mapping_type") and \
            keys[:1] == ["precisions"] and len(keys) == 2:
        problem = (f"expected a list of precisions or {{float: [...], qat: [...], any: [...]}}, "
                   f"got {value!r}.")
        fix = f"e.g. {dotted}: [float32, int8]."
    elif typ in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        example = {"gates": "e.g. gates: {min_map: 0.2}."}.get(dotted, "write key: value pairs.")
        problem, fix = f"expected a mapping of settings, got {value!r}.", example
    elif typ == "list_type" and plain == "devices":
        problem = f"expected a list of devices, got {value!r}."
        fix = "e.g. devices: [{name: pixel4, serial: 9A1B2C3D, delegates: [cpu, gpu]}]."
    elif typ in ("list_type", "too_short"):
        problem = (f"expected a non-empty list of precisions, got {value!r}; allowed values: "
                   f"{', '.join(PRECISIONS)}.") if "precisions" in keys or model is None else \
            f"expected a non-empty list, got {value!r}."
        fix = "e.g. [float32, int8]."
    elif typ == "string_pattern_mismatch" and plain in _DEVICE_PATTERNFIXES:
        problem = f"{value!r} is not a valid device {keys[-1]}."
        fix = _DEVICE_PATTERNFIXES[plain]
    elif typ == "missing" and plain.startswith("devices."):
        problem = f"a device needs its {keys[-1]}."
        fix = "e.g. devices: [{name: pixel4, serial: 9A1B2C3D, delegates: [cpu, gpu]}]."
    elif typ == "string_pattern_mismatch" and dotted == "model_name":
        problem = f"model_name {value!r} is not a safe folder name."
        fix = "use letters, digits, '.', '_' and '-', starting with a letter or digit."
    elif typ == "string_type":
        problem, fix = f"expected a string, got {value!r}.", fix or "write a string."
    else:
        problem, fix = f"{err['msg']} (got {value!r}).", fix or "correct the value."
    return located(problem, fix, dotted or "top level", where, source)


def label(loc) -> str:
    """A key path with list positions: ("devices", 1, "serial") -> devices[1].serial."""
    out = ""
    for key in loc:
        if isinstance(key, int):
            out += f"[{key}]"
        elif key != "[key]":
            out += ("." if out else "") + str(key)
    return out


def located(problem, fix, dotted, where, source) -> ConfigError:
    if where is None:
        where = dotted if source is None else f"{source}: {dotted}"
    return ConfigError(problem, where=where, fix=fix)
