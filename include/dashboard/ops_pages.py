"""The ops pages' reading: the checkpoint ledger (every landed checkpoint and what came of it,
failed and stuck first), the release registry (yanked, channels, blessed) and the audit log.
A mixin of `StoreReader`."""
from __future__ import annotations

from include.dashboard.safety import redact


class OpsPages:
    """The ledger and the release operations (see the module doc)."""

    def registry(self, model: str) -> dict:
        """What ops did to the model's releases (yanked, channels, blessed), re-read at most
        every `pointer_ttl_s`."""
        from include.store import layout

        def read():
            return redact(self.store.read_json_if_any(layout.registry_key(model)) or {})
        return self._ttl(("registry", model), self.pointer_ttl_s, read)

    def history(self, model: str | None = None, version: str | None = None,
                variant: str | None = None, precision: str | None = None) -> dict:
        """The audit log (of one release, or one model pair), newest first."""
        from include.store.registry import Releases

        model = self.model_or_default(model)

        def read():
            return [redact(e) for e in Releases(self.store, model).history()]
        entries = self._ttl(("history", model), self.pointer_ttl_s, read)
        if version:
            entries = [e for e in entries if e.get("version") == version]
        if variant:
            key = f"{variant}/{precision or ''}"
            entries = [e for e in entries if str(f"{e.get('variant')}/{e.get('precision') or ''}")
                       .startswith(key) or any(str(m.get("pair", "")).startswith(key) or
                                               str(m.get("pointer", "")).startswith(
                                                   f"latest/{key}") for m in e.get("moves") or [])]
        return {"model": model, "models": self.models(), "entries": entries[::-1]}

    def checkpoints(self, model: str | None = None) -> dict:
        """The ledger of `model`: every record, failed first, then stuck, then open work."""
        from include.store.ledger import Ledger, order_for_people, stuck, summary

        model = self.model_or_default(model)

        def read():
            return [redact(r) for r in Ledger(self.store, model).records()]
        records = self._ttl(("ledger", model), self.pointer_ttl_s, read)
        rows = []
        for r in order_for_people(records):
            row = summary(r)
            row.update(stuck=stuck(r), kind=r.get("kind"), landed_at=r.get("landed_at"),
                       history=(r.get("history") or [])[-5:],
                       bad_landings=[l.get("uri") for l in r.get("landings") or []
                                     if l.get("bad")])
            rows.append(row)
        counts: dict[str, int] = {}
        for row in rows:
            key = "stuck" if row["stuck"] else row["state"]
            counts[key] = counts.get(key, 0) + 1
        return {"model": model, "models": self.models(), "store": self.store.base_uri,
                "checkpoints": rows, "counts": counts}
