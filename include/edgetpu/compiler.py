"""Run Coral's `edgetpu_compiler` on a .tflite model and report what it said.

The compiler ships only as a Debian package (`edgetpu-compiler`) from Coral's own apt repository,
for x86-64 Linux. The project's Docker image installs it. Where it is missing, `compile_model`
returns status `"not_installed"` and says how to get it; it never pretends a model compiled.

Statuses of a `CompileResult`:

- `compiled`: the compiler succeeded and wrote `<name>_edgetpu.tflite` (one file per segment
  with `num_segments`); the files were moved into `out_dir`.
- `failed`: the compiler ran and failed (non-zero exit, "Compilation failed!", or no output
  model). `message` carries the compiler's own error lines.
- `timeout`: the compiler ran past `timeout_s` and was killed.
- `not_installed`: no compiler found.

The compiler writes into a fresh hidden folder inside `out_dir`; files are moved into `out_dir`
only after it succeeded, the log first and the model last, so no partial output ever sits where
a reader would take it for a result.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from include.atomic import move_atomic
from include.errors import ConfigError, EdgeTPUError
from include.edgetpu.logparse import parse_compiler_output, parse_operation_log

ENV_VAR = "EDGETPU_COMPILER"
EXECUTABLE = "edgetpu_compiler"

HOW_TO_INSTALL = (
    "Get the Edge TPU compiler one of these ways: (1) run this step in the project's Docker image "
    "(the Dockerfile installs Coral's `edgetpu-compiler` package); (2) on x86-64 Debian/Ubuntu, "
    "add Coral's apt repository (`deb "
    "[signed-by=/usr/share/keyrings/coral-edgetpu-archive-keyring.gpg] "
    "https://packages.cloud.google.com/apt coral-edgetpu-stable main`, key from "
    "https://packages.cloud.google.com/apt/doc/apt-key.gpg) and run "
    "`sudo apt-get install edgetpu-compiler`; then make sure `edgetpu_compiler` is on PATH or set "
    f"{ENV_VAR} to its path. Without it, `mobiledet edgetpu-check MODEL` gives an offline "
    "prediction of the mapping.")


@dataclass
class CompileResult:
    status: str                                  # compiled, failed, timeout, not_installed
    model_path: str
    message: str
    compiler: str | None = None
    command: list[str] = field(default_factory=list)
    returncode: int | None = None
    edgetpu_model: str | None = None             # <name>_edgetpu.tflite (first segment with -n)
    edgetpu_models: list[str] = field(default_factory=list)
    log_paths: list[str] = field(default_factory=list)
    report: dict | None = None                   # parse_compiler_output(...).to_dict()
    stdout: str = ""
    stderr: str = ""
    duration_s: float | None = None
    how_to_install: str | None = None
    warnings: list[str] = field(default_factory=list)   # from the offline pre-check

    @property
    def ok(self) -> bool:
        return self.status == "compiled"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def find_compiler(path: str | os.PathLike | None = None) -> str | None:
    """The compiler to run: `path`, else $EDGETPU_COMPILER, else `edgetpu_compiler` on PATH.

    Returns None when nothing is configured and it is not on PATH. A path that is configured
    (argument or environment variable) but unusable raises EdgeTPUError naming it.
    """
    for given, source in ((path, "the compiler path given"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if not given:
            continue
        given = str(given)
        p = Path(given).expanduser()
        if p.is_file():
            if not os.access(p, os.X_OK):
                raise EdgeTPUError(f"{source} is not executable.", where=str(p),
                                   fix=f"run `chmod +x {p}` or point {ENV_VAR} at the real "
                                       "edgetpu_compiler.")
            return str(p)
        if os.sep not in given:  # a bare command name: look it up on PATH
            found = shutil.which(given)
            if found:
                return found
        raise EdgeTPUError(f"{source} does not exist.", where=given,
                           fix=f"point it at the edgetpu_compiler executable, or unset {ENV_VAR} "
                               "to use the one on PATH. " + HOW_TO_INSTALL)
    return shutil.which(EXECUTABLE)


def build_command(compiler: str, model_path: str, out_dir: str, *,
                  min_runtime_version: int | None = None, num_segments: int | None = None,
                  search_delegate: bool = False) -> list[str]:
    cmd = [compiler, "-s", "-o", str(out_dir)]
    if min_runtime_version is not None:
        cmd += ["-m", str(int(min_runtime_version))]
    if num_segments is not None:
        cmd += ["-n", str(int(num_segments))]
    if search_delegate:
        cmd.append("-d")
    cmd.append(str(model_path))
    return cmd


def _check_settings(timeout_s, min_runtime_version, num_segments) -> None:
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}.",
                          where="edgetpu compile timeout", fix="use for example 180.")
    if min_runtime_version is not None and (
            not isinstance(min_runtime_version, int) or min_runtime_version < 1):
        raise ConfigError(f"min_runtime_version must be a positive integer, got "
                          f"{min_runtime_version!r}.", where="edgetpu min_runtime_version",
                          fix="use a runtime version such as 13, or leave it unset.")
    if num_segments is not None and (not isinstance(num_segments, int) or num_segments < 1):
        raise ConfigError(f"num_segments must be an integer >= 1, got {num_segments!r}.",
                          where="edgetpu num_segments",
                          fix="use the number of Edge TPUs to pipeline over, or leave it unset.")


# Process groups of compilers running in this process, for kill_running (an operator's on_kill).
_RUNNING: set[int] = set()


def kill_running() -> int:
    """SIGKILL every compiler process group this process started and is waiting for (a task
    being killed must not leave the compiler running); returns how many were signalled."""
    killed = 0
    for pgid in list(_RUNNING):
        try:
            os.killpg(pgid, signal.SIGKILL)
            killed += 1
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def _run(cmd: list[str], timeout_s: float) -> tuple[int | None, str, str, bool]:
    """Run cmd in its own process group; on timeout kill the whole group (the compiler forks)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    _RUNNING.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return proc.returncode, out, err, False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - pipes held by a stray process
            out, err = "", ""
        return proc.returncode, out or "", err or "", True
    finally:
        _RUNNING.discard(proc.pid)


