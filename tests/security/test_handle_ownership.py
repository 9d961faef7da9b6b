"""Attack: use another client's seat with its handle id and client id.

`/api/status` listed every handle id with its client id, and handle ids were sequential
(`h<epoch>-<server>-<n>`). A client with a fresh CURVE key sent `release`, `heartbeat` and
`crypt` with those two strings and got `released: true` (the owner lost its seat), a renewed
lease, and an HMAC made with the product key without holding a seat. Now a handle belongs to
the CURVE key that checked it out (the ZAP User-Id of its connection), replicated with the
handle; any other key gets UNKNOWN_HANDLE, the same answer as for a handle that does not exist,
and handle ids are random."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
import zmq

from tests.integration.cluster_helpers import LocalCluster
from tmr.keys import generate_keypair
from tmr.protocol.client_api import (
    CryptRequest,
    ErrorReply,
    HeartbeatRequest,
    ReleaseRequest,
    Reply,
    decode_reply,
    encode_request,
)

pytestmark = [pytest.mark.integration]
FIRM, PRODUCT = 6000123, 42


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("own") / "cluster", quantity=3)
    try:
        yield c
    finally:
        c.stop_all()


class Thief:
    """A client with its own, fresh CURVE key that sends whatever strings it likes."""

    def __init__(self, cluster: LocalCluster, server: str) -> None:
        keys = generate_keypair()
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.s = self.ctx.socket(zmq.DEALER)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.setsockopt(zmq.CURVE_SERVERKEY, cluster.info["service_public_key"].encode())
        self.s.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode())
        self.s.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode())
        self.s.connect(cluster.endpoint(server))
        self.n = 0

    def ask(self, op: str, cid: str, handle: str) -> Reply:
        self.n += 1
        rid = f"thief-{self.n}"
        if op == "heartbeat":
            req: HeartbeatRequest | ReleaseRequest | CryptRequest = HeartbeatRequest(
                rid, cid, handle
            )
        elif op == "release":
            req = ReleaseRequest(rid, cid, handle)
        else:
            req = CryptRequest(rid, cid, handle, "hmac", b"forge me")
        self.s.send_multipart([b"", encode_request(req)])
        assert self.s.poll(10_000), f"no answer to {op}"
        return decode_reply(self.s.recv_multipart()[-1], op=op)

    def close(self) -> None:
        self.s.close()
        self.ctx.term()


def _elsewhere(handle: str) -> str:
    """A handle id of the same form that nobody holds."""
    prefix, _, tail = handle.rpartition("-")
    return f"{prefix}-{'0' * len(tail) if tail.strip('0') else '1' * len(tail)}"


def _assert_refused(thief: Thief, cid: str, handle: str) -> None:
    for op in ("heartbeat", "release", "crypt"):
        stolen = thief.ask(op, cid, handle)
        nobody = thief.ask(op, cid, _elsewhere(handle))
        assert isinstance(stolen, ErrorReply), f"{op} of another key's handle: {stolen}"
        assert isinstance(nobody, ErrorReply), f"{op} of no handle: {nobody}"
        # No oracle: exactly the answer for a handle that does not exist.
        assert (stolen.error, stolen.message) == (nobody.error, nobody.message)
        assert stolen.error == "UNKNOWN_HANDLE", op


def test_another_key_cannot_release_renew_or_use_a_handle(
    cluster: LocalCluster,
) -> None:
    with cluster.client() as owner:
        h = owner.checkout(FIRM, PRODUCT, 2)
        thief = Thief(cluster, "tmr-a")
        try:
            _assert_refused(thief, owner.client_id, h.id)
        finally:
            thief.close()
        # The owner's seats are still held, and the owner still uses them.
        assert owner.list_licenses().licenses[0].in_use == 2
        owner_handles = [x for x in cluster.ctl("tmr-a", "handles")["handles"]]
        assert [x["handle"] for x in owner_handles] == [h.id]
        h.heartbeat()
        assert len(h.hmac(b"data")) > 0
        assert h.release() is True


def test_the_binding_survives_a_failover(cluster: LocalCluster) -> None:
    with cluster.client() as owner:
        h = owner.checkout(FIRM, PRODUCT, 1)
        cluster.kill("tmr-a")
        cluster.promote("tmr-b")
        thief = Thief(cluster, "tmr-b")
        try:
            _assert_refused(thief, owner.client_id, h.id)
        finally:
            thief.close()
        h.heartbeat()  # the owner's key still holds it on the new leader
        assert owner.list_licenses().licenses[0].in_use == 1
        assert h.release() is True
        assert owner.list_licenses().licenses[0].in_use == 0


def test_handle_ids_cannot_be_guessed(cluster: LocalCluster) -> None:
    with cluster.client() as owner:
        ids = []
        for _ in range(6):
            h = owner.checkout(FIRM, PRODUCT, 1)
            ids.append(h.id)
            h.release()
    tails = []
    for handle in ids:
        m = re.fullmatch(r"h(\d+)-tmr-a-([0-9a-f]+)", handle)
        assert m is not None, handle
        tails.append(m.group(2))
    assert all(len(t) * 4 >= 128 for t in tails)  # at least 128 random bits
    assert len(set(tails)) == len(tails)
    values = [int(t, 16) for t in tails]
    steps = {b - a for a, b in itertools.pairwise(values)}
    assert len(steps) == len(values) - 1 and 1 not in steps  # no counter
