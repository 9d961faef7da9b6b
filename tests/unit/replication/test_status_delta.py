"""Probes on a site with many products (issue 17, docs/design.md §5 Probes): a backend answers a
probe with only the products changed since the state the server holds (`Probe.have`,
`Status.since`), everything after a restart, a state reload or a gap; the server merges the
delta, ignores one it cannot apply, and an active server reconciles a backend only when a
status changes something (`Leader.QUIET_STATUS`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.unit.replication.harness import Harness
from tmr.replication import productlog
from tmr.replication.acceptor import Acceptor, AcceptorState, ProductWrite, Step, Write
from tmr.replication.backends import Backend
from tmr.replication.leader import Leader, Role
from tmr.replication.messages import Accept, Probe, Status
from tmr.replication.productlog import Product
from tmr.replication.types import (
    NO_FLOOR,
    Epoch,
    Floor,
    Grant,
    HandleRecord,
    LicenseInfo,
    ProductKey,
    Version,
)

E1 = Epoch(1, "sa")
KEYS = [(6_000_001, i) for i in range(1000)]
LIC = LicenseInfo(7, 100, True)


def status(acc: Acceptor, have: tuple[str, int] | None = None) -> Status:
    step = acc.handle(Probe(1, have=have), 0.0)
    acc.committed(step)
    assert isinstance(step.reply, Status)
    return step.reply


def grant(acc: Acceptor, key: ProductKey, seq: int, handle: str) -> None:
    rec = HandleRecord(handle, key[0], key[1], 1, "c", handle, 0.0)
    write = Write(products=(ProductWrite(key, Version(E1, seq), (Grant(rec),)),))
    acc.committed(Step(Status(0, "b1", E1, True, {}, {}, {}), write))


def site() -> Acceptor:
    acc = Acceptor("b1", AcceptorState(E1, True), dict.fromkeys(KEYS, LIC))
    for i, key in enumerate(KEYS):
        grant(acc, key, 1, f"h{i}")
    return acc


def test_a_probe_without_state_gets_everything() -> None:
    st = status(site())
    assert st.since is None and st.state is not None
    assert len(st.versions) == len(st.seats) == len(st.licenses) == len(KEYS)


def test_nothing_changed_sends_no_product() -> None:
    acc = site()
    token = status(acc).state
    st = status(acc, token)
    assert st.since == token[1] and st.state == token  # type: ignore[index]
    assert st.versions == {} and st.seats == {} and st.licenses == {} and st.floors == {}
    assert st.gone == ()


def test_a_delta_holds_the_products_changed_since_the_state_the_server_holds() -> None:
    acc = site()
    t0 = status(acc).state
    grant(acc, KEYS[5], 2, "x5")
    t1 = status(acc, t0).state
    grant(acc, KEYS[9], 2, "x9")
    # The server did not get the status at t1 (lost): it still says t0 and gets both.
    st = status(acc, t0)
    assert set(st.versions) == {KEYS[5], KEYS[9]} and st.seats[KEYS[9]] == 2
    assert st.versions[KEYS[9]] == Version(E1, 2) and set(st.licenses) == set(st.versions)
    st = status(acc, t1)
    assert set(st.versions) == {KEYS[9]}


def test_copies_changed_or_removed_are_in_the_delta() -> None:
    acc = site()
    t0 = status(acc).state
    copies = dict(acc.licenses)
    del copies[KEYS[1]]
    copies[KEYS[2]] = replace(LIC, quantity=50)
    copies[(6_000_002, 1)] = LIC  # a product without a log yet
    acc.set_licenses(copies)
    st = status(acc, t0)
    assert st.gone == (KEYS[1],)
    assert st.licenses == {KEYS[2]: replace(LIC, quantity=50), (6_000_002, 1): LIC}
    assert set(st.versions) == {KEYS[1], KEYS[2]}  # their logs, as they are
    acc.set_licenses(copies)  # the same copies again: nothing changed
    assert status(acc, st.state).licenses == {}


def test_a_restart_or_a_reload_of_the_state_sends_everything() -> None:
    acc = site()
    token = status(acc).state
    assert token is not None
    restarted = Acceptor("b1", acc.state.copy(), acc.licenses)
    assert status(restarted, token).since is None  # a new base: the old token means nothing
    acc.state = acc.state.copy()  # reloaded from disk after a failed commit
    assert status(acc, token).since is None
    assert status(acc, (token[0], token[1] + 5)).since is None  # a state it never had


class TestServer:
    """The leader's side, on the synchronous harness with many products."""

    def harness(self) -> Harness:
        h = Harness(dict.fromkeys(KEYS[:200], LIC))
        h.promote()
        assert h.leader.role == Role.ACTIVE
        h.advance(1.0)
        return h

    def test_the_server_holds_every_backends_state_through_deltas(self) -> None:
        h = self.harness()
        h.call("checkout", "r1", "c1", *KEYS[3], 1)
        h.advance(0.6)
        for b in h.leader.backends:
            whole = status(h.acceptors[b.name])
            assert b.state == whole.state
            assert b.versions == whole.versions and b.licenses == whole.licenses
            assert b.floors == {k: f for k, f in whole.floors.items() if f != NO_FLOOR}
            assert b.versions[KEYS[3]].seq >= 1

    def test_probes_say_what_the_server_holds_and_statuses_then_carry_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        h = self.harness()
        seen: list[Status] = []
        handle = Acceptor.handle

        def spy(acc: Acceptor, req: object, now: float) -> Step:
            step = handle(acc, req, now)  # type: ignore[arg-type]
            if isinstance(step.reply, Status):
                assert isinstance(req, Probe) and req.have is not None
                seen.append(step.reply)
            return step

        monkeypatch.setattr(Acceptor, "handle", spy)
        h.advance(1.0)
        assert len(seen) >= 9
        assert all(s.since is not None and not s.versions and not s.licenses for s in seen)

    def test_an_unchanged_status_walks_no_product(self, monkeypatch: pytest.MonkeyPatch) -> None:
        h = self.harness()
        walked: list[tuple[str, int]] = []  # (backend, products resumed)
        resume = productlog.resume

        def spy(b: Backend, products: dict[ProductKey, Product], *args: Any) -> None:
            keys = args[2] if len(args) > 2 else None
            walked.append((b.name, len(products) if keys is None else len(set(keys))))
            resume(b, products, *args)

        monkeypatch.setattr(productlog, "resume", spy)
        h.advance(1.0)
        assert walked and {n for _, n in walked} == {0}  # 12 statuses, nothing changed
        # A checkout: the product's version changes on every backend, and only it is resumed.
        walked.clear()
        h.call("checkout", "r1", "c1", *KEYS[3], 1)
        h.advance(0.5)
        assert {n for _, n in walked} == {0, 1}
        # A lost ACCEPT (its timeout) disturbs what the leader knows of b1: the next status
        # reconciles every product of it although the backend's state did not change.
        walked.clear()
        h.lose.append(("sa", "b1", Accept))
        h.call("checkout", "r2", "c2", *KEYS[4], 1)
        h.advance(2.0)
        assert ("b1", 200) in walked and ("b2", 200) not in walked

    def test_a_delta_the_server_cannot_apply_is_ignored_and_it_asks_everything(self) -> None:
        h = self.harness()
        b = h.leader.backends[0]
        held = b.state
        assert held is not None
        versions = dict(b.versions)
        mid = 10_000
        foreign = Status(
            mid, b.name, E1, True, {KEYS[0]: Version(E1, 99)}, {KEYS[0]: 9}, {},
            state=("another-base", 5), since=3,
        )  # fmt: skip
        h.leader._probe(b, h.now, h.leader.tick(h.now))  # a probe in flight to answer
        mid = max(b.outstanding)
        fx = h.leader.on_reply(b.name, replace(foreign, mid=mid), h.now)
        assert fx.send == [] and b.state is None and b.versions == versions
        h.advance(0.5)  # the next probe says nothing is held: the status is whole again
        assert b.state is not None and b.state[0] != "another-base"
        assert b.versions[KEYS[0]] != Version(E1, 99)

    def test_a_delta_to_the_state_held_changes_nothing_and_still_answers(self) -> None:
        """Every change on a backend is a new generation, so a delta that ends at the state
        the server holds carries nothing new: entries in it that differ (a lying or broken
        peer) are not taken, since no later delta would correct them; the status still
        counts as the backend's answer."""
        h = self.harness()
        b = h.leader.backends[0]
        held = b.state
        assert held is not None and held[1] >= 1
        versions = dict(b.versions)
        h.leader._probe(b, h.now, h.leader.tick(h.now))
        mid = max(b.outstanding)
        sent_at = b.outstanding[mid].sent_at
        lie = Status(
            mid, b.name, E1, True, {KEYS[0]: Version(E1, 99)}, {KEYS[0]: 9}, {},
            state=held, since=held[1] - 1,
        )  # fmt: skip
        h.leader.on_reply(b.name, lie, h.now)
        assert b.state == held and b.versions == versions
        assert b.confirmed_at == sent_at and b.status_sent_at == sent_at
        h.advance(0.5)
        assert b.versions == status(h.acceptors[b.name]).versions

    def test_a_floor_raised_on_a_backend_reaches_the_server_in_a_delta(self) -> None:
        h = self.harness()
        acc = h.acceptors["b2"]
        log = acc.state.products[KEYS[7]]
        write = Write(
            products=(ProductWrite(KEYS[7], log.version, replace=(), floor=Floor(9, 0.0)),)
        )
        acc.committed(Step(Status(0, "b2", E1, True, {}, {}, {}), write))
        h.advance(0.5)
        b2 = next(b for b in h.leader.backends if b.name == "b2")
        assert b2.floors == {KEYS[7]: Floor(9, 0.0)}


