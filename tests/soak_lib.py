"""The checkpoint-ledger soak on the real services, shared by tests/test_soak.py (small) and
bench/soak.py (full size).

One deployment of its own: PostgreSQL, Redis, moto's S3 server (tests/stack.py), and the real
scheduler, dag-processor, triggerer, api-server and a Celery worker (concurrency 2) running
only mobiledet_convert, whose landing watcher lists s3://soak/checkpoints. Then:

* tiny checkpoints (tests/models.py; one seed each, so one fingerprint each) land in bursts,
  weights first and checkpoint.json last, as a trainer uploads them;
* some land twice, the second time under another path (``dup/<name>``): the same work;
* one lands first with truncated weights.h5; once its ledger record is failed, the good files
  land again under the same path (the fix the failure names: copy the folder again);
* the Celery worker's process group is SIGKILLed while a heavy task runs (then started again),
  and the triggerer is restarted once;
* it waits (bounded) until every ledger record is final, then checks what users rely on:
  each distinct checkpoint has one record, published or rejected exactly once (one version),
  no record or open marker left, no file under a version folder its manifest does not name,
  and one asset event per published model.

`Soak(...).run()` returns a JSON-safe summary with the figures (wall time, landing to
published) and ``problems`` (empty when everything held).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from include.deploy import processes
from include.deploy.components import WORKER, AirflowDeployment
from include.deploy.environment import AirflowSettings
from include.deploy.processes import free_port
from include.store.ledger import record_id_of

try:
    from stack import running_moto_server, running_postgres, running_redis
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.stack import running_moto_server, running_postgres, running_redis

REPO = Path(__file__).resolve().parents[1]
BUCKET = "soak"
CONVERT = "mobiledet_convert"
MODEL = "mobiledet"
RECORDS = f"releases/ledger/{MODEL}/records/"
OPEN = f"releases/ledger/{MODEL}/open/"
RELEASES = f"releases/{MODEL}/"
#: top-level names under releases/MODEL/ that are not version folders (include/store/layout.py)
NOT_VERSIONS = ("latest.json", "latest", "baselines", "channels", "history", "registry.json")
HEAVY = ("export", "convert", "check")
FINAL = ("published", "rejected")
#: one model per checkpoint (edgetpu float32); min_map 0: untrained checkpoints detect nothing
BASE_CONFIG = {"precisions": {"edgetpu": {"float": ["float32"]}, "cpu": ["float32"]},
               "calibration_count": 4, "benchmark_runs": 3, "benchmark_warmup": 1,
               "threads": 1, "gates": {"min_map": 0}}
#: failures recover in seconds, not the production minutes
LEDGER = {"batch_size": 4, "max_attempts": 5, "lease_s": 900, "backoff_s": 5}
FAST_RECOVERY_ENV = {
    "MOBILEDET_WATCH_POLL_S": "2",
    "MOBILEDET_SWEEP_S": "15",
    "MOBILEDET_TASK_RETRIES": "3",
    "MOBILEDET_TASK_RETRY_DELAY_S": "2",
    # a task whose worker was SIGKILLed stops heartbeating: failed (and retried) after 30 s
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # a task the dead worker had taken from the queue but not started is queued again
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "180",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "15",
}


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))


# --------------------------------------------------------------------------------------------
# what lands
# --------------------------------------------------------------------------------------------

@dataclass
class Landing:
    """One upload of a checkpoint's files under `path` (relative to s3://soak/checkpoints)."""
    name: str              # the checkpoint (one fingerprint)
    path: str              # where it lands
    burst: int
    truncated: bool = False
    uploaded_at: str | None = None


