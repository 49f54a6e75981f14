"""What a task costs: wall time, CPU time and peak resident memory, split into its parts.

Every step of `include.pipeline.steps` measures itself with a :class:`Meter`::

    with task_meter("check", run, model) as meter:
        with meter.part("download"):
            ...
        with meter.part("evaluation"):
            ...

and, when it ends (passed or failed), writes one record to the store under
``runs/<run_id>/costs/<stage>[-<ckpt_id>][-<precision>].cost.json`` (never ``report.json``:
readers look for the run report by that name). The report stage collects them
into ``report.json`` (key ``stages``), the publish stage into each model's manifest entry
(``metrics.costs``). Records live in the store, not in XCom, so a failed task leaves its figures
too and the report needs no task to hand them on.

The figures:

* ``wall_s``: monotonic clock from the stage's start to its end;
* ``cpu_s``: user + system CPU of this process (every thread) plus that of the child processes
  it waited for (the benchmark subprocess, the Edge TPU compiler);
* ``peak_rss_mb``: the highest resident set size of the process seen while the task ran
  (``/proc/self/statm`` sampled every 20 ms; on Linux the kernel's own high-water mark VmHWM is
  reset at the task's start where permitted, which catches what sampling misses). On a real
  executor (LocalExecutor, Celery, Kubernetes) each task is its own process, so this is the
  task's peak. Under ``dag.test`` / ``mobiledet run`` every task runs in one process, so it is
  the process's peak during that task, including what earlier tasks left loaded (TensorFlow);
  ``pid`` says which process it was;
* ``children_peak_rss_mb``: the largest child process the task waited for (ru_maxrss of
  RUSAGE_CHILDREN, cumulative for the process);
* ``parts``: ``[{name, wall_s, cpu_s, peak_rss_mb, count}]`` in first-use order; parts of the
  same name add up (e.g. several downloads). ``unaccounted_s`` is the wall time outside every
  part. Parts do not nest: a part opened inside another is counted inside the outer one only.

Nothing here imports anything heavy; it runs in the task process before TensorFlow loads.
"""
from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterator

from include.procstat import status_kb

SAMPLE_S = 0.02
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# ------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------
def rss_bytes() -> int:
    """Current resident set size of this process (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _cpu_s() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class _Sampler:
    """One daemon thread per process: while any interval is open, it samples the RSS and raises
    every open interval's peak. Intervals are plain dicts with a "peak" entry."""

    def __init__(self) -> None:
        self._open: list[dict] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> dict:
        interval = {"peak": rss_bytes()}
        with self._lock:
            self._open.append(interval)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mobiledet-rss",
                                                daemon=True)
                self._thread.start()
        self._wake.set()
        return interval

    def close(self, interval: dict) -> int:
        now = rss_bytes()
        with self._lock:
            interval["peak"] = max(interval["peak"], now)
            if interval in self._open:
                self._open.remove(interval)
        return interval["peak"]

    def _run(self) -> None:
        while True:
            with self._lock:
                busy = bool(self._open)
            if not busy:
                self._wake.clear()
                if not self._wake.wait(5.0):   # idle: the thread ends, open() starts another
                    with self._lock:
                        if not self._open:
                            self._thread = None
                            return
                continue
            now = rss_bytes()
            with self._lock:
                for interval in self._open:
                    if now > interval["peak"]:
                        interval["peak"] = now
            time.sleep(SAMPLE_S)


_SAMPLER = _Sampler()


def _mb(n_bytes: float) -> float:
    return round(n_bytes / (1024.0 * 1024.0), 1)


