"""From landing to published: the pipeline on real Airflow against the same work done by hand.

In one run, on this machine, with the same checkpoints (one MobileDet-CPU float, one
MobileDet-EdgeTPU QAT; untrained weights, --size px, --multiplier, 3 classes) and the same
synthetic evaluation data (include/data/synth.py), it times:

  (a) by hand: the CLI verbs one after another, as the MobileDet conversion notebook does it:
      `mobiledet export`, `convert` per precision, `evaluate` (quantised models against the
      float32 reference), `validate`, `benchmark`, `edgetpu-compile` (integer EdgeTPU models);
  (b) `mobiledet run` (dag.test: every task in one process, one after another);
  (c) the real scheduler, dag-processor, triggerer and api-server on PostgreSQL, with
      - the LocalExecutor, parallelism 2,
      - a Celery worker, concurrency 2 (Redis broker), and the same worker again with its
        TensorFlow / Great Expectations preload off (MOBILEDET_WORKER_PRELOAD=0) for comparison,
      from the landing of the checkpoints in the watched checkpoint store
      (MOBILEDET_CHECKPOINT_STORE; the AssetWatcher starts mobiledet_convert, whose evaluation
      data is MOBILEDET_DATA) to the end of the last publish task.

Then 1, 2 and 4 MobileDet-CPU float checkpoints (4 models each) land at once on (c) with the
LocalExecutor, and it prints the time per model. Orchestration overhead is what Airflow adds
to the work: the task instances' durations minus the stages' own wall time (from the cost
records every stage writes, include/pipeline/costs.py), per slot, and the time from the landing
to the first task's start. Evaluation throughput against the interpreter's own rate comes from
bench/eval_throughput.py's measurement.

    .venv/bin/python bench/pipeline.py                          # the full run (long)
    .venv/bin/python bench/pipeline.py --size 128 --multiplier 0.5 --skip-celery --images 20
                                                                 # minutes

Exit code 1 when a target is missed (printed with the table); 2 when something failed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import include  # noqa: E402,F401  (environment for TensorFlow before anything imports it)

DAG_ID = "mobiledet_convert"
MOBILEDET = str(Path(sys.executable).with_name("mobiledet"))
PRECISIONS = {("cpu", False): ["float32", "dynamic", "float16", "int8"],
              ("edgetpu", True): ["float32", "uint8"]}
TARGETS = {"c_vs_a": 0.6, "overhead": 0.10, "landing_s": 30.0, "per_model_growth": 0.15,
           "eval_throughput": 0.95}
RUN_TIMEOUT_S = 5400
#: rows printed for comparison only: the Celery worker with its preload turned off
#: (MOBILEDET_WORKER_PRELOAD=0), every task importing TensorFlow / Great Expectations itself.
NOT_TARGETS = ("Celery worker (concurrency 2), no preload",)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# inputs: data, checkpoints, config
# --------------------------------------------------------------------------------------------

def make_inputs(work: Path, args) -> dict:
    from models import make_checkpoint

    from include.data.synth import synthesize

    data = work / "data"
    if not (data / "annotations" / "instances_val.json").is_file():
        log(f"synthetic data: {args.images} validation images of {args.size} px")
        synthesize(data, int(args.images / 0.3) + 1, size=args.size, seed=0, val_fraction=0.3)
    spec = dict(num_classes=3, input_size=args.size, depth_multiplier=args.multiplier)
    ckpts = {}
    wanted = [("cpu", False, 0), ("edgetpu", True, 0)] + \
        [("cpu", False, s) for s in range(1, 4) if not args.skip_scaling]
    for variant, qat, seed in wanted:
        name = f"{variant}-{'qat' if qat else 'float'}-{seed}"
        out = work / "checkpoints" / name
        if not (out / "checkpoint.json").is_file():
            t0 = time.perf_counter()
            shutil.rmtree(out, ignore_errors=True)
            make_checkpoint(out, variant=variant, qat=qat, seed=seed, **spec)
            log(f"checkpoint {name} in {time.perf_counter() - t0:.0f} s")
        ckpts[name] = out
    config = work / "config.json"
    config.write_text(json.dumps({"calibration_count": args.calibration_count,
                                  "benchmark_runs": args.benchmark_runs,
                                  "benchmark_warmup": args.benchmark_warmup,
                                  "threads": 2,
                                  # untrained checkpoints: the "detects nothing" floor off
                                  "gates": {"min_map": 0}}, indent=1))
    return {"data": data, "checkpoints": ckpts, "config": config}


# --------------------------------------------------------------------------------------------
# (a) by hand
# --------------------------------------------------------------------------------------------

def _cli(*argv, ok=(0,)) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([MOBILEDET, *map(str, argv)], capture_output=True, text=True,
                          timeout=3600, cwd=ROOT)
    if proc.returncode not in ok:
        raise RuntimeError(f"mobiledet {' '.join(map(str, argv))} exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-1500:]}")
    return time.perf_counter() - t0


def by_hand(work: Path, inputs: dict, names: list[str], args) -> dict:
    out = work / "by-hand"
    shutil.rmtree(out, ignore_errors=True)
    data = inputs["data"]
    steps: dict[str, float] = {}

    def add(step, seconds):
        steps[step] = steps.get(step, 0.0) + seconds

    t0 = time.perf_counter()
    for name in names:
        ckpt = inputs["checkpoints"][name]
        variant, qat = name.split("-")[0], "-qat-" in name
        export = out / name / "export"
        add("export", _cli("export", "--checkpoint", ckpt, "--out", export))
        models = {}
        for precision in PRECISIONS[(variant, qat)]:
            model = out / name / precision / "model.tflite"
            extra = ["--calibration", data, "--calibration-count", args.calibration_count] \
                if precision == "int8" else []
            add("convert", _cli("convert", "--graph", export, "--precision", precision,
                                "--out", model, *extra))
            models[precision] = model
        for precision, model in models.items():
            ref = ["--reference", models["float32"]] if precision != "float32" else []
            add("evaluate", _cli("evaluate", "--model", model, "--data", data, "--threads", 2,
                                 *ref, "--json"))
            add("validate", _cli("validate", "--model", model, "--data", data, "--json"))
            add("benchmark", _cli("benchmark", "--model", model, "--threads", 2,
                                  "--warmup", args.benchmark_warmup, "--runs",
                                  args.benchmark_runs, "--json"))
            if variant == "edgetpu" and precision in ("int8", "uint8"):
                # exit 3: the compiler is not installed here (it says so); the verb still
                # reads the model and runs the offline prediction
                add("edgetpu-compile", _cli("edgetpu-compile", model, "--json", ok=(0, 3)))
    return {"wall_s": time.perf_counter() - t0, "steps": steps}


# --------------------------------------------------------------------------------------------
# (b) mobiledet run (dag.test)
# --------------------------------------------------------------------------------------------

def dag_test(work: Path, inputs: dict, names: list[str]) -> dict:
    home = work / "airflow-dagtest"
    store = work / "store-dagtest"
    shutil.rmtree(store, ignore_errors=True)
    env = dict(os.environ, AIRFLOW_HOME=str(home), MOBILEDET_CHECKPOINT_STORE="off")
    env.pop("MOBILEDET_STORE", None)
    argv = [MOBILEDET, "run", "--checkpoint", *[str(inputs["checkpoints"][n]) for n in names],
            "--data", str(inputs["data"]), "--store", str(store), "--config",
            str(inputs["config"]), "--json"]
    if not (home / ".db-migrated").exists():   # migrate outside the timed part
        subprocess.run([sys.executable, "-c", "from include.deploy.airflow_env import "
                        "prepare_airflow; prepare_airflow()"], env=env, cwd=ROOT, check=True,
                       capture_output=True, timeout=600)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=RUN_TIMEOUT_S)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"mobiledet run exited {proc.returncode}: {proc.stderr[-2000:]}")
    return {"wall_s": wall, "store": store}


# --------------------------------------------------------------------------------------------
# (c) the real scheduler, from a landing
# --------------------------------------------------------------------------------------------

def _ts(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Deployment:
    """Airflow's components (include/deploy/components.py) on PostgreSQL, watching a folder."""

    def __init__(self, work: Path, inputs: dict, executor: str, pg, redis=None, slots: int = 2,
                 poll_s: float = 10.0, env: dict | None = None):
        from include.deploy.components import AirflowDeployment
        from include.deploy.environment import AirflowSettings
        from include.deploy.processes import free_port

        self.work = work / f"airflow-{executor}"
        shutil.rmtree(self.work, ignore_errors=True)
        self.watched = self.work / "checkpoints"
        self.store = self.work / "store"
        self.watched.mkdir(parents=True)
        self.store.mkdir(parents=True)
        self.slots = slots
        self.poll_s = poll_s
        db = f"airflow_{executor}"
        pg.psql(f"DROP DATABASE IF EXISTS {db}")
        pg.psql(f"CREATE DATABASE {db} OWNER airflow")
        url = pg.sqlalchemy_url.rsplit("/", 1)[0] + f"/{db}"
        extra = {"MOBILEDET_CHECKPOINT_STORE": str(self.watched),
                 "MOBILEDET_DATA": str(inputs["data"]), "MOBILEDET_STORE": str(self.store),
                 "MOBILEDET_CONFIG": str(inputs["config"]),
                 "MOBILEDET_WATCH_POLL_S": str(poll_s), "MOBILEDET_TASK_RETRIES": "0",
                 "PYTHONPATH": str(ROOT), **(env or {})}
        # The slots are the LocalExecutor's parallelism, or the Celery worker's concurrency;
        # with Celery the scheduler's parallelism stays Airflow's default (32), as in
        # docker-compose.yaml: capped at the worker's slots, the scheduler would wait for the
        # result backend to report a task done before it sends the next one.
        settings = AirflowSettings(home=self.work / "home", port=free_port(), executor=executor,
                                   sql_alchemy_conn=url,
                                   parallelism=None if executor == "celery" else slots,
                                   broker_url=redis.url if redis else None,
                                   worker_concurrency=slots, extra_env=extra)
        self.airflow = AirflowDeployment(settings)
        self.executor = executor

    def __enter__(self):
        log(f"starting Airflow ({self.executor}, {self.slots} slots)")
        self.airflow.start()
        self.client = self.airflow.client()
        self.client.wait_for_dag(DAG_ID, timeout=180)
        self.client.unpause(DAG_ID)
        time.sleep(15)   # the triggerer picks up the watcher, its first listing sees nothing
        return self

    def __exit__(self, *exc):
        self.airflow.stop()

    def component_cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) each Airflow component and its long-lived children have
        used so far: the LocalExecutor's worker processes and the Celery pool's children are
        the tasks' supervisors, counted with their component. Exited task processes are not
        (their CPU is the stages' and the task start-up's, in the task instances' duration)."""
        import psutil

        out = {}
        for name, proc in self.airflow.processes.items():
            total = 0.0
            try:
                top = psutil.Process(proc.pid)
                family = [top, *top.children(recursive=True)]
            except psutil.Error:
                family = []
            for p in family:
                try:
                    times = p.cpu_times()
                except psutil.Error:   # exited between the listing and now
                    continue
                total += times.user + times.system
            out[name] = total
        return out

    def land(self, checkpoints: dict[str, Path], tag: str, timeout: float = RUN_TIMEOUT_S) -> dict:
        """Copy the checkpoints into the watched store (each renamed into place, complete),
        wait until every one is published; the run's timings from Airflow's task instances."""
        from include.store import open_store

        # a clean slate: earlier claims and releases of the same checkpoints would end the
        # new runs as 'already claimed' in seconds
        for sub in ("claims", "mobiledet"):
            shutil.rmtree(self.store / sub, ignore_errors=True)
        staged = []
        for name, src in checkpoints.items():
            tmp = self.watched / f".{tag}-{name}.partial"
            shutil.copytree(src, tmp)
            staged.append((tmp, self.watched / f"{tag}-{name}"))
        # All at once, as a training job that writes several checkpoints does: the watcher
        # sees them in one poll and reports them event_spacing (5 s) apart, so each starts its
        # own run (operators/triggers.py).
        cpu_before = self.component_cpu()
        landed = time.time()
        for tmp, final in staged:
            os.rename(tmp, final)
        store = open_store(str(self.store))
        deadline = time.monotonic() + timeout
        runs = []
        while time.monotonic() < deadline:
            manifests = [k for k in store.list("mobiledet") if k.endswith("/manifest.json")] \
                if (self.store / "mobiledet").exists() else []
            runs = [r for r in self.client.runs(DAG_ID)
                    if (_ts(r.get("queued_at") or r.get("run_after")) or 0) >= landed - 1]
            done = runs and all(r.get("state") in ("success", "failed") for r in runs)
            if len(manifests) >= len(checkpoints) and done:
                break
            if done and any(r.get("state") == "failed" for r in runs):
                raise RuntimeError(f"{tag}: a run failed: {[r['dag_run_id'] for r in runs]}")
            time.sleep(2)
        else:
            raise RuntimeError(f"{tag}: not published within {timeout:.0f} s")
        cpu = self.component_cpu()
        timings = self._timings(runs, landed, store)
        timings["component_cpu_s"] = {k: round(v - cpu_before.get(k, 0.0), 2)
                                      for k, v in cpu.items()}
        return timings

    def _timings(self, runs: list[dict], landed: float, store) -> dict:
        from include.pipeline import costs
        from include.pipeline.plan import safe_run_id

        tis, records = [], []
        for r in runs:
            tis += self.client.task_instances(DAG_ID, r["dag_run_id"])
            records += costs.load(store, safe_run_id(r["dag_run_id"]))
        starts = [_ts(t.get("start_date")) for t in tis if t.get("start_date")]
        publish_ends = [_ts(t.get("end_date")) for t in tis
                        if t["task_id"] == "publish" and t.get("end_date")]
        ti_s = sum((_ts(t["end_date"]) - _ts(t["start_date"])) for t in tis
                   if t.get("start_date") and t.get("end_date"))
        stage_s = sum(r["wall_s"] for r in records if r.get("stage") != "report"
                      or not r.get("partial"))
        wall = max(publish_ends) - landed
        models = sum(1 for r in records if r.get("stage") == "check")
        return {"wall_s": wall, "landing_to_first_task_s": min(starts) - landed,
                "task_s": ti_s, "stage_s": stage_s,
                "overhead_s": (ti_s - stage_s) / self.slots,
                "idle_slot_s": max(0.0, self.slots * wall - ti_s),
                "runs": len(runs), "tasks": len(tis), "models": models,
                "task_instances": [
                    {"task_id": t["task_id"], "map_index": t.get("map_index"),
                     "run_id": t.get("dag_run_id"),
                     "start": t.get("start_date"), "end": t.get("end_date"),
                     "queued": t.get("queued_when"), "state": t.get("state")} for t in tis],
                "records": records}


# --------------------------------------------------------------------------------------------
# evaluation throughput (bench/eval_throughput.py's measurement, shortened)
# --------------------------------------------------------------------------------------------

def eval_throughput(work: Path, args) -> float:
    sys.path.insert(0, str(ROOT / "bench"))
    import eval_throughput as et

    # Passes of a second or more, five of them interleaved, the median of the paired ratios:
    # at 48 images an int8 pass takes 0.2 s and this VM's noise alone moves it by 30%.
    rows = et.measure(work / "eval-throughput", images=args.throughput_images, threads=[2],
                      precisions=["float32", "int8"], runs=args.throughput_images,
                      repeat=args.throughput_repeat)
    return min(r["ratio_decoded_once"] for r in rows)


# --------------------------------------------------------------------------------------------
# worker sizing
# --------------------------------------------------------------------------------------------

RESERVED_MB = 2048   # scheduler, dag-processor, triggerer, api-server, the worker's own process
HEAVY = ("export", "convert", "check", "edgetpu")


def memory_mb() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def worker_sizing(records: list[dict]) -> dict:
    """Celery worker concurrency (= pool slots per worker) from measured task costs: as many
    heavy tasks as the cores keep busy at their measured CPU use, and as fit in memory at their
    measured peak RSS."""
    heavy = [r for r in records if r.get("stage") in HEAVY and r.get("wall_s")]
    peak = max((r.get("peak_rss_mb") or 0.0) for r in heavy) if heavy else 0.0
    wall = sum(r["wall_s"] for r in heavy)
    cores_per_task = (sum(r.get("cpu_s") or 0.0 for r in heavy) / wall) if wall else 1.0
    cores = os.cpu_count() or 1
    mem = memory_mb()
    by_cpu = max(1, int(round(cores / max(cores_per_task, 0.1))))
    by_memory = max(1, int((mem - RESERVED_MB) // peak)) if peak and mem else by_cpu
    return {"peak_rss_mb": peak, "cores_per_task": cores_per_task, "cores": cores,
            "memory_mb": mem, "by_cpu": by_cpu, "by_memory": by_memory,
            "concurrency": min(by_cpu, by_memory)}


def ratio(x, a):
    return f"{x / a:.2f}x" if a else "-"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/mobiledet-bench-pipeline")
    p.add_argument("--size", type=int, default=320, help="input size (px)")
    p.add_argument("--multiplier", type=float, default=1.0, help="depth multiplier")
    p.add_argument("--images", type=int, default=50, help="evaluation images")
    p.add_argument("--calibration-count", type=int, default=100)
    p.add_argument("--benchmark-runs", type=int, default=20)
    p.add_argument("--benchmark-warmup", type=int, default=3)
    p.add_argument("--poll", type=float, default=10.0, help="landing watcher poll (s)")
    p.add_argument("--skip-celery", action="store_true")
    p.add_argument("--skip-preload-off", action="store_true",
                   help="no second Celery run with the worker preload turned off")
    p.add_argument("--skip-scaling", action="store_true", help="no 1/2/4-checkpoint runs")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--throughput-images", type=int, default=240)
    p.add_argument("--throughput-repeat", type=int, default=5)
    p.add_argument("--json-out", default=None, help="write every figure here")
    args = p.parse_args(argv)
    # killed (timeout, kill PID): unwind, so that every `with` below stops the Airflow
    # components, PostgreSQL and Redis it started
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    from include.console import format_table

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs(work, args)
    main_pair = ["cpu-float-0", "edgetpu-qat-0"]
    n_models = sum(len(PRECISIONS[(n.split("-")[0], "-qat-" in n)]) for n in main_pair)
    figures: dict = {"args": vars(args), "models": n_models}

    log("(a) by hand: CLI verbs one after another")
    a = by_hand(work, inputs, main_pair, args)
    log(f"(a) {a['wall_s']:.1f} s {json.dumps({k: round(v, 1) for k, v in a['steps'].items()})}")
    log("(b) mobiledet run (dag.test)")
    b = dag_test(work, inputs, main_pair)
    log(f"(b) {b['wall_s']:.1f} s")
    figures.update(a=a, b={"wall_s": b["wall_s"]})

    from stack import running_postgres, running_redis

    c: dict[str, dict] = {}
    scaling: dict[int, dict] = {}
    with running_postgres() as pg:
        with Deployment(work, inputs, "local", pg, slots=2, poll_s=args.poll) as dep:
            log("(c) LocalExecutor, parallelism 2: landing")
            c["LocalExecutor (parallelism 2)"] = dep.land(
                {n: inputs["checkpoints"][n] for n in main_pair}, "pair")
            if not args.skip_scaling:
                cpus = [n for n in inputs["checkpoints"] if n.startswith("cpu-float-")]
                for count in (1, 2, 4):
                    log(f"(c) LocalExecutor: {count} CPU checkpoint(s) landing at once")
                    scaling[count] = dep.land({n: inputs["checkpoints"][n]
                                               for n in cpus[:count]}, f"scale{count}")
        if not args.skip_celery:
            # The worker preloads TensorFlow and Great Expectations before its pool forks
            # (include/deploy/celery_worker.py); the same worker without it, side by side.
            variants = [("Celery worker (concurrency 2)", "1")]
            if not args.skip_preload_off:
                variants.append(("Celery worker (concurrency 2), no preload", "0"))
            with running_redis() as redis:
                for name, preload in variants:
                    with Deployment(work, inputs, "celery", pg, redis, slots=2,
                                    poll_s=args.poll,
                                    env={"MOBILEDET_WORKER_PRELOAD": preload}) as dep:
                        log(f"(c) {name}: landing")
                        c[name] = dep.land({n: inputs["checkpoints"][n] for n in main_pair},
                                           "pair")

    throughput = None if args.skip_throughput else eval_throughput(work, args)

    # ---------------------------------------------------------------------------- the table
    rows = [["(a) by hand, CLI verbs one after another", f"{a['wall_s']:.1f}", "1.00x", "-",
             "-", "-"],
            ["(b) mobiledet run (dag.test)", f"{b['wall_s']:.1f}", ratio(b["wall_s"],
                                                                       a["wall_s"]),
             "-", "-", "-"]]
    for name, r in c.items():
        rows.append([f"(c) {name}", f"{r['wall_s']:.1f}", ratio(r["wall_s"], a["wall_s"]),
                     f"{r['overhead_s']:.1f} ({r['overhead_s'] / r['wall_s']:.0%})",
                     f"{r['landing_to_first_task_s']:.1f}", f"{r['idle_slot_s']:.0f}"])
    size = f"{args.size} px, multiplier {args.multiplier}"
    print()
    print(f"landing to published: 1 CPU float + 1 EdgeTPU QAT checkpoint ({n_models} models, "
          f"{size}, {args.images} evaluation images, calibration {args.calibration_count}, "
          f"benchmark {args.benchmark_runs} runs)")
    print(format_table(rows, ["how", "seconds", "vs (a)", "orchestration overhead s",
                              "landing to first task s", "idle slot-s"]))
    print("overhead = (sum of task instance durations - sum of the stages' own wall time) / 2 "
          "slots; idle slot-s = 2 x wall - sum of task durations (slots waiting on the "
          "dependency chain or the scheduler)")
    for name, r in c.items():
        used = r.get("component_cpu_s") or {}
        print(f"Airflow's own CPU during (c) {name}: {sum(used.values()):.1f} s ("
              + ", ".join(f"{k} {v:.1f}" for k, v in used.items()) + ")")
    if scaling:
        srows = []
        for count, r in scaling.items():
            srows.append([count, r["models"], f"{r['wall_s']:.1f}",
                          f"{r['wall_s'] / max(1, r['models']):.1f}", r["runs"],
                          f"{r['landing_to_first_task_s']:.1f}",
                          f"{r['overhead_s'] / r['wall_s']:.0%}"])
        print()
        print("LocalExecutor (parallelism 2): MobileDet-CPU float checkpoints landing at once")
        print(format_table(srows, ["checkpoints", "models", "landing to last publish s",
                                   "s per model", "DAG runs", "landing to first task s",
                                   "overhead"]))
    part_rows = []
    first = next(iter(c.values()), None)
    if first:
        from include.pipeline import costs
        for stage, t in costs.totals(first["records"]).items():
            part_rows.append([stage, t["tasks"], f"{t['wall_s']:.1f}", f"{t['cpu_s']:.1f}",
                              f"{t['peak_rss_mb']:.0f}"])
        print()
        print("where the time went ((c) LocalExecutor; per stage, from the cost records)")
        print(format_table(part_rows, ["stage", "tasks", "wall s", "CPU s", "peak RSS MB"]))
        print("parts: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                    costs.parts_total(first["records"]).items() if v >= 0.5))
        sizing = worker_sizing(first["records"])
        figures["sizing"] = sizing
        print(f"\nworker sizing from these figures: heavy tasks (export, convert, check, "
              f"edgetpu) peak at {sizing['peak_rss_mb']:.0f} MB RSS and use "
              f"{sizing['cores_per_task']:.2f} cores on average ({sizing['cores']} cores, "
              f"{sizing['memory_mb'] / 1024:.1f} GiB here): concurrency = min(cores / cores per "
              f"task, (RAM - {RESERVED_MB} MB for Airflow) / peak RSS) = min("
              f"{sizing['by_cpu']}, {sizing['by_memory']}) = {sizing['concurrency']}; pool "
              "slots = the sum over the workers")
    if throughput is not None:
        print(f"\nevaluation throughput / interpreter throughput (2 threads, decoded once, "
              f"worst of float32 and int8): {throughput:.2f}")

    # ---------------------------------------------------------------------------- targets
    missed, reached = [], []

    def target(ok: bool, text: str):
        (reached if ok else missed).append(text)

    for name, r in c.items():
        if name in NOT_TARGETS:   # the same worker with the preload off: for comparison
            print(f"figure:  (c) {name} {r['wall_s'] / a['wall_s']:.2f}x of (a)")
            continue
        target(r["wall_s"] <= TARGETS["c_vs_a"] * a["wall_s"],
               f"(c) {name} {r['wall_s'] / a['wall_s']:.2f}x of (a) (target <= 0.6x)")
        target(r["overhead_s"] < TARGETS["overhead"] * r["wall_s"],
               f"(c) {name} orchestration overhead {r['overhead_s'] / r['wall_s']:.1%} of its "
               "wall (target < 10%)")
        target(r["landing_to_first_task_s"] < TARGETS["landing_s"],
               f"(c) {name} landing to first task {r['landing_to_first_task_s']:.1f} s "
               "(target < 30 s)")
    if 1 in scaling and 4 in scaling:
        one = scaling[1]["wall_s"] / scaling[1]["models"]
        four = scaling[4]["wall_s"] / scaling[4]["models"]
        target(four <= (1 + TARGETS["per_model_growth"]) * one,
               f"time per model with 4 checkpoints {four:.1f} s vs {one:.1f} s with 1 "
               f"({four / one:.2f}x, target <= 1.15x)")
    if throughput is not None:
        target(throughput >= TARGETS["eval_throughput"],
               f"evaluation throughput {throughput:.2f}x the interpreter's (target >= 0.95x)")
    print()
    for text in reached:
        print(f"reached: {text}")
    for text in missed:
        print(f"MISSED:  {text}")
    if args.json_out:
        for r in list(c.values()) + list(scaling.values()):
            r.pop("records", None)
        figures.update(c=c, scaling=scaling, throughput=throughput, missed=missed)
        Path(args.json_out).write_text(json.dumps(figures, indent=1, default=str))
    return 1 if missed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
