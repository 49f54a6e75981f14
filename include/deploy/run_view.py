"""The live view of one mobiledet_convert run: a line per step of the pipeline, with its state
and time, fed with the run's task instances.

    plan · export · one line per model (its convert and check) · gate · search · publish · report

On a terminal the lines are one rich table redrawn in place (rich.live); anywhere else (a pipe,
a CI log, a test) each line is printed once per change of its state, so a run leaves a short,
readable record. Task instances come as dicts in the shape of Airflow's REST API
(`task_id`, `map_index`, `rendered_map_index`, `state`, `start_date`, `end_date`; dates as
datetimes or ISO strings): from the metadata DB for `mobiledet run` (include/deploy/live_run.py),
from the REST API for `mobiledet run --airflow`.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Iterable

#: the pipeline's steps, in the order they run; helper tasks are shown with the step they serve
STEPS = ("plan", "export", "model", "gate", "search", "publish", "report")
FOLDED = {"jobs": "export", "search_jobs": "search"}
MODEL_GROUP = "model"            # the mapped task group: one line per model
DONE = ("success", "failed", "upstream_failed", "skipped", "removed")
ACTIVE = ("running", "queued", "up_for_retry", "up_for_reschedule", "deferred", "restarting")
WORDS = {"waiting": "waiting", "running": "running", "success": "done", "failed": "FAILED",
         "upstream_failed": "not run (an earlier step failed)", "skipped": "nothing to do"}
SYMBOLS = {"waiting": ("·", "dim"), "success": ("✓", "green"), "failed": ("✗", "bold red"),
           "upstream_failed": ("-", "yellow"), "skipped": ("-", "dim")}


def _when(value) -> dt.datetime | None:
    """A TI's date: a datetime, or an ISO string (the REST API's; SQLite's, naive UTC)."""
    if value is not None and not isinstance(value, dt.datetime):
        try:
            value = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}s" if value < 60 else f"{int(value) // 60}m{int(value) % 60:02d}s"


@dataclass
class Line:
    """One line of the view: a step, or one model of the mapped group (its parts in order)."""

    key: tuple
    label: str
    tis: dict = field(default_factory=dict)    # (task_id, map_index) -> TI dict

    @property
    def state(self) -> str:
        states = [ti.get("state") or "waiting" for ti in self.tis.values()]
        if any(s == "failed" for s in states):
            return "failed"
        if any(s in ACTIVE for s in states):
            return "running"
        if states and all(s in DONE for s in states):
            if any(s == "success" for s in states):
                return "success"
            if any(s == "upstream_failed" for s in states):
                return "upstream_failed"
            return "skipped"
        if any(s == "success" for s in states):
            return "running"       # some parts done, the next not started yet
        return "waiting"

    def seconds(self, now: dt.datetime) -> float | None:
        """From the first start of its tasks to the last end (to now while it runs)."""
        started = [ti for ti in self.tis.values() if _when(ti.get("start_date"))]
        if not started:
            return None
        begin = min(_when(ti["start_date"]) for ti in started)
        ends = [e for e in (_when(ti.get("end_date")) for ti in started) if e]
        end = now if self.state == "running" or not ends else max(ends)
        return max(0.0, (end - begin).total_seconds())

    def detail(self) -> str:
        """Model lines: each part with its state and time; mapped steps: how many are done."""
        if self.key[0] == MODEL_GROUP:
            parts = []
            for (task_id, _), ti in sorted(self.tis.items(), key=lambda kv: _part_order(kv[0])):
                state = ti.get("state") or "waiting"
                took = _duration_of(ti)
                parts.append(f"{task_id.split('.', 1)[-1]} {WORDS.get(state, state)}"
                             + (f" {_seconds(took)}" if took is not None and state in DONE
                                else ""))
            return ", ".join(parts)
        own = [ti for (task_id, _), ti in self.tis.items() if task_id == self.key[0]]
        mapped = [ti for (task_id, index), ti in self.tis.items()
                  if task_id == self.key[0] and index not in (-1, None)]
        if len(mapped) > 1:
            done = sum(1 for ti in mapped if ti.get("state") == "success")
            return f"{done}/{len(mapped)} done"
        if own and all(ti.get("state") == "skipped" for ti in own) and self.state == "success":
            return f"no {self.key[0]} needed"    # a mapped step with nothing to map over
        return ""


def _part_order(key: tuple) -> tuple:
    task_id = key[0]
    return (0 if task_id.endswith(".convert") else 1, task_id)


def _duration_of(ti: dict) -> float | None:
    start, end = _when(ti.get("start_date")), _when(ti.get("end_date"))
    return (end - start).total_seconds() if start and end else None


def group_lines(tis: Iterable[dict]) -> list[Line]:
    """The view's lines, in the pipeline's order, from a run's task instances."""
    lines: dict[tuple, Line] = {}
    expanded_models = False
    tis = list(tis)
    for ti in tis:
        if ti["task_id"].startswith(MODEL_GROUP + ".") and ti.get("map_index", -1) not in (-1, None):
            expanded_models = True
    for ti in tis:
        task_id, index = ti["task_id"], ti.get("map_index", -1)
        if task_id.startswith(MODEL_GROUP + "."):
            if index in (-1, None):
                if expanded_models:
                    continue          # the mapped group's placeholder, before expansion
                key, label = (MODEL_GROUP, -1), "models"
            else:
                key = (MODEL_GROUP, index)
                rendered = ti.get("rendered_map_index")
                # the job's name ("edgetpu/int8") is rendered as its task runs; until then
                # Airflow shows the bare index
                label = rendered if rendered and rendered != str(index) else f"model {index}"
        else:
            step = FOLDED.get(task_id, task_id)
            key, label = (step, None), step
        line = lines.setdefault(key, Line(key, label))
        if key[0] == MODEL_GROUP and not label.startswith("model "):
            line.label = label          # the rendered name arrives once the task ran
        line.tis[(task_id, index)] = ti
    # a model is decided when every task of the group ran for it: the group's tasks are not
    # all created at once, so a part not created yet counts as waiting
    parts = {ti["task_id"] for ti in tis if ti["task_id"].startswith(MODEL_GROUP + ".")}
    for (step, index), line in lines.items():
        if step == MODEL_GROUP and index != -1:
            for task_id in parts:
                line.tis.setdefault((task_id, index), {"task_id": task_id, "map_index": index,
                                                       "state": None})
    for line in lines.values():
        # a mapped step that expanded: its placeholder (map index -1) is not a task to wait on
        if any(i not in (-1, None) for _, i in line.tis):
            line.tis = {k: v for k, v in line.tis.items() if k[1] not in (-1, None)}

    def order(line: Line):
        step = line.key[0]
        rank = STEPS.index(step) if step in STEPS else len(STEPS)
        return (rank, line.key[1] if isinstance(line.key[1], int) else -1, line.label)

    return sorted(lines.values(), key=order)


class RunView:
    """Task instances in, the view out (to `file`): redrawn in place on a terminal, one
    printed line per state change otherwise (`plain`). Use as a context manager; `update`
    takes every TI of the run, `observe` one changed TI (the REST path)."""

    def __init__(self, file: IO[str], *, plain: bool | None = None, title: str = ""):
        from rich.console import Console

        self.console = Console(file=file, highlight=False, soft_wrap=False,
                               force_terminal=None if plain is None else not plain)
        self.plain = not self.console.is_terminal if plain is None else plain
        self.title = title
        self.started = time.monotonic()
        self._tis: dict[tuple, dict] = {}
        self._printed: dict[tuple, str] = {}
        self._lock = threading.Lock()
        self._live = None

    # -- feeding ------------------------------------------------------------------------------
    def update(self, tis: Iterable[dict]) -> None:
        with self._lock:
            for ti in tis:
                self._tis[(ti["task_id"], ti.get("map_index", -1))] = ti
            if self.plain:
                self._print_changes()
        # on a terminal, rich's refresh thread draws the new state (render) four times a second

    def observe(self, ti: dict) -> None:
        self.update([ti])

    def lines(self) -> list[Line]:
        with self._lock:
            tis = list(self._tis.values())
        return group_lines(tis)

    # -- showing ------------------------------------------------------------------------------
    def _print_changes(self) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        for line in group_lines(self._tis.values()):     # the caller holds the lock
            state = line.state
            if state == "waiting" or self._printed.get(line.key) == state:
                continue
            if line.key[0] == MODEL_GROUP and state not in DONE:
                continue     # a model gets one line, when it is decided (its name known)
            self._printed[line.key] = state
            took = line.seconds(now) if state in DONE else None
            detail = line.detail()
            text = f"{time.monotonic() - self.started:5.0f}s  {line.label:<22} " \
                   f"{WORDS.get(state, state)}"
            if took is not None:
                text += f" in {_seconds(took)}"
            if detail and state != "running":
                text += f"  ({detail})"
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def render(self):
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        now = dt.datetime.now(dt.timezone.utc)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=1)
        grid.add_column(min_width=22, no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(justify="right")
        if self.title:
            grid.add_row("", Text(self.title, style="bold"), "", "")
        for line in self.lines():
            state = line.state
            if state == "running":
                mark = Spinner("dots", style="cyan")
            else:
                char, style = SYMBOLS.get(state, ("?", ""))
                mark = Text(char, style=style)
            word = WORDS.get(state, state)
            detail = line.detail()
            grid.add_row(mark, Text(line.label),
                         Text(word + (f"  {detail}" if detail else ""),
                              style="red" if state == "failed" else "dim"
                              if state in ("waiting", "skipped") else ""),
                         Text(_seconds(line.seconds(now))))
        return grid

    def __enter__(self) -> "RunView":
        if not self.plain:
            from rich.live import Live

            # the tasks' own output is not redirected by rich: it goes to the log file
            self._live = Live(self.render(), console=self.console, refresh_per_second=4,
                              transient=False, redirect_stdout=False, redirect_stderr=False,
                              get_renderable=self.render)
            self._live.start()
        elif self.title:
            self.console.print(self.title, markup=False, highlight=False)
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()          # draws the last state, which stays on the screen
            self._live = None
        else:
            with self._lock:
                self._print_changes()
