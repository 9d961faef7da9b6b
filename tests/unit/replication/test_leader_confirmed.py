"""A server answers from its own state only while a majority of backends confirms it leads.

A deposed server that was paused (SIGSTOP, a frozen VM) must not answer from what it knew
before the pause (a retried checkout with a handle released since, NO_LICENSE_AVAILABLE from
a stale count, QUORUM_LOST from timeouts it could not wait for); a true quorum loss is still
answered QUORUM_LOST within backend_timeout and one probe round. Crypt calls need the license
available as a checkout does, and each gets exactly one reply.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from tests.unit.replication.harness import NAMES, Harness
from tmr.errors import ErrorCode
from tmr.protocol.results import CheckoutResult
from tmr.replication.leader import ClientReply, Effects, Leader, Role
from tmr.replication.messages import Accept, Crypt
from tmr.replication.parking import TAKEOVER_HOLD
from tmr.replication.types import LicenseInfo

KEY = (6000123, 42)
BACKEND_TIMEOUT = 1.0  # the harness's
PROBE_INTERVAL = 0.25


def ask(h: Harness, leader: Leader, method: str, *args: Any) -> Effects:
    """A client call on `leader` at `h.now`, not delivered anywhere yet (the effects are
    returned). The client's key is one per client id, as `Harness.call` does."""
    call = getattr(leader, method)
    kwargs = {"owner": f"key-of-{args[1]}"} if "owner" in inspect.signature(call).parameters else {}
    result: Effects = call("tok", *args, h.now, **kwargs)
    return result


def only_reply(fx: Effects) -> ClientReply:
    assert len(fx.replies) == 1, fx.replies
    return fx.replies[0]


def with_crypto(h: Harness) -> None:
    for acc in h.acceptors.values():
        acc._crypt = lambda key, operation, data: data[::-1]


def checkout(h: Harness, rid: str, cid: str, seats: int = 1) -> str:
    grant = h.call("checkout", rid, cid, KEY[0], KEY[1], seats)
    assert grant.ok and isinstance(grant.result, CheckoutResult), grant
    handle: str = grant.result.handle
    return handle


# ---------------------------------------------------------------- a paused, deposed server


@pytest.mark.parametrize("hold", [0.0, TAKEOVER_HOLD])
def test_a_paused_deposed_server_answers_nothing_from_its_stale_state(hold: float) -> None:
    """What reaches a deposed server after its pause is answered NOT_ACTIVE: at once without
    parking (hold 0), else once its first probes after the pause tell it about the newer
    leader (the requests waited for that, `Leader._waits`). Never from its stale state."""
    h = Harness({KEY: LicenseInfo(7, 1, True)})
    sa = h.add_server("sa", takeover_hold=hold)
    h.leader = sa
    sb = h.add_server("sb")
    h.promote("sa")
    handle = checkout(h, "r1", "c1")
    h.stopped.add("sa")  # SIGSTOP
    h.advance(1.0)  # the backends stop hearing sa
    h.promote("sb")
    assert sb.role == Role.ACTIVE
    h.run(ask(h, sb, "release", "r2", "c1", handle), "sb")
    h.advance(0.3)
    assert sb.handles_view(h.now) == []  # released and committed on the new leader
    h.stopped.discard("sa")  # SIGCONT: client requests are read before any tick
    since = len(h.events)
    before = len(h.replies_of["sa"])

    asked = {
        "r1": ask(h, sa, "checkout", "r1", "c1", KEY[0], KEY[1], 1),  # not the released handle
        "r3": ask(h, sa, "checkout", "r3", "c2", KEY[0], KEY[1], 1),  # not NO_LICENSE_AVAILABLE
        "r2": ask(h, sa, "release", "r2", "c1", handle),
        "r4": ask(h, sa, "heartbeat", "r4", "c1", handle),
    }
    if hold:
        assert all(fx.parked and not fx.replies for fx in asked.values())
    for fx in asked.values():
        h.run(fx, "sa")
    h.advance(0.3)  # its first probes after the pause tell it about the newer leader
    assert sa.role == Role.FENCED
    assert sb.role == Role.ACTIVE
    for rid in asked:
        (reply,) = [r for r in h.replies_of["sa"][before:] if r.rid == rid]
        assert reply.error == ErrorCode.NOT_ACTIVE, reply
    assert not [e for e in h.events[since:] if e["event"] == "backend_down"]


def test_requests_sent_before_a_pause_do_not_time_out_at_once() -> None:
    """After a pause every request sent before it is past its timeout although the answers
    may be queued: the backends are probed again, not declared down (2 of 18 runs answered
    QUORUM_LOST with all three backends up)."""
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote()
    sa = h.leader
    h.now += PROBE_INTERVAL + 0.05
    in_flight = sa.tick(h.now)  # probes sent ...
    assert len([m for _, m in in_flight.send]) == len(NAMES)
    h.now += 5.0  # ... and the process stopped before their answers were read

    resumed = sa.tick(h.now)
    assert not [e for e in resumed.events if e["event"] == "backend_down"], resumed.events
    assert all(b.up for b in sa.backends)
    assert len(resumed.send) == len(NAMES)  # re-probed at once
    parked = ask(h, sa, "checkout", "r1", "c1", KEY[0], KEY[1], 1)
    assert parked.parked and not parked.replies  # not QUORUM_LOST: nothing is known yet
    h.run(parked, "sa")

    h.run(resumed, "sa")  # the answers to the new probes confirm it: the checkout is served
    (reply,) = [r for r in h.replies_of["sa"] if r.rid == "r1" and r.token == "tok"]
    assert isinstance(reply.result, CheckoutResult), reply
    assert reply.result.handle == checkout(h, "r1", "c1")  # a retry gets the same handle


