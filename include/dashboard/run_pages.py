"""The runs pages' reading: recent runs with their state, stage costs and what each published or
rejected, and one run in detail. A mixin of `StoreReader`.
"""
from __future__ import annotations


from include.dashboard.cells import (STAGE_ORDER, by_device, device_columns, device_figures,
                                     num, pair_name, run_sort_key)
from include.dashboard.safety import NotFound, check_name
from include.errors import StoreError
from include.store import layout


class RunPages:
    """Runs and one run (see the module doc)."""

    def run_ids(self) -> list[str]:
        def find():
            names = []
            for name, is_dir in self._children(layout.RUNS):
                if is_dir:
                    try:
                        names.append(check_name(name, "run id"))
                    except StoreError:
                        continue
            return sorted(names, key=run_sort_key, reverse=True)
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
                     and num(p.get("wall_s")) is not None]
            parts.sort(key=lambda p: -num(p.get("wall_s")))
            rows.append({"stage": str(name), "wall_s": num(s.get("wall_s")),
                         "cpu_s": num(s.get("cpu_s")), "peak_rss_mb": num(s.get("peak_rss_mb")),
                         "count": s.get("count") or s.get("tasks"),
                         "task_id": s.get("task_id"),
                         "name": str(label) if label and label != name else None,
                         "parts": [{"name": str(p.get("name")), "wall_s": num(p.get("wall_s"))}
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
        duration = num(report.get("duration_s")) or (round(sum(walls), 3) if walls else None)
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
                           "size_bytes": num(m.get("size_bytes")),
                           "latency_ms": num(m.get("latency_ms")),
                           "latency_ratio": num(m.get("latency_ratio_to_float32")),
                           "metric": (m.get("decision") or {}).get("metric"),
                           "value": num((m.get("decision") or {}).get("map")),
                           "edgetpu": {"status": e.get("status"), "ops_total": e.get("ops_total"),
                                       "ops_on_tpu": e.get("ops_on_tpu")} if e else None,
                           "reasons": [str(r) for r in
                                       (m.get("decision") or {}).get("reasons") or []],
                           "devices": device_figures(m.get("device_benchmarks"))})
        # a column per phone beside the host CPU's figure
        columns = [str(d.get("name")) for d in (report or {}).get("devices") or []
                   if isinstance(d, dict) and d.get("name")]
        columns += [n for n in device_columns(models) if n not in columns]
        for m in models:
            m["device_cells"] = [by_device(m["devices"], n) for n in columns]
        return {**summary, "table": (report or {}).get("table"), "entries": models,
                "device_columns": columns,
                "checkpoints": [{k: c.get(k) for k in ("ckpt_id", "uri", "variant", "qat",
                                                       "fingerprint", "kind")}
                                for c in (report or {}).get("checkpoints") or []
                                if isinstance(c, dict)],
                "failed_checkpoints": (report or {}).get("failed_checkpoints") or []}

    # -- files ------------------------------------------------------------------------------
