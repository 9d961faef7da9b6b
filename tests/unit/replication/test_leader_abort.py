"""A grant whose commit is in doubt and that a live backend refuses is aborted (docs/design.md
§6): the log moves on with the two good backends instead of waiting for the third.

b1 and b2 hold #8 (LQ 3), b3 still #7 (LQ 2); two seats are held. A third checkout is
admitted (LQ 3) and proposed; b1 accepts it, b3 refuses it (above its LQ 2), and b2 stops
before it acknowledges. The entry cannot commit with b1 and b3, and every later entry waits
behind it. The leader proposes, at the next seq, a snapshot of the table without that grant:
b1 and b3 accept it, it commits, and the grant's client is told NO_LICENSE_AVAILABLE (the
seats the answering backends agree on are in use); it was never told OK.
"""

from __future__ import annotations

from typing import Any

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
from tmr.protocol.results import RELEASED, CheckoutResult
from tmr.replication.leader import ClientReply
from tmr.replication.messages import Accept
from tmr.replication.types import Grant, LicenseInfo

KEY = (6000123, 42)
BOUND = 1.0 + 0.25  # backend_timeout + one probe interval (the harness's)


def seats(h: Harness, backend: str) -> int:
    log = h.acceptors[backend].state.products.get(KEY)
    return log.seats() if log else 0


def send(h: Harness, method: str, *args: Any, client: str) -> int:
    """One request to "sa", not waited for; the index of its answer in `h.replies`."""
    before = len(h.replies)
    h.run(getattr(h.leader, method)("tok", *args, h.now, owner=f"key-of-{client}"))
    return before


def answers(h: Harness, since: int, rid: str) -> list[ClientReply]:
    return [r for r in h.replies[since:] if r.rid == rid]


def two_seats_held_mid_update() -> tuple[Harness, list[str]]:
    h = Harness({KEY: LicenseInfo(8, 3, True)})
    h.set_license("b3", LicenseInfo(7, 2, True), KEY)
    h.promote()
    handles = []
    for i in range(2):
        reply = h.call("checkout", f"r{i}", f"c{i}", KEY[0], KEY[1], 1)
        assert reply.ok and isinstance(reply.result, CheckoutResult), reply
        handles.append(reply.result.handle)
    assert (seats(h, "b1"), seats(h, "b2"), seats(h, "b3")) == (2, 2, 2)
    return h, handles


def test_a_refused_grant_is_aborted_when_the_other_backend_stops() -> None:
    h, handles = two_seats_held_mid_update()
    h.down.add("b2")  # stops before it acknowledges the third seat
    start = len(h.replies)
    send(h, "checkout", "r2", "c2", KEY[0], KEY[1], 1, client="c2")
    assert seats(h, "b1") == 3 and seats(h, "b3") == 2  # b1 accepted, b3 refused
    send(h, "release", "q0", "c0", handles[0], client="c0")  # behind the stuck entry
    h.advance(BOUND)
    (released,) = answers(h, start, "q0")
    assert released.ok and released.result == RELEASED, released
    (denied,) = answers(h, start, "r2")
    assert denied.error == ErrorCode.NO_LICENSE_AVAILABLE, denied
    assert "b3" in denied.message, denied
    # The aborted grant is gone everywhere that answers; the release committed behind it.
    assert seats(h, "b1") == seats(h, "b3") == 1
    assert any(e["event"] == "grants_aborted" for e in h.events)
    p = h.leader._products[KEY]
    assert p.committed == p.seq and p.seats() == 1
    # Committed: the two grants, then the release through the abort's snapshot (not the
    # aborted grant).
    assert h.leader.ops_committed == 3, h.leader.ops_committed


