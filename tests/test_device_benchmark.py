"""Device benchmarks: the benchmark_model parser on published outputs, the adb runner against a
stand-in adb, the record, the devices config, the device latency gate and the CLI.

No phone is run here. The parser is checked on real benchmark_model outputs copied from public
sources (tests/fixtures/benchmark_model/README.md names each); every number asserted below is
printed in the fixture it is read from. The runner talks to `tests/adb_standin.py`, installed as
`adb` on PATH, which keeps a phone's /data/local/tmp in a folder, records every call and answers
the run with one of those fixtures.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from include.config import DeviceConfig, load_config
from include.errors import ConfigError, DataError, DeviceError
from include.gates import device_latency_check
from include.quality.device import benchmark_on_device, device_record
from include.quality.device_log import DELEGATES, parse_benchmark_log

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"
STANDIN = Path(__file__).parent / "adb_standin.py"
SERIAL = "9A1B2C3D"
PROPS = {"ro.product.model": "Pixel 4", "ro.product.manufacturer": "Google",
         "ro.build.version.release": "13", "ro.build.version.sdk": "33",
         "ro.product.cpu.abi": "arm64-v8a"}
# The flag each delegate must put on the command line (TFLite benchmark tool README).
EXPECTED_FLAG = {"cpu": "--use_xnnpack=false", "xnnpack": "--use_xnnpack=true",
                 "gpu": "--use_gpu=true", "nnapi": "--use_nnapi=true",
                 "hexagon": "--use_hexagon=true"}


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# ================================================================================ the parser
def test_old_average_format_zedboard_cpu():
    r = parse_benchmark_log(fixture("zedboard_armv7_cpu_average_format.txt"))
    assert r["status"] == "ok" and r["format"] == "average_inference_timings"
    # "Average inference timings in us: Warmup: 751932, Init: 21039, no stats: 747733"
    assert r["init_ms"] == 21.039
    assert r["warmup_ms"]["mean"] == 751.932
    # "count=50 first=747738 curr=747428 min=747331 max=748577 avg=747733 std=293"
    assert r["latency_ms"] == {"mean": 747.733, "min": 747.331, "max": 748.577, "std": 0.293}
    assert (r["runs"], r["warmup"]) == (50, 1)
    # one warm-up run ("count=1 curr=751932"): that run is the first inference
    assert r["first_ms"] == 751.932
    assert r["threads"] == 1                       # "Num threads: [1]"
    assert r["delegate_requested"] == "cpu"        # "Use gpu : [0]"
    assert r["delegate_applied"] == "cpu" and r["delegate_figure"] is True
    assert r["memory"] is None and r["model_memory_mb"] is None   # not printed by this version
    assert r["throughput_per_s"] == round(1000 / 747.733, 3)


def test_new_format_mi11_cpu_with_peak_memory():
    r = parse_benchmark_log(fixture("mi11_tf24_cpu_fp32.txt"), delegate="cpu")
    assert r["format"] == "inference_timings"
    # "Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586,
    #  Inference (avg): 249684"
    assert (r["init_ms"], r["first_ms"]) == (16.242, 360.262)
    assert r["warmup_ms"]["mean"] == 304.586
    assert r["latency_ms"] == {"mean": 249.684, "min": 247.067, "max": 254.474, "std": 1.442}
    assert r["runs"] == 50 and r["warmup"] is None   # the source shows the timed runs only
    # "Peak memory footprint (MB): init=4.92969 overall=138.809"
    assert r["memory"]["init_mb"] == 4.92969 and r["memory"]["overall_mb"] == 138.809
    assert r["model_memory_mb"] == 138.809
    assert r["memory"]["reported_as"].startswith("Peak memory footprint (MB)")
    assert r["delegate_applied"] == "cpu" and r["fallback"] is None


def test_current_format_with_percentiles_and_memory_delta():
    r = parse_benchmark_log(fixture("am62x_tf2_cpu_no_xnnpack.txt"))
    assert r["delegate_requested"] == "cpu"        # "Use xnnpack: [0]"
    # "count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565
    #  p5=1238753 median=1239807 p95=1247415"
    assert r["latency_ms"] == {"mean": 1240.27, "min": 1238.588, "max": 1252.566, "std": 2.565,
                               "p50": 1239.807, "p5": 1238.753, "p95": 1247.415}
    assert (r["init_ms"], r["first_ms"]) == (5.579, 1357.602)
    assert r["warmup_ms"]["mean"] == 1357.6        # "Warmup (avg): 1.3576e+06"
    assert r["memory"]["init_mb"] == 6.36328 and r["model_memory_mb"] == 109.832
    assert r["model_size_mb"] == 67.3128
    assert r["threads"] is None                    # the log prints no thread count


def test_xnnpack_partial_delegation_is_the_delegates_figure_with_the_rest_on_cpu():
    r = parse_benchmark_log(fixture("am62x_tf2_xnnpack_partial.txt"))
    assert r["delegate_requested"] == "xnnpack"
    assert (r["delegate_applied"], r["delegation"], r["delegate_figure"]) == \
        ("xnnpack", "partial", True)
    assert r["fallback"]["partial"] is True
    assert "partially executed by the delegate w/ 1 delegate kernels" in r["fallback"]["line"]
    assert r["latency_ms"]["mean"] == 899.641 and r["latency_ms"]["p95"] == 904.305
    assert r["init_ms"] == 614.333
    assert r["memory"]["overall_mb"] == 150.141


def test_gpu_full_delegation_on_a_phone():
    r = parse_benchmark_log(fixture("android_gpu_full_delegation_issue43541.txt"))
    assert r["delegate_requested"] == "gpu"        # "Use gpu: [1]"
    assert (r["delegate_applied"], r["delegation"], r["delegate_figure"]) == ("gpu", "full", True)
    assert r["fallback"] is None
    assert r["latency_ms"] == {"mean": 119.375, "min": 113.737, "max": 124.776, "std": 1.948}
    assert (r["init_ms"], r["first_ms"]) == (870.557, 130.565)
    # warm-up phase: "count=4 first=130565 curr=120829 min=117370 max=130565 avg=122373 std=4930"
    assert r["warmup"] == 4 and r["warmup_ms"]["max"] == 130.565
    assert r["threads"] == 4 and r["model_size_mb"] == 7.07479
    assert any("completely executed" in line for line in r["delegate_lines"])


def test_gpu_fallback_is_recorded_as_a_fallback_never_as_the_gpu_figure():
    r = parse_benchmark_log(fixture("rpi4_gpu_unsupported_fell_back.txt"))
    assert r["delegate_requested"] == "gpu"
    assert r["delegate_applied"] == "xnnpack"      # XNNPACK took the graph, not the GPU
    assert r["delegation"] == "none" and r["delegate_figure"] is False
    assert r["fallback"]["to"] == "xnnpack"
    assert r["fallback"]["line"] == "GPU acceleration is unsupported on this platform."
    # the figures are kept, as the fallback's: "avg=74481.6 std=268", "Init: 18738"
    assert r["latency_ms"]["mean"] == 74.4816 and r["init_ms"] == 18.738
    assert r["memory"]["overall_mb"] == 64.8633


def test_a_log_that_does_not_show_the_delegate_ran_is_not_the_delegates_figure():
    r = parse_benchmark_log(fixture("mi11_tf24_nnapi_qti_gpu_fp32.txt"), delegate="nnapi")
    assert r["status"] == "ok" and r["latency_ms"]["mean"] == 156.669
    assert r["delegate_applied"] is None and r["delegation"] == "not_reported"
    assert r["delegate_figure"] is False
    assert any("does not show whether the NNAPI delegate was applied" in w
               for w in r["warnings"])


def test_a_model_the_delegate_rejects_is_recorded_as_such():
    r = parse_benchmark_log(fixture("mi11_tf24_nnapi_qti_default_int8_failed.txt"))
    assert r["delegate_requested"] == "nnapi"      # "Use NNAPI: [1]"
    assert r["status"] == "delegate_rejected"
    assert r["delegation"] == "failed" and r["delegate_figure"] is False
    assert r["delegate_error"] == "Failed to apply NNAPI delegate."
    assert "Node number 248 (TfLiteNnapiDelegate) failed to prepare." in r["errors"]
    assert r["latency_ms"] is None and r["init_ms"] is None


def test_not_executed_by_the_delegate_is_a_fallback():
    # tensorflow#43541's GPU run with its "Explicitly applied ..." line swapped for the tool's
    # other verdict, worded as in benchmark_tflite_model.cc (no published full log has it here)
    text = fixture("android_gpu_full_delegation_issue43541.txt").replace(
        "Explicitly applied GPU delegate, and the model graph will be completely executed by "
        "the delegate.", "Though GPU delegate is explicitly applied, the model graph will not "
                         "be executed by the delegate.")
    r = parse_benchmark_log(text)
    assert r["delegate_applied"] == "cpu" and r["delegation"] == "none"
    assert r["delegate_figure"] is False and r["fallback"]["to"] == "cpu"
    assert r["fallback"]["line"].startswith("Though GPU delegate is explicitly applied")


def test_logcat_lines_of_the_android_benchmark_app_parse_the_same():
    text = fixture("android_gpu_full_delegation_issue43541.txt")
    logcat = "\n".join(f"05-31 10:38:42.583 22206 22206 I tflite  : {line}"
                       for line in text.splitlines())
    a, b = parse_benchmark_log(text), parse_benchmark_log(logcat)
    for key in ("latency_ms", "init_ms", "first_ms", "delegate_applied", "delegation", "runs"):
        assert a[key] == b[key]


def test_parser_refuses_what_is_not_one_run():
    with pytest.raises(DataError, match="no benchmark_model result"):
        parse_benchmark_log("hello\nworld\n", where="notes.txt")
    two = fixture("zedboard_armv7_cpu_average_format.txt") * 2
    with pytest.raises(DataError, match="holds 2 benchmark_model runs"):
        parse_benchmark_log(two)
    with pytest.raises(ConfigError, match="unknown delegate"):
        parse_benchmark_log(fixture("mi11_tf24_cpu_fp32.txt"), delegate="tpu")


# ========================================================================= the adb stand-in
@pytest.fixture
def phone(tmp_path, monkeypatch):
    """A stand-in `adb` on PATH; returns a helper to set the scenario and read the calls."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "adb"
    exe.write_text(f"#!{sys.executable}\n" + STANDIN.read_text())
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    (bindir / "phone").mkdir()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    outputs = {"--use_xnnpack=false": str(FIXTURES / "am62x_tf2_cpu_no_xnnpack.txt"),
               "--use_xnnpack=true": str(FIXTURES / "am62x_tf2_xnnpack_partial.txt"),
               "--use_gpu=true": str(FIXTURES / "android_gpu_full_delegation_issue43541.txt"),
               "--use_nnapi=true": str(FIXTURES / "mi11_tf24_nnapi_qti_default_int8_failed.txt"),
               "--use_hexagon=true": str(FIXTURES / "mi11_tf24_cpu_fp32.txt")}

    class Phone:
        dir = bindir
        root = bindir / "phone"

        def set(self, **scenario):
            full = {"state": "device", "props": PROPS, "outputs": outputs, **scenario}
            (bindir / "scenario.json").write_text(json.dumps(full))

        def calls(self):
            path = bindir / "calls.jsonl"
            return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []

    p = Phone()
    p.set()
    return p


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "ssdlite mobiledet.tflite"   # a space: the remote name must be safe
    path.write_bytes(b"\x1c\x00\x00\x00TFL3 stand-in model bytes")
    return path


