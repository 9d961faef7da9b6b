"""Group commit in the leader: small batches wait for the entry in flight, big ones pipeline."""

from __future__ import annotations

from tests.unit.replication.harness import Harness
from tmr.replication.leader import PIPELINE, PIPELINE_MIN_OPS, Effects
from tmr.replication.messages import Accept
from tmr.replication.types import Grant, LicenseInfo

KEY = (6000123, 42)


def active() -> Harness:
    h = Harness({KEY: LicenseInfo(7, 10_000, True)})
    h.promote()
    h.leader.auto_pump = False
    return h


def checkouts(h: Harness, first: int, n: int) -> None:
    for i in range(first, first + n):
        fx = h.leader.checkout(
            ("tok", True), f"r{i}", f"c{i}", KEY[0], KEY[1], 1, h.now, owner=f"k{i}"
        )
        assert not fx.send and not fx.replies  # queued for the next pump


def accepts(fx: Effects) -> list[tuple[str, Accept]]:
    out = [(name, msg) for name, msg in fx.send if isinstance(msg, Accept)]
    assert len(out) == len(fx.send)
    return out


def deliver(h: Harness, sent: list[tuple[str, Accept]]) -> Effects:
    """Let the backends commit `sent` and hand their answers to the leader."""
    fx = Effects()
    for name, msg in sent:
        acc = h.acceptors[name]
        step = acc.handle(msg, h.now)
        acc.committed(step)
        fx.extend(h.leader.on_reply(name, step.reply, h.now))
    return fx


def grants(sent: list[tuple[str, Accept]]) -> list[int]:
    """Grants per entry of the ACCEPT sent to b1."""
    (msg,) = [m for name, m in sent if name == "b1"]
    return [sum(isinstance(op, Grant) for op in e.ops) for e in msg.entries]


def test_a_small_batch_waits_for_the_entry_in_flight_then_goes_at_once() -> None:
    h = active()
    checkouts(h, 0, 1)
    first = accepts(h.leader.pump(h.now))
    assert grants(first) == [1] and len(first) == 3  # nothing in flight: sent at once
    checkouts(h, 1, PIPELINE_MIN_OPS - 1)
    assert h.leader.pump(h.now).send == []  # small: it waits, and grows
    fx = deliver(h, first)
    assert [r.rid for r in fx.replies] == ["r0"]  # the first entry is committed
    second = accepts(h.leader.pump(h.now))
    assert grants(second) == [PIPELINE_MIN_OPS - 1]  # the whole batch in one entry
    fx = deliver(h, second)
    assert sorted(r.rid for r in fx.replies) == sorted(f"r{i}" for i in range(1, PIPELINE_MIN_OPS))


def test_a_big_batch_is_pipelined_behind_the_entry_in_flight_up_to_the_limit() -> None:
    h = active()
    checkouts(h, 0, 1)
    in_flight = [accepts(h.leader.pump(h.now))]
    n = 1
    for _ in range(PIPELINE - 1):
        checkouts(h, n, PIPELINE_MIN_OPS)
        n += PIPELINE_MIN_OPS
        sent = accepts(h.leader.pump(h.now))
        assert grants(sent) == [PIPELINE_MIN_OPS]  # big enough: its own round at once
        in_flight.append(sent)
    checkouts(h, n, PIPELINE_MIN_OPS)  # PIPELINE entries uncommitted: this one waits
    assert h.leader.pump(h.now).send == []
    replies = []
    for sent in in_flight:
        replies += deliver(h, sent).replies
    assert len(replies) == n
    last = accepts(h.leader.pump(h.now))
    assert grants(last) == [PIPELINE_MIN_OPS]
    assert len(deliver(h, last).replies) == PIPELINE_MIN_OPS


def test_an_answer_about_a_product_the_leader_does_not_know_is_ignored_by_the_pump() -> None:
    """A backend's ACCEPTED may name a product this term has no log of (another leader's):
    the pump's list of products to visit (`Leader._pump`) takes only known ones."""
    from dataclasses import replace

    from tmr.replication.messages import Accepted, EntryResult, EntryStatus

    h = active()
    checkouts(h, 0, 1)
    sent = accepts(h.leader.pump(h.now))
    name, msg = sent[0]
    acc = h.acceptors[name]
    step = acc.handle(msg, h.now)
    acc.committed(step)
    reply = step.reply
    assert isinstance(reply, Accepted)
    other = replace(reply, results={**reply.results, (1, 1): EntryResult(EntryStatus.OK, 3)})
    h.run(h.leader.on_reply(name, other, h.now))
    h.run(deliver(h, sent[1:]))
    h.run(h.leader.pump(h.now))  # no KeyError for (1, 1)
    assert [r.error for r in h.replies] == [None]
