"""CLI verb `config`: show the pipeline config a run would use, or its JSON schema.

    mobiledet config                         the resolved config (defaults < file < env < --set)
    mobiledet config --config p.yaml --set gates.min_map=0.3 --json
    mobiledet config --schema                the JSON schema of a config file
"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("config", help="print the resolved pipeline config (validated), or its "
                                      "JSON schema with --schema")
    p.add_argument("--schema", action="store_true",
                   help="print the JSON schema of the config file (always JSON)")
    p.add_argument("--config", default=None, help="pipeline config file (YAML or JSON)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. gates.min_map=0.3 (JSON values allowed)")
    p.add_argument("--json", action="store_true", help="print the config as JSON")
    p.set_defaults(func=cmd_config)


def cmd_config(args) -> int:
    import sys

    from include.config import config_schema, load_config, parse_overrides
    from include.console import print_json

    if args.schema:
        print_json(config_schema())
        return 0
    cfg = load_config(args.config, overrides=parse_overrides(args.set))
    if args.json:
        print_json({"config": cfg.to_dict(), "warnings": list(cfg.warnings)})
        return 0
    import yaml

    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None), end="")
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
