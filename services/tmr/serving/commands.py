"""Control-socket commands as classes in a registry (design.md §2, §7.4, §12: circus's
`Command` with `validate` and `execute`, one reply envelope).

A service lists its command classes once (`CommandRegistry`, a name registered twice is a
bug found at start). `CtlServer` takes the requests from the service's control socket
(`tmr.ctl.serve_ctl` decodes and bounds them), finds the command, lets it check its
arguments and only then runs it. Every reply is ``{"ok": true, ...}`` or the typed error
``{"ok": false, "code": ..., "error": ...}`` (`tmr.ctl.ctl_error_reply`): an unknown
command is UNKNOWN_COMMAND, bad arguments BAD_REQUEST, and neither changes anything.
A command that answers later (it returns None) calls `CtlServer.answer` when it can; the
control socket takes no other request until then (a REP socket).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import zmq

from tmr.ctl import CtlError, CtlErrorCode, CtlPeer, encode_ctl, serve_ctl
from tmr.logs import log

Json = dict[str, Any]
S = TypeVar("S")


@dataclass(frozen=True)
class CtlCall:
    """One control request being served: its arguments as the command validated them, the
    local user who sent it (None: the kernel did not say), the loop's clock."""

    args: Json = field(default_factory=dict)
    peer: CtlPeer | None = None
    now: float = 0.0


class Command(Generic[S]):
    """One control command of a service of type ``S``. ``validate`` checks the request's
    arguments and raises `CtlError` (BAD_REQUEST) before anything changes; ``execute`` runs
    the command and returns the reply, or None if it answers later (`CtlServer.answer`)."""

    name: ClassVar[str]

    def validate(self, request: Json) -> Json:
        """The arguments ``execute`` gets (`CtlCall.args`); none by default."""
        return {}

    def execute(self, service: S, call: CtlCall) -> Json | None:
        raise NotImplementedError


def ok(**fields: Any) -> Json:
    """A successful reply: ``{"ok": true, **fields}``."""
    return {"ok": True, **fields}


class CommandRegistry(Generic[S]):
    """The commands of one kind of service, by name."""

    def __init__(self, kind: str, commands: Iterable[type[Command[S]]]) -> None:
        self.kind = kind  # "servers", "backends": in the unknown-command reply
        self._commands: dict[str, Command[S]] = {}
        for cls in commands:
            if cls.name in self._commands:
                raise ValueError(f"control command {cls.name!r} registered twice")
            self._commands[cls.name] = cls()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._commands)

    def dispatch(self, service: S, request: Json, peer: CtlPeer | None, now: float) -> Json | None:
        """Serve one decoded request (`tmr.ctl.decode_ctl`: a dict with a string "cmd")."""
        name = request.get("cmd")
        command = self._commands.get(name) if isinstance(name, str) else None
        if command is None:
            raise CtlError(
                f"unknown command {str(name)[:40]!r} ({self.kind} know {', '.join(self.names)})",
                CtlErrorCode.UNKNOWN_COMMAND,
            )
        args = command.validate(request)
        return command.execute(service, CtlCall(args, peer, now))


class _Sender(Protocol):
    def send(self, data: bytes) -> Any: ...


def log_internal_error(exc: Exception) -> None:
    log("internal_error", level="error", error=repr(exc), trace=traceback.format_exc())


class CtlServer(Generic[S]):
    """The control socket of one service, served by its registry."""

    def __init__(self, registry: CommandRegistry[S], service: S) -> None:
        self.registry = registry
        self.service = service
        self.sock: zmq.Socket[bytes] | _Sender | None = None
        self.pending = False  # a request was taken and its answer is not sent yet
        self.peer: CtlPeer | None = None  # who sent the request being served

    def serve(self, now: float) -> None:
        """Serve the next queued request, unless one is still waiting for its answer."""
        if self.pending:
            return
        sock = self.sock
        assert isinstance(sock, zmq.Socket)
        serve_ctl(
            sock, lambda req: self.handle(req, now), log_internal_error, on_peer=self._on_peer
        )

    def _on_peer(self, peer: CtlPeer | None) -> None:
        self.peer = peer

    def handle(self, request: Json, now: float) -> Json | None:
        """One decoded request -> its reply (None: `answer` sends it later; it may have been
        sent already, by a command whose answer came at once)."""
        self.pending = True
        try:
            reply = self.registry.dispatch(self.service, request, self.peer, now)
        except BaseException:
            self.pending = False  # serve_ctl answers with the typed error
            raise
        if reply is not None:
            self.pending = False
        return reply

    def answer(self, reply: Json) -> bool:
        """Send the answer of a command that returned None (False: no request waits)."""
        return self.answer_payload(encode_ctl(reply))

    def answer_payload(self, payload: bytes) -> bool:
        """`answer` with a reply already encoded (the usage worker's)."""
        if not self.pending or self.sock is None:
            return False
        self.pending = False
        self.sock.send(payload)
        return True
