"""A small fake TMR server for the SDK and CLI tests.

A real ZeroMQ ROUTER socket with CURVE on 127.0.0.1 (ephemeral port), served by a thread.
It speaks the real wire format (`decode_request` / `encode_reply`), keeps a tiny seat table
with (cid, rid) deduplication like the real server, and can be told to answer NOT_ACTIVE,
drop replies, answer scripted errors or send garbage first.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from tmr.client import NodeKeys
from tmr.errors import ErrorCode
from tmr.protocol.client_api import (
    BackendStatus,
    CheckoutRequest,
    CheckoutResult,
    CryptRequest,
    CryptResult,
    ErrorReply,
    HeartbeatRequest,
    HeartbeatResult,
    LicenseEntry,
    ListRequest,
    ListResult,
    OkReply,
    ReleaseRequest,
    ReleaseResult,
    Reply,
    Request,
    StatusRequest,
    StatusResult,
    decode_request,
    encode_reply,
)
from tmr.protocol.errors import ProtocolError

FIRM = 6000123
PRODUCT = 42

# A hook sees each decoded request (after it is recorded) and returns:
#   None      -> normal processing;
#   DROP      -> neither process nor answer (a black hole);
#   a Reply   -> answer that instead of processing;
#   a list    -> raw multipart messages to send first (garbage, stale replies), then normal.
DROP = "drop"
Hook = Callable[[Request, "FakeServer"], object]


@dataclass
class Seat:
    cid: str
    seats: int
    heartbeats: int = 0


@dataclass
class FakeServer:
    keys: NodeKeys
    name: str = "fake"
    lease: float = 30.0
    quantity: int = 5
    role: str = "active"
    port: int = 0
    hook: Hook | None = None
    # Drop the reply (after processing) when this returns True.
    drop_reply: Callable[[Request, FakeServer], bool] | None = None
    requests: list[Request] = field(default_factory=list)
    bad_requests: list[ProtocolError] = field(default_factory=list)
    # The frames each request came with between the routing id and the payload.
    envelopes: list[list[bytes]] = field(default_factory=list)
    handles: dict[str, Seat] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    _dedupe: dict[tuple[str, str], Reply] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _counter: int = 0
    endpoint: str = ""

    # -- lifecycle

    def start(self, context: zmq.Context[zmq.Socket[bytes]]) -> FakeServer:
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_secretkey = self.keys.secret.encode()
        sock.curve_publickey = self.keys.public.encode()
        sock.curve_server = True
        if self.port:
            # Taking over the address of a server just stopped: its socket may take a moment
            # to let go of the port.
            deadline = time.monotonic() + 5
            while True:
                try:
                    sock.bind(f"tcp://127.0.0.1:{self.port}")
                    break
                except zmq.ZMQError as exc:
                    if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
        else:
            self.port = sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # -- observation

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name}: condition not met within {timeout} s")
                self._cond.wait(remaining)

    def seen(self, op: str) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.op == op]

    @property
    def in_use(self) -> int:
        with self._cond:
            return sum(s.seats for s in self.handles.values())

    def forget(self, handle: str) -> None:
        with self._cond:
            self.handles.pop(handle, None)

    # -- serving

    def _serve(self, sock: zmq.Socket[bytes]) -> None:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(20):
                    continue
                frames = sock.recv_multipart()
                ident, envelope, payload = frames[0], frames[1:-1], frames[-1]
                with self._cond:
                    self.envelopes.append(envelope)
                for out in self._handle(payload):
                    sock.send_multipart([ident, *envelope, out])
        finally:
            sock.close(linger=0)

    def _handle(self, payload: bytes) -> list[bytes]:
        try:
            req = decode_request(payload)
        except ProtocolError as exc:
            with self._cond:
                self.bad_requests.append(exc)
                self._cond.notify_all()
            return [encode_reply(ErrorReply.from_exception(exc))]
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()
        prefix: list[bytes] = []
        if self.hook is not None:
            action = self.hook(req, self)
            if action == DROP:
                return []
            if isinstance(action, OkReply | ErrorReply):
                return [encode_reply(action)]
            if isinstance(action, list):
                prefix = action
        if self.role != "active" and not isinstance(req, StatusRequest):
            return [*prefix, encode_reply(ErrorReply(req.rid, "NOT_ACTIVE", self.role))]
        with self._cond:
            reply = self._process(req)
            self._cond.notify_all()
        if self.drop_reply is not None and self.drop_reply(req, self):
            return prefix
        return [*prefix, encode_reply(reply)]

    def _process(self, req: Request) -> Reply:
        key = (getattr(req, "cid", ""), req.rid)
        if key in self._dedupe:
            return self._dedupe[key]
        reply: Reply
        match req:
            case ListRequest():
                entry = LicenseEntry(
                    FIRM,
                    PRODUCT,
                    8,
                    self.quantity,
                    sum(s.seats for s in self.handles.values()),
                    True,
                    "1:#8 2:#8 3:(#7)",
                    None,
                    {"edition": "pro"},
                )
                reply = OkReply(req.rid, ListResult("131-0000001", self.name, (entry,)))
            case StatusRequest():
                backends = tuple(
                    BackendStatus(f"b{i}", True, {"tmr_ids": {f"{FIRM}/{PRODUCT}": 8}})
                    for i in (1, 2, 3)
                )
                reply = OkReply(
                    req.rid,
                    StatusResult(
                        self.name,
                        self.role,
                        (1, self.name),
                        None,
                        backends,
                        len(self.handles),
                        self._counter,
                    ),
                )
            case CheckoutRequest():
                if (req.firm, req.product) != (FIRM, PRODUCT):
                    reply = ErrorReply(req.rid, ErrorCode.UNKNOWN_LICENSE, "no such license")
                elif sum(s.seats for s in self.handles.values()) + req.seats > self.quantity:
                    reply = ErrorReply(req.rid, ErrorCode.NO_LICENSE_AVAILABLE, "all in use")
                else:
                    self._counter += 1
                    handle = f"h{self._counter}"
                    self.handles[handle] = Seat(req.cid, req.seats)
                    result = CheckoutResult(handle, req.firm, req.product, req.seats, self.lease, 8)
                    reply = OkReply(req.rid, result)
            case HeartbeatRequest():
                seat = self.handles.get(req.handle)
                if seat is None or seat.cid != req.cid:
                    reply = ErrorReply(req.rid, ErrorCode.UNKNOWN_HANDLE, req.handle)
                else:
                    seat.heartbeats += 1
                    reply = OkReply(req.rid, HeartbeatResult(self.lease))
            case ReleaseRequest():
                seat = self.handles.get(req.handle)
                if seat is None or seat.cid != req.cid:
                    reply = ErrorReply(req.rid, ErrorCode.UNKNOWN_HANDLE, req.handle)
                else:
                    del self.handles[req.handle]
                    self.released.append(req.handle)
                    reply = OkReply(req.rid, ReleaseResult(True))
            case CryptRequest():
                seat = self.handles.get(req.handle)
                if seat is None or seat.cid != req.cid:
                    reply = ErrorReply(req.rid, ErrorCode.UNKNOWN_HANDLE, req.handle)
                elif req.operation == "hmac":
                    reply = OkReply(req.rid, CryptResult(hashlib.sha256(req.data).digest(), "b1"))
                else:  # "encryption": reverse the bytes
                    reply = OkReply(req.rid, CryptResult(req.data[::-1], "b2"))
        if isinstance(req, CheckoutRequest | ReleaseRequest):
            self._dedupe[key] = reply
        return reply