# ------------------------------------------------------------------------------------------
# the meter
# ------------------------------------------------------------------------------------------
class Meter:
    """Measures one task and its parts (see the module docstring)."""

    def __init__(self, stage: str, name: str | None = None, **labels: Any):
        self.stage = stage
        self.name = name or stage
        self.labels = {k: v for k, v in labels.items() if v is not None}
        self.parts: dict[str, dict] = {}
        self._in_part = False
        self._started = None
        self.record: dict | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> "Meter":
        self._hwm_reset = reset_peak_rss()
        self._interval = _SAMPLER.open()
        self._t0 = time.perf_counter()
        self._cpu0 = _cpu_s()
        self._started = datetime.now(timezone.utc)
        return self

    def stop(self, error: BaseException | None = None) -> dict:
        self.record = self._figures(_SAMPLER.close(self._interval), error)
        return self.record

    def snapshot(self) -> dict:
        """The record so far, without stopping (the report task reports itself this way)."""
        record = self._figures(max(self._interval["peak"], rss_bytes()), None)
        record["partial"] = True
        return record

    def _figures(self, peak: int, error: BaseException | None) -> dict:
        wall = time.perf_counter() - self._t0
        cpu = _cpu_s() - self._cpu0
        if self._hwm_reset:
            hwm = status_kb("VmHWM")
            if hwm:
                peak = max(peak, hwm * 1024)
        parts = [{"name": n, "wall_s": round(p["wall_s"], 3), "cpu_s": round(p["cpu_s"], 3),
                  "peak_rss_mb": p["peak_rss_mb"], "count": p["count"]}
                 for n, p in self.parts.items()]
        in_parts = sum(p["wall_s"] for p in self.parts.values())
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        record = {
            "stage": self.stage, "name": self.name, **self.labels,
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "cpu_util": round(cpu / wall, 3) if wall > 0 else None,
            "peak_rss_mb": _mb(peak), "children_peak_rss_mb": _mb(children) if children else None,
            "parts": parts, "parts_wall_s": round(in_parts, 3),
            "unaccounted_s": round(max(0.0, wall - in_parts), 3),
            "started_at": self._started.isoformat(),
            "ended_at": datetime.now(timezone.utc).isoformat(),
            "pid": os.getpid(), "host": socket.gethostname(),
            "peak_rss_source": "VmHWM reset at the task's start, and sampling every "
                               f"{int(SAMPLE_S * 1000)} ms" if self._hwm_reset
                               else f"sampling every {int(SAMPLE_S * 1000)} ms",
            "failed": error is not None,
        }
        if error is not None:
            record["error"] = f"{type(error).__name__}: {error}"[:500]
        return record

    # -- parts --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Time a part of the task; the same name used again adds up."""
        if self._in_part:  # nested: already counted by the outer part
            yield
            return
        self._in_part = True
        interval = _SAMPLER.open()
        t0, cpu0 = time.perf_counter(), _cpu_s()
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
            peak = _SAMPLER.close(interval)
            self._in_part = False
            p = self.parts.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0,
                                             "count": 0})
            p["wall_s"] += wall
            p["cpu_s"] += cpu
            p["peak_rss_mb"] = max(p["peak_rss_mb"], _mb(peak))
            p["count"] += 1

    def rename(self, name: str, new: str) -> None:
        if name in self.parts and new not in self.parts:
            self.parts = {(new if k == name else k): v for k, v in self.parts.items()}

    def split(self, name: str, pieces: dict[str, float]) -> None:
        """Divide the part `name` into named pieces whose seconds another component measured
        (e.g. the calibration inside a conversion): their wall seconds move from `name` to
        each piece, CPU seconds in proportion."""
        p = self.parts.get(name)
        if not p:
            return
        total = p["wall_s"]
        moved = 0.0
        for piece, seconds in pieces.items():
            if not isinstance(seconds, (int, float)) or seconds <= 0 or moved >= total:
                continue
            seconds = min(float(seconds), total - moved)
            share = seconds / total if total > 0 else 0.0
            q = self.parts.setdefault(piece, {"wall_s": 0.0, "cpu_s": 0.0,
                                              "peak_rss_mb": p["peak_rss_mb"], "count": 0})
            q["wall_s"] += seconds
            q["cpu_s"] += p["cpu_s"] * share
            q["count"] += 1
            moved += seconds
        p["cpu_s"] -= p["cpu_s"] * (moved / total) if total > 0 else 0.0
        p["wall_s"] -= moved


def _label(item, key: str):
    if item is None:
        return None
    return item.get(key) if isinstance(item, dict) else getattr(item, key, None)