@pytest.fixture
def binary(tmp_path):
    path = tmp_path / "android_aarch64_benchmark_model"
    path.write_bytes(b"\x7fELF stand-in")
    return path


def test_runner_pushes_runs_reads_the_phone_and_cleans_up(phone, model_file, binary):
    r = benchmark_on_device(model_file, SERIAL, delegate="gpu", benchmark_binary=binary,
                            threads=4, runs=50, warmup=1)
    calls = phone.calls()
    remote = r["remote_dir"]
    assert remote.startswith("/data/local/tmp/mobiledet-bench-")
    model_remote = f"{remote}/ssdlite_mobiledet.tflite"
    assert calls == [
        ["-s", SERIAL, "get-state"],
        ["-s", SERIAL, "shell", "getprop", "ro.product.model"],
        ["-s", SERIAL, "shell", "getprop", "ro.product.manufacturer"],
        ["-s", SERIAL, "shell", "getprop", "ro.build.version.release"],
        ["-s", SERIAL, "shell", "getprop", "ro.build.version.sdk"],
        ["-s", SERIAL, "shell", "getprop", "ro.product.cpu.abi"],
        ["-s", SERIAL, "shell", "mkdir", "-p", remote],
        ["-s", SERIAL, "push", str(model_file.resolve()), model_remote],
        ["-s", SERIAL, "push", str(binary.resolve()), f"{remote}/benchmark_model"],
        ["-s", SERIAL, "shell", "chmod", "755", f"{remote}/benchmark_model"],
        ["-s", SERIAL, "shell", f"{remote}/benchmark_model", f"--graph={model_remote}",
         "--num_runs=50", "--warmup_runs=1", "--num_threads=4", "--use_gpu=true"],
        ["-s", SERIAL, "shell", "rm", "-rf", remote],
    ]
    assert r["adb_calls"] == calls
    assert not any(phone.root.rglob("*.tflite"))            # the phone's folder is gone
    assert r["device"] == {"model": "Pixel 4", "manufacturer": "Google",
                           "android_version": "13", "sdk": "33", "abi": "arm64-v8a"}
    # the answer was tensorflow#43541's GPU run: its figures, and the GPU really ran
    assert r["latency_ms"]["mean"] == 119.375 and r["init_ms"] == 870.557
    assert (r["delegate_requested"], r["delegate_applied"], r["delegation"]) == \
        ("gpu", "gpu", "full")
    assert r["measured_where"] == "device" and r["model_size_bytes"] == model_file.stat().st_size
    assert r["exit_code"] == 0 and "Explicitly applied GPU delegate" in r["log"]


