"""What the dashboard's pages are made of, as pure functions of manifests and reports: the
order of variants and precisions, one table cell per model, flattened settings, a bounded cache.
"""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

VARIANT_ORDER = ("cpu", "edgetpu", "dsp", "gpu")
PRECISION_ORDER = ("float32", "dynamic", "float16", "int8", "uint8")
# Stage order of one run (reports may store stages as a JSON object, whose keys get sorted).
STAGE_ORDER = ("plan", "claim", "export", "convert", "check", "evaluate", "validate",
               "benchmark", "edgetpu", "recipe_search", "gate", "publish", "report")
OPS_RE = re.compile(r"(\d+)/(\d+) ops on the Edge TPU")


class LRU:
    """A bounded dict: least recently used entries go first."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict = OrderedDict()

    def get(self, key, default=None):
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        return default

    def __contains__(self, key) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def put(self, key, value) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


def order(value: str, order: tuple) -> tuple:
    return (order.index(value) if value in order else len(order), value)


def pair_name(variant: str, precision: str) -> str:
    return f"{variant}/{precision}"


def check_of(decision: dict, name: str) -> dict:
    for c in decision.get("checks") or []:
        if isinstance(c, dict) and c.get("name") == name:
            return c
    return {}


def num(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def edgetpu_from_check(check: dict) -> dict | None:
    """Ops on the Edge TPU as the gate recorded them in its edgetpu_mapping detail."""
    if not check or check.get("status") in (None, "not_applicable", "off"):
        return None
    detail = str(check.get("detail") or "")
    m = OPS_RE.search(detail)
    source = "compiler" if "decided by: compiler" in detail else \
        "prediction" if "prediction" in detail else None
    if not m:
        return {"on_tpu": None, "total": None, "source": source, "status": check.get("status")}
    return {"on_tpu": int(m.group(1)), "total": int(m.group(2)), "source": source,
            "status": check.get("status")}


def cell_of(entry: dict, state: str) -> dict:
    """The numbers of one model of one release, as the matrix and the trends show them."""
    decision = entry.get("decision") or {}
    metrics = entry.get("metrics") or {}
    files = entry.get("files") or {}
    metric = decision.get("metric")
    value = num(decision.get("map"))
    if value is None and metric:
        value = num(metrics.get(metric))
    drop_check = check_of(decision, "map_drop")
    drop = num(drop_check.get("value"))
    floors = []
    limit = num(drop_check.get("threshold"))
    if value is not None and drop is not None and limit is not None:
        floors.append(value + drop - limit)  # reference - allowed drop
    min_check = check_of(decision, "min_map")
    if min_check.get("status") not in (None, "off") and num(min_check.get("threshold")):
        floors.append(num(min_check.get("threshold")))
    lat_check = check_of(decision, "latency")
    size = num(metrics.get("size_bytes"))
    if size is None and isinstance(files.get("model.tflite"), dict):
        size = num(files["model.tflite"].get("size"))
    reasons = entry.get("reasons") or decision.get("reasons") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    return {
        "variant": entry.get("variant"), "precision": entry.get("precision"),
        "state": state, "passed": state == "published",
        "verdict": "PASS" if state == "published" else "REJECTED",
        "metric": metric, "value": value, "drop": drop,
        "floor": round(max(floors), 6) if floors else None,
        "latency_ms": num(metrics.get("latency_ms")),
        "latency_limit": num(lat_check.get("threshold"))
        if lat_check.get("status") not in (None, "off") else None,
        "latency_ratio": latency_ratio_of(decision, metrics),
        "latency_ratio_status": check_of(decision, "latency_ratio").get("status"),
        "size_bytes": size,
        "edgetpu": edgetpu_from_check(check_of(decision, "edgetpu_mapping")),
        "reasons": [str(r) for r in reasons],
        "path": entry.get("path"),
    }


def device_figures(items) -> list[dict]:
    """A model's phone benchmarks (the manifest entry's or report model's
    ``device_benchmarks``) as the pages show them: device, delegate, latency_ms (the
    delegate's own figure, else None), text ("12.3 ms", "12.3 ms, fell back to xnnpack", "not
    measured: why"), status."""
    out = []
    for f in items or []:
        if not isinstance(f, dict):
            continue
        value, measured = num(f.get("latency_ms")), num(f.get("measured_latency_ms"))
        fallback = f.get("fallback") if isinstance(f.get("fallback"), dict) else {}
        errors = [str(e) for e in f.get("errors") or []]
        if value is not None:
            text = f"{value:.1f} ms"
        elif measured is not None and fallback.get("to"):
            text = f"{measured:.1f} ms, fell back to {fallback['to']}"
        else:
            text = "not measured" + (f": {errors[0]}" if errors else "")
        out.append({"device": str(f.get("device")), "delegate": str(f.get("delegate")),
                    "latency_ms": value, "text": text, "status": f.get("status"),
                    "phone": f.get("phone"), "android": f.get("android")})
    return out


def device_columns(rows) -> list[str]:
    """The device names of a page's models, in first-seen order (one column each)."""
    names: list[str] = []
    for row in rows:
        for f in row.get("devices") or []:
            if f["device"] not in names:
                names.append(f["device"])
    return names


def by_device(figures: list[dict], name: str) -> str:
    """One device's cell: its figure, or one per delegate ("cpu 12.3 ms; gpu 4.1 ms")."""
    mine = [f for f in figures if f["device"] == name]
    if len(mine) == 1:
        return mine[0]["text"]
    return "; ".join(f"{f['delegate']} {f['text']}" for f in mine) or "-"


def latency_ratio_of(decision: dict, metrics: dict) -> float | None:
    """An integer model's latency against its float32 model (the gate's latency_ratio check,
    else the metrics' latency_ratio_to_float32); None when not measured."""
    value = num(check_of(decision, "latency_ratio").get("value"))
    return value if value is not None else num((metrics or {}).get("latency_ratio_to_float32"))


def models_of(manifest: dict):
    for e in manifest.get("published") or []:
        if isinstance(e, dict):
            yield e, "published"
    for e in manifest.get("rejected") or []:
        if isinstance(e, dict):
            yield e, "rejected"


def newest_first(manifests: list[dict]) -> list[dict]:
    return sorted(manifests, key=lambda m: (str(m.get("published_at") or ""),
                                            str(m.get("version") or "")), reverse=True)


def run_sort_key(run_id: str) -> tuple:
    # Airflow run ids are '<kind>__<logical date>': order by the date part, newest first.
    _, sep, stamp = run_id.partition("__")
    return (stamp if sep else "", run_id)


def flatten(obj: Any) -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (lists stay values)."""
    out: dict[str, Any] = {}

    def walk(o, path):
        if isinstance(o, dict) and o:
            for k, v in o.items():
                walk(v, f"{path}.{k}" if path else str(k))
        else:
            out[path] = o
    walk(obj, "")
    return out



def dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=False, allow_nan=False, default=str).encode()
