"""Client requests that reach a server during its takeover wait for its end
(`tmr.replication.parking`, docs/design.md §5): served once it is active, NOT_ACTIVE when the
takeover ends otherwise or after `takeover_hold`, as before (hold 0)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
from tmr.protocol.results import RELEASED, CheckoutResult, HeartbeatResult
from tmr.replication.effects import ClientReply, Effects
from tmr.replication.leader import Leader, Role
from tmr.replication.messages import Accepted, PeerReply
from tmr.replication.parking import TAKEOVER_HOLD, Parked, Parking
from tmr.replication.types import LicenseInfo

KEY = (6000123, 42)
# sb's takeover waits until the backends have not heard sa for leader_live_window (0.6 s):
# a hold longer than that lets a request parked at the promote wait for the end.
LONG = 1.0
STEP = 0.05  # the harness's tick step here (the service ticks every 0.05 s)


def failover(hold: float = LONG, *, kill: bool = True) -> tuple[Harness, Leader, str]:
    """sa active, client c0 holding one seat; then sa dies (`kill`: nothing it sends arrives,
    no ticks) and sb is promoted: it is taking over. Returns c0's handle."""
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote("sa")
    sb = h.add_server("sb", takeover_hold=hold)
    grant = h.call("checkout", "r0", "c0", KEY[0], KEY[1], 1)
    assert isinstance(grant.result, CheckoutResult)
    h.advance(1.0)
    if kill:
        h.stopped.add("sa")
    h.run(sb.promote(h.now), "sb")
    assert sb.role == Role.TAKEOVER
    return h, sb, grant.result.handle


def ask(h: Harness, sb: Leader, method: str, *args: Any, owner: str) -> list[ClientReply]:
    """Call `method` on sb as a client request; the answers it gave at once."""
    before = len(h.replies_of.get("sb", []))
    h.run(getattr(sb, method)("tok", *args, h.now, owner=owner), "sb")
    return h.replies_of.get("sb", [])[before:]


def answers(h: Harness, rid: str) -> list[ClientReply]:
    return [r for r in h.replies_of.get("sb", []) if r.rid == rid]


def role(leader: Leader) -> Role:
    """`leader.role` now: a function call, so mypy keeps no narrowing from an earlier assert
    on the attribute across the harness calls that change it."""
    return leader.role


def until(h: Harness, done: Any, limit: float = 3.0) -> float:
    """Tick in STEP steps until `done()`; the time it took."""
    start = h.now
    while not done():
        assert h.now - start < limit, "not within the limit"
        h.advance(STEP, step=STEP)
    return h.now - start


def test_a_checkout_during_the_takeover_is_served_when_it_ends() -> None:
    h, sb, _ = failover()
    assert ask(h, sb, "checkout", "r1", "c1", KEY[0], KEY[1], 2, owner="K1") == []  # parked
    until(h, lambda: sb.role == Role.ACTIVE)
    (reply,) = answers(h, "r1")  # in the input that activated sb, nothing before
    assert isinstance(reply.result, CheckoutResult) and reply.result.seats == 2
    held = {x["handle"]: x for x in sb.handles_view(h.now)}
    assert held[reply.result.handle]["seats"] == 2
    assert any(e["event"] == "parked_answered" and e["requests"] == 1 for e in h.events)


def test_without_a_hold_the_takeover_answers_not_active_at_once() -> None:
    """`takeover_hold` 0: the behaviour before parking, and what the test above would see."""
    h, sb, _ = failover(hold=0.0)
    (reply,) = ask(h, sb, "checkout", "r1", "c1", KEY[0], KEY[1], 1, owner="K1")
    assert reply.error == ErrorCode.NOT_ACTIVE
    assert "taking over" in reply.message
    until(h, lambda: sb.role == Role.ACTIVE)
    assert answers(h, "r1") == [reply]  # answered once, nothing later


