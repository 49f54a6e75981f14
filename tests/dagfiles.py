"""Import a DAG file the way the DAG processor does, in a fresh process, and report its cost."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "great_expectations", "pycocotools", "ai_edge_litert")

_CODE = textwrap.dedent("""
    import json, sys, time, importlib.util
    import airflow.sdk  # the DAG processor has Airflow loaded already
    t = time.perf_counter()
    spec = importlib.util.spec_from_file_location("m", sys.argv[1])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    took = time.perf_counter() - t
    heavy = [n for n in {heavy!r} if n in sys.modules]
    print(json.dumps({{"seconds": took, "heavy": heavy, "dag_id": m.dag.dag_id,
                      "schedule": str(m.dag.schedule) if m.dag.schedule is not None else None}}))
""").format(heavy=HEAVY)


def import_dag_file(name: str, env: dict | None = None) -> dict:
    """{seconds, heavy (heavy modules it imported), dag_id, schedule} of dags/<name>."""
    import json

    out = subprocess.run([sys.executable, "-c", _CODE, str(REPO / "dags" / name)], cwd=REPO,
                         capture_output=True, text=True, check=True,
                         env=os.environ.copy() if env is None else env)
    return json.loads(out.stdout.strip().splitlines()[-1])
