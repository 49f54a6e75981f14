"""Shared pytest fixtures. Keep each fixture small; heavier helpers live in their own modules."""
from __future__ import annotations

import pytest

try:  # tests/ is put on sys.path by pytest (rootdir-relative imports also work)
    from s3server import create_bucket, running_s3_server
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.s3server import create_bucket, running_s3_server


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of a moto S3 server on 127.0.0.1; AIRFLOW_CONN_AWS_DEFAULT points at it."""
    with running_s3_server() as server:
        yield server.endpoint_url


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, empty bucket on the session's S3 server; yields its name."""
    return create_bucket(s3_server)
