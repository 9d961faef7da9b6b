"""Micro-benchmark of the sans-I/O `Leader` (docs/performance.md): N checkout+release cycles.

`python -m bench.leader_micro [--cycles N] [--batch B] [--repeat R] [--products P] [--held H]`:
one leader and three in-process `Acceptor`s (no I/O, no sockets), the leader pumped once per
batch of B requests as the server's loop does, and ticked every 10 ms. Reports, per
repetition, the seconds spent inside the leader's calls (the acceptors' work is not counted)
and the median over the repetitions. ``--products`` licenses P - 1 more products (unused, as
on a site with many), ``--held`` checks out H handles first and keeps them: the cost per
cycle should not grow with either (issue 17). Python's collector is sized as in the server's
loop (`tmr.serving.collector.service_collector`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tmr.protocol.results import CheckoutResult
from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.leader import ClientReply, Effects, Leader, LeaderConfig
from tmr.replication.types import ZERO_EPOCH, LicenseInfo
from tmr.serving.collector import service_collector

NAMES = ("b1", "b2", "b3")
KEY = (6_000_001, 1)  # a firm code a client accepts (the results are checked)
KEYS = tuple(f"{i:02x}" * 32 for i in (1, 2, 3))  # each backend's CURVE public key (hex)


def own_copy(lic: LicenseInfo, i: int) -> LicenseInfo:
    """Copy `i` of the set (each backend holds a distinct one)."""
    fingerprint = f"{0xF0 + i:02x}" * 32
    key = f"{i:02x}" * 32
    return replace(
        lic, set_id=f"{lic.tmr_id:032x}", set_index=i, fingerprint=fingerprint, backend_key=key
    )


def run(cycles: int, batch: int, products: int = 1, held: int = 0) -> float:
    """Seconds spent in the leader for `cycles` checkouts and their releases, with
    `products` licensed products and `held` handles held throughout."""
    now = 0.0
    lic = LicenseInfo(7, 10 * cycles + held, True)
    keys = [KEY, *((KEY[0], KEY[1] + 1 + i) for i in range(products - 1))]
    acceptors = {
        n: Acceptor(n, AcceptorState(ZERO_EPOCH, False), {k: own_copy(lic, i + 1) for k in keys})
        for i, n in enumerate(NAMES)
    }
    leader = Leader(LeaderConfig("sa", NAMES, backend_keys=KEYS), wall_clock=lambda: now)
    spent = 0.0

    def call(f: Callable[..., Effects], *args: Any, **kw: Any) -> Effects:
        nonlocal spent
        t = time.perf_counter()
        fx = f(*args, **kw)
        spent += time.perf_counter() - t
        return fx

    replies: list[ClientReply] = []

    def deliver(fx: Effects) -> None:
        queue = [fx]
        while queue:
            out = queue.pop()
            replies.extend(out.replies)
            for name, msg in out.send:
                step = acceptors[name].handle(msg, now)
                acceptors[name].committed(step)
                queue.append(call(leader.on_reply, name, step.reply, now))

    deliver(call(leader.promote, now))
    for _ in range(20):
        now += 0.1
        deliver(call(leader.tick, now))
    assert leader.role.value == "active", leader.status()
    leader.auto_pump = False
    for start in range(0, held, 500):
        fx = Effects()
        for i in range(start, min(start + 500, held)):
            fx.extend(leader.checkout("t", f"h{i}", f"hc{i}", *KEY, 1, now, owner="k"))
        fx.extend(leader.pump(now))
        deliver(fx)
    kept = len(replies)
    assert kept == held, (kept, held)
    spent = 0.0
    for start in range(0, cycles, batch):
        fx = Effects()
        for i in range(start, min(start + batch, cycles)):
            fx.extend(call(leader.checkout, "t", f"r{i}", f"c{i}", *KEY, 1, now, owner="k"))
        fx.extend(call(leader.pump, now))
        deliver(fx)
        now += 0.01
        deliver(call(leader.tick, now))
    results = replies[kept:]
    handles = [(r.rid, r.result.handle) for r in results if isinstance(r.result, CheckoutResult)]
    pending = handles
    for start in range(0, len(pending), batch):
        fx = Effects()
        for rid, h in pending[start : start + batch]:
            cid = "c" + rid[1:]
            fx.extend(call(leader.release, "t", "x" + rid, cid, h, now, owner="k"))
        fx.extend(call(leader.pump, now))
        deliver(fx)
        now += 0.01
        deliver(call(leader.tick, now))
    assert len(handles) == cycles, (len(handles), leader.status())
    left = sum(1 for p in leader.handles_view(now))
    assert left == held, f"{left} handles left, not {held}"
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--products", type=int, default=1, help="licensed products (default 1)")
    ap.add_argument("--held", type=int, default=0, help="handles held throughout (default 0)")
    args = ap.parse_args()
    # With the collector sized as in a service's loop: at CPython's default thresholds the
    # oldest generation's collections walked the held handles (100,000 held cost 1.16-1.22x
    # of none, against 1.06-1.11x sized as the server runs).
    with service_collector():
        times = [run(args.cycles, args.batch, args.products, args.held) for _ in range(args.repeat)]
    print(" ".join(f"{t:.3f}" for t in times))
    print(f"median {statistics.median(times):.3f} s for {args.cycles} checkout+release cycles")


if __name__ == "__main__":
    main()
