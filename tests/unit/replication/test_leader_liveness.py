"""The leader-liveness guard: a promote never fences a server that is alive as leader.

keepalived split brain: both hosts are VRRP master and the standby's notify script runs
`promote`. Without the guard it would take over (fencing the live leader), which would be
promoted back ten seconds later, and so on. With it the promote waits while a majority of
backends hears the other server's epoch, and gives up if that server stays alive.
"""

from __future__ import annotations

import pytest

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.leader import Leader, Role
from tmr.replication.messages import Accept, AcceptEntry, Crypt, Prepare, Probe, Rejected, Status
from tmr.replication.types import ZERO_EPOCH, Epoch, LicenseInfo

KEY = (6000123, 42)
WINDOW = 0.6  # LeaderConfig.leader_live_window (default)
GIVE_UP = 1.0 + WINDOW  # backend_timeout + leader_live_window


def two_servers() -> tuple[Harness, Leader, Leader]:
    """sa active (serving, one seat held), sb a standby that has probed for a while."""
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote("sa")
    sb = h.add_server("sb")
    assert h.leader.role == Role.ACTIVE
    assert h.call("checkout", "r0", "c0", KEY[0], KEY[1], 1).ok
    h.advance(1.0)
    return h, h.leader, sb


def role(leader: Leader) -> Role:
    """`leader.role` now: a function call, so mypy keeps no narrowing from an earlier assert
    on the attribute across the harness calls that change it."""
    return leader.role


def promises(h: Harness) -> set[Epoch]:
    return {acc.state.promised for acc in h.acceptors.values()}


def events(h: Harness, name: str) -> list[dict[str, object]]:
    return [e for e in h.events if e["event"] == name]


def test_standby_knows_the_live_leader() -> None:
    _h, sa, sb = two_servers()
    assert sb.role == Role.STANDBY
    assert sb.status()["live_leader"] == "sa"
    assert sa.status()["live_leader"] is None  # never itself


def test_promote_while_another_leader_is_live_yields_and_never_fences_it() -> None:
    h, sa, sb = two_servers()
    epoch_a = sa.epoch
    assert epoch_a is not None
    start = h.now
    h.run(sb.promote(h.now), "sb")
    assert sb.role == Role.TAKEOVER
    while sb.role == Role.TAKEOVER:
        assert h.now - start < GIVE_UP + 0.5, "the promote never gave up"
        h.advance(0.1)
        # All along: no epoch of sb's anywhere, sa leads and serves undisturbed.
        assert sb.epoch is None and h.persisted["sb"] == []
        assert promises(h) == {epoch_a}
        assert sa.role == Role.ACTIVE
    assert sb.role == Role.STANDBY
    assert h.now - start >= GIVE_UP - 1e-9  # it kept watching until the deadline
    assert events(h, "promote_yielded") == [
        {"event": "promote_yielded", "server": "sb", "active": "sa"}
    ]
    assert events(h, "fenced") == []
    h.advance(2.0)
    assert sa.role == Role.ACTIVE and sa.epoch == epoch_a and promises(h) == {epoch_a}
    assert h.call("checkout", "r1", "c1", KEY[0], KEY[1], 1).ok
    assert sb.status()["live_leader"] == "sa"


def test_promote_takes_over_once_the_leader_stopped() -> None:
    """A real failover: the active server dies; the promote waits out the window only."""
    h, _sa, sb = two_servers()
    h.stopped.add("sa")  # kill -9: it sends nothing any more
    died = h.now
    h.run(sb.promote(h.now), "sb")
    h.advance(0.2)
    assert sb.role == Role.TAKEOVER and sb.epoch is None  # sa was heard less than 0.6 s ago
    while sb.epoch is None:
        assert sb.role == Role.TAKEOVER
        assert h.now - died < WINDOW + 0.5, "the takeover did not start after the window"
        h.advance(0.1)
    assert h.now - died >= WINDOW - 0.3  # sa's last probe may predate its death by a tick
    h.advance(1.0)
    assert sb.role == Role.ACTIVE
    assert events(h, "promote_yielded") == []
    (held,) = sb.handles_view(h.now)
    assert held["client_id"] == "c0"  # the seat sa granted survives the failover


