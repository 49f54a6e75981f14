"""The recipe search in a run: for an int8 model that failed the accuracy gate, try other
recipes (include/convert/search.py) and, when one passes, gate and publish it instead.

gate -> search_jobs -> search (one mapped task per failed int8 model) -> publish

Each search task also decides its model (`decide_search`): the chosen candidate goes through
the same check, Edge TPU and gate stages as any model, in that task, in parallel with the other
searches, and a search that found nothing keeps the rejection with every candidate tried in
its reason. The publish task then only merges (`regate_stage`): a failure never turns into a
silent pass, and a search task that did not finish leaves its model rejected, saying so. The
search table goes into the model's entry (`search`), hence into the manifest's decisions and
the run report.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

SEARCH_PRECISIONS = ("int8",)          # post-training int8 of a float graph (not QAT uint8)
ACCURACY_CHECKS = ("map_drop", "min_map")
TABLE_KEYS = ("candidate", "status", "verdict", "drop", "metric", "size_bytes", "latency_ms",
              "edgetpu", "float_layers", "rejected_by")


def search_jobs(settings: dict, decided: list[dict]) -> list[dict]:
    """The models a search may save: int8, decided (no task failed), rejected by an accuracy
    check; none when `search_budget` is 0."""
    if int(settings["config"].get("search_budget", 0) or 0) < 1:
        return []
    jobs = []
    for d in decided or []:
        if d["passed"] or d.get("failed") or d["precision"] not in SEARCH_PRECISIONS:
            continue
        failed = {c["name"] for c in d["decision"].get("checks", []) if not c["passed"]}
        if failed & set(ACCURACY_CHECKS):
            jobs.append({k: d[k] for k in ("name", "ckpt_id", "variant", "qat", "precision",
                                           "export_uri")})
    return jobs


def search_stage(settings: dict, job: dict, decided: list[dict] | None = None) -> dict:
    """Run the recipe search for one job; returns {job, search: summary, model: a converted
    model like convert_stage's output, or None when no candidate passed}, and with the run's
    gate decisions `decided` also {decision: the model's final entry (`decide_search`)}."""
    found = _search(settings, job)
    if decided is not None:
        found["decision"] = decide_search(settings, decided, found)
    return found


def _search(settings: dict, job: dict) -> dict:
    from include.config import PipelineConfig
    from include.convert.search import search_int8
    from include.pipeline.inputs import dataset_copy
    from include.pipeline.stages import _local, _prefix, _store
    from include.store import fetch, sha256_file

    config = PipelineConfig.from_dict(settings["config"])
    store = _store(settings)
    conn = config.conn_id
    prefix = _prefix(settings, job["ckpt_id"])
    key = f"{prefix}/{job['precision']}-search"
    with tempfile.TemporaryDirectory(prefix="mobiledet-search-") as tmp:
        export = _local(job["export_uri"], tmp, conn)
        calibration = dataset_copy(settings["calibration"], Path(tmp) / "calibration", conn)
        data = dataset_copy(settings["data"], Path(tmp) / "data", conn)
        reference = fetch(store.uri(f"{prefix}/float32/model.tflite"),
                          str(Path(tmp) / "reference" / "model.tflite"), conn_id=conn)
        out = Path(tmp) / "out" / "model.tflite"
        result = search_int8(export, calibration, data, reference, out,
                             budget=config.search_budget, gate_config=config.gates,
                             calibration_count=config.calibration_count,
                             max_images=config.eval_max_images, threads=config.threads,
                             benchmark_runs=config.benchmark_runs)
        summary = {"passed": bool(result["passed"]), "chosen": result.get("chosen"),
                   "objective": result.get("objective"), "budget": result.get("budget"),
                   "tried": result.get("tried"),
                   "candidates": [{k: row.get(k) for k in TABLE_KEYS}
                                  for row in result.get("candidates", [])]}
        search_json = Path(result["search_json"]) if result.get("search_json") else None
        if search_json and search_json.is_file():
            summary["search_uri"] = store.put_file(str(search_json), f"{key}/search.json")
        model = None
        if result["passed"] and out.is_file():
            # `key`: the checks of the chosen model write beside it, not over the rejected one
            model = {**job, "key": key,
                     "model_uri": store.put_file(str(out), f"{key}/model.tflite"),
                     "conversion_uri": store.put_file(str(out.parent / "conversion.json"),
                                                      f"{key}/conversion.json"),
                     "size_bytes": out.stat().st_size, "sha256": sha256_file(out),
                     "warnings": [], "recipe": result.get("chosen")}
    return {"job": job, "search": summary, "model": model}


def _table(summary: dict) -> str:
    def row(r):
        text = f"{r['candidate']}: {r['status']}"
        if isinstance(r.get("drop"), (int, float)):
            text += f" (drop {r['drop']:+.3f}"
            # within the accuracy gate, turned down because float layers cut the Edge TPU graph
            if r.get("rejected_by") == "edgetpu_mapping":
                text += ", rejected for the Edge TPU cut"
            text += ")"
        return text
    return ", ".join(row(r) for r in summary.get("candidates", [])) or "no candidate"


def decide_search(settings: dict, decided: list[dict], found: dict) -> dict:
    """The final decision entry of one searched model: the search's choice checked, analysed
    for the Edge TPU and gated like any model (against the run's float32 reference), or the
    rejection kept with the candidates tried."""
    from include.pipeline.stages import check_stage, edgetpu_stage, gate_stage

    job = found["job"]
    [d] = [x for x in decided if (x["ckpt_id"], x["precision"]) ==
           (job["ckpt_id"], job["precision"])]
    summary = found["search"]
    if found["model"] is None:
        return _with_reason(d, summary, "recipe search: no candidate passed ("
                                        f"{_table(summary)})")
    model = found["model"]
    check = check_stage(settings, model)
    tpu = edgetpu_stage(settings, model)
    reference = [x for x in decided if x["ckpt_id"] == d["ckpt_id"]
                 and x["precision"] == "float32"]
    [new] = gate_stage(settings, [model], [check, *reference], [tpu])
    new = {**new, "search": summary}
    if not new["passed"]:
        new = _with_reason(new, summary, f"recipe search chose {summary.get('chosen')!r}, "
                                         "which did not pass the gate either")
    return new


def regate_stage(settings: dict, decided: list[dict], searched: list[dict]) -> list[dict]:
    """The run's final decisions: each searched model replaced by its search's decision (the
    search task's `decision`, else `decide_search` here), rejected with "did not finish" where
    its search task left no result."""
    by_job = {(s["job"]["ckpt_id"], s["job"]["precision"]): s for s in searched or [] if s}
    wanted = {(j["ckpt_id"], j["precision"]) for j in search_jobs(settings, decided)}
    out = []
    for d in decided:
        key = (d["ckpt_id"], d["precision"])
        if key not in wanted:
            out.append(d)
            continue
        found = by_job.get(key)
        if found is None:
            out.append(_with_reason(d, None, "the recipe search did not finish (see the search "
                                             "task's log)"))
            continue
        out.append(found.get("decision") or decide_search(settings, decided, found))
    return out


def _with_reason(entry: dict, summary: dict | None, reason: str) -> dict:
    decision = dict(entry["decision"])
    decision["reasons"] = list(decision.get("reasons") or []) + [reason]
    return {**entry, "decision": decision, "search": summary, "passed": False}
