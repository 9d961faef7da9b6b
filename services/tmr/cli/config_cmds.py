"""`tmr config check`: a service's configuration file through the loader the service uses.

    tmr config check --kind server /etc/tmr/server.toml
    tmr config check --kind backend --json /etc/tmr/backend.toml
    tmr config check --kind policy /etc/tmr/policy.toml

The file is read with the same loader as `tmr server run` / `tmr backend run` (every key,
type, range and combination is checked, not only the TOML syntax); nothing is started and no
other file is opened. Ansible's `validate:` runs it on a generated file before installing it.

Exit codes: 0 valid, 1 invalid (one line ``tmr: error: FILE: ...`` on stderr, or with
``--json`` a document on stdout), 2 wrong command line.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tmr.config import BackendConfig, ServerConfig, load_backend_config, load_server_config
from tmr.errors import ConfigError
from tmr.policy import Policy, load_policy

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


class ConfigKind(enum.StrEnum):
    SERVER = "server"
    BACKEND = "backend"
    POLICY = "policy"  # the server's policy file (policy_file), as `tmr ctl reload` reads it


class CheckExit(enum.IntEnum):
    VALID = 0
    INVALID = 1
    USAGE = 2  # argparse's own exit code for a wrong command line


@dataclass(frozen=True)
class CheckResult:
    kind: ConfigKind
    file: str
    error: str | None = None  # the loader's message; None: valid

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "kind": self.kind.value, "file": self.file, "error": self.error}


def load(kind: ConfigKind, path: Path) -> ServerConfig | BackendConfig | Policy:
    """The configuration as the service would load it (ConfigError if it would refuse it)."""
    if kind is ConfigKind.SERVER:
        return load_server_config(path)
    if kind is ConfigKind.POLICY:
        return load_policy(path)
    return load_backend_config(path)


def check(kind: ConfigKind, path: Path) -> CheckResult:
    try:
        load(kind, path)
    except ConfigError as exc:
        return CheckResult(kind, str(path), str(exc))
    return CheckResult(kind, str(path))


def register(sub: SubParsers, groups: dict[str, SubParsers]) -> None:
    help_text = "configuration files of the services"
    parser = sub.add_parser("config", help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION")
    actions.required = True
    p = actions.add_parser(
        "check",
        help="check a server.toml, backend.toml or policy.toml with the service's own loader",
        description=__doc__.split("\n\n")[2].strip() if __doc__ else None,
        epilog="Exit codes: 0 valid, 1 invalid, 2 wrong command line.",
    )
    p.add_argument(
        "--kind",
        required=True,
        choices=[k.value for k in ConfigKind],
        help="which service reads the file",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("file", type=Path, metavar="FILE", help="the TOML file to check")
    p.set_defaults(handler=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    result = check(ConfigKind(args.kind), args.file)
    if args.json:
        json.dump(result.to_json(), sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
    elif result.ok:
        print(f"{result.file}: valid {result.kind.value} configuration")
    else:
        print(f"tmr: error: {result.error}", file=sys.stderr)
    return CheckExit.VALID if result.ok else CheckExit.INVALID