@pytest.mark.parametrize("delegate", DELEGATES)
def test_each_delegate_gets_its_flag(phone, model_file, binary, delegate):
    r = benchmark_on_device(model_file, SERIAL, delegate=delegate, benchmark_binary=binary)
    run = phone.calls()[-2]
    assert run[3].endswith("/benchmark_model")
    flags = run[4:]
    assert EXPECTED_FLAG[delegate] in flags
    assert not [f for f in EXPECTED_FLAG.values() if f in flags and f != EXPECTED_FLAG[delegate]]
    assert "--num_runs=50" in flags and "--warmup_runs=10" in flags
    assert not any(f.startswith("--num_threads") for f in flags)   # the tool's default
    assert phone.calls()[-1][3:5] == ["rm", "-rf"]
    assert r["delegate_requested"] == delegate
    if delegate == "nnapi":       # answered with the published NNAPI failure
        assert r["status"] == "delegate_rejected" and r["latency_ms"] is None
    elif delegate == "hexagon":   # answered with a log that never mentions Hexagon
        assert r["delegation"] == "not_reported" and r["delegate_figure"] is False
    else:
        assert r["status"] == "ok" and r["delegate_figure"] is True


@pytest.mark.parametrize("state, needle, fix", [
    ("offline", "error: device offline", "adb reconnect"),
    ("unauthorized", "error: device unauthorized.", "Allow USB debugging"),
    ("missing", f"error: device '{SERIAL}' not found", "adb devices"),
    ("bootloader", "in state 'bootloader'", "boot the phone into Android"),
])
def test_a_device_that_is_not_ready_fails_with_adbs_message_and_the_fix(
        phone, model_file, binary, state, needle, fix):
    phone.set(state=state)
    with pytest.raises(DeviceError) as err:
        benchmark_on_device(model_file, SERIAL, benchmark_binary=binary)
    assert needle in str(err.value) and fix in err.value.fix
    assert err.value.where == f"adb:{SERIAL}"
    assert phone.calls() == [["-s", SERIAL, "get-state"]]      # nothing was pushed


