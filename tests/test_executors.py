"""PreloadingLocalExecutor (include/deploy/executors.py): the LocalExecutor's workers are forked
after the preload, through the executor's public `start()` only.

The real executor starts here with a light preload list: `xxlimited`, a C extension module of
the standard library that nothing else imports, so its shared object shows in a worker's
/proc/<pid>/maps exactly when the worker inherited it. The full preload (TensorFlow) is checked
end to end by tests/test_stack.py: no task of a `mobiledet serve` run paid for the import.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = textwrap.dedent("""
    import json, sys
    from include.deploy.executors import PreloadingLocalExecutor

    class Light(PreloadingLocalExecutor):
        preload_modules = ("xxlimited",)

    before = "xxlimited" in sys.modules
    executor = Light(parallelism=2)
    executor.start()
    maps = {pid: open(f"/proc/{pid}/maps").read() for pid in executor.workers}
    executor.end()
    print(json.dumps({"before": before, "fork": executor.is_mp_using_fork,
                      "workers": [("xxlimited" in text) for text in maps.values()]}))
""")


def _start(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", CODE], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and fork: Linux")
def test_workers_are_forked_after_the_preload():
    got = _start()
    assert got["fork"] and got["before"] is False
    assert got["workers"] == [True, True]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and fork: Linux")
def test_preload_off_leaves_the_workers_light():
    assert _start(MOBILEDET_WORKER_PRELOAD="0")["workers"] == [False, False]


def test_the_executor_overrides_nothing_private_of_airflow():
    from airflow.executors.base_executor import BaseExecutor

    from include.deploy.executors import PreloadingLocalExecutor

    own = {name for name in vars(PreloadingLocalExecutor) if not name.startswith("__")}
    assert own == {"start", "preload_modules"}
    assert "start" in vars(BaseExecutor)        # the executor interface's start-up hook
