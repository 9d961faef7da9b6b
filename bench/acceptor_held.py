"""Micro-benchmark of a backend's `Acceptor` with many held handles (issue 17).

`python -m bench.acceptor_held [--held N] [--entries E] [--ops K] [--repeat R]`: one
in-process acceptor holding N handles of one product (LQ 2 N) takes E log entries of K grants
and K releases each (the shape of a group-committed round), and answers a PROBE after each
(the leader probes every backend about every 100 ms; its `Status` carries the seat count).
Timed (CPU time of the process): `handle` plus `committed`, no store, no I/O. Two variants
in the same run, alternated:

- ``running``: this tree (`SeatCount` kept per op: the entry check and the status cost per
  op, whatever N);
- ``sum``: the count before (issue 17): the entry check starts from a sum over every held
  handle, and so does each `Status`.

Reports the median seconds per entry of each and their ratio (sum / running).
"""

from __future__ import annotations

import argparse
import statistics
import time

from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.messages import (
    Accept,
    AcceptEntry,
    Probe,
    Snapshot,
    SnapshotEntry,
    StateToken,
    Status,
)
from tmr.replication.types import (
    Epoch,
    Floor,
    Grant,
    HandleRecord,
    LicenseInfo,
    Op,
    ProductKey,
    ProductLog,
    Release,
    ReleaseReason,
)

KEY = (6_000_001, 1)
E = Epoch(1, "sa")


class SumAcceptor(Acceptor):
    """The acceptor as it counted before the running count: a sum per entry and per status."""

    def _check_ops(self, key: ProductKey, log: ProductLog, ops: tuple[Op, ...]) -> str:
        added: dict[str, int] = {}
        gone: set[str] = set()
        count = sum(r.seats for r in log.handles.values())
        for op in ops:
            if isinstance(op, Floor):
                continue
            if isinstance(op, Grant):
                rec = op.record
                if rec.key != key or rec.seats < 1:
                    return "malformed"
                if rec.handle in added or (rec.handle in log.handles and rec.handle not in gone):
                    continue
                added[rec.handle] = rec.seats
                count += rec.seats
                if count > self.licenses[key].quantity:
                    return "above LQ"
            elif op.handle in added:
                count -= added.pop(op.handle)
            elif op.handle in log.handles and op.handle not in gone:
                gone.add(op.handle)
                count -= log.handles[op.handle].seats
        return ""

    def _status(self, mid: int, leader_age: float | None, have: StateToken | None) -> Status:
        st = super()._status(mid, leader_age, have)
        for log in self.state.products.values():  # what `ProductLog.seats()` walked
            sum(r.seats for r in log.handles.values())
        return st


def rec(i: int) -> HandleRecord:
    return HandleRecord(f"h{i}", KEY[0], KEY[1], 1, f"c{i}", f"r{i}", 0.0, "K" * 40)


def acceptor(cls: type[Acceptor], held: int) -> Acceptor:
    acc = cls("b1", AcceptorState(E, True), {KEY: LicenseInfo(7, 2 * held + 64, True)})
    table = tuple(rec(i) for i in range(held))
    acc.committed(acc.handle(Snapshot(0, E, (SnapshotEntry(KEY, 0, table),), True), 0.0))
    return acc


def run(cls: type[Acceptor], held: int, entries: int, ops: int) -> float:
    """Seconds per entry (handle + committed of the ACCEPT and of a PROBE)."""
    acc = acceptor(cls, held)
    base = held
    mid = 0
    spent = 0.0
    for seq in range(1, entries + 1):
        grants = [Grant(rec(base + j)) for j in range(ops)]
        releases = [Release(f"h{base - ops + j}", ReleaseReason.RELEASE, 0.0) for j in range(ops)]
        base += ops
        mid += 2
        accept = Accept(mid, E, (AcceptEntry(KEY, seq, (*releases, *grants)),))
        probe = Probe(mid + 1, E)
        t0 = time.process_time()
        step = acc.handle(accept, 1.0)
        acc.committed(step)
        acc.committed(acc.handle(probe, 1.0))
        spent += time.process_time() - t0
        assert step.reply.results[KEY].status.value == "ok"  # type: ignore[union-attr]
    assert acc.state.products[KEY].seats() == held
    return spent / entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--held", type=int, default=10_000)
    ap.add_argument("--entries", type=int, default=300)
    ap.add_argument("--ops", type=int, default=20, help="grants (and releases) per entry")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    new: list[float] = []
    old: list[float] = []
    for _ in range(args.repeat):  # alternated, so both see the same machine
        new.append(run(Acceptor, args.held, args.entries, args.ops))
        old.append(run(SumAcceptor, args.held, args.entries, args.ops))
    m_new, m_old = statistics.median(new), statistics.median(old)
    ratios = sorted(o / n for o, n in zip(old, new, strict=True))
    print(
        f"held {args.held}, {args.ops} grants + {args.ops} releases per entry, "
        f"{args.entries} entries x {args.repeat}:\n"
        f"  running count: {m_new * 1e6:8.1f} us/entry (median)\n"
        f"  sum per entry: {m_old * 1e6:8.1f} us/entry (median)\n"
        f"  sum/running:   {m_old / m_new:.2f}x (paired ratios {ratios[0]:.2f}-{ratios[-1]:.2f})"
    )


if __name__ == "__main__":
    main()
