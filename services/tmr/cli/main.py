"""The `tmr` command: one console script, sub-commands per area.

Each area contributes its sub-commands through a `register(subparsers, groups)` function.
Handlers return an exit code; any `TmrError` becomes a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from tmr import __version__, logs
from tmr.errors import ApiError, TmrError

# Modules that add sub-commands. Each defines
#   register(sub: argparse._SubParsersAction, groups: dict[str, argparse._SubParsersAction])
# `groups` holds shared command groups (e.g. "backend": `tmr backend ...`) so that two areas
# can add verbs under the same noun.
COMMAND_MODULES: tuple[str, ...] = (
    "tmr.cli.licensing_cmds",
    "tmr.cli.exchange_cmds",
    "tmr.cli.portal_cmds",
    "tmr.cli.service_cmds",
    "tmr.cli.server_cmds",
    "tmr.cli.admin_cmds",
    "tmr.cli.client_cmds",
    "tmr.cli.report_cmds",
    "tmr.cli.workload_cmds",
    "tmr.cli.config_cmds",
)

Handler = Callable[[argparse.Namespace], int]

SHARED_GROUPS = {
    "backend": "backend node: run the service, print its fingerprint",
    "license": "inspect, verify and install license copies; request and receipt files",
}


# `tmr ctl` runs every couple of seconds from keepalived's track_script: it only loads the
# module that defines it, not every area's imports.
FAST_PATHS = {"ctl": ("tmr.cli.server_cmds",), "config": ("tmr.cli.config_cmds",)}


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tmr",
        description=(
            "TMR high-availability license server: 3 backends hold every license, "
            "2 TMR servers present them as one virtual container behind a virtual IP."
        ),
    )
    parser.add_argument("--version", action="version", version=f"tmr {__version__}")
    parser.add_argument(
        "--log-format",
        choices=[f.value for f in logs.LogFormat],
        help=(
            "log lines on stderr: json (one object per line; the default of the services) or "
            f"text (the default of the other commands); also ${logs.FORMAT_ENV}"
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    for name, help_text in SHARED_GROUPS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        gs = p.add_subparsers(dest=f"{name}_command", metavar="ACTION")
        gs.required = True
        groups[name] = gs
    for mod_name in modules:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                continue  # area not built yet
            raise
        mod.register(sub, groups)
    return parser


# Options whose value may be a Z85 key: such a key can begin with "-", which argparse would
# take for an option. `--server-key KEY` is rewritten to `--server-key=KEY` before parsing.
KEY_OPTIONS = frozenset({"--server-key"})


def _join_key_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in KEY_OPTIONS:
            value = next(it, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(FAST_PATHS.get(argv[0], COMMAND_MODULES) if argv else COMMAND_MODULES)
    args = parser.parse_args(_join_key_values(argv))
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    # the standard library's records (tmr.client, tmr.workload, pyzmq) as log lines on stderr;
    # a service command configures its own name, level and JSON default when it starts
    if args.log_format:  # for this command and the processes it starts (tmr local up)
        os.environ[logs.FORMAT_ENV] = args.log_format
    try:
        logs.configure(f"tmr-{args.command}", "warning", default_format=logs.LogFormat.TEXT)
    except ValueError as exc:  # a bad TMR_LOG_FORMAT
        print(f"tmr: error: {exc}", file=sys.stderr)
        return 2
    try:
        return handler(args)
    except ApiError as exc:  # answered by the service (or TIMEOUT): name the code
        text = str(exc)
        code = exc.code.value
        print(
            f"tmr: error: {text if text.startswith(code) else f'{code}: {text}'}", file=sys.stderr
        )
        return 1
    except TmrError as exc:
        print(f"tmr: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
