"""`tmr client ...`: the license service from a shell (list, status, checkout-and-hold).

    tmr client --cluster DIR list
    tmr client --endpoint tcp://10.0.0.100:22350 --server-key service.pub status --json
    tmr client --cluster DIR checkout --firm 6000123 --product 42 --seats 2 --hold 60

Where to connect comes from, in order: ``--endpoint`` / ``--server-key``, the cluster file
(``--cluster FILE|DIR`` or ``$TMR_CLUSTER``; JSON with ``client_endpoints`` and
``service_public_key``, as written by ``tmr local up``), then ``$TMR_ENDPOINTS``
(comma-separated) / ``$TMR_SERVER_KEY``. The common options may be given before or after
the action.

Exit codes: 0 success, 1 error (message on stderr), 3 the held seat was lost, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tmr.cli.signals import stop_signals
from tmr.client import Client, Handle, load_client_keys
from tmr.errors import ConfigError, UnknownHandle, UsageError
from tmr.protocol.client_api import (
    FIRM_CODE_MAX,
    FIRM_CODE_MIN,
    PRODUCT_CODE_MAX,
    SEATS_MAX,
    ListResult,
    StatusResult,
)
from tmr.replication.types import AccessMode

EXIT_LOST = 3
MAX_CLUSTER_FILE = 1024 * 1024

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: SubParsers, groups: dict[str, SubParsers]) -> None:
    """Add `tmr client ...` to the `tmr` command."""
    help_text = "use the license service as a client: list, status, checkout"
    parser = sub.add_parser(
        "client",
        help=help_text,
        description=help_text
        + ". Connection: --endpoint/--server-key, else --cluster, else $TMR_CLUSTER, "
        "$TMR_ENDPOINTS, $TMR_SERVER_KEY.",
    )
    _add_common(parser, suppress=False)
    actions = parser.add_subparsers(dest="client_command", metavar="ACTION")
    actions.required = True

    p = actions.add_parser("list", help="list the licenses of the virtual container")
    _add_common(p, suppress=True)
    p.set_defaults(handler=cmd_list)

    p = actions.add_parser("status", help="status of the TMR server that answers")
    _add_common(p, suppress=True)
    p.set_defaults(handler=cmd_status)

    p = actions.add_parser(
        "checkout",
        help="check out seats and hold them (heartbeating) until --hold elapses or Ctrl-C",
        description="Check out seats, hold them while heartbeating, then release them when "
        "--hold seconds have passed or on Ctrl-C / SIGTERM. Exit code 3 if the seats are "
        "lost while held.",
    )
    _add_common(p, suppress=True)
    p.add_argument(
        "--firm",
        type=int,
        required=True,
        metavar="F",
        help=f"firm code ({FIRM_CODE_MIN}-{FIRM_CODE_MAX})",
    )
    p.add_argument(
        "--product",
        type=int,
        required=True,
        metavar="P",
        help=f"product code (0-{PRODUCT_CODE_MAX})",
    )
    p.add_argument(
        "--seats", type=int, default=1, metavar="N", help=f"seats (1-{SEATS_MAX}, default 1)"
    )
    p.add_argument(
        "--hold",
        type=float,
        default=None,
        metavar="SECONDS",
        help="release after this many seconds (default: hold until interrupted; 0: at once)",
    )
    p.add_argument(
        "--mode",
        choices=[m.value for m in AccessMode],
        default=AccessMode.USER_LIMIT.value,
        help="access mode: user_limit (default; CodeMeter UserLimit), station_share (the "
        "checkouts of one key, user and host share their seats; NoUserLimit) or exclusive "
        "(every seat, only while nothing else is held; Exclusive)",
    )
    p.set_defaults(handler=cmd_checkout)


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--endpoint",
        "-e",
        dest="endpoints",
        action="append",
        metavar="E",
        default=default(None),
        help="client endpoint of the service, e.g. tcp://10.0.0.100:22350 (repeatable)",
    )
    parser.add_argument(
        "--server-key",
        metavar="Z85|FILE",
        default=default(None),
        help="the service public key, or a file holding it",
    )
    parser.add_argument(
        "--cluster",
        metavar="FILE|DIR",
        default=default(None),
        help="cluster.json of `tmr local up` (or its directory)",
    )
    parser.add_argument(
        "--client-key",
        metavar="FILE",
        default=default(None),
        help="this client's CURVE key pair (default: ephemeral)",
    )
    parser.add_argument(
        "--client-id", metavar="ID", default=default(None), help="client id (default: generated)"
    )
    parser.add_argument(
        "--user",
        metavar="NAME",
        default=default(None),
        help="the user name sent with each checkout, shown to administrators and matched by "
        "the policy's user: rules (default: the OS user)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        default=default(10.0),
        help="overall seconds per request, retries included (default 10)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON, not tables"
    )


# ---------------------------------------------------------------------------- connection


def read_cluster_file(path: str | os.PathLike[str]) -> tuple[list[str], str]:
    """(client endpoints, service public key) from a cluster file or its directory."""
    p, doc = _cluster_doc(path)
    endpoints = doc.get("client_endpoints")
    if (
        not isinstance(endpoints, list)
        or not endpoints
        or not all(isinstance(e, str) and e for e in endpoints)
    ):
        raise ConfigError(f"cluster file {p}: 'client_endpoints' must be a non-empty list")
    key = doc.get("service_public_key")
    if not isinstance(key, str) or not key:
        raise ConfigError(f"cluster file {p}: 'service_public_key' must be a string")
    return list(endpoints), key


def cluster_admin_key(path: str | os.PathLike[str]) -> str | None:
    """The administrator's client key file a cluster file names (`tmr local up` makes one and
    lists its public key in the servers' admin_keys), or None."""
    p, doc = _cluster_doc(path)
    key = doc.get("admin_client_key")
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise ConfigError(f"cluster file {p}: 'admin_client_key' must be a path")
    return key


