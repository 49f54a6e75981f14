"""Long-running processes, started and stopped by their process id.

`ManagedProcess` runs one command in its own process group, logging to a file, and stops the
whole group (and the children it was seen with) by id: `stop_signal`, a bounded wait, then
SIGKILL. `stop_all` stops several at once. The Airflow deployment (include/deploy/components.py)
starts its components with it; the tests use it for PostgreSQL, Redis and the S3 server too.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from include.errors import ServiceError

STOP_TIMEOUT_S = 30


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, chars: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - chars))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # psutil.NoSuchProcess, AccessDenied, ...
        return False


def descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:
        return []


def _group_members(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid`."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class ManagedProcess:
    """One long-running command in its own process group, logging to `log_path`.

    `stop()` sends `stop_signal` to the whole group (the command's children too), waits at most
    `stop_timeout` seconds, then SIGKILLs whatever is left of the group and of the children it
    had. `user` runs the command as another account (e.g. PostgreSQL as ``postgres``).
    """

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = STOP_TIMEOUT_S
    popen: subprocess.Popen | None = field(default=None, repr=False)
    known_pids: set = field(default_factory=set, repr=False)
    signalled_at: float | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> "ManagedProcess":
        if self.popen is not None:
            raise ServiceError(f"{self.name} is already started (pid {self.pid}).",
                               fix="stop it before starting it again.")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab", buffering=0)
        kwargs = {}
        if self.user:
            kwargs.update(user=self.user, group=self.user, extra_groups=[])
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                cwd=str(self.cwd) if self.cwd else None, start_new_session=True, **kwargs)
        except OSError as exc:
            raise ServiceError(f"cannot start {self.name} ({self.argv[0]}): {exc}",
                               where=self.name, fix="check that the program is installed.") \
                from exc
        finally:
            log.close()
        return self

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def restart(self) -> "ManagedProcess":
        """Stop the process group (as `stop`), then start the command again with a new pid."""
        self.stop()
        left = self.leftovers()
        if left:
            raise ServiceError(f"{self.name} did not stop: pids {left} are still alive.",
                               where=self.name, fix="kill them, then start it again.")
        self.popen, self.signalled_at = None, None
        self.known_pids = set()
        return self.start()

    def remember_children(self) -> None:
        """Note the current children, so that `stop` also ends those that left the group."""
        if self.running():
            self.known_pids.update(descendants(self.pid))

    def log_tail(self, chars: int = 2000) -> str:
        return tail(self.log_path, chars)

    def terminate(self) -> None:
        """Send `stop_signal` to the process group once, without waiting (see `stop`)."""
        if self.popen is None or self.popen.poll() is not None or self.signalled_at:
            return
        self.remember_children()
        try:
            os.killpg(self.popen.pid, self.stop_signal)
        except (ProcessLookupError, PermissionError):
            _signal(self.popen.pid, self.stop_signal)
        self.signalled_at = time.monotonic()

    def stop(self) -> int | None:
        """Stop the process group by id; returns the exit code (None if never started).

        `stop_signal` to the group, at most `stop_timeout` seconds for the process to exit and
        a third of that for the rest of its group, then SIGKILL to whatever is left."""
        if self.popen is None:
            return None
        pid = self.popen.pid
        self.terminate()
        if self.popen.poll() is None:
            waited = time.monotonic() - (self.signalled_at or time.monotonic())
            try:
                self.popen.wait(max(0.1, self.stop_timeout - waited))
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + max(1.0, self.stop_timeout / 3)
        while time.monotonic() < deadline and self.leftovers(pid):
            time.sleep(0.2)
        left = self.leftovers(pid)
        for other in left:
            _signal(other, signal.SIGKILL)
        if left:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + 5  # SIGKILL is delivered asynchronously
            while time.monotonic() < deadline and self.leftovers(pid):
                time.sleep(0.05)
        try:
            code = self.popen.wait(10)
        except subprocess.TimeoutExpired:
            code = None
        return code

    def leftovers(self, pid: int | None = None) -> list[int]:
        """Processes of this component still alive: its group, and children it was seen with."""
        pid = pid or self.pid
        if pid is None:
            return []
        left = set(_group_members(pid))
        left.update(p for p in self.known_pids if alive(p))
        if self.popen is not None and self.popen.poll() is None:
            left.add(pid)
        return sorted(left)


def stop_all(processes: Iterable[ManagedProcess]) -> dict[str, int | None]:
    """Stop processes (signalled all at once, then waited for in the reverse order of their
    start); each one is tried, whatever fails."""
    processes = list(processes)
    for proc in reversed(processes):
        try:
            proc.terminate()
        except Exception as exc:  # stop() below tries again, then SIGKILLs
            print(f"[deploy] signalling {proc.name} (pid {proc.pid}) failed: {exc}",
                  file=sys.stderr)
    codes = {}
    for proc in reversed(processes):
        try:
            codes[proc.name] = proc.stop()
        except Exception as exc:  # keep stopping the others
            codes[proc.name] = None
            print(f"[deploy] stopping {proc.name} (pid {proc.pid}) failed: {exc}",
                  file=sys.stderr)
    return codes


