"""CLI verb `release`: what ops do to published releases, recorded in the audit log.

    mobiledet release promote VERSION --channel NAME [--variant V --precision P]
    mobiledet release yank VERSION --reason TEXT
    mobiledet release restore VERSION [--reason TEXT]
    mobiledet release bless VERSION VARIANT/PRECISION --reason TEXT
    mobiledet release history [--version V] [--variant V --precision P] [--json]
    mobiledet release attach-benchmark VERSION VARIANT/PRECISION --log FILE --device NAME
                                       --delegate D

Each acts on the store directly, as the OS user; with `--airflow URL` it triggers the
`mobiledet_release` DAG instead, so the action runs with Airflow's own authentication, shows in
its UI and REST API, and emits the asset events a roll-out DAG schedules on.
"""
from __future__ import annotations

from include.console import format_table, print_json

ACTIONS = ("promote", "yank", "restore", "bless", "history", "attach-benchmark")


def register(sub) -> None:
    p = sub.add_parser("release", help="channels, yank and restore, force-bless, the audit "
                                       "log of published releases")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("version", nargs="?", help="the release (e.g. v20261130T120000Z-1a2b3c4d)")
    p.add_argument("model_pair", nargs="?", metavar="VARIANT/PRECISION",
                   help="bless, attach-benchmark: which model of the release")
    p.add_argument("--channel", default=None, help="promote: the channel to move")
    p.add_argument("--variant", default=None)
    p.add_argument("--precision", default=None)
    p.add_argument("--reason", default=None, help="why (yank and bless need one)")
    p.add_argument("--log", default=None, help="attach-benchmark: a saved benchmark_model output")
    p.add_argument("--device", default=None, help="attach-benchmark: the device's name")
    p.add_argument("--delegate", default=None, help="attach-benchmark: the delegate asked for")
    p.add_argument("--store", default=None, help="artifact store (default: the config's)")
    p.add_argument("--config", default=None, help="pipeline config file (YAML or JSON)")
    p.add_argument("--model", default=None, help="model name (default: the config's)")
    p.add_argument("--json", action="store_true")
    from include.deploy.run_commands import add_airflow_arguments
    add_airflow_arguments(p)   # --airflow URL, --user, --password, --timeout
    p.set_defaults(func=cmd_release)


def _need(value, what: str, example: str):
    from include.errors import ConfigError
    if not value:
        raise ConfigError(f"this action needs {what}.", where="mobiledet release",
                          fix=f"e.g. {example}")
    return value


def _pair(text: str | None, action: str) -> tuple[str, str]:
    from include.errors import ConfigError

    text = _need(text, "the model as VARIANT/PRECISION",
                 f"mobiledet release {action} v2026... edgetpu/int8 ...")
    variant, sep, precision = text.partition("/")
    if not sep or not variant or not precision:
        raise ConfigError(f"{text!r} is not VARIANT/PRECISION.", where="mobiledet release",
                          fix="e.g. edgetpu/int8")
    return variant, precision


def cmd_release(args) -> int:
    import getpass

    from include.config import load_config
    from include.store import open_store
    from include.store.registry import Releases

    overrides = {"store_uri": args.store} if args.store else {}
    if args.model:
        overrides["model_name"] = args.model
    config = load_config(args.config, overrides=overrides)
    if getattr(args, "airflow", None) and args.action != "history":
        return _via_airflow(args, config)
    store = open_store(config.store_uri, conn_id=config.conn_id)
    ops = Releases(store, config.model_name, channels=config.channels)
    who = getpass.getuser()
    if args.action == "history":
        entries = ops.history(args.version, args.variant, args.precision)
        if args.json:
            print_json(entries)
        else:
            rows = [[e.get("seq"), e.get("at"), e.get("who"), e.get("action"),
                     e.get("version") or "-", e.get("channel") or "-",
                     (e.get("reason") or "-")[:60],
                     "; ".join(f"{m.get('pointer') or m.get('channel') + '/' + str(m.get('pair'))}"
                               f": {m.get('from')} -> {m.get('to')}"
                               for m in e.get("moves") or [])[:80] or "-"]
                    for e in entries]
            print(format_table(rows, ["seq", "when", "who", "action", "version", "channel",
                                      "why", "moves"]) if rows else "no action recorded yet")
        return 0
    version = _need(args.version, "the release's version",
                    "mobiledet release yank v20261130T120000Z-1a2b3c4d --reason ...")
    if args.action == "promote":
        entry = ops.promote(version, _need(args.channel, "--channel", "--channel stable"),
                            args.variant, args.precision, who=who, reason=args.reason)
    elif args.action == "yank":
        entry = ops.yank(version, who=who, reason=args.reason)
    elif args.action == "restore":
        entry = ops.restore(version, who=who, reason=args.reason)
    elif args.action == "bless":
        variant, precision = _pair(args.model_pair, "bless")
        entry = ops.bless(version, variant, precision, who=who, reason=args.reason)
    else:
        entry = _attach(ops, store, config, version, args, who)
    if args.json:
        print_json(entry)
    else:
        _say(entry)
    return 0


