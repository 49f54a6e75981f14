"""The operators users put in their own DAGs (operators/convert.py, quality.py, edgetpu.py,
publish.py, hooks.py): typed arguments checked at construction, templated fields rendered, and
the README's example DAG (docs/examples/convert_and_validate.py) run through Airflow."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from models import make_image_folder, make_tflite, shared_export

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "convert_and_validate.py"


# ------------------------------------------------------------------------------------------
# bad static arguments fail when the DAG is parsed, naming the argument and the fix
# ------------------------------------------------------------------------------------------
def _ops():
    from operators import (CocoEvaluateOperator, EdgeTPUCompileOperator,
                           OutputContractOperator, PublishModelOperator,
                           TFLiteBenchmarkOperator, TFLiteConvertOperator)
    return (TFLiteConvertOperator, CocoEvaluateOperator, OutputContractOperator,
            TFLiteBenchmarkOperator, EdgeTPUCompileOperator, PublishModelOperator)


CONVERT = dict(graph="/exports/edgetpu", precision="float32", output="/out/model.tflite")
PUBLISH = dict(store="/store", model="/out/model.tflite", variant="edgetpu",
               precision="int8", fingerprint="abc123")


@pytest.mark.parametrize("op, kwargs, arg, fix", [
    ("TFLiteConvertOperator", dict(CONVERT, precision="int9"), "precision", "did you mean 'int8'"),
    ("TFLiteConvertOperator", dict(CONVERT, precision="int8"), "calibration", "calibration="),
    ("TFLiteConvertOperator", dict(CONVERT, output="/out/model"), "output", ".tflite"),
    ("TFLiteConvertOperator", dict(CONVERT, graph=None), "graph", "pass a local path"),
    ("TFLiteConvertOperator", dict(CONVERT, graph="ftp://host/x"), "graph", "s3://bucket/key"),
    ("TFLiteConvertOperator", dict(CONVERT, calibration_count=0), "calibration_count",
     "calibration_count=100"),
    ("CocoEvaluateOperator", dict(model="/m.tflite"), "data", "pass a local path"),
    ("CocoEvaluateOperator", dict(model="/m.tflite", data="/d", metric="mAP"), "metric", "AP50"),
    ("CocoEvaluateOperator", dict(model="/m.tflite", data="/d", min_metric=30), "min_metric",
     "min_metric=0.3"),
    ("OutputContractOperator", dict(model="/m.tflite", images=0), "images", "images=8"),
    ("OutputContractOperator", dict(model="/m.tflite", expect_input_dtype="uint16"),
     "expect_input_dtype", "uint8, int8 or float32"),
    ("TFLiteBenchmarkOperator", dict(model="/m.tflite", runs=-1), "runs", "runs=50"),
    ("TFLiteBenchmarkOperator", dict(model="/m.tflite", max_latency_ms=0), "max_latency_ms",
     "max_latency_ms=10"),
    ("EdgeTPUCompileOperator", dict(model="/m.tflite", output="/o", timeout_s=-1), "timeout_s",
     "timeout_s=10"),
    ("EdgeTPUCompileOperator", dict(model="/m.tflite"), "output", "pass a local path"),
    ("PublishModelOperator", dict(PUBLISH, variant="tpu"), "variant", "edgetpu"),
    ("PublishModelOperator", dict(PUBLISH, fingerprint=None), "fingerprint",
     "checkpoint's fingerprint"),
    ("PublishModelOperator", dict(PUBLISH, model_name="my model"), "model_name",
     "letters, digits"),
])
def test_bad_static_arguments_fail_at_construction(op, kwargs, arg, fix):
    from include.errors import ConfigError

    cls = {c.__name__: c for c in _ops()}[op]
    with pytest.raises(ConfigError) as err:
        cls(task_id="t", **kwargs)
    assert f"{op}({arg}=...)" in str(err.value) and fix in str(err.value), str(err.value)


def test_good_arguments_construct_and_templates_are_checked_when_rendered():
    from include.errors import ConfigError
    from operators import TFLiteConvertOperator

    # templated values are not known at parse time: no error now ...
    op = TFLiteConvertOperator(task_id="c", graph="{{ params.graph }}",
                               precision="{{ params.precision }}",
                               output="{{ params.out }}/model.tflite")
    # ... and checked, with the same message, once rendered
    op.graph, op.precision, op.output_uri = "/exports/e", "int9", "/o/model.tflite"
    with pytest.raises(ConfigError, match=r"TFLiteConvertOperator\(precision=\.\.\.\)"):
        op.check_arguments()


def test_template_fields_render():
    """Every operator's templated fields exist and render from the context (params, run_id)."""
    import jinja2

    from operators import (CocoEvaluateOperator, EdgeTPUCompileOperator,
                           OutputContractOperator, PublishModelOperator,
                           TFLiteBenchmarkOperator, TFLiteConvertOperator)

    t = "{{ params.root }}/{{ run_id }}"
    ops = [
        TFLiteConvertOperator(task_id="a", graph=t, precision="{{ params.p }}",
                              calibration=t, output=t + "/model.tflite", conn_id="{{ params.c }}"),
        CocoEvaluateOperator(task_id="b", model=t, data=t, output=t, reference=t, sha256=t),
        OutputContractOperator(task_id="c", model=t, data=t, output=t, sha256=t),
        TFLiteBenchmarkOperator(task_id="d", model=t, output=t + ".json", sha256=t),
        EdgeTPUCompileOperator(task_id="e", model=t, output=t, sha256=t),
        PublishModelOperator(task_id="f", store=t, model=t, variant="{{ params.v }}",
                             precision="{{ params.p }}", fingerprint=t, version=t,
                             files={"validation.json": t}, lineage={"where": t}),
    ]
    context = {"params": {"root": "s3://bucket/x", "p": "int8", "c": "minio", "v": "cpu"},
               "run_id": "manual__1"}
    env = jinja2.Environment()
    for op in ops:
        assert op.template_fields, op
        for field in op.template_fields:
            assert hasattr(op, field), (op.task_id, field)
        op.render_template_fields(context, jinja_env=env)
        for field in op.template_fields:
            value = getattr(op, field)
            if isinstance(value, str) and field != "conn_id":
                assert "{{" not in value, (op.task_id, field, value)
    convert, *_, publish = ops
    assert convert.graph == "s3://bucket/x/manual__1" and convert.precision == "int8"
    assert convert.output_uri == "s3://bucket/x/manual__1/model.tflite"
    assert convert.conn_id == "minio"
    assert publish.files == {"validation.json": "s3://bucket/x/manual__1"}
    assert publish.lineage == {"where": "s3://bucket/x/manual__1"}
    assert publish.variant == "cpu"


