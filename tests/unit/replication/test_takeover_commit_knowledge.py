"""A takeover during a license update: the table a new leader adopts above a backend's LQ is
recorded by that backend when a promise says it was committed (docs/design.md §6).

b1 and b2 hold #8 (LQ 3), b3 still #7 (LQ 2). sa commits a third seat with b1 and b2 (b3
refuses it). Then b2 stops for good and sa crashes. sb takes over with b1 and b3: two up
backends with valid copies. Without commit knowledge b3 refuses sb's snapshot (3 seats above
its LQ 2, and nothing says it is committed) and nothing commits until b2 or an update returns.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
from tmr.protocol.client_api import CheckoutResult, ReleaseResult
from tmr.replication import acceptor as acceptor_mod
from tmr.replication.acceptor import Acceptor
from tmr.replication.leader import ClientReply, Role
from tmr.replication.messages import Accept, Accepted
from tmr.replication.types import LicenseInfo, Version

KEY = (6000123, 42)
BOUND = 1.0 + 0.25  # backend_timeout + one probe interval (the harness's)


def seats(h: Harness, backend: str) -> int:
    log = h.acceptors[backend].state.products.get(KEY)
    return log.seats() if log else 0


def ask(h: Harness, server: str, method: str, *args: Any, client: str) -> list[ClientReply]:
    """One request to `server`; what it answered within the bound."""
    got = h.replies_of.setdefault(server, [])
    before = len(got)
    leader = h.leaders[server]
    h.run(getattr(leader, method)("tok", *args, h.now, owner=f"key-of-{client}"), server)
    h.advance(BOUND)
    return got[before:]


def mixed_update_with_three_seats() -> tuple[Harness, list[str]]:
    h = Harness({KEY: LicenseInfo(8, 3, True)})
    h.set_license("b3", LicenseInfo(7, 2, True), KEY)
    h.promote()
    handles = []
    for i in range(3):
        reply = h.call("checkout", f"r{i}", f"c{i}", KEY[0], KEY[1], 1)
        assert reply.ok and isinstance(reply.result, CheckoutResult), reply
        handles.append(reply.result.handle)
    assert (seats(h, "b1"), seats(h, "b2"), seats(h, "b3")) == (3, 3, 2)
    return h, handles


def take_over_after_b2_and_sa_fail(h: Harness) -> Role:
    h.down.add("b2")
    h.stopped.add("sa")
    sb = h.add_server("sb")
    h.promote("sb", force=True, settle=2.5)
    return sb.role


def test_the_backends_that_voted_know_the_commit() -> None:
    h, _ = mixed_update_with_three_seats()
    epoch = h.leader.epoch
    assert epoch is not None
    committed = h.leader._products[KEY].committed
    for name in ("b1", "b2"):  # a notice told them: no further traffic carries it
        assert h.acceptors[name].known_commit.get(KEY) == Version(epoch, committed), name


def test_a_new_leader_serves_with_two_good_backends_after_a_takeover_mid_update() -> None:
    h, handles = mixed_update_with_three_seats()
    assert take_over_after_b2_and_sa_fail(h) == Role.ACTIVE
    assert seats(h, "b3") == 3  # recorded above its LQ: committed state, not a vote
    assert h.leaders["sb"]._products[KEY].committed == 0
    # Effective LQ 2 (#7: the second-highest TMR ID of b1 and b3): no seat, and said so.
    (full,) = ask(h, "sb", "checkout", "r9", "c9", KEY[0], KEY[1], 1, client="c9")
    assert full.error == ErrorCode.NO_LICENSE_AVAILABLE, full
    (released,) = ask(h, "sb", "release", "q0", "c0", handles[0], client="c0")
    assert released.ok and released.result == ReleaseResult(released=True), released
    assert seats(h, "b1") == seats(h, "b3") == 2


def restart(h: Harness, name: str) -> None:
    """Backend `name` restarts: only its durable state (`AcceptorState`) survives."""
    old = h.acceptors[name]
    h.acceptors[name] = Acceptor(name, old.state.copy(), old.licenses)


def test_the_told_backends_restart_and_the_takeover_still_serves() -> None:
    """The commit knowledge is durable: b1 restarted since it was told (b2 is gone), and
    sb still adopts the table as committed and serves with b1 and b3."""
    h, handles = mixed_update_with_three_seats()
    restart(h, "b1")
    restart(h, "b3")
    assert take_over_after_b2_and_sa_fail(h) == Role.ACTIVE
    assert seats(h, "b3") == 3  # recorded above its LQ: committed state
    (released,) = ask(h, "sb", "release", "q0", "c0", handles[0], client="c0")
    assert released.ok and released.result == ReleaseResult(released=True), released


def test_during_an_update_grants_wait_for_the_notice_and_are_marked_until_known() -> None:
    """The third seat (above b3's LQ) goes out flagged `notice`: b1 and b2 mark it until a
    notice tells them it committed, and its client is answered once two of them know."""
    h = Harness({KEY: LicenseInfo(8, 3, True)})
    h.set_license("b3", LicenseInfo(7, 2, True), KEY)
    h.promote()
    sent: list[Accept] = []
    for i in range(3):
        fx = h.leader.checkout("tok", f"r{i}", f"c{i}", KEY[0], KEY[1], 1, h.now, owner="k")
        sent.extend(m for _, m in fx.send if isinstance(m, Accept))
        h.run(fx)
        h.advance(0.3)
    assert [r.ok for r in h.replies] == [True, True, True]
    flagged = {seq for m in sent for _, seq in m.notice}
    assert flagged == {3}  # only the grant above b3's LQ
    epoch = h.leader.epoch
    assert epoch is not None
    for name in ("b1", "b2"):
        log = h.acceptors[name].state.products[KEY]
        assert h.acceptors[name].known_commit[KEY] >= Version(epoch, 3), name
        assert log.marked == {}, name  # known committed: the mark is dropped


def test_with_backends_that_keep_knowledge_in_memory_grants_are_answered_at_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Older backends (a rolling upgrade) do not say their knowledge is durable: the leader
    then flags nothing, answers at commit as before, and no new leader aborts anything."""

    def old_accepted(*args: Any, **kw: Any) -> Accepted:
        return Accepted(*args, **{**kw, "durable": False})

    monkeypatch.setattr(acceptor_mod, "Accepted", old_accepted)
    h = Harness({KEY: LicenseInfo(8, 3, True)})
    h.set_license("b3", LicenseInfo(7, 2, True), KEY)
    h.promote()
    sent: list[Accept] = []
    for i in range(3):
        fx = h.leader.checkout("tok", f"r{i}", f"c{i}", KEY[0], KEY[1], 1, h.now, owner="k")
        sent.extend(m for _, m in fx.send if isinstance(m, Accept))
        h.run(fx)
        h.advance(0.3)
    assert [r.ok for r in h.replies] == [True, True, True]
    assert not any(m.notice for m in sent)
    assert all(not acc.state.products[KEY].marked for acc in h.acceptors.values())


def test_a_crash_before_the_commit_notice_aborts_the_unanswered_grant() -> None:
    """sa crashes after the third seat committed with b1 and b2 and before telling anyone:
    no client was told of it (answered only once two backends know it committed), so sb
    aborts it at the takeover and serves with b1 and b3 (without the rule b3 refuses the
    adopted table, 3 seats above its LQ 2, and nothing commits)."""
    h = Harness({KEY: LicenseInfo(8, 3, True)})
    h.set_license("b3", LicenseInfo(7, 2, True), KEY)
    h.promote()
    handles = []
    for i in range(2):
        reply = h.call("checkout", f"r{i}", f"c{i}", KEY[0], KEY[1], 1)
        assert reply.ok and isinstance(reply.result, CheckoutResult), reply
        handles.append(reply.result.handle)
    before = len(h.replies)
    sa = h.leader
    fx = sa.checkout("tok", "r2", "c2", KEY[0], KEY[1], 1, h.now, owner="key-of-c2")
    queue = [fx]
    while queue:  # deliver everything but commit notices, then sa is gone
        out = queue.pop(0)
        h.replies.extend(out.replies)
        for name, msg in out.send:
            if isinstance(msg, Accept) and not msg.entries:
                continue
            acc = h.acceptors[name]
            step = acc.handle(msg, h.now)
            acc.committed(step)
            queue.append(sa.on_reply(name, step.reply, h.now))
    assert sa._products[KEY].committed == 3
    assert h.replies[before:] == []  # committed, not yet told: no answer
    assert (seats(h, "b1"), seats(h, "b2"), seats(h, "b3")) == (3, 3, 2)
    assert take_over_after_b2_and_sa_fail(h) == Role.ACTIVE
    assert seats(h, "b1") == seats(h, "b3") == 2
    assert any(e["event"] == "grants_aborted" and e.get("takeover") for e in h.events)
    (released,) = ask(h, "sb", "release", "q0", "c0", handles[0], client="c0")
    assert released.ok and released.result == ReleaseResult(released=True), released
    (again,) = ask(h, "sb", "checkout", "r3", "c3", KEY[0], KEY[1], 1, client="c3")
    assert again.ok, again


def test_commits_ride_on_accepts_while_the_copies_agree() -> None:
    """Without a license update under way no notice of its own is sent: the next ACCEPT
    carries the commits."""
    h = Harness({KEY: LicenseInfo(7, 10, True)})
    h.promote()
    sent: list[Accept] = []
    for i in range(4):
        fx = h.leader.checkout("tok", f"r{i}", f"c{i}", KEY[0], KEY[1], 1, h.now, owner="k")
        sent.extend(m for _, m in fx.send if isinstance(m, Accept))
        h.run(fx)
        h.advance(0.3)
    assert sent and all(m.entries for m in sent)
    assert sum(1 for m in sent if m.commits) >= 3 * 3  # every backend, from the second on
