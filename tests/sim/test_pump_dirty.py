"""`Leader._pump` visits only the products that may have something to send (docs/design.md
§5): over seeded simulations (crashes, wipes, failovers, refusals, license updates), the
leader sends exactly the messages, in the same order, that it sends when every pump visits
every product; so no product with pending work is ever skipped."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sim.simulation import Simulation
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
    full = sends(3, monkeypatch, dirty=False)
    monkeypatch.setattr(Leader, "_settled", lambda self, p: True)
    assert sends(3, monkeypatch, dirty=True) != full