def test_planned_switchover_demote_then_promote() -> None:
    """switchover.yml: demote the active first; its probes then carry no epoch."""
    h, sa, sb = two_servers()
    h.run(sa.demote(h.now), "sa")
    h.run(sb.promote(h.now), "sb")
    h.advance(GIVE_UP)
    assert sb.role == Role.ACTIVE and sa.role == Role.STANDBY
    assert events(h, "promote_yielded") == [] and events(h, "fenced") == []
    assert sa.status()["live_leader"] == "sb"
    # And back: the same guard lets the old leader take over again after sb's demote.
    h.run(sb.demote(h.now), "sb")
    h.run(sa.promote(h.now), "sa")
    h.advance(GIVE_UP)
    assert role(sa) == Role.ACTIVE and role(sb) == Role.STANDBY


def test_force_takes_over_at_once_and_fences_the_live_leader() -> None:
    h, sa, sb = two_servers()
    epoch_a = sa.epoch
    assert epoch_a is not None
    h.run(sb.promote(h.now, force=True), "sb")
    assert sb.epoch is not None and sb.epoch > epoch_a  # prepared on the first replies
    assert h.persisted["sb"] == [sb.epoch.counter]
    h.advance(0.5)
    assert sb.role == Role.ACTIVE and sa.role == Role.FENCED
    assert promises(h) == {sb.epoch}
    assert events(h, "promote_waiting") == [] and events(h, "promote_yielded") == []


def test_leader_heard_by_one_backend_only_is_not_alive() -> None:
    """sa reaches one backend only (it cannot commit): a promote takes over."""
    h, _sa, sb = two_servers()
    h.cut.update({("sa", "b2"), ("sa", "b3")})
    h.run(sb.promote(h.now), "sb")
    h.advance(GIVE_UP + 0.5)
    assert sb.role == Role.ACTIVE
    assert events(h, "promote_yielded") == []


def test_yield_then_takeover_when_the_leader_dies_before_the_deadline() -> None:
    h, _sa, sb = two_servers()
    h.run(sb.promote(h.now), "sb")
    h.advance(0.5)
    assert sb.role == Role.TAKEOVER and sb.epoch is None
    assert events(h, "promote_waiting") == [
        {"event": "promote_waiting", "server": "sb", "active": "sa"}
    ]
    h.stopped.add("sa")
    h.advance(GIVE_UP)
    assert role(sb) == Role.ACTIVE
    assert events(h, "promote_yielded") == [] and len(events(h, "leader_silent")) == 1


@pytest.mark.parametrize("force", [False, True])
def test_a_fenced_leader_is_not_alive(force: bool) -> None:
    """A fenced server stops sending its epoch: it never blocks a promote."""
    h, sa, sb = two_servers()
    h.run(sb.promote(h.now, force=True), "sb")
    h.advance(1.0)
    assert sa.role == Role.FENCED and sb.role == Role.ACTIVE
    h.run(sb.demote(h.now), "sb")
    h.run(sa.demote(h.now), "sa")  # keepalived demotes the fenced server: a healthy standby
    h.run(sa.promote(h.now, force=force), "sa")
    h.advance(GIVE_UP)
    assert role(sa) == Role.ACTIVE
    # the handle of the first term was carried through both takeovers
    reply = h.call("checkout", "r9", "c9", KEY[0], KEY[1], 5)
    assert reply.error == ErrorCode.NO_LICENSE_AVAILABLE


# ------------------------------------------------------------------ the acceptor's side

E1, E2 = Epoch(1, "sa"), Epoch(2, "sb")


def status(acc: Acceptor, now: float, epoch: Epoch | None = None) -> Status:
    step = acc.handle(Probe(99, epoch), now)
    acc.committed(step)
    assert isinstance(step.reply, Status)
    return step.reply


def serve(acc: Acceptor, req: Prepare | Accept | Crypt, now: float) -> None:
    step = acc.handle(req, now)
    acc.committed(step)