@contextlib.contextmanager
def task_meter(stage: str, run=None, item=None, *, store=None,
               run_id: str | None = None) -> Iterator[Meter]:
    """Measure a step; on the way out (passed or failed) write its record to the store.

    `run`: the run plan (`include.pipeline.plan.RunPlan`: names the store and the run); `item`:
    the checkpoint or job the task works on (its ckpt_id, precision, variant and name label
    the record). Where the store is known only later (the plan step), set `meter.store`. A
    store that refuses the record never fails the task: the figures are lost, the work is not."""
    meter = Meter(stage, _label(item, "name") or _label(item, "ckpt_id") or stage,
                  ckpt_id=_label(item, "ckpt_id"), precision=_label(item, "precision"),
                  variant=_label(item, "variant"))
    meter.store = store
    meter.start()
    error = None
    try:
        yield meter
    except BaseException as exc:
        error = exc
        raise
    finally:
        record = meter.stop(error)
        try:
            save(record, run, store=meter.store, run_id=run_id)
        except Exception:  # noqa: BLE001 - figures are best effort
            pass


def save(record: dict, run=None, *, store=None, run_id: str | None = None) -> str | None:
    """Write a cost record to the run's store. `run`: the run plan, or its JSON."""
    from include.store import layout, open_store

    if isinstance(run, dict):   # the plan as JSON (a task that has not parsed it)
        config = run.get("config") or {}
        run_id = run_id or run.get("run_id")
        if store is None and config.get("store_uri"):
            store = open_store(config["store_uri"], conn_id=config.get("conn_id"))
    elif run is not None:
        run_id = run_id or run.run_id
        store = store if store is not None else run.store
    if not run_id or store is None:
        return None
    key = layout.cost_key(run_id, record["stage"], record.get("ckpt_id"), record.get("precision"))
    return store.write_json(key, record)


# ------------------------------------------------------------------------------------------
# reading them back
# ------------------------------------------------------------------------------------------
STAGE_ORDER = ("plan", "export", "jobs", "convert", "check", "edgetpu", "gate", "publish", "report")


def load(store, run_id: str) -> list[dict]:
    """Every cost record of a run, in pipeline order (stage, then checkpoint and precision)."""
    from include.store import layout

    prefix = layout.costs_prefix(run_id) + "/"
    records = []
    try:
        keys = [k for k in store.list(prefix) if k.endswith(".cost.json")]
    except Exception:  # noqa: BLE001 - no records is not an error
        return []
    for key in keys:
        try:
            doc = store.read_json(key)
        except Exception:  # noqa: BLE001
            continue
        if isinstance(doc, dict) and "wall_s" in doc:
            records.append(doc)

    def order(r):
        stage = r.get("stage")
        return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER),
                str(r.get("ckpt_id") or ""), str(r.get("precision") or ""))
    return sorted(records, key=order)


def brief(record: dict) -> dict:
    """A record as it goes into a manifest: the figures and each part's wall seconds."""
    return {"wall_s": record.get("wall_s"), "cpu_s": record.get("cpu_s"),
            "peak_rss_mb": record.get("peak_rss_mb"),
            "parts": {p["name"]: p["wall_s"] for p in record.get("parts") or []}}


def totals(records: list[dict]) -> dict:
    """Per stage: tasks, summed wall and CPU seconds, the largest peak RSS."""
    out: dict[str, dict] = {}
    for r in records:
        t = out.setdefault(r.get("stage", "?"), {"tasks": 0, "wall_s": 0.0, "cpu_s": 0.0,
                                                 "peak_rss_mb": 0.0})
        t["tasks"] += 1
        t["wall_s"] = round(t["wall_s"] + (r.get("wall_s") or 0.0), 3)
        t["cpu_s"] = round(t["cpu_s"] + (r.get("cpu_s") or 0.0), 3)
        t["peak_rss_mb"] = max(t["peak_rss_mb"], r.get("peak_rss_mb") or 0.0)
    return out


def parts_total(records: list[dict]) -> dict[str, float]:
    """Seconds per part name over every task (where the run's time went)."""
    out: dict[str, float] = {}
    for r in records:
        for p in r.get("parts") or []:
            out[p["name"]] = round(out.get(p["name"], 0.0) + p["wall_s"], 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


class NoMeter:
    """Stands in for a task meter where nobody records costs (an operator in a user's DAG)."""

    parts: dict = {}
    store = None

    @contextlib.contextmanager
    def part(self, name: str):
        yield

    def split(self, name: str, pieces: dict) -> None:
        pass

    def rename(self, name: str, new: str) -> None:
        pass
