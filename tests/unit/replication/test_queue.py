"""The checkout queue of one term (replication/queue.py): FIFO per product, the
head-of-line rule, refresh and drop, position."""

from __future__ import annotations

from tmr.replication.queue import CheckoutQueue

A = (6000123, 42)
B = (6000123, 43)


def r(n: int) -> tuple[str, str, str]:
    return (f"key{n}", f"c{n}", f"r{n}")


def test_fifo_per_product_and_position() -> None:
    q = CheckoutQueue(hold=5.0)
    for n in (1, 2, 3):
        assert q.ask(A, r(n), n, 0.0, 60.0, wall=100.0 + n) is not None
    q.ask(B, r(9), 1, 0.0, 60.0, wall=0.0)
    assert [q.position(A, r(n)) for n in (1, 2, 3)] == [1, 2, 3]
    assert q.position(B, r(9)) == 1
    assert q.position(A, r(9)) == 0  # queued for another product only
    # a refresh keeps the place (and the seats first asked for)
    q.ask(A, r(1), 7, 1.0, 60.0, wall=999.0)
    assert [q.position(A, r(n)) for n in (1, 2, 3)] == [1, 2, 3]
    place = q.get(A, r(1))
    assert place is not None and (place.seats, place.since) == (1, 101.0)
    q.remove(A, r(1))
    assert [q.position(A, r(n)) for n in (2, 3)] == [1, 2]
    assert len(q) == 3


def test_head_of_line_rule() -> None:
    q = CheckoutQueue()
    assert q.seats_ahead(A, r(1)) == 0  # empty queue: nothing held back
    q.ask(A, r(1), 4, 0.0, 60.0, wall=0.0)
    q.ask(A, r(2), 1, 0.0, 60.0, wall=0.0)
    assert q.seats_ahead(A, r(1)) == 0  # the head: only its own seats count
    assert q.seats_ahead(A, r(2)) is None  # queued behind the head: not admitted
    assert q.seats_ahead(A, r(3)) == 5  # not queued: every place's seats are held back
    assert q.seats_ahead(B, r(3)) == 0  # another product's queue holds nothing back


def test_a_place_not_asked_again_is_dropped() -> None:
    q = CheckoutQueue(hold=5.0)
    q.ask(A, r(1), 1, 0.0, 60.0, wall=0.0)
    q.ask(A, r(2), 1, 0.0, 2.0, wall=0.0)  # the client waits 2 s only: kept 2 s
    q.ask(A, r(3), 1, 0.0, 60.0, wall=0.0)
    assert q.drop_expired(1.9) == []
    assert [p.request for p in q.drop_expired(2.0)] == [r(2)]
    q.ask(A, r(1), 1, 4.0, 60.0, wall=0.0)  # refreshed: kept until 9 s
    assert [p.request for p in q.drop_expired(5.0)] == [r(3)]
    assert q.position(A, r(1)) == 1
    assert [p.request for p in q.drop_expired(9.0)] == [r(1)]
    assert len(q) == 0 and q.view(9.0) == []


def test_full_queue_refuses_a_new_place_not_a_refresh() -> None:
    q = CheckoutQueue(limit=2)
    assert q.ask(A, r(1), 1, 0.0, 60.0, wall=0.0) is not None
    assert q.ask(A, r(2), 1, 0.0, 60.0, wall=0.0) is not None
    assert q.ask(A, r(3), 1, 0.0, 60.0, wall=0.0) is None
    assert q.ask(A, r(2), 1, 1.0, 60.0, wall=0.0) is not None
    assert q.ask(B, r(3), 1, 0.0, 60.0, wall=0.0) is not None  # per product


def test_view_in_queue_order() -> None:
    q = CheckoutQueue(hold=5.0)
    q.ask(A, r(1), 2, 0.0, 60.0, wall=10.0, user="alice", host="ws-1", pid=7)
    q.ask(A, r(2), 1, 1.0, 60.0, wall=11.0)
    rows = q.view(2.0)
    assert [(x["position"], x["client_id"], x["seats"]) for x in rows] == [
        (1, "c1", 2),
        (2, "c2", 1),
    ]
    assert (rows[0]["user"], rows[0]["host"], rows[0]["pid"], rows[0]["since"]) == (
        "alice",
        "ws-1",
        7,
        10.0,
    )
    assert rows[0]["hold_left"] == 3.0 and rows[1]["hold_left"] == 4.0
