"""Micro-benchmark of a backend's CPU per replicated message (docs/performance.md).

`python -m bench.backend_micro [--cycles N] [--repeat R] [--profile]`: the frames a backend
receives from a leader at 1 client (one checkout+release cycle after another, each op its own
ACCEPT, the leader's probes in between) are recorded once from a sans-I/O `Leader` and three
in-process acceptors; then each repetition feeds them, one frame per call as the service's
loop does at low load, to `BackendService.handle_frames` over a fresh `SqliteStore` (WAL,
synchronous=FULL: every write is fsynced). No sockets: this is the decode, the acceptor, the
SQLite transaction and the reply encoding of the service.

Reports per repetition the CPU microseconds per cycle of the process (user + system, from
`getrusage`), split into user and system, the median over the repetitions, and the SQL
statements run per cycle (`sqlite3` trace callback). ``--profile`` prints a cProfile of one
repetition (the top functions by own time and their call counts per cycle).

Run it with ``PYTHONPATH`` at another tree for before/after figures (paired: alternate the
two trees and compare the medians).
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import pstats
import resource
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import zmq

from bench.leader_micro import KEY, KEYS, NAMES, own_copy
from tmr.backend.service import BackendService
from tmr.backend.store import SqliteStore
from tmr.config import BackendConfig
from tmr.protocol.peer_api import decode_reply, encode_request
from tmr.protocol.results import CheckoutResult
from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.leader import ClientReply, Effects, Leader, LeaderConfig
from tmr.replication.messages import Accepted
from tmr.replication.types import ZERO_EPOCH, LicenseInfo

OP_INTERVAL = 0.0015  # seconds between two ops at 1 client (about 330 cycles/s)
LICENSE = LicenseInfo(7, 1_000, True)


def record(cycles: int) -> tuple[list[bytes], list[bytes]]:
    """The frames backend b1 receives: (the takeover, then `cycles` checkout+release cycles)."""
    now = 0.0
    acceptors = {
        n: Acceptor(n, AcceptorState(ZERO_EPOCH, False), {KEY: own_copy(LICENSE, i + 1)})
        for i, n in enumerate(NAMES)
    }
    leader = Leader(LeaderConfig("sa", NAMES, backend_keys=KEYS), wall_clock=lambda: now)
    frames: list[bytes] = []
    replies: list[ClientReply] = []

    def deliver(fx: Effects) -> None:
        queue = [fx]
        while queue:
            out = queue.pop()
            replies.extend(out.replies)
            for name, msg in out.send:
                if name == "b1":
                    frames.append(encode_request(msg))
                step = acceptors[name].handle(msg, now)
                acceptors[name].committed(step)
                queue.append(leader.on_reply(name, step.reply, now))

    deliver(leader.promote(now))
    for _ in range(20):
        now += 0.1
        deliver(leader.tick(now))
    assert leader.role.value == "active", leader.status()
    takeover = frames[:]
    frames.clear()
    for i in range(cycles):
        fx = leader.checkout("t", f"r{i}", f"c{i}", *KEY, 1, now, owner="k")
        fx.extend(leader.pump(now))
        deliver(fx)
        now += OP_INTERVAL
        deliver(leader.tick(now))
        result = replies[-1].result
        assert isinstance(result, CheckoutResult), result
        fx = leader.release("t", f"x{i}", f"c{i}", result.handle, now, owner="k")
        fx.extend(leader.pump(now))
        deliver(fx)
        now += OP_INTERVAL
        deliver(leader.tick(now))
    return takeover, frames


def service(root: Path) -> BackendService:
    """A backend service over a fresh store in `root`, without sockets or license files."""
    config = BackendConfig(
        name="b1",
        key_file=root / "node.key",
        state_dir=root,
        license_dir=root,
        vendor_keys=(),
        allowed_servers=(),
        machine_id_file=root / "machine-id",
        ctl_socket=root / "ctl.sock",
    )
    svc = BackendService(config)
    svc.store = SqliteStore(root / "backend.sqlite3")
    svc.acceptor = Acceptor("b1", svc.store.load(), {KEY: replace(own_copy(LICENSE, 1))})
    return svc


def run(
    takeover: list[bytes],
    frames: list[bytes],
    profile: cProfile.Profile | None = None,
    *,
    trace: bool = False,
) -> tuple[float, float, int]:
    """(user s, system s, SQL statements) to serve `frames` after `takeover`. The statements
    are counted only with `trace` (the trace callback itself costs CPU: not for timing)."""
    with tempfile.TemporaryDirectory(prefix="tmr-backend-micro-") as tmp:
        svc = service(Path(tmp))
        try:
            for frame in takeover:
                assert svc.handle_frames([frame])[0] is not None
            statements = 0

            def count(_sql: str) -> None:
                nonlocal statements
                statements += 1

            assert svc.store is not None and svc.store._conn is not None
            if trace:
                svc.store._conn.set_trace_callback(count)
            handle = svc.handle_frames
            t0 = resource.getrusage(resource.RUSAGE_SELF)
            if profile is not None:
                profile.enable()
            out = [handle([frame])[0] for frame in frames]
            if profile is not None:
                profile.disable()
            t1 = resource.getrusage(resource.RUSAGE_SELF)
            svc.store._conn.set_trace_callback(None)
            for reply in out[-4:]:
                assert reply is not None
                msg = decode_reply(reply)
                assert not isinstance(msg, Accepted) or all(
                    r.status.value == "ok" for r in msg.results.values()
                ), msg
        finally:
            svc.close()
    return t1.ru_utime - t0.ru_utime, t1.ru_stime - t0.ru_stime, statements


def _client(endpoint: str, frames: list[bytes]) -> None:
    """The leader's side of `run_sockets`: each frame sent when the previous one is answered."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    for frame in frames:
        sock.send(frame)
        sock.recv()
    sock.close(linger=0)
    ctx.term()


def run_sockets(takeover: list[bytes], frames: list[bytes]) -> tuple[float, float]:
    """(user s, system s) of the service's thread serving `frames` through its poll loop: a
    ROUTER on 127.0.0.1 (no CURVE: the encryption is in ZeroMQ's I/O thread, not counted), a
    control socket and a timer as `serve_forever` has them, a client in another process."""
    with tempfile.TemporaryDirectory(prefix="tmr-backend-micro-") as tmp:
        svc = service(Path(tmp))
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            for frame in takeover:
                assert svc.handle_frames([frame])[0] is not None
            router = ctx.socket(zmq.ROUTER)
            port = router.bind_to_random_port("tcp://127.0.0.1")
            ctl = ctx.socket(zmq.ROUTER)
            ctl.bind(f"ipc://{tmp}/ctl.sock")
            svc._router, svc._ctl = router, ctl
            loop = svc.loop
            loop.serve_ctl(ctl, svc.ctl_server)
            answered = 0
            serve = svc._serve_peers

            def serve_and_count(now: float) -> None:
                nonlocal answered
                before = svc.counters["requests"]
                serve(now)
                answered += svc.counters["requests"] - before
                if answered >= len(frames):
                    loop.stop("done")

            loop.watch(router, serve_and_count)
            loop.each_turn(svc._send_usage_answers)
            loop.every(30.0, lambda now: None)
            proc = multiprocessing.get_context("fork").Process(
                target=_client, args=(f"tcp://127.0.0.1:{port}", frames)
            )
            proc.start()
            r0 = resource.getrusage(resource.RUSAGE_THREAD)
            loop.run()
            r1 = resource.getrusage(resource.RUSAGE_THREAD)
            proc.join()
            for sock in (router, ctl):
                sock.close(linger=0)
            svc._router = svc._ctl = None
        finally:
            svc.close()
            ctx.term()
    return r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile one repetition")
    ap.add_argument(
        "--sockets", action="store_true", help="through the service's poll loop and a socket"
    )
    args = ap.parse_args()
    takeover, frames = record(args.cycles)
    n = args.cycles
    if args.profile:
        prof = cProfile.Profile()
        run(takeover, frames, prof)
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime")
        print(f"{len(frames)} frames for {n} cycles; calls per cycle, own us per cycle:")
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:30]  # type: ignore[attr-defined]
        for (file, line, name), (_cc, nc, tt, _ct, _callers) in rows:
            where = f"{Path(file).name}:{line}({name})"
            print(f"{nc / n:8.2f} {tt / n * 1e6:8.1f}  {where}")
        return
    users, systems, totals = [], [], []
    statements = run(takeover, frames, trace=True)[2]
    for _ in range(args.repeat):
        if args.sockets:
            user, system = run_sockets(takeover, frames)
        else:
            user, system, _ = run(takeover, frames)
        users.append(user / n * 1e6)
        systems.append(system / n * 1e6)
        totals.append((user + system) / n * 1e6)
    print(f"{len(frames)} frames for {n} cycles, {statements / n:.2f} SQL statements per cycle")
    print("CPU us per cycle: " + " ".join(f"{t:.0f}" for t in totals))
    print(
        f"median {statistics.median(totals):.0f} us per cycle "
        f"(user {statistics.median(users):.0f}, system {statistics.median(systems):.0f})"
    )


if __name__ == "__main__":
    main()
