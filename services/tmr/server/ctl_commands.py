"""The TMR server's control commands (design.md §2, §6, §7.6): one class per command of
`tmr ctl` / `tmr admin` on the server's control socket, served by `tmr.serving.commands`.

keepalived runs ``promote``, ``demote`` and ``health``; operators ``status``, ``handles``,
``queue`` (`tmr admin queue`, the queued checkouts), ``denials`` (`tmr admin denials`, this
server's recent refusals),
``release`` (`tmr admin release`, answered once the release commits), ``usage`` (answered
when the report worker is done) and ``reload`` (server.toml's reloadable keys and the policy
file again, as SIGHUP does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tmr.ctl import CtlError
from tmr.logs import log
from tmr.serving.commands import Command, CommandRegistry, CtlCall, Json, ok

if TYPE_CHECKING:
    from tmr.server.service import ServerService

ADMIN_HANDLE_MAX = 256  # characters of a handle id taken from a control request


class Promote(Command["ServerService"]):
    """Start a term as leader (keepalived's MASTER notify); ``force`` skips the guard."""

    name = "promote"

    def validate(self, request: Json) -> Json:
        force = request.get("force", False)
        if not isinstance(force, bool):
            raise CtlError("promote: 'force' must be true or false")
        return {"force": force}

    def execute(self, service: ServerService, call: CtlCall) -> Json:
        force = call.args["force"]
        log("ctl", cmd="promote", force=force)
        service.apply(service.leader.promote(call.now, force=force))
        return ok(role=service.leader.role.value)


class Demote(Command["ServerService"]):
    """Give the term up (keepalived's BACKUP and FAULT notify)."""

    name = "demote"

    def execute(self, service: ServerService, call: CtlCall) -> Json:
        log("ctl", cmd="demote")
        service.apply(service.leader.demote(call.now))
        return ok(role=service.leader.role.value)


class Health(Command["ServerService"]):
    """keepalived's track script: ``ok`` is whether this server should hold the VIP."""

    name = "health"

    def execute(self, service: ServerService, call: CtlCall) -> Json:
        return {"ok": service.leader.healthy(), "role": service.leader.role.value}


class Status(Command["ServerService"]):
    name = "status"

    def execute(self, service: ServerService, call: CtlCall) -> Json:
        return ok(**service.status(call.now))


class Handles(Command["ServerService"]):
    """`tmr admin handles`: every handle the leader holds."""

    name = "handles"

    def execute(self, service: ServerService, call: CtlCall) -> Json:
        leader = service.leader
        return ok(role=leader.role.value, handles=leader.handles_view(call.now))


class Queue(Command["ServerService"]):
    """`tmr admin queue`: the queued checkouts of this term, per license in order."""

    name = "queue"

    def execute(self, service: ServerService, call: CtlCall) -> Json:
        leader = service.leader
        return ok(role=leader.role.value, queue=leader.queue_view(call.now))


class Denials(Command["ServerService"]):
    """`tmr admin denials`: this server's recent refusals, newest first (who, what, why);
    the report over both servers is `tmr report denials`."""

    name = "denials"

    def execute(self, service: ServerService, call: CtlCall) -> Json:
        rec = service.denials
        return ok(
            role=service.leader.role.value,
            server=rec.server,
            denials=rec.recent_view(),
            recorded=rec.recorded,
            pending=len(rec.pending),
            dropped=rec.dropped,
            backends=sorted(service.denial_backends),
        )


class Release(Command["ServerService"]):
    """`tmr admin release HANDLE`: free a handle through the quorum; answered on commit."""

    name = "release"

    def validate(self, request: Json) -> Json:
        handle = request.get("handle")
        if not isinstance(handle, str) or not 0 < len(handle) <= ADMIN_HANDLE_MAX:
            raise CtlError(f"release: 'handle' must be a string of 1-{ADMIN_HANDLE_MAX} characters")
        if not handle.isprintable():
            raise CtlError("release: 'handle' must be printable")
        return {"handle": handle}

    def execute(self, service: ServerService, call: CtlCall) -> None:
        by = f"ctl:{call.peer.user}" if call.peer is not None else "ctl"
        service.ctl_admin_release(call.args["handle"], by, call.now)


class Usage(Command["ServerService"]):
    """`tmr ctl usage`: a usage report, answered when the worker is done."""

    name = "usage"

    def validate(self, request: Json) -> Json:
        since, until = request.get("since"), request.get("until")
        if not isinstance(since, int | float) or not isinstance(until, int | float):
            raise CtlError("usage: 'since' and 'until' must be numbers (UNIX time)")
        if isinstance(since, bool) or isinstance(until, bool):
            raise CtlError("usage: 'since' and 'until' must be numbers (UNIX time)")
        return {"since": float(since), "until": float(until)}

    def execute(self, service: ServerService, call: CtlCall) -> None:
        service.ctl_usage(call.args["since"], call.args["until"])


class Reload(Command["ServerService"]):
    """`tmr ctl reload`: read server.toml and the policy file again (as SIGHUP does) and put
    in force the client allowlist, the admin keys and the policy; the answer names the other
    keys that changed (they need a restart). A file that does not check in full is refused
    and what is in force stays."""

    name = "reload"

    def execute(self, service: ServerService, call: CtlCall) -> Json:
        return service.reload("ctl")


SERVER_COMMANDS: CommandRegistry[ServerService] = CommandRegistry(
    "servers",
    (
        Promote,
        Demote,
        Health,
        Status,
        Handles,
        Queue,
        Denials,
        Release,
        Usage,
        Reload,
    ),
)
