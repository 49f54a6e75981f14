"""Progress of long work on stderr (tqdm): a bar on a terminal, plain lines in a log.

    from include.progress import progress
    for item in progress(items, desc="synth", unit="img"): ...

On a terminal `progress` is tqdm's own bar. Where stderr is a file (an Airflow task log, CI,
the log file of `mobiledet run`) a bar redrawn with carriage returns would become one endless
line, so `LogProgress` prints one plain line at least every `interval` seconds and one at the
end instead.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

PROGRESS_INTERVAL_S = 30.0


def progress(iterable=None, total=None, desc="", unit="it", disable=None,
             interval: float = PROGRESS_INTERVAL_S):
    """A tqdm bar on a terminal, LogProgress otherwise; `disable=True` prints nothing."""
    if disable is True:
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                    dynamic_ncols=True)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, interval=interval)


def duration(seconds: float) -> str:
    """1m10s, 42s."""
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class LogProgress(tqdm):
    """tqdm for a log file: one plain line at least every `interval` seconds of `clock` and
    one when it closes: "desc: n/total unit (pct%), rate unit/s, ETA ..., postfix".

    tqdm counts, iterates and formats the postfix; `display`, tqdm's documented hook for other
    front ends, draws nothing: the lines come from `update` (when `interval` has passed) and
    from `close`."""

    monitor_interval = 0   # no tqdm monitor thread in task processes

    def __init__(self, iterable=None, *, total=None, desc="", unit="it",
                 interval: float = PROGRESS_INTERVAL_S, file=None, clock=time.monotonic):
        self.clock, self.interval = clock, interval
        self.started = self.last = clock()
        # leave=False: tqdm's close() then calls display(msg="") once, which writes the last
        # line (with leave=True it would add an empty line after it)
        super().__init__(iterable, total=total, desc=desc, unit=unit, file=file or sys.stderr,
                         mininterval=interval, miniters=1, smoothing=0, leave=False,
                         ascii=True, dynamic_ncols=False)

    def update(self, n=1):
        if self.disable:
            return None
        super().update(n)
        if self.clock() - self.last >= self.interval:
            self.write_line()
        return None

    def display(self, msg=None, pos=None):
        if msg == "":
            self.write_line(final=True)
        return False

    def write_line(self, final: bool = False) -> None:
        now = self.clock()
        self.last = now
        elapsed = now - self.started
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        parts = [f"{self.desc}: {done} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.2f} {self.unit}/s")
        if final:
            parts.append(f"done in {duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {duration((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        self.fp.write(", ".join(parts) + "\n")
        self.fp.flush()
