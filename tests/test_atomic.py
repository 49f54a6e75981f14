"""include/atomic.py: a file or folder appears under its final name complete or not at all."""
from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from include import atomic
from include.atomic import (atomic_path, copy_atomic, move_atomic, partial_name, staged_dir,
                            write_bytes_atomic, write_json_atomic, write_text_atomic)

SIZE = 1 << 20          # 1 MiB per version: big enough that a torn write would show
WRITERS = 4
ROUNDS = 15


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_writer_that_raises_leaves_neither_final_nor_temp(tmp_path):
    out = tmp_path / "sub" / "model.tflite"
    with pytest.raises(RuntimeError, match="converter died"):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half a model")
            raise RuntimeError("converter died")
    assert not out.exists()
    assert _leftovers(out.parent) == []


def test_a_writer_that_never_created_its_temp_file_fails_cleanly(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "x.json"):
            raise ValueError("before writing")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_only_when_the_new_one_is_complete(tmp_path):
    out = tmp_path / "report.json"
    out.write_text("old")
    with atomic_path(out) as tmp:
        tmp.write_text("new, being writ")
        assert out.read_text() == "old"          # a reader meanwhile sees the old version
        with open(tmp, "a") as fh:
            fh.write("ten")
    assert out.read_text() == "new, being written"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out) as tmp:
            tmp.write_text("never finished")
            raise KeyboardInterrupt
    assert out.read_text() == "new, being written"
    assert _leftovers(tmp_path) == []


def test_suffix_is_kept_for_writers_that_choose_the_format_by_name(tmp_path):
    out = tmp_path / "arrays.npz"
    with atomic_path(out, suffix=".npz") as tmp:
        assert tmp.name.endswith(".npz") and tmp.name.startswith(".arrays.npz.partial-")
        np.savez(tmp, a=np.arange(3))
    assert np.load(out)["a"].tolist() == [0, 1, 2]
    assert _leftovers(tmp_path) == []


