"""Storage errors as StoreErrors that name the location, the problem and the fix.

One translator for every store operation, local or S3, sync or async: file-system errors
(missing, permission, disk), botocore/aiobotocore/s3fs errors by their S3 error code (a missing
bucket, refused credentials, access denied, an endpoint that cannot be reached, an Airflow
connection that is not defined). s3fs turns botocore errors into OSErrors and keeps the
original as ``__cause__``; the code is read from there.
"""
from __future__ import annotations

from contextlib import contextmanager

from include.errors import StoreError

CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                    "TokenRefreshRequired", "InvalidClientTokenId", "UnrecognizedClientException")
DENIED_CODES = ("AccessDenied", "403", "AllAccessDisabled")
UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
               "ConnectionClosedError", "ClientConnectorError", "ConnectError")
_S3_MODULES = ("botocore", "aiobotocore", "s3fs", "aiohttp")


def connection_hint(conn_id: str | None) -> str:
    """What to check about the Airflow connection of an s3:// location."""
    if not conn_id:
        return ("no Airflow connection was given, so boto3's default credentials were used; "
                "pass a conn_id or set AWS credentials")
    env = "AIRFLOW_CONN_" + conn_id.upper()
    return (f"check the Airflow connection {conn_id!r} (environment variable {env} or the "
            "Airflow connections list): endpoint_url and region_name in its extra, login/password "
            "(access key / secret), and that the bucket exists")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _s3_code(exc: BaseException) -> tuple[str, str]:
    """(S3 error code or '', class name of the most specific error) along the cause chain."""
    names = []
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            if code:
                return code, type(e).__name__
        names.append(type(e).__name__)
    for name in names:
        if name in UNREACHABLE or name in ("NoCredentialsError", "PartialCredentialsError",
                                           "AirflowNotFoundException"):
            return "", name
    return "", names[0] if names else ""


def is_s3_error(exc: BaseException) -> bool:
    return any(type(e).__module__.split(".")[0] in _S3_MODULES
               or type(e).__name__ in ("AirflowNotFoundException",) for e in _chain(exc))


def s3_error(exc: BaseException, action: str, uri: str, conn_id: str | None) -> StoreError:
    """An S3 failure -> StoreError naming the problem and the fix (by its error code)."""
    env = "AIRFLOW_CONN_" + (conn_id or "aws_default").upper()
    code, name = _s3_code(exc)
    if code in ("NoSuchBucket",):
        return StoreError(f"cannot {action}: the bucket does not exist ({code}).", where=uri,
                          fix="create the bucket, or correct the bucket name in the store "
                              f"setting; if it exists, check endpoint_url and region_name in "
                              f"the extra of the Airflow connection {conn_id!r} ({env}).")
    if code in CREDENTIAL_CODES:
        return StoreError(f"cannot {action}: permission denied: S3 refused the credentials "
                          f"({code}).", where=uri,
                          fix=f"set a valid access key and secret in the Airflow connection "
                              f"{conn_id!r} (login/password, or {env}).")
    if code in DENIED_CODES:
        return StoreError(f"cannot {action}: permission denied: access denied ({code}).",
                          where=uri,
                          fix=connection_hint(conn_id) + "; the credentials also need "
                              "s3:ListBucket, s3:GetObject and s3:PutObject on the bucket and "
                              "prefix.")
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return StoreError(f"cannot {action}: no AWS credentials were found ({name}).", where=uri,
                          fix=connection_hint(conn_id) + ".")
    if name in UNREACHABLE:
        return StoreError(f"cannot {action}: the S3 endpoint cannot be reached ({name}: {exc}).",
                          where=uri, fix=f"check endpoint_url in the extra of the Airflow "
                                         f"connection {conn_id!r} ({env}), and that the S3 server "
                                         "is up and reachable from this machine.")
    if name == "AirflowNotFoundException":
        return StoreError(f"cannot {action}: the Airflow connection {conn_id!r} is not defined.",
                          where=uri, fix=f"define it (environment variable {env}, or `airflow "
                                         "connections add`), or pass conn_id=None to use boto3's "
                                         "default credentials.")
    return StoreError(f"cannot {action}: {type(exc).__name__}: {exc}", where=uri,
                      fix=connection_hint(conn_id) + ".")


@contextmanager
def storage_errors(action: str, uri: str, conn_id: str | None = None, local: bool = True):
    """Turn file-system and S3 errors raised inside into StoreError naming the URI and the fix."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure gets a message with its fix
        raise storage_error(exc, action, uri, conn_id, local) from exc


def storage_error(exc: BaseException, action: str, uri: str, conn_id: str | None,
                  local: bool) -> BaseException:
    """The StoreError for `exc` (or `exc` itself when it is not a storage failure)."""
    if isinstance(exc, StoreError):
        return exc
    if not local and is_s3_error(exc) and _s3_code(exc)[0] not in ("NoSuchKey", "404"):
        return s3_error(exc, action, uri, conn_id)
    if isinstance(exc, FileNotFoundError):
        return StoreError(f"cannot {action}: nothing exists at {uri} ({exc}).", where=uri,
                          fix="check the key or URI; it must name a file written earlier by the "
                              "pipeline." + ("" if local else " Also " + connection_hint(conn_id)
                                             + "."))
    if isinstance(exc, PermissionError):
        return StoreError(f"cannot {action}: permission denied ({exc}).", where=uri,
                          fix=("make the folder writable by the user running the pipeline."
                               if local else connection_hint(conn_id) + "."))
    if isinstance(exc, (OSError, ValueError)):
        return StoreError(f"cannot {action}: {type(exc).__name__}: {exc}", where=uri,
                          fix=("check that the disk has space and the path is a folder."
                               if local else connection_hint(conn_id) + "."))
    if not local and is_s3_error(exc):
        return s3_error(exc, action, uri, conn_id)
    return exc
