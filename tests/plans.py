"""Run plans changed for a test: the typed plan is frozen, so a test derives a new one."""
from __future__ import annotations


def changed(run, **fields):
    """`run` with top-level plan fields replaced (run_id, checkpoints, ...)."""
    from include.pipeline.plan import RunPlan
    return RunPlan.of({**run.to_dict(), **fields})


def with_config(run, **settings):
    """`run` with config settings replaced; a dict for `gates` is merged into the gates."""
    config = run.config.to_dict()
    if isinstance(settings.get("gates"), dict):
        settings["gates"] = {**config["gates"], **settings["gates"]}
    return changed(run, config={**config, **settings})


def with_checkpoint(run, **fields):
    """`run` with its one checkpoint's fields replaced."""
    [ckpt] = run.to_dict()["checkpoints"]
    return changed(run, checkpoints=[{**ckpt, **fields}])