def test_hook_names_its_connection_and_moves_files(tmp_path):
    from operators import MobiledetStoreHook

    assert MobiledetStoreHook.conn_name_attr == "conn_id"
    assert MobiledetStoreHook.default_conn_name == "aws_default"
    hook = MobiledetStoreHook()
    src = tmp_path / "a.bin"
    src.write_bytes(b"abc")
    uri = hook.upload(src, str(tmp_path / "store" / "x" / "a.bin"))
    assert uri == f"file://{tmp_path}/store/x/a.bin"
    assert hook.local_copy(uri, tmp_path / "w") == tmp_path / "store" / "x" / "a.bin"
    assert hook.get_conn(str(tmp_path / "store")) is hook.get_conn(str(tmp_path / "store"))
    got = hook.fetch(uri, tmp_path / "w" / "b.bin", sha256=hook.get_conn(
        str(tmp_path / "store")).sha256("x/a.bin"))
    assert got.read_bytes() == b"abc"


# ------------------------------------------------------------------------------------------
# the operators' work, on a tiny real model
# ------------------------------------------------------------------------------------------
def _context(run_id="manual__test"):
    return {"run_id": run_id, "params": {}}


def test_check_operators_on_a_tiny_model(tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from include.data.synth import synthesize
    from operators import (CocoEvaluateOperator, EdgeTPUCompileOperator,
                           OutputContractOperator, TFLiteBenchmarkOperator)

    model = make_tflite(tmp_path / "m", precision="int8")
    synthesize(tmp_path / "data", 6, size=96, seed=0, val_fraction=0.5)
    evaluated = CocoEvaluateOperator(task_id="e", model=str(model), data=str(tmp_path / "data"),
                                     output=str(tmp_path / "eval"), threads=1).execute(_context())
    assert set(evaluated["metrics"]) >= {"AP", "AP50"} and evaluated["images"] == 3
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    with pytest.raises(AirflowFailException, match="below min_metric 1.0"):
        CocoEvaluateOperator(task_id="e", model=str(model), data=str(tmp_path / "data"),
                             threads=1, min_metric=1.0).execute(_context())

    contract = OutputContractOperator(task_id="c", model=str(model), images=2,
                                      output=str(tmp_path / "contract")).execute(_context())
    assert contract["success"] and contract["failed"] == [] and contract["expectations"]
    assert (tmp_path / "contract" / "validation.json").is_file()

    bench = TFLiteBenchmarkOperator(task_id="b", model=str(model), threads=1, warmup=0, runs=2,
                                    output=str(tmp_path / "bench.json")).execute(_context())
    assert bench["latency_ms"]["mean"] > 0 and (tmp_path / "bench.json").is_file()
    with pytest.raises(AirflowFailException, match="above max_latency_ms"):
        TFLiteBenchmarkOperator(task_id="b", model=str(model), threads=1, warmup=0, runs=2,
                                max_latency_ms=1e-6).execute(_context())

    tpu = EdgeTPUCompileOperator(task_id="t", model=str(model),
                                 output=str(tmp_path / "tpu")).execute(_context())
    assert tpu["status"] == "not_installed" and tpu["decided_by"] == "prediction"
    assert tpu["ops_total"] and (tmp_path / "tpu" / "edgetpu.json").is_file()
    with pytest.raises(AirflowFailException, match="not installed"):
        EdgeTPUCompileOperator(task_id="t", model=str(model), output=str(tmp_path / "tpu"),
                               require_compiled=True).execute(_context())
    # a file that is not the recorded one is refused (a store error: retried, not failed)
    from include.errors import StoreError
    with pytest.raises(StoreError, match="not the one that was recorded"):
        OutputContractOperator(task_id="c", model=str(model), sha256="0" * 64).execute(
            _context())


def test_publish_model_operator_publishes_once(tmp_path):
    from include.store import open_store, read_manifest
    from operators import PublishModelOperator

    model = make_tflite(tmp_path / "m", precision="float32")
    store = tmp_path / "store"
    op = PublishModelOperator(task_id="p", store=str(store), model=str(model), variant="edgetpu",
                              precision="float32", fingerprint="f" * 16, emit_asset=False,
                              created="2026-02-01T00:00:00Z", metrics={"AP50": 0.5})
    first = op.execute(_context("run-1"))
    assert first["status"] == "published"
    manifest = read_manifest(open_store(str(store)), "mobiledet", first["version"])
    [entry] = manifest["published"]
    assert (entry["variant"], entry["precision"]) == ("edgetpu", "float32")
    assert manifest["publisher"] == "run-1"
    again = PublishModelOperator(task_id="p", store=str(store), model=str(model),
                                 variant="edgetpu", precision="float32", fingerprint="f" * 16,
                                 emit_asset=False, created="2026-02-01T00:00:00Z").execute(
        _context("run-2"))
    assert again["status"] == "already_published" and again["version"] == first["version"]


# ------------------------------------------------------------------------------------------
# the README's example DAG, run through Airflow (dag.test) in a fresh process
# ------------------------------------------------------------------------------------------
RUN_EXAMPLE = textwrap.dedent("""
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("example", sys.argv[1])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    run = m.dag.test(run_conf=json.loads(sys.argv[2]))
    out = {"state": str(run.state), "tasks": {}}
    for ti in run.get_task_instances():
        out["tasks"][ti.task_id] = {"state": str(ti.state),
                                    "xcom": ti.xcom_pull(task_ids=ti.task_id)}
    print("RESULT " + json.dumps(out, default=str))
""")
NOISE = re.compile(r"cudart_stub|cuda_|oneDNN custom operations|cpu_feature_guard|"
                   r"absl::InitializeLog|This TensorFlow binary is optimized")


def _user_airflow(tmp_path: Path, airflow_home: Path) -> tuple[dict, Path]:
    """A user's Airflow: its own home (a copy of the session's migrated metadata DB) and a
    DAGs folder holding the example file as it is."""
    import shutil

    home = tmp_path / "user-airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copyfile(Path(airflow_home) / "airflow.db", home / "airflow.db")
    dag_file = home / "dags" / EXAMPLE.name
    shutil.copyfile(EXAMPLE, dag_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")
           and k != "MOBILEDET_VERBOSE"}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False")
    return env, dag_file


def _run_example(dag_file: Path, conf: dict, env: dict) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", RUN_EXAMPLE, str(dag_file), json.dumps(conf)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):]), proc.stdout + proc.stderr


def test_readme_example_dag_converts_and_validates(tmp_path, airflow_db):
    # the README shows this very file
    readme = (REPO / "README.md").read_text()
    assert EXAMPLE.read_text().strip() in readme

    export = shared_export(variant="edgetpu")
    calibration = make_image_folder(tmp_path / "calibration", count=4)
    out = tmp_path / "out"
    env, dag_file = _user_airflow(tmp_path, airflow_db)
    assert dag_file.read_bytes() == EXAMPLE.read_bytes()
    result, log = _run_example(dag_file, {"graph": str(export), "precision": "int8",
                                "calibration": str(calibration), "output": str(out),
                                "conn_id": "aws_default"}, env)
    assert result["state"] == "success", result
    convert, contract = result["tasks"]["convert"], result["tasks"]["contract"]
    assert convert["state"] == contract["state"] == "success"
    model = out / "model.tflite"
    assert convert["xcom"]["model_uri"] == f"file://{model}"
    assert convert["xcom"]["precision"] == "int8" and model.stat().st_size == \
        convert["xcom"]["size_bytes"]
    recorded = json.loads((out / "conversion.json").read_text())
    assert recorded["precision"] == "int8"
    assert contract["xcom"]["success"] is True and contract["xcom"]["failed"] == []
    assert contract["xcom"]["input"]["dtype"] == "uint8"
    assert json.loads((out / "contract" / "validation.json").read_text())["success"] is True
    # TensorFlow's native start-up lines stay out of the task log (MOBILEDET_VERBOSE unset)
    assert not [l for l in log.splitlines() if NOISE.search(l)], \
        [l for l in log.splitlines() if NOISE.search(l)][:5]



NOISY_TASK = textwrap.dedent("""
    from operators.base import MobiledetOperator

    class ImportsTensorFlow(MobiledetOperator):
        def run(self, context):
            import tensorflow as tf
            tf.constant(1.0).numpy()   # a first op: the CPU-feature notice
            return "done"

    print(ImportsTensorFlow(task_id="t").execute({}))
""")


@pytest.mark.parametrize("verbose", ["", "1"])
def test_native_start_up_lines_only_when_verbose(verbose):
    """The control of the example DAG's check: the same lines do reach the task's stderr
    with MOBILEDET_VERBOSE=1, and only then."""
    env = dict(os.environ, MOBILEDET_VERBOSE=verbose)
    proc = subprocess.run([sys.executable, "-c", NOISY_TASK], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr[-2000:]
    noise = [l for l in proc.stderr.splitlines() if NOISE.search(l)]
    assert bool(noise) == bool(verbose), proc.stderr[-2000:]


def test_operators_map_with_partial_and_expand_kwargs():
    """One convert task per precision, the way a user fans out in their own DAG."""
    import pendulum
    from airflow.sdk import DAG

    from operators import TFLiteConvertOperator

    with DAG("fan_out", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        mapped = TFLiteConvertOperator.partial(task_id="convert", graph="/exports/e",
                                               calibration="/calibration").expand_kwargs(
            [{"precision": p, "output": f"/out/{p}/model.tflite"} for p in ("float32", "int8")])
    assert [v["precision"] for v in mapped.expand_input.value] == ["float32", "int8"]


def test_example_dag_file_parses_fast_without_heavy_imports():
    from dagfiles import _CODE

    proc = subprocess.run([sys.executable, "-c", _CODE, str(EXAMPLE)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["dag_id"] == "convert_and_validate" and got["heavy"] == [], got
    assert got["seconds"] < 2.0, got
