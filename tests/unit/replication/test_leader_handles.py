"""Client calls on handles the leader does not hold."""

from __future__ import annotations

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
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
        assert h.call("release", "r3", "c", handle).result == {"released": False}


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
    assert grant.result is not None
    handle = grant.result["handle"]
    assert h.call("release", "r2", "thief", handle).error == ErrorCode.UNKNOWN_HANDLE
    assert h.call("heartbeat", "r3", "thief", handle).error == ErrorCode.UNKNOWN_HANDLE
    (held,) = h.leader.handles_view(h.now)
    assert held["seats"] == 2
    assert h.call("release", "r4", "owner", handle).result == {"released": True}
    assert h.call("release", "r4", "owner", handle).result == {"released": False}  # idempotent
