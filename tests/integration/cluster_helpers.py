"""Drive a local cluster (`tmr local up`) from tests: kill, restart, promote, wait."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tmr.client import Client
from tmr.ctl import CtlError, ctl_request
from tmr.local.cluster import _alive, _reap, local_down, local_up, start_node, wait_for

__all__ = ["LocalCluster", "wait_for"]


class LocalCluster:
    def __init__(
        self, root: Path, *, quantity: int = 3, lease: float = 30.0, backend_timeout: float = 2.0
    ) -> None:
        # A shared test machine can stall a process for a second: a little more patience
        # than the production default keeps such stalls from reading as backend failures.
        self.root = root
        # local_up returns once tmr-a is active with the three backends up and answers list.
        self.info = local_up(
            root, quantity=quantity, lease=lease, progress=False, backend_timeout=backend_timeout
        )
        self.nodes = {n["name"]: n for n in self.info["nodes"]}

    # -------------------------------------------------------------- processes

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[name]
        if _alive(node["pid"]):
            os.kill(node["pid"], sig)

            def dead() -> bool:
                _reap()  # collect the child, or it stays a zombie that looks alive
                return not _alive(node["pid"])

            wait_for(f"{name} to die", dead, 10)

    def start(self, name: str) -> None:
        node = self.nodes[name]
        start_node(node)
        self._save()
        wait_for(f"{name} to answer its control socket", lambda: self.ctl_ok(name), 20)

    def stop_all(self) -> None:
        self._save()
        local_down(self.root)

    def _save(self) -> None:
        self.info["nodes"] = list(self.nodes.values())
        (self.root / "cluster.json").write_text(json.dumps(self.info, indent=2))

    # -------------------------------------------------------------- control

    def ctl(self, name: str, cmd: str, **args: Any) -> dict[str, Any]:
        return ctl_request(Path(self.nodes[name]["ctl_socket"]), cmd, timeout=3.0, **args)

    def ctl_ok(self, name: str) -> bool:
        try:
            self.ctl(name, "status")
        except CtlError:
            return False
        return True

    def role(self, name: str) -> str:
        try:
            return str(self.ctl(name, "status").get("role"))
        except CtlError:
            return "down"

    def promote(self, name: str, timeout: float = 15.0, *, force: bool = False) -> None:
        """Promote and wait until active. Without `force` the other server must not be alive
        as leader (demoted, fenced or dead), or the promote yields."""
        if force:
            self.ctl(name, "promote", force=True)
        else:
            self.ctl(name, "promote")
        wait_for(f"{name} to become active", lambda: self.role(name) == "active", timeout)

    def demote(self, name: str) -> None:
        self.ctl(name, "demote")

    def backend_view(self, server: str) -> dict[str, dict[str, Any]]:
        st = self.ctl(server, "status")
        return {b["name"]: b for b in st["backends"]}

    def wait_backends(self, server: str, up: set[str], timeout: float = 15.0) -> None:
        def ok() -> bool:
            view = self.backend_view(server)
            return {n for n, b in view.items() if b["up"]} == up

        wait_for(f"{server} to see exactly {sorted(up)} up", ok, timeout)

    # -------------------------------------------------------------- clients

    def client(self, **kw: Any) -> Client:
        kw.setdefault("timeout", 10.0)
        return Client(self.info["client_endpoints"], self.info["service_public_key"], **kw)

    def endpoint(self, name: str) -> str:
        return str(self.nodes[name]["endpoint"])


def eventually(what: str, fn: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Call fn until it returns without raising; re-raise its last error at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
