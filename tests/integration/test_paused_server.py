"""A paused (SIGSTOP), deposed TMR server must not answer from its stale state.

tmr-a grants a handle, is stopped, tmr-b takes over and the handle is released there; requests
queued for tmr-a while it was stopped (a retried checkout of the released handle, another
client's checkout that tmr-a's stale count would refuse) are answered NOT_ACTIVE, tmr-a
declares no backend down for the requests it could not wait for, and it ends fenced.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.integration.cluster_helpers import LocalCluster, wait_for
from tmr.errors import ErrorCode
from tmr.keys import NodeKeys, generate_keypair
from tmr.protocol.client_api import (
    CheckoutRequest,
    CheckoutResult,
    ErrorReply,
    OkReply,
    ReleaseRequest,
    Reply,
    Request,
    StatusRequest,
    decode_reply,
    encode_request,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRM, PRODUCT = 6000123, 42


class RawClient:
    """One DEALER connection with a fixed CURVE key (the key owns the handles it checks out)."""

    def __init__(self, cluster: LocalCluster, server: str, keys: NodeKeys) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.CURVE_SERVERKEY, cluster.info["service_public_key"].encode())
        self.sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode())
        self.sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode())
        self.sock.connect(cluster.endpoint(server))

    def send(self, req: Request) -> None:
        self.sock.send_multipart([b"", encode_request(req)])

    def receive(self, op: str, timeout: float = 15.0) -> Reply:
        assert self.sock.poll(int(timeout * 1000)), f"no reply to {op} within {timeout} s"
        return decode_reply(self.sock.recv_multipart()[-1], op=op)

    def ask(self, req: Request) -> Reply:
        self.send(req)
        return self.receive(req.op)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def _events_since(path: Path, offset: int) -> list[dict[str, Any]]:
    out = []
    with path.open("rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def test_a_paused_deposed_server_answers_only_not_active(cluster: LocalCluster) -> None:
    keys, other_keys = generate_keypair(), generate_keypair()
    a = RawClient(cluster, "tmr-a", keys)
    other = RawClient(cluster, "tmr-a", other_keys)
    b = RawClient(cluster, "tmr-b", keys)
    pid = cluster.nodes["tmr-a"]["pid"]
    log = Path(cluster.nodes["tmr-a"]["log"])
    try:
        retried = CheckoutRequest("stale-1", "paused-client", FIRM, PRODUCT, 3)  # all 3 seats
        granted = a.ask(retried)
        assert isinstance(granted, OkReply) and isinstance(granted.result, CheckoutResult), granted
        handle = granted.result.handle
        # Connected before the pause: requests sent while tmr-a is stopped wait in its socket
        # buffers and are read in its first loop turn after SIGCONT.
        assert isinstance(other.ask(StatusRequest("s-1")), OkReply)

        os.kill(pid, signal.SIGSTOP)
        try:
            cluster.promote("tmr-b", timeout=30)
            released = b.ask(ReleaseRequest("rel-1", "paused-client", handle))
            assert isinstance(released, OkReply), released
            a.send(retried)  # a retry of the checkout whose handle was released since
            other.send(CheckoutRequest("other-1", "other-client", FIRM, PRODUCT, 1))
            offset = log.stat().st_size
        finally:
            os.kill(pid, signal.SIGCONT)

        for client, op in ((a, "checkout"), (other, "checkout")):
            reply = client.receive(op)
            assert isinstance(reply, ErrorReply), reply  # never the released handle again
            assert reply.error == ErrorCode.NOT_ACTIVE, reply  # nor a stale refusal
        wait_for("tmr-a to learn it was deposed", lambda: cluster.role("tmr-a") == "fenced", 20)
        assert cluster.role("tmr-b") == "active"
        downs = [e for e in _events_since(log, offset) if e.get("event") == "backend_down"]
        assert downs == []  # it re-probed instead of timing out what it could not wait for

        with cluster.client() as c:  # the three seats are free on the active server
            held = [c.checkout(FIRM, PRODUCT) for _ in range(3)]
            for h in held:
                h.release()
    finally:
        for raw in (a, other, b):
            raw.close()
