"""Printing helpers shared by every CLI verb: JSON, plain tables, progress bars."""
from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence


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


def progress(iterable=None, total=None, desc="", unit="it", disable=None):
    """A tqdm progress bar on stderr; silent when stderr is not a terminal unless forced."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True)