def test_the_writers_for_text_bytes_json_and_copies(tmp_path):
    assert write_text_atomic(tmp_path / "a.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    assert write_bytes_atomic(tmp_path / "b.bin", b"\0\1").read_bytes() == b"\0\1"
    doc = {"ap": np.float32(0.5), "counts": np.arange(2), "path": tmp_path}
    written = json.loads(write_json_atomic(tmp_path / "c.json", doc).read_text())
    assert written == {"ap": 0.5, "counts": [0, 1], "path": str(tmp_path)}
    assert copy_atomic(tmp_path / "b.bin", tmp_path / "d" / "b.bin").read_bytes() == b"\0\1"
    moved = move_atomic(tmp_path / "a.txt", tmp_path / "e" / "a.txt")
    assert moved.read_text(encoding="utf-8") == "héllo" and not (tmp_path / "a.txt").exists()
    assert _leftovers(tmp_path) == []


def test_move_across_file_systems_copies_then_renames(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system (/dev/shm)")
    src = write_bytes_atomic(shm / f"mobiledet-test-{os.getpid()}.bin", b"x" * 1000)
    try:
        dst = move_atomic(src, tmp_path / "out.bin")
    finally:
        src.unlink(missing_ok=True)
    assert dst.read_bytes() == b"x" * 1000 and not src.exists()
    assert _leftovers(tmp_path) == []


def test_move_of_a_missing_file_raises_instead_of_copying(tmp_path):
    with pytest.raises(FileNotFoundError):
        move_atomic(tmp_path / "missing", tmp_path / "out")


def test_partial_names_are_hidden_unique_and_beside_the_final_name(tmp_path):
    names = {partial_name(tmp_path / "m.tflite") for _ in range(100)}
    assert len(names) == 100
    assert all(Path(n).parent == tmp_path and Path(n).name.startswith(".m.tflite.partial-")
               for n in names)


# -- many writers of one path -----------------------------------------------------------------
def _write_versions(path: str, writer: int, rounds: int) -> None:
    for r in range(rounds):
        tag = bytes([writer * 16 + r % 16])
        write_bytes_atomic(path, tag * SIZE)


def _check_whole(data: bytes) -> None:
    assert len(data) == SIZE, f"torn file: {len(data)} bytes"
    assert data.count(data[:1]) == SIZE, "a mix of two versions"


def _read_while(path: Path, running: threading.Event, seen: list) -> None:
    while running.is_set():
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        _check_whole(data)
        seen.append(data[0])


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_concurrent_writers_of_one_file_leave_one_complete_version(tmp_path, kind):
    out = tmp_path / "model.tflite"
    running, seen = threading.Event(), []
    running.set()
    reader = threading.Thread(target=_read_while, args=(out, running, seen))
    reader.start()
    try:
        if kind == "threads":
            workers = [threading.Thread(target=_write_versions, args=(str(out), w, ROUNDS))
                       for w in range(WRITERS)]
        else:
            ctx = multiprocessing.get_context("fork")
            workers = [ctx.Process(target=_write_versions, args=(str(out), w, ROUNDS))
                       for w in range(WRITERS)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
    finally:
        running.clear()
        reader.join()
    if kind == "processes":
        assert [w.exitcode for w in workers] == [0] * WRITERS
    _check_whole(out.read_bytes())
    assert out.read_bytes()[0] % 16 == ROUNDS - 1     # some writer's last version
    assert seen, "the reader never saw the file"
    assert _leftovers(tmp_path) == []


# -- folders -----------------------------------------------------------------------------------
def test_staged_dir_replaces_an_existing_folder_only_when_complete(tmp_path):
    dest = tmp_path / "ckpt"
    dest.mkdir()
    (dest / "stale.h5").write_text("old weights")
    (dest / "checkpoint.json").write_text("old")
    with staged_dir(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".ckpt.partial-")
        (tmp / "weights.h5").write_text("new weights")
        assert sorted(p.name for p in dest.iterdir()) == ["checkpoint.json", "stale.h5"]
        (tmp / "checkpoint.json").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["checkpoint.json", "weights.h5"]
    assert (dest / "checkpoint.json").read_text() == "new"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_staged_dir_that_raises_keeps_the_old_folder(tmp_path, monkeypatch, swap):
    if swap == "two renames":
        monkeypatch.setattr(atomic, "_renameat2", None)   # as on a platform without renameat2
    dest = tmp_path / "data"
    with staged_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(OSError, match="disk full"):
        with staged_dir(dest) as tmp:
            (tmp / "a").write_text("2")
            raise OSError("disk full")
    assert [(p.name, p.read_text()) for p in dest.iterdir()] == [("a", "1")]
    with staged_dir(dest) as tmp:
        (tmp / "b").write_text("3")
    assert [(p.name, p.read_text()) for p in dest.iterdir()] == [("b", "3")]
    assert _leftovers(tmp_path) == []


def test_staged_dir_replaces_an_empty_folder_and_a_file(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "was_a_file").write_text("x")
    for name in ("empty", "was_a_file"):
        with staged_dir(tmp_path / name) as tmp:
            (tmp / "f").write_text(name)
        assert (tmp_path / name / "f").read_text() == name
    assert _leftovers(tmp_path) == []


def _stage_versions(dest: str, writer: int, rounds: int) -> None:
    for r in range(rounds):
        with staged_dir(dest) as tmp:
            for i in range(5):
                (tmp / f"part{i}").write_text(f"{writer}:{r}")
            (tmp / "nested").mkdir()
            (tmp / "nested" / "marker").write_text(f"{writer}:{r}")


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_concurrent_staged_dirs_leave_one_complete_folder(tmp_path, monkeypatch, swap):
    if swap == "two renames":
        monkeypatch.setattr(atomic, "_renameat2", None)   # forked children inherit it
    dest = tmp_path / "dataset"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_stage_versions, args=(str(dest), w, ROUNDS))
               for w in range(WRITERS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * WRITERS
    names = sorted(p.name for p in dest.iterdir())
    assert names == ["nested"] + [f"part{i}" for i in range(5)]
    versions = {(dest / n).read_text() for n in names if n != "nested"}
    versions.add((dest / "nested" / "marker").read_text())
    assert len(versions) == 1, f"a mix of versions: {versions}"
    assert versions.pop().endswith(f":{ROUNDS - 1}")
    assert _leftovers(tmp_path) == []