def test_timeout_kills_the_remote_process_and_cleans_up(phone, model_file, binary):
    phone.set(hang=True)
    with pytest.raises(DeviceError, match="did not finish within 2 s") as err:
        benchmark_on_device(model_file, SERIAL, benchmark_binary=binary, timeout_s=2)
    assert "pkill -f" in str(err.value) and "was killed" in str(err.value)
    calls = phone.calls()
    remote_bin = calls[-3][3]
    assert calls[-2] == ["-s", SERIAL, "shell", "pkill", "-f", remote_bin]
    assert calls[-1][3:5] == ["rm", "-rf"]
    assert not list(phone.root.glob("*.running"))      # the stand-in's remote process is gone


def test_kill_running_stops_the_local_adb_and_the_remote_process(phone, model_file, binary):
    import threading
    import time

    from include.quality.device import kill_running

    phone.set(hang=True)
    errors = []

    def run():
        try:
            benchmark_on_device(model_file, SERIAL, benchmark_binary=binary, timeout_s=120)
        except DeviceError as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while not list(phone.root.glob("*.running")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kill_running() == 1                   # what an operator's on_kill calls
    worker.join(30)
    assert not worker.is_alive() and errors      # the run ends with an error, not a figure
    assert not list(phone.root.glob("*.running"))
    kinds = [call[3] for call in phone.calls() if len(call) > 3]
    assert kinds[-2:] == ["pkill", "rm"]         # the remote process first, then the folder


def test_missing_binary_names_the_flag_and_the_config_key(phone, model_file, tmp_path):
    for given in (None, tmp_path / "nowhere" / "benchmark_model"):
        with pytest.raises(ConfigError) as err:
            benchmark_on_device(model_file, SERIAL, benchmark_binary=given)
        assert "--benchmark-binary" in err.value.where
        assert "devices[].benchmark_binary" in err.value.where
        assert "android_aarch64_benchmark_model" in err.value.fix
    assert phone.calls() == []


def test_binary_for_another_abi_and_push_errors(phone, model_file, binary):
    phone.set(outputs={})   # the run prints nothing the parser knows
    with pytest.raises(DeviceError, match="printed no result"):
        benchmark_on_device(model_file, SERIAL, benchmark_binary=binary)
    phone.set(push_error="adb: error: failed to copy: No space left on device")
    with pytest.raises(DeviceError, match="No space left on device"):
        benchmark_on_device(model_file, SERIAL, benchmark_binary=binary)
    assert phone.calls()[-1][3:5] == ["rm", "-rf"]      # cleaned up after a failed push


def test_adb_not_installed_and_bad_arguments(tmp_path, monkeypatch, model_file, binary):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeviceError, match="not on PATH") as err:
        benchmark_on_device(model_file, SERIAL, benchmark_binary=binary)
    assert "apt-get install adb" in err.value.fix
    with pytest.raises(ConfigError, match="Did you mean gpu"):
        benchmark_on_device(model_file, SERIAL, delegate="gpuu", benchmark_binary=binary)
    with pytest.raises(ConfigError, match="threads"):
        benchmark_on_device(model_file, SERIAL, threads=0, benchmark_binary=binary)
    with pytest.raises(ConfigError, match="timeout_s"):
        benchmark_on_device(model_file, SERIAL, timeout_s=0, benchmark_binary=binary)
    with pytest.raises(ConfigError, match="adb serial"):
        benchmark_on_device(model_file, " ", benchmark_binary=binary)


