"""The CLI's output people read: no native start-up noise, progress lines in logs."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOISE = ("cuda", "CUDA", "oneDNN", "absl::InitializeLog")


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    exe = Path(sys.executable).with_name("mobiledet")
    return subprocess.run([str(exe), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_describe_stderr_has_no_cuda_or_onednn_lines():
    quiet = _cli("describe", "--variant", "cpu")
    assert quiet.returncode == 0, quiet.stderr
    assert "anchors" in quiet.stdout
    assert not [line for line in quiet.stderr.splitlines() if any(n in line for n in NOISE)], \
        quiet.stderr
    loud = _cli("--verbose", "describe", "--variant", "cpu")   # the lines are there to drop
    assert any("oneDNN" in line or "cuda" in line for line in loud.stderr.splitlines()), \
        loud.stderr


def test_errors_and_other_stderr_lines_still_come_through():
    bad = _cli("evaluate", "--model", "/nonexistent/model.tflite", "--data", str(REPO))
    assert bad.returncode == 2 and "model file not found" in bad.stderr
    code = textwrap.dedent("""
        import os, sys
        from include.console import QuietNativeStderr
        with QuietNativeStderr():
            os.write(2, b"I0000 00:00:1.2   42 port.cc:153] oneDNN custom operations are on.\\n")
            os.write(2, b"a real warning from C++\\n")
            print("a Python message", file=sys.stderr)
        print("after", file=sys.stderr)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.stderr.splitlines() == ["a real warning from C++", "a Python message", "after"]


def test_progress_in_a_log_prints_a_line_at_least_every_interval():
    from include.progress import LogProgress

    now = [0.0]
    buf = io.StringIO()
    with LogProgress(total=100, desc="train edgetpu", unit="step", interval=30.0, file=buf,
                     clock=lambda: now[0]) as bar:
        for _ in range(100):
            now[0] += 1.0      # one step a second
            bar.set_postfix(loss="0.500")
            bar.update(1)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4  # after 30, 60 and 90 s, and the final line
    assert lines[0].startswith("train edgetpu: 30/100 step (30%), 1.00 step/s, ETA 1m10s")
    assert lines[0].endswith("loss=0.500")
    assert "100/100" in lines[-1] and "done in 1m40s" in lines[-1]
