"""Printing helpers shared by every CLI verb: JSON, plain tables (rich), quiet native stderr.

Progress bars are include/progress.py (tqdm)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
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
    """A plain-text table a person can read at a glance (rich's table layout, ASCII only, no
    colour): the header, a line of dashes, one line per row. Cells are text, never markup."""
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=_plain_box(), show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
                  header_style="", highlight=False)
    for header in headers:
        table.add_column(Text(str(header)), no_wrap=True)
    for row in rows:
        table.add_row(*(Text("" if v is None else str(v)) for v in row))
    out = io.StringIO()
    Console(file=out, width=100_000, color_system=None, force_terminal=False,
            highlight=False, emoji=False, markup=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def _plain_box():
    from rich.box import Box

    # top, head, head row (under the header: dashes), mid, row, foot row, foot, bottom
    return Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)


def verbose(environ=None) -> bool:
    """MOBILEDET_VERBOSE=1 keeps TensorFlow's native start-up lines (CUDA probing, oneDNN and
    CPU-feature notices) in task and worker logs; by default they are dropped (the setting
    is read from include/settings.py)."""
    from include.settings import settings

    return settings(environ).verbose


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
