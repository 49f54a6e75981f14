"""Benchmarks where the models run: a phone over adb, with TFLite's own `benchmark_model`.

`benchmark_on_device(model, serial, delegate=..., benchmark_binary=...)` does what a person does
by hand, with `adb` as Debian (package `adb`) or the Android SDK's platform-tools ship it:

1. ``adb -s SERIAL get-state`` must answer ``device``; offline, unauthorized or missing devices
   fail with adb's own message and the fix (DeviceError);
2. ``adb -s SERIAL shell getprop`` for the phone's model, maker, Android version, SDK level and
   ABI;
3. a fresh folder ``/data/local/tmp/mobiledet-bench-<id>``; ``adb push`` of the model and of the
   user's Android build of ``benchmark_model``; ``chmod 755``;
4. ``adb shell <folder>/benchmark_model --graph=... --num_runs=R --warmup_runs=W
   [--num_threads=T] <delegate flag>`` (DELEGATE_FLAGS), with a time limit: past it the local
   adb is killed and so is the remote process (``pkill -f <folder>/benchmark_model``);
5. ``adb shell rm -rf <folder>`` whatever happened;
6. the output is parsed by `include.quality.device_log.parse_benchmark_log`, so the result has
   the host benchmark's keys plus the delegate that actually ran (a fallback is recorded as a
   fallback) and where it was measured.

`device_record(...)` turns a parsed result into the record kept beside a release's manifest.
No physical device was run while building this; the tests drive it through a stand-in `adb`
that answers with published benchmark_model outputs (tests/fixtures/benchmark_model/).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from include.errors import ConfigError, DataError, DeviceError
from include.quality.device_log import DELEGATES, parse_benchmark_log

# The one table of delegate -> benchmark_model flags (the tool's --help and its README's
# "TFLite delegate parameters"). cpu turns XNNPACK off, so it is the built-in kernels' figure.
DELEGATE_FLAGS = {
    "cpu": ("--use_xnnpack=false",),
    "xnnpack": ("--use_xnnpack=true",),
    "gpu": ("--use_gpu=true",),
    "nnapi": ("--use_nnapi=true",),
    "hexagon": ("--use_hexagon=true",),
}
REMOTE_ROOT = "/data/local/tmp"
REMOTE_BINARY = "benchmark_model"
DEVICE_PROPS = (("model", "ro.product.model"), ("manufacturer", "ro.product.manufacturer"),
                ("android_version", "ro.build.version.release"),
                ("sdk", "ro.build.version.sdk"), ("abi", "ro.product.cpu.abi"))
ADB_STEP_TIMEOUT_S = 120.0
BINARY_WHERE = "--benchmark-binary (or devices[].benchmark_binary in the config)"
BINARY_FIX = ("download the Android build of TFLite's benchmark tool for the phone's ABI "
              "(android_aarch64_benchmark_model for arm64-v8a, android_arm_benchmark_model for "
              "armeabi-v7a; TFLite/LiteRT publish them, or build "
              "//tensorflow/lite/tools/benchmark:benchmark_model with --config=android_arm64) "
              "and pass its path.")
ADB_INSTALL_FIX = ("install adb: `apt-get install adb` (Debian/Ubuntu) or the Android SDK's "
                   "platform-tools, and put it on PATH (or pass its path).")

# Remote benchmark runs this process is waiting for: (adb, serial, remote binary) by local pid.
_RUNNING: dict[int, tuple[str, str, str]] = {}


def _check_delegate(delegate) -> str:
    if delegate not in DELEGATES:
        import difflib

        near = difflib.get_close_matches(str(delegate), DELEGATES, n=1)
        hint = f" Did you mean {near[0]}?" if near else ""
        raise ConfigError(f"unknown delegate {delegate!r}; allowed: {', '.join(DELEGATES)}."
                          + hint, where="--delegate", fix="use one of the allowed delegates.")
    return delegate


def _check_count(value, name: str, flag: str, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}.",
                          where=flag, fix=f"use e.g. {max(minimum, 4)}.")


def find_adb(adb: str = "adb") -> str:
    """The adb executable: a path, or a name looked up on PATH; DeviceError when missing."""
    given = os.fspath(adb)
    if os.sep in given:
        if os.path.isfile(given) and os.access(given, os.X_OK):
            return given
        raise DeviceError("the adb executable given does not exist or is not executable.",
                          where=given, fix=ADB_INSTALL_FIX)
    found = shutil.which(given)
    if not found:
        raise DeviceError(f"`{given}` is not on PATH, so no device can be reached.",
                          where="adb", fix=ADB_INSTALL_FIX)
    return found


def check_binary(path) -> Path:
    """The user's benchmark_model binary; ConfigError naming the flag and config key."""
    if path is None or not str(path).strip():
        raise ConfigError("no benchmark_model binary was given; a device benchmark pushes the "
                          "user's Android build of TFLite's benchmark tool to the phone.",
                          where=BINARY_WHERE, fix=BINARY_FIX)
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise ConfigError(f"the benchmark_model binary {str(path)!r} does not exist.",
                          where=BINARY_WHERE, fix=BINARY_FIX)
    return p