# ================================================================================ the record
def test_device_record_says_where_it_was_measured(phone, model_file, binary):
    r = benchmark_on_device(model_file, SERIAL, delegate="gpu", benchmark_binary=binary)
    rec = device_record(r, device="pixel4", delegate="gpu", serial=SERIAL)
    assert rec["measured_where"] == "device" and rec["source"] == "adb"
    assert rec["measured_on"] == f"pixel4 (Pixel 4, Android 13; adb {SERIAL})"
    assert rec["device"]["name"] == "pixel4" and rec["device"]["android_version"] == "13"
    assert rec["latency_ms"] == r["latency_ms"] and rec["delegate_figure"] is True
    json.dumps(rec)   # plain JSON, to be written beside the manifest

    log = parse_benchmark_log(fixture("rpi4_gpu_unsupported_fell_back.txt"))
    rec = device_record(log, device="rpi4", delegate="gpu", source="log",
                        log_file="rpi4.txt")
    assert rec["delegate_applied"] == "xnnpack" and rec["delegate_figure"] is False
    assert rec["fallback"]["line"] == "GPU acceleration is unsupported on this platform."
    assert rec["measured_on"] == "rpi4 (model not reported; a saved log)"
    with pytest.raises(ConfigError, match="asked for the gpu delegate, not nnapi"):
        device_record(log, device="rpi4", delegate="nnapi", source="log")
    with pytest.raises(ConfigError, match="unknown source"):
        device_record(log, device="rpi4", delegate="gpu", source="host")
    unstated = parse_benchmark_log(fixture("mi11_tf24_cpu_fp32.txt"))   # no delegate in it
    assert unstated["delegate_requested"] is None and unstated["delegate_applied"] is None
    with pytest.raises(ConfigError, match="does not say which delegate"):
        device_record(unstated, device="mi11", delegate="cpu", source="log")


