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
import errno
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
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        copy_atomic(src, dst)
        src.unlink(missing_ok=True)
    return dst


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_PLACE_ATTEMPTS = 100


def _load_renameat2():
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):   # not Linux, or a libc older than glibc 2.28
        return None


_renameat2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE).

    False when the platform or file system cannot (the caller falls back to two renames);
    FileNotFoundError when one of them is gone.
    """
    if _renameat2 is None:
        return False
    import ctypes

    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT:
        raise FileNotFoundError(err, os.strerror(err), os.fspath(b))
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


class staged_dir:
    """Context manager: build a folder under a temporary name, rename it into place on success.

    An existing destination is replaced only after the new folder is complete: swapped in one
    step where Linux allows it (a reader sees the old folder or the new one), else moved aside
    first (a reader may briefly find no folder, never a partial one). Concurrent writers of the
    same folder each place a complete folder; the last one stays. On error the temporary
    folder is removed and the destination is left as it was.
    """

    def __init__(self, dest):
        self.dest = Path(dest)

    def __enter__(self) -> Path:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.partial-",
                                         dir=self.dest.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._place()
        finally:
            if self.tmp is not None:   # after a swap it holds the old folder (or file)
                _remove(self.tmp)
        return False

    def _place(self):
        aside = []   # old destinations moved out of the way, removed once the new one is in
        try:
            for _ in range(_PLACE_ATTEMPTS):
                try:
                    os.rename(self.tmp, self.dest)   # no destination, or an empty folder
                    self.tmp = None
                    return
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR,
                                         errno.EISDIR):
                        raise
                try:
                    if _exchange(self.tmp, self.dest):
                        return
                    aside.append(Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.old-",
                                                       dir=self.dest.parent)))
                    os.rename(self.dest, aside[-1] / "x")
                except FileNotFoundError:
                    pass   # another writer moved it meanwhile: try again
            raise OSError(errno.EBUSY, f"could not place {self.tmp} at {self.dest} after "
                                       f"{_PLACE_ATTEMPTS} attempts: other writers kept "
                                       "replacing it")
        finally:
            for old in aside:
                _remove(old)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
