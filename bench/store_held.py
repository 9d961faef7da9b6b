"""Micro-benchmark of a backend's SQLite store with many held handles (issue 17).

`python -m bench.store_held [--held N ...] [--rounds R] [--ops K] [--repeat P]`: a fresh
`SqliteStore` (WAL, synchronous=FULL, as a backend opens it) holding N handles of one product
(written as one snapshot) takes R group-committed transactions of K grants and the K releases
of the previous transaction's grants (the shape of a round under cycling load: short-lived
handles next to long-held ones). Timed: CPU time of the process per transaction, median of
P repetitions, for each N in turn.

What it showed (docs/performance.md): handle ids are random, and up to store schema 8
``handles`` was a B-tree keyed by them, so once the long-held handles filled more pages than
fit in the page cache, every grant and every release of a round touched (and the WAL wrote) a
page of its own; in an empty table they share a few pages. Schema 9 keeps the rows in grant
order, found through the store's in-memory map: a round costs about the same at 100,000 held
as empty. Run it with ``PYTHONPATH`` at an older tree for the before figures.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from tmr.backend.store import SqliteStore
from tmr.replication.acceptor import ProductWrite, Write
from tmr.replication.types import (
    Epoch,
    Grant,
    HandleRecord,
    Release,
    ReleaseReason,
    Version,
)

KEY = (6_000_001, 1)
EPOCH = Epoch(1, "tmr-a")


def record(i: int) -> HandleRecord:
    handle = f"h1-tmr-a-{secrets.token_hex(16)}"  # random, as the leader's handle ids
    cid = f"bench-c{i}"
    return HandleRecord(handle, *KEY, 1, cid, f"{cid}-r", time.time(), "K" * 40, "u", "h", 1)


def run(held: int, rounds: int, ops: int) -> float:
    """CPU seconds per transaction with `held` handles held throughout."""
    with tempfile.TemporaryDirectory(prefix="tmr-store-held-") as tmp:
        store = SqliteStore(Path(tmp) / "backend.db")
        try:
            store.load()
            table = tuple(record(i) for i in range(held))
            store.commit(Write(products=(ProductWrite(KEY, Version(EPOCH, 0), replace=table),)))
            live: list[HandleRecord] = []
            start = time.process_time()
            for seq in range(1, rounds + 1):
                grants = [record(i) for i in range(ops)]
                done = [Release(r.handle, ReleaseReason.RELEASE, time.time()) for r in live]
                entry: tuple[Grant | Release, ...] = (*[Grant(r) for r in grants], *done)
                store.commit(Write(products=(ProductWrite(KEY, Version(EPOCH, seq), entry),)))
                live = grants
            return (time.process_time() - start) / rounds
        finally:
            store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--held", type=int, nargs="+", default=[0, 10_000, 100_000])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--ops", type=int, default=17, help="grants (and releases) per round")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    base = None
    for held in args.held:
        t = statistics.median(run(held, args.rounds, args.ops) for _ in range(args.repeat))
        base = base or t
        per_cycle = t / args.ops * 1e6
        print(
            f"{held:>7} held: {t * 1e6:7.0f} us CPU per transaction of {args.ops} grants + "
            f"{args.ops} releases ({per_cycle:.1f} us per cycle), {t / base:.2f}x the first"
        )


if __name__ == "__main__":
    main()