def _adb_message(proc) -> str:
    text = " ".join(((proc.stderr or "") + " " + (proc.stdout or "")).split())
    return text or f"adb exited with code {proc.returncode} and printed nothing"


def _state_fix(message: str, serial: str) -> str:
    low = message.lower()
    if "unauthorized" in low:
        return ("unlock the phone and accept the 'Allow USB debugging?' prompt for this "
                "computer (if none shows, revoke USB debugging authorizations in Developer "
                "options and reconnect); `adb devices` must then list it as 'device'.")
    if "offline" in low:
        return ("reconnect the cable (or `adb reconnect`; `adb kill-server` if it stays "
                "offline) and wait until `adb devices` lists it as 'device'.")
    if "more than one" in low:
        return "pass the serial of one device (`adb devices` lists them)."
    return (f"connect the phone with USB debugging on (Developer options) and check that "
            f"`adb devices` lists {serial}; a phone on the network needs `adb connect HOST:PORT` "
            "first and then that HOST:PORT as its serial.")


class _Adb:
    """`adb -s SERIAL ...` calls; every call's argv is kept in `calls` for the record."""

    def __init__(self, adb: str, serial: str):
        self.adb, self.serial = adb, serial
        self.calls: list[list[str]] = []

    def argv(self, *args: str) -> list[str]:
        return [self.adb, "-s", self.serial, *args]

    def run(self, *args: str, timeout: float = ADB_STEP_TIMEOUT_S, what: str = "adb"):
        argv = self.argv(*args)
        self.calls.append(argv[1:])
        try:
            return subprocess.run(argv, capture_output=True, text=True, errors="replace",
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"`adb {' '.join(argv[1:])}` did not answer within "
                              f"{timeout:.0f} s ({what}).", where=f"adb:{self.serial}",
                              fix="check the cable and `adb devices`; restart the adb server "
                                  "with `adb kill-server` if it hangs.") from None

    def checked(self, *args: str, what: str):
        proc = self.run(*args, what=what)
        if proc.returncode != 0:
            raise DeviceError(f"{what} failed: {_adb_message(proc)}", where=f"adb:{self.serial}",
                              fix="check the free space and permissions of "
                                  f"{REMOTE_ROOT} on the phone (`adb shell df {REMOTE_ROOT}`) "
                                  "and that the device stays connected.")
        return proc


def check_device(adb: _Adb) -> None:
    """`adb get-state` must say `device`; else DeviceError with adb's message and the fix."""
    proc = adb.run("get-state", timeout=30.0, what="device state")
    state = (proc.stdout or "").strip()
    if proc.returncode == 0 and state == "device":
        return
    message = _adb_message(proc) if proc.returncode != 0 else f"the device is in state {state!r}"
    fix = _state_fix(message, adb.serial) if proc.returncode != 0 else (
        "boot the phone into Android (not bootloader, recovery or sideload) and retry.")
    raise DeviceError(f"device {adb.serial} is not ready: {message}", where=f"adb:{adb.serial}",
                      fix=fix)


def device_properties(adb: _Adb) -> dict:
    """The phone's model, maker, Android version, SDK level and ABI (`adb shell getprop`)."""
    props = {}
    for key, prop in DEVICE_PROPS:
        proc = adb.run("shell", "getprop", prop, what=f"getprop {prop}")
        value = (proc.stdout or "").strip() if proc.returncode == 0 else ""
        props[key] = value or None
    return props


def kill_running() -> int:
    """Stop every device benchmark this process is waiting for (an operator's on_kill): the
    local adb and the remote benchmark_model. Returns how many were stopped."""
    stopped = 0
    for pid, (adb, serial, remote_bin) in list(_RUNNING.items()):
        _kill_remote(adb, serial, remote_bin)  # first: then the waiting adb shell returns
        _kill_local(pid)
        stopped += 1
    return stopped