def test_a_heartbeat_of_an_adopted_handle_waits_and_renews_it() -> None:
    h, sb, handle = failover()
    assert ask(h, sb, "heartbeat", "r1", "c0", handle, owner="key-of-c0") == []
    until(h, lambda: sb.role == Role.ACTIVE)
    (reply,) = answers(h, "r1")
    assert isinstance(reply.result, HeartbeatResult)


def test_a_release_of_an_adopted_handle_waits_and_releases_it() -> None:
    h, sb, handle = failover()
    assert ask(h, sb, "release", "r1", "c0", handle, owner="key-of-c0") == []
    until(h, lambda: bool(answers(h, "r1")))
    (reply,) = answers(h, "r1")
    assert reply.result == RELEASED
    assert handle not in {x["handle"] for x in sb.handles_view(h.now)}


def test_a_crypt_call_waits_and_gets_the_active_servers_answer() -> None:
    h, sb, handle = failover()
    assert ask(h, sb, "crypt", "r1", "c0", handle, "hmac", b"x", owner="key-of-c0") == []
    until(h, lambda: bool(answers(h, "r1")))
    (parked,) = answers(h, "r1")
    ask(h, sb, "crypt", "r2", "c0", handle, "hmac", b"x", owner="key-of-c0")
    until(h, lambda: bool(answers(h, "r2")))
    (fresh,) = answers(h, "r2")
    assert parked.error != ErrorCode.NOT_ACTIVE
    assert (parked.error, parked.result) == (fresh.error, fresh.result)


def test_a_request_sent_twice_while_parked_gets_one_handle() -> None:
    """A client that times out and sends the same request again: the leader's request-id
    deduplication applies to the replayed requests as to any others."""
    h, sb, _ = failover()
    for _ in range(2):
        assert ask(h, sb, "checkout", "r1", "c1", KEY[0], KEY[1], 1, owner="K1") == []
    until(h, lambda: sb.role == Role.ACTIVE)
    first, second = answers(h, "r1")
    assert isinstance(first.result, CheckoutResult) and first.result == second.result
    assert sum(x["seats"] for x in sb.handles_view(h.now)) == 2  # c0's seat and this one


def test_a_request_that_waited_the_hold_is_answered_not_active() -> None:
    """The default hold (0.3 s, below the SDK's first attempt timeout): a request parked at
    the promote is answered NOT_ACTIVE within a tick after it, and one sent after that
    answer waits for the end and is served."""
    h, sb, _ = failover(hold=TAKEOVER_HOLD)
    assert ask(h, sb, "checkout", "r1", "c1", KEY[0], KEY[1], 1, owner="K1") == []
    waited = until(h, lambda: bool(answers(h, "r1")))
    assert TAKEOVER_HOLD <= waited <= TAKEOVER_HOLD + STEP + 1e-9
    (refused,) = answers(h, "r1")
    assert refused.error == ErrorCode.NOT_ACTIVE and "taking over" in refused.message
    assert sb.role == Role.TAKEOVER
    assert ask(h, sb, "checkout", "r2", "c1", KEY[0], KEY[1], 1, owner="K1") == []
    until(h, lambda: role(sb) == Role.ACTIVE)
    (served,) = answers(h, "r2")
    assert isinstance(served.result, CheckoutResult)
    assert answers(h, "r1") == [refused]


def test_what_waits_also_waits_out_a_long_step_of_the_takeover() -> None:
    """The server's own long step (adopting 100,000 handles: 0.6 s) counts as a pause: the
    snapshot acknowledgements that activate it answer messages sent before the step ended,
    so it is active but unconfirmed until its next probes are answered. What waits is served
    then, not answered NOT_ACTIVE ("paused") at the activation."""
    h, sb, _ = failover(hold=3.0)
    assert ask(h, sb, "checkout", "r1", "c1", KEY[0], KEY[1], 1, owner="K1") == []
    held: list[tuple[str, PeerReply]] = []
    real = sb.on_reply

    def hold_snapshot_acks(backend: str, msg: PeerReply, now: float) -> Effects:
        if isinstance(msg, Accepted) and sb.role == Role.TAKEOVER:
            held.append((backend, msg))
            return Effects()
        return real(backend, msg, now)

    sb.on_reply = hold_snapshot_acks  # type: ignore[method-assign]
    until(h, lambda: len(held) >= 2)  # the snapshot is out, its acknowledgements held back
    sb.on_reply = real  # type: ignore[method-assign]
    h.now += 0.6  # the long step: no tick, no input (more than two probe intervals)
    for backend, msg in held:
        h.run(sb.on_reply(backend, msg, h.now), "sb")
    assert sb.role == Role.ACTIVE
    assert answers(h, "r1") == []  # active, not confirmed since the step: still waiting
    until(h, lambda: bool(answers(h, "r1")))  # the next tick's probes confirm it
    (reply,) = answers(h, "r1")
    assert isinstance(reply.result, CheckoutResult), reply