def test_a_deadline_that_passed_during_a_pause_is_not_quorum_lost_at_the_resume() -> None:
    """A checkout whose entry was in flight when the server was stopped (two ACCEPTs lost):
    its client's deadline passes during the pause, but the backends are up; the first probes
    and resends after the resume commit it, and the client gets its handle, not QUORUM_LOST
    at the first tick."""
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote()
    sa = h.leader
    h.lose += [("sa", "b1", Accept), ("sa", "b2", Accept)]
    asked = ask(h, sa, "checkout", "r1", "c1", KEY[0], KEY[1], 1)
    h.run(asked, "sa")
    assert not [r for r in h.replies if r.rid == "r1"]  # waits for a second acknowledgement
    h.now += 5.0  # paused meanwhile
    h.advance(BACKEND_TIMEOUT + PROBE_INTERVAL + 0.2, step=0.05)
    (reply,) = [r for r in h.replies if r.rid == "r1"]
    assert isinstance(reply.result, CheckoutResult), reply


def test_a_server_that_was_paused_and_lost_its_backends_answers_quorum_lost_in_time() -> None:
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote()
    sa = h.leader
    handle = checkout(h, "r0", "c0")
    h.down |= {"b2", "b3"}
    h.now += 5.0  # paused meanwhile
    h.advance(0.1)
    early = ask(h, sa, "checkout", "r1", "c1", KEY[0], KEY[1], 1)
    assert early.parked and not early.replies  # it may yet be confirmed: waits
    h.run(early, "sa")
    h.advance(BACKEND_TIMEOUT + PROBE_INTERVAL)
    # Answered after waiting `takeover_hold`, NOT_ACTIVE: within backend_timeout of a pause
    # a lack of answers says nothing yet (the client retries).
    (waited,) = [r for r in h.replies_of["sa"] if r.rid == "r1" and r.token == "tok"]
    assert waited.error == ErrorCode.NOT_ACTIVE, waited
    for method, args in (
        ("checkout", ("r1", "c1", KEY[0], KEY[1], 1)),
        ("heartbeat", ("r2", "c0", handle)),
        ("release", ("r3", "c0", handle)),
        ("crypt", ("r4", "c0", handle, "hmac", b"x")),
    ):
        reply = only_reply(ask(h, sa, method, *args))
        assert reply.error == ErrorCode.QUORUM_LOST, (method, reply)
    assert sa.role == Role.ACTIVE


def test_a_true_quorum_loss_is_answered_quorum_lost_within_the_bound() -> None:
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote()
    sa = h.leader
    handle = checkout(h, "r0", "c0")
    h.down |= {"b1", "b3"}
    h.advance(BACKEND_TIMEOUT + PROBE_INTERVAL)
    for method, args in (
        ("checkout", ("r1", "c1", KEY[0], KEY[1], 1)),
        ("heartbeat", ("r2", "c0", handle)),
        ("crypt", ("r4", "c0", handle, "hmac", b"x")),
    ):
        reply = only_reply(ask(h, sa, method, *args))
        assert reply.error == ErrorCode.QUORUM_LOST, (method, reply)
    h.down.clear()
    h.advance(0.5)
    checkout(h, "r5", "c1")


# ---------------------------------------------------------------- crypt


def test_crypt_needs_the_license_available_not_one_backend_holding_the_handle() -> None:
    """The license is on b1 and b2 only: with b2 down it is not available (1 of 2 needed),
    although b1 holds the handle and leadership is confirmed by b1 and b3."""
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.set_license("b3", None, KEY)
    with_crypto(h)
    h.promote()
    handle = checkout(h, "r1", "c1")
    assert h.call("crypt", "r2", "c1", handle, "encrypt", b"abc").result is not None
    h.down.add("b2")
    h.advance(BACKEND_TIMEOUT + PROBE_INTERVAL)
    assert h.leader._leadership_confirmed(h.now)
    reply = h.call("crypt", "r3", "c1", handle, "encrypt", b"abc")
    assert reply.error == ErrorCode.QUORUM_LOST, reply


def test_a_crypt_call_whose_attempts_are_lost_gets_exactly_one_reply() -> None:
    """Three lost attempts, then a demote: the demote must not answer the call again."""
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    with_crypto(h)
    h.promote()
    handle = checkout(h, "r1", "c1")
    h.lose += [("sa", name, Crypt) for name in NAMES]
    h.run(ask(h, h.leader, "crypt", "r2", "c1", handle, "hmac", b"x"), "sa")
    h.advance(3 * BACKEND_TIMEOUT + 0.5)
    h.run(h.leader.demote(h.now), "sa")
    replies = [r for r in h.replies if r.rid == "r2"]
    assert len(replies) == 1, replies
    assert replies[0].error == ErrorCode.QUORUM_LOST
    assert not h.leader._crypt.in_flight


def test_a_crypt_call_rejected_by_a_newer_epoch_gets_exactly_one_reply() -> None:
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    with_crypto(h)
    sb = h.add_server("sb")
    h.promote("sa")
    handle = checkout(h, "r1", "c1")
    h.run(sb.promote(h.now, force=True), "sb")  # the backends promise sb's epoch at once
    h.run(ask(h, h.leader, "crypt", "r2", "c1", handle, "hmac", b"x"), "sa")
    assert h.leader.role == Role.FENCED
    replies = [r for r in h.replies if r.rid == "r2"]
    assert [r.error for r in replies] == [ErrorCode.NOT_ACTIVE]
