"""The Celery worker settings: Airflow's defaults kept, heavy libraries imported before the fork.

The worker runs each task in a process forked from its pool, so what the worker's main process
imports at `worker_init` every task gets for free. These tests check that the preload really
happens on the signal, that a process forked afterwards converts and runs a model (fork
safety), and that it then pays no TensorFlow import.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from include.deploy import components, environment

pytestmark = pytest.mark.timeout(600)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                         env={**os.environ, "TF_USE_LEGACY_KERAS": "1", **env},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_config_is_airflows_default_and_is_what_the_deployment_points_at(tmp_path):
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    from include.deploy.celery_worker import CELERY_CONFIG

    assert CELERY_CONFIG == DEFAULT_CELERY_CONFIG and CELERY_CONFIG is not DEFAULT_CELERY_CONFIG
    settings = environment.AirflowSettings(home=tmp_path, executor="celery",
                                        sql_alchemy_conn="postgresql+psycopg2://u:p@127.0.0.1/db",
                                        broker_url="redis://127.0.0.1:6379/0")
    path = environment.airflow_environment(settings, {})["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"]
    module, _, attr = path.rpartition(".")
    import importlib
    assert getattr(importlib.import_module(module), attr) is CELERY_CONFIG


def test_worker_init_preloads_and_a_forked_task_converts_without_importing_tensorflow():
    result = _run("""
        import json, os, sys, time
        from celery.signals import worker_init
        import include.deploy.celery_worker   # connects the handler, imports nothing heavy
        before = "tensorflow" in sys.modules
        worker_init.send(sender=None)           # what `airflow celery worker` sends pre-fork
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                            # the task process
            start = time.perf_counter()
            import numpy as np
            import tensorflow as tf
            import great_expectations
            imported = time.perf_counter() - start
            m = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(4)])
            conv = tf.lite.TFLiteConverter.from_keras_model(m)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([np.ones((1, 8), np.float32)] for _ in range(4))
            interp = tf.lite.Interpreter(model_content=conv.convert())
            interp.allocate_tensors()
            interp.set_tensor(interp.get_input_details()[0]["index"], np.ones((1, 8), np.float32))
            interp.invoke()
            shape = list(interp.get_tensor(interp.get_output_details()[0]["index"]).shape)
            os.write(w, json.dumps({"imported_s": imported, "shape": shape}).encode())
            os._exit(0)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        child = json.loads(os.read(r, 4096) or b"{}")
        print(json.dumps({"before": before, "status": status, **child}))
    """)
    assert result["before"] is False           # the scheduler imports this module too: light
    assert result["status"] == 0 and result["shape"] == [1, 4]
    assert result["imported_s"] < 0.5, result  # already in memory (a cold import takes 5+ s)


def test_preload_can_be_turned_off():
    result = _run("""
        import json, sys
        from celery.signals import worker_init
        import include.deploy.celery_worker
        worker_init.send(sender=None)
        print(json.dumps({"tf": "tensorflow" in sys.modules}))
    """, MOBILEDET_WORKER_PRELOAD="0")
    assert result == {"tf": False}


def test_a_missing_library_is_skipped_with_a_log_line(caplog):
    from include.deploy.preload import preload

    took = preload(("json", "no_such_module_mobiledet"))
    assert list(took) == ["json"]
    assert "no_such_module_mobiledet is not installed" in caplog.text


def test_deployment_byte_compiles_the_dags_and_project_sources(tmp_path, monkeypatch):
    """Each task process imports the DAG file and the project's modules: the deployment writes
    their .pyc files first, also where PYTHONDONTWRITEBYTECODE keeps the tasks from caching
    them, and an unwritable folder is left as it is (no error)."""
    import importlib.util

    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    dags = tmp_path / "dags"
    (dags / "pkg").mkdir(parents=True)
    (dags / "a_dag.py").write_text("X = 1\n")
    (dags / "pkg" / "mod.py").write_text("Y = 2\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "m.py").write_text("Z = 3\n")
    locked.chmod(0o555)
    try:
        components.compile_sources([dags, locked, tmp_path / "missing"])
    finally:
        locked.chmod(0o755)
    for src in (dags / "a_dag.py", dags / "pkg" / "mod.py"):
        assert os.path.isfile(importlib.util.cache_from_source(str(src))), src
    if os.geteuid() != 0:   # root writes anyway
        assert not (locked / "__pycache__").exists()
    # env: this checkout's packages first, whatever else is installed
    env = environment.airflow_environment(environment.AirflowSettings(home=tmp_path), {})
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(environment.REPO)
