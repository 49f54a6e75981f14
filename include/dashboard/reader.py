"""Read releases and runs from the artifact store, with caching; build what the pages show.

Only the store API is used (`include.store`: list, read_json, is_file, get_bytes, path), so a
folder and s3:// behave the same, and nothing is ever written.

How it caches
-------------
* A manifest (``MODEL/VERSION/manifest.json``) is created once, by a conditional create, and
  never rewritten: it is cached by key for the life of the process. So are the files of a
  published model (conversion.json, metrics.json, validation.json) and the Edge TPU reports of
  a finished run.
* The list of versions of a model is listed again at most every `relist_s` seconds (default
  30), and at once when the model's ``latest.json`` pointer names a version not listed yet.
  Pointers are small and read again at most every `pointer_ttl_s` seconds (default 5).
* Run reports, run folders and picture listings (things a later task may still add to) are
  kept for `relist_s`.
* What a page shows is built from these and cached under a key made of the versions listed
  and the pointers read, so a warm releases page is one dictionary lookup plus rendering.

A new release therefore appears on the next request after its publish moved ``latest.json``
(at most `pointer_ttl_s` later), and at the latest `relist_s` after its manifest was created.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from include.dashboard.safety import NotFound, check_name, redact
from include.errors import StoreError
from include.store import layout
from include.store.layout import RESERVED_TOP

VARIANT_ORDER = ("cpu", "edgetpu", "dsp", "gpu")
PRECISION_ORDER = ("float32", "dynamic", "float16", "int8", "uint8")
# Stage order of one run (reports may store stages as a JSON object, whose keys get sorted).
STAGE_ORDER = ("plan", "claim", "export", "convert", "check", "evaluate", "validate",
               "benchmark", "edgetpu", "recipe_search", "gate", "publish", "report")
_OPS_RE = re.compile(r"(\d+)/(\d+) ops on the Edge TPU")


class _LRU:
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

    def put(self, key, value) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


def _order(value: str, order: tuple) -> tuple:
    return (order.index(value) if value in order else len(order), value)


def pair_name(variant: str, precision: str) -> str:
    return f"{variant}/{precision}"


def _check_of(decision: dict, name: str) -> dict:
    for c in decision.get("checks") or []:
        if isinstance(c, dict) and c.get("name") == name:
            return c
    return {}


def _num(value) -> float | None:
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
    m = _OPS_RE.search(detail)
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
    value = _num(decision.get("map"))
    if value is None and metric:
        value = _num(metrics.get(metric))
    drop_check = _check_of(decision, "map_drop")
    drop = _num(drop_check.get("value"))
    floors = []
    limit = _num(drop_check.get("threshold"))
    if value is not None and drop is not None and limit is not None:
        floors.append(value + drop - limit)  # reference - allowed drop
    min_check = _check_of(decision, "min_map")
    if min_check.get("status") not in (None, "off") and _num(min_check.get("threshold")):
        floors.append(_num(min_check.get("threshold")))
    lat_check = _check_of(decision, "latency")
    size = _num(metrics.get("size_bytes"))
    if size is None and isinstance(files.get("model.tflite"), dict):
        size = _num(files["model.tflite"].get("size"))
    reasons = entry.get("reasons") or decision.get("reasons") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    return {
        "variant": entry.get("variant"), "precision": entry.get("precision"),
        "state": state, "passed": state == "published",
        "verdict": "PASS" if state == "published" else "REJECTED",
        "metric": metric, "value": value, "drop": drop,
        "floor": round(max(floors), 6) if floors else None,
        "latency_ms": _num(metrics.get("latency_ms")),
        "latency_limit": _num(lat_check.get("threshold"))
        if lat_check.get("status") not in (None, "off") else None,
        "size_bytes": size,
        "edgetpu": edgetpu_from_check(_check_of(decision, "edgetpu_mapping")),
        "reasons": [str(r) for r in reasons],
        "path": entry.get("path"),
    }


def _models_of(manifest: dict):
    for e in manifest.get("published") or []:
        if isinstance(e, dict):
            yield e, "published"
    for e in manifest.get("rejected") or []:
        if isinstance(e, dict):
            yield e, "rejected"


def _newest_first(manifests: list[dict]) -> list[dict]:
    return sorted(manifests, key=lambda m: (str(m.get("published_at") or ""),
                                            str(m.get("version") or "")), reverse=True)


def _run_sort_key(run_id: str) -> tuple:
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


class StoreReader:
    """Cached, read-only access to the releases and runs of one artifact store."""

    def __init__(self, store, *, conn_id: str | None = None, model: str | None = None,
                 relist_s: float = 30.0, pointer_ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        from include.store import DEFAULT_CONN_ID, open_store

        self.store = open_store(store, conn_id=conn_id or DEFAULT_CONN_ID)
        self.default_model = check_name(model, "model") if model else None
        self.relist_s = float(relist_s)
        self.pointer_ttl_s = float(pointer_ttl_s)
        self.clock = clock
        self._lock = threading.RLock()
        self._immutable = _LRU(20000)   # key -> parsed JSON, for keys never rewritten
        self._timed: dict[Any, tuple[float, Any]] = {}
        self._views = _LRU(256)         # (view, state key) -> built view
        self.stats = {"manifest_reads": 0, "lists": 0, "pointer_reads": 0}

    # -- cache primitives -------------------------------------------------------------------
    def _ttl(self, key, ttl: float, make: Callable[[], Any], *, force: bool = False):
        now = self.clock()
        with self._lock:
            hit = self._timed.get(key)
            if hit and not force and now - hit[0] < ttl:
                return hit[1]
        value = make()
        with self._lock:
            self._timed[key] = (self.clock(), value)
        return value

    def _json_forever(self, key: str) -> Any:
        """A JSON file that is never rewritten once it exists (None while it does not)."""
        with self._lock:
            if key in self._immutable:
                return self._immutable.get(key)
        if not self.store.is_file(key):
            return None
        doc = redact(self.store.read_json(key))
        with self._lock:
            self._immutable.put(key, doc)
        return doc

    def _json_timed(self, key: str) -> Any:
        def read():
            return redact(self.store.read_json(key)) if self.store.is_file(key) else None
        return self._ttl(("json", key), self.relist_s, read)

    # -- models, versions, pointers ---------------------------------------------------------
    def _children(self, prefix: str) -> list[tuple[str, bool]]:
        """(name, is_folder) of what lies directly under `prefix` ('' = the store's root)."""
        found = self.store.children(prefix)
        self.stats["lists"] += 1
        return [(n, d) for n, d in found if not n.startswith(".")]

    def models(self) -> list[str]:
        """Models with at least one release: top-level folders holding a latest.json."""
        def find():
            names = []
            for name, is_dir in self._children(""):
                if not is_dir or name in RESERVED_TOP or not re.match(r"^[A-Za-z0-9]", name):
                    continue
                try:
                    check_name(name, "model")
                except StoreError:
                    continue
                if self.store.is_file(layout.pointer_key(name)) or \
                        (self.default_model and name == self.default_model):
                    names.append(name)
            return names
        found = self._ttl("models", self.relist_s, find)
        if self.default_model and self.default_model not in found:
            return [self.default_model, *found]
        return found

    def model_or_default(self, model: str | None) -> str:
        if model:
            check_name(model, "model")
            if model not in self.models():
                raise NotFound(f"model {model!r} has no release in this store.",
                               where=self.store.base_uri,
                               fix=f"pick one of: {', '.join(self.models()) or 'none yet'}.")
            return model
        names = self.models()
        if self.default_model:
            return self.default_model
        if "mobiledet" in names:
            return "mobiledet"
        if not names:
            return self.default_model or "mobiledet"
        return names[0]

    def pointers(self, model: str) -> dict:
        """The consumer pointers of `model`: latest.json, per variant and per precision."""
        def read():
            self.stats["pointer_reads"] += 1
            out = {"model": None, "variants": {}, "pairs": {}}
            out["model"] = self.store.read_json_if_any(layout.pointer_key(model))
            for key in self.store.list(layout.pointers_prefix(model)):
                where = layout.parse_pointer_key(key)
                if where is None or where[0] is None:
                    continue
                try:
                    doc = self.store.read_json(key)
                except StoreError:
                    continue
                variant, precision = where
                if precision is None:
                    out["variants"][variant] = doc
                else:
                    out["pairs"][pair_name(variant, precision)] = doc
            return out
        return self._ttl(("pointers", model), self.pointer_ttl_s, read)

    def versions(self, model: str) -> tuple[str, ...]:
        """Published versions of `model` (listed again as the module doc says)."""
        from include.store import list_versions

        def listing():
            self.stats["lists"] += 1
            return tuple(list_versions(self.store, model))
        listed = self._ttl(("versions", model), self.relist_s, listing)
        newest = (self.pointers(model).get("model") or {}).get("version")
        if newest and newest not in listed:
            listed = self._ttl(("versions", model), self.relist_s, listing, force=True)
        return listed

    def manifest(self, model: str, version: str) -> dict:
        check_name(model, "model")
        check_name(version, "version")
        key = layout.manifest_key(model, version)
        with self._lock:
            hit = self._immutable.get(key)
        if hit is not None:
            return hit
        if version not in self.versions(model):
            raise NotFound(f"version {version!r} of model {model!r} is not published.",
                           where=self.store.uri(key), fix="pick a version from the releases page.")
        self.stats["manifest_reads"] += 1
        doc = redact(self.store.read_json(key))  # what is shown never holds a credential
        with self._lock:
            self._immutable.put(key, doc)
        return doc

    def manifests(self, model: str) -> list[dict]:
        """Every release of `model`, newest first; an unreadable manifest becomes an error row."""
        out = []
        for v in self.versions(model):
            try:
                out.append(self.manifest(model, v))
            except StoreError as exc:
                out.append({"version": v, "published_at": "", "error": exc.problem,
                            "published": [], "rejected": []})
        return _newest_first(out)

    def _state(self, model: str) -> tuple:
        p = self.pointers(model)
        marks = tuple(sorted((k, (d or {}).get("version")) for k, d in p["pairs"].items())) + \
            tuple(sorted((k, (d or {}).get("version")) for k, d in p["variants"].items())) + \
            (("latest", (p["model"] or {}).get("version")),)
        return (model, self.versions(model), marks)

    def _view(self, name: str, model: str, build: Callable[[], Any], *extra):
        key = (name, self._state(model), *extra)
        with self._lock:
            hit = self._views.get(key)
        if hit is not None:
            return hit
        value = build()
        with self._lock:
            self._views.put(key, value)
        return value

    def state_key(self, model: str) -> tuple:
        """Changes when a release or pointer of `model` changes (for caching pages)."""
        return self._state(model)

    # -- releases matrix --------------------------------------------------------------------
    def releases(self, model: str | None = None) -> dict:
        model = self.model_or_default(model)
        return self._view("releases", model, lambda: self._build_releases(model))

    def _build_releases(self, model: str) -> dict:
        pointers = self.pointers(model)
        manifests = self.manifests(model)
        pairs = set()
        rows = []
        latest_version = (pointers["model"] or {}).get("version")
        for m in manifests:
            version = m.get("version")
            cells = {}
            for entry, state in _models_of(m):
                c = cell_of(entry, state)
                name = pair_name(str(c["variant"]), str(c["precision"]))
                target = (pointers["pairs"].get(name) or {}).get("version")
                c["pointer"] = target is not None and target == version
                cells[name] = c
                pairs.add((str(c["variant"]), str(c["precision"])))
            marks = (["latest"] if latest_version == version else []) + sorted(
                v for v, d in pointers["variants"].items() if (d or {}).get("version") == version)
            lineage = m.get("lineage") or {}
            rows.append({"version": version, "published_at": m.get("published_at"),
                         "publisher": m.get("publisher"), "qat": lineage.get("qat"),
                         "checkpoint_fingerprint": lineage.get("checkpoint_fingerprint"),
                         "run_id": lineage.get("run_id"), "pointers": marks,
                         "error": m.get("error"), "cells": cells,
                         "published": sum(1 for c in cells.values() if c["passed"]),
                         "rejected": sum(1 for c in cells.values() if not c["passed"])})
        columns = [{"variant": v, "precision": p, "name": pair_name(v, p),
                    "pointer": (pointers["pairs"].get(pair_name(v, p)) or {}).get("version")}
                   for v, p in sorted(pairs, key=lambda vp: (_order(vp[0], VARIANT_ORDER),
                                                             _order(vp[1], PRECISION_ORDER)))]
        metrics = sorted({c["metric"] for r in rows for c in r["cells"].values() if c["metric"]})
        return {"model": model, "models": self.models(), "store": self.store.base_uri,
                "metric": metrics[0] if len(metrics) == 1 else (metrics or [None])[0],
                "columns": columns, "versions": rows,
                "pointers": {"latest": latest_version,
                             "variants": {k: (d or {}).get("version")
                                          for k, d in pointers["variants"].items()},
                             "pairs": {k: (d or {}).get("version")
                                       for k, d in pointers["pairs"].items()}}}

    # -- trends -----------------------------------------------------------------------------
    def trends(self, model: str | None = None, variant: str | None = None,
               precision: str | None = None) -> dict:
        model = self.model_or_default(model)
        if variant:
            check_name(variant, "variant")
        if precision:
            check_name(precision, "precision")
        return self._view("trends", model, lambda: self._build_trends(model, variant, precision),
                          variant, precision)

    def _build_trends(self, model, variant, precision) -> dict:
        rel = self.releases(model)
        series = []
        for col in rel["columns"]:
            if (variant and col["variant"] != variant) or \
                    (precision and col["precision"] != precision):
                continue
            points = []
            for row in reversed(rel["versions"]):  # oldest first along the x axis
                c = row["cells"].get(col["name"])
                if c is None:
                    continue
                points.append({"version": row["version"], "published_at": row["published_at"],
                               "state": c["state"], "metric": c["metric"], "value": c["value"],
                               "floor": c["floor"], "latency_ms": c["latency_ms"],
                               "latency_limit": c["latency_limit"],
                               "size_bytes": c["size_bytes"], "pointer": c["pointer"]})
            series.append({**col, "points": points})
        return {"model": model, "models": rel["models"], "metric": rel["metric"],
                "variant": variant, "precision": precision, "series": series,
                "pairs": [c["name"] for c in rel["columns"]]}

    # -- one release ------------------------------------------------------------------------
    def _report(self, run_id: str | None) -> dict | None:
        if not run_id:
            return None
        try:
            check_name(run_id, "run id")
        except StoreError:
            return None
        return self._json_timed(layout.report_key(run_id))

    def _key(self, uri: str | None) -> str | None:
        """The store key of a URI the pipeline recorded, or None when it lies elsewhere."""
        if not uri or not isinstance(uri, str):
            return None
        key = self.store.key_of(uri)
        if not key:
            return None
        try:
            for part in key.split("/"):
                check_name(part, "key")
        except StoreError:
            return None
        return key

    def _run_entry(self, manifest: dict, variant: str, precision: str) -> tuple[dict | None, str | None]:
        """(the run report's model entry, the run folder of the model) for a release's model."""
        lineage = manifest.get("lineage") or {}
        run_id = lineage.get("run_id") or manifest.get("publisher")
        report = self._report(run_id)
        fp = lineage.get("checkpoint_fingerprint")
        ckpt_id = None
        if report:
            for c in report.get("checkpoints") or []:
                if isinstance(c, dict) and c.get("fingerprint") == fp:
                    ckpt_id = c.get("ckpt_id")
            for m in report.get("models") or []:
                if isinstance(m, dict) and m.get("variant") == variant and \
                        m.get("precision") == precision and \
                        (ckpt_id is None or m.get("ckpt_id") == ckpt_id):
                    ckpt_id = m.get("ckpt_id")
                    folder = layout.model_prefix(run_id, ckpt_id, precision)
                    return m, folder
        if not ckpt_id and fp and isinstance(fp, str):
            short = re.sub(r"[^0-9a-z]", "", fp.lower().rpartition(":")[2])[:8]
            ckpt_id = f"{variant}-{'qat' if lineage.get('qat') else 'float'}-{short}"
        if run_id and ckpt_id:
            try:
                check_name(str(run_id), "run id")
                check_name(str(ckpt_id), "checkpoint id")
            except StoreError:
                return None, None
            return None, layout.model_prefix(run_id, ckpt_id, precision)
        return None, None

    def _doc(self, key: str | None, forever: bool) -> Any:
        if not key:
            return None
        try:
            return self._json_forever(key) if forever else self._json_timed(key)
        except StoreError:
            return None

    def _listing(self, prefix: str) -> list[str]:
        def do():
            try:
                return self.store.list(prefix)
            except StoreError:
                return []
        return self._ttl(("list", prefix), self.relist_s, do)

    def release(self, model: str | None, version: str) -> dict:
        model = self.model_or_default(model)
        check_name(version, "version")
        manifest = self.manifest(model, version)
        return self._view("release", model, lambda: self._build_release(model, manifest),
                          version)

    def _model_detail(self, model: str, manifest: dict, entry: dict, state: str) -> dict:
        variant, precision = str(entry.get("variant")), str(entry.get("precision"))
        cell = cell_of(entry, state)
        run_model, run_folder = self._run_entry(manifest, variant, precision)
        files = entry.get("files") or {}
        version_prefix = layout.version_prefix(model, manifest.get("version"))
        folder = f"{version_prefix}/{entry['path']}" if state == "published" and \
            isinstance(entry.get("path"), str) else None
        if folder:
            try:
                for part in folder.split("/"):
                    check_name(part, "model folder")
            except StoreError:
                folder = None

        def file_key(name: str, uri_field: str | None) -> tuple[str | None, bool]:
            meta = files.get(name)
            if isinstance(meta, dict):
                key = meta.get("key") or self._key(meta.get("uri"))
                if key and key.startswith(version_prefix + "/"):
                    return key, True
            if run_model and uri_field:
                key = self._key(run_model.get(uri_field))
                if key:
                    return key, False
            if run_folder:
                return f"{run_folder}/{name}", False
            return None, False

        conv_key, conv_forever = file_key("conversion.json", "conversion_uri")
        metrics_key, metrics_forever = file_key("metrics.json", "metrics_uri")
        valid_key, valid_forever = file_key("validation.json", "validation_uri")
        conversion = self._doc(conv_key, conv_forever) or {}
        metrics_doc = self._doc(metrics_key, metrics_forever) or {}
        validation = self._doc(valid_key, valid_forever) or {}
        tpu_key = None
        if run_model and isinstance(run_model.get("edgetpu"), dict):
            tpu_key = self._key(run_model["edgetpu"].get("report_uri"))
        if not tpu_key and run_folder:
            tpu_key = f"{run_folder}/edgetpu.json"
        edgetpu = self._edgetpu_table(self._doc(tpu_key, True) if tpu_key else None)
        recipe = conversion.get("recipe") or {}
        pictures, docs = [], None
        for prefix in [p for p in (folder, run_folder) if p]:
            keys = self._listing(prefix)
            if not pictures:  # the release's own pictures first, else the run's
                pictures = [k for k in keys if k.lower().endswith((".png", ".jpg", ".jpeg"))]
            if docs is None and f"{prefix}/data_docs/index.html" in keys:
                docs = f"{prefix}/data_docs/index.html"
        bench = (metrics_doc.get("benchmark") or {}) if isinstance(metrics_doc, dict) else {}
        evaluation = (metrics_doc.get("evaluation") or {}) if isinstance(metrics_doc, dict) else {}
        return {
            **cell,
            "name": pair_name(variant, precision),
            "decision": entry.get("decision") or {},
            "checks": (entry.get("decision") or {}).get("checks") or [],
            "files": [{"name": n, "key": (f.get("key") if isinstance(f, dict) else None),
                       "size": (f.get("size") if isinstance(f, dict) else None),
                       "sha256": (f.get("sha256") if isinstance(f, dict) else None)}
                      for n, f in sorted(files.items())],
            "folder": folder, "run_folder": run_folder,
            "converter": {"description": recipe.get("description"),
                          "source_graph": recipe.get("source_graph"),
                          "converter": recipe.get("converter"),
                          "settings": recipe.get("settings") or {},
                          "fake_quant_nodes_bypassed": recipe.get("fake_quant_nodes_bypassed"),
                          "postprocess_inputs_rewrite": recipe.get("postprocess_inputs_rewrite"),
                          "calibration": conversion.get("calibration"),
                          "tensorflow_version": conversion.get("tensorflow_version"),
                          "seconds": conversion.get("seconds")} if conversion else None,
            "ops": conversion.get("ops") or {},
            "op_count": conversion.get("op_count"),
            "tensor_dtypes": conversion.get("tensor_dtypes") or {},
            "evaluation": evaluation.get("metrics") or {},
            "images": evaluation.get("images"),
            "latency": bench.get("latency_ms") or {},
            "validation": {"success": validation.get("success"),
                           "expectations": len(validation.get("expectations") or [])
                           if isinstance(validation.get("expectations"), list) else None}
            if validation else None,
            "edgetpu_table": edgetpu,
            "data_docs": docs,
            "pictures": pictures,
        }

    @staticmethod
    def _edgetpu_table(doc: dict | None) -> dict | None:
        """The Edge TPU operator table, from the compiler where it compiled, else predicted."""
        if not isinstance(doc, dict):
            return None
        compiler = doc.get("compiler") or {}
        report = compiler.get("report") or {}
        if compiler.get("status") == "compiled" and report.get("operators"):
            rows = [{"operator": r.get("operator"), "count": r.get("count"),
                     "mapped": r.get("mapped"), "status": r.get("status")}
                    for r in report["operators"] if isinstance(r, dict)]
            return {"source": "compiler", "status": "compiled", "rows": rows,
                    "ops_total": report.get("total_ops"), "ops_on_tpu": report.get("ops_on_tpu"),
                    "message": compiler.get("message")}
        prediction = doc.get("prediction") or {}
        rows = [{"operator": r.get("operator"), "count": r.get("count"),
                 "mapped": r.get("mapped"), "status": r.get("status")}
                for r in prediction.get("operators") or [] if isinstance(r, dict)]
        return {"source": "prediction", "status": compiler.get("status"), "rows": rows,
                "ops_total": prediction.get("total_ops"), "ops_on_tpu": prediction.get("ops_on_tpu"),
                "message": compiler.get("message")}

    def _build_release(self, model: str, manifest: dict) -> dict:
        pointers = self.releases(model)["pointers"]
        version = manifest.get("version")
        models = [self._model_detail(model, manifest, e, s) for e, s in _models_of(manifest)]
        models.sort(key=lambda d: (_order(str(d["variant"]), VARIANT_ORDER),
                                   _order(str(d["precision"]), PRECISION_ORDER)))
        for d in models:
            d["pointer"] = pointers["pairs"].get(d["name"]) == version
        versions = self.versions(model)
        return {"model": model, "models": self.models(), "version": version,
                "published_at": manifest.get("published_at"),
                "publisher": manifest.get("publisher"), "schema": manifest.get("schema"),
                "manifest_key": layout.manifest_key(model, version),
                "lineage": manifest.get("lineage") or {},
                "latest": pointers["latest"] == version,
                "entries": models, "versions": list(reversed(versions))}

    # -- diff -------------------------------------------------------------------------------
    def diff(self, model: str | None, a: str | None, b: str | None) -> dict:
        model = self.model_or_default(model)
        rows = self.releases(model)["versions"]
        if not a or not b:
            names = [r["version"] for r in rows]
            if len(names) < 2 and not (a and b):
                a = a or (names[0] if names else None)
                b = b or a
            else:
                b = b or names[0]
                a = a or next((n for n in names if n != b), b)
        if not a or not b:
            raise NotFound("there is no release to compare yet.", where=self.store.base_uri,
                           fix="publish a model first.")
        check_name(a, "a")
        check_name(b, "b")
        ra, rb = self.release(model, a), self.release(model, b)
        return self._view("diff", model, lambda: self._build_diff(model, ra, rb), a, b)

    def _build_diff(self, model: str, ra: dict, rb: dict) -> dict:
        la, lb = flatten(ra["lineage"]), flatten(rb["lineage"])
        lineage = [{"field": k, "a": la.get(k), "b": lb.get(k), "changed": la.get(k) != lb.get(k)}
                   for k in sorted(set(la) | set(lb))]
        ea = {d["name"]: d for d in ra["entries"]}
        eb = {d["name"]: d for d in rb["entries"]}
        names = sorted(set(ea) | set(eb), key=lambda n: (_order(n.split("/")[0], VARIANT_ORDER),
                                                         _order(n.split("/")[1], PRECISION_ORDER)))
        models = []
        for n in names:
            x, y = ea.get(n), eb.get(n)
            nums = []
            for field, label in (("size_bytes", "size bytes"), ("value", "gate metric"),
                                 ("drop", "drop vs float"), ("latency_ms", "latency ms")):
                va, vb = (x or {}).get(field), (y or {}).get(field)
                delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) \
                    else None
                nums.append({"field": field, "label": label, "a": va, "b": vb, "delta": delta})
            ta = ((x or {}).get("edgetpu") or {}).get("on_tpu")
            tb = ((y or {}).get("edgetpu") or {}).get("on_tpu")
            nums.append({"field": "edgetpu_on_tpu", "label": "Edge TPU ops mapped", "a": ta,
                         "b": tb, "delta": tb - ta if ta is not None and tb is not None else None})
            oa, ob = (x or {}).get("ops") or {}, (y or {}).get("ops") or {}
            ops = [{"op": op, "a": oa.get(op, 0), "b": ob.get(op, 0),
                    "delta": ob.get(op, 0) - oa.get(op, 0)}
                   for op in sorted(set(oa) | set(ob)) if oa.get(op, 0) != ob.get(op, 0)]
            sa = flatten(((x or {}).get("converter") or {}).get("settings") or {})
            sb = flatten(((y or {}).get("converter") or {}).get("settings") or {})
            settings = [{"setting": k, "a": sa.get(k), "b": sb.get(k)}
                        for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
            models.append({"name": n, "a": x and {"state": x["state"], "verdict": x["verdict"],
                                                  "reasons": x["reasons"]},
                           "b": y and {"state": y["state"], "verdict": y["verdict"],
                                       "reasons": y["reasons"]},
                           "numbers": nums, "ops": ops, "settings": settings,
                           "verdict_changed": (x or {}).get("verdict") != (y or {}).get("verdict")})
        return {"model": model, "models": ra["models"], "a": ra["version"], "b": rb["version"],
                "a_published_at": ra["published_at"], "b_published_at": rb["published_at"],
                "lineage": lineage, "entries": models, "versions": ra["versions"]}

    # -- runs -------------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        def find():
            names = []
            for name, is_dir in self._children(layout.RUNS):
                if is_dir:
                    try:
                        names.append(check_name(name, "run id"))
                    except StoreError:
                        continue
            return sorted(names, key=_run_sort_key, reverse=True)
        return self._ttl("runs", self.relist_s, find)

    def runs(self, limit: int = 50) -> dict:
        ids = self.run_ids()
        return {"store": self.store.base_uri, "total": len(ids),
                "runs": [self.run_summary(r) for r in ids[:max(1, min(int(limit), 500))]]}

    @staticmethod
    def _stages(report: dict) -> list[dict]:
        stages = report.get("stages")
        rows = []
        if isinstance(stages, dict):
            items = stages.items()
        elif isinstance(stages, list):
            items = [(s.get("stage") or s.get("name") or s.get("task_id"), s)
                     for s in stages if isinstance(s, dict)]
        else:
            return []
        for name, s in items:
            if not isinstance(s, dict):
                continue
            # one task's record (include/pipeline/costs.py): which task, for which model, and
            # where its time went (the three largest parts)
            label = s.get("name")
            parts = [p for p in s.get("parts") or [] if isinstance(p, dict)
                     and _num(p.get("wall_s")) is not None]
            parts.sort(key=lambda p: -_num(p.get("wall_s")))
            rows.append({"stage": str(name), "wall_s": _num(s.get("wall_s")),
                         "cpu_s": _num(s.get("cpu_s")), "peak_rss_mb": _num(s.get("peak_rss_mb")),
                         "count": s.get("count") or s.get("tasks"),
                         "task_id": s.get("task_id"),
                         "name": str(label) if label and label != name else None,
                         "parts": [{"name": str(p.get("name")), "wall_s": _num(p.get("wall_s"))}
                                   for p in parts[:3]]})
        known = [r for r in rows if r["stage"] in STAGE_ORDER]
        known.sort(key=lambda r: STAGE_ORDER.index(r["stage"]))   # stable: tasks keep order
        return known + [r for r in rows if r["stage"] not in STAGE_ORDER]

    @staticmethod
    def _stage_totals(rows: list[dict]) -> list[dict]:
        """Per stage, in run order: tasks, summed wall and CPU seconds, the largest peak RSS
        (the pipeline's own aggregation, include/pipeline/costs.py)."""
        from include.pipeline.costs import totals

        return [{"stage": stage, **t} for stage, t in totals(rows).items()]

    def run_summary(self, run_id: str) -> dict:
        check_name(run_id, "run id")
        report = self._report(run_id)
        if not isinstance(report, dict):
            return {"run_id": run_id, "state": "no report", "has_report": False,
                    "detail": "no report.json yet: the run is still going, or stopped before "
                              "its report task", "stages": [], "stage_totals": [],
                    "duration_s": None,
                    "published": [], "rejected": [], "models": 0, "passed": 0, "problems": []}
        models = [m for m in report.get("models") or [] if isinstance(m, dict)]
        problems = [str(p) for p in report.get("problems") or []]
        published = [{"ckpt_id": p.get("ckpt_id"), "status": p.get("status"),
                      "model": p.get("model"), "version": p.get("version"),
                      "models": [pair_name(str(e.get("variant")), str(e.get("precision")))
                                 for e in p.get("published") or [] if isinstance(e, dict)]}
                     for p in report.get("published") or [] if isinstance(p, dict)]
        rejected = [{"name": m.get("name") or pair_name(str(m.get("variant")),
                                                       str(m.get("precision"))),
                     "ckpt_id": m.get("ckpt_id"),
                     "reasons": [str(r) for r in (m.get("decision") or {}).get("reasons") or []]}
                    for m in models if not m.get("passed")]
        passed = sum(1 for m in models if m.get("passed"))
        if any(p.startswith(("the gate task failed", "no model could be decided",
                             "the publish task failed")) for p in problems):
            state = "failed"
        elif problems or rejected:
            state = "success, with rejections" if not problems else "success, with problems"
        else:
            state = "success"
        stages = self._stages(report)
        walls = [s["wall_s"] for s in stages if s["wall_s"] is not None]
        duration = _num(report.get("duration_s")) or (round(sum(walls), 3) if walls else None)
        return {"run_id": run_id, "state": state, "has_report": True, "stages": stages,
                "stage_totals": self._stage_totals(stages),
                "duration_s": duration, "published": published, "rejected": rejected,
                "models": len(models), "passed": passed, "problems": problems,
                "model_name": report.get("model_name"), "metric": report.get("metric"),
                "warnings": [str(w) for w in report.get("warnings") or []]}

    def run(self, run_id: str) -> dict:
        summary = self.run_summary(run_id)
        report = self._report(run_id)
        if not summary["has_report"] and run_id not in self.run_ids():
            raise NotFound(f"run {run_id!r} has no folder in this store.",
                           where=self.store.uri(layout.run_prefix(run_id)),
                           fix="pick a run from the runs page.")
        models = []
        for m in (report or {}).get("models") or []:
            if not isinstance(m, dict):
                continue
            e = m.get("edgetpu") or {}
            models.append({"name": m.get("name"), "ckpt_id": m.get("ckpt_id"),
                           "variant": m.get("variant"), "precision": m.get("precision"),
                           "passed": bool(m.get("passed")), "failed": bool(m.get("failed")),
                           "size_bytes": _num(m.get("size_bytes")),
                           "latency_ms": _num(m.get("latency_ms")),
                           "metric": (m.get("decision") or {}).get("metric"),
                           "value": _num((m.get("decision") or {}).get("map")),
                           "edgetpu": {"status": e.get("status"), "ops_total": e.get("ops_total"),
                                       "ops_on_tpu": e.get("ops_on_tpu")} if e else None,
                           "reasons": [str(r) for r in
                                       (m.get("decision") or {}).get("reasons") or []]})
        return {**summary, "table": (report or {}).get("table"), "entries": models,
                "checkpoints": [{k: c.get(k) for k in ("ckpt_id", "uri", "variant", "qat",
                                                       "fingerprint", "kind")}
                                for c in (report or {}).get("checkpoints") or []
                                if isinstance(c, dict)],
                "failed_checkpoints": (report or {}).get("failed_checkpoints") or []}

    # -- files ------------------------------------------------------------------------------
    def file_roots(self) -> set[str]:
        return {*self.models(), layout.RUNS}

    def file_bytes(self, key: str) -> bytes:
        from include.dashboard.safety import check_key

        key = check_key(key, self.file_roots())
        if not self.store.is_file(key):
            raise NotFound(f"{key!r} is not in the store.", where=self.store.uri(key),
                           fix="follow a link from a release or run page.")
        return self.store.get_bytes(key)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=False, allow_nan=False, default=str).encode()
