"""The simulated clients heartbeat on the SDK's schedule (`tmr.client._heartbeats`): on a
grid of their hosts' wall clocks, at most 1.3 intervals after the answer to the last one."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sim.simulation import HEARTBEAT_INTERVAL, TICK, SimClient, Simulation
from tmr.client._heartbeats import grid_step


def test_simulated_heartbeats_are_on_the_grid_of_their_clients_wall_clocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[SimClient, float]] = []
    original = Simulation.client_send

    def recording(self: Simulation, c: SimClient, op: str, **kw: Any) -> None:
        if op == "heartbeat":
            sent.append((c, self.now))
        original(self, c, op, **kw)

    monkeypatch.setattr(Simulation, "client_send", recording)
    sim = Simulation(5, duration=60.0)
    sim.run(faults=False)  # no fault: every heartbeat is answered, none is a back-off
    assert len(sent) > 30, len(sent)
    step = grid_step(HEARTBEAT_INTERVAL)
    # A client acts on the servers' ticks: it sends at the first tick at or after its due
    # time, which is a multiple of the step on its host's wall clock.
    for c, at in sent:
        past = (at + c.wall_offset) % step
        assert past < TICK + 1e-6 or step - past < 1e-6, (c.cid, at, past)
    # A site's clients share the grid (NTP): their heartbeats come in bursts.
    offsets = {round(c.wall_offset % step, 1) for c in sim.clients}
    assert len(sim.clients) > 1 and len(offsets) <= 2, offsets
