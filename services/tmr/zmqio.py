"""Multipart send and receive for the services' hot paths.

The same as pyzmq's `send_multipart` / `recv_multipart(zmq.NOBLOCK)`, with plain integer
flags: pyzmq's helpers combine its `IntFlag` constants on every frame (`SNDMORE | flags`,
`getsockopt(zmq.RCVMORE)`), and that enum arithmetic costs about as much as the send
itself for the small frames of the license protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

import zmq

NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE) | NOBLOCK
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def readable(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message waits on `sock` (its ZMQ_EVENTS), without trying to receive one: a
    drain that stops on this needs no `zmq.Again` exception (about 3.5 us against 1.5 us
    for this read, measured on the 2-core machine of docs/performance.md)."""
    events = sock.get(_EVENTS)
    return isinstance(events, int) and bool(events & _POLLIN)


def recv_frames(sock: zmq.Socket[bytes]) -> list[bytes] | None:
    """The next multipart message waiting on `sock`, or None if there is none.

    Other `zmq.ZMQError`s propagate, as from `recv_multipart`.
    """
    try:
        frames = [sock.recv(NOBLOCK)]
    except zmq.Again:
        return None
    while sock.get(_RCVMORE):  # the rest of a multipart message is already here
        frames.append(sock.recv(NOBLOCK))
    return frames


def send_frames(sock: zmq.Socket[bytes], frames: Sequence[bytes]) -> None:
    """Send `frames` as one multipart message without blocking.

    Raises `zmq.Again` (the peer's queue is full) or another `zmq.ZMQError` like
    `send_multipart(frames, zmq.NOBLOCK)`; ZeroMQ delivers a multipart message whole or not
    at all.
    """
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        sock.send(frame, _SNDMORE if i < last else NOBLOCK)


def recv_frames_user(sock: zmq.Socket[bytes]) -> tuple[list[bytes], str] | None:
    """`recv_frames`, plus the ZAP User-Id of the connection the message came in on.

    With CURVE and the services' ZAP handler (`tmr.serving.zap`), the User-Id is the Z85 key
    of the peer; "" when the connection has none. ZeroMQ attaches the connection's metadata
    to every frame that came from the peer, so only the frame after the first (a ROUTER's
    routing id) is received without copying, to read it; the rest are plain bytes (one
    `zmq.Frame` per message instead of one per frame).
    """
    try:
        frames = [sock.recv(NOBLOCK)]
    except zmq.Again:
        return None
    if not sock.get(_RCVMORE):
        return frames, ""
    first: zmq.Frame = sock.recv(NOBLOCK, copy=False)
    frames.append(first.bytes)
    while sock.get(_RCVMORE):
        frames.append(sock.recv(NOBLOCK))
    try:
        value = first.get("User-Id")
    except zmq.ZMQError:
        value = ""
    return frames, value if isinstance(value, str) else ""
