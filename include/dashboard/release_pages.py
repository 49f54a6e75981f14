"""The release pages' reading: one release with every model's files, checks, converter settings,
Edge TPU table and pictures, and the diff of two releases. A mixin of `StoreReader`, whose caches
(`_json_forever`, `_json_timed`, `_ttl`, `_view`) it uses.
"""
from __future__ import annotations

import re
from typing import Any

from include.dashboard.cells import (PRECISION_ORDER, VARIANT_ORDER, cell_of, device_figures,
                                     flatten, models_of, order, pair_name)
from include.dashboard.safety import NotFound, check_name
from include.errors import StoreError
from include.store import layout


class ReleasePages:
    """Release detail and diff (see the module doc)."""

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
            "delegate": bench.get("delegate") if isinstance(bench.get("delegate"), dict)
            else None,
            "reference_latency": (bench.get("reference") or {}).get("latency_ms")
            if isinstance(bench.get("reference"), dict) else None,
            "validation": {"success": validation.get("success"),
                           "expectations": len(validation.get("expectations") or [])
                           if isinstance(validation.get("expectations"), list) else None}
            if validation else None,
            "edgetpu_table": edgetpu,
            # the phones' figures beside the host CPU's (the manifest entry's, else the
            # metrics.json the gate added them to)
            "devices": device_figures(entry.get("device_benchmarks")
                                      or (metrics_doc.get("devices")
                                          if isinstance(metrics_doc, dict) else None)),
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
        models = [self._model_detail(model, manifest, e, s) for e, s in models_of(manifest)]
        models.sort(key=lambda d: (order(str(d["variant"]), VARIANT_ORDER),
                                   order(str(d["precision"]), PRECISION_ORDER)))
        for d in models:
            d["pointer"] = pointers["pairs"].get(d["name"]) == version
        versions = self.versions(model)
        return {"model": model, "models": self.models(), "version": version,
                "published_at": manifest.get("published_at"),
                "publisher": manifest.get("publisher"), "schema": manifest.get("schema"),
                "manifest_key": layout.manifest_key(model, version),
                "lineage": manifest.get("lineage") or {},
                "latest": pointers["latest"] == version,
                "yanked": (self.registry(model).get("yanked") or {}).get(version),
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
        names = sorted(set(ea) | set(eb), key=lambda n: (order(n.split("/")[0], VARIANT_ORDER),
                                                         order(n.split("/")[1], PRECISION_ORDER)))
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
