"""One ZeroMQ DEALER socket with Lazy Pirate retries (internal to `tmr.client`).

A channel sends one request at a time (its lock makes that so, whatever the number of
threads) and waits for the reply with the same request id. When no reply comes within the
per-attempt timeout, or the server answers ``NOT_ACTIVE``, it sends the *same* request again
(same rid, so the server can deduplicate) where and when `tmr.client._retry.RetrySchedule`
says: the next endpoint on a new socket (the old one closed, linger 0), or, when the endpoint
answering ``NOT_ACTIVE`` is the only one not silent, the same one after a back-off. This
until the overall deadline; then it raises `tmr.errors.Timeout`.

A ``QUORUM_LOST`` answer is checked once against the next endpoint before it is reported: a
server that cannot reach a majority of the backends may be a deposed leader (paused or cut
off) while the other one serves. The other endpoint's answer wins unless it is ``NOT_ACTIVE``
or missing; then the ``QUORUM_LOST`` is reported.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import zmq

from tmr.client._retry import RetrySchedule
from tmr.errors import ErrorCode, Timeout, TmrError
from tmr.protocol.client_api import (
    MAX_REPLY_SIZE,
    ErrorReply,
    Reply,
    Request,
    decode_reply,
    encode_request,
)
from tmr.protocol.errors import ProtocolError

log = logging.getLogger("tmr.client")


class ClientClosedError(TmrError):
    """The client was closed while (or before) a request was made."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The reply to a request and how many times it was sent."""

    reply: Reply
    attempts: int
    endpoint: str


