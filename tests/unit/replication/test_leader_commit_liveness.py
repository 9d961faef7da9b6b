"""Every request is answered in time: releases commit with one backend down mid-update and on
an expired license, and requests that cannot commit get QUORUM_LOST, never silence.

The bound: backend_timeout (1.0 in the harness) + one probe interval (0.25).
"""

from __future__ import annotations

import pytest

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
from tmr.protocol.client_api import CheckoutResult, ReleaseResult
from tmr.replication import productlog
from tmr.replication.leader import ClientReply, Effects
from tmr.replication.messages import Accept, PeerRequest
from tmr.replication.types import CopyReason, LicenseInfo

KEY = (6000123, 42)
BOUND = 1.0 + 0.25


def ask(h: Harness, method: str, *args: object, client: str) -> list[ClientReply]:
    """Send one request to leader "sa" and return what it answered within the bound."""
    before = len(h.replies)
    h.run(getattr(h.leader, method)("tok", *args, h.now, owner=f"key-of-{client}"))
    h.advance(BOUND)
    return h.replies[before:]


def checkout_result(reply: ClientReply) -> CheckoutResult:
    """The result of a checkout the test expects to have been granted."""
    assert isinstance(reply.result, CheckoutResult), reply
    return reply.result


def accept(msg: PeerRequest) -> Accept:
    assert isinstance(msg, Accept), msg
    return msg


def seats(h: Harness, backend: str) -> int:
    log = h.acceptors[backend].state.products.get(KEY)
    return log.seats() if log else 0


def test_releases_commit_while_one_backend_of_a_mixed_update_is_down() -> None:
    """#8 (LQ 30) on b1 and b2, #7 (LQ 20) on b3, 25 seats held, b1 stops: b3 (whose log is
    behind: it refused the grants above 20) records the committed table, above its LQ, and
    every release after it, one at a time, commits at once."""
    h = Harness({KEY: LicenseInfo(8, 30, True)})
    h.set_license("b3", LicenseInfo(7, 20, True), KEY)
    h.promote()
    handles = []
    for i in range(25):
        reply = h.call("checkout", f"r{i}", f"c{i}", KEY[0], KEY[1], 1)
        assert reply.ok, reply
        assert reply.result is not None
        handles.append(checkout_result(reply).handle)
    assert (seats(h, "b1"), seats(h, "b2"), seats(h, "b3")) == (25, 25, 20)
    h.down.add("b1")
    h.advance(1.5)  # b1 is seen down: effective LQ 20 (#7, held by b2 and b3)
    full = ask(h, "checkout", "rx", "cx", KEY[0], KEY[1], 1, client="cx")
    assert [r.error for r in full] == [ErrorCode.NO_LICENSE_AVAILABLE]
    for i in range(7):
        (reply,) = ask(h, "release", f"q{i}", f"c{i}", handles[i], client=f"c{i}")
        assert reply.ok and reply.result == ReleaseResult(released=True), reply
        assert seats(h, "b2") == seats(h, "b3") == 24 - i
    (reply,) = ask(h, "checkout", "ry", "cy", KEY[0], KEY[1], 1, client="cy")
    assert reply.ok, reply  # 18 of 20 in use: a grant within b3's LQ commits
    assert seats(h, "b3") == 19


def test_lease_expiry_commits_while_one_backend_of_a_mixed_update_is_down() -> None:
    h = Harness({KEY: LicenseInfo(8, 30, True)}, lease=5.0)
    h.set_license("b3", LicenseInfo(7, 20, True), KEY)
    h.promote()
    for i in range(22):
        assert h.call("checkout", f"r{i}", f"c{i}", KEY[0], KEY[1], 1).ok
    h.down.add("b1")
    h.advance(7.0)  # no heartbeats: every lease runs out
    assert seats(h, "b2") == seats(h, "b3") == 0


def test_release_of_an_expired_license_commits() -> None:
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote()
    reply = h.call("checkout", "r0", "c0", KEY[0], KEY[1], 1)
    assert reply.ok and reply.result is not None
    for name in ("b1", "b2", "b3"):
        h.set_license(name, LicenseInfo(7, 5, False, reason=CopyReason.EXPIRED), KEY)
    h.advance(1.0)  # the leader sees the expired copies
    (released,) = ask(h, "release", "r1", "c0", checkout_result(reply).handle, client="c0")
    assert released.ok and released.result == ReleaseResult(released=True), released
    assert [seats(h, n) for n in ("b1", "b2", "b3")] == [0, 0, 0]


def test_a_release_that_cannot_commit_is_answered_quorum_lost_in_time() -> None:
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote()
    reply = h.call("checkout", "r0", "c0", KEY[0], KEY[1], 1)
    assert reply.ok and reply.result is not None
    h.down |= {"b2", "b3"}  # right after: the leader still counts them as up
    answers = ask(h, "release", "r1", "c0", checkout_result(reply).handle, client="c0")
    assert [r.error for r in answers] == [ErrorCode.QUORUM_LOST]
    assert "b2" in answers[0].message and "b3" in answers[0].message
    h.down.clear()
    h.advance(2.0)
    # The release was kept and committed once the backends came back.
    assert seats(h, "b1") == seats(h, "b2") == seats(h, "b3") == 0


