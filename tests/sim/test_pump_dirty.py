"""`Leader._pump` visits only the products that may have something to send (docs/design.md
§5): over seeded simulations (crashes, wipes, failovers, refusals, license updates), the
leader sends exactly the messages, in the same order, that it sends when every pump visits
every product; so no product with pending work is ever skipped. The tick's scans for refused
grants and overdue answers walk the same list (`Leader._unsettled`) and are compared too."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sim.simulation import InvariantViolation, Simulation
from tmr.replication import productlog
from tmr.replication.backends import Backend, Outstanding
from tmr.replication.effects import Effects
from tmr.replication.leader import Leader
from tmr.replication.messages import PeerRequest

SEEDS = range(40)


def sends(
    seed: int, monkeypatch: pytest.MonkeyPatch, *, dirty: bool
) -> tuple[list[Any], list[str]]:
    """Every message the servers of the simulation of `seed` send, and its log."""
    sent: list[Any] = []
    send = Leader._send

    def record(self: Leader, b: Backend, msg: PeerRequest, out: Outstanding, fx: Effects) -> None:
        sent.append((self.cfg.server_id, b.name, repr(msg)))
        send(self, b, msg, out, fx)

    with monkeypatch.context() as m:
        m.setattr(Leader, "_send", record)
        m.setattr(Leader, "DIRTY_PUMP", dirty)
        sim = Simulation(seed)
        sim.run()
    return sent, sim.log


@pytest.mark.parametrize("seed", SEEDS)
def test_the_dirty_pump_sends_what_the_full_pump_sends(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = sends(seed, monkeypatch, dirty=False)
    assert len(full[0]) > 100  # the run did replicate
    assert sends(seed, monkeypatch, dirty=True) == full


def test_the_comparison_catches_a_product_left_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pump that drops every product from its list after one visit (even one whose
    entries are not all sent or acknowledged) sends otherwise: the comparison above fails."""
    # Seeds where leaving a product off changes what is sent (9 of the first 60 seeds).
    fulls = {seed: sends(seed, monkeypatch, dirty=False) for seed in range(8, 22)}
    monkeypatch.setattr(productlog, "settled", lambda p, backends: True)
    assert any(differs(seed, monkeypatch, full) for seed, full in fulls.items())


def test_the_comparison_catches_a_tick_scan_that_skips_a_product(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tick scans that look at no product (no refused grant aborted, no overdue client
    answered) break the simulation's liveness checks or send otherwise (10 of the first 20
    seeds, 22 of 40, since the clients heartbeat as the SDK does through faults)."""
    fulls = {seed: sends(seed, monkeypatch, dirty=False) for seed in range(20)}
    scan = Leader._unsettled
    monkeypatch.setattr(Leader, "_unsettled", lambda self: [] if self.DIRTY_PUMP else scan(self))
    caught = [seed for seed, full in fulls.items() if differs(seed, monkeypatch, full)]
    assert len(caught) >= 5, caught


def differs(seed: int, monkeypatch: pytest.MonkeyPatch, full: tuple[list[Any], list[str]]) -> bool:
    """The dirty pump's run of `seed` sends otherwise than `full`, or breaks an invariant."""
    try:
        return sends(seed, monkeypatch, dirty=True) != full
    except InvariantViolation:
        return True