def test_a_demote_answers_what_waits() -> None:
    h, sb, _ = failover()
    assert ask(h, sb, "checkout", "r1", "c1", KEY[0], KEY[1], 1, owner="K1") == []
    h.run(sb.demote(h.now), "sb")
    (reply,) = answers(h, "r1")
    assert reply.error == ErrorCode.NOT_ACTIVE and "standby" in reply.message
    assert sb.handles_view(h.now) == []


def test_a_promote_that_yields_to_a_live_leader_sends_its_clients_there() -> None:
    """sa is alive and serving: sb's promote waits, then gives up; what waited on sb is
    answered NOT_ACTIVE then (the SDK asks the other endpoint), and sa's seats are as they
    were."""
    h, sb, _ = failover(hold=5.0, kill=False)
    assert ask(h, sb, "checkout", "r1", "c1", KEY[0], KEY[1], 1, owner="K1") == []
    until(h, lambda: sb.role != Role.TAKEOVER)
    assert sb.role == Role.STANDBY
    (reply,) = answers(h, "r1")
    assert reply.error == ErrorCode.NOT_ACTIVE and "standby" in reply.message
    assert len(h.leader.handles_view(h.now)) == 1  # c0's, on sa


def test_the_active_server_never_parks() -> None:
    h, sb, _ = failover()
    until(h, lambda: sb.role == Role.ACTIVE)
    (reply,) = ask(h, sb, "checkout", "r1", "c1", KEY[0], KEY[1], 1, owner="K1")
    assert isinstance(reply.result, CheckoutResult)


def test_an_active_server_resumed_from_a_pause_parks_until_its_probes_confirm_it() -> None:
    """After a pause (SIGSTOP, a frozen VM) the requests queued meanwhile are read before any
    tick: they wait for the first probes' answers (`Leader._waits`), not NOT_ACTIVE each (every
    client backing off and retrying at once)."""
    h, sb, handle = failover()
    until(h, lambda: sb.role == Role.ACTIVE)
    h.advance(1.0)
    h.now += 5.0  # paused: no tick, no input
    assert ask(h, sb, "heartbeat", "r1", "c0", handle, owner="key-of-c0") == []
    assert ask(h, sb, "checkout", "r2", "c1", KEY[0], KEY[1], 1, owner="K1") == []
    waited = until(h, lambda: bool(answers(h, "r1")) and bool(answers(h, "r2")))
    assert waited <= STEP + 1e-9  # the first tick's probes confirm it
    (renewed,) = answers(h, "r1")
    (granted,) = answers(h, "r2")
    assert isinstance(renewed.result, HeartbeatResult), renewed
    assert isinstance(granted.result, CheckoutResult), granted
    (ev,) = [e for e in h.events if e["event"] == "parked_answered" and e["after"] == "pause"]
    assert ev["requests"] == 2 and ev["role"] == "active"


