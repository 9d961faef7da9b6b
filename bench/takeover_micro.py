"""Micro-benchmark of a takeover with N held handles (issue 17; docs/performance.md).

`python -m bench.takeover_micro [--handles N]`: three in-process `Acceptor`s with SQLite
stores (in a temporary directory) hold N handles of a deposed leader's epoch; a new `Leader`
promotes. Every message goes through the peer codec, every write through the store, as
between the processes, and the server decodes and handles a bulk frame with the garbage
collector paused, as the server does (`--no-gc-pause`: as before). Prints the seconds from
the promote to ACTIVE and, per step (server or backend, encode, decode, handle, store), the
time spent, summed over the backends.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.leader_micro import KEY, KEYS, NAMES, own_copy
from tmr.backend.store import SqliteStore
from tmr.protocol import peer_api
from tmr.replication.acceptor import Acceptor, ProductWrite, Write
from tmr.replication.leader import Effects, Leader, LeaderConfig
from tmr.replication.messages import Promise
from tmr.replication.types import Epoch, HandleRecord, LicenseInfo, Version
from tmr.serving.collector import BULK_FRAME, gc_paused


def run(n: int, root: Path, gc_pause: bool = True) -> tuple[float, dict[str, float]]:
    lic = LicenseInfo(7, n + 1000, True)
    old = Epoch(1, "sa")
    recs = tuple(
        HandleRecord(
            f"h1-sa-{i:032x}",
            *KEY,
            1,
            f"client-{i % 100}",
            f"req-{i:012x}",
            1.7e9 + i,
            f"{i % 100:040x}",
            "user",
            "host",
            1000 + i % 100,
        )
        for i in range(n)
    )
    version = Version(old, 5)
    seed = Write(
        promised=old,
        caught_up=True,
        products=(ProductWrite(KEY, version, replace=recs),),
        known=((KEY, version),),
    )
    stores: dict[str, SqliteStore] = {}
    acceptors: dict[str, Acceptor] = {}
    for i, name in enumerate(NAMES):
        stores[name] = SqliteStore(root / f"{name}.db")
        stores[name].commit(seed)
        acceptors[name] = Acceptor(name, stores[name].load(), {KEY: own_copy(lic, i + 1)})
    del recs, seed
    spent: dict[str, float] = defaultdict(float)

    def timed(what: str, f: Callable[..., Any], *args: Any) -> Any:
        t = time.perf_counter()
        out = f(*args)
        spent[what] += time.perf_counter() - t
        return out

    now = 100.0
    leader = Leader(LeaderConfig("sb", NAMES, backend_keys=KEYS), wall_clock=lambda: now)

    def deliver(fx: Effects) -> None:
        queue = [fx]
        while queue:
            for name, msg in queue.pop().send:
                kind = type(msg).__name__
                frame = timed(f"server encode {kind}", peer_api.encode_request, msg)
                # as `BackendService`: a bulk frame decoded, a promise encoded, with the
                # collector paused
                with gc_paused(gc_pause and len(frame) >= BULK_FRAME):
                    req = timed(f"backend decode {kind}", peer_api.decode_request, frame)
                step = timed(f"backend handle {kind}", acceptors[name].handle, req, now)
                if step.write is not None:
                    timed(f"backend store {kind}", stores[name].commit, step.write)
                acceptors[name].committed(step)
                with gc_paused(gc_pause and isinstance(step.reply, Promise)):
                    reply = timed(
                        f"backend encode reply to {kind}", peer_api.encode_reply, step.reply
                    )
                # as `ServerService._drain_backend`: a bulk frame with the collector paused
                with gc_paused(gc_pause and len(reply) >= BULK_FRAME):
                    got = timed(f"server decode reply to {kind}", peer_api.decode_reply, reply)
                    fx = timed(f"server on_reply to {kind}", leader.on_reply, name, got, now)
                queue.append(fx)

    t0 = time.perf_counter()
    deliver(leader.promote(now))
    while leader.role.value != "active":
        if now > 110.0:
            raise RuntimeError(f"not active: {leader.status()}")
        now += 0.1
        deliver(leader.tick(now))
    total = time.perf_counter() - t0
    for store in stores.values():
        store.close()
    return total, dict(spent)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--handles", type=int, default=30_000)
    ap.add_argument(
        "--no-gc-pause",
        action="store_true",
        help="keep the garbage collector running through bulk frames (as before issue 17)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        total, spent = run(args.handles, Path(tmp), gc_pause=not args.no_gc_pause)
    n = args.handles
    print(f"{n} handles: promote -> active {total:.3f} s, {total / n * 1e6:.1f} us per handle")
    for what, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        if s >= 0.001:
            print(f"  {what:40s} {s:7.3f} s {s / n * 1e6:7.2f} us/handle")


if __name__ == "__main__":
    main()
