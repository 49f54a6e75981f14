"""Shared pytest fixtures. Keep each fixture small; heavier helpers live in their own modules."""
from __future__ import annotations

import os
import tempfile

import pytest

# Airflow reads its settings when first imported (the store imports it), so the test session's
# own AIRFLOW_HOME is set before any test module loads: a fresh metadata DB per session, this
# repository's dags/ folder, no example DAGs, and nothing of the user's ~/airflow touched.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="mobiledet-tests-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "dags")
os.environ["GX_ANALYTICS_ENABLED"] = "false"
# dag.test() waits out retry delays; the tests make failures happen on purpose, so tasks fail
# on the first attempt here (include/deploy/task_policy.py; test_task_policy checks retries).
os.environ["MOBILEDET_TASK_RETRIES"] = "0"
os.environ.pop("EDGETPU_COMPILER", None)

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


@pytest.fixture(scope="session")
def airflow_db():
    """The session's Airflow metadata DB (SQLite), migrated once."""
    from include.deploy.airflow_env import prepare_airflow
    return prepare_airflow(_AIRFLOW_HOME)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """An empty artifact store: a local folder, then a prefix of a fresh S3 bucket."""
    from include.store import ArtifactStore

    if request.param == "local":
        return ArtifactStore(str(tmp_path / "store"))
    bucket = request.getfixturevalue("s3_bucket")
    return ArtifactStore(f"s3://{bucket}/artifacts", conn_id="aws_default")
