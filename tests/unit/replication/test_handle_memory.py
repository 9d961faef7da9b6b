"""Memory per held handle (issue 17: at most 1 KiB on the server at 100,000 handles): a
record has no per-instance dict, and the strings a client repeats in each of its handles
(CURVE key, client id, user, host) are one object, not a copy per handle, on the leader and
in records decoded from the peer protocol (the backends' tables, a takeover's promise)."""

from __future__ import annotations

from tests.unit.replication.harness import Harness
from tmr.protocol import peer_api
from tmr.replication.messages import Promise
from tmr.replication.types import (
    Epoch,
    Grant,
    HandleRecord,
    LicenseInfo,
    Release,
    ReleaseReason,
    Version,
)

KEY = (6000123, 42)
E = Epoch(1, "sa")


def fresh(s: str) -> str:
    """An equal string that is a different object (as each decoded request has)."""
    return "".join(list(s))


def test_records_and_ops_have_no_instance_dict() -> None:
    rec = HandleRecord("h1", *KEY, 1, "c", "r", 1.5)
    for obj in (rec, Grant(rec), Release("h1", ReleaseReason.RELEASE, 1.0)):
        assert not hasattr(obj, "__dict__"), type(obj)


def test_a_clients_handles_share_its_strings_on_the_leader() -> None:
    h = Harness({KEY: LicenseInfo(8, 10, True)})
    h.promote()
    owner, cid = "K" * 40, "client-7"
    for i in range(2):
        fx = h.leader.checkout(
            "tok",
            f"r{i}",
            fresh(cid),
            *KEY,
            1,
            h.now,
            owner=fresh(owner),
            user=fresh("ann"),
            host=fresh("ws1"),
        )
        h.run(fx)
    a, b = h.leader._products[KEY].handles.values()
    assert a.owner is b.owner and a.client_id is b.client_id
    assert a.user is b.user and a.host is b.host
    assert a.firm is b.firm and h.leader._handles._key[a.handle] is h.leader._products[KEY].key


def test_decoded_records_share_their_strings() -> None:
    recs = tuple(
        HandleRecord(
            f"h{i}", *KEY, 1, fresh("client-7"), f"r{i}", 1.5, fresh("K" * 40), "ann", "ws1", 7
        )
        for i in range(2)
    )
    promise = Promise(1, "b1", E, True, {KEY: (Version(E, 1), recs)}, {})
    got = peer_api.decode_reply(peer_api.encode_reply(promise))
    assert isinstance(got, Promise)
    a, b = got.logs[KEY][1]
    assert a.owner is b.owner and a.client_id is b.client_id
    assert a.user is b.user and a.host is b.host


def test_the_encoder_keeps_no_big_entry_s_ops_once_others_were_encoded() -> None:
    """The encoder's entry cache (the leader sends one entry to three backends) is bounded in
    ops: a burst of big entries must not keep every held handle's encoding alive."""
    big = tuple(Grant(HandleRecord(f"h{i}", *KEY, 1, "c", f"r{i}", 1.5)) for i in range(3000))
    first = peer_api._ops(big)
    assert peer_api._ops(big) is first  # the same entry to the next backend: encoded once
    for n in range(3):
        peer_api._ops(
            tuple(Grant(HandleRecord(f"x{n}{i}", *KEY, 1, "c", "r", 1.5)) for i in range(3000))
        )
    cached = sum(len(out) for _, out in peer_api._OPS_CACHE.entries.values())
    assert cached <= peer_api._OPS_CACHE.max_ops
    assert all(ops is not big for ops, _ in peer_api._OPS_CACHE.entries.values())
