"""Load worker: many concurrent clients in one process (`python -m bench.loadgen`).

Each client has its own DEALER socket (CURVE, a key pair of its own that it keeps when it
fails over to another endpoint) and at most one request in flight, like one
`tmr.client.Client`; one `zmq.Poller` loop multiplexes all of them, so a
few worker processes can drive 100 clients without starving the services of CPU. Requests
and replies are the real wire format (`tmr.protocol.client_api.encode_request` /
`decode_reply`). Retries follow the SDK's policy (`tmr.client._channel`): on no reply within
the attempt timeout or on ``NOT_ACTIVE``, the same request (same rid) goes to the next
endpoint.

Modes (``spec["mode"]``):

- ``cycle``: checkout then release, again and again; a sample is one whole cycle;
- ``crypt``: one checkout, then ``crypt("hmac", 64 bytes)`` calls; a sample is one call;
- ``hold``: check out ``spec["hold"]`` handles (giving up on the rest ``drain`` seconds after
  the start) and keep them; print ``{"held": n}``, wait for a line on standard input (at most
  ``spec["keep"]`` seconds, default 600), then release them all (within ``drain`` seconds);
- ``heartbeat``: every client checks out one handle (the checkouts spread over
  ``spec["ramp"]`` seconds), prints ``{"held": n}`` once all have one, then heartbeats it
  every ``spec["period"]`` seconds (the first at a random point of the period, so the
  heartbeats of many clients spread evenly) until a line arrives on standard input or the
  deadline; the handles are not released (the lease frees them). An idle client of the SDK
  does exactly this (`tmr.client`: one heartbeat per handle every lease / 3).

A process can hold at most about (``ulimit -n`` - 64) / 3 clients (each DEALER socket takes
its TCP connection and its ZeroMQ mailbox, and one more for fail-overs); `clients_per_process`
says how many the parent may give one worker (as many as that allows: fewer processes cost
less CPU per heartbeat).

The spec comes as one JSON line on standard input; the result is one JSON line on standard
output. Every loop is bounded: the worker gives up at ``start_at + duration + drain``.
"""

from __future__ import annotations

import heapq
import json
import random
import resource
import secrets
import select
import sys
import time
from collections import deque
from typing import Any, ClassVar

import msgpack
import zmq

from bench.common import Json, curve_keypair
from tmr.client._heartbeats import next_heartbeat
from tmr.client._retry import RetrySchedule
from tmr.protocol.client_api import (
    CheckoutRequest,
    CryptRequest,
    ErrorReply,
    HeartbeatRequest,
    OkReply,
    ReleaseRequest,
    Request,
    decode_reply,
    encode_reply,
    encode_request,
)
from tmr.protocol.codec import unpack
from tmr.protocol.errors import ProtocolError
from tmr.protocol.results import MAX_REPLY_SIZE, HeartbeatResult, valid_rid

CRYPT_DATA = bytes(range(64))
ERROR_PAUSE = 0.01  # before a new checkout after a refused one
POLL_MAX = 0.02
KEEP_DEFAULT = 600.0  # hold mode: seconds it keeps its handles at most, waiting for the parent
# A client's TCP connection and its socket's mailbox (an eventfd), and room for one more of
# them: a client that fails over opens its new socket before the old one is reaped, and after
# a takeover most of a worker's clients fail over within one heartbeat period.
FDS_PER_CLIENT = 3
FDS_SPARE = 64  # the context's own, standard streams, the interpreter's
# Fewer, larger processes cost less CPU per heartbeat (a worker polls only the clients with a
# request in flight, so its wake-ups cost what is ready, not how many clients it has; each
# process wakes for its own sends and replies and has its own ZeroMQ I/O thread): 2,000
# clients at 1,000 heartbeats/s took about 150 us of CPU per heartbeat in one process, 215 us
# in four. The file descriptor limit is the bound: 10,000 clients at `ulimit -n` 20,000 run
# as 2 processes of 5,000 (6,645 at most each).
CLIENTS_PER_PROCESS_MAX = 10_000
# Flags as plain ints: pyzmq's flags are enum members, and or-ing them (what send_multipart and
# recv_multipart do for every frame) builds a new one each time.
NOBLOCK = int(zmq.NOBLOCK)
RCVMORE = int(zmq.RCVMORE)


