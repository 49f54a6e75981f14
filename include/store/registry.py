"""Release operations: channels, yank and restore, force-bless, and the audit log.

A release is immutable (its manifest is never rewritten); what ops change is recorded beside
it and in one small document per model, ``MODEL/registry.json``, which every action updates by
compare-and-set (S3 ``IfMatch``, a local ``flock``), so concurrent actions are serialised and
each sees the one before it. Its ``seq`` numbers the actions; the audit log
(``MODEL/history/SEQ-ACTION.json``, one object per action, created once) explains each move:
who (the Airflow user or the OS user), when, what, why, and which pointers moved where.

What readers use is derived from it and written after it, each file by compare-and-set on the
registry's ``seq`` (a slower writer of an older state never overwrites a newer one):

* channels: ``MODEL/channels/NAME/VARIANT/PRECISION.json``, like the consumer pointers, moved
  by hand to any release (``promote``, either direction), and back to the channel's previous
  release when the one it names is yanked;
* yank records: ``MODEL/VERSION/yank.json`` while a release is yanked;
* the automatic pointers (``MODEL/latest...``) never name a yanked release: a yank moves every
  pointer that named it back to the newest release of that (variant, precision) that is not
  yanked, or to a "no release" document when there is none; a restore moves them forward again;
* blessed models: ``MODEL/VERSION/blessed/VARIANT/PRECISION/`` (the files and ``bless.json``):
  a model the gate rejected, published by hand with its reason; the pointers consider it like a
  published model and say it was blessed.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any, Callable

from include.errors import ConfigError, StoreError
from include.store import layout
from include.store.pointers import LATEST_SCHEMA, order
from include.store.releases import now_iso, read_manifest
from include.store.store import ArtifactStore

SCHEMA = "mobiledet.registry/1"
PREVIOUS_KEPT = 20
ACTIONS = ("promote", "yank", "restore", "bless", "retry", "auto-promote")


def pair(variant: str, precision: str) -> str:
    return f"{variant}/{precision}"


class Releases:
    """The release operations of one model in one store (see the module doc)."""

    def __init__(self, store: ArtifactStore, model: str, *, channels=("canary", "stable"),
                 clock: Callable[[], _dt.datetime] | None = None):
        self.store = store
        self.model = layout.check_name(model, "model name")
        self.channels = tuple(channels)
        self.clock = clock or (lambda: _dt.datetime.now(_dt.timezone.utc))

    # -- reading --------------------------------------------------------------------------
    def state(self) -> dict:
        return self.store.read_json_if_any(layout.registry_key(self.model)) or _empty(self.model)

    def yanked(self) -> set[str]:
        return set(self.state().get("yanked") or {})

    def history(self, version: str | None = None, variant: str | None = None,
                precision: str | None = None) -> list[dict]:
        """The audit log, oldest first; of one release, or of one variant (and precision)."""
        out = []
        for key in self.store.list(f"{self.model}/{layout.HISTORY}"):
            doc = self.store.read_json_if_any(key) if key.endswith(".json") else None
            if doc:
                out.append(doc)
        out.sort(key=lambda d: d.get("seq", 0))
        if version:
            out = [d for d in out if d.get("version") == version]
        if variant:
            def concerns(d: dict) -> bool:
                pairs = {m.get("pair") for m in d.get("moves") or []}
                pairs |= {pair(d["variant"], d.get("precision") or "")} if d.get("variant") \
                    else set()
                return any(str(p).startswith(f"{variant}/{precision or ''}") for p in pairs) \
                    or (not d.get("variant") and not d.get("moves"))
            out = [d for d in out if concerns(d)]
        return out

    def channel(self, name: str, variant: str, precision: str) -> dict | None:
        return self.store.read_json_if_any(layout.channel_key(self.model, name, variant,
                                                              precision))

    # -- actions ----------------------------------------------------------------------------
    def promote(self, version: str, channel: str, variant: str | None = None,
                precision: str | None = None, *, who: str, reason: str | None = None) -> dict:
        """Move `channel` of each model of `version` (or of one variant/precision) to it."""
        self._check_channel(channel)
        manifest = self._manifest(version)
        pairs = self._pairs(manifest, version, variant, precision)

        def change(reg: dict) -> dict:
            if version in reg["yanked"]:
                raise ConfigError(f"release {version} is yanked, so no channel may name it.",
                                  where=f"release promote {version}",
                                  fix=f"restore it first (mobiledet release restore {version}), "
                                      "or promote another release.")
            moves = []
            for p in pairs:
                slot = reg["channels"].setdefault(channel, {}).get(p) or {}
                if slot.get("version") == version:
                    continue
                previous = ([slot["version"]] if slot.get("version") else []) + \
                    list(slot.get("previous") or [])
                reg["channels"][channel][p] = {"version": version, "at": now_iso(self.clock()),
                                               "by": who, "previous": previous[:PREVIOUS_KEPT]}
                moves.append({"channel": channel, "pair": p, "from": slot.get("version"),
                              "to": version})
            return {"moves": moves}
        return self._act("promote", change, who=who, reason=reason, version=version,
                         channel=channel, variant=variant, precision=precision)

    def yank(self, version: str, *, who: str, reason: str) -> dict:
        """Record `version` as yanked: off every channel (back to the channel's previous
        release), no automatic pointer names it, never a baseline; its files stay."""
        if not reason or not str(reason).strip():
            raise ConfigError("a yank needs its reason.", where=f"release yank {version}",
                              fix="pass --reason TEXT: what is wrong with the release.")
        self._manifest(version)

        def change(reg: dict) -> dict:
            if version in reg["yanked"]:
                return {"moves": [], "noop": f"{version} is yanked already"}
            removed, moves = {}, []
            for name, slots in reg["channels"].items():
                for p, slot in slots.items():
                    if slot.get("version") != version:
                        continue
                    back = next((v for v in slot.get("previous") or []
                                 if v not in reg["yanked"] and v != version), None)
                    removed[f"{name}/{p}"] = back
                    slots[p] = {**slot, "version": back, "at": now_iso(self.clock()),
                                "by": who, "previous": [v for v in slot.get("previous") or []
                                                        if v != back]}
                    moves.append({"channel": name, "pair": p, "from": version, "to": back})
            reg["yanked"][version] = {"at": now_iso(self.clock()), "by": who,
                                      "reason": reason, "channels_removed": removed}
            return {"moves": moves}
        return self._act("yank", change, who=who, reason=reason, version=version)

    def restore(self, version: str, *, who: str, reason: str | None = None) -> dict:
        """Undo a yank: the automatic pointers may name it again, and each channel it was
        taken off (and that has not moved since) names it again."""
        self._manifest(version)

        def change(reg: dict) -> dict:
            if version not in reg["yanked"]:
                raise ConfigError(f"release {version} is not yanked.",
                                  where=f"release restore {version}",
                                  fix="restore only a yanked release (see mobiledet release "
                                      "history).")
            record = reg["yanked"].pop(version)
            moves = []
            for where, fallback in (record.get("channels_removed") or {}).items():
                name, _, p = where.partition("/")
                slot = reg["channels"].get(name, {}).get(p) or {}
                if slot.get("version") == fallback:
                    reg["channels"][name][p] = {
                        "version": version, "at": now_iso(self.clock()), "by": who,
                        "previous": ([fallback] if fallback else []) +
                        list(slot.get("previous") or [])[:PREVIOUS_KEPT - 1]}
                    moves.append({"channel": name, "pair": p, "from": fallback, "to": version})
            return {"moves": moves}
        return self._act("restore", change, who=who, reason=reason, version=version)

    def bless(self, version: str, variant: str, precision: str, *, who: str,
              reason: str) -> dict:
        """Publish a model of `version` that the gate rejected, by hand, with its reason: its
        files (from the run that made it) are copied beside the manifest with their sha256,
        and the automatic pointers consider it like a published model."""
        if not reason or not str(reason).strip():
            raise ConfigError("a bless needs its reason.", where=f"release bless {version}",
                              fix="pass --reason TEXT: why the team accepts the model.")
        manifest = self._manifest(version)
        p = pair(variant, precision)
        rejected = [e for e in manifest.get("rejected") or []
                    if pair(e["variant"], e["precision"]) == p]
        if not rejected:
            names = {k: ", ".join(pair(e["variant"], e["precision"])
                                  for e in manifest.get(k) or []) or "none"
                     for k in ("published", "rejected")}
            raise ConfigError(f"{p} is not a rejected model of {version} (published: "
                              f"{names['published']}; rejected: {names['rejected']}).",
                              where=f"release bless {version} {p}",
                              fix="bless one of the release's rejected models.")
        files = self._copy_blessed(manifest, variant, precision)
        record = {"version": version, "variant": variant, "precision": precision, "by": who,
                  "reason": reason, "at": now_iso(self.clock()), "files": files,
                  "decision": rejected[0].get("decision"), "metrics": rejected[0].get("metrics")}
        self.store.create_json(f"{layout.bless_prefix(self.model, version, variant, precision)}"
                               "/bless.json", record, sort_keys=False)

        def change(reg: dict) -> dict:
            reg["blessed"].setdefault(version, {})[p] = {
                "by": who, "reason": reason, "at": record["at"]}
            return {"moves": []}
        return self._act("bless", change, who=who, reason=reason, version=version,
                         variant=variant, precision=precision)

    def note(self, action: str, *, who: str, reason: str | None = None, **what) -> dict:
        """An entry in the audit log for an action done elsewhere (a ledger retry)."""
        return self._act(action, lambda reg: {"moves": []}, who=who, reason=reason, **what)

    def auto_promote(self, source: str, target: str, after_hours: float, *,
                     who: str = "housekeeping") -> list[dict]:
        """Promote what `source` names to `target` once it has named it for `after_hours`
        without a yank (the optional rule of the config)."""
        now = self.clock()
        done = []
        for p, slot in (self.state()["channels"].get(source) or {}).items():
            version = slot.get("version")
            at = slot.get("at")
            if not version or not at:
                continue
            age_h = (now - _dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
                     ).total_seconds() / 3600
            current = (self.state()["channels"].get(target) or {}).get(p) or {}
            if age_h >= after_hours and current.get("version") != version:
                variant, _, precision = p.partition("/")
                done.append(self.promote(version, target, variant, precision, who=who,
                                         reason=f"{source} named it for {age_h:.1f} h without "
                                                f"a yank (rule: after {after_hours:g} h)"))
        return done

    # -- the machinery ----------------------------------------------------------------------
    def _act(self, action: str, change, *, who: str, reason: str | None, **what) -> dict:
        outcome: dict[str, Any] = {}

        def cas(current):
            reg = _copy(current) if current else _empty(self.model)
            result = change(reg)
            outcome.clear()
            outcome.update(result)
            if result.get("noop"):
                return None
            reg["seq"] = int(reg.get("seq") or 0) + 1
            reg["updated"] = now_iso(self.clock())
            return reg
        reg = self.store.update_json(layout.registry_key(self.model), cas, sort_keys=False) \
            or _empty(self.model)
        if outcome.get("noop"):
            return {"action": action, "noop": outcome["noop"], **what}
        derived = self.sync(reg)
        entry = {"seq": reg["seq"], "at": now_iso(self.clock()), "who": who, "action": action,
                 "reason": reason, "model": self.model,
                 **{k: v for k, v in what.items() if v is not None},
                 "moves": outcome.get("moves", []) + derived}
        self.store.create_json(layout.history_key(self.model, reg["seq"], action), entry,
                               sort_keys=False)
        return entry

    def sync(self, reg: dict | None = None) -> list[dict]:
        """Write what readers use from the registry: channels, yank records, the automatic
        pointers (never on a yanked release), the baselines. Returns the pointer moves."""
        from include.store import baselines

        reg = reg or self.state()
        seq = int(reg.get("seq") or 0)
        for name, slots in reg["channels"].items():
            for p, slot in slots.items():
                variant, _, precision = p.partition("/")
                doc = self._pointer_doc(slot.get("version"), variant, precision, reg,
                                        channel=name)
                self._write_derived(layout.channel_key(self.model, name, variant, precision),
                                    doc, seq)
        for version in list_versions_quick(self.store, self.model):
            key = layout.yank_key(self.model, version)
            if version in reg["yanked"]:
                self._write_derived(key, {"version": version, "yanked": True,
                                          **reg["yanked"][version]}, seq)
            elif self.store.is_file(key):
                self._write_derived(key, {"version": version, "yanked": False,
                                          "restored": True}, seq)
        moves = self._reconcile_pointers(reg)
        baselines.rebuild(self.store, self.model, yanked=reg["yanked"])
        return moves

    def _write_derived(self, key: str, doc: dict, seq: int) -> None:
        new = {**doc, "seq": seq}

        def change(current):
            if current and int(current.get("seq") or 0) >= seq:
                return None
            return new
        self.store.update_json(key, change, sort_keys=False)

    def _reconcile_pointers(self, reg: dict) -> list[dict]:
        """Every automatic pointer on the newest release that is not yanked (a blessed model
        counts like a published one); a "no release" document where there is none."""
        from include.store.pointers import pointer_docs

        yanked = set(reg["yanked"])
        best: dict[str, dict] = {}
        for manifest in manifests(self.store, self.model):
            if manifest.get("version") in yanked:
                continue
            manifest = with_blessed(self.store, manifest, reg)
            for key, doc_of in pointer_docs(manifest).items():
                doc = doc_of(None)
                if key not in best or order(doc) > order(best[key]):
                    best[key] = doc
        keys = set(best)
        for key in self.store.list(layout.pointers_prefix(self.model)):
            keys.add(key)
        keys.add(layout.pointer_key(self.model))
        moves = []
        for key in sorted(keys):
            target = best.get(key) or {"schema": LATEST_SCHEMA, "model": self.model,
                                       "version": None, "status": "no release",
                                       "reason": "every release of it is yanked"}
            before = []

            def change(current, target=target):
                before[:] = [current]
                fresh = set((self.store.read_json_if_any(
                    layout.registry_key(self.model)) or reg).get("yanked") or {})
                if current and current.get("version") and current["version"] not in fresh \
                        and order(current) >= order(target):
                    return None   # a newer release that is not yanked: leave it
                if current and current.get("version") == target.get("version") and \
                        current.get("blessed") == target.get("blessed"):
                    return None
                if not current and target.get("version") is None:
                    return None
                return target
            after = self.store.update_json(key, change, sort_keys=False)
            old = (before[0] or {}).get("version") if before else None
            if after and after.get("version") != old:
                moves.append({"pointer": key[len(self.model) + 1:], "from": old,
                              "to": after.get("version")})
        return moves

    def _manifest(self, version: str) -> dict:
        layout.check_name(version, "version")
        return read_manifest(self.store, self.model, version)

    def _check_channel(self, channel: str) -> None:
        if channel not in self.channels:
            import difflib
            near = difflib.get_close_matches(channel, self.channels, n=1)
            raise ConfigError(f"channel {channel!r} is not in the config (channels: "
                              f"{', '.join(self.channels) or 'none'}).",
                              where="--channel", fix=(f"did you mean {near[0]!r}? " if near
                                                      else "") + "add it to `channels` in the "
                                                                 "pipeline config, or use one "
                                                                 "of those.")

    def _pairs(self, manifest: dict, version: str, variant, precision) -> list[str]:
        reg = self.state()
        have = [pair(e["variant"], e["precision"]) for e in manifest.get("published") or []]
        have += list((reg["blessed"].get(version) or {}))
        if variant is None and precision is None:
            if not have:
                raise ConfigError(f"release {version} publishes no model.",
                                  where=f"release promote {version}",
                                  fix="promote a release that published a model, or bless one.")
            return have
        wanted = [p for p in have if (variant is None or p.startswith(variant + "/")) and
                  (precision is None or p.endswith("/" + precision))]
        if not wanted:
            raise ConfigError(f"release {version} has no published model "
                              f"{variant or '*'}/{precision or '*'} (it has: "
                              f"{', '.join(have) or 'none'}).", where="--variant/--precision",
                              fix="pick one of the release's models.")
        return wanted

    def _copy_blessed(self, manifest: dict, variant: str, precision: str) -> dict:
        """The rejected model's files from the run that made it, copied into the release."""
        lineage = manifest.get("lineage") or {}
        run_id = lineage.get("run_id") or manifest.get("publisher")
        report = self.store.read_json_if_any(layout.report_key(str(run_id))) or {}
        entry = next((m for m in report.get("models") or []
                      if m.get("variant") == variant and m.get("precision") == precision
                      and str(m.get("ckpt_id", "")).endswith(
                          str(lineage.get("checkpoint_fingerprint") or "")
                          .rpartition(":")[2][:8])), None)
        if not entry or not entry.get("model_uri"):
            raise StoreError(f"the rejected model {variant}/{precision} of {manifest['version']} "
                             f"cannot be found in its run {run_id} (runs/{run_id}/report.json).",
                             where=self.store.uri(layout.run_prefix(str(run_id))),
                             fix="its run's files were pruned; convert the checkpoint again "
                                 "(mobiledet checkpoints retry ...) and bless that release.")
        prefix = layout.bless_prefix(self.model, manifest["version"], variant, precision)
        files = {}
        sources = {"model.tflite": entry.get("model_uri"),
                   "conversion.json": entry.get("conversion_uri"),
                   "metrics.json": entry.get("metrics_uri"),
                   "validation.json": entry.get("validation_uri")}
        for name, src in sources.items():
            if not src:
                continue
            key = f"{prefix}/{name}"
            if not self.store.is_file(key):
                self.store.copy(src, key)
            files[name] = {"key": key, "uri": self.store.uri(key), "size": self.store.size(key),
                           "sha256": self.store.sha256(key)}
        if entry.get("sha256") and files["model.tflite"]["sha256"] != \
                str(entry["sha256"]).rpartition(":")[2]:
            raise StoreError("the rejected model's file is not the one its run recorded.",
                             where=files["model.tflite"]["uri"],
                             fix="convert the checkpoint again and bless that release.")
        return files

    def _pointer_doc(self, version: str | None, variant: str, precision: str, reg: dict,
                     channel: str) -> dict:
        if not version:
            return {"schema": LATEST_SCHEMA, "model": self.model, "channel": channel,
                    "variant": variant, "precision": precision, "version": None,
                    "status": "no release", "reason": "its release was yanked and the channel "
                                                      "named nothing before it"}
        from include.store.pointers import pointer_docs

        manifest = with_blessed(self.store, self._manifest(version), reg)
        doc = pointer_docs(manifest).get(layout.pointer_key(self.model, variant, precision))
        out = doc(None) if doc else {"version": version}
        return {**out, "channel": channel}


