"""What the sans-I/O leader hands its driver: client replies, messages, events (docs/design.md §5).

Every input of `tmr.replication.leader.Leader` returns one `Effects`; the server service and
the simulation carry them out. Its parts (`productlog`, `crypt_router`, ...) append to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tmr.errors import ErrorCode
from tmr.protocol.results import WireResult
from tmr.replication.messages import PeerRequest


@dataclass(frozen=True, slots=True)
class ClientReply:
    """The answer to one client request: a typed result (`tmr.protocol.results`, encoded by
    the service with its `to_wire`) or an error code and message."""

    token: Any  # opaque routing information of the service
    rid: str
    result: WireResult | None = None
    error: ErrorCode | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Effects:
    persist_counter: int | None = None  # write durably BEFORE sending anything
    send: list[tuple[str, PeerRequest]] = field(default_factory=list)
    replies: list[ClientReply] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    # The client request of this input was parked (`tmr.replication.parking`): its answer
    # comes with a later input's effects.
    parked: bool = False

    def extend(self, other: Effects) -> None:
        if other.persist_counter is not None:
            self.persist_counter = other.persist_counter
        self.parked = self.parked or other.parked
        self.send.extend(other.send)
        self.replies.extend(other.replies)
        self.events.extend(other.events)
