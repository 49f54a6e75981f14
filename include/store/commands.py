"""CLI verbs over the store: `checkpoints` (the ledger: list, retry) and `prune` (retention)."""
from __future__ import annotations

from include.console import format_table, print_json


def _store_args(p) -> None:
    p.add_argument("--store", default=None, help="artifact store (folder or s3://bucket/prefix; "
                                                 "default: the config's store_uri)")
    p.add_argument("--config", default=None, help="pipeline config file (YAML or JSON)")
    p.add_argument("--model", default=None, help="model name (default: the config's)")
    p.add_argument("--json", action="store_true")


def register(sub) -> None:
    p = sub.add_parser("checkpoints", help="the checkpoint ledger: every landed checkpoint and "
                                           "what came of it; `retry` re-queues one")
    p.add_argument("action", nargs="?", choices=("list", "retry"), default="list")
    p.add_argument("target", nargs="?", metavar="URI_OR_FINGERPRINT",
                   help="retry: the checkpoint's URI or fingerprint")
    _store_args(p)
    p.set_defaults(func=cmd_checkpoints)

    r = sub.add_parser("prune", help="apply the retention policy: old releases no pointer or "
                                     "channel names, intermediate files of finished runs")
    _store_args(r)
    r.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    r.add_argument("--keep", type=int, default=None, metavar="N",
                   help="newest releases kept per model (default: retention.keep_releases)")
    r.set_defaults(func=cmd_prune)


def _opened(args):
    from include.config import load_config
    from include.store import open_store

    overrides = {"store_uri": args.store} if args.store else {}
    if args.model:
        overrides["model_name"] = args.model
    config = load_config(args.config, overrides=overrides)
    return config, open_store(config.store_uri, conn_id=config.conn_id)


def cmd_checkpoints(args) -> int:
    import getpass

    from include.errors import ConfigError
    from include.store.ledger import Ledger, as_json, order_for_people

    config, store = _opened(args)
    ledger = Ledger(store, config.model_name, **config.ledger.model_dump())
    if args.action == "retry":
        if not args.target:
            raise ConfigError("retry needs the checkpoint to re-queue.", where="checkpoints retry",
                              fix="pass its URI or fingerprint: mobiledet checkpoints retry "
                                  "s3://bucket/ckpts/edgetpu-qat")
        from include.store.registry import Releases

        record = ledger.retry(args.target, who=getpass.getuser())
        Releases(store, config.model_name, channels=config.channels).note(
            "retry", who=getpass.getuser(), checkpoint=record.get("uri"),
            fingerprint=record.get("fingerprint"))
        if args.json:
            print_json(as_json([record])[0])
        else:
            print(f"{record['uri']} ({record['id'][:12]}) is landed again: the next run "
                  "(a landing, or the ledger's safety net) converts it")
        return 0
    records = order_for_people(ledger.records())
    if args.json:
        print_json(as_json(records))
        return 0
    rows = [[r.get("state"), r.get("attempts"), (r.get("id") or "")[:12], r.get("uri"),
             r.get("version") or "-", (r.get("reason") or "-")[:80], r.get("updated")]
            for r in records]
    print(format_table(rows, ["state", "attempts", "fingerprint", "uri", "version", "reason",
                              "updated"]) if rows else f"the ledger of {config.model_name} in "
                                                       f"{store.base_uri} is empty")
    return 0


def cmd_prune(args) -> int:
    from include.errors import ConfigError
    from include.store.retention import prune

    config, store = _opened(args)
    policy = config.retention
    if args.keep is not None:
        if args.keep < 1:
            raise ConfigError(f"--keep {args.keep} would delete every release.", where="--keep",
                              fix="keep at least 1 (pointers keep what they name anyway).")
        policy = policy.model_copy(update={"keep_releases": args.keep})
    result = prune(store, policy, dry_run=args.dry_run,
                   models=[args.model] if args.model else None)
    if args.json:
        print_json(result)
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for model, plan in result["models"].items():
        print(f"{model}: {len(plan['kept'])} release(s) kept, {len(plan['deleted'])} {verb}")
        for rel in plan["kept"]:
            print(f"  keep    {rel['version']}  ({rel['why']})")
        for rel in plan["deleted"]:
            print(f"  {verb:7} {rel['version']}")
    runs = result["runs"]
    print(f"runs: {len(runs['deleted'])} {verb}, {len(runs['trimmed'])} trimmed to their report "
          f"and failures, {len(runs['kept'])} kept")
    if not args.dry_run:
        print(f"{result['deleted_files']} file(s) deleted from {store.base_uri}")
    return 0