# =================================================================== config and the gate
def test_devices_config_defaults_and_errors():
    assert load_config(None).devices == []
    cfg = load_config({"devices": [{"name": "pixel4", "serial": SERIAL, "delegates": "gpu",
                                    "max_device_latency_ms": 120}]})
    dev = cfg.devices[0]
    assert (dev.name, dev.serial, dev.delegates, dev.queue) == \
        ("pixel4", SERIAL, ["gpu"], "device-pixel4")
    assert dev.max_device_latency_ms == 120.0 and dev.benchmark_binary is None
    assert cfg.to_dict()["devices"][0]["queue"] == "device-pixel4"
    cases = [
        ([{"name": "p", "serial": "a b"}], "devices[0].serial", "not a valid device serial"),
        ([{"name": "p"}], "devices[0].serial", "needs its serial"),
        ([{"name": "p", "serial": "x", "delegates": ["gpuu"]}], "devices[0].delegates[0]",
         "Did you mean gpu?"),
        ([{"name": "p", "serial": "x"}, {"name": "p", "serial": "y"}], "devices",
         "name 'p' is listed twice"),
        ([{"name": "p", "serial": "x"}, {"name": "q", "serial": "x"}], "devices",
         "serial 'x' is listed twice"),
        ([{"name": "p", "serial": "x", "max_latency": 3}], "devices[0]",
         "Did you mean devices[0].max_device_latency_ms?"),
        ([{"name": "p", "serial": "x", "max_device_latency_ms": -1}],
         "devices[0].max_device_latency_ms", "out of range"),
        ("pixel4", "devices", "expected a list of devices"),
    ]
    for devices, where, needle in cases:
        with pytest.raises(ConfigError) as err:
            load_config({"devices": devices})
        assert err.value.where == f"config: {where}" and needle in str(err.value), devices


