"""The docker-compose deployment's preflight: refuse to start with the placeholder or weak
secrets of `.env.example`, or without a Fernet key.

docker-compose.yaml runs this as its first one-shot service (`preflight`); every other service
waits for it to complete successfully, so a `.env` copied from `.env.example` and not filled in
starts nothing, not even the database with a `change-me` password. Run it by hand with

    python -m include.deploy.preflight --env-file .env

It exits 0 when the environment is fit to start, else 1 with one line per problem, each naming
the variable and how to make a real value.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping

#: the secrets every deployment must set to real values
SECRETS = ("POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",
           "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY")
#: signing keys: long random tokens, not passwords a person types
SIGNING_KEYS = ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY")
MIN_PASSWORD = 12
MIN_SIGNING_KEY = 32
MINIO_MIN_USER = 3           # MinIO's own minimums: 3 for the user, 8 for the password
PLACEHOLDER = "change-me"
TOKEN_FIX = "python -c \"import secrets; print(secrets.token_urlsafe(32))\""
FERNET_FIX = ("python -c \"from cryptography.fernet import Fernet; "
              "print(Fernet.generate_key().decode())\"")


def problems(env: Mapping[str, str]) -> list[str]:
    """What keeps `env` (the compose environment) from starting; empty when it may start."""
    out = []
    for name in SECRETS:
        value = str(env.get(name) or "")
        minimum = (MIN_SIGNING_KEY if name in SIGNING_KEYS else
                   MINIO_MIN_USER if name == "MINIO_ROOT_USER" else MIN_PASSWORD)
        fix = f"make one with {TOKEN_FIX}" if name != "MINIO_ROOT_USER" else \
            "choose a user name for MinIO's root account"
        if not value:
            out.append(f"{name} is not set. Fix: set it in .env; {fix}.")
        elif PLACEHOLDER in value.lower():
            out.append(f"{name} is still the placeholder of .env.example ({value!r}). Fix: "
                       f"replace it in .env; {fix}.")
        elif len(value) < minimum:
            out.append(f"{name} is {len(value)} characters; at least {minimum} are needed. "
                       f"Fix: {fix}.")
    out += _fernet_problems(str(env.get("AIRFLOW_FERNET_KEY") or ""))
    return out


def _fernet_problems(key: str) -> list[str]:
    if not key:
        return [f"AIRFLOW_FERNET_KEY is empty: Airflow would store connection passwords (the S3 "
                f"login of aws_default among them) in clear in its database. Fix: set it in "
                f".env to a key made with {FERNET_FIX}."]
    try:
        from cryptography.fernet import Fernet
        Fernet(key.encode())
    except ImportError:            # the image has cryptography (Airflow needs it); a bare host
        return []                  # may not: the shape check still ran
    except Exception as exc:       # noqa: BLE001 - the library's own message is the reason
        return [f"AIRFLOW_FERNET_KEY is not a Fernet key ({exc}). Fix: make one with "
                f"{FERNET_FIX}."]
    return []


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped; quotes stripped)."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[key.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.deploy.preflight",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", help="read the variables from this .env file instead of "
                                           "the process environment")
    args = parser.parse_args(argv)
    env = read_env_file(args.env_file) if args.env_file else dict(os.environ)
    found = problems(env)
    for line in found:
        print(f"preflight: {line}", file=sys.stderr)
    if found:
        print(f"preflight: refusing to start ({len(found)} problem(s) above).", file=sys.stderr)
        return 1
    print("preflight: secrets and Fernet key set; starting.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