def _kill_local(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_remote(adb: str, serial: str, remote_bin: str) -> bool:
    """`adb shell pkill -f <run folder>/benchmark_model`: the folder is this run's own, so
    nothing else on the phone matches."""
    try:
        proc = subprocess.run([adb, "-s", serial, "shell", "pkill", "-f", remote_bin],
                              capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
        return proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run_benchmark(adb: _Adb, command: list[str], timeout_s: float, remote_bin: str):
    argv = adb.argv("shell", *command)
    adb.calls.append(argv[1:])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", stdin=subprocess.DEVNULL, start_new_session=True)
    _RUNNING[proc.pid] = (adb.adb, adb.serial, remote_bin)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return proc.returncode, out or "", err or ""
    except subprocess.TimeoutExpired:
        _kill_local(proc.pid)
        adb.calls.append(["-s", adb.serial, "shell", "pkill", "-f", remote_bin])
        killed = _kill_remote(adb.adb, adb.serial, remote_bin)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - pipes held by a stray child
            pass
        raise DeviceError(
            f"benchmark_model did not finish within {timeout_s:g} s on {adb.serial}; the "
            f"remote process was {'killed' if killed else 'sent a kill'} "
            f"(`adb shell pkill -f {remote_bin}`).", where=f"adb:{adb.serial}",
            fix="raise the time limit (timeout_s, devices[].timeout_s), lower --runs, or check "
                "that the model runs with this delegate (`--delegate cpu` first).") from None
    finally:
        _RUNNING.pop(proc.pid, None)


_EXEC_FAILURES = ("not executable", "Exec format error", "CANNOT LINK EXECUTABLE",
                  "inaccessible or not found", "Permission denied", "No such file or directory")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "model.tflite"


def benchmark_on_device(model, serial: str, *, delegate: str = "cpu", benchmark_binary=None,
                        threads: int | None = None, timeout_s: float = 600.0, adb: str = "adb",
                        runs: int = 50, warmup: int = 10) -> dict:
    """Run TFLite's benchmark_model on the phone `serial` over adb (see the module docstring).

    Returns `parse_benchmark_log`'s dict (host benchmark keys, the delegate that actually ran)
    plus: model, model_size_bytes, serial, device {model, manufacturer, android_version, sdk,
    abi}, benchmark_binary, remote_dir, command (the remote argv), adb_calls (every adb argv,
    in order), exit_code, log (the tool's output), measured_where "device", measured_with.
    Raises ConfigError for bad arguments, DeviceError when the device cannot be used, the
    binary cannot run there, or the run times out. A model the delegate rejects is not an
    exception: it comes back with status delegate_rejected and the tool's lines.
    """
    from include.edgetpu.tflite_model import check_model_file

    model = check_model_file(model).resolve()
    if not isinstance(serial, str) or not serial.strip():
        raise ConfigError(f"expected an adb serial, got {serial!r}.", where="--device",
                          fix="write --device adb:SERIAL (serials as `adb devices` lists them).")
    _check_delegate(delegate)
    binary = check_binary(benchmark_binary).resolve()
    _check_count(threads, "threads", "--threads", 1)
    _check_count(runs, "runs", "--runs", 1)
    _check_count(warmup, "warmup", "--warmup", 0)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}.",
                          where="--timeout", fix="use e.g. 600.")
    client = _Adb(find_adb(adb), serial.strip())
    check_device(client)
    props = device_properties(client)

    remote_dir = f"{REMOTE_ROOT}/mobiledet-bench-{uuid.uuid4().hex[:12]}"
    remote_model = f"{remote_dir}/{_safe_name(model.name)}"
    remote_bin = f"{remote_dir}/{REMOTE_BINARY}"
    command = [remote_bin, f"--graph={remote_model}", f"--num_runs={runs}",
               f"--warmup_runs={warmup}"]
    if threads is not None:
        command.append(f"--num_threads={threads}")
    command += list(DELEGATE_FLAGS[delegate])
    started = time.monotonic()
    try:
        client.checked("shell", "mkdir", "-p", remote_dir, what=f"creating {remote_dir}")
        client.checked("push", str(model), remote_model, what="pushing the model")
        client.checked("push", str(binary), remote_bin, what="pushing benchmark_model")
        client.checked("shell", "chmod", "755", remote_bin, what="chmod of benchmark_model")
        code, out, err = _run_benchmark(client, command, float(timeout_s), remote_bin)
    finally:
        try:
            cleanup = client.run("shell", "rm", "-rf", remote_dir, what="clean-up")
            left = None if cleanup.returncode == 0 else _adb_message(cleanup)
        except DeviceError as exc:  # never hide the run's own error behind the clean-up's
            left = str(exc)
    output = out + (("\n" + err) if err.strip() else "")
    where = f"benchmark_model on {serial}"
    exec_problem = next((k for k in _EXEC_FAILURES if k in output), None)
    try:
        parsed = parse_benchmark_log(output, delegate=delegate, where=where)
    except DataError:
        parsed = None
    if parsed is None:
        tail = " | ".join(line.strip() for line in output.strip().splitlines()[-4:]) or \
            "(no output)"
        fix = (f"use the Android build of benchmark_model for this phone's ABI "
               f"({props.get('abi') or 'see `adb shell getprop ro.product.cpu.abi`'}). "
               + BINARY_FIX) if exec_problem else (
            "run the same command by hand (`adb shell` then the command) to see what the tool "
            "says.")
        raise DeviceError(f"benchmark_model printed no result (exit code {code}): {tail}",
                          where=where, fix=fix)
    warnings = list(parsed.get("warnings", []))
    if left:
        warnings.append(f"could not remove {remote_dir} on the phone: {left}")
    return {
        **parsed,
        "warnings": warnings,
        "model": str(model),
        "model_size_bytes": model.stat().st_size,
        "serial": serial,
        "device": props,
        "benchmark_binary": str(binary),
        "remote_dir": remote_dir,
        "command": command,
        "adb_calls": client.calls,
        "exit_code": code,
        "duration_s": round(time.monotonic() - started, 3),
        "log": output,
        "measured_where": "device",
        "measured_with": "TFLite benchmark_model over adb",
    }


