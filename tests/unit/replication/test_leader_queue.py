"""Queued checkouts in the leader (issue 18, RLM's queuing): answered at once with the
position, granted in queue order through the ordinary admission and log as seats free,
never twice for one request id, dropped by a failover and when not asked again."""

from __future__ import annotations

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
from tmr.policy import parse_policy
from tmr.protocol.results import CheckoutResult, QueuedResult
from tmr.replication.leader import ClientReply, Leader
from tmr.replication.queue import QUEUE_HOLD, QUEUE_RETRY
from tmr.replication.types import LicenseInfo

KEY = (6000123, 42)


def active(quantity: int) -> Harness:
    h = Harness({KEY: LicenseInfo(7, quantity, True)})
    h.promote()
    return h


def ask(
    h: Harness, client: str, seats: int = 1, wait: float | None = 60.0, server: str = "sa"
) -> ClientReply:
    """One checkout (request id r-CLIENT, so every ask of a client is a retry)."""
    leader = h.leaders[server]
    before = len(h.replies_of.get(server, []))
    fx = leader.checkout(
        "tok", f"r-{client}", client, KEY[0], KEY[1], seats, h.now,
        owner=f"key-of-{client}", user=f"u-{client}", wait=wait,
    )  # fmt: skip
    h.run(fx, server)
    h.advance(0.2)
    (reply,) = h.replies_of[server][before:]
    return reply


def position(reply: ClientReply) -> int:
    assert reply.ok and isinstance(reply.result, QueuedResult), reply
    return reply.result.position


def handle(reply: ClientReply) -> str:
    assert reply.ok and isinstance(reply.result, CheckoutResult), reply
    return reply.result.handle


def release(h: Harness, client: str, granted: str) -> None:
    reply = h.call("release", f"rel-{client}", client, granted)
    assert reply.ok, reply


def seats(h: Harness, backend: str = "b1") -> int:
    log = h.acceptors[backend].state.products.get(KEY)
    return log.seats() if log else 0


def test_queued_then_granted_in_order_as_seats_free() -> None:
    h = active(quantity=2)
    h1, h2 = handle(ask(h, "c1")), handle(ask(h, "c2"))
    assert position(ask(h, "c3")) == 1
    assert position(ask(h, "c4")) == 2
    reply = ask(h, "c3")
    assert reply.result == QueuedResult(True, 1, QUEUE_HOLD, QUEUE_RETRY)
    # No checkout without wait overtakes the queue
    assert ask(h, "c5", wait=None).error == ErrorCode.NO_LICENSE_AVAILABLE
    release(h, "c1", h1)
    # A seat is free, but c4 is behind c3: it stays queued, and so does a plain checkout
    assert position(ask(h, "c4")) == 2
    assert ask(h, "c6", wait=None).error == ErrorCode.NO_LICENSE_AVAILABLE
    g3 = handle(ask(h, "c3"))
    assert position(ask(h, "c4")) == 1
    release(h, "c2", h2)
    g4 = handle(ask(h, "c4"))
    assert seats(h) == 2 and {g3, g4} <= set(h.acceptors["b2"].state.products[KEY].handles)
    granted = [e["rid"] for e in h.events if e["event"] == "handle_granted" and e["queued"]]
    assert granted == ["r-c3", "r-c4"]
    assert h.leader.queue_view(h.now) == []


def test_a_large_request_is_not_starved_by_later_small_ones() -> None:
    h = active(quantity=3)
    h1 = handle(ask(h, "c1"))
    assert position(ask(h, "big", seats=3)) == 1
    # Two seats are free, but they are held for the head: later small checkouts wait
    assert ask(h, "small", wait=None).error == ErrorCode.NO_LICENSE_AVAILABLE
    assert "held for queued checkouts" in ask(h, "small2", wait=None).message
    assert position(ask(h, "small3")) == 2
    release(h, "c1", h1)
    big = ask(h, "big", seats=3)
    assert isinstance(big.result, CheckoutResult) and big.result.seats == 3, big
    assert position(ask(h, "small3")) == 1 and seats(h) == 3


