"""The role table (docs/design.md §5): every change of role goes through `roles.TRANSITIONS`."""

from __future__ import annotations

import ast
import inspect

import pytest

from tests.unit.replication.harness import Harness
from tmr.replication import leader as leader_mod
from tmr.replication.roles import (
    ACTIVE,
    FENCED,
    PREPARING,
    PROBING,
    STANDBY,
    SYNCING,
    TRANSITIONS,
    Event,
    IllegalTransition,
    Phase,
    Role,
    RoleState,
)
from tmr.replication.types import LicenseInfo

KEY = (1, 1)


def walk(*events: Event) -> RoleState:
    r = RoleState()
    for e in events:
        r.fire(e)
    return r


def test_the_table_names_each_state_once_and_leads_only_to_states_it_names() -> None:
    assert set(TRANSITIONS) == {STANDBY, PROBING, PREPARING, SYNCING, ACTIVE, FENCED}
    for targets in TRANSITIONS.values():
        assert set(targets.values()) <= set(TRANSITIONS)
    # A takeover phase only within TAKEOVER; every other role has none.
    for role, phase in TRANSITIONS:
        assert (phase != Phase.NONE) == (role == Role.TAKEOVER)


def test_a_takeover_runs_probe_prepare_sync_active() -> None:
    r = RoleState()
    assert r.state == STANDBY
    assert r.fire(Event.PROMOTE) == PROBING
    assert r.fire(Event.PREPARE) == PREPARING
    assert r.fire(Event.ADOPT) == SYNCING
    assert r.fire(Event.ACTIVATE) == ACTIVE
    assert (r.role, r.phase) == (Role.ACTIVE, Phase.NONE)


@pytest.mark.parametrize("state", [PROBING, PREPARING, SYNCING, ACTIVE])
def test_a_leading_or_promoting_server_can_be_fenced_and_demoted(
    state: tuple[Role, Phase],
) -> None:
    assert TRANSITIONS[state][Event.FENCE] == FENCED
    assert TRANSITIONS[state][Event.DEMOTE] == STANDBY


def test_only_a_waiting_promote_yields_and_a_fenced_server_waits_for_a_promote() -> None:
    assert [s for s, t in TRANSITIONS.items() if Event.YIELD in t] == [PROBING]
    assert TRANSITIONS[FENCED] == {Event.PROMOTE: PROBING, Event.DEMOTE: STANDBY}


@pytest.mark.parametrize(
    ("events", "illegal"),
    [
        ((), Event.ACTIVATE),  # a standby never serves without a takeover
        ((), Event.FENCE),  # a standby has no term to lose
        ((Event.PROMOTE,), Event.ADOPT),  # no adopt before PREPARE went out
        ((Event.PROMOTE,), Event.PROMOTE),  # a second promote is not a transition
        ((Event.PROMOTE, Event.PREPARE), Event.ACTIVATE),  # active only after adopting
        ((Event.PROMOTE, Event.PREPARE), Event.YIELD),  # an epoch chosen: no yielding
        ((Event.PROMOTE, Event.PREPARE, Event.ADOPT, Event.ACTIVATE), Event.PROMOTE),
        ((Event.PROMOTE, Event.FENCE), Event.PREPARE),  # fenced: never prepares by itself
        ((Event.PROMOTE, Event.FENCE), Event.FENCE),
    ],
)
def test_an_illegal_transition_raises_a_typed_error_and_changes_nothing(
    events: tuple[Event, ...], illegal: Event
) -> None:
    r = walk(*events)
    before = r.state
    with pytest.raises(IllegalTransition) as err:
        r.fire(illegal)
    assert (err.value.role, err.value.phase, err.value.event) == (*before, illegal)
    assert r.state == before
    assert illegal.value in str(err.value)


def test_every_event_not_in_the_table_is_illegal() -> None:
    for state, targets in TRANSITIONS.items():
        for event in Event:
            r = RoleState()
            r.role, r.phase = state
            if event in targets:
                assert r.fire(event) == targets[event]
            else:
                with pytest.raises(IllegalTransition):
                    r.fire(event)


def test_the_leader_changes_its_role_only_through_the_table() -> None:
    """No code of the leader assigns a role or phase itself (it fires events)."""
    tree = ast.parse(inspect.getsource(leader_mod))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, ast.Attribute):
                        assert sub.attr not in ("role", "phase", "_phase"), ast.unparse(node)


def test_a_leader_walks_the_table_from_promote_to_active_and_demote() -> None:
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    seen: list[tuple[Role, Phase]] = []
    original = RoleState.fire

    def record(self: RoleState, event: Event) -> tuple[Role, Phase]:
        seen.append(original(self, event))
        return seen[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RoleState, "fire", record)
        h.promote()
        h.run(h.leader.demote(h.now))
    assert seen == [PROBING, PREPARING, SYNCING, ACTIVE, STANDBY]
    assert h.leader.role == Role.STANDBY
