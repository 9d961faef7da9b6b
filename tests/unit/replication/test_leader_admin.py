"""Who the client is (user, host, pid with every handle, across failover) and an
administrator's release (`tmr admin release`, like FlexNet's lmremove) through the quorum."""

from __future__ import annotations

from typing import Any

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
from tmr.protocol.results import AdminReleaseResult, CheckoutResult
from tmr.replication.leader import ClientReply
from tmr.replication.types import LicenseInfo

KEY = (6000123, 42)
BOUND = 1.0 + 0.25  # backend_timeout + one probe interval in the harness


def active(quantity: int = 3) -> Harness:
    h = Harness({KEY: LicenseInfo(7, quantity, True)})
    h.promote()
    return h


def checkout(h: Harness, client: str, user: str = "", host: str = "", pid: int = 0) -> str:
    before = len(h.replies)
    fx = h.leader.checkout(
        "tok", f"r-{client}", client, KEY[0], KEY[1], 1, h.now,
        owner=f"key-of-{client}", user=user, host=host, pid=pid,
    )  # fmt: skip
    h.run(fx)
    h.advance(0.2)
    (reply,) = h.replies[before:]
    assert reply.ok and isinstance(reply.result, CheckoutResult), reply
    return str(reply.result.handle)


def admin_release(h: Harness, handle: str, by: str = "ctl:root") -> list[ClientReply]:
    before = len(h.replies)
    h.run(h.leader.admin_release("admin", "a1", handle, h.now, by=by))
    h.advance(BOUND)
    return h.replies[before:]


def seats(h: Harness, backend: str) -> int:
    log = h.acceptors[backend].state.products.get(KEY)
    return log.seats() if log else 0


def view(h: Harness) -> dict[str, dict[str, Any]]:
    return {v["handle"]: v for v in h.leader.handles_view(h.now)}


def test_user_host_and_pid_are_recorded_and_replicated() -> None:
    h = active()
    handle = checkout(h, "c1", "alice", "ws-17", 4242)
    v = view(h)[handle]
    assert (v["user"], v["host"], v["pid"], v["owner"]) == ("alice", "ws-17", 4242, "key-of-c1")
    for b in ("b1", "b2", "b3"):
        rec = h.acceptors[b].state.products[KEY].handles[handle]
        assert (rec.user, rec.host, rec.pid) == ("alice", "ws-17", 4242)


def test_user_host_and_pid_survive_a_failover() -> None:
    h = active()
    handle = checkout(h, "c1", "Bob (display name)", "ws-2", 99)
    sb = h.add_server("sb")
    h.stopped.add("sa")
    h.promote("sb", settle=3.0)
    assert sb.role.value == "active"
    (v,) = [v for v in sb.handles_view(h.now) if v["handle"] == handle]
    assert (v["user"], v["host"], v["pid"]) == ("Bob (display name)", "ws-2", 99)


def test_admin_release_commits_through_the_quorum_and_frees_the_seat() -> None:
    h = active(quantity=1)
    handle = checkout(h, "c1", "alice", "ws-1", 7)
    assert seats(h, "b1") == seats(h, "b2") == seats(h, "b3") == 1
    (reply,) = admin_release(h, handle, by="ctl:root")
    assert reply.ok and reply.token == "admin" and isinstance(reply.result, AdminReleaseResult), (
        reply
    )
    assert reply.result.released is True
    assert (reply.result.user, reply.result.host, reply.result.seats) == (
        "alice",
        "ws-1",
        1,
    )
    assert seats(h, "b1") == seats(h, "b2") == seats(h, "b3") == 0
    (event,) = [e for e in h.events if e["event"] == "handle_removed"]
    assert event["by"] == "ctl:root" and event["handle"] == handle and event["user"] == "alice"
    # The seat is free for another client; the old holder's heartbeat finds no handle.
    checkout(h, "c2")
    assert h.call("heartbeat", "r-hb", "c1", handle).error == ErrorCode.UNKNOWN_HANDLE


def test_admin_release_is_answered_only_after_the_commit() -> None:
    """With two backends unreachable nothing commits: no early "released", QUORUM_LOST
    within the bound, and the seat is still held on the backends."""
    h = active()
    handle = checkout(h, "c1")
    h.down.update({"b2", "b3"})
    before = len(h.replies)
    h.run(h.leader.admin_release("admin", "a1", handle, h.now, by="ctl"))
    assert h.replies[before:] == []  # not answered before a commit
    h.advance(0.3)
    assert all(r.token != "admin" or not r.ok for r in h.replies[before:])
    h.advance(BOUND)
    answers = [r for r in h.replies[before:] if r.token == "admin"]
    assert len(answers) == 1 and answers[0].error == ErrorCode.QUORUM_LOST, answers
    assert seats(h, "b2") == seats(h, "b3") == 1


def test_admin_release_of_an_unknown_or_released_handle_is_a_clear_error() -> None:
    h = active()
    (reply,) = admin_release(h, "h1-sa-nope")
    assert reply.error == ErrorCode.UNKNOWN_HANDLE and "h1-sa-nope" in reply.message
    handle = checkout(h, "c1")
    (first,) = admin_release(h, handle)
    assert first.ok
    (again,) = admin_release(h, handle)
    assert again.error == ErrorCode.UNKNOWN_HANDLE


def test_admin_release_needs_an_active_leader() -> None:
    h = Harness({KEY: LicenseInfo(7, 3, True)})
    (reply,) = admin_release(h, "h1-sa-x")
    assert reply.error == ErrorCode.NOT_ACTIVE


def test_admin_release_of_a_grant_not_yet_committed_is_refused() -> None:
    """The client still waits for that grant: a release joining the grant's entry would hand
    it a handle no backend ever held. Retried once committed, it works."""
    h = active()
    h.down.update({"b2", "b3"})
    h.run(h.leader.checkout("tok", "r1", "c1", KEY[0], KEY[1], 1, h.now, owner="key-of-c1"))
    (pending,) = [v for v in h.leader.handles_view(h.now) if not v["committed"]]
    refused = admin_release(h, pending["handle"])
    admin = [r for r in refused if r.token == "admin"]
    assert len(admin) == 1 and admin[0].error == ErrorCode.UNKNOWN_HANDLE
    assert "not committed" in admin[0].message
    h.down.clear()
    h.advance(3.0)  # the backends return and the queued grant commits
    assert view(h)[pending["handle"]]["committed"]
    (reply,) = admin_release(h, pending["handle"])
    assert reply.ok, reply
