"""The backend's control commands (design.md §2, §10): one class per command of `tmr ctl` on
a backend's control socket, served by `tmr.serving.commands`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tmr.serving.commands import Command, CommandRegistry, CtlCall, Json

if TYPE_CHECKING:
    from tmr.backend.service import BackendService


class Status(Command["BackendService"]):
    """Identity, promise, products with their licenses and floors, counters."""

    name = "status"

    def execute(self, service: BackendService, call: CtlCall) -> Json:
        return service.status()


class Reload(Command["BackendService"]):
    """Re-read the vendor keys and the license copies (as SIGHUP does)."""

    name = "reload"

    def execute(self, service: BackendService, call: CtlCall) -> Json:
        return service.reload_licenses("ctl")


class Health(Command["BackendService"]):
    name = "health"

    def execute(self, service: BackendService, call: CtlCall) -> Json:
        return {"ok": True, "name": service.config.name}


BACKEND_COMMANDS: CommandRegistry[BackendService] = CommandRegistry(
    "backends", (Status, Reload, Health)
)
