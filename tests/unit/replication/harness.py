"""A synchronous, loss-free harness: Leaders (server "sa", optionally "sb") and three
Acceptors in one process. `leader` is server "sa"; `add_server` adds another one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.leader import ClientReply, Effects, Leader, LeaderConfig
from tmr.replication.parking import TAKEOVER_HOLD
from tmr.replication.types import ZERO_EPOCH, LicenseInfo, ProductKey

NAMES = ("b1", "b2", "b3")
KEYS = tuple(f"{i:02x}" * 32 for i in (1, 2, 3))  # each backend's CURVE public key (hex)


def own_copy(lic: LicenseInfo, name: str) -> LicenseInfo:
    """``lic`` as backend ``name``'s own copy: index i of the set of its TMR ID, bound to its
    key (a copy the test already placed in a set is left as it is)."""
    if lic.set_index:
        return lic
    i = NAMES.index(name) + 1
    return replace(
        lic,
        set_id=f"{lic.tmr_id:032x}",
        set_index=i,
        fingerprint=f"{0xF0 + i:02x}" * 32,
        backend_key=KEYS[i - 1],
    )


class Harness:
    def __init__(self, licenses: dict[ProductKey, LicenseInfo], lease: float = 30.0) -> None:
        self.now = 0.0
        self.lease = lease
        self.acceptors = {
            n: Acceptor(
                n,
                AcceptorState(ZERO_EPOCH, False),
                {k: own_copy(v, n) for k, v in licenses.items()},
            )
            for n in NAMES
        }
        self.down: set[str] = set()
        self.cut: set[tuple[str, str]] = set()  # (server, backend) links that lose everything
        self.lose: list[tuple[str, str, type]] = []  # lose the next such (server, backend, type)
        self.leaders: dict[str, Leader] = {}
        self.stopped: set[str] = set()  # servers that are dead: no ticks, nothing delivered
        self.persisted: dict[str, list[int]] = {}  # epoch counters each server persisted
        self.events: list[dict[str, Any]] = []
        self.leader = self.add_server("sa")
        self.replies: list[ClientReply] = []  # of "sa"
        self.replies_of: dict[str, list[ClientReply]] = {}  # of every server

    def add_server(self, name: str, takeover_hold: float = TAKEOVER_HOLD) -> Leader:
        leader = Leader(
            LeaderConfig(
                name,
                NAMES,
                lease=self.lease,
                backend_timeout=1.0,
                probe_interval=0.25,
                backend_keys=KEYS,
                takeover_hold=takeover_hold,
            ),
            wall_clock=lambda: self.now,
        )
        self.leaders[name] = leader
        self.persisted[name] = []
        return leader

    def run(self, fx: Effects, server: str = "sa") -> None:
        queue = [(server, fx)]
        while queue:
            src, out = queue.pop(0)
            if out.persist_counter is not None:
                self.persisted[src].append(out.persist_counter)
            self.events.extend(out.events)
            if src == "sa":
                self.replies.extend(out.replies)
            self.replies_of.setdefault(src, []).extend(out.replies)
            for name, msg in out.send:
                if name in self.down or src in self.stopped or (src, name) in self.cut:
                    continue
                lost = next((x for x in self.lose if x == (src, name, type(msg))), None)
                if lost is not None:
                    self.lose.remove(lost)
                    continue
                acc = self.acceptors[name]
                step = acc.handle(msg, self.now)
                acc.committed(step)
                queue.append((src, self.leaders[src].on_reply(name, step.reply, self.now)))

    def advance(self, seconds: float, step: float = 0.1) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now += step
            for name, leader in self.leaders.items():
                if name not in self.stopped:
                    self.run(leader.tick(self.now), name)

    def promote(self, server: str = "sa", force: bool = False, settle: float = 1.5) -> None:
        self.run(self.leaders[server].promote(self.now, force=force), server)
        self.advance(settle)

    def set_license(self, name: str, lic: LicenseInfo | None, key: ProductKey) -> None:
        acc = self.acceptors[name]
        lics = dict(acc.licenses)
        if lic is None:
            lics.pop(key, None)
        else:
            lics[key] = own_copy(lic, name)
        acc.set_licenses(lics)

    def call(self, method: str, *args: Any, owner: str | None = None) -> ClientReply:
        """A client call on leader "sa"; `owner` (the client's CURVE key) defaults to one key
        per client id (the first argument after the request id)."""
        before = len(self.replies)
        key = owner if owner is not None else f"key-of-{args[1]}"
        self.run(getattr(self.leader, method)("tok", *args, self.now, owner=key))
        self.advance(0.2)
        new = self.replies[before:]
        assert len(new) == 1, new
        return new[0]