def _cluster_doc(path: str | os.PathLike[str]) -> tuple[Path, dict[str, object]]:
    p = Path(path)
    if p.is_dir():
        p = p / "cluster.json"
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_CLUSTER_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read cluster file {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_CLUSTER_FILE:
        raise ConfigError(f"cluster file {p} is too large")
    try:
        doc = json.loads(data)
    except ValueError:
        raise ConfigError(f"cluster file {p} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"cluster file {p} must hold a JSON object")
    return p, doc


def client_from_args(args: argparse.Namespace) -> Client:
    """A `Client` configured from the command line and the environment."""
    endpoints: list[str] | None = args.endpoints
    server_key: str | None = args.server_key
    cluster = args.cluster or os.environ.get("TMR_CLUSTER") or None
    if cluster and (not endpoints or not server_key):
        cluster_endpoints, cluster_key = read_cluster_file(cluster)
        endpoints = endpoints or cluster_endpoints
        server_key = server_key or cluster_key
    if not endpoints:
        env = os.environ.get("TMR_ENDPOINTS", "")
        endpoints = [e.strip() for e in env.split(",") if e.strip()]
    server_key = server_key or os.environ.get("TMR_SERVER_KEY") or None
    if not endpoints:
        raise UsageError("no endpoint: give --endpoint E or --cluster DIR (or set TMR_ENDPOINTS)")
    if not server_key:
        raise UsageError("no server key: give --server-key or --cluster (or set TMR_SERVER_KEY)")
    if not args.timeout > 0:
        raise UsageError("--timeout must be positive")
    keys = load_client_keys(args.client_key) if args.client_key else None
    try:
        return Client(
            endpoints,
            server_key,
            client_id=args.client_id,
            timeout=args.timeout,
            client_keys=keys,
            user=getattr(args, "user", None),  # `tmr report` has no --user
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# ---------------------------------------------------------------------------- output


def _print_json(doc: Any, out: TextIO) -> None:
    out.write(json.dumps(doc, sort_keys=True, default=_json_default) + "\n")
    out.flush()


def _json_default(value: object) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain left-aligned text table."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    ]
    return "\n".join(lines)


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _fmt_days_left(extra: Mapping[str, Any]) -> str:
    """The days left and expiry state a server adds to a license entry (`tmr.expiry`):
    ``12 WARNING`` within the server's expiry_warning_days; ``-`` without an expiry date or
    from a server that does not send them."""
    left, state = extra.get("days_left"), extra.get("expiry")
    if not isinstance(left, int | float) or isinstance(left, bool):
        return "-"
    if state == "expired" or left <= 0:
        return "EXPIRED"
    text = f"{int(left)}"
    return f"{text} WARNING" if state == "warning" else text


def _fmt_value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=_json_default)
    return "-" if value is None else str(value)


def format_list(result: ListResult) -> str:
    header = (
        "FIRM", "PRODUCT", "TMR ID", "LQ", "IN USE", "AVAILABLE", "STATUS", "EXPIRES", "DAYS LEFT"
    )  # fmt: skip
    rows = [
        (
            str(e.firm),
            str(e.product),
            "-" if e.tmr_id is None else f"#{e.tmr_id}",
            str(e.quantity),
            str(e.in_use),
            _fmt_value(e.available),
            e.status if e.reason is None else f"{e.status} {e.reason}",
            _fmt_time(e.expires),
            _fmt_days_left(e.extra),
        )
        for e in result.licenses
    ]
    title = f"Virtual container {result.serial} (server {result.server})"
    if not rows:
        return f"{title}\nno licenses"
    text = f"{title}\n{format_table(header, rows)}"
    features = [
        f"  {e.firm}/{e.product}: " + ", ".join(f"{k}={v}" for k, v in sorted(e.features.items()))
        for e in result.licenses
        if e.features
    ]
    if features:
        text += "\nfeatures:\n" + "\n".join(features)
    return text


def format_status(result: StatusResult) -> str:
    epoch = "-" if result.epoch is None else f"{result.epoch[0]}/{result.epoch[1]}"
    pairs = [
        ("server", result.server),
        ("role", result.role),
        ("epoch", epoch),
        ("active hint", result.active_hint or "-"),
        ("handles", str(result.handles)),
        ("ops committed", str(result.ops_committed)),
    ]
    for key, value in sorted(result.extra.items()):
        if isinstance(value, list | tuple) and value and all(isinstance(v, dict) for v in value):
            shown = f"{len(value)} entries (see --json)"
        else:
            shown = _fmt_value(value)
        pairs.append((key.replace("_", " "), shown))
    width = max(len(k) for k, _ in pairs)
    lines = [f"{k.ljust(width)}  {v}" for k, v in pairs]
    if result.backends:
        rows = [
            (
                b.name,
                _fmt_value(b.up),
                " ".join(
                    f"{k}={_fmt_value(v)}"
                    for k, v in sorted(b.extra.items())
                    if not (isinstance(v, dict | list | tuple) and not v)  # skip empty ones
                ),
            )
            for b in result.backends
        ]
        lines += ["", format_table(("BACKEND", "UP", "DETAILS"), rows)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        result = client.list_licenses()
    if args.json:
        _print_json(result.to_wire(), sys.stdout)
    else:
        print(format_list(result))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        result = client.status()
    if args.json:
        _print_json(result.to_wire(), sys.stdout)
    else:
        print(format_status(result))
    return 0


def cmd_checkout(args: argparse.Namespace) -> int:
    if args.hold is not None and args.hold < 0:
        raise UsageError("--hold must be >= 0")
    wake = threading.Event()
    stopped_by: list[int] = []

    def on_signal(signum: int) -> None:
        stopped_by.append(signum)
        wake.set()

    def on_lost(handle: Handle) -> None:
        wake.set()

    out = sys.stdout
    with client_from_args(args) as client, stop_signals(on_signal):
        handle = client.checkout(
            args.firm, args.product, args.seats, on_lost=on_lost, mode=args.mode
        )
        r = handle.result
        hold = "until interrupted" if args.hold is None else f"for {args.hold:g} s"
        if args.json:
            _print_json({"event": "checkout", **r.to_wire(), "mode": handle.mode.value}, out)
        else:
            print(
                f"checked out {r.seats} seat(s) of {r.firm}/{r.product} (TMR ID #{r.tmr_id}, "
                f"{handle.mode.value}): "
                f"handle {r.handle}, lease {r.lease:g} s; holding {hold} (Ctrl-C releases)",
                file=out,
                flush=True,
            )
        deadline = None if args.hold is None else time.monotonic() + args.hold
        while not (stopped_by or handle.lost):
            if deadline is None:
                wake.wait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wake.wait(remaining)
            wake.clear()
        if not handle.lost:
            try:
                handle.release()
            except UnknownHandle:
                pass  # the server no longer held it: reported as lost below
        if handle.lost:
            if args.json:
                _print_json(
                    {"event": "lost", "handle": handle.id, "reason": handle.lost_reason}, out
                )
            print(f"tmr: error: handle {handle.id} was lost: {handle.lost_reason}", file=sys.stderr)
            return EXIT_LOST
        if args.json:
            _print_json({"event": "released", "handle": handle.id}, out)
        else:
            print(f"released handle {handle.id}", file=out, flush=True)
    return 0
