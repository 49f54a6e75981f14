"""The recipe search in a run: for an int8 model that failed the accuracy gate, try other
recipes (`include.convert.search`) and, when one passes, gate and publish it instead.

gate -> search_jobs -> search (one mapped task per failed int8 model) -> publish

Each search task also decides its model (:func:`decide`): the chosen candidate goes through the
same check, Edge TPU and gate steps as any model, in that task, in parallel with the other
searches, and a search that found nothing keeps the rejection with every candidate tried in its
reason. The publish task then only merges (:func:`merge`): a failure never turns into a silent
pass, and a search task that did not finish leaves its model rejected, saying so. The search
table goes into the model's entry (`search`), hence into the manifest's decisions and the run
report.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from include.pipeline.plan import ConvertedModel, Job, RunPlan
from include.pipeline.steps.plan import as_job
from include.store import layout

SEARCH_PRECISIONS = ("int8",)          # post-training int8 of a float graph (not QAT uint8)
ACCURACY_CHECKS = ("map_drop", "min_map")
TABLE_KEYS = ("candidate", "status", "verdict", "drop", "metric", "size_bytes", "latency_ms",
              "edgetpu", "float_layers", "rejected_by")


def search_jobs(run: RunPlan, decided: list[dict]) -> list[Job]:
    """The models a search may save: int8, decided (no task failed), rejected by an accuracy
    check; none when `search_budget` is 0."""
    run = RunPlan.of(run)
    if run.config.search_budget < 1:
        return []
    jobs = []
    for d in decided or []:
        if d["passed"] or d.get("failed") or d["precision"] not in SEARCH_PRECISIONS:
            continue
        failed = {c["name"] for c in d["decision"].get("checks", []) if not c["passed"]}
        if failed & set(ACCURACY_CHECKS):
            jobs.append(as_job(d))
    return jobs


def search(run: RunPlan, job: Job, decided: list[dict] | None = None) -> dict:
    """Run the recipe search for one job; returns {job, search: summary, model: a converted
    model like the convert step's, or None when no candidate passed}, and with the run's gate
    decisions `decided` also {decision: the model's final entry (:func:`decide`)}."""
    run, job = RunPlan.of(run), as_job(job)
    found = _search(run, job)
    if decided is not None:
        found["decision"] = decide(run, decided, found)
    return found


def _search(run: RunPlan, job: Job) -> dict:
    from include.convert.search import search_int8
    from include.pipeline.inputs import dataset_copy
    from include.store.transfer import fetch, local_copy
    from include.store import sha256_file

    config = run.config
    store = run.store
    conn = run.conn_id
    key = layout.model_prefix(run.run_id, job.ckpt_id, job.precision, search=True)
    reference_key = layout.model_prefix(run.run_id, job.ckpt_id, "float32")
    with tempfile.TemporaryDirectory(prefix="mobiledet-search-") as tmp:
        export = local_copy(job.export_uri, tmp, conn)
        calibration = dataset_copy(run.calibration, Path(tmp) / "calibration", conn)
        data = dataset_copy(run.data, Path(tmp) / "data", conn)
        reference = fetch(store.uri(f"{reference_key}/model.tflite"),
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
            model = ConvertedModel(
                **job.model_dump(exclude={"key"}), key=key,
                model_uri=store.put_file(str(out), f"{key}/model.tflite"),
                conversion_uri=store.put_file(str(out.parent / "conversion.json"),
                                              f"{key}/conversion.json"),
                size_bytes=out.stat().st_size, sha256=sha256_file(out), warnings=[],
                recipe=result.get("chosen")).to_dict()
    return {"job": job.to_dict(), "search": summary, "model": model}


def candidates_text(summary: dict) -> str:
    """The candidates a search tried, one phrase each (the reason of a search that found
    nothing)."""
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


def decide(run: RunPlan, decided: list[dict], found: dict) -> dict:
    """The final decision entry of one searched model: the search's choice checked, analysed
    for the Edge TPU and gated like any model (against the run's float32 reference), or the
    rejection kept with the candidates tried."""
    run = RunPlan.of(run)
    from include.pipeline.steps.check import check
    from include.pipeline.steps.edgetpu import edgetpu
    from include.pipeline.steps.gate import gate
    from include.pipeline.steps.plan import as_model

    job = found["job"]
    [d] = [x for x in decided if (x["ckpt_id"], x["precision"]) ==
           (job["ckpt_id"], job["precision"])]
    summary = found["search"]
    if found["model"] is None:
        return _with_reason(d, summary, "recipe search: no candidate passed ("
                                        f"{candidates_text(summary)})")
    model = as_model(found["model"])
    checked = check(run, model)
    tpu = edgetpu(run, model)
    reference = [x for x in decided if x["ckpt_id"] == d["ckpt_id"]
                 and x["precision"] == "float32"]
    [new] = gate(run, [model], [checked, *reference], [tpu])
    new = {**new, "search": summary}
    if not new["passed"]:
        new = _with_reason(new, summary, f"recipe search chose {summary.get('chosen')!r}, "
                                         "which did not pass the gate either")
    return new


def merge(run: RunPlan, decided: list[dict], searched: list[dict]) -> list[dict]:
    """The run's final decisions: each searched model replaced by its search's decision (the
    search task's `decision`, else :func:`decide` here), rejected with "did not finish" where
    its search task left no result."""
    run = RunPlan.of(run)
    by_job = {(s["job"]["ckpt_id"], s["job"]["precision"]): s for s in searched or [] if s}
    wanted = {(j.ckpt_id, j.precision) for j in search_jobs(run, decided)}
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
        out.append(found.get("decision") or decide(run, decided, found))
    return out


def _with_reason(entry: dict, summary: dict | None, reason: str) -> dict:
    decision = dict(entry["decision"])
    decision["reasons"] = list(decision.get("reasons") or []) + [reason]
    return {**entry, "decision": decision, "search": summary, "passed": False}
