"""Probes and statuses (docs/design.md §5, Probes): a backend answers a probe with only the
products changed since the state the server says it holds (`Probe.have`, `Status.since`).
Over seeded simulations (lost and duplicated messages, backend crashes and wipes that reset
the state's base, servers restarting with nothing held, failovers, license updates) the
servers send exactly the messages, in the same order, that they send when every status is
whole. The simulation itself checks that a server holding a state token holds what the
backend reported at it (P1, `Simulation.check_status`).

An active server reconciles a backend only when a status changes something
(`Leader.QUIET_STATUS`): that is not message-for-message the same as reconciling on every
status (a stale status no longer costs a backend a needless snapshot); the simulation's
invariants and liveness check it over its seeds (tests/sim/test_simulation.py), and
tests/unit/replication/test_status_delta.py that an unchanged status walks no product."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.sim.simulation import InvariantViolation, Simulation
from tmr.replication.acceptor import Acceptor, Step
from tmr.replication.backends import Backend, Outstanding
from tmr.replication.effects import Effects
from tmr.replication.leader import Leader
from tmr.replication.messages import PeerRequest, Probe

SEEDS = range(30)


def sends(seed: int, monkeypatch: pytest.MonkeyPatch, *, reference: bool) -> tuple[Any, ...]:
    """Every message the servers of the simulation of `seed` send (a probe without the
    state it says it holds), its log and its statistics. `reference`: backends send whole
    statuses."""
    sent: list[Any] = []
    send = Leader._send

    def record(self: Leader, b: Backend, msg: PeerRequest, out: Outstanding, fx: Effects) -> None:
        shown = replace(msg, have=None) if isinstance(msg, Probe) else msg
        sent.append((self.cfg.server_id, b.name, repr(shown)))
        send(self, b, msg, out, fx)

    handle = Acceptor.handle

    def whole(self: Acceptor, req: PeerRequest, now: float) -> Step:
        return handle(self, replace(req, have=None) if isinstance(req, Probe) else req, now)

    with monkeypatch.context() as m:
        m.setattr(Leader, "_send", record)
        if reference:
            m.setattr(Acceptor, "handle", whole)
        sim = Simulation(seed)
        sim.run()
    stats = {k: v for k, v in sim.stats.items() if not k.startswith("status_")}
    return sent, sim.log, stats, sim.stats


@pytest.mark.parametrize("seed", SEEDS)
def test_deltas_send_what_whole_statuses_send(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    full = sends(seed, monkeypatch, reference=True)
    assert full[3]["status_delta"] == 0 and len(full[0]) > 100
    quiet = sends(seed, monkeypatch, reference=False)
    assert quiet[3]["status_delta"] > quiet[3]["status_full"] > 0
    assert quiet[:3] == full[:3]


def test_the_exchange_was_exercised() -> None:
    """Deltas were lost (the next one covered them), and some could not be applied (from a
    state the server did not hold: it asked for everything again)."""
    totals: dict[str, int] = {}
    for seed in SEEDS:
        sim = Simulation(seed)
        sim.run()
        for k, v in sim.stats.items():
            totals[k] = totals.get(k, 0) + v
    assert totals["status_delta_lost"] > 0 and totals["status_delta_ignored"] > 0
    assert totals["crashes"] > 0  # backends restarted: a new base, a whole status


def test_the_check_catches_a_backend_that_misses_a_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backend whose writes do not count as changes sends deltas without them: the
    server's view goes stale, and P1 catches it."""
    monkeypatch.setattr(Acceptor, "_touch", lambda self, keys: None)
    caught = 0
    for seed in range(5):
        try:
            Simulation(seed).run()
        except InvariantViolation as exc:
            assert "P1" in str(exc)
            caught += 1
    assert caught > 0