def _empty(model: str) -> dict:
    return {"schema": SCHEMA, "model": model, "seq": 0, "yanked": {}, "channels": {},
            "blessed": {}}


def _copy(reg: dict) -> dict:
    import copy
    out = copy.deepcopy(reg)
    for key in ("yanked", "channels", "blessed"):
        out.setdefault(key, {})
    return out


def list_versions_quick(store: ArtifactStore, model: str) -> list[str]:
    from include.store.releases import list_versions
    return list_versions(store, model)


def manifests(store: ArtifactStore, model: str) -> list[dict]:
    from include.store.releases import manifests_newest_first
    return manifests_newest_first(store, model)


def with_blessed(store: ArtifactStore, manifest: dict, reg: dict) -> dict:
    """The manifest with its blessed models added as published entries (marked blessed)."""
    blessed = (reg.get("blessed") or {}).get(manifest.get("version")) or {}
    if not blessed:
        return manifest
    extra = []
    for p, who in blessed.items():
        variant, _, precision = p.partition("/")
        record = store.read_json_if_any(layout.bless_prefix(
            manifest["model"], manifest["version"], variant, precision) + "/bless.json")
        if not record:
            continue
        extra.append({"variant": variant, "precision": precision, "files": record["files"],
                      "decision": record.get("decision") or {}, "blessed": who})
    return {**manifest, "published": list(manifest.get("published") or []) + extra}
