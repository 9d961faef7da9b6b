"""The TMR server's role and takeover phase, and every change of them in one table.

See docs/design.md §5 (Roles, Takeover). As h11 keeps its connection states in `_state.py`,
all that may move the leader between roles lives here: `TRANSITIONS` maps a state (role,
phase) and an event to the next state, and `RoleState.fire` is the only way to change it. An
event the table does not list for the current state raises `IllegalTransition` (a bug of the
caller, never a message from the network: the leader checks its inputs before it fires).

STANDBY answers NOT_ACTIVE. PROMOTE starts TAKEOVER in phase PROBE (probe the backends, wait
while another server is alive as leader); PREPARE picks the epoch and sends PREPARE; ADOPT
takes the state of two promises (phase SYNC, snapshots out); ACTIVATE once two backends
acknowledged the snapshot. YIELD gives a waiting promote up (another leader stayed alive);
FENCE (a backend has a higher promise) stops serving until the next promote; DEMOTE always
ends in STANDBY.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    STANDBY = "standby"
    TAKEOVER = "takeover"
    ACTIVE = "active"
    FENCED = "fenced"


class Phase(enum.StrEnum):
    """The step of a takeover (NONE in every other role)."""

    NONE = ""
    PROBE = "probe"
    PREPARE = "prepare"
    SYNC = "sync"


class Event(enum.StrEnum):
    PROMOTE = "promote"
    PREPARE = "prepare"
    ADOPT = "adopt"
    ACTIVATE = "activate"
    YIELD = "yield"
    FENCE = "fence"
    DEMOTE = "demote"


State = tuple[Role, Phase]

STANDBY: State = (Role.STANDBY, Phase.NONE)
PROBING: State = (Role.TAKEOVER, Phase.PROBE)
PREPARING: State = (Role.TAKEOVER, Phase.PREPARE)
SYNCING: State = (Role.TAKEOVER, Phase.SYNC)
ACTIVE: State = (Role.ACTIVE, Phase.NONE)
FENCED: State = (Role.FENCED, Phase.NONE)

# Every legal change of (role, phase): state -> {event: next state}.
TRANSITIONS: dict[State, dict[Event, State]] = {
    STANDBY: {Event.PROMOTE: PROBING},
    PROBING: {
        Event.PREPARE: PREPARING,
        Event.YIELD: STANDBY,
        Event.FENCE: FENCED,
        Event.DEMOTE: STANDBY,
    },
    PREPARING: {Event.ADOPT: SYNCING, Event.FENCE: FENCED, Event.DEMOTE: STANDBY},
    SYNCING: {Event.ACTIVATE: ACTIVE, Event.FENCE: FENCED, Event.DEMOTE: STANDBY},
    ACTIVE: {Event.FENCE: FENCED, Event.DEMOTE: STANDBY},
    FENCED: {Event.PROMOTE: PROBING, Event.DEMOTE: STANDBY},
}


class IllegalTransition(Exception):
    """`event` is not allowed in state (`role`, `phase`)."""

    def __init__(self, role: Role, phase: Phase, event: Event) -> None:
        where = f"{role.value}/{phase.value}" if phase != Phase.NONE else role.value
        super().__init__(f"no transition for {event.value!r} in state {where}")
        self.role = role
        self.phase = phase
        self.event = event


class RoleState:
    """The leader's (role, phase); changed only by `fire`, through `TRANSITIONS`."""

    def __init__(self) -> None:
        self.role, self.phase = STANDBY

    @property
    def state(self) -> State:
        return (self.role, self.phase)

    def fire(self, event: Event) -> State:
        """Take the transition for `event`; raise `IllegalTransition` if there is none."""
        try:
            new = TRANSITIONS[self.state][event]
        except KeyError:
            raise IllegalTransition(self.role, self.phase, event) from None
        self.role, self.phase = new
        return new