@dataclass
class SoakPlan:
    checkpoints: int = 30
    bursts: int = 3
    duplicates: int = 5
    kills: int = 2
    triggerer_restarts: int = 1
    truncated: bool = True
    timeout_s: float = 1800.0
    burst_gap_s: float = 60.0      # at most this long between two bursts
    kill_after_s: float = 8.0      # a kill comes at least this long after its burst lands

    def burst_of(self, index: int) -> int:
        return index * self.bursts // self.checkpoints

    def landings(self) -> list[Landing]:
        """Every upload, in order: each checkpoint once in its burst; the duplicates again
        under dup/, alternately in the same burst and in the next one; the truncated one
        (the second checkpoint of the first burst) first with bad weights."""
        out = []
        for i in range(self.checkpoints):
            out.append(Landing(ckpt_name(i), ckpt_name(i), self.burst_of(i),
                               truncated=self.truncated and i == 1))
        step = max(1, self.checkpoints // max(1, self.duplicates))
        dups = [i for i in range(0, self.checkpoints, step) if i != 1][:self.duplicates]
        for n, i in enumerate(dups):   # alternately with the original, and one burst later
            burst = min(self.burst_of(i) + n % 2, self.bursts - 1)
            out.append(Landing(ckpt_name(i), f"dup/{ckpt_name(i)}", burst))
        return sorted(out, key=lambda l: (l.burst, l.path.startswith("dup/")))


def ckpt_name(i: int) -> str:
    return f"ckpt-{i:02d}"


def make_inputs(root: Path, count: int, log=print) -> tuple[Path, dict[str, Path], Path]:
    """Evaluation data (12 synthetic images), `count` tiny EdgeTPU checkpoints (seeds 100+i,
    so each has its own fingerprint) and the truncated copy of ckpt-01."""
    from include.data.synth import synthesize
    from models import make_checkpoint

    root = Path(root)
    data = root / "data"
    if not data.exists():
        synthesize(data, 12, size=96, seed=0, val_fraction=0.34)
    ckpts = {}
    started = time.monotonic()
    for i in range(count):
        path = root / "ckpts" / ckpt_name(i)
        if not (path / "checkpoint.json").is_file():
            make_checkpoint(path, variant="edgetpu", seed=100 + i, num_classes=5)
        ckpts[ckpt_name(i)] = path
    bad = root / "ckpts-truncated" / ckpt_name(1)
    if count > 1 and not bad.exists():
        shutil.copytree(ckpts[ckpt_name(1)], bad)
        weights = bad / "weights.h5"
        weights.write_bytes(weights.read_bytes()[:2048])
    log(f"[soak] {count} checkpoints ready in {time.monotonic() - started:.0f} s")
    return data, ckpts, bad


def upload(s3, folder: Path, path: str, *, only: tuple[str, ...] | None = None) -> None:
    """A trainer's upload: every file but checkpoint.json first, the marker last."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    names = [n for n in names if n != "checkpoint.json"] + ["checkpoint.json"]
    for name in names:
        if only is None or name in only:
            s3.upload_file(str(folder / name), BUCKET, f"checkpoints/{path}/{name}")


def upload_tree(s3, prefix: str, folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder)}")


# --------------------------------------------------------------------------------------------
# reading the store and Airflow
# --------------------------------------------------------------------------------------------

def list_keys(s3, prefix: str) -> list[str]:
    keys, token = [], None
    while True:
        kw = {"Bucket": BUCKET, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        page = s3.list_objects_v2(**kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = page.get("NextContinuationToken")


def read_json(s3, key: str):
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def ledger_records(s3) -> dict[str, dict]:
    """Every ledger record, by record id (the checkpoint's fingerprint)."""
    out = {}
    for key in list_keys(s3, RECORDS):
        if key.endswith(".json"):
            try:
                record = read_json(s3, key)
            except Exception:   # written right now: the next look reads it
                continue
            out[record.get("id") or key] = record
    return out


def path_of(uri: str) -> str:
    return str(uri).split("/checkpoints/", 1)[-1].rstrip("/")


def running_heavy_tasks(client) -> list[str]:
    reply = client.call("GET", f"dags/{CONVERT}/dagRuns/~/taskInstances?state=running&limit=100")
    return [f"{ti['dag_run_id']}:{ti['task_id']}[{ti.get('map_index')}]"
            for ti in reply.get("task_instances", [])
            if ti["task_id"].rpartition(".")[2] in HEAVY]


def asset_events(client) -> list[dict]:
    out, offset = [], 0
    while True:
        reply = client.call("GET", f"assets/events?source_dag_id={CONVERT}&limit=100"
                                   f"&offset={offset}")
        batch = reply.get("asset_events", [])
        out += batch
        offset += len(batch)
        if not batch or offset >= int(reply.get("total_entries") or 0):
            return out


def all_runs(client) -> list[dict]:
    out, offset = [], 0
    while True:
        reply = client.call("GET", f"dags/{CONVERT}/dagRuns?limit=100&offset={offset}")
        batch = reply.get("dag_runs", [])
        out += batch
        offset += len(batch)
        if not batch or offset >= int(reply.get("total_entries") or 0):
            return out


# --------------------------------------------------------------------------------------------
# the soak
# --------------------------------------------------------------------------------------------

@dataclass
class Soak:
    plan: SoakPlan
    root: Path
    log: object = print
    events: list = field(default_factory=list)      # what the soak did, when (s from start)
    problems: list = field(default_factory=list)

    def note(self, what: str, **extra) -> None:
        at = round(time.monotonic() - self._t0, 1) if hasattr(self, "_t0") else 0.0
        self.events.append({"at_s": at, "what": what, **extra})
        self.log(f"[soak +{at:7.1f}s] {what} {json.dumps(extra) if extra else ''}".rstrip())

    # -- the stack ------------------------------------------------------------------------
    def _start(self, stack: ExitStack, data: Path):
        pg = stack.enter_context(running_postgres())
        redis = stack.enter_context(running_redis())
        s3srv = stack.enter_context(running_moto_server())
        s3 = s3srv.client()
        s3.create_bucket(Bucket=BUCKET)
        upload_tree(s3, "datasets/tiny", data)
        home = self.root / "airflow"
        dags = home / "dags"
        dags.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / "dags" / "mobiledet_convert.py", dags / "mobiledet_convert.py")
        config = dict(BASE_CONFIG, ledger=LEDGER)
        (self.root / "config.json").write_text(json.dumps(config))
        settings = AirflowSettings(
            home=home / "airflow", dags_folder=dags, port=free_port(), executor="celery",
            sql_alchemy_conn=pg.sqlalchemy_url, broker_url=redis.url, worker_concurrency=2,
            parallelism=4, password="soak-test",
            extra_env={"AIRFLOW_CONN_AWS_DEFAULT": s3srv.connection_json(),
                       "MOBILEDET_CHECKPOINT_STORE": f"s3://{BUCKET}/checkpoints",
                       "MOBILEDET_DATA": f"s3://{BUCKET}/datasets/tiny",
                       "MOBILEDET_STORE": f"s3://{BUCKET}/releases",
                       "MOBILEDET_CONFIG": str(self.root / "config.json"),
                       "MOBILEDET_RETRAIN_SCHEDULE": "off",
                       "MOBILEDET_HOUSEKEEPING_SCHEDULE": "off",
                       **FAST_RECOVERY_ENV})
        dep = AirflowDeployment(settings)
        stack.callback(self._stop, dep)
        dep.start(timeout=300)
        client = dep.client()
        client.wait_for_dag(CONVERT, timeout=180)
        client.unpause(CONVERT)
        return dep, s3

    def _stop(self, dep: AirflowDeployment) -> None:
        dep.stop()
        left = dep.leftovers()
        if left:
            self.problems.append(f"processes left after stopping the deployment: {left}")

    # -- chaos ----------------------------------------------------------------------------
    def kill_worker(self, dep: AirflowDeployment, running: list[str]) -> None:
        """SIGKILL the Celery worker's process group (and the task processes it forked that
        left the group), then start it again and wait until it is ready."""
        proc = dep.processes[WORKER]
        proc.remember_children()
        pid, children = proc.pid, sorted(proc.known_pids)
        os.killpg(pid, signal.SIGKILL)
        for child in children:        # started by this deployment's worker: ours to kill
            if processes.alive(child):
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.note("worker SIGKILLed", pid=pid, children=len(children), running=running)
        offset = proc.log_path.stat().st_size
        proc.restart()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with open(proc.log_path, "rb") as fh:
                fh.seek(offset)
                if b" ready." in fh.read():
                    break
            if not proc.running():
                raise RuntimeError(f"the Celery worker did not restart: {proc.log_tail(1500)}")
            time.sleep(0.5)
        else:
            raise RuntimeError("the restarted Celery worker was not ready within 180 s")
        self.note("worker restarted", pid=proc.pid)

    def restart_triggerer(self, dep: AirflowDeployment) -> None:
        proc = dep.processes["triggerer"]
        old = proc.pid
        self.restarted_at = utc_now()
        proc.restart()
        self.note("triggerer restarted", old_pid=old, pid=proc.pid)

    # -- the run --------------------------------------------------------------------------
    def run(self) -> dict:
        plan = self.plan
        started = time.monotonic()
        data, ckpts, bad = make_inputs(self.root, plan.checkpoints, self.log)
        made_s = time.monotonic() - started
        with ExitStack() as stack:
            dep, s3 = self._start(stack, data)
            setup_s = time.monotonic() - started
            client = dep.client()
            self._t0 = time.monotonic()
            summary = self._soak(dep, client, s3, ckpts, bad)
            summary.update(inputs_s=round(made_s, 1), setup_s=round(setup_s, 1))
            summary.update(self.check(client, s3, summary))
        summary["problems"] = self.problems
        return summary

    def _soak(self, dep, client, s3, ckpts, bad) -> dict:
        plan = self.plan
        landings = plan.landings()
        fingerprints = {name: json.loads((path / "checkpoint.json").read_text())["fingerprint"]
                        for name, path in ckpts.items()}
        self.fingerprints = {n: record_id_of(fp, "") for n, fp in fingerprints.items()}
        burst, last_burst_at = -1, 0.0
        kills = restarts = 0
        last_kill_at = -1e9
        relanded, relanded_mono = None, 0.0
        truncated = next((l for l in landings if l.truncated), None)
        deadline = time.monotonic() + plan.timeout_s
        first_landing = None
        records: dict[str, dict] = {}
        while True:
            now = time.monotonic()
            if now > deadline:
                self.problems.append(f"not every record was final within {plan.timeout_s:.0f} s")
                break
            records = ledger_records(s3)
            by_name = {n: records.get(fp) for n, fp in self.fingerprints.items()}
            landed_names = {l.name for l in landings if l.uploaded_at}
            # the next burst: when the gap passed, or when everything landed so far is final
            kills_due = min(plan.kills, burst + 1)   # kill k belongs to burst k
            if burst + 1 < plan.bursts and kills >= kills_due and (
                    burst < 0 or now - last_burst_at >= plan.burst_gap_s
                                            or all((by_name.get(n) or {}).get("state") in FINAL
                                                   for n in landed_names if n != (
                                                       truncated.name if truncated else None))):
                burst += 1
                last_burst_at = time.monotonic()
                first_landing = first_landing or utc_now()
                paths = []
                for item in (l for l in landings if l.burst == burst):
                    upload(s3, bad if item.truncated else ckpts[item.name], item.path)
                    item.uploaded_at = utc_now().isoformat()
                    paths.append(item.path)
                self.note(f"burst {burst} landed", paths=paths)
                continue
            # the triggerer restart: while the second burst (or the only one) is being read
            # (after the re-landing, given the running watcher 15 s to notice it: the watcher
            # must record the same bytes landed again at the same place by itself, not only
            # after a restart; a re-landing recorded only after the restart is a problem)
            if restarts < plan.triggerer_restarts and burst >= min(1, plan.bursts - 1) and \
                    now - last_burst_at >= 3 and (truncated is None or (
                        relanded is not None and now - relanded_mono >= 15)):
                self.restart_triggerer(dep)
                restarts += 1
                continue
            # the kills: the k-th once burst k landed, while an export/convert/check runs
            if kills < plan.kills and burst >= min(kills, plan.bursts - 1) and \
                    now - last_burst_at >= plan.kill_after_s and now - last_kill_at >= 45:
                running = running_heavy_tasks(client)
                if running:
                    self.kill_worker(dep, running)
                    kills += 1
                    last_kill_at = time.monotonic()
                    continue
            # the truncated checkpoint, once failed, lands again good under the same path
            if truncated and relanded is None:
                record = by_name.get(truncated.name)
                if record and record.get("state") == "failed" and not record.get("retryable"):
                    self.note("truncated checkpoint failed", reason=record.get("reason"))
                    upload(s3, ckpts[truncated.name], truncated.path)
                    relanded, relanded_mono = utc_now(), time.monotonic()
                    self.note("truncated checkpoint landed again, good", path=truncated.path)
                    continue
            done = (burst + 1 == plan.bursts and kills == plan.kills
                    and restarts == plan.triggerer_restarts
                    and (truncated is None or relanded is not None)
                    and all(r and r.get("state") in FINAL for r in by_name.values())
                    and not list_keys(s3, OPEN))
            if done:
                break
            if kills < plan.kills and burst + 1 == plan.bursts and records and all(
                    r and r.get("state") in FINAL for r in by_name.values()):
                self.problems.append(f"kill {kills + 1}: no export, convert or check ran "
                                     "to kill before everything was final")
                break
            time.sleep(2.0)
        end = utc_now()
        self.note("every record final" if not self.problems else "gave up waiting")
        wall_s = (end - first_landing).total_seconds() if first_landing else 0.0
        return {"plan": plan.__dict__, "landings": [l.__dict__ for l in landings],
                "kills": kills, "triggerer_restarts": restarts,
                "relanded_at": relanded.isoformat() if relanded else None,
                "first_landing_at": first_landing.isoformat() if first_landing else None,
                "wall_s": round(wall_s, 1)}

    # -- the checks -----------------------------------------------------------------------
    def check(self, client, s3, summary: dict) -> dict:
        problems = self.problems
        records = ledger_records(s3)
        # every run ends (bounded): what the last runs do is part of what is checked
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            runs = all_runs(client)
            if all(r["state"] in ("success", "failed") for r in runs):
                break
            time.sleep(3)
        else:
            problems.append("DAG runs still not finished 300 s after the last record: "
                            + str([(r["dag_run_id"], r["state"]) for r in runs
                                   if r["state"] not in ("success", "failed")]))
        records = ledger_records(s3)
        by_fp = {}
        for rid, record in records.items():
            by_fp.setdefault(record.get("id") or rid, []).append(record)
        for name, fp in self.fingerprints.items():
            mine = by_fp.get(fp, [])
            if len(mine) != 1:
                problems.append(f"{name}: {len(mine)} ledger records (one expected)")
                continue
            record = mine[0]
            finals = [h for h in record.get("history") or [] if h["state"] in FINAL]
            if record["state"] not in FINAL:
                problems.append(f"{name}: ended {record['state']} ({record.get('reason')})")
            elif len(finals) != 1:
                problems.append(f"{name}: {len(finals)} final transitions {finals}")
        extra = set(by_fp) - set(self.fingerprints.values())
        if extra:
            problems.append(f"records of no soak checkpoint: {sorted(extra)}")
        left_open = list_keys(s3, OPEN)
        if left_open:
            problems.append(f"open markers left: {left_open}")
        # releases: one manifest per published checkpoint, naming every file of its folder
        keys = list_keys(s3, RELEASES)
        versions: dict[str, list[str]] = {}
        for key in keys:
            top, _, rest = key[len(RELEASES):].partition("/")
            if top not in NOT_VERSIONS and rest:
                versions.setdefault(top, []).append(rest)
        manifests = {}
        for version, files in versions.items():
            if "manifest.json" not in files:
                problems.append(f"version {version}: files but no manifest: {files}")
                continue
            manifest = read_json(s3, f"{RELEASES}{version}/manifest.json")
            manifests[version] = manifest
            named = {f["path"] for f in manifest.get("files", [])}
            orphans = sorted(set(files) - named - {"manifest.json"})
            if orphans:
                problems.append(f"version {version}: files no manifest names: {orphans}")
            missing = sorted(named - set(files))
            if missing:
                problems.append(f"version {version}: manifest names missing files: {missing}")
        published = {r["id"]: r for r in records.values() if r.get("state") == "published"}
        manifest_fps = [record_id_of(m.get("lineage", {}).get("checkpoint_fingerprint"), "")
                        for m in manifests.values()]
        for fp, record in published.items():
            count = manifest_fps.count(fp)
            if count != 1:
                problems.append(f"published {record.get('uri')}: {count} manifests")
            if record.get("version") not in manifests:
                problems.append(f"published {record.get('uri')}: its version "
                                f"{record.get('version')} has no manifest")
        stray = [fp for fp in manifest_fps if fp not in published]
        if stray:
            problems.append(f"manifests of checkpoints not published in the ledger: {stray}")
        # one asset event per published model
        events = asset_events(client)
        counts: dict[tuple, int] = {}
        for e in events:
            x = e.get("extra") or {}
            counts[(x.get("version"), x.get("variant"), x.get("precision"))] = \
                counts.get((x.get("version"), x.get("variant"), x.get("precision")), 0) + 1
        models = {(v, p["variant"], p["precision"]) for v, m in manifests.items()
                  for p in m.get("published", [])}
        for model in sorted(models):
            if counts.get(model, 0) != 1:
                problems.append(f"model {model}: {counts.get(model, 0)} asset events")
        for model in sorted(set(counts) - models):
            problems.append(f"asset events of no published model {model}: {counts[model]}")
        # how often each checkpoint was claimed and converted (a killed run's retry is fine)
        attempts = {path_of(r.get("uri")): int(r.get("attempts") or 0) for r in records.values()}
        runs = all_runs(client)
        run_states: dict[str, int] = {}
        for r in runs:
            run_states[r["state"]] = run_states.get(r["state"], 0) + 1
        # landing to published: from the landing that became the work (the last "landed"
        # transition) to the published transition, in the ledger's own times
        latencies = {}
        uploaded = {}
        for item in summary["landings"]:
            uploaded.setdefault(item["name"], item["uploaded_at"])
        for name, fp in self.fingerprints.items():
            record = (by_fp.get(fp) or [None])[0]
            if not record or record.get("state") != "published":
                continue
            history = record.get("history") or []
            landed = [h for h in history if h["state"] == "landed"]
            done = [h for h in history if h["state"] == "published"]
            if landed and done:
                latencies[name] = (parse_time(done[-1]["at"])
                                   - parse_time(landed[-1]["at"])).total_seconds()
        slowest = max(latencies, key=latencies.get) if latencies else None
        findings = []
        relanded = parse_time(summary.get("relanded_at"))
        truncated = next((l["name"] for l in summary["landings"] if l["truncated"]), None)
        if relanded and truncated:
            record = (by_fp.get(self.fingerprints[truncated]) or [{}])[0]
            again = [parse_time(h["at"]) for h in record.get("history") or []
                     if h["state"] == "landed" and parse_time(h["at"]) >= relanded]
            restarted = getattr(self, "restarted_at", None)
            noticed = round((again[0] - relanded).total_seconds(), 1) if again else None
            summary["relanding_noticed_after_s"] = noticed
            if again and restarted and restarted < relanded:
                pass
            elif again and restarted and again[0] >= restarted:
                problems.append(
                    f"the good re-landing of {truncated} (same path, same checkpoint.json "
                    f"bytes) was recorded {noticed} s after it landed, only after the "
                    f"triggerer restart ({(restarted - relanded).total_seconds():.1f} s after "
                    "it): the running watcher did not notice it")
            elif not again:
                problems.append(f"the good re-landing of {truncated} was never recorded")
        figures = {
            "records": len(records), "published": len(published),
            "rejected": sum(r.get("state") == "rejected" for r in records.values()),
            "manifests": len(manifests), "asset_events": len(events),
            "runs": len(runs), "run_states": run_states,
            "max_attempts": max(attempts.values()) if attempts else 0,
            "attempts_over_1": {k: v for k, v in attempts.items() if v > 1},
            "landing_to_published_s": {
                "max": round(latencies[slowest], 1) if slowest else None,
                "slowest": slowest,
                "median": round(statistics.median(latencies.values()), 1) if latencies else None},
            "findings": findings,
            "events": self.events,
        }
        return figures