_RECORD_FIGURES = ("status", "init_ms", "first_ms", "latency_ms", "warmup_ms", "runs", "warmup",
                   "throughput_per_s", "model_memory_mb", "memory", "model_size_mb", "threads",
                   "delegate_applied", "delegation", "delegate_figure", "fallback",
                   "delegate_error", "delegated_nodes", "unsupported_ops", "errors",
                   "delegate_lines", "tool_lines", "warnings", "format")


def device_record(parsed: dict, *, device: str, delegate: str, serial: str | None = None,
                  source: str = "adb", log_file: str | None = None) -> dict:
    """The record of one device benchmark, to keep beside a release's manifest.

    `parsed`: what `benchmark_on_device` or `parse_benchmark_log` returned. `device`: the
    device's name (config `devices[].name`, or the name a person gives with --device).
    `delegate`: the delegate asked for. `source`: "adb" (this tool ran it) or "log" (a saved
    output attached by hand; `log_file` names it). Keys: kind, measured_where ("device"),
    measured_on, measured_with, source, log_file, recorded_at, device {name, serial, model,
    manufacturer, android_version, sdk, abi}, delegate_requested, plus the figures and the
    delegate verdict of `parsed` (status, init_ms, first_ms, latency_ms, ..., delegate_applied,
    delegation, delegate_figure, fallback). A fallback stays a fallback: delegate_figure is
    False unless the requested delegate ran.
    """
    if not isinstance(parsed, dict) or "status" not in parsed:
        raise ConfigError("expected the result of benchmark_on_device or parse_benchmark_log.",
                          where="device_record(parsed)", fix="pass that dict unchanged.")
    if not isinstance(device, str) or not device.strip():
        raise ConfigError(f"expected a device name, got {device!r}.", where="--device",
                          fix="name the device (e.g. pixel4), as in the config's devices list.")
    _check_delegate(delegate)
    if source not in ("adb", "log"):
        raise ConfigError(f"unknown source {source!r}; allowed: adb, log.", where="source",
                          fix="adb for a run of this tool, log for a saved output.")
    asked = parsed.get("delegate_requested")
    if asked is None:
        raise ConfigError("the benchmark result does not say which delegate was asked for, so "
                          "what ran cannot be told from a fallback.", where="--delegate",
                          fix="parse the log with parse_benchmark_log(text, delegate=...) "
                              "(--delegate on the command line).")
    if asked != delegate:
        raise ConfigError(f"the benchmark asked for the {asked} delegate, not {delegate}.",
                          where="--delegate", fix=f"use --delegate {asked}, or the log of a "
                                                  f"{delegate} run.")
    props = dict(parsed.get("device") or {})
    serial = serial if serial is not None else parsed.get("serial")
    info = {"name": device.strip(), "serial": serial,
            **{key: props.get(key) for key, _ in DEVICE_PROPS}}
    what = info["model"] or "model not reported"
    android = f", Android {info['android_version']}" if info["android_version"] else ""
    via = f"adb {serial}" if serial else ("a saved log" if source == "log" else "adb")
    record = {
        "kind": "device_benchmark",
        "measured_where": "device",
        "measured_on": f"{info['name']} ({what}{android}; {via})",
        "measured_with": "TFLite benchmark_model",
        "source": source,
        "log_file": log_file,
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": info,
        "delegate_requested": delegate,
        **{key: parsed.get(key) for key in _RECORD_FIGURES},
    }
    for key in ("model", "model_size_bytes", "command", "exit_code", "remote_dir"):
        if key in parsed:
            record[key] = parsed[key]
    return record
