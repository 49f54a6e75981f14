"""A local S3 for tests: moto's server mode on 127.0.0.1, an Airflow connection pointing at it.

Use it through the ``s3_server`` session fixture (tests/conftest.py), which yields the endpoint
URL and sets ``AIRFLOW_CONN_AWS_DEFAULT`` for the whole session, or directly::

    with running_s3_server() as server:
        server.create_bucket("my-bucket")
        ...  # code using s3://my-bucket through the aws_default connection

The server listens on a free loopback port, start-up is bounded, and it is stopped (and its
state reset) on exit. Airflow caches one filesystem per (scheme, connection id) for the whole
process, so the helper drops the cached S3 filesystems when it sets or restores the connection.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import uuid
from contextlib import contextmanager
from typing import Iterator

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
START_TIMEOUT_S = 30


def connection_json(endpoint_url: str) -> str:
    """The JSON form of an Airflow AWS connection for `endpoint_url` (env var value)."""
    return json.dumps({
        "conn_type": "aws",
        "login": ACCESS_KEY,
        "password": SECRET_KEY,
        "extra": {"endpoint_url": endpoint_url, "region_name": REGION},
    })


def reset_airflow_fs_cache() -> None:
    """Forget Airflow's cached S3 filesystems so the next path re-reads its connection."""
    _store = sys.modules.get("airflow.sdk.io.store")
    if _store is None:  # Airflow's object storage not imported yet: nothing cached
        return
    for alias in [a for a in _store._STORE_CACHE if a.split("-")[0] in ("s3", "s3a", "s3n")]:
        _store._STORE_CACHE.pop(alias, None)


def s3_client(endpoint_url: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name=REGION,
                        config=Config(retries={"max_attempts": 2}, connect_timeout=5,
                                      read_timeout=30))


def create_bucket(endpoint_url: str, name: str | None = None) -> str:
    """Create a bucket (a unique name when none is given) and return its name."""
    name = name or f"test-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint_url).create_bucket(Bucket=name)
    return name


def count_objects(endpoint_url: str, bucket: str, prefix: str = "") -> int:
    client = s3_client(endpoint_url)
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        total += page.get("KeyCount", 0)
    return total


class S3Server:
    """moto's ThreadedMotoServer on 127.0.0.1 with a free port."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self._server = None
        self.endpoint_url: str | None = None

    def start(self) -> str:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        # ThreadedMotoServer.start() waits without a limit for the socket; bound the wait.
        starter = threading.Thread(target=server.start, daemon=True)
        starter.start()
        starter.join(START_TIMEOUT_S)
        if starter.is_alive():
            raise RuntimeError(f"moto S3 server did not start within {START_TIMEOUT_S}s")
        self._server = server
        host, port = server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self.endpoint_url

    def create_bucket(self, name: str | None = None) -> str:
        return create_bucket(self.endpoint_url, name)

    def stop(self) -> None:
        if self._server is None:
            return
        try:
            import requests

            requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=5)
        except Exception:
            pass
        self._server.stop()
        self._server = None


@contextmanager
def running_s3_server(conn_id: str = "aws_default") -> Iterator[S3Server]:
    """Start the server, point the Airflow connection `conn_id` at it; undo both on exit."""
    env_name = "AIRFLOW_CONN_" + conn_id.upper()
    saved = {k: os.environ.get(k) for k in (env_name, "NO_PROXY", "no_proxy")}
    server = S3Server()
    server.start()
    try:
        os.environ[env_name] = connection_json(server.endpoint_url)
        for var in ("NO_PROXY", "no_proxy"):  # never send loopback traffic through a proxy
            current = os.environ.get(var, "")
            os.environ[var] = ",".join(p for p in (current, "127.0.0.1,localhost") if p)
        reset_airflow_fs_cache()
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_airflow_fs_cache()