def test_a_handle_whose_heartbeats_arrive_survives_a_long_quorum_loss() -> None:
    h = Harness({KEY: LicenseInfo(7, 5, True)}, lease=5.0)
    h.promote()
    kept = h.call("checkout", "r0", "c0", KEY[0], KEY[1], 1)
    dropped = h.call("checkout", "r1", "c1", KEY[0], KEY[1], 1)
    assert kept.result is not None and dropped.result is not None
    h.down |= {"b2", "b3"}
    for i in range(12):  # 12 s of quorum loss, more than twice the lease
        answers = ask(h, "heartbeat", f"hb{i}", "c0", checkout_result(kept).handle, client="c0")
        assert len(answers) == 1  # answered every time
        h.advance(1.0 - BOUND % 1.0)
    assert answers[0].error == ErrorCode.QUORUM_LOST  # not confirmed (kept, though)
    h.down.clear()
    h.advance(2.0)
    (hb,) = ask(h, "heartbeat", "hb-after", "c0", checkout_result(kept).handle, client="c0")
    assert hb.ok, hb
    (gone,) = ask(h, "heartbeat", "hb-c1", "c1", checkout_result(dropped).handle, client="c1")
    assert gone.error == ErrorCode.UNKNOWN_HANDLE  # no heartbeats: expired as usual


def test_an_op_beyond_one_entry_is_answered_when_its_own_entry_commits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More ops wait than one entry takes: each client is answered when the entry that holds
    its op commits, not before, and the committed table has no grant of a later entry."""
    monkeypatch.setattr(productlog, "MAX_ENTRY_OPS", 2)
    h = Harness({KEY: LicenseInfo(7, 100, True)})
    h.promote()
    h.leader.auto_pump = False
    for i in range(5):
        h.leader.checkout("tok", f"r{i}", f"c{i}", KEY[0], KEY[1], 1, h.now, owner="k")
    first = h.leader.pump(h.now)  # entry 1 takes 2 ops; 3 wait behind it
    assert {len(accept(m).entries[0].ops) for _, m in first.send} == {2}
    fx = deliver(h, first.send)
    assert sorted(r.rid for r in fx.replies) == ["r0", "r1"]
    assert len(h.leader._products[KEY].handles_committed()) == 2


def deliver(h: Harness, sent: list[tuple[str, PeerRequest]]) -> Effects:
    """Let the backends commit `sent` and hand their answers to the leader."""
    fx = Effects()
    for name, msg in sent:
        acc = h.acceptors[name]
        step = acc.handle(msg, h.now)
        acc.committed(step)
        fx.extend(h.leader.on_reply(name, step.reply, h.now))
    return fx


def test_promises_asked_before_a_pause_are_not_adopted() -> None:
    """sa sends PREPARE and is paused before the promises arrive; sb takes over and commits a
    grant; b1 is wiped. The promises sa reads on resuming are stale: adopting them (all three
    fresh: a bootstrap) would seed the wiped b1 with an empty table as caught up."""
    from tmr.replication.acceptor import Acceptor, AcceptorState
    from tmr.replication.messages import Prepare
    from tmr.replication.types import ZERO_EPOCH

    h = Harness({KEY: LicenseInfo(7, 5, True)})
    sa, sb = h.leader, h.add_server("sb")
    pending: list[Effects] = [sa.promote(h.now)]
    stale = []  # (backend, Promise) answers sa has not read yet
    while pending:  # probes answered, then sa prepares; its promises wait (sa pauses)
        for name, msg in pending.pop().send:
            step = h.acceptors[name].handle(msg, h.now)
            h.acceptors[name].committed(step)
            if isinstance(msg, Prepare):
                stale.append((name, step.reply))
            else:
                pending.append(sa.on_reply(name, step.reply, h.now))
    assert len(stale) == 3
    sa.tick(h.now)  # its last turn before the pause (what it sends is lost)
    h.stopped.add("sa")
    h.promote("sb", force=True, settle=2.0)
    before = len(h.events)
    h.run(sb.checkout("tok", "r0", "c0", KEY[0], KEY[1], 1, h.now, owner="k0"), "sb")
    assert any(e["event"] == "handle_granted" for e in h.events[before:])
    h.acceptors["b1"] = Acceptor("b1", AcceptorState(ZERO_EPOCH, False), h.acceptors["b1"].licenses)
    h.now += 3.0  # sa resumes: its clock jumps
    h.stopped.discard("sa")
    for name, reply in stale:  # queued in its socket: read before its first tick
        h.run(sa.on_reply(name, reply, h.now))
    assert not any(e["event"] == "adopted" and e["server"] == "sa" for e in h.events)
    h.advance(1.0)
    assert not h.acceptors["b1"].state.caught_up or h.acceptors["b1"].state.products.get(KEY)
