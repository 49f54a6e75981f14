"""The artifact store's async twin, for code on an event loop (the landing trigger in Airflow's
triggerer).

It is the same store (`include.store.store.ArtifactStore`: the same parser, the same fsspec
file systems, the same error messages), with each call run in a worker thread so the event loop
is never blocked. Opening an S3 file system runs its own event loop (Airflow's fs registry
calls ``asyncio.run``), which must not happen on the triggerer's loop: the store is opened in
the thread too, on first use.
"""
from __future__ import annotations

import asyncio

from include.store.store import DEFAULT_CONN_ID, ArtifactStore, Entry

#: botocore settings for a watcher: fail at once (its own poll is the retry) instead of
#: retrying with backoff while the next poll waits
WATCH_S3_OPTIONS = {"connect_timeout": 10, "read_timeout": 30, "retries": {"max_attempts": 0}}


class AsyncArtifactStore:
    """`ArtifactStore` for coroutines: ``await store.list_entries()``, ``await store.get_bytes(k)``.

    Opening is lazy (the first call); after a failure the store is opened again at the next
    call, so a connection fixed in the meantime is picked up.
    """

    def __init__(self, base_uri: str, conn_id: str | None = DEFAULT_CONN_ID,
                 options: dict | None = None):
        self.base_uri = base_uri
        self.conn_id = conn_id
        self.options = dict(WATCH_S3_OPTIONS if options is None else options)
        self._store: ArtifactStore | None = None

    def _open(self) -> ArtifactStore:
        if self._store is None:
            self._store = ArtifactStore(self.base_uri, conn_id=self.conn_id,
                                        options=self.options)
        return self._store

    async def _call(self, method: str, *args):
        def work():
            return getattr(self._open(), method)(*args)
        try:
            return await asyncio.to_thread(work)
        except Exception:
            self._store = None    # reopen next time: the connection may have been fixed
            raise

    async def run(self, work, *args):
        """`work(store, *args)` on the opened store, in a worker thread."""
        return await self._call_with(work, *args)

    async def _call_with(self, work, *args):
        def go():
            return work(self._open(), *args)
        try:
            return await asyncio.to_thread(go)
        except Exception:
            self._store = None
            raise

    async def list_entries(self, prefix: str = "") -> list[Entry]:
        return await self._call("list_entries", prefix)

    async def get_bytes(self, key: str) -> bytes:
        return await self._call("get_bytes", key)

    async def read_json(self, key: str):
        return await self._call("read_json", key)

    async def is_file(self, key: str) -> bool:
        return await self._call("is_file", key)

    def uri(self, key: str = "") -> str:
        from include.store.uri import StoreURI
        return StoreURI.parse(self.base_uri).join(key).uri