def test_acceptor_leader_age() -> None:
    acc = Acceptor("b1", AcceptorState(ZERO_EPOCH, False), {KEY: LicenseInfo(7, 5, True)})
    assert status(acc, 0.0).leader_age is None  # nobody promised yet
    serve(acc, Prepare(1, E1), 10.0)
    assert status(acc, 10.5).leader_age == 0.5
    assert status(acc, 11.0, epoch=None).leader_age == 1.0  # a probe without epoch: no sign
    assert status(acc, 11.5, epoch=Epoch(1, "sb")).leader_age == 1.5  # not the promise
    assert status(acc, 12.0, epoch=E1).leader_age == 0.0  # the leader's own probe
    assert status(acc, 12.25).leader_age == 0.25
    serve(acc, Accept(2, E1, (AcceptEntry(KEY, 1, ()),)), 13.0)  # not in sync: still a sign
    assert status(acc, 13.5).leader_age == 0.5
    serve(acc, Crypt(3, E1, KEY, "h", "c", "hmac", b""), 14.0)
    assert status(acc, 14.0).leader_age == 0.0
    # A newer epoch's PREPARE moves the promise: the age is now that leader's.
    serve(acc, Prepare(4, E2), 20.0)
    assert status(acc, 20.1).leader_age == pytest.approx(0.1)
    # The deposed leader's requests are rejected and say nothing about the promised one.
    step = acc.handle(Accept(5, E1, ()), 30.0)
    acc.committed(step)
    assert isinstance(step.reply, Rejected)
    assert status(acc, 30.0).leader_age == pytest.approx(10.0)
    # A restart (state reloaded, memory lost): unknown, not "long ago".
    restarted = Acceptor("b1", acc.state.copy(), acc.licenses)
    assert status(restarted, 31.0).leader_age is None


def test_acceptor_age_needs_the_write_to_be_committed() -> None:
    """A PREPARE whose promise never became durable (failed commit) is no sign of life."""
    acc = Acceptor("b1", AcceptorState(E1, True), {KEY: LicenseInfo(7, 5, True)})
    step = acc.handle(Prepare(1, E2), 5.0)  # not committed: the store failed
    assert step.seen == (E2, 5.0)
    assert status(acc, 6.0).leader_age is None
    acc.committed(step)
    assert status(acc, 6.0).leader_age == 1.0


# ------------------------------------------------------------------ one lost message


def test_a_lost_probe_neither_silences_the_leader_nor_marks_the_backend_down() -> None:
    """Probes go out every probe_interval, also while one is unanswered: one lost message
    costs one interval, not backend_timeout (which is longer than the live window). Here the
    leader's probe to b1 and the standby's probe to b2 are lost: the standby must still see
    the leader alive (b1 still hears it after one interval, b2 still answers the standby)."""
    h, sa, sb = two_servers()
    h.lose += [("sa", "b1", Probe), ("sb", "b2", Probe)]
    for _ in range(20):  # 2 s, past backend_timeout: the lost probes time out meanwhile
        h.advance(0.1)
        assert sb.live_leader(h.now) == "sa"
        ages = [acc.leader_age(h.now) for acc in h.acceptors.values()]
        assert all(a is not None and a <= WINDOW for a in ages), ages
    assert h.lose == []  # they were lost indeed
    assert events(h, "backend_down") == []
    assert all(b.up for b in sa.backends) and all(b.up for b in sb.backends)


def test_lost_accepts_are_resent_without_marking_backends_down() -> None:
    h, sa, _sb = two_servers()
    h.lose += [("sa", "b2", Accept), ("sa", "b3", Accept)]
    before = len(h.replies)
    h.run(sa.checkout("tok", "r5", "c5", KEY[0], KEY[1], 1, h.now, owner="k5"))
    assert len(h.replies) == before  # only b1 acked: not committed yet
    h.advance(1.5)  # backend_timeout: resent to b2 and b3, which answered probes meanwhile
    (reply,) = h.replies[before:]
    assert reply.ok
    assert h.lose == [] and events(h, "backend_down") == []
    assert h.call("checkout", "r6", "c6", KEY[0], KEY[1], 1).ok


def test_force_during_a_waiting_promote_takes_over() -> None:
    h, sa, sb = two_servers()
    h.run(sb.promote(h.now), "sb")
    h.advance(0.3)
    assert sb.role == Role.TAKEOVER and sb.epoch is None
    h.run(sb.promote(h.now, force=True), "sb")  # the operator overrides
    h.advance(0.5)
    assert role(sb) == Role.ACTIVE and role(sa) == Role.FENCED
    assert events(h, "promote_yielded") == []