def _compiler_error_text(report, stdout: str, stderr: str, returncode) -> str:
    lines = list(report.errors)
    if not lines:
        tail = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()][-5:]
        if not tail:
            tail = [ln.strip() for ln in (stdout or "").splitlines() if ln.strip()][-5:]
        lines = tail
    text = " | ".join(lines) if lines else "(the compiler printed nothing)"
    return f"exit code {returncode}: {text}"


def compile_model(model_path, out_dir, *, compiler: str | None = None, timeout_s: float = 180,
                  min_runtime_version: int | None = None, num_segments: int | None = None,
                  search_delegate: bool = False, analysis: dict | None = None) -> CompileResult:
    """Compile one .tflite model for the Edge TPU into out_dir. See the module docstring.

    `analysis`: the offline analysis of this model (`include.edgetpu.analyze.analyze_model`)
    when the caller made it already; the precheck then reuses it instead of analysing again."""
    model = Path(model_path)
    if not model.is_file():
        raise EdgeTPUError("the model to compile does not exist.", where=str(model),
                           fix="pass the path of a .tflite file (an int8 model from "
                               "`mobiledet convert`).")
    _check_settings(timeout_s, min_runtime_version, num_segments)
    exe = find_compiler(compiler)
    warnings = precheck(model, analysis)
    if exe is None:
        return CompileResult(
            status="not_installed", model_path=str(model), warnings=warnings,
            message=f"Edge TPU compiler not installed: `{EXECUTABLE}` is not on PATH and "
                    f"{ENV_VAR} is not set, so {model.name} was not run through it (no Edge TPU "
                    "model was made).",
            how_to_install=HOW_TO_INSTALL)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".edgetpu-", dir=out))
    cmd = build_command(exe, str(model.resolve()), str(work),
                        min_runtime_version=min_runtime_version, num_segments=num_segments,
                        search_delegate=search_delegate)
    started = time.monotonic()
    try:
        try:
            rc, stdout, stderr, timed_out = _run(cmd, timeout_s)
        except OSError as exc:
            raise EdgeTPUError(f"the compiler could not be started ({exc}).", where=exe,
                               fix="check that it is an x86-64 Linux executable; "
                                   + HOW_TO_INSTALL) from exc
        duration = round(time.monotonic() - started, 3)
        logs = sorted(work.glob("*_edgetpu.log"))
        log_text = "\n".join(p.read_text(errors="replace") for p in logs) if logs else None
        report = parse_compiler_output(stdout, log_text)
        base = dict(model_path=str(model), compiler=exe, command=cmd, returncode=rc,
                    report=report.to_dict(), stdout=stdout, stderr=stderr, duration_s=duration,
                    warnings=warnings)
        if logs:
            base["report"]["operation_logs"] = [
                dict(parse_operation_log(p.read_text(errors="replace")), file=p.name)
                for p in logs]
        if timed_out:
            return CompileResult(
                status="timeout",
                message=f"the Edge TPU compiler ran past {timeout_s:g} s on {model.name} and was "
                        "stopped; nothing was written to the output folder. Large activation "
                        "tensors are the usual cause; try a smaller input size or raise the "
                        "timeout.", **base)
        models = _output_models(work, model, num_segments)
        if rc != 0 or not report.compiled:
            return CompileResult(
                status="failed",
                message=f"the Edge TPU compiler failed on {model.name} ("
                        f"{_compiler_error_text(report, stdout, stderr, rc)}).", **base)
        if not models:
            return CompileResult(
                status="failed",
                message=f"the Edge TPU compiler exited 0 on {model.name} but wrote no "
                        f"{model.stem}_edgetpu.tflite into its output folder; nothing was kept.",
                **base)
        moved_logs = [_move(p, out) for p in logs]
        moved_models = [_move(p, out) for p in models]   # models last: they mark completion
        summary = (f"{report.ops_on_tpu} of {report.total_ops} ops on the Edge TPU, "
                   f"{report.ops_on_cpu} on the CPU" if report.total_ops is not None
                   else "op counts not reported")
        return CompileResult(
            status="compiled",
            message=f"compiled {model.name} for the Edge TPU: {summary}.",
            edgetpu_model=moved_models[0], edgetpu_models=moved_models, log_paths=moved_logs,
            **base)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def precheck(model: Path, analysis: dict | None = None) -> list[str]:
    """Advisory warnings from the offline analysis (`analysis` when given, else made here);
    never blocks the compiler (it decides)."""
    try:
        from include.edgetpu.analyze import analyze_model

        result = analysis if analysis is not None else analyze_model(model)
    except Exception as exc:  # advisory only: any failure becomes a warning
        return [f"{model.name} could not be read as a TFLite model ({exc}); the compiler will "
                "most likely reject it."]
    warnings = list(result["warnings"])
    first = result["first_unmapped_op"]
    if first is not None:
        warnings.append(
            f"offline prediction: {result['unexpected_on_cpu']} of {result['total_ops']} ops "
            f"would stay on the CPU unexpectedly; the first is #{first['index']} "
            f"{first['operator']}: {first['reasons'][0] if first['reasons'] else first['status']}")
    return warnings


def _output_models(work: Path, model: Path, num_segments: int | None) -> list[Path]:
    single = work / f"{model.stem}_edgetpu.tflite"
    if single.is_file() and not num_segments:
        return [single]
    found = sorted((p for p in work.glob("*_edgetpu.tflite") if p.is_file()), key=_natural)
    if single in found:
        found.remove(single)
        found.insert(0, single)
    return found


def _natural(p: Path):
    """Sort segment_2 before segment_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _move(src: Path, out: Path) -> str:
    return str(move_atomic(src, out / src.name))
