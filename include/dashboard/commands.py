"""CLI verb `dashboard`: serve the ops dashboard for one store with uvicorn."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="serve the releases dashboard of an artifact store "
                                         "(read-only; no login: keep it on 127.0.0.1)")
    p.add_argument("--store", default=None,
                   help="artifact store (folder or s3://bucket/prefix); default: "
                        "$MOBILEDET_STORE, else ./mobiledet-store")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--model", default=None, help="model name to open first (default: mobiledet)")
    p.add_argument("--conn-id", default=None, help="Airflow connection for s3:// stores "
                                                    "(default aws_default)")
    p.add_argument("--relist-s", type=float, default=30.0,
                   help="list a model's versions again at most this often (seconds)")
    p.set_defaults(func=cmd_dashboard)


def store_uri(given: str | None) -> str:
    from include.config import load_config

    if given:
        return given
    return load_config().store_uri


def cmd_dashboard(args) -> int:
    import uvicorn

    from include.dashboard.app import create_app
    from include.dashboard.reader import StoreReader
    from include.errors import ConfigError

    if not 0 < args.port < 65536:
        raise ConfigError(f"port {args.port} is out of range.", where="--port",
                          fix="use 1-65535, e.g. 8080.")
    reader = StoreReader(store_uri(args.store), conn_id=args.conn_id, model=args.model,
                         relist_s=args.relist_s)
    app = create_app(reader)
    print(f"MobileDet dashboard for {reader.store.base_uri} on http://{args.host}:{args.port}/ "
          "(read-only, no login)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
