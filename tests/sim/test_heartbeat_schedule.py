"""The simulated clients heartbeat on the SDK's schedule (`tmr.client._heartbeats`) after a
checkout and after an answered heartbeat: on a grid of their hosts' wall clocks, an interval
after the answer (at most a step later). After an error or a heartbeat given up they keep
the simulation's own retry rule (not checked here)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.sim.simulation import (
    CLIENT_CLOCK_SKEW,
    HEARTBEAT_INTERVAL,
    TICK,
    SimClient,
    Simulation,
)
from tmr.client._heartbeats import grid_step
from tmr.replication.leader import ClientReply

STEP = grid_step(HEARTBEAT_INTERVAL)


def test_simulated_heartbeats_follow_the_sdk_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    # Per client, what its next heartbeat follows: ("answer", when) after an OK heartbeat
    # answer or a granted checkout; None after an error, or while a heartbeat is unanswered.
    after: dict[str, tuple[str, float] | None] = {}
    checked = 0
    send, reply = Simulation.client_send, Simulation.client_reply

    def recording_send(self: Simulation, c: SimClient, op: str, **kw: Any) -> None:
        nonlocal checked
        if op == "heartbeat":
            last = after.get(c.cid)
            if last is not None:
                answered = last[1]
                # A client acts on the servers' ticks: it sends at the first tick at or after
                # its due time, a multiple of the step on its host's wall clock.
                past = (self.now + c.wall_offset) % STEP
                assert past < TICK + 1e-6 or STEP - past < 1e-6, (c.cid, self.now, past)
                due = answered + HEARTBEAT_INTERVAL
                assert due - 1e-6 <= self.now <= due + STEP + TICK + 1e-6, (c.cid, last, self.now)
                checked += 1
            after[c.cid] = None
        send(self, c, op, **kw)

    def recording_reply(self: Simulation, cid: str, server: str, r: ClientReply) -> None:
        c = self.client_by_id(cid)
        heartbeat = bool(c.hb_rid) and r.rid == c.hb_rid
        checkout = c.state == "checkout" and r.rid == c.rid
        reply(self, cid, server, r)
        if heartbeat:
            after[cid] = ("answer", self.now) if r.ok else None
        elif checkout and c.state == "holding":
            after[cid] = ("answer", self.now)

    monkeypatch.setattr(Simulation, "client_send", recording_send)
    monkeypatch.setattr(Simulation, "client_reply", recording_reply)
    for seed in range(3):
        sim = Simulation(seed, duration=30.0)
        sim.run(faults=False)
        # A site's clients share the grid (NTP): their offsets on it are within the skew.
        offsets = sorted(c.wall_offset % STEP for c in sim.clients)
        gaps = [b - a for a, b in itertools.pairwise(offsets)]
        gaps.append(offsets[0] + STEP - offsets[-1])
        assert STEP - max(gaps) <= 2 * CLIENT_CLOCK_SKEW + 1e-9, offsets
    assert checked > 30, checked
