"""Printing helpers shared by every CLI verb: JSON, plain tables, progress, quiet stderr."""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from typing import Any, Iterable, Sequence

# Lines TensorFlow's and LiteRT's native code print on start-up or first use: CUDA probing on a
# machine without a GPU, oneDNN and CPU-feature notices, XNNPACK. They say nothing about the
# user's work; `--verbose` shows them.
NATIVE_NOISE = re.compile("|".join([
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
    r"^[IWE]\d{4} [\d:. ]+\s*\d+ (port|cudart_stub|cuda_platform|cuda_executor|cuda_diagnostics|"
    r"cpu_feature_guard|dso_loader|cuda_dnn|cuda_fft|cuda_blas|gpu_device|cuda_driver|"
    r"computation_placer)\.cc:\d+\]",
    r"oneDNN custom operations are on",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"TF-TRT Warning",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
]))
PROGRESS_INTERVAL_S = 30.0


def to_jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays and paths become plain JSON values."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is always installed
        np = None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if np is not None:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=False)


def print_json(obj: Any, file=None) -> None:
    print(dumps(obj), file=file or sys.stdout)


def format_table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A fixed-width text table a person can read at a glance."""
    text_rows = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in text_rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return "\n".join(out)


def progress(iterable=None, total=None, desc="", unit="it", disable=None,
             interval: float = PROGRESS_INTERVAL_S):
    """Progress of long work on stderr: a tqdm bar on a terminal; in a log (Airflow task
    logs, CI) one plain line at least every `interval` seconds and one at the end.
    `disable=True` prints nothing."""
    if disable is True:
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                    dynamic_ncols=True)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, interval=interval)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class LogProgress:
    """The part of tqdm's interface the project uses, as plain lines for a log file."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it",
                 interval: float = PROGRESS_INTERVAL_S, file=None, clock=time.monotonic):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(
            iterable, "__len__") else None)
        self.desc, self.unit, self.interval = desc, unit, interval
        self.file = file or sys.stderr
        self.clock = clock
        self.n = 0
        self.postfix = ""
        self.started = self.last = clock()
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, refresh=True, **values):
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.interval:
            self._line()

    def _line(self, final: bool = False) -> None:
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
            parts.append(f"done in {_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        print(", ".join(parts), file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line(final=True)


VERBOSE_ENV = "MOBILEDET_VERBOSE"
_FALSE = ("", "0", "false", "no", "off")


def env_flag(name: str, default: bool, environ=None) -> bool:
    """An on/off environment setting: unset gives `default`; set, anything but 0, false, no,
    off or empty is on."""
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    return default if value is None else value.strip().lower() not in _FALSE


def verbose(environ=None) -> bool:
    """MOBILEDET_VERBOSE=1 keeps TensorFlow's native start-up lines (CUDA probing, oneDNN and
    CPU-feature notices) in task and worker logs; by default they are dropped."""
    return env_flag(VERBOSE_ENV, False, environ)


@contextlib.contextmanager
def quiet_native_stderr():
    """QuietNativeStderr around a block of heavy work (a task's, a worker's preload), unless
    verbose(); the filter's pump thread ends with the block."""
    if verbose():
        yield
        return
    with QuietNativeStderr():
        yield


class QuietNativeStderr:
    """Drop native start-up noise (NATIVE_NOISE) from this process's stderr, file descriptor 2,
    where C++ code writes it; every other line goes through unchanged, in order.

    fd 2 becomes a pipe read by a thread that forwards what it reads to the original stderr;
    `close()` (or leaving the `with` block) restores fd 2 and flushes what is left.
    """

    def __init__(self, pattern: re.Pattern = NATIVE_NOISE):
        self.pattern = pattern
        self._thread = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self) -> None:
        sys.stderr.flush()
        self._saved = os.dup(2)
        forward = os.dup(self._saved)   # the pump's own copy: close() may run before it starts
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._pump, args=(read, forward), daemon=True,
                                        name="quiet-native-stderr")
        self._thread.start()

    def _pump(self, read: int, forward: int) -> None:
        with os.fdopen(read, "rb") as pipe, os.fdopen(forward, "wb", buffering=0) as out:
            for line in pipe:
                if not self.pattern.search(line.decode("utf-8", "replace")):
                    out.write(line)

    def close(self) -> None:
        if self._thread is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)      # the pipe's last writer is gone: the pump sees EOF
        os.close(self._saved)
        self._thread.join(timeout=5)
        self._thread = None
