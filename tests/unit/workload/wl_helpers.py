"""Hand-made workload histories for the checker tests (times in seconds from the start)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tmr.workload.history import (
    EndRecord,
    History,
    HistoryWriter,
    OpRecord,
    RunHeader,
)

T0 = 1000.0  # the run's start on the monotonic clock
WALL0 = 1_700_000_000.0  # the same instant as a UNIX time
LEASE = 10.0


class Hist:
    def __init__(self, *, duration: float = 20.0, license_lq: int | None = None) -> None:
        self.duration = duration
        self.license_lq = license_lq
        self.ops: list[OpRecord] = []
        self._n: Counter[str] = Counter()

    def wall(self, t: float) -> float:
        """UNIX time of `t` seconds after the start."""
        return WALL0 + t

    def op(
        self,
        client: str,
        op: str,
        start: float,
        end: float | None = None,
        outcome: str = "ok",
        *,
        handle: str | None = None,
        seats: int | None = None,
        lease: float | None = LEASE,
        lease_end: float | None = None,
    ) -> OpRecord:
        end = start if end is None else end
        self._n[client] += 1
        rec = OpRecord(
            client=client,
            n=self._n[client],
            op=op,
            start_mono=T0 + start,
            end_mono=T0 + end,
            start_wall=WALL0 + start,
            end_wall=WALL0 + end,
            outcome=outcome,
            message=None if outcome == "ok" else outcome,
            handle=handle,
            rid=f"{client}.{self._n[client]}" if handle else None,
            seats=seats,
            lease=lease,
            tmr_id=7 if handle else None,
            lease_end_mono=None if lease_end is None else T0 + lease_end,
        )
        self.ops.append(rec)
        return rec

    def checkout(
        self,
        client: str,
        handle: str | None,
        seats: int,
        start: float,
        end: float,
        outcome: str = "ok",
        lease: float = LEASE,
    ) -> OpRecord:
        ok = outcome == "ok"
        return self.op(
            client,
            "checkout",
            start,
            end,
            outcome,
            handle=handle if ok else None,
            seats=seats,
            lease=lease if ok else None,
            lease_end=start + lease if ok else None,
        )

    def heartbeat(
        self, client: str, handle: str, start: float, end: float, outcome: str = "ok"
    ) -> OpRecord:
        return self.op(
            client,
            "heartbeat",
            start,
            end,
            outcome,
            handle=handle,
            seats=1,
            lease_end=start + LEASE if outcome == "ok" else None,
        )

    def release(
        self,
        client: str,
        handle: str,
        start: float,
        end: float,
        outcome: str = "ok",
        lease_end: float | None = None,
    ) -> OpRecord:
        return self.op(client, "release", start, end, outcome, handle=handle, lease_end=lease_end)

    def lost(self, client: str, handle: str, at: float, lease_end: float) -> OpRecord:
        return self.op(client, "lost", at, at, handle=handle, lease_end=lease_end)

    def abandon(self, client: str, handle: str, at: float, lease_end: float) -> OpRecord:
        return self.op(client, "abandon", at, at, handle=handle, lease_end=lease_end)

    def header(self) -> RunHeader:
        lic = None if self.license_lq is None else {"quantity": self.license_lq}
        return RunHeader(
            seed=1,
            clients=len({r.client for r in self.ops}) or 1,
            duration=self.duration,
            firm=6000123,
            product=42,
            seats_max=2,
            hold_max=5.0,
            endpoints=("tcp://127.0.0.1:1",),
            start_mono=T0,
            start_wall=WALL0,
            host="test",
            pid=1,
            license=lic,
        )

    def end(self) -> EndRecord:
        return EndRecord(T0 + self.duration, WALL0 + self.duration, len(self.ops))

    def history(self) -> History:
        return History(self.header(), list(self.ops), self.end())

    def write(self, path: Path) -> Path:
        with HistoryWriter(path) as w:
            w.header(self.header())
            for rec in self.ops:
                w.op(rec)
            w.end(self.end())
        return path
