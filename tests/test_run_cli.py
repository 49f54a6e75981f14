"""`mobiledet run` as a user sees it: a short live view, the results table, the task logs in a
file whose path it prints; `--verbose` streams the task logs instead.

Each test runs the real CLI in its own process on a tiny checkpoint (tests/models.py), through
Airflow's dag.test with the session's metadata DB. Its output is a pipe here, so the view
prints one line per change of a step's state (a terminal gets the same lines redrawn in place:
tests/test_run_view.py draws those).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from models import make_tiny_inputs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 60
COLUMNS = ["model", "size MB", "AP50", "drop vs float", "host CPU ms", "x float32", "CPU delegate",
           "Edge TPU ops", "gate"]
FAST = ["--set", "calibration_count=4", "--set", "benchmark_runs=3", "--set",
        "benchmark_warmup=1", "--set", "threads=2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_inputs(tmp_path_factory.mktemp("run-cli"))


def mobiledet_run(ckpt, data, store, *extra) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mobiledet")
    return subprocess.run([str(exe), "run", "--checkpoint", str(ckpt), "--data", str(data),
                           "--store", str(store), "--precisions", "float32", "int8", *FAST,
                           *extra], cwd=REPO, env=os.environ.copy(), capture_output=True,
                          text=True, timeout=800)


def test_run_prints_a_short_live_view_the_table_and_where_the_logs_are(tiny, tmp_path,
                                                                         airflow_db):
    root, ckpt = tiny
    out = mobiledet_run(ckpt, root / "data", tmp_path / "store")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines() + out.stderr.splitlines()
    assert len(lines) <= MAX_LINES, "\n".join(lines)
    # a line per step of the pipeline, in order, and one per model when it is decided
    steps = [line.split()[1] for line in out.stdout.splitlines()
             if re.match(r"^\s+\d+s  \S", line)]
    assert [s for s in dict.fromkeys(steps)] == ["plan", "export", "edgetpu/int8",
                                                 "edgetpu/float32", "gate", "search",
                                                 "publish", "report"] or \
        [s for s in dict.fromkeys(steps)] == ["plan", "export", "edgetpu/float32",
                                              "edgetpu/int8", "gate", "search", "publish",
                                              "report"], out.stdout
    assert re.search(r"edgetpu/int8 +done in [\d.]+s +\(convert done [\d.]+s, check done",
                     out.stdout), out.stdout
    # the results table: its header, the dashes, a row per model; nothing glued to it
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert lines[header].split("  ")[0] == "model" and \
        [c for c in re.split(r"\s{2,}", lines[header].strip())] == COLUMNS
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    rows = lines[header + 2:header + 4]
    assert sorted(r.split()[0] for r in rows) == ["edgetpu/float32", "edgetpu/int8"]
    assert lines[header + 4] == ""
    # the task logs are in the file, not on the screen
    [path] = {m.group(1) for m in re.finditer(r"task logs: (\S+\.log)", out.stdout)}
    logs = Path(path).read_text()
    for task in ("plan", "export", "model.convert", "model.check", "gate", "publish",
                 "report"):
        assert f"[DAG TEST] starting task_id={task} " in logs, task
    assert "Done. Returned value was" in logs
    assert "[DAG TEST]" not in out.stdout + out.stderr


def test_run_verbose_streams_the_task_logs(tiny, tmp_path, airflow_db):
    root, ckpt = tiny
    out = mobiledet_run(ckpt, root / "data", tmp_path / "store", "--verbose")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    streamed = out.stdout + out.stderr
    for task in ("plan", "export", "model.convert", "model.check", "gate", "report"):
        assert f"[DAG TEST] starting task_id={task} " in streamed, task
    assert "task logs:" not in out.stdout
    assert re.search(r"^edgetpu/int8 ", out.stdout, re.M)   # the table after them


def test_a_failed_run_shows_the_step_and_names_the_log_file(tiny, tmp_path, airflow_db):
    root, ckpt = tiny
    bad = tmp_path / "truncated"
    shutil.copytree(ckpt, bad)
    weights = bad / "weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = mobiledet_run(bad, root / "data", tmp_path / "store")
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert re.search(r"^\s+\d+s  export +FAILED", out.stdout, re.M), out.stdout
    [path] = {m.group(1) for m in re.finditer(r"task logs: (\S+\.log)", out.stdout)}
    assert f"read the task logs in {path} for the first failure" in out.stderr
    assert "weights.h5" in Path(path).read_text()
    assert len(out.stdout.splitlines() + out.stderr.splitlines()) <= MAX_LINES