def _around_rid(frame: bytes, rid: str) -> tuple[bytes, bytes]:
    """`frame` (a packed map holding ``"rid": rid``) as the bytes before and after the
    packed rid, so that ``head + msgpack.packb(other) + tail`` is the same map with another
    rid (msgpack packs each value on its own, the map's order stays)."""
    key = msgpack.packb("rid")
    i = frame.index(key + msgpack.packb(rid)) + len(key)
    return frame[:i], frame[i + len(msgpack.packb(rid)) :]


# An OK reply is {"v": 1, "rid": rid, "ok": true, "result": body}: the bytes before the body
# for a given rid are REPLY_HEAD + packb(rid) + REPLY_MID (what the server's `encode_ok` sends).
_SAMPLE = encode_reply(OkReply("r", {}))
REPLY_HEAD, REPLY_MID = _around_rid(_SAMPLE[: -len(msgpack.packb({}))], "r")


class HeartbeatTemplate:
    """The heartbeat request of one client and handle, packed once: `encode(rid)` gives the
    bytes `encode_request(HeartbeatRequest(rid, cid, handle))` gives, without building and
    checking the request and its map on each heartbeat (only the rid changes).

    `check(frame, rid)` reads a reply to it: the renewed `HeartbeatResult` when `frame` is the
    OK reply to `rid` as the server encodes it (the envelope compared byte for byte, the result
    decoded and checked), else None (another rid, an error, or another encoding: then the
    caller decodes it with `decode_reply`). Raises `ProtocolError` for a malformed result.
    A server answers every heartbeat with the same result bytes (the lease it renews to): a
    result already decoded and checked is looked up by its bytes, not decoded again.
    """

    __slots__ = ("head", "tail")
    RESULTS_MAX = 16
    _results: ClassVar[dict[bytes, HeartbeatResult]] = {}

    def __init__(self, cid: str, handle: str, rid: str = "r-0") -> None:
        frame = encode_request(HeartbeatRequest(rid, cid, handle))  # checks cid and handle
        self.head, self.tail = _around_rid(frame, rid)

    def encode(self, rid: str) -> bytes:
        if not valid_rid(rid):
            raise ProtocolError(f"bad request id {rid!r}")
        return b"".join((self.head, msgpack.packb(rid), self.tail))

    @staticmethod
    def check(frame: bytes, rid: str) -> HeartbeatResult | None:
        head = b"".join((REPLY_HEAD, msgpack.packb(rid), REPLY_MID))
        if not frame.startswith(head):
            return None
        body = frame[len(head) :]
        result = HeartbeatTemplate._results.get(body)
        if result is None:
            result = HeartbeatResult.from_wire(unpack(body, max_size=MAX_REPLY_SIZE))
            if len(HeartbeatTemplate._results) < HeartbeatTemplate.RESULTS_MAX:
                HeartbeatTemplate._results[body] = result
        return result


