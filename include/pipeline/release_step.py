"""The release step: one ops action (promote, yank, restore, bless, retry) from run params, and
the asset events of the consumer pointers it moved. The mobiledet_release DAG calls it; the
CLI's `mobiledet release` does the same actions on the store directly.
"""
from __future__ import annotations

from include.errors import ConfigError


def _need(params: dict, key: str, action: str) -> str:
    value = params.get(key)
    if not value:
        raise ConfigError(f"the {action} action needs `{key}`.", where=f"params.{key}",
                          fix=f"trigger mobiledet_release with conf {{\"action\": \"{action}\", "
                              f"\"{key}\": ...}}.")
    return value


def _opened(params: dict):
    from include.config import load_config
    from include.store import open_store

    overrides = {k: v for k, v in (("store_uri", params.get("store")),
                                   ("model_name", params.get("model_name"))) if v}
    config = load_config(params.get("config") or None, overrides=overrides)
    return config, open_store(config.store_uri, conn_id=config.conn_id)


def act(params: dict, *, who: str) -> dict:
    """Do the action `params["action"]` as `who`; returns its audit-log entry."""
    from include.store.ledger import Ledger
    from include.store.registry import Releases

    action = params.get("action")
    config, store = _opened(params)
    ops = Releases(store, config.model_name, channels=config.channels)
    if action == "retry":
        target = _need(params, "checkpoint", action)
        record = Ledger(store, config.model_name).retry(target, who=who)
        return ops.note("retry", who=who, reason=params.get("reason"),
                        checkpoint=record.get("uri"), fingerprint=record.get("fingerprint"))
    version = _need(params, "version", action)
    if action == "promote":
        return ops.promote(version, _need(params, "channel", action), params.get("variant"),
                           params.get("precision"), who=who, reason=params.get("reason"))
    if action == "yank":
        return ops.yank(version, who=who, reason=_need(params, "reason", action))
    if action == "restore":
        return ops.restore(version, who=who, reason=params.get("reason"))
    if action == "bless":
        return ops.bless(version, _need(params, "variant", action),
                         _need(params, "precision", action), who=who,
                         reason=_need(params, "reason", action))
    raise ConfigError(f"unknown action {action!r}.", where="params.action",
                      fix="one of promote, yank, restore, bless, retry.")


def pointer_events(params: dict, entry: dict) -> list[dict]:
    """One asset event per (variant, precision) whose automatic pointer the action moved:
    name ``mobiledet/MODEL/VARIANT/PRECISION``, extra the action and what the pointer names
    now (a yank: the release devices roll back to; None when nothing is left)."""
    from include.store import layout, pointer

    config, store = _opened(params)
    out = []
    for move in entry.get("moves") or []:
        where = layout.parse_pointer_key(f"{config.model_name}/{move.get('pointer', '')}")
        if not where or where[1] is None:
            continue
        variant, precision = where
        doc = pointer(store, config.model_name, variant, precision) or {}
        out.append({"name": layout.published_asset_name(config.model_name, variant, precision),
                    "uri": store.uri(layout.pointer_key(config.model_name, variant, precision)),
                    "extra": {"action": entry.get("action"), "model": config.model_name,
                              "variant": variant, "precision": precision,
                              "version": doc.get("version"), "from_version": move.get("from"),
                              "manifest_uri": doc.get("manifest_uri"),
                              "model_uri": doc.get("model_uri"), "sha256": doc.get("sha256"),
                              "metric": doc.get("metric"), "map": doc.get("map"),
                              "reason": entry.get("reason"), "who": entry.get("who")}})
    return out
