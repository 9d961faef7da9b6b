"""`tmr.serving.zap.ZapHandler` on a real CURVE socket: the one ZAP mechanism of both
services. With an allowlist only its keys connect; without one (the server with no
``client_allowlist``) every key does; either way the User-Id is the client's Z85 key, and a
refusal is counted and logged once per key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from tmr.logs import configure
from tmr.serving.loop import ServiceLoop
from tmr.serving.zap import ZapHandler, zap_reply
from tmr.zap_log import ZapDenials
from tmr.zmqio import recv_frames_user


class Curve:
    """A CURVE ROUTER behind a ZapHandler, served by a ServiceLoop in a thread."""

    def __init__(self, allowed: frozenset[str] | None) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.loop = ServiceLoop()
        self.denied: list[int] = []
        self.zap = ZapHandler(
            allowed, ZapDenials("test_denied", on_denied=lambda: self.denied.append(1)), socket="t"
        )
        self.loop.serve_zap(self.ctx, self.zap)
        pub, sec = zmq.curve_keypair()
        self.public = pub
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.curve_secretkey = sec
        self.router.curve_publickey = pub
        self.router.curve_server = True
        self.router.bind("tcp://127.0.0.1:*")
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.got: list[tuple[bytes, str]] = []  # (payload, User-Id)
        self.frames: list[list[bytes]] = []  # every message whole, routing id left off
        self.loop.watch(self.router, self._recv)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def _recv(self, now: float) -> None:
        while (got := recv_frames_user(self.router)) is not None:
            frames, user = got
            self.got.append((frames[-1], user))
            self.frames.append(frames[1:])
            self.router.send_multipart([frames[0], b"ok"])

    def close(self) -> None:
        self.loop.stop()
        self.thread.join(timeout=10)
        self.router.close(linger=0)
        self.zap.close()
        self.loop.close()
        self.ctx.term()


def _dealer(curve: Curve, public: bytes, secret: bytes) -> zmq.Socket[bytes]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RECONNECT_IVL, 60_000)  # one handshake per socket
    s.curve_serverkey = curve.public
    s.curve_publickey = public
    s.curve_secretkey = secret
    s.connect(curve.endpoint)
    return s


def _ask(curve: Curve, public: bytes, secret: bytes, payload: bytes) -> bool:
    s = _dealer(curve, public, secret)
    try:
        s.send(payload)
        return bool(s.poll(10_000))
    finally:
        s.close()


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "log.jsonl"
    with out.open("w") as fh:
        configure("test", "info", fh)
        try:
            yield out
        finally:
            configure("test", "info")


def test_an_allowlist_admits_only_its_keys_and_logs_a_refused_key_once(log_file: Path) -> None:
    good_pub, good_sec = zmq.curve_keypair()
    bad_pub, bad_sec = zmq.curve_keypair()
    curve = Curve(frozenset({good_pub.decode()}))
    try:
        assert _ask(curve, good_pub, good_sec, b"hello")
        bad = [_dealer(curve, bad_pub, bad_sec) for _ in range(3)]
        for s in bad:
            s.send(b"no", zmq.NOBLOCK)  # queued; never delivered
        deadline = time.monotonic() + 10
        while len(curve.denied) < 3:
            assert time.monotonic() < deadline, "three refusals not counted"
            time.sleep(0.01)
        for s in bad:
            assert not s.poll(0)
            s.close()
        assert _ask(curve, good_pub, good_sec, b"again")  # still serving
    finally:
        curve.close()
    assert [p for p, _ in curve.got] == [b"hello", b"again"]
    assert all(user == good_pub.decode() for _, user in curve.got)
    assert len(curve.denied) == 3
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    denials = [r for r in lines if r["event"] == "test_denied"]
    assert len(denials) == 1 and denials[0]["key"] == bad_pub.decode()
    assert denials[0]["socket"] == "t" and denials[0]["mechanism"] == "CURVE"


def test_every_frame_of_a_message_arrives_with_the_user_id_of_its_connection() -> None:
    """`recv_frames_user` reads the metadata from the first frame the peer sent and the
    rest as plain bytes: messages of one to four frames (a DEALER's, a REQ's envelope, more)
    arrive whole and in order, each with the sender's key."""
    pub, sec = zmq.curve_keypair()
    curve = Curve(None)
    sent = [[b"one"], [b"", b"two"], [b"", b"x", b"three"], [b"a", b"", b"b", b"four" * 50]]
    s = _dealer(curve, pub, sec)
    try:
        for frames in sent:
            s.send_multipart(frames)
            assert s.poll(10_000)
            s.recv()
    finally:
        s.close()
        curve.close()
    assert curve.frames == sent
    assert all(isinstance(f, bytes) for m in curve.frames for f in m)
    assert [user for _, user in curve.got] == [pub.decode()] * len(sent)


def test_without_an_allowlist_every_key_connects_with_its_key_as_user_id() -> None:
    curve = Curve(None)
    keys = [zmq.curve_keypair() for _ in range(3)]
    try:
        for pub, sec in keys:
            assert _ask(curve, pub, sec, pub)
    finally:
        curve.close()
    assert sorted(curve.got) == sorted((pub, pub.decode()) for pub, _ in keys)
    assert curve.denied == []


def test_no_allowlist_still_refuses_anything_but_one_curve_key() -> None:
    request = [b"1.0", b"rid", b"d", b"127.0.0.1", b""]
    assert zap_reply([*request, b"NULL"], None)[1] is False
    assert zap_reply([*request, b"PLAIN", b"u", b"p"], None)[1] is False
    assert zap_reply([*request, b"CURVE", b"x" * 31], None)[1] is False
    assert zap_reply([*request, b"CURVE", b"x" * 32], None)[1] is True
