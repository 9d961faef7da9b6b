"""tmr.zmqio: multipart send/receive with integer flags, as send_multipart/recv_multipart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from tmr.zmqio import readable, recv_frames, send_frames


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind("inproc://zmqio")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect("inproc://zmqio")
    yield router, dealer
    router.close(linger=0)
    dealer.close(linger=0)
    ctx.term()


def test_nothing_waiting_is_none(pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    router, _ = pair
    assert recv_frames(router) is None


def test_multipart_messages_arrive_whole_and_in_order(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    router, dealer = pair
    sent = [[b"", b"one"], [b"two"], [b"", b"", b"three" * 100]]
    for frames in sent:
        send_frames(dealer, frames)
    got: list[list[bytes]] = []
    while len(got) < len(sent):
        assert router.poll(2000)
        received = recv_frames(router)
        assert received is not None
        got.append(received)
    identity = got[0][0]
    assert [f[1:] for f in got] == sent
    assert all(f[0] == identity for f in got)
    send_frames(router, [identity, b"", b"reply"])  # routed back by the identity frame
    assert dealer.poll(2000)
    assert recv_frames(dealer) == [b"", b"reply"]
    assert recv_frames(dealer) is None


def test_readable_says_whether_a_message_waits(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    """A drain that stops when `readable` is False takes every message that is there and
    never tries a receive that would raise `zmq.Again`."""
    router, dealer = pair
    assert not readable(router)
    for i in range(5):
        send_frames(dealer, [b"m%d" % i])
    assert router.poll(2000)
    got = []
    while True:
        frames = recv_frames(router)
        assert frames is not None  # readable said so
        got.append(frames[1])
        if not readable(router):
            if len(got) == 5:
                break
            assert router.poll(2000)  # the rest is still on its way from the I/O thread
    assert got == [b"m%d" % i for i in range(5)]
    assert not readable(router)
    assert recv_frames(router) is None


def test_no_peer_raises_again() -> None:
    lone: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    try:
        lone.setsockopt(zmq.IMMEDIATE, 1)  # no peer: nowhere to queue
        lone.connect("tcp://127.0.0.1:9")  # loopback, nothing listens (discard port)
        with pytest.raises(zmq.Again):
            send_frames(lone, [b"", b"x"])
    finally:
        lone.close(linger=0)
