"""The device side of `mobiledet benchmark`: --device (a phone over adb) and --from-log.

    mobiledet benchmark --model M --device adb:SERIAL [--delegate cpu|xnnpack|gpu|nnapi|hexagon]
                        [--benchmark-binary PATH] [--threads N] [--json]
    mobiledet benchmark --from-log FILE [--delegate D] [--device NAME] [--json]

`include/quality/commands.py` keeps the host benchmark; it calls `add_device_arguments` on its
parser and `run_device_benchmark(args)` first in its handler, which returns None when neither
--device nor --from-log was given (the host benchmark then runs as before).
"""
from __future__ import annotations

import argparse

from include.errors import ConfigError
from include.quality.device_log import DELEGATES

DEVICE_HELP = ("benchmark on a phone over adb with TFLite's benchmark_model instead of the host's "
               "LiteRT interpreter: adb:SERIAL (as `adb devices` lists it), or the name of a "
               "device in --config's devices list. With --from-log: the device the log came from")
EPILOG = ("On a phone (--device): the model and your Android build of benchmark_model are pushed "
          "to a fresh folder under /data/local/tmp, run with the delegate's flag, and removed. "
          "The result has the host benchmark's keys (init_ms, first_ms, latency_ms, memory) plus "
          "the phone's model and Android version and the delegate that actually ran; a fallback "
          "to the CPU is reported as one, never as the delegate's figure.")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """The device flags of `mobiledet benchmark` (the host flags stay as they are)."""
    parser.add_argument("--device", default=None, metavar="adb:SERIAL", help=DEVICE_HELP)
    parser.add_argument("--delegate", default=None, choices=DELEGATES,
                        help="with --device: the delegate to run (default cpu: XNNPACK off); with "
                             "--from-log: the delegate that was asked for (default: what the log "
                             "says)")
    parser.add_argument("--benchmark-binary", default=None, metavar="PATH",
                        help="with --device: the Android build of TFLite's benchmark_model to "
                             "push (default: the device's benchmark_binary in --config)")
    parser.add_argument("--from-log", default=None, metavar="FILE",
                        help="parse a saved benchmark_model output (either format) instead of "
                             "running anything")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="with --device: the pipeline config whose devices list gives the "
                             "device's name, benchmark binary and time limit")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="with --device: time limit of the run in seconds (default: the "
                             "device's timeout_s, else 600)")
    parser.epilog = EPILOG


def _configured(config_path, key: str, by: str):
    """The configured device whose name (by="name") or serial (by="serial") is `key`."""
    from include.config import load_config

    config = load_config(config_path)
    for dev in config.devices:
        if getattr(dev, by) == key:
            return dev
    if by == "serial":
        return None
    names = ", ".join(d.name for d in config.devices) or "none"
    raise ConfigError(f"no device named {key!r} in the config's devices (configured: {names}).",
                      where=f"--device {key}" + (f" (config {config_path})" if config_path else ""),
                      fix="write --device adb:SERIAL, or add the device to the config's devices "
                          "list and pass that config with --config.")


def resolve_device(spec: str, config_path=None):
    """--device value -> (name, serial, configured DeviceConfig or None)."""
    spec = (spec or "").strip()
    if spec.startswith("adb:"):
        serial = spec[4:].strip()
        if not serial:
            raise ConfigError("adb: names no serial.", where="--device",
                              fix="write --device adb:SERIAL (`adb devices` lists the serials).")
        dev = _configured(config_path, serial, "serial") if config_path else None
        return (dev.name if dev else serial), serial, dev
    if ":" in spec:
        raise ConfigError(f"unsupported device {spec!r}; only adb devices can be benchmarked.",
                          where="--device", fix="write --device adb:SERIAL.")
    if not spec:
        raise ConfigError("--device is empty.", where="--device", fix="write --device adb:SERIAL.")
    dev = _configured(config_path, spec, "name")
    return dev.name, dev.serial, dev


def _check_flags(args) -> None:
    device, from_log = args.device, args.from_log
    if device is None and from_log is None:
        for flag, value in (("--delegate", args.delegate),
                            ("--benchmark-binary", args.benchmark_binary),
                            ("--config", args.config), ("--timeout", args.timeout)):
            if value is not None:
                raise ConfigError(f"{flag} applies to a device benchmark only.", where=flag,
                                  fix="add --device adb:SERIAL (or --from-log FILE), or drop "
                                      f"{flag} for the host benchmark.")
        if args.model is None:
            raise ConfigError("the model to benchmark is missing.", where="--model",
                              fix="pass --model M.tflite, or --from-log FILE for a saved "
                                  "benchmark_model output.")
    elif from_log is not None:
        for flag, value in (("--benchmark-binary", args.benchmark_binary),
                            ("--timeout", args.timeout)):
            if value is not None:
                raise ConfigError(f"{flag} applies to a run on a device, not to --from-log.",
                                  where=flag, fix=f"drop {flag}.")
    elif args.model is None:
        raise ConfigError("the model to benchmark on the device is missing.", where="--model",
                          fix="pass --model M.tflite.")


