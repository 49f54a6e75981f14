"""How fast the dashboard's releases page answers on a big store (a real uvicorn over HTTP).

Builds a local store of RELEASES releases x 8 models through the real `publish` (manifests,
publisher folders and pointers as the pipeline writes them; tiny model files), serves it
with uvicorn on 127.0.0.1, and measures `/` and `/api/releases`: the first load (every
manifest read) and warm loads (cached). Exits 1 when a warm load takes 1 s or more.

    .venv/bin/python bench/dashboard.py [--releases 300] [--store DIR] [--repeat 5]

A store built once is reused when --store points at it (delete it to rebuild).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

LIMIT_S = 1.0


def _fetch(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        size = len(r.read())
        assert r.status == 200, r.status
    return time.perf_counter() - started, size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--releases", type=int, default=300)
    ap.add_argument("--store", default=None, help="store folder (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=5, help="warm loads per page")
    args = ap.parse_args(argv)

    from browser import DashboardServer

    from include.dashboard.app import create_app
    from include.dashboard.reader import StoreReader
    from include.dashboard.synthetic import DEFAULT_PAIRS, START, make_releases
    from include.store import list_versions, open_store

    tmp = None
    if args.store:
        store_dir = Path(args.store)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="mobiledet-bench-dashboard-")
        store_dir = Path(tmp.name) / "store"
    have = list_versions(open_store(str(store_dir)), "mobiledet") if store_dir.exists() else []
    if len(have) < args.releases:
        started = time.perf_counter()
        make_releases(str(store_dir), args.releases - len(have), seed=len(have),
                      start=START + timedelta(days=len(have)))
        print(f"built {args.releases} releases x {len(DEFAULT_PAIRS)} models in "
              f"{time.perf_counter() - started:.0f} s -> {store_dir}")
    files = sum(len(f) for _, _, f in os.walk(store_dir))
    reader = StoreReader(str(store_dir))
    rows = []
    with DashboardServer(create_app(reader)) as server:
        for path in ("/", "/api/releases"):
            first, size = _fetch(server.url + path)
            warm = sorted(_fetch(server.url + path)[0] for _ in range(max(1, args.repeat)))
            rows.append((path, "cached", first, warm, size))
        # The worst warm case: versions listed and pointers read again on every request
        # (relist_s = pointer_ttl_s = 0); manifests stay cached.
        reader.relist_s = reader.pointer_ttl_s = 0.0
        for path in ("/", "/api/releases"):
            timed = [_fetch(server.url + path) for _ in range(max(1, args.repeat))]
            rows.append((path, "re-listing", None, sorted(t for t, _ in timed), timed[0][1]))
        # A new release (pointers read on every request, versions every 30 s): its latest.json
        # move makes the next load list the versions again, read its one manifest and render.
        reader.relist_s, reader.pointer_ttl_s = 30.0, 0.0
        _fetch(server.url + "/")
        [new_version] = make_releases(
            str(store_dir), 1, seed=10_000 + args.releases,
            start=START + timedelta(days=len(list_versions(reader.store, "mobiledet"))))
        for path in ("/", "/api/releases"):
            took, size = _fetch(server.url + path)
            rows.append((path, "new release", took, [took], size))
        with urllib.request.urlopen(server.url + "/api/releases", timeout=60) as r:
            shown = json.load(r)["versions"][0]["version"]
        print(f"new release {new_version} shown first: {shown == new_version}")
    print(f"store: {len(list_versions(reader.store, 'mobiledet'))} releases, {files} files; "
          f"manifest reads {reader.stats['manifest_reads']}, listings {reader.stats['lists']}")
    print(f"{'page':<14} {'cache':<12} {'first s':>8} {'warm p50 s':>11} {'warm max s':>11} "
          f"{'bytes':>9}")
    failed = False
    for path, mode, first, warm, size in rows:
        first_text = "-" if first is None else f"{first:.3f}"
        print(f"{path:<14} {mode:<12} {first_text:>8} {warm[len(warm) // 2]:>11.3f} "
              f"{warm[-1]:>11.3f} {size:>9}")
        failed |= mode == "cached" and warm[-1] >= LIMIT_S
    print(("FAIL" if failed else "OK") + f": cached warm loads must answer in under "
          f"{LIMIT_S:.1f} s")
    if tmp:
        tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