def test_the_first_tick_after_a_pause_confirms_although_its_turn_began_earlier() -> None:
    """The service's tick carries its loop turn's start, and the turn read the requests after
    it: the first of them marks the pause's end. The tick's probes still count (stamped no
    earlier than what the leader has seen), so what waits is served by their answers, not a
    probe round later (past the hold of the first requests, on a busy server)."""
    h, sb, handle = failover()
    until(h, lambda: sb.role == Role.ACTIVE)
    h.advance(1.0)
    start = h.now + 5.0  # the turn after the pause begins ...
    h.now = start + 0.02  # ... and reads the request a little later
    assert ask(h, sb, "heartbeat", "r1", "c0", handle, owner="key-of-c0") == []
    h.run(sb.tick(start), "sb")  # the turn's tick, at the turn's start
    (renewed,) = answers(h, "r1")  # served by the answers to that tick's probes
    assert isinstance(renewed.result, HeartbeatResult), renewed


def test_a_resumed_server_that_is_not_confirmed_within_the_hold_answers_not_active() -> None:
    """Its backends do not answer (two of three down): what waited `takeover_hold` is answered
    NOT_ACTIVE, as every request was before parking (a pause says nothing of a quorum yet)."""
    h, sb, handle = failover(hold=TAKEOVER_HOLD)  # below the harness's backend_timeout, 1 s
    until(h, lambda: sb.role == Role.ACTIVE)
    h.advance(1.0)
    h.down |= {"b1", "b2"}
    h.now += 5.0
    assert ask(h, sb, "heartbeat", "r1", "c0", handle, owner="key-of-c0") == []
    waited = until(h, lambda: bool(answers(h, "r1")))
    assert TAKEOVER_HOLD - STEP <= waited <= TAKEOVER_HOLD + STEP + 1e-9
    (reply,) = answers(h, "r1")
    assert reply.error == ErrorCode.NOT_ACTIVE and "paused" in reply.message, reply


def test_a_standby_never_parks() -> None:
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    sb = h.add_server("sb", takeover_hold=LONG)
    (reply,) = ask(h, sb, "checkout", "r1", "c1", KEY[0], KEY[1], 1, owner="K1")
    assert reply.error == ErrorCode.NOT_ACTIVE and "standby" in reply.message


# ------------------------------------------------------------------ the parking alone


def parked(at: float, rid: str) -> Parked:
    return Parked(at, "tok", rid, lambda now: Effects())


def test_parking_is_bounded_and_counts_what_it_turned_away() -> None:
    p = Parking(hold=1.0, limit=2)
    assert p.park(parked(0.0, "a")) and p.park(parked(0.1, "b"))
    assert not p.park(parked(0.2, "c"))
    assert (len(p), p.turned_away) == (2, 1)
    assert [x.rid for x in p.take_all()] == ["a", "b"] and len(p) == 0


def test_parking_gives_back_the_overdue_in_order() -> None:
    p = Parking(hold=0.3)
    for at, rid in ((0.0, "a"), (0.1, "b"), (0.25, "c")):
        p.park(parked(at, rid))
    assert p.overdue(0.29) == []
    assert [x.rid for x in p.overdue(0.4)] == ["a", "b"]
    assert [x.rid for x in p.take_all()] == ["c"]


def test_parking_bounds_the_bytes_it_keeps() -> None:
    """Crypt calls keep their input (up to 64 KiB each): a byte budget, not only a count."""
    p = Parking(hold=1.0, limit=100, limit_bytes=100)
    assert p.park(Parked(0.0, "tok", "a", lambda now: Effects(), 60))
    assert not p.park(Parked(0.0, "tok", "b", lambda now: Effects(), 60))
    assert p.park(Parked(0.0, "tok", "c", lambda now: Effects(), 40))
    assert p.turned_away == 1
    p.overdue(5.0)  # both given back: their bytes too
    assert p.park(Parked(5.0, "tok", "d", lambda now: Effects(), 100))


def test_a_hold_of_zero_parks_nothing() -> None:
    p = Parking(hold=0.0)
    assert not p.park(parked(0.0, "a"))
    assert (len(p), p.turned_away) == (0, 0)  # off, not full


@pytest.mark.parametrize(("hold", "limit", "size"), [(-0.1, 1, 1), (0.3, -1, 1), (0.3, 1, -1)])
def test_parking_refuses_negative_settings(hold: float, limit: int, size: int) -> None:
    with pytest.raises(ValueError):
        Parking(hold, limit, size)