def clients_per_process(nofile: int | None = None) -> int:
    """How many clients one worker process can have open within its file descriptor limit
    (the soft ``RLIMIT_NOFILE``, or `nofile`), at most CLIENTS_PER_PROCESS_MAX."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile == resource.RLIM_INFINITY:
            nofile = 1 << 20
    return max(1, min(CLIENTS_PER_PROCESS_MAX, (nofile - FDS_SPARE) // FDS_PER_CLIENT))


class _Client:
    """One simulated client: a socket and the request it is waiting for."""

    __slots__ = (
        "attempt",
        "cid",
        "cycle_start",
        "deadline",
        "done",
        "endpoint",
        "first_sent",
        "gen",
        "handle",
        "hb",
        "held",
        "index",
        "keys",
        "op",
        "payload",
        "quota",
        "req",
        "resend_at",
        "retry",
        "rid",
        "rids",
        "sends",
        "sent_at",
        "sock",
    )

    def __init__(self, index: int, cid: str, endpoint: int) -> None:
        self.index = index
        self.cid = cid
        self.endpoint = endpoint
        self.sock: zmq.Socket[bytes] | None = None
        # One key pair for the client's life, as `tmr.client.Client` has: the server knows a
        # handle's owner by it, so a new key after a fail-over would lose the handles.
        self.keys = curve_keypair()
        # The request it waits for: its op (None: none), rid and bytes; `req` is the request
        # itself but for a heartbeat (packed from `hb`, the client's template).
        self.op: str | None = None
        self.rid = ""
        self.req: Request | None = None
        self.hb: HeartbeatTemplate | None = None
        self.payload = b""
        self.deadline = 0.0  # of the current attempt
        self.attempt = 0.0  # its timeout
        self.resend_at: float | None = None
        self.gen = 0  # bumped whenever its timer changes: older heap entries are void
        # The SDK's retry schedule of the current request, from its first failed attempt.
        self.retry: RetrySchedule | None = None
        self.rids = 0
        self.sends = 0  # times the current request was sent
        self.sent_at = 0.0  # ... the last time
        self.first_sent = 0.0
        self.handle: str | None = None
        self.cycle_start = 0.0
        self.done = False
        self.held: list[str] = []
        self.quota = 0


class Worker:
    def __init__(self, spec: Json) -> None:
        self.spec = spec
        self.mode: str = spec["mode"]
        self.echo: bool = spec.get("proto", "tmr") == "echo"
        self.endpoints: list[str] = list(spec["endpoints"])
        self.server_key = spec["server_key"].encode("ascii")
        self.firm = int(spec["firm"])
        self.product = int(spec["product"])
        self.start_at = float(spec["start_at"])
        self.stop_at = self.start_at + float(spec["duration"])
        self.hard_deadline = self.stop_at + float(spec.get("drain", 15.0))
        self.attempt_timeout = float(spec.get("attempt_timeout", 0.5))
        self.record = bool(spec.get("record", False))
        # Request ids must never repeat across runs: the server remembers released ones.
        self.tag = f"{spec.get('run', 'b')}-{secrets.token_hex(3)}-w{spec.get('worker', 0)}"
        # One I/O thread (libzmq's default, said here): on the benchmark's 2 cores another one
        # is one more thread to wake per message, on the cores of the cluster under test.
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=1)
        # libzmq's default is 1,023 sockets per context; a heartbeat worker has thousands,
        # and a client that fails over opens its new socket before the old one is reaped.
        self.ctx.set(zmq.MAX_SOCKETS, max(1023, 4 * int(spec["clients"]) + FDS_SPARE))
        self.period = float(spec.get("period", 10.0))
        self.ramp = float(spec.get("ramp", 0.0))
        self.keep = float(spec.get("keep", KEEP_DEFAULT))  # hold mode: the most it waits
        self.rng = random.Random()
        self.stdin_fd: int | None = None
        self.holding = 0  # heartbeat mode: clients that have their handle
        self.announced = False
        self.heartbeats = 0
        self.hb_ms: list[float] = []
        self.hb_lost = 0
        self.poller = zmq.Poller()
        self.watched: set[zmq.Socket[bytes]] = set()  # the client sockets `poller` watches
        self.by_sock: dict[zmq.Socket[bytes], _Client] = {}
        first = int(spec.get("first_endpoint", 0))
        self.clients = [
            _Client(i, f"bench-{self.tag}-c{i}", first % len(self.endpoints))
            for i in range(int(spec["clients"]))
        ]
        hold = int(spec.get("hold", 0))
        for c in self.clients:
            c.quota = hold // len(self.clients) + (1 if c.index < hold % len(self.clients) else 0)
        # Timers (attempt deadlines, delayed resends) in a heap: a wake-up costs the sockets
        # that are ready and the timers that are due, not a walk over every client, so the
        # worker's CPU per cycle does not grow with how bursty a server's replies are.
        self.timers: list[tuple[float, int, int]] = []  # (due, client gen, client index)
        # ... except those set a constant span from now (a heartbeat's next one a period after
        # its reply, a first attempt's deadline): each span's timers fall due in the order they
        # are set, so a queue per span holds them in order at no cost per push and pop.
        self.spans: dict[float, deque[tuple[float, int, int]]] = {
            self.period: deque(),
            self.attempt_timeout: deque(),
        }
        self.open = len(self.clients)  # clients not done
        self.cycles = 0
        self.window_cpu: list[float] = []  # this process's CPU time at the window's start, end
        self.lat_ms: list[float] = []
        self.errors: dict[str, int] = {}
        self.retries = 0
        # Releases answered "released": false: [handle, first sent, times sent]. After a
        # fail-over that is legitimate when the old server committed the release but its
        # answer was lost (the retry finds the handle gone); the parent checks which.
        self.not_released: list[list[Any]] = []
        self.ok_times: list[float] = []
        self.handles: list[str] = []
        self.releasing = False  # hold mode, second phase

    # ------------------------------------------------------------------ sockets

    def _connect(self, c: _Client) -> None:
        if c.sock is not None:
            self._unwatch(c.sock)
            del self.by_sock[c.sock]
            c.sock.close(linger=0)
        public, secret = c.keys
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.curve_secretkey = secret.encode("ascii")
        sock.curve_publickey = public.encode("ascii")
        sock.curve_serverkey = self.server_key
        sock.connect(self.endpoints[c.endpoint])
        c.sock = sock
        self.by_sock[sock] = c

    # Only the sockets with a request in flight are polled: a poll costs every socket it
    # watches, and a heartbeat worker's thousands of clients are nearly all waiting for their
    # next heartbeat (polling them all made a worker spend about 0.6 ms of CPU per heartbeat,
    # taken from the server it measures on a small machine). A late reply to a socket not
    # watched waits in it and is dropped (another rid) when its next request is sent.
    def _watch(self, sock: zmq.Socket[bytes]) -> None:
        if sock not in self.watched:
            self.watched.add(sock)
            self.poller.register(sock, zmq.POLLIN)

    def _unwatch(self, sock: zmq.Socket[bytes]) -> None:
        if sock in self.watched:
            self.watched.discard(sock)
            self.poller.unregister(sock)

    def _send(self, c: _Client, now: float) -> None:
        assert c.sock is not None
        c.resend_at = None
        c.sent_at = now
        c.deadline = now + c.attempt
        if c.sends == 0:
            c.first_sent = now
        c.sends += 1
        self._watch(c.sock)
        try:
            c.sock.send(c.payload, NOBLOCK)  # one frame, as the SDK sends
        except zmq.Again:
            c.deadline = now  # cannot queue: try the next endpoint at once
        self._arm(c, c.attempt)

    def _arm(self, c: _Client, span: float) -> None:
        """Queue the client's timer (its resend, else its attempt deadline): in the queue of
        timers set about `span` s ahead if it is due no earlier than that queue's last (so
        the queue stays in order), else on the heap."""
        c.gen += 1
        due = c.resend_at if c.resend_at is not None else c.deadline
        if due == float("inf"):
            return
        queue = self.spans.get(span)
        if queue is not None and (not queue or queue[-1][0] <= due):
            queue.append((due, c.gen, c.index))
        else:
            heapq.heappush(self.timers, (due, c.gen, c.index))

    def _request(self, c: _Client, req: Request, now: float, delay: float = 0.0) -> None:
        c.req = req
        self._start(c, req.op, req.rid, encode_request(req), now, delay)

    def _start(
        self,
        c: _Client,
        op: str,
        rid: str,
        payload: bytes,
        now: float,
        delay: float = 0.0,
        span: float | None = None,
    ) -> None:
        """Send `payload` now, or `delay` s from now (its timer queued by `span`, by default
        the delay: see `_arm`)."""
        c.op = op
        c.rid = rid
        c.payload = payload
        c.attempt = self.attempt_timeout
        c.retry = None
        c.sends = 0
        if delay > 0:
            c.resend_at = now + delay
            c.deadline = float("inf")
            self._arm(c, delay if span is None else span)
            if c.sock is not None:
                self._unwatch(c.sock)
        else:
            self._send(c, now)

    def _next_rid(self, c: _Client) -> str:
        c.rids += 1
        return f"{self.tag}-c{c.index}-{c.rids}"

    def _retry(self, c: _Client) -> RetrySchedule:
        if c.retry is None:
            c.retry = RetrySchedule(len(self.endpoints), c.endpoint, c.attempt)
        return c.retry

    def _failover(self, c: _Client, now: float, pause: float = 0.0) -> None:
        """Same request, where the SDK's retry schedule says (the Lazy Pirate step): a new
        socket unless the schedule keeps the connection the answer came on."""
        self.retries += 1
        retry = self._retry(c)
        if not retry.keeps_connection or retry.index != c.endpoint:
            c.endpoint = retry.index
            self._connect(c)
        if pause > 0:
            c.resend_at = now + pause
            c.deadline = float("inf")
            self._arm(c, pause)
        else:
            self._send(c, now)

    # ------------------------------------------------------------------ requests

    def _checkout(self, c: _Client, now: float, delay: float = 0.0) -> None:
        c.handle = None
        c.hb = None
        c.cycle_start = now + delay
        req = CheckoutRequest(self._next_rid(c), c.cid, self.firm, self.product, 1)
        self._request(c, req, now, delay)

    def _release(self, c: _Client, handle: str, now: float) -> None:
        self._request(c, ReleaseRequest(self._next_rid(c), c.cid, handle), now)

    def _crypt(self, c: _Client, now: float) -> None:
        assert c.handle is not None
        c.cycle_start = now
        req = CryptRequest(self._next_rid(c), c.cid, c.handle, "hmac", CRYPT_DATA)
        self._request(c, req, now)

    def _finish(self, c: _Client) -> None:
        if not c.done:
            self.open -= 1
        c.done = True
        c.op = None
        c.req = None
        c.resend_at = None

    def _begin(self, c: _Client, now: float) -> None:
        if self.mode == "hold" and self.releasing:
            self._release_next_held(c, now)
        elif self.mode == "hold" and c.quota <= len(c.held):
            self._finish(c)
        elif self.mode == "heartbeat":
            self._checkout(c, now, self.rng.uniform(0.0, self.ramp))
        else:
            self._checkout(c, now)

    def _heartbeat(self, c: _Client, now: float, delay: float, span: float | None = None) -> None:
        assert c.handle is not None
        if c.hb is None:  # its first heartbeat for this handle
            c.hb = HeartbeatTemplate(c.cid, c.handle)
        c.cycle_start = now + delay
        c.req = None
        rid = self._next_rid(c)
        self._start(c, "heartbeat", rid, c.hb.encode(rid), now, delay, span)

    def _announce(self) -> None:
        """Heartbeat mode: tell the parent once every client has its handle."""
        if not self.announced and self.holding == len(self.clients):
            self.announced = True
            print(json.dumps({"held": self.holding}), flush=True)

    def _release_next_held(self, c: _Client, now: float) -> None:
        if c.held:
            self._release(c, c.held.pop(), now)
        else:
            self._finish(c)

    def _count(self, c: _Client, now: float) -> None:
        if self.start_at <= now <= self.stop_at:
            self.cycles += 1
            self.lat_ms.append(round((now - c.cycle_start) * 1000.0, 3))

    # ------------------------------------------------------------------ replies

    def _on_frames(self, c: _Client, frames: list[bytes], now: float) -> None:
        if c.op is None:
            return
        if c.op == "heartbeat" and not self.echo:
            # The hot path of a heartbeat worker: the OK reply to this rid as the server
            # sends it is checked without building the reply's objects.
            try:
                renewed = HeartbeatTemplate.check(frames[-1], c.rid)
            except ProtocolError:
                self._error(c, "MALFORMED_REPLY", now)
                return
            if renewed is not None:
                self._heartbeat_renewed(c, now)
                return
        try:
            reply = decode_reply(frames[-1])
        except ProtocolError:
            self._error(c, "MALFORMED_REPLY", now)
            return
        if not self.echo and reply.rid != c.rid:
            return  # a late reply to an earlier attempt
        if isinstance(reply, ErrorReply):
            if reply.error == "NOT_ACTIVE":
                retry = self._retry(c)
                pause = retry.not_active(now - c.sent_at)
                c.attempt = retry.attempt  # longer while staying with the server that answered
                self._failover(c, now, pause)
                return
            self._error(c, reply.error, now)
            return
        result: Any = reply.result
        op = c.op
        if op == "checkout":
            handle = str(result["handle"])
            c.handle = handle
            if self.record:
                self.ok_times.append(now)
                self.handles.append(handle)
            if self.mode == "cycle":
                self._release(c, handle, now)
            elif self.mode == "crypt":
                self._crypt(c, now)
            elif self.mode == "heartbeat":
                self.holding += 1
                self._announce()
                self._heartbeat(c, now, self.rng.uniform(0.0, self.period))
            else:  # hold
                c.held.append(handle)
                self._begin(c, now)
        elif op == "release":
            if result.get("released") is not True and not self.echo:
                assert isinstance(c.req, ReleaseRequest)
                self.not_released.append([c.req.handle, c.first_sent, c.sends])
            if self.mode == "cycle":
                self._count(c, now)
                if now < self.stop_at:
                    self._checkout(c, now)
                else:
                    self._finish(c)
            elif self.mode == "crypt":
                self._finish(c)
            else:
                self._release_next_held(c, now)
        elif op == "heartbeat":
            self._heartbeat_renewed(c, now)
        elif op == "crypt":
            self._count(c, now)
            if now < self.stop_at:
                self._crypt(c, now)
            else:
                assert c.handle is not None
                self._release(c, c.handle, now)

    def _heartbeat_renewed(self, c: _Client, now: float) -> None:
        self.heartbeats += 1
        self.hb_ms.append(round((now - c.cycle_start) * 1000.0, 3))
        # As the SDK: a period after this heartbeat was due (the client's own phase), not
        # after its answer. Due in the order they were due before: the period's queue.
        due = next_heartbeat(c.cycle_start, now, self.period)
        self._heartbeat(c, now, due - now, self.period)

    def _error(self, c: _Client, code: str, now: float) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        op = c.op
        if op == "release":
            if code == "UNKNOWN_HANDLE":
                assert isinstance(c.req, ReleaseRequest)
                self.not_released.append([c.req.handle, c.first_sent, c.sends])
            if self.mode == "hold":
                self._release_next_held(c, now)
            elif now < self.stop_at and self.mode == "cycle":
                self._checkout(c, now)
            else:
                self._finish(c)
        elif op == "checkout":
            busy = self.mode in ("hold", "heartbeat") and now < self.hard_deadline
            if now < self.stop_at or busy:
                self._checkout(c, now, ERROR_PAUSE)
            else:
                self._finish(c)
        elif op == "heartbeat":
            # The server no longer knows the handle (the SDK would call on_lost): count it
            # and check out a new one, so the number of heartbeating handles stays.
            if code == "UNKNOWN_HANDLE":
                self.hb_lost += 1
                self.holding -= 1
                self._checkout(c, now, ERROR_PAUSE)
            else:
                self._heartbeat(c, now, ERROR_PAUSE)
        else:  # crypt
            assert c.handle is not None
            if now < self.stop_at:
                self._crypt(c, now)
            else:
                self._release(c, c.handle, now)

    # ------------------------------------------------------------------ loop

    def _loop(self, until: float) -> None:
        """Serve replies and timers until every client is done or `until`."""
        while True:
            now = time.monotonic()
            self._mark_window(now)
            if now >= until:
                return
            self._timers_due(now)
            if self.open == 0:
                return
            wake = min(until, self.timers[0][0]) if self.timers else until
            for queue in self.spans.values():
                if queue and queue[0][0] < wake:
                    wake = queue[0][0]
            timeout = min(max(0.0, wake - now), POLL_MAX)
            for sock, _ in self.poller.poll(int(timeout * 1000) + 1):
                if self.stdin_fd is not None and sock == self.stdin_fd:
                    if sys.stdin.readline().strip() == "count":  # counts so far; go on
                        print(json.dumps(self.counts()), flush=True)
                        continue
                    return  # "stop" (or stdin closed)
                owner = self.by_sock.get(sock)
                zsock = owner.sock if owner is not None else None
                if owner is None or zsock is None or zsock is not sock:
                    continue
                # One message per ready socket and poll (it is ready): a second `recv` to
                # find the socket empty costs a raised zmq.Again per reply; a socket still
                # watched with more waiting is ready again at the next poll.
                try:
                    frames = [zsock.recv(NOBLOCK)]
                    while zsock.getsockopt(RCVMORE):
                        frames.append(zsock.recv(NOBLOCK))
                except zmq.Again:
                    continue
                self._on_frames(owner, frames, time.monotonic())

    def _timers_due(self, now: float) -> None:
        """Resend (after a pause) or fail over (attempt timed out) the clients that are due."""
        for queue in self.spans.values():
            while queue and queue[0][0] <= now:
                self._timer(queue.popleft(), now)
        while self.timers and self.timers[0][0] <= now:
            self._timer(heapq.heappop(self.timers), now)

    def _timer(self, timer: tuple[float, int, int], now: float) -> None:
        _, gen, index = timer
        c = self.clients[index]
        if c.done or c.op is None or gen != c.gen:
            return  # answered, or its timer was set again since
        if c.resend_at is not None:
            if now >= c.resend_at:
                self._send(c, now)
        elif now >= c.deadline:
            retry = self._retry(c)
            retry.timed_out()
            c.attempt = retry.attempt
            self._failover(c, now)

    def _mark_window(self, now: float) -> None:
        """Note the process CPU time when the measurement window starts and when it ends."""
        marks = len(self.window_cpu)
        if marks < 2 and now >= (self.start_at, self.stop_at)[marks]:
            self.window_cpu.append(time.process_time())

    def counts(self) -> Json:
        """A heartbeat worker's counts so far (asked with a ``count`` line on stdin)."""
        return {
            "heartbeats": self.heartbeats,
            "retries": self.retries,
            "hb_lost": self.hb_lost,
            "errors": sum(self.errors.values()),
        }

    def run(self) -> Json:
        now = time.monotonic()
        for c in self.clients:
            self._connect(c)
        for c in self.clients:
            self._begin(c, now)
        if self.mode == "heartbeat":
            self.stdin_fd = sys.stdin.fileno()
            self.poller.register(self.stdin_fd, zmq.POLLIN)
            self._loop(self.hard_deadline)
            self.poller.unregister(self.stdin_fd)
            self._announce()  # too late or not: the parent always gets its line
            if not self.announced:
                print(json.dumps({"held": self.holding}), flush=True)
            for c in self.clients:
                self._finish(c)
        if self.mode == "hold":
            self._loop(self.hard_deadline)
            held = sum(len(c.held) for c in self.clients)
            print(json.dumps({"held": held}), flush=True)
            # Keep them until the parent says so: a holder that let go on its own (once the
            # checkout wait was over, as it once did) would change the size being measured.
            ready, _, _ = select.select([sys.stdin], [], [], self.keep)
            if ready:
                sys.stdin.readline()
            self.releasing = True
            self.hard_deadline = time.monotonic() + float(self.spec.get("drain", 15.0))
            now = time.monotonic()
            self.open = len(self.clients)
            for c in self.clients:
                c.done = False
                self._begin(c, now)
        self._loop(self.hard_deadline)
        unfinished = sum(1 for c in self.clients if not c.done)
        unfinished += sum(len(c.held) for c in self.clients)
        for sock in list(self.by_sock):
            sock.close(linger=0)
        self.ctx.term()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "worker": self.spec.get("worker", 0),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "window_cpu_s": (
                round(self.window_cpu[1] - self.window_cpu[0], 4)
                if len(self.window_cpu) == 2
                else None
            ),
            "clients": len(self.clients),
            "cycles": self.cycles,
            "lat_ms": self.lat_ms,
            "errors": self.errors,
            "retries": self.retries,
            "not_released": self.not_released,
            "unfinished": unfinished,
            "ok_times": self.ok_times,
            "handles": self.handles,
            "heartbeats": self.heartbeats,
            "hb_ms": self.hb_ms,
            "hb_lost": self.hb_lost,
        }


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    result = Worker(spec).run()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
