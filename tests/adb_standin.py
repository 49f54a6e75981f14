"""A stand-in `adb` for the device benchmark tests (written to a folder on PATH by the tests).

It keeps a phone's /data/local/tmp in a local folder, so push, chmod, the run and rm -rf act on
real files, and it records every argv it gets (one JSON list per line in calls.jsonl). What it
answers comes from scenario.json beside it:

    {"state": "device" | "offline" | "unauthorized" | "missing" | "bootloader",
     "props": {"ro.product.model": "Pixel 4", ...},
     "outputs": {"<a flag of the run, e.g. --use_gpu=true>": "<fixture file>", ...},
     "exit_code": 0, "hang": false, "push_error": null}

A run answers with the fixture of the first flag it finds in its argv (after checking that the
binary was pushed and made executable and that --graph names the pushed model). With "hang",
the run starts a detached sleeper standing for the remote benchmark_model (it outlives this adb
process, as a remote process outlives a killed adb) and waits; `shell pkill -f PATTERN` kills
that sleeper when PATTERN is in its recorded command line.
"""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHONE = HERE / "phone"            # stands for the phone's file system root
REMOTE_ROOT = "/data/local/tmp"


def local(remote: str) -> Path:
    return PHONE / remote.lstrip("/")


def main(argv):
    with open(HERE / "calls.jsonl", "a") as fh:
        fh.write(json.dumps(argv) + "\n")
    scenario = json.loads((HERE / "scenario.json").read_text())
    if argv[:1] != ["-s"]:
        print("adb: the tests always pass -s SERIAL", file=sys.stderr)
        return 1
    serial, args = argv[1], argv[2:]
    if args == ["get-state"]:
        state = scenario.get("state", "device")
        if state == "offline":
            print("error: device offline", file=sys.stderr)
            return 1
        if state == "unauthorized":
            print("error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
                  "Try 'adb kill-server' if that seems wrong.\nOtherwise check for a "
                  "confirmation dialog on your device.", file=sys.stderr)
            return 1
        if state == "missing":
            print(f"error: device '{serial}' not found", file=sys.stderr)
            return 1
        print(state)
        return 0
    if args[0] == "push":
        if scenario.get("push_error"):
            print(scenario["push_error"], file=sys.stderr)
            return 1
        dst = local(args[2])
        if not dst.parent.is_dir():
            print(f"adb: error: failed to copy '{args[1]}' to '{args[2]}': remote couldn't "
                  "create file: No such file or directory", file=sys.stderr)
            return 1
        shutil.copyfile(args[1], dst)
        print(f"{args[1]}: 1 file pushed, 0 skipped.")
        return 0
    if args[0] != "shell":
        print(f"adb: unknown command {args[0]}", file=sys.stderr)
        return 1
    cmd = args[1:]
    if cmd[0] == "getprop":
        print(scenario.get("props", {}).get(cmd[1], ""))
        return 0
    if cmd[:2] == ["mkdir", "-p"]:
        local(cmd[2]).mkdir(parents=True, exist_ok=True)
        return 0
    if cmd[0] == "chmod":
        path = local(cmd[2])
        path.chmod(int(cmd[1], 8))
        return 0
    if cmd[:2] == ["rm", "-rf"]:
        shutil.rmtree(local(cmd[2]), ignore_errors=True)
        return 0
    if cmd[:2] == ["pkill", "-f"]:
        killed = 0
        for pidfile in PHONE.glob("*.running"):
            info = json.loads(pidfile.read_text())
            if cmd[2] in " ".join(info["argv"]):
                try:
                    os.kill(info["pid"], signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
                pidfile.unlink()
        return 0 if killed else 1
    # the benchmark run: <dir>/benchmark_model --graph=... flags
    binary = local(cmd[0])
    if not binary.is_file():
        print(f"/system/bin/sh: {cmd[0]}: inaccessible or not found", file=sys.stderr)
        return 127
    if not binary.stat().st_mode & stat.S_IXUSR:
        print(f"/system/bin/sh: {cmd[0]}: can't execute: Permission denied", file=sys.stderr)
        return 126
    graph = next((a.split("=", 1)[1] for a in cmd if a.startswith("--graph=")), None)
    if graph is None or not local(graph).is_file():
        print(f"ERROR: Could not open '{graph}'.", file=sys.stderr)
        return 1
    if scenario.get("hang"):
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                   start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        (PHONE / f"{sleeper.pid}.running").write_text(json.dumps(
            {"pid": sleeper.pid, "argv": cmd}))
        sleeper.wait()
        return 137
    outputs = scenario.get("outputs", {})
    fixture = next((outputs[a] for a in cmd if a in outputs), None)
    if fixture is None:
        print("no fixture for this run", file=sys.stderr)
        return 1
    sys.stdout.write(Path(fixture).read_text())
    return int(scenario.get("exit_code", 0))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
