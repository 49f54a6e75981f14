"""Runs that start themselves, on the production shape: checkpoints landing in S3.

One deployment for the whole module: PostgreSQL and Redis from Debian's packages, moto's S3
server, and the real scheduler, dag-processor, triggerer, api-server and a Celery worker with
concurrency 2 (tests/stack.py, include/deploy/components.py), with this project's three DAGs.
Nothing is triggered by hand except the retrain DAG; every conversion starts because its
checkpoint landed in s3://landing-test/checkpoints, and the test asserts what users rely on:

* a landed checkpoint starts exactly one conversion within 60 s, which publishes;
* a half-written checkpoint (weights, no checkpoint.json) starts none until the marker lands;
* three checkpoints landing at once are each converted exactly once, by the run the ledger
  names (as few runs as the scheduler makes of the burst);
* a corrupt checkpoint (truncated weights) fails its run, whose report names the file, and its
  ledger record is failed with that reason;
* restarting the triggerer reports nothing again (the ledger holds every landing): nothing is
  converted twice;
* a downstream DAG scheduled on a published-model asset runs after the publish;
* mobiledet_retrain writes a checkpoint, which is converted and published with no other action;
* every task ran on the Celery worker, the published files match the manifest's sha256, and
  stopping the deployment leaves no process behind.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from include.deploy import processes
from include.deploy.components import WORKER, AirflowDeployment
from include.deploy.environment import AirflowSettings
from include.deploy.processes import free_port
from stack import postgres, redis, s3_process  # noqa: F401  (fixtures)
from test_stack import task_logs, upload_tree

REPO = Path(__file__).resolve().parents[1]
BUCKET = "landing-test"
CONVERT = "mobiledet_convert"
LANDING_WINDOW_S = 60
RUN_TIMEOUT_S = 420
CONFIG = {"precisions": {"edgetpu": {"float": ["float32"]}, "cpu": ["float32"]},
          "calibration_count": 4, "benchmark_runs": 3, "benchmark_warmup": 1, "threads": 1,
          "gates": {"min_map": 0}}   # tiny one-step checkpoints detect nothing: the floor off

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from include.data.synth import synthesize
    from models import make_checkpoint

    root = tmp_path_factory.mktemp("landing")
    synthesize(root / "data", 12, size=96, seed=0, val_fraction=0.34)
    ckpts = {}
    # "second" is made last: the newest, so the retrain's parent ("created" has 1 s steps);
    # 5 classes, as the synthetic data has (a retrain keeps the parent's classes)
    for seed, name in enumerate(("corrupt", "first", "half", "second")):
        ckpts[name] = make_checkpoint(root / name, variant="edgetpu", seed=seed, num_classes=5)
        time.sleep(1.1)
    weights = ckpts["corrupt"] / "weights.h5"
    weights.write_bytes(weights.read_bytes()[:2048])
    (root / "config.json").write_text(json.dumps(CONFIG))
    return root, ckpts


@pytest.fixture(scope="module")
def deployment(postgres, redis, s3_process, inputs, tmp_path_factory):  # noqa: F811
    root, _ = inputs
    home = tmp_path_factory.mktemp("landing-airflow")
    dags = home / "dags"
    dags.mkdir()
    for name in ("mobiledet_convert.py", "mobiledet_retrain.py", "mobiledet_rollout_example.py"):
        shutil.copy2(REPO / "dags" / name, dags / name)
    s3 = s3_process.client()
    s3.create_bucket(Bucket=BUCKET)
    upload_tree(s3, BUCKET, "datasets/tiny", root / "data")
    settings = AirflowSettings(
        home=home / "airflow", dags_folder=dags, port=free_port(), executor="celery",
        sql_alchemy_conn=postgres.sqlalchemy_url, broker_url=redis.url, worker_concurrency=2,
        parallelism=4, password="landing-test",
        extra_env={"AIRFLOW_CONN_AWS_DEFAULT": s3_process.connection_json(),
                   "MOBILEDET_CHECKPOINT_STORE": f"s3://{BUCKET}/checkpoints",
                   "MOBILEDET_WATCH_POLL_S": "3",
                   "MOBILEDET_DATA": f"s3://{BUCKET}/datasets/tiny",
                   "MOBILEDET_STORE": f"s3://{BUCKET}/releases",
                   "MOBILEDET_CONFIG": str(root / "config.json"),
                   "MOBILEDET_TASK_RETRIES": "0",
                   "MOBILEDET_ROLLOUT_VARIANT": "edgetpu",
                   "MOBILEDET_ROLLOUT_PRECISION": "float32",
                   "MOBILEDET_RETRAIN_SCHEDULE": "off",
                   "MOBILEDET_RETRAIN_DATA": f"s3://{BUCKET}/datasets/tiny"})
    dep = AirflowDeployment(settings)
    try:
        dep.start(timeout=300)
        client = dep.client()
        for dag_id in (CONVERT, "mobiledet_retrain", "mobiledet_rollout_example"):
            client.wait_for_dag(dag_id, timeout=180)
            client.unpause(dag_id)
        yield dep
    finally:
        dep.stop()


def land(s3, ckpt: Path, name: str, *, marker: bool = True) -> None:
    """Upload a checkpoint folder the way a trainer does: weights first, checkpoint.json last."""
    for path in sorted(ckpt.iterdir()):
        if path.name != "checkpoint.json":
            s3.upload_file(str(path), BUCKET, f"checkpoints/{name}/{path.name}")
    if marker:
        s3.upload_file(str(ckpt / "checkpoint.json"), BUCKET, f"checkpoints/{name}/checkpoint.json")


def runs_of(client, dag_id: str = CONVERT) -> list[dict]:
    return sorted(client.runs(dag_id), key=lambda r: r.get("queued_at") or "")


def wait_for_new_runs(client, before: set[str], count: int, seconds: float,
                      dag_id: str = CONVERT) -> list[dict]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        new = [r for r in runs_of(client, dag_id) if r["dag_run_id"] not in before]
        if len(new) >= count:
            return new
        time.sleep(1.0)
    return [r for r in runs_of(client, dag_id) if r["dag_run_id"] not in before]


def wait_done(client, runs: list[dict], dag_id: str = CONVERT) -> list[dict]:
    return [client.wait_for_run(dag_id, r["dag_run_id"], timeout=RUN_TIMEOUT_S, poll=2.0)
            for r in runs]


def explain(dep, run: dict, dag_id: str = CONVERT) -> str:
    """The failed tasks of a run with the end of their logs, for an assertion message."""
    client = dep.client()
    out = [f"run {run['dag_run_id']} ended {run.get('state')}"]
    for ti in client.task_instances(dag_id, run["dag_run_id"]):
        if ti["state"] not in ("success", "skipped"):
            out.append(f"--- {ti['task_id']}[{ti.get('map_index')}] {ti['state']}")
            out += [f"{name}:\n{text}" for name, text in task_logs(dep, ti, 2500).items()]
    return "\n".join(out)


def report_of(s3, run_id: str) -> dict:
    from include.pipeline.plan import safe_run_id

    key = f"releases/runs/{safe_run_id(run_id)}/report.json"
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def ledger_records(s3) -> dict[str, dict]:
    """The ledger's records of the landing bucket, by checkpoint folder name."""
    prefix = "releases/ledger/mobiledet/records/"
    out = {}
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
        record = json.loads(s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())
        out[str(record.get("uri", "")).rstrip("/").rsplit("/", 1)[-1]] = record
    return out