class Channel:
    """A DEALER socket to one endpoint at a time, with Lazy Pirate retries."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        endpoints: Sequence[str],
        server_key: bytes,
        public_key: bytes,
        secret_key: bytes,
        *,
        attempt_timeout: float,
        closing: threading.Event,
        name: str = "main",
    ) -> None:
        self._context = context
        self._endpoints = tuple(endpoints)
        self._server_key = server_key
        self._public_key = public_key
        self._secret_key = secret_key
        self._attempt_timeout = attempt_timeout
        self._closing = closing
        self._name = name
        self._lock = threading.Lock()
        self._socket: zmq.Socket[bytes] | None = None
        self._index = 0

    @property
    def endpoint(self) -> str:
        """The endpoint the channel talks to (or will, on its next request)."""
        return self._endpoints[self._index]

    def close(self) -> None:
        """Close the socket; safe to call at any time, from any thread."""
        with self._lock:
            self._drop_socket()

    def call(self, req: Request, timeout: float) -> Outcome:
        """Send `req` until an active server answers it or `timeout` seconds have passed.

        Returns the reply (an `OkReply` or an `ErrorReply` other than ``NOT_ACTIVE``).
        Raises `Timeout`, `ClientClosedError`, or `ProtocolError` for a malformed reply to `req`.
        """
        payload = encode_request(req)
        deadline = time.monotonic() + timeout
        wait = self._attempt_timeout
        retry: RetrySchedule | None = None  # from the first failed attempt on
        attempts = 0
        last = "no reply"
        quorum_lost: Outcome | None = None  # a QUORUM_LOST being checked on the next endpoint
        with self._lock:
            while True:
                if self._closing.is_set():
                    raise ClientClosedError("the client is closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if quorum_lost is not None:
                        return quorum_lost
                    raise Timeout(
                        f"no active TMR server answered {req.op} within {timeout:g} s "
                        f"({attempts} attempt(s) on {', '.join(self._endpoints)}; last: {last}). "
                        "Check the endpoints, the network and the server public key."
                    )
                sock = self._ensure_socket()
                endpoint = self.endpoint
                attempts += 1
                sent = time.monotonic()
                try:
                    sock.send(payload, flags=zmq.NOBLOCK)
                except zmq.Again:
                    reply: Reply | None = None
                    last = f"cannot queue the request for {endpoint}"
                else:
                    reply = self._receive(sock, req.rid, req.op, min(wait, remaining))
                    if reply is None:
                        last = f"no reply from {endpoint} within {min(wait, remaining):.2g} s"
                if reply is None:
                    if quorum_lost is not None:
                        return quorum_lost
                    log.debug("%s: %s rid=%s: %s; retrying", self._name, req.op, req.rid, last)
                    retry = retry or RetrySchedule(len(self._endpoints), self._index, wait)
                    retry.timed_out()
                    self._go_to(retry.index, reconnect=True)
                    wait = retry.attempt
                    continue
                if isinstance(reply, ErrorReply) and reply.error == ErrorCode.NOT_ACTIVE:
                    if quorum_lost is not None:
                        return quorum_lost
                    last = f"NOT_ACTIVE from {endpoint}" + (
                        f" ({reply.message})" if reply.message else ""
                    )
                    log.debug("%s: %s rid=%s: %s; retrying", self._name, req.op, req.rid, last)
                    retry = retry or RetrySchedule(len(self._endpoints), self._index, wait)
                    pause = retry.not_active(time.monotonic() - sent)
                    # Staying with a server that answers (or asking the VIP's server taking
                    # over again) keeps its connection, and a stay waits longer for it
                    # (`RetrySchedule.attempt`); otherwise a new socket (with one endpoint,
                    # the VIP may now be on the other host).
                    self._go_to(retry.index, reconnect=not retry.keeps_connection)
                    wait = retry.attempt
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                    if pause > 0 and self._closing.wait(pause):
                        raise ClientClosedError("the client is closed")
                    continue
                if (
                    isinstance(reply, ErrorReply)
                    and reply.error == ErrorCode.QUORUM_LOST
                    and quorum_lost is None
                    and len(self._endpoints) > 1
                ):
                    quorum_lost = Outcome(reply, attempts, endpoint)
                    log.debug(
                        "%s: %s rid=%s: QUORUM_LOST from %s; asking the next endpoint once",
                        self._name,
                        req.op,
                        req.rid,
                        endpoint,
                    )
                    self._go_to((self._index + 1) % len(self._endpoints), reconnect=True)
                    continue
                return Outcome(reply, attempts, endpoint)

    # -- internals (called with the lock held)

    def _ensure_socket(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            sock = self._context.socket(zmq.DEALER)
            try:
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.IPV6, 1)
                sock.setsockopt(zmq.RECONNECT_IVL, 100)
                sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
                sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_SIZE + 1024)
                sock.curve_secretkey = self._secret_key
                sock.curve_publickey = self._public_key
                sock.curve_serverkey = self._server_key
                sock.connect(self.endpoint)
            except zmq.ZMQError as exc:
                sock.close(linger=0)
                raise TmrError(f"cannot connect to {self.endpoint}: {exc}") from None
            self._socket = sock
        return self._socket

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _go_to(self, index: int, *, reconnect: bool) -> None:
        if reconnect or index != self._index:
            self._drop_socket()
        self._index = index

    def _receive(self, sock: zmq.Socket[bytes], rid: str, op: str, wait: float) -> Reply | None:
        """The reply to `rid`, or None if none came within `wait` seconds."""
        deadline = time.monotonic() + wait
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            # Wake at least every 0.1 s to notice close().
            slice_ms = max(1, math.ceil(min(remaining, 0.1) * 1000))
            if not poller.poll(slice_ms):
                if self._closing.is_set():
                    raise ClientClosedError("the client is closed")
                continue
            frames = sock.recv_multipart(flags=zmq.NOBLOCK)
            if len(frames) == 2 and frames[0] == b"":
                frame = frames[1]
            elif len(frames) == 1:
                frame = frames[0]
            else:
                log.warning("%s: ignoring a reply of %d frames", self._name, len(frames))
                continue
            try:
                reply = decode_reply(frame, op=op)
            except ProtocolError as exc:
                if exc.rid == rid:
                    raise ProtocolError(
                        f"malformed reply to {op}: {exc.message}", rid=rid
                    ) from None
                log.warning("%s: ignoring a malformed reply: %s", self._name, exc.message)
                continue
            if reply.rid == rid or (reply.rid == "" and isinstance(reply, ErrorReply)):
                return reply
            log.debug("%s: ignoring a stale reply rid=%s", self._name, reply.rid)
