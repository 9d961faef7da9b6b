"""Micro-benchmark of the server's per-request path (docs/performance.md): heartbeats through
`ServerService.on_client` and the loop's per-turn steps, without sockets.

`python -m bench.server_micro [--heartbeats N] [--per-turn K] [--repeat R] [--cold MB]`: a real
`ServerService` (its leader made active against three in-process `Acceptor`s), one client
handle, then N heartbeat frames as they come off the client socket (routing id, empty
delimiter, the encoded request), K to a loop turn; after each turn the steps the service's
loop runs every turn (the leader's pump, the WebAdmin schedule, the metrics' end of turn).
The replies go to a socket stand-in that keeps them; each is checked. Reports the CPU µs per
heartbeat of each repetition and their median: the server's Python cost per message, apart
from ZeroMQ's (the part a loop turn of the running server adds: `bench.heartbeat_cost`).
With `--cold MB`, every turn starts with the CPU's caches evicted (MB megabytes read first,
outside the measured time), as after the waits of a server among other processes: the CPU
of the turns alone (`time.thread_time`), per heartbeat; the leader's clock then advances
10 us a turn (the evictions take seconds in all), so up to about 100,000 heartbeats fit in
its leadership window.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.leader_micro import KEY, own_copy
from tmr.config import BackendRef, ServerConfig
from tmr.keys import generate_keypair, write_keypair
from tmr.protocol.client_api import HeartbeatRequest, decode_reply, encode_request
from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.leader import Effects
from tmr.replication.types import ZERO_EPOCH, LicenseInfo
from tmr.server.service import ServerService

OWNER = "bench-client-key"


class Sent:
    """The client socket's stand-in: keeps what the service sends."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes, flags: int = 0) -> None:
        self.frames.append(frame)


def service(tmp: Path) -> tuple[ServerService, dict[str, Acceptor]]:
    write_keypair(tmp / "service.key", generate_keypair())
    write_keypair(tmp / "node.key", generate_keypair())
    names = ("b1", "b2", "b3")
    keys = [generate_keypair() for _ in names]
    cfg = ServerConfig(
        "tmr-a",
        tmp / "service.key",
        tmp / "node.key",
        tuple(
            BackendRef(n, f"tcp://127.0.0.1:{1 + i}", k.public)
            for i, (n, k) in enumerate(zip(names, keys, strict=True))
        ),
        state_dir=tmp / "state",
        ctl_socket=tmp / "ctl.sock",
        web_listen=None,
    )
    svc = ServerService(cfg)
    leader = svc.leader
    lic = LicenseInfo(7, 1000, True)
    acceptors: dict[str, Acceptor] = {}
    for i, n in enumerate(names):
        copy = own_copy(lic, i + 1)
        acceptors[n] = Acceptor(n, AcceptorState(ZERO_EPOCH, False), {KEY: copy})
    # The acceptors' copies are bound to the stand-in keys of `own_copy`.
    leader.cfg = replace(leader.cfg, backend_keys=tuple(f"{i:02x}" * 32 for i in (1, 2, 3)))
    return svc, acceptors


def deliver(svc: ServerService, acceptors: dict[str, Acceptor], fx: Effects, now: float) -> None:
    queue = [fx]
    while queue:
        out = queue.pop()
        if out.persist_counter is not None:
            svc.counter.store(out.persist_counter)
        for name, msg in out.send:
            step = acceptors[name].handle(msg, now)
            acceptors[name].committed(step)
            queue.append(svc.leader.on_reply(name, step.reply, now))


def evict(buf: bytearray) -> None:
    """Read all of `buf` (larger than the caches; a byte it does not hold is searched for):
    the caches then hold its clean lines, so the turn after it pays for its own misses only,
    not for writing back lines this dirtied."""
    buf.find(1)


def run(heartbeats: int, per_turn: int, cold_mb: int = 0) -> float:
    with tempfile.TemporaryDirectory(prefix="tmr-server-micro-") as tmp:
        svc, acceptors = service(Path(tmp))
        leader = svc.leader
        now = time.monotonic()
        leader.auto_pump = True
        deliver(svc, acceptors, leader.promote(now), now)
        for _ in range(20):
            now += 0.1
            deliver(svc, acceptors, leader.tick(now), now)
        assert leader.role.value == "active", leader.status()
        deliver(svc, acceptors, leader.checkout("t", "r0", "c0", *KEY, 1, now, owner=OWNER), now)
        handle = next(iter(leader.handles_view(now)))["handle"]
        leader.auto_pump = False
        sent = Sent()
        svc.client = sent  # type: ignore[assignment]
        frames = [
            [b"\x00rid", b"", encode_request(HeartbeatRequest(f"hb-{i}", "c0", handle))]
            for i in range(heartbeats)
        ]
        steps: list[Any] = [
            lambda t: svc.apply(leader.pump(t)),
            svc._publish_web_if_due,
            lambda t: svc.web.end_turn(),
        ]

        def turn(start: int, t: float) -> None:
            for f in frames[start : start + per_turn]:
                svc.on_client(f, t, OWNER)
            for step in steps:
                step(t)

        starts = range(0, heartbeats, per_turn)
        if cold_mb:
            buf = bytearray(cold_mb << 20)
            spent = 0.0
            for start in starts:
                evict(buf)
                t0 = time.thread_time()
                # the leader's clock as if the evictions took no time (they take seconds in
                # all, past its leadership window of 1 s without backend answers)
                turn(start, now + start * 1e-5)
                spent += time.thread_time() - t0
        else:
            t0 = time.process_time()
            for start in starts:
                turn(start, time.monotonic())
            spent = time.process_time() - t0
        payloads = sent.frames[2::3]
        assert len(payloads) == heartbeats, len(payloads)
        for p in (payloads[0], payloads[-1]):
            r = decode_reply(p, op="heartbeat")
            assert getattr(r, "ok", False), r
        svc.loop.close()
        svc.ctx.term()
        return spent / heartbeats * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--heartbeats", type=int, default=20_000)
    ap.add_argument("--per-turn", type=int, default=1, help="heartbeats per loop turn (1)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--cold",
        type=int,
        default=0,
        metavar="MB",
        help="evict the caches before every turn by reading MB megabytes (64: more than "
        "the caches of the 2-core machine); 0: warm, as one turn after another (default)",
    )
    args = ap.parse_args()
    if args.heartbeats < 1 or args.per_turn < 1 or args.repeat < 1 or args.cold < 0:
        ap.error("--heartbeats, --per-turn and --repeat must be at least 1, --cold at least 0")
    us = [run(args.heartbeats, args.per_turn, args.cold) for _ in range(args.repeat)]
    print(" ".join(f"{u:.1f}" for u in us))
    how = f"{args.per_turn} a turn"
    if args.cold:
        how += f", caches evicted before each turn ({args.cold} MB)"
    print(f"median {statistics.median(us):.1f} us of CPU per heartbeat ({how})")


if __name__ == "__main__":
    main()
