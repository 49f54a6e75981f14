"""What the dashboard accepts from a request and what it lets out of the store.

* Every name taken from a URL (model, version, variant, precision, run id) must be one safe
  path segment, the same rule the store uses for the names it writes; a file key must be
  such segments joined by '/' and start at a model folder or ``runs/``. So ``..``, absolute
  paths, backslashes, empty segments and hidden files never reach the store.
* Everything shown passes through :func:`redact`: credentials in URLs (``user:secret@``),
  and values under keys that name secrets or connection extras, are replaced by ``***``.
"""
from __future__ import annotations

import re
from typing import Any

from include.errors import ConfigError, StoreError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
MASK = "***"
# File types the dashboard serves from the store, with the media type it sends.
MEDIA_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".json": "application/json", ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8", ".html": "text/html; charset=utf-8",
    ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml",
    ".tflite": "application/octet-stream",
}
# Served with a sandbox CSP: their scripts run, if at all, in an origin of their own.
ACTIVE_TYPES = (".html", ".svg", ".js")
# A key is secret when one of its words (split at '_', '-', '.', case-insensitive) is one of
# these, or it contains one of the compound names.
_SECRET_WORDS = {"password", "passwd", "secret", "token", "credential", "credentials",
                 "authorization", "extra", "extras", "cookie", "cookies"}
_SECRET_PARTS = ("access_key", "private_key", "api_key", "session_key", "conn_uri")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:]*):"
                           r"(?P<secret>[^/@\s]+)@")
_AWS_KEY = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


class NotFound(StoreError):
    """The release, run or file asked for is not in the store (HTTP 404)."""

    status_code = 404


class BadParameter(ConfigError):
    """A request parameter is not a safe name or key (HTTP 400)."""

    status_code = 400


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise BadParameter(f"{what} {str(value)[:80]!r} is not a release, model or run name.",
                           where=what, fix="use letters, digits, '.', '_' and '-' only, "
                                           "starting with a letter or digit.")
    return value


def check_key(key: Any, roots: set[str]) -> str:
    """A '/'-separated store key made of safe names, under one of `roots`, with a served type."""
    if not isinstance(key, str) or not key or len(key) > 1000:
        raise BadParameter("no file key given.", where="key", fix="pass a store key.")
    parts = key.split("/")
    for part in parts:
        check_name(part, "file key segment")
    if parts[0] not in roots or len(parts) < 2:
        raise NotFound(f"{key!r} is not a file the dashboard serves.", where="key",
                       fix="follow a link from a release or run page.")
    if suffix_of(key) not in MEDIA_TYPES:
        raise NotFound(f"{key!r}: files of this type are not served.", where="key",
                       fix="the dashboard serves pictures, JSON, Markdown, HTML reports and "
                           "models.")
    return key


def suffix_of(key: str) -> str:
    name = key.rpartition("/")[2]
    return "." + name.rpartition(".")[2].lower() if "." in name else ""


def _secret_key(key: str) -> bool:
    low = key.lower()
    return any(w in _SECRET_WORDS for w in re.split(r"[_.\-\s]+", low)) or \
        any(p in low for p in _SECRET_PARTS)


def redact_text(text: str) -> str:
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _AWS_KEY.sub(MASK, text)


def redact(obj: Any) -> Any:
    """A copy of `obj` with credentials and connection extras masked (see module doc)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = str(k)
            if _secret_key(key) and v not in (None, "", [], {}) and \
                    not isinstance(v, (bool, int, float)):
                out[key] = MASK
            else:
                out[key] = redact(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj
