"""The floor of a Python ZeroMQ server's CPU per message when messages come one at a time
(docs/performance.md, issue 17's heartbeat target).

`python -m bench.wakeup_floor [--clients C] [--rate R] [--seconds S] [--coalesce MS]`: a bare
ROUTER with CURVE and a ZAP handler, polled with as many other sockets as the TMR server's
loop watches, that answers each message at once with the message itself (no decoding, no
state); a client process with C CURVE DEALER sockets sends R messages a second, spread
evenly, round-robin over its sockets (the pattern of C heartbeating clients). Prints the CPU
µs per message of the server's main thread and of its ZeroMQ I/O thread: what any server
built this way pays per message before doing any work of its own. Compare
`bench.heartbeat_cost` (the TMR server under the same pattern) and `bench.server_micro` (the
TMR server's own Python work per heartbeat, without sockets). `--coalesce MS`: after a turn
that answered messages the server sleeps MS before it polls again, so that the messages
arriving meanwhile share one wake-up (what the TMR server's idle hold does while busy,
`idle_hold_ms` of the server's configuration).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from multiprocessing.queues import Queue
from typing import Any

import zmq
from zmq.utils import z85

from tmr.zmqio import recv_frames_user, send_frames

# The TMR server's loop polls the client socket, three backend sockets, the control socket,
# the ZAP socket, the usage worker's wake socket and its signal pipe.
OTHER_SOCKETS = 5
WARMUP = 2.0  # seconds before the measurement starts (connections, handshakes)


def _threads() -> dict[str, float]:
    """CPU seconds of each thread of this process, by thread name."""
    out: dict[str, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def server(
    ready: Queue[Any],
    done: Queue[Any],
    public: bytes,
    secret: bytes,
    seconds: float,
    coalesce: float = 0.0,
) -> None:
    ctx = zmq.Context()
    zap = ctx.socket(zmq.REP)
    zap.bind("inproc://zeromq.zap.01")
    sock = ctx.socket(zmq.ROUTER)
    sock.curve_server = True
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    poller = zmq.Poller()
    poller.register(zap, zmq.POLLIN)
    poller.register(sock, zmq.POLLIN)
    others = []
    for i in range(OTHER_SOCKETS):
        s = ctx.socket(zmq.DEALER)
        s.bind(f"inproc://other-{i}")
        poller.register(s, zmq.POLLIN)
        others.append(s)
    ready.put(port)
    start = time.monotonic() + WARMUP
    end = time.monotonic() + seconds
    before: dict[str, float] | None = None
    count = 0
    while time.monotonic() < end:
        events = dict(poller.poll(50))
        if zap in events:
            req = zap.recv_multipart()
            user = z85.encode(req[6]) if len(req) > 6 else b""  # the TMR server's User-Id
            zap.send_multipart([req[0], req[1], b"200", b"OK", user, b""])
        if sock in events:
            while (got := recv_frames_user(sock)) is not None:
                frames = got[0]
                send_frames(sock, [frames[0], b"", frames[-1]])
                if before is not None:
                    count += 1
            if coalesce:
                time.sleep(coalesce)
        if before is None and time.monotonic() >= start:
            before = _threads()
            t0 = time.monotonic()
    after = _threads()
    window = time.monotonic() - t0
    base = before or {}
    used = {n: after[n] - base.get(n, 0.0) for n in after}
    main = used.get("python", 0.0)
    io = sum(v for n, v in used.items() if n.startswith("ZMQbg/IO"))
    done.put(
        {
            "messages": count,
            "rate_per_s": round(count / window, 1),
            "main_thread_us_per_msg": round(main / count * 1e6, 1) if count else None,
            "io_thread_us_per_msg": round(io / count * 1e6, 1) if count else None,
        }
    )
    for s in [sock, zap, *others]:
        s.close(linger=0)
    ctx.term()


def client(port: int, server_key: bytes, clients: int, rate: float, seconds: float) -> None:
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, clients + 100)
    socks = []
    for _ in range(clients):
        public, secret = zmq.curve_keypair()
        s = ctx.socket(zmq.DEALER)
        s.curve_serverkey = server_key
        s.curve_publickey = public
        s.curve_secretkey = secret
        s.setsockopt(zmq.LINGER, 0)
        s.connect(f"tcp://127.0.0.1:{port}")
        socks.append(s)
    payload = b"\x85" + b"x" * 90  # about a heartbeat request's size
    interval = 1.0 / rate
    due = time.monotonic()
    end = due + seconds
    i = 0
    while due < end:
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        s = socks[i % clients]
        s.send_multipart([b"", payload])
        i += 1
        due += interval
        try:
            while True:
                s.recv(zmq.NOBLOCK)  # the answer to its previous message
        except zmq.Again:
            pass
    for s in socks:
        s.close(linger=0)
    ctx.term()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=1000, help="client sockets (1000)")
    ap.add_argument("--rate", type=float, default=1000.0, help="messages per second (1000)")
    ap.add_argument("--seconds", type=float, default=12.0, help="run time (12)")
    ap.add_argument("--coalesce", type=float, default=0.0, help="ms to sleep after a turn (0)")
    args = ap.parse_args()
    public, secret = zmq.curve_keypair()
    ready: Queue[Any] = mp.Queue()
    done: Queue[Any] = mp.Queue()
    srv = mp.Process(
        target=server, args=(ready, done, public, secret, args.seconds + 1.0, args.coalesce / 1000)
    )
    srv.start()
    port = ready.get(timeout=30)
    cl = mp.Process(target=client, args=(port, public, args.clients, args.rate, args.seconds))
    cl.start()
    cl.join()
    result = done.get(timeout=30)
    srv.join()
    print(json.dumps({"clients": args.clients, "sent_rate": args.rate, **result}))


if __name__ == "__main__":
    main()