def test_a_retry_after_the_abort_is_a_fresh_admission() -> None:
    h, handles = two_seats_held_mid_update()
    h.down.add("b2")
    start = send(h, "checkout", "r2", "c2", KEY[0], KEY[1], 1, client="c2")
    h.advance(BOUND)
    (denied,) = answers(h, start, "r2")
    assert denied.error == ErrorCode.NO_LICENSE_AVAILABLE, denied
    aborted = next(e for e in h.events if e["event"] == "grants_aborted")["handles"][0]
    # The same request id again: not answered from the aborted handle; with b2 down the
    # effective LQ is 2 (#7) and both seats are held.
    again = h.call("checkout", "r2", "c2", KEY[0], KEY[1], 1)
    assert again.error == ErrorCode.NO_LICENSE_AVAILABLE, again
    released = h.call("release", "q0", "c0", handles[0])
    assert released.ok, released
    granted = h.call("checkout", "r2", "c2", KEY[0], KEY[1], 1)
    assert granted.ok and isinstance(granted.result, CheckoutResult), granted
    assert granted.result.handle != aborted
    assert seats(h, "b1") == seats(h, "b3") == 2


def test_a_late_acknowledgement_of_the_aborted_entry_answers_nothing() -> None:
    """b2 was only slow: it accepted the third seat, and its acknowledgement arrives after the
    abort (the leader aborted after waiting half of backend_timeout), before the abort's
    snapshot committed. With b1's it would be a quorum for the aborted entry: it must not
    count, and the grant is never answered OK."""
    h, _ = two_seats_held_mid_update()
    base = h.leader._products[KEY].committed
    fx = h.leader.checkout("tok", "r2", "c2", KEY[0], KEY[1], 1, h.now, owner="key-of-c2")
    to_b2 = [m for name, m in fx.send if name == "b2" and isinstance(m, Accept)]
    h.down.add("b2")
    h.run(fx)
    (accept,) = to_b2
    assert any(isinstance(op, Grant) for e in accept.entries for op in e.ops)
    h.cut.add(("sa", "b3"))  # the abort's snapshot reaches b1 only: it does not commit yet
    h.advance(0.6)  # more than half of backend_timeout: aborted; b2 not yet timed out
    assert any(e["event"] == "grants_aborted" for e in h.events)
    step = h.acceptors["b2"].handle(accept, h.now)  # b2 accepts the aborted entry late
    h.acceptors["b2"].committed(step)
    assert seats(h, "b2") == 3
    h.run(h.leader.on_reply("b2", step.reply, h.now))
    p = h.leader._products[KEY]
    assert p.committed == base  # b1 and b2 hold the aborted entry: no commit of it
    h.cut.clear()
    h.down.discard("b2")
    h.advance(BOUND)
    got = [r for r in h.replies if r.rid == "r2"]
    assert got and all(not r.ok for r in got), got
    assert p.committed == p.seq and p.seats() == 2
    # b2 is back and took the abort's table (its third seat is dropped).
    assert seats(h, "b2") == 2 and seats(h, "b1") == 2 and seats(h, "b3") == 2


def test_a_pause_of_the_server_does_not_count_as_waiting_for_the_acknowledgement() -> None:
    """b3 refuses the third seat and b2's acknowledgement is still on its way when this
    server is paused for 2 s (a VM migration). The wait for b2 counts only time awake, as a
    backend's timeout does: the first tick after the pause does not abort the grant, and b2's
    acknowledgement, read after it, commits it with b1's."""
    h, _ = two_seats_held_mid_update()
    fx = h.leader.checkout("tok", "r2", "c2", KEY[0], KEY[1], 1, h.now, owner="key-of-c2")
    (accept,) = [m for name, m in fx.send if name == "b2" and isinstance(m, Accept)]
    h.down.add("b2")  # its ACCEPT is delivered below, after the pause
    h.run(fx)
    h.down.discard("b2")
    assert seats(h, "b1") == 3 and seats(h, "b3") == 2  # b1 accepted, b3 refused
    h.now += 2.0  # paused: no tick, nothing read
    h.run(h.leader.tick(h.now))  # the first turn after the pause
    assert not any(e["event"] == "grants_aborted" for e in h.events), h.events
    step = h.acceptors["b2"].handle(accept, h.now)
    h.acceptors["b2"].committed(step)
    h.run(h.leader.on_reply("b2", step.reply, h.now))
    (granted,) = [r for r in h.replies if r.rid == "r2"]
    assert granted.ok and isinstance(granted.result, CheckoutResult), granted
    h.advance(BOUND)
    assert not any(e["event"] == "grants_aborted" for e in h.events), h.events
    assert seats(h, "b1") == seats(h, "b2") == 3
