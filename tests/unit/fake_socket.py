"""A stand-in for a ZeroMQ socket the service only sends on (client replies, backend requests)."""

from __future__ import annotations

from typing import cast

import zmq


class FakeSocket:
    """Keeps every frame sent, in order."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes, flags: int = 0) -> None:
        self.frames.append(frame)


def as_zmq_socket(fake: FakeSocket) -> zmq.Socket[bytes]:
    """`fake` where the service holds a ZeroMQ socket: it only calls `send` on these."""
    return cast("zmq.Socket[bytes]", fake)


def frames_sent(sock: zmq.Socket[bytes]) -> list[bytes]:
    """The frames sent on a socket put in place by `as_zmq_socket`."""
    fake: object = sock
    assert isinstance(fake, FakeSocket)
    return fake.frames