def wait_for_ledger(s3, names: set[str], seconds: float) -> dict[str, dict]:
    """The records of `names` once each is final or failed (bounded by `seconds`)."""
    deadline = time.monotonic() + seconds
    records: dict[str, dict] = {}
    while time.monotonic() < deadline:
        records = {n: r for n, r in ledger_records(s3).items() if n in names}
        if set(records) == names and all(r["state"] in ("published", "rejected", "failed")
                                          for r in records.values()):
            break
        time.sleep(2.0)
    return records


def manifests(s3) -> list[str]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="releases/mobiledet/").get("Contents", [])
    return sorted(o["Key"] for o in listed if o["Key"].endswith("/manifest.json"))


def test_checkpoints_landing_start_their_own_runs(deployment, s3_process, inputs):  # noqa: F811
    root, ckpts = inputs
    s3 = s3_process.client()
    client = deployment.client()
    seen: set[str] = set()

    # 1. one checkpoint lands, and one only half (no checkpoint.json): exactly one run,
    #    started within 60 s, which publishes
    landed_at = time.monotonic()
    land(s3, ckpts["first"], "first")
    land(s3, ckpts["half"], "half", marker=False)
    [first] = wait_for_new_runs(client, seen, 1, LANDING_WINDOW_S)
    started_after = time.monotonic() - landed_at
    assert started_after < LANDING_WINDOW_S
    time.sleep(8)  # more than two polls: the half-written checkpoint must not start a run
    assert [r["dag_run_id"] for r in runs_of(client) if r["dag_run_id"] not in seen] == \
        [first["dag_run_id"]]
    [done] = wait_done(client, [first])
    assert done["state"] == "success", explain(deployment, done)
    report = report_of(s3, first["dag_run_id"])
    assert [p["status"] for p in report["published"]] == ["published"]
    assert report["checkpoints"][0]["uri"] == f"s3://{BUCKET}/checkpoints/first"
    [manifest_key] = manifests(s3)
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    for f in manifest["files"]:   # every file it names, with the recorded size and sha256
        body = s3.get_object(Bucket=BUCKET, Key=f"{manifest_key.rsplit('/', 1)[0]}/{f['path']}")
        data = body["Body"].read()
        assert len(data) == f["size"] and hashlib.sha256(data).hexdigest() == f["sha256"], f
    # every task ran on the Celery worker: it logged each workload it received
    worker_log = deployment.processes[WORKER].log_tail(5_000_000)
    tis = client.task_instances(CONVERT, first["dag_run_id"])
    assert {"plan", "export", "convert", "check", "gate", "publish", "report"} <= \
        {ti["task_id"].rpartition(".")[2] for ti in tis}
    for ti in tis:
        if ti["state"] == "skipped":   # e.g. the recipe search, when no int8 model needs one
            continue
        assert f"task_id='{ti['task_id']}'" in worker_log, ti["task_id"]
    assert "Executing workload in Celery" in worker_log
    # the worker imported TensorFlow once, before its pool forked (celery_worker.py): the
    # tasks forked from it find it in memory instead of paying 5+ s each
    assert "mobiledet worker preload: " in worker_log and "tensorflow" in worker_log
    tf_imports = [p["wall_s"] for s in report["stages"] for p in s.get("parts") or []
                  if p["name"] == "tensorflow import"]
    assert tf_imports and max(tf_imports) < 1.0, tf_imports
    seen |= {first["dag_run_id"]}

    # the downstream DAG scheduled on the published edgetpu/float32 asset runs by itself
    rollouts = wait_for_new_runs(client, set(), 1, 90, dag_id="mobiledet_rollout_example")
    assert rollouts, "no downstream run after the publish"
    [rolled] = wait_done(client, rollouts[:1], dag_id="mobiledet_rollout_example")
    assert rolled["state"] == "success", explain(deployment, rolled, "mobiledet_rollout_example")

    # 2. the half-written checkpoint's marker lands with two more checkpoints (one corrupt):
    #    each is converted exactly once (the ledger batches a burst into as few runs as the
    #    scheduler makes); the two good ones publish, the corrupt one's run fails naming
    #    weights.h5 and its ledger record is failed with that reason
    s3.upload_file(str(ckpts["half"] / "checkpoint.json"), BUCKET, "checkpoints/half/checkpoint.json")
    land(s3, ckpts["second"], "second")
    land(s3, ckpts["corrupt"], "corrupt")
    names = {"half", "second", "corrupt"}
    records = wait_for_ledger(s3, names, LANDING_WINDOW_S + 2 * RUN_TIMEOUT_S)
    assert {n: r["state"] for n, r in records.items()} == \
        {"half": "published", "second": "published", "corrupt": "failed"}, records
    assert "weights.h5" in records["corrupt"]["reason"]
    new = wait_done(client, [r for r in runs_of(client) if r["dag_run_id"] not in seen])
    assert 1 <= len(new) <= 3, new
    converted_in: dict[str, list[str]] = {}
    for run in new:
        report = report_of(s3, run["dag_run_id"])
        uris = [c["uri"] for c in report["checkpoints"]]
        for uri in uris:
            converted_in.setdefault(uri.rsplit("/", 1)[1], []).append(run["dag_run_id"])
        failed = {f["uri"].rsplit("/", 1)[1] for f in report["failed_checkpoints"]}
        assert failed <= {"corrupt"}, report["failed_checkpoints"]
        if failed:   # the report names the bad file, and nothing of it is published
            assert "weights.h5" in report["failed_checkpoints"][0]["reason"]
            bad_ids = {f["ckpt_id"] for f in report["failed_checkpoints"]}
            assert not [p for p in report["published"] if p["ckpt_id"] in bad_ids]
        # a run of only the bad checkpoint fails; one that also published good ones succeeds
        # (its report and the ledger name the bad one)
        if failed and len(uris) == 1:
            assert run["state"] == "failed"
        else:
            assert run["state"] == "success", explain(deployment, run)
    # converted exactly once each, by the run the ledger names
    assert {n: len(r) for n, r in converted_in.items()} == {n: 1 for n in names}, converted_in
    from include.pipeline.plan import safe_run_id
    for name in names:
        assert records[name]["run_id"] == safe_run_id(converted_in[name][0])
    assert len(manifests(s3)) == 3
    seen |= {r["dag_run_id"] for r in new}

    # 3. the triggerer restarts: the ledger already holds every landing in the store, so the
    #    watcher reports none of them again: no run, nothing published twice
    deployment.processes["triggerer"].restart()
    again = wait_for_new_runs(client, seen, 1, 30)
    for run in wait_done(client, again):   # a run the safety net starts claims nothing
        assert run["state"] == "success", explain(deployment, run)
        report = report_of(s3, run["dag_run_id"])
        assert report["published"] == [] and report["models"] == []
    assert len(manifests(s3)) == 3
    assert {n: r["state"] for n, r in ledger_records(s3).items()} == \
        {"first": "published", "half": "published", "second": "published", "corrupt": "failed"}
    seen |= {r["dag_run_id"] for r in again}

    # 4. the scheduled retrain (triggered here) writes a checkpoint into the store; the
    #    watcher starts its conversion, which publishes, with nothing else done by hand
    retrain = client.trigger("mobiledet_retrain", {"variants": ["edgetpu"], "steps": 3,
                                                   "qat_steps": 0, "budget_s": 300,
                                                   "batch": 4})
    [retrained] = wait_done(client, [retrain], dag_id="mobiledet_retrain")
    assert retrained["state"] == "success", explain(deployment, retrained, "mobiledet_retrain")
    [converted] = wait_for_new_runs(client, seen, 1, LANDING_WINDOW_S + 30)
    [converted] = wait_done(client, [converted])
    assert converted["state"] == "success", explain(deployment, converted)
    report = report_of(s3, converted["dag_run_id"])
    assert report["checkpoints"][0]["uri"].endswith("-retrain")
    assert [p["status"] for p in report["published"]] == ["published"]
    assert len(manifests(s3)) == 4

    # 5. stopping the deployment ends every process it started, and their children, by pid
    settings = deployment.settings
    pids = {n: p.pid for n, p in deployment.processes.items()}
    deployment.stop()
    assert deployment.leftovers() == {}
    assert not [n for n, pid in pids.items() if processes.alive(pid)]
    assert not processes.port_open("127.0.0.1", settings.port)

