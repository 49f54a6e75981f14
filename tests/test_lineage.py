"""OpenLineage through Airflow's provider: a dag.test() run of mobiledet_convert with the file
transport writes events naming the checkpoint as an input and each published model as an
output, with the gate's checks as a data-quality facet. Off unless configured."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models import make_tiny_inputs

REPO = Path(__file__).resolve().parents[1]
FAST = {"calibration_count": 4, "benchmark_runs": 2, "benchmark_warmup": 0, "threads": 1,
        "gates.min_map": 0}

RUN = """
import json, sys
from include.deploy.airflow_env import run_dag
result = run_dag(json.loads(sys.argv[1]))
print("REPORT " + json.dumps(result["report"]))
"""


def _run(conf: dict, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN, json.dumps(conf)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def _events(folder: Path) -> list[dict]:
    events = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    events.append(json.loads(line))
    return events


@pytest.mark.slow
def test_a_run_names_the_checkpoint_and_the_published_models(tmp_path, airflow_db):
    root, ckpt = make_tiny_inputs(tmp_path / "in")
    store = tmp_path / "store"
    lineage = tmp_path / "lineage"
    lineage.mkdir()
    env = dict(os.environ, AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
        {"type": "file", "log_file_path": str(lineage / "events.jsonl"), "append": True}),
        AIRFLOW__OPENLINEAGE__NAMESPACE="mobiledet-test")
    report = _run({"checkpoints": [str(ckpt)], "data": str(root / "data"),
                   "store": str(store), "precisions": ["float32"], "overrides": FAST}, env)
    [published] = report["published"]
    assert published["status"] == "published"
    events = [e for e in _events(lineage) if e.get("eventType") == "COMPLETE"]
    by_task = {e["job"]["name"].rpartition(".")[2]: e for e in events}
    export = next(e for name, e in by_task.items() if name.startswith("export"))
    assert {"namespace": "file", "name": str(ckpt)} in [
        {k: d[k] for k in ("namespace", "name")} for d in export["inputs"]]
    release = by_task["publish"]
    [model] = release["outputs"]
    assert model["namespace"] == "file" and model["name"].startswith(str(store / "mobiledet"))
    assert model["name"].endswith("/edgetpu/float32/model.tflite")
    assertions = model["facets"]["dataQualityAssertions"]["assertions"]
    assert {"map_drop", "min_map", "contract"} <= {a["assertion"] for a in assertions}
    assert all(a["success"] for a in assertions if a["assertion"] == "contract")


@pytest.mark.slow
def test_without_a_transport_no_event_is_written(tmp_path, airflow_db):
    root, ckpt = make_tiny_inputs(tmp_path / "in")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__OPENLINEAGE")}
    _run({"checkpoints": [str(ckpt)], "data": str(root / "data"),
          "store": str(tmp_path / "store"), "precisions": ["float32"], "overrides": FAST}, env)
    assert not list(tmp_path.rglob("*.jsonl"))
