"""The steps of one conversion run, one module each, each the only implementation of its step:

    plan -> export -> convert -> check (+ edgetpu) -> gate -> search -> publish -> report

A step is a function over the typed run plan (`include.pipeline.plan.RunPlan`) and its job;
the DAG's operators (`operators/pipeline.py`), the reusable operators and the CLI call them.
Artifacts move between steps only through the artifact store; each step returns small JSON.
Every step measures itself (`include.pipeline.costs.task_meter`) and is idempotent.
"""
