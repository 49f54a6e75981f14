"""The ops pages' reading: the checkpoint ledger (every landed checkpoint and what came of it,
failed and stuck first). A mixin of `StoreReader`."""
from __future__ import annotations

from include.dashboard.safety import redact


class OpsPages:
    """The ledger (see the module doc)."""

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
