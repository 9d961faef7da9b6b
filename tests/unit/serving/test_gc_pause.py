"""`tmr.serving.gc_pause`: the cyclic collector is paused for one bulk step and running
again afterwards, whatever happens in the step; the server decodes and handles a bulk
backend frame (a takeover's table) with it paused, and everyday frames without."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import zmq

from tmr.server.service import ServerService
from tmr.serving.gc_pause import BULK_FRAME, gc_paused


@pytest.fixture(autouse=True)
def collector_running() -> Iterator[None]:
    assert gc.isenabled()
    yield
    assert gc.isenabled(), "a test left the collector paused"


def test_paused_in_the_block_and_running_after() -> None:
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested: one pause
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_running_again_after_an_exception() -> None:
    with pytest.raises(ValueError, match="boom"), gc_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_not_paused_unless_asked() -> None:
    with gc_paused(False):
        assert gc.isenabled()


def test_a_collector_switched_off_by_the_program_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


class FakeDealer:
    """What `_drain_backend` reads of a backend socket: queued single-frame messages."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    def recv(self, flags: int = 0) -> bytes:
        if not self.frames:
            raise zmq.Again()
        return self.frames.pop(0)

    def get(self, option: int) -> int:
        if option == zmq.EVENTS:
            return zmq.POLLIN if self.frames else 0
        return 0  # RCVMORE: one frame each


def test_the_server_handles_a_bulk_backend_frame_with_the_collector_paused(
    svc: ServerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, bool]] = []
    monkeypatch.setattr(
        svc, "_backend_reply", lambda name, frame, now: seen.append((len(frame), gc.isenabled()))
    )
    small, bulk = b"x" * 100, b"y" * BULK_FRAME
    sock = FakeDealer([small, bulk, small])
    svc._drain_backend(sock, "b1", 1.0)  # type: ignore[arg-type]
    assert seen == [(100, True), (BULK_FRAME, False), (100, True)]
