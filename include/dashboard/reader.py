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

import re
import threading
import time
from typing import Any, Callable

from include.dashboard.cells import (LRU, PRECISION_ORDER, VARIANT_ORDER, cell_of, models_of,
                                     newest_first, order, pair_name)
from include.dashboard.ops_pages import OpsPages
from include.dashboard.release_pages import ReleasePages
from include.dashboard.run_pages import RunPages
from include.dashboard.safety import NotFound, check_name, redact
from include.errors import StoreError
from include.store import layout
from include.store.layout import RESERVED_TOP

#: cached listings, pointers and JSON files (each request for another key adds one)
TIMED_ENTRIES = 4096


class StoreReader(ReleasePages, RunPages, OpsPages):
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
        self._immutable = LRU(20000)   # key -> parsed JSON, for keys never rewritten
        # (key) -> (when, value), bounded: a request for any run id or key adds one entry
        self._timed = LRU(TIMED_ENTRIES)
        self._views = LRU(256)         # (view, state key) -> built view
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
            self._timed.put(key, (self.clock(), value))
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
        return newest_first(out)

    def _state(self, model: str) -> tuple:
        p = self.pointers(model)
        marks = tuple(sorted((k, (d or {}).get("version")) for k, d in p["pairs"].items())) + \
            tuple(sorted((k, (d or {}).get("version")) for k, d in p["variants"].items())) + \
            (("latest", (p["model"] or {}).get("version")),)
        return (model, self.versions(model), marks, self.registry(model).get("seq", 0))

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
        registry = self.registry(model)
        manifests = self.manifests(model)
        pairs = set()
        rows = []
        latest_version = (pointers["model"] or {}).get("version")
        for m in manifests:
            version = m.get("version")
            cells = {}
            for entry, state in models_of(m):
                c = cell_of(entry, state)
                name = pair_name(str(c["variant"]), str(c["precision"]))
                target = (pointers["pairs"].get(name) or {}).get("version")
                c["pointer"] = target is not None and target == version
                cells[name] = c
                pairs.add((str(c["variant"]), str(c["precision"])))
            marks = (["latest"] if latest_version == version else []) + sorted(
                v for v, d in pointers["variants"].items() if (d or {}).get("version") == version)
            lineage = m.get("lineage") or {}
            for name, who in (registry.get("blessed") or {}).get(version, {}).items():
                if name in cells:
                    cells[name]["blessed"] = who
            rows.append({"version": version, "published_at": m.get("published_at"),
                         "yanked": (registry.get("yanked") or {}).get(version),
                         "channels": sorted(f"{channel}: {p}" for channel, slots in
                                            (registry.get("channels") or {}).items()
                                            for p, slot in slots.items()
                                            if slot.get("version") == version),
                         "publisher": m.get("publisher"), "qat": lineage.get("qat"),
                         "checkpoint_fingerprint": lineage.get("checkpoint_fingerprint"),
                         "run_id": lineage.get("run_id"), "pointers": marks,
                         "error": m.get("error"), "cells": cells,
                         "published": sum(1 for c in cells.values() if c["passed"]),
                         "rejected": sum(1 for c in cells.values() if not c["passed"])})
        columns = [{"variant": v, "precision": p, "name": pair_name(v, p),
                    "pointer": (pointers["pairs"].get(pair_name(v, p)) or {}).get("version")}
                   for v, p in sorted(pairs, key=lambda vp: (order(vp[0], VARIANT_ORDER),
                                                             order(vp[1], PRECISION_ORDER)))]
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
    def file_roots(self) -> set[str]:
        return {*self.models(), layout.RUNS}

    def file_bytes(self, key: str) -> bytes:
        from include.dashboard.safety import check_key

        key = check_key(key, self.file_roots())
        if not self.store.is_file(key) or not self._inside_store(key):
            raise NotFound(f"{key!r} is not in the store.", where=self.store.uri(key),
                           fix="follow a link from a release or run page.")
        return self.store.get_bytes(key)

    def _inside_store(self, key: str) -> bool:
        """A local store's file, resolved (symlinks followed), is still inside the store: a
        link under a model folder to /etc/passwd is not served."""
        if not self.store.local:
            return True
        import os
        root = os.path.realpath(self.store.where.path)
        return os.path.realpath(self.store.location(key).path).startswith(root + os.sep)