def run_device_benchmark(args: argparse.Namespace) -> int | None:
    """Handle --device / --from-log; None when neither was given (the host benchmark runs)."""
    _check_flags(args)
    if args.from_log is not None:
        return _from_log(args)
    if args.device is None:
        return None
    from include.quality.device import benchmark_on_device, device_record

    name, serial, dev = resolve_device(args.device, args.config)
    delegate = args.delegate or "cpu"
    if dev is not None and delegate not in dev.delegates:
        raise ConfigError(f"device {dev.name} is configured for {', '.join(dev.delegates)}, "
                          f"not {delegate}.", where="--delegate",
                          fix=f"use one of those, or add {delegate} to its delegates.")
    binary = args.benchmark_binary or (dev.benchmark_binary if dev else None)
    timeout = args.timeout if args.timeout is not None else (dev.timeout_s if dev else 600.0)
    result = benchmark_on_device(args.model, serial, delegate=delegate, benchmark_binary=binary,
                                 threads=args.threads, timeout_s=timeout, runs=args.runs,
                                 warmup=args.warmup)
    record = device_record(result, device=name, delegate=delegate, serial=serial, source="adb")
    return _show(args, record, extra={"log": result["log"], "adb_calls": result["adb_calls"]})


def _from_log(args) -> int:
    from pathlib import Path

    from include.errors import DataError
    from include.quality.device import device_record
    from include.quality.device_log import parse_benchmark_log

    path = Path(args.from_log).expanduser()
    if not path.is_file():
        raise DataError("the benchmark_model log does not exist.", where=str(path),
                        fix="pass the file you saved benchmark_model's output in.")
    text = path.read_text(encoding="utf-8", errors="replace")
    parsed = parse_benchmark_log(text, delegate=args.delegate, where=str(path))
    if args.device:
        name, serial = args.device, None
        if args.device.startswith("adb:"):
            name = serial = args.device[4:].strip() or args.device
        asked = parsed["delegate_requested"]
        if asked is None:
            raise ConfigError("the log does not say which delegate was asked for.",
                              where="--delegate", fix="pass --delegate with --device.")
        record = device_record(parsed, device=name, delegate=asked, serial=serial,
                               source="log", log_file=str(path))
    else:
        record = {"measured_where": "device", "measured_with": "TFLite benchmark_model",
                  "source": "log", "log_file": str(path), **parsed}
    return _show(args, record)


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _show(args, record: dict, extra: dict | None = None) -> int:
    from include.console import format_table, print_json

    ok = record["status"] == "ok"
    if args.json:
        print_json({**record, **(extra or {})} if args.device and not args.from_log else record)
        return 0 if ok else 1
    dev = record.get("device") or {}
    on = record.get("measured_on") or f"the device of {record.get('log_file')}"
    print(f"measured on {on} with TFLite benchmark_model (not the host)")
    if dev.get("model") or dev.get("android_version"):
        print(f"device: {dev.get('manufacturer') or ''} {dev.get('model') or '?'}, Android "
              f"{dev.get('android_version') or '?'} (SDK {dev.get('sdk') or '?'}, "
              f"{dev.get('abi') or '?'})".replace("  ", " "))
    asked, ran = record.get("delegate_requested"), record.get("delegate_applied")
    print(f"delegate: asked {asked or 'not stated'}, ran {ran or 'not reported'} "
          f"({record.get('delegation')})")
    fallback = record.get("fallback")
    if fallback and not fallback.get("partial"):
        print(f"FALLBACK: the {asked} delegate did not run; the figures below are "
              f"{fallback.get('to')}'s. The tool said: {fallback.get('line')}")
    elif fallback:
        print(f"partial delegation; the rest runs on the CPU. The tool said: {fallback['line']}")
    for op in record.get("unsupported_ops") or []:
        print(f"  not supported by the delegate: {op}")
    for warning in record.get("warnings") or []:
        print(f"note: {warning}")
    if not ok:
        what = ("the delegate could not run the model" if record["status"] == "delegate_rejected"
                else "the benchmark failed")
        print(f"{what.upper()}:")
        for line in record.get("errors") or []:
            print(f"  {line}")
        return 1
    lat = record["latency_ms"]
    keys = [k for k in ("min", "mean", "p50", "p5", "p95", "max", "std") if k in lat]
    print(format_table([[_fmt(lat[k]) for k in keys]], [f"{k} ms" for k in keys]))
    runs = record.get("runs")
    print(f"init {_fmt(record.get('init_ms'), 1)} ms, first inference "
          f"{_fmt(record.get('first_ms'), 1)} ms, {_fmt(record.get('throughput_per_s'), 1)} "
          f"images/s" + (f", {runs} runs" if runs else ""))
    mem = record.get("memory")
    if mem:
        print(f"memory (the tool's own figure, approximate): {mem['reported_as']}")
    return 0
