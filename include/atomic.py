"""Write-to-a-temporary-name-then-rename, in one place.

Every file or folder the product writes for someone else to read (models, reports, pictures,
datasets, checkpoints, downloads) appears under its final name complete or not at all: it is
built under a unique hidden name in the same folder (same file system, so the rename is
atomic) and `os.replace`d into place. A process killed half way leaves only a hidden
`.NAME.partial-*` file or folder, never a half-written NAME; on error the temporary is removed.

    with atomic_path(out) as tmp:          # any writer that takes a path
        np.savez(tmp, ...)
    write_json_atomic(path, obj)           # JSON (numpy values turned into plain ones)
    write_text_atomic(path, text)
    copy_atomic(src, dst)
    with staged_dir(folder) as tmp:        # a whole folder; an old one is replaced at the end
        (tmp / "a").write_text(...)
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomic", "write_bytes_atomic", "write_json_atomic",
           "copy_atomic", "move_atomic", "staged_dir", "partial_name"]


def partial_name(final) -> str:
    """A unique hidden temporary name beside `final` (not created)."""
    final = os.fspath(final)
    head, tail = os.path.split(final)
    return os.path.join(head, f".{tail}.partial-{os.getpid()}-{os.urandom(4).hex()}")


@contextlib.contextmanager
def atomic_path(final, *, suffix: str = ""):
    """Yield a temporary Path beside `final`; on success it is renamed to `final`.

    `suffix` is appended to the temporary name for writers that choose the format by the
    file's suffix (PIL, np.save).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(partial_name(final) + suffix)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def write_bytes_atomic(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path, obj, *, indent: int | None = 2) -> Path:
    """JSON through the console's encoder (numpy scalars and arrays become plain values)."""
    import json

    from include.console import to_jsonable
    return write_text_atomic(path, json.dumps(to_jsonable(obj), indent=indent))


def copy_atomic(src, dst) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def move_atomic(src, dst) -> Path:
    """Rename `src` to `dst` when they share a file system, else copy then rename."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError:
        copy_atomic(src, dst)
        src.unlink(missing_ok=True)
    return dst


class staged_dir:
    """Context manager: build a folder under a temporary name, rename it into place on success.

    An existing destination is replaced only after the new folder is complete.
    """

    def __init__(self, dest):
        self.dest = Path(dest)

    def __enter__(self) -> Path:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.partial-", dir=self.dest.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        if self.dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.old-", dir=self.dest.parent))
            os.replace(self.dest, old / "x")
            os.replace(self.tmp, self.dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.dest)
        return False