def test_device_gate_not_measured_passes_unless_the_gate_is_set():
    free = DeviceConfig(name="pixel4", serial=SERIAL)
    gated = DeviceConfig(name="pixel4", serial=SERIAL, max_device_latency_ms=100)
    check = device_latency_check(free, None)
    assert check.passed and check.status == "not_measured" and "does not block" in check.detail
    check = device_latency_check(gated, None)
    assert not check.passed and check.status == "fail" and "needs a figure" in check.detail

    ok = parse_benchmark_log(fixture("android_gpu_full_delegation_issue43541.txt"))
    check = device_latency_check(gated, ok)
    assert (check.name, check.passed, check.value, check.threshold) == \
        ("device_latency:pixel4:gpu", False, 119.375, 100.0)
    check = device_latency_check({"name": "pixel4", "max_device_latency_ms": 150}, ok)
    assert check.passed and check.status == "pass"
    assert device_latency_check(free, ok).status == "off"

    fell_back = parse_benchmark_log(fixture("rpi4_gpu_unsupported_fell_back.txt"))
    check = device_latency_check({"name": "rpi4", "max_device_latency_ms": 1000}, fell_back)
    assert not check.passed and check.value is None       # 74 ms is not the GPU's figure
    assert "fell back to xnnpack" in check.detail
    assert device_latency_check({"name": "rpi4"}, fell_back).status == "not_measured"

    rejected = parse_benchmark_log(fixture("mi11_tf24_nnapi_qti_default_int8_failed.txt"))
    check = device_latency_check({"name": "mi11"}, rejected)
    assert check.passed and "could not run the model" in check.detail


# ================================================================================== the CLI
def _cli(*argv):
    from include.cli import main
    return main(list(argv))


def test_cli_help_offers_device(capsys):
    with pytest.raises(SystemExit):
        _cli("benchmark", "--help")
    out = capsys.readouterr().out
    assert "--device adb:SERIAL" in out and "--from-log FILE" in out and "--delegate" in out


def test_cli_from_log_gives_the_host_benchmark_keys(capsys):
    assert _cli("benchmark", "--from-log",
                str(FIXTURES / "zedboard_armv7_cpu_average_format.txt"), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert {"init_ms", "first_ms", "latency_ms", "model_memory_mb", "throughput_per_s"} <= set(out)
    assert out["latency_ms"]["mean"] == 747.733 and out["measured_where"] == "device"
    assert _cli("benchmark", "--from-log",
                str(FIXTURES / "mi11_tf24_nnapi_qti_default_int8_failed.txt")) == 1
    assert "COULD NOT RUN THE MODEL" in capsys.readouterr().out
    assert _cli("benchmark", "--from-log", str(FIXTURES / "rpi4_gpu_unsupported_fell_back.txt"),
                "--device", "rpi4") == 0
    out = capsys.readouterr().out
    assert "FALLBACK: the gpu delegate did not run" in out and "measured on rpi4" in out


def test_cli_device_run_through_the_standin(phone, model_file, binary, tmp_path, capsys):
    assert _cli("benchmark", "--model", str(model_file), "--device", f"adb:{SERIAL}",
                "--delegate", "xnnpack", "--benchmark-binary", str(binary), "--threads", "2",
                "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measured_where"] == "device" and out["device"]["model"] == "Pixel 4"
    assert out["latency_ms"]["mean"] == 899.641 and out["delegate_applied"] == "xnnpack"
    assert "--num_threads=2" in phone.calls()[-2]

    config = tmp_path / "config.yaml"
    config.write_text(f"devices:\n  - name: pixel4\n    serial: {SERIAL}\n"
                      f"    delegates: [cpu]\n    benchmark_binary: {binary}\n")
    assert _cli("benchmark", "--model", str(model_file), "--device", "pixel4",
                "--config", str(config)) == 0
    out = capsys.readouterr().out
    assert "measured on pixel4 (Pixel 4, Android 13" in out and "mean ms" in out
    assert _cli("benchmark", "--model", str(model_file), "--device", "pixel4", "--config",
                str(config), "--delegate", "gpu") == 2
    assert "configured for cpu, not gpu" in capsys.readouterr().err
    assert _cli("benchmark", "--model", str(model_file), "--device", f"adb:{SERIAL}") == 2
    assert "--benchmark-binary" in capsys.readouterr().err
    assert _cli("benchmark", "--model", str(model_file), "--device", "nosuch") == 2
    assert "no device named 'nosuch'" in capsys.readouterr().err


def test_cli_device_flags_need_a_device(capsys, model_file):
    assert _cli("benchmark", "--model", str(model_file), "--delegate", "gpu") == 2
    assert "applies to a device benchmark only" in capsys.readouterr().err
    assert _cli("benchmark") == 2
    assert "--model" in capsys.readouterr().err