class TestRollingUpgrade:
    """Mixed versions during a rolling upgrade: nothing is negotiated. A server of before
    this exchange sends no `have` and gets whole statuses; a backend of before ignores
    `have` (an extra map key its decoder skips) and sends whole statuses without a state,
    which the server takes whole as before. Both serve."""

    def serve(self, h: Harness) -> None:
        h.promote()
        assert h.leader.role == Role.ACTIVE
        assert h.call("checkout", "r1", "c1", *KEYS[3], 1).ok
        h.advance(1.0)
        for b in h.leader.backends:
            assert b.versions[KEYS[3]] == h.acceptors[b.name].state.products[KEYS[3]].version

    def test_a_new_server_with_old_backends(self, monkeypatch: pytest.MonkeyPatch) -> None:
        handle = Acceptor.handle

        def old(acc: Acceptor, req: object, now: float) -> Step:
            if isinstance(req, Probe):
                req = replace(req, have=None)
            step = handle(acc, req, now)  # type: ignore[arg-type]
            if isinstance(step.reply, Status):
                step = replace(step, reply=replace(step.reply, state=None))
            return step

        monkeypatch.setattr(Acceptor, "handle", old)
        h = Harness(dict.fromkeys(KEYS[:50], LIC))
        self.serve(h)
        assert all(b.state is None for b in h.leader.backends)

    def test_an_old_server_with_new_backends(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seen: list[Status] = []
        handle = Acceptor.handle

        def spy(acc: Acceptor, req: object, now: float) -> Step:
            step = handle(acc, req, now)  # type: ignore[arg-type]
            if isinstance(step.reply, Status):
                seen.append(step.reply)
            return step

        monkeypatch.setattr(Acceptor, "handle", spy)
        send = Leader._send

        def old_probe(self: Leader, b: Backend, msg: Any, out: Any, fx: Any) -> None:
            send(self, b, replace(msg, have=None) if isinstance(msg, Probe) else msg, out, fx)

        monkeypatch.setattr(Leader, "_send", old_probe)
        h = Harness(dict.fromkeys(KEYS[:50], LIC))
        self.serve(h)
        assert seen and all(s.since is None and len(s.licenses) == 50 for s in seen)