def test_a_retried_request_id_never_takes_two_seats() -> None:
    h = active(quantity=1)
    h1 = handle(ask(h, "c1"))
    assert position(ask(h, "c2")) == 1
    release(h, "c1", h1)
    # The grant and a retry of it in the same turn, before the commit
    leader = h.leader
    before = len(h.replies)
    for _ in range(3):
        h.run(leader.checkout("tok", "r-c2", "c2", KEY[0], KEY[1], 1, h.now,
                              owner="key-of-c2", wait=60.0))  # fmt: skip
    h.advance(0.3)
    answers = h.replies[before:]
    assert len(answers) == 3 and len({handle(r) for r in answers}) == 1
    assert handle(ask(h, "c2")) == handle(answers[0])  # and a later retry
    assert seats(h) == 1 and len(h.acceptors["b1"].state.products[KEY].handles) == 1
    # Another key with the same client id and request id is another request
    other = leader.checkout("tok", "r-c2", "c2", KEY[0], KEY[1], 1, h.now, owner="evil", wait=5.0)
    h.run(other)
    assert position(h.replies[-1]) == 1


def test_a_place_not_asked_again_is_dropped() -> None:
    h = active(quantity=1)
    handle(ask(h, "c1"))
    assert position(ask(h, "c2")) == 1
    assert position(ask(h, "c3")) == 2
    h.advance(QUEUE_HOLD / 2)
    assert position(ask(h, "c3")) == 2  # c3 refreshes its place, c2 does not
    h.advance(QUEUE_HOLD / 2 + 0.3)
    assert [(r["client_id"], r["position"]) for r in h.leader.queue_view(h.now)] == [("c3", 1)]
    dropped = [e for e in h.events if e["event"] == "checkout_unqueued"]
    assert [(e["client_id"], e["why"]) for e in dropped] == [("c2", "not asked again in time")]
    # c2 asks again later: it queues again, at the tail
    assert position(ask(h, "c2")) == 2


def test_the_last_ask_without_wait_is_refused_and_leaves_the_queue() -> None:
    h = active(quantity=1)
    handle(ask(h, "c1"))
    assert position(ask(h, "c2")) == 1
    assert position(ask(h, "c3")) == 2
    assert ask(h, "c2", wait=None).error == ErrorCode.NO_LICENSE_AVAILABLE
    assert position(ask(h, "c3")) == 1
    assert h.leader.denials[KEY] == 1  # queued answers are not denials


def test_the_clients_wait_bounds_the_place() -> None:
    h = active(quantity=1)
    handle(ask(h, "c1"))
    reply = ask(h, "c2", wait=1.0)
    assert position(reply) == 1 and isinstance(reply.result, QueuedResult)
    assert reply.result.hold == 1.0
    h.advance(1.0)
    assert h.leader.queue_view(h.now) == []


def test_policy_denial_of_a_queued_checkout_drops_its_place() -> None:
    h = active(quantity=1)
    handle(ask(h, "c1"))
    assert position(ask(h, "c2")) == 1
    h.leader.policy = parse_policy({"licenses": {"6000123:42": {"exclude": ["user:u-c2"]}}})
    assert ask(h, "c2").error == ErrorCode.POLICY_DENIED
    assert h.leader.queue_view(h.now) == []


def test_a_failover_drops_the_queue_and_clients_queue_again() -> None:
    h = active(quantity=1)
    handle(ask(h, "c1"))
    assert position(ask(h, "c2")) == 1
    assert position(ask(h, "c3")) == 2
    sb: Leader = h.add_server("sb")
    h.stopped.add("sa")
    h.promote("sb", settle=3.0)
    assert sb.role.value == "active" and sb.queue_view(h.now) == []
    # The order on the new leader is the order of the clients' next asks
    assert position(ask(h, "c3", server="sb")) == 1
    assert position(ask(h, "c2", server="sb")) == 2
    # The adopted handle still holds the seat; the queue is served from it as before
    assert ask(h, "c4", wait=None, server="sb").error == ErrorCode.NO_LICENSE_AVAILABLE
