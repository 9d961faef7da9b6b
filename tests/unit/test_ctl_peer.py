"""Who asked on a control socket: the kernel's peer credentials (SO_PEERCRED through
ZeroMQ's Peer-Address), used to log who freed a handle (`tmr admin release`)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import zmq

from tmr.ctl import CtlPeer, bind_ctl, ctl_peer, encode_ctl, serve_ctl


def test_peer_address_parsing() -> None:
    assert ctl_peer("localhost:1000:100:4242") == CtlPeer(1000, 100, 4242)
    assert ctl_peer(":0:0:1") == CtlPeer(0, 0, 1)
    for bad in (None, "", "localhost", "a:b:c:d", "x:1:2", "h:1:2:-3"):
        assert ctl_peer(bad) is None, bad
    assert CtlPeer(os.getuid(), 0, 1).user == pwd.getpwuid(os.getuid()).pw_name
    assert CtlPeer(2**31 - 7, 0, 1).user == f"uid:{2**31 - 7}"  # no such user


def test_serve_ctl_reports_the_local_user_who_asked(tmp_path: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    path = tmp_path / "ctl.sock"
    rep = bind_ctl(ctx, path)
    req = ctx.socket(zmq.REQ)
    seen: list[CtlPeer | None] = []

    def handler(msg: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "cmd": msg["cmd"]}

    try:
        req.connect(f"ipc://{path}")
        req.send(encode_ctl({"cmd": "status"}))
        assert rep.poll(5000)
        assert serve_ctl(rep, handler, on_peer=seen.append)
        assert req.poll(5000) and b'"ok": true' in req.recv()
    finally:
        req.close(linger=0)
        rep.close(linger=0)
        ctx.term()
    (peer,) = seen
    assert peer is not None
    assert (peer.uid, peer.pid) == (os.getuid(), os.getpid())
