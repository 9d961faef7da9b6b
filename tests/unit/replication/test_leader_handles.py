"""Client calls on handles the leader does not hold."""

from __future__ import annotations

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
from tmr.protocol.client_api import CheckoutResult, ReleaseResult
from tmr.replication.types import LicenseInfo

KEY = (6000123, 42)


def active() -> Harness:
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote()
    return h


def test_unknown_handle_of_this_or_an_older_term() -> None:
    h = active()
    epoch = h.leader.epoch
    assert epoch is not None
    for handle in (f"h{epoch.counter}-sa-99", "h0-sb-1", "nonsense"):
        assert h.call("heartbeat", "r1", "c", handle).error == ErrorCode.UNKNOWN_HANDLE
        assert h.call("crypt", "r2", "c", handle, "hmac", b"x").error == ErrorCode.UNKNOWN_HANDLE
        assert h.call("release", "r3", "c", handle).error == ErrorCode.UNKNOWN_HANDLE


def test_a_handle_from_a_newer_leader_sends_the_client_elsewhere() -> None:
    """A deposed leader that does not know it yet must not make a client drop its handle."""
    h = active()
    epoch = h.leader.epoch
    assert epoch is not None
    newer = f"h{epoch.counter + 1}-sb-1"
    for method, args in (("heartbeat", ()), ("release", ()), ("crypt", ("hmac", b"x"))):
        reply = h.call(method, "r", "c", newer, *args)
        assert reply.error == ErrorCode.NOT_ACTIVE, method


def test_nobody_releases_another_clients_handle() -> None:
    h = active()
    grant = h.call("checkout", "r1", "owner", KEY[0], KEY[1], 2)
    assert isinstance(grant.result, CheckoutResult)
    handle = grant.result.handle
    assert h.call("release", "r2", "thief", handle).error == ErrorCode.UNKNOWN_HANDLE
    assert h.call("heartbeat", "r3", "thief", handle).error == ErrorCode.UNKNOWN_HANDLE
    (held,) = h.leader.handles_view(h.now)
    assert held["seats"] == 2
    assert h.call("release", "r4", "owner", handle).result == ReleaseResult(released=True)
    # Released: now unknown to its owner too (the client library counts that as released).
    assert h.call("release", "r4", "owner", handle).error == ErrorCode.UNKNOWN_HANDLE


def test_a_handle_belongs_to_the_key_that_checked_it_out() -> None:
    """The same client id and handle id from another CURVE key: the answer for a handle that
    does not exist (same code, same message), and the owner's handle is untouched."""
    h = active()
    grant = h.call("checkout", "r1", "c", KEY[0], KEY[1], 2, owner="K1")
    assert isinstance(grant.result, CheckoutResult)
    handle = grant.result.handle
    missing = f"{handle[:-4]}0000" if not handle.endswith("0000") else f"{handle[:-4]}1111"
    for method, args in (("heartbeat", ()), ("release", ()), ("crypt", ("hmac", b"x"))):
        thief = h.call(method, "r2", "c", handle, *args, owner="K2")
        nobody = h.call(method, "r3", "c", missing, *args, owner="K2")
        assert thief.error == nobody.error == ErrorCode.UNKNOWN_HANDLE, method
        assert thief.message == nobody.message, method
    (held,) = h.leader.handles_view(h.now)
    assert held["handle"] == handle and held["seats"] == 2
    assert h.call("heartbeat", "r4", "c", handle, owner="K1").ok
    assert h.call("release", "r5", "c", handle, owner="K1").result == ReleaseResult(released=True)


def test_no_key_owns_a_handle_without_an_owner() -> None:
    h = active()
    grant = h.call("checkout", "r1", "c", KEY[0], KEY[1], 1, owner="")
    assert isinstance(grant.result, CheckoutResult)
    assert h.call("heartbeat", "r2", "c", grant.result.handle, owner="").error == (
        ErrorCode.UNKNOWN_HANDLE
    )


def test_another_key_cannot_take_a_retried_checkouts_reply() -> None:
    """Request ids are deduplicated per key: the same (client id, request id) from another key
    is a new checkout, not the first key's handle."""
    h = active()
    first = h.call("checkout", "r1", "c", KEY[0], KEY[1], 1, owner="K1")
    again = h.call("checkout", "r1", "c", KEY[0], KEY[1], 1, owner="K1")
    other = h.call("checkout", "r1", "c", KEY[0], KEY[1], 1, owner="K2")
    assert isinstance(first.result, CheckoutResult)
    assert isinstance(again.result, CheckoutResult)
    assert isinstance(other.result, CheckoutResult)
    assert again.result.handle == first.result.handle
    assert other.result.handle != first.result.handle
    assert len(h.leader.handles_view(h.now)) == 2


def test_handle_ids_are_random_and_carry_the_granting_epoch() -> None:
    h = active()
    epoch = h.leader.epoch
    assert epoch is not None
    ids = []
    for i in range(20):
        reply = h.call("checkout", f"r{i}", f"c{i}", KEY[0], KEY[1], 1)
        assert isinstance(reply.result, CheckoutResult)
        ids.append(reply.result.handle)
        h.call("release", f"x{i}", f"c{i}", ids[-1])
    prefix = f"h{epoch.counter}-sa-"
    assert all(i.startswith(prefix) for i in ids)
    tails = [i[len(prefix) :] for i in ids]
    assert len(set(tails)) == len(tails)
    assert all(len(t) >= 32 and int(t, 16) >= 0 for t in tails)  # 128 bits, hex
    assert not any(t.isdigit() and len(t) < 10 for t in tails)  # no counter
    # The epoch stays readable: a newer leader's random id still sends the client elsewhere.
    newer = f"h{epoch.counter + 1}-sb-{tails[0]}"
    assert h.call("heartbeat", "r", "c", newer).error == ErrorCode.NOT_ACTIVE
