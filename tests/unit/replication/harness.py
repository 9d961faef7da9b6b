"""A synchronous, loss-free harness: one Leader and three Acceptors in one process."""

from __future__ import annotations

from typing import Any

from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.leader import ClientReply, Effects, Leader, LeaderConfig
from tmr.replication.types import ZERO_EPOCH, LicenseInfo, ProductKey

NAMES = ("b1", "b2", "b3")


class Harness:
    def __init__(self, licenses: dict[ProductKey, LicenseInfo], lease: float = 30.0) -> None:
        self.now = 0.0
        self.acceptors = {n: Acceptor(n, AcceptorState(ZERO_EPOCH, False), licenses) for n in NAMES}
        self.down: set[str] = set()
        self.leader = Leader(
            LeaderConfig("sa", NAMES, lease=lease, backend_timeout=1.0, probe_interval=0.25),
            wall_clock=lambda: self.now,
        )
        self.replies: list[ClientReply] = []

    def run(self, fx: Effects) -> None:
        queue = list(fx.send)
        self.replies.extend(fx.replies)
        while queue:
            name, msg = queue.pop(0)
            if name in self.down:
                continue
            acc = self.acceptors[name]
            step = acc.handle(msg)
            acc.committed(step)
            out = self.leader.on_reply(name, step.reply, self.now)
            self.replies.extend(out.replies)
            queue.extend(out.send)

    def advance(self, seconds: float, step: float = 0.1) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += step
            self.run(self.leader.tick(self.now))

    def promote(self) -> None:
        self.run(self.leader.promote(self.now))
        self.advance(1.5)

    def set_license(self, name: str, lic: LicenseInfo | None, key: ProductKey) -> None:
        acc = self.acceptors[name]
        lics = dict(acc.licenses)
        if lic is None:
            lics.pop(key, None)
        else:
            lics[key] = lic
        acc.set_licenses(lics)

    def call(self, method: str, *args: Any) -> ClientReply:
        before = len(self.replies)
        self.run(getattr(self.leader, method)("tok", *args, self.now))
        self.advance(0.2)
        new = self.replies[before:]
        assert len(new) == 1, new
        return new[0]
