"""CLI of the long-running services: `tmr backend run --config FILE`.

`register(sub, groups)` is called by `tmr.cli.main`; each service adds its verbs here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from tmr.config import load_backend_config

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: Subparsers, groups: dict[str, Subparsers]) -> None:
    register_backend(groups)
    # ------------------------------------------------------------------ lead: add here
    # `tmr server run`, `tmr ctl` and `tmr local` are registered by the lead
    # (currently in tmr.cli.server_cmds; move them here with their own register_* functions
    # if wanted, e.g. register_server(sub), register_ctl(sub), register_local(sub)).
    # ------------------------------------------------------------------ end of lead's place


def register_backend(groups: dict[str, Subparsers]) -> None:
    """`tmr backend run` (the shared "backend" group also holds `tmr backend fingerprint`)."""
    p = groups["backend"].add_parser(
        "run",
        help="run the backend service (holds the license container and the handle table)",
        description=(
            "Run a backend: serve PREPARE / ACCEPT / SNAPSHOT / status / crypt to the TMR "
            "servers listed in allowed_servers, until SIGTERM or SIGINT. SIGHUP (or "
            "`tmr ctl --socket CTL reload`) re-reads and re-verifies the license container."
        ),
    )
    p.add_argument("--config", required=True, type=Path, metavar="FILE", help="backend.toml")
    p.set_defaults(handler=cmd_backend_run)


def cmd_backend_run(args: argparse.Namespace) -> int:
    from tmr.backend.service import BackendService  # imports pyzmq only when running

    return BackendService(load_backend_config(args.config)).run()