def _attach(ops, store, config, version: str, args, who: str) -> dict:
    """attach-benchmark: a saved benchmark_model output, parsed, kept beside the release."""
    from pathlib import Path

    from include.errors import ConfigError
    from include.quality.device import device_record
    from include.quality.device_log import parse_benchmark_log
    from include.store import layout, read_manifest

    variant, precision = _pair(args.model_pair, "attach-benchmark")
    log = Path(_need(args.log, "--log FILE", "--log pixel4-gpu.txt"))
    if not log.is_file():
        raise ConfigError("the benchmark log does not exist.", where=str(log),
                          fix="pass the file benchmark_model's output was saved to.")
    manifest = read_manifest(store, config.model_name, version)
    pairs = {f"{e['variant']}/{e['precision']}" for e in manifest.get("published") or []}
    if f"{variant}/{precision}" not in pairs | set(ops.state()["blessed"].get(version) or {}):
        raise ConfigError(f"{variant}/{precision} is not a published model of {version} "
                          f"(published: {', '.join(sorted(pairs)) or 'none'}).",
                          where=f"release attach-benchmark {version}",
                          fix="attach the figures to a published model of the release.")
    device = _need(args.device, "--device NAME", "--device pixel4")
    delegate = _need(args.delegate, "--delegate D", "--delegate gpu")
    parsed = parse_benchmark_log(log.read_text(errors="replace"), delegate=delegate,
                                 where=str(log))
    record = device_record(parsed, device=device, delegate=delegate, source="log",
                           log_file=str(log))
    key = layout.device_benchmark_key(config.model_name, version, variant, precision,
                                      device, delegate)
    if not store.create_json(key, {**record, "attached_by": who}, sort_keys=False):
        raise ConfigError(f"a {device}/{delegate} benchmark of {variant}/{precision} is "
                          f"attached to {version} already.", where=store.uri(key),
                          fix="records are never rewritten: attach it under another device "
                              "name (e.g. pixel4-2).")
    return ops.note("attach-benchmark", who=who, reason=f"{device} {delegate}",
                    version=version, variant=variant, precision=precision,
                    record=store.uri(key),
                    latency_ms=(record.get("latency_ms") or {}).get("mean"))


def _say(entry: dict) -> None:
    if entry.get("noop"):
        print(entry["noop"])
        return
    print(f"{entry['action']} {entry.get('version') or ''} by {entry['who']} (#{entry['seq']})")
    for m in entry.get("moves") or []:
        what = m.get("pointer") or f"channel {m.get('channel')} {m.get('pair')}"
        print(f"  {what}: {m.get('from') or 'nothing'} -> {m.get('to') or 'no release'}")


def _via_airflow(args, config) -> int:
    """Trigger mobiledet_release on a running deployment and follow it; 0 when it succeeded."""
    from include.deploy.client import trigger_and_follow

    variant, precision = args.variant, args.precision
    if args.model_pair:
        variant, _, precision = args.model_pair.partition("/")
    conf = {"action": args.action, "version": args.version, "channel": args.channel,
            "variant": variant, "precision": precision, "reason": args.reason,
            "store": args.store, "model_name": args.model}
    final = trigger_and_follow(args.airflow, {k: v for k, v in conf.items() if v},
                               username=args.user, password=args.password,
                               dag_id="mobiledet_release", timeout=args.timeout,
                               out=lambda line: print(line, flush=True))
    return 0 if final.get("state") == "success" else 1
