"""A stand-in for a ZeroMQ socket the service only sends on (client replies, backend requests)."""

from __future__ import annotations


class FakeSocket:
    """Keeps every frame sent, in order."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes, flags: int = 0) -> None:
        self.frames.append(frame)
