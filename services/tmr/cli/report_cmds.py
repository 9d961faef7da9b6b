"""`tmr report usage|denials`: usage and refusals of the virtual container over a time window.

    tmr report usage --cluster DIR --from 2025-01-01 --to 2025-02-01   # a `tmr local up` demo
    tmr report usage -e tcp://10.0.0.100:22350 --server-key service.pub \
        --client-key admin.key --from 7d --csv
    tmr report usage --ctl /run/tmr/server.sock --from 7d     # on the active server's host
    tmr report denials --ctl /run/tmr/server.sock --from 7d --csv   # by user, host, license

The active TMR server reads the usage record (every committed grant, release and expiry,
bounded by the backends' ``usage_retention``) from the reachable backends, merges them and
answers per license: peak seats (and when), seat-hours, checkouts, releases, expiries,
denials (checkouts refused with NO_LICENSE_AVAILABLE, by either server: the backends' denial
record) and distinct clients. Reports are
answered only for a client key listed in the server's ``admin_keys``, or on its control
socket; a window is at most 400 days and at most 200,000 usage rows per backend.

Times: ISO 8601 (``2025-01-31``, ``2025-01-31T12:00``, with ``Z`` or ``+01:00``; without a
zone: local time), ``now``, or a time ago: ``7d``, ``12h``, ``30m``, ``2w``. Default window:
the 30 days before ``--to`` (default now). Connection options as for ``tmr client``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmr.cli.client_cmds import client_from_args, cluster_admin_key, format_table
from tmr.ctl import CtlError, ctl_request
from tmr.errors import UsageError
from tmr.protocol.client_api import UsageResult
from tmr.report.summary import denials_to_csv, to_csv

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

DEFAULT_DAYS = 30
_RELATIVE = re.compile(r"-?(\d+(?:\.\d+)?)\s*([smhdw])(?:\s+ago)?")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: float) -> float:
    """A point in time from the command line -> UNIX time (UsageError if malformed)."""
    text = text.strip()
    if text == "now":
        return now
    m = _RELATIVE.fullmatch(text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"cannot read the time {text[:40]!r}: use ISO 8601 (2025-01-31, "
            "2025-01-31T12:00, ...Z), 'now' or a time ago: 7d, 12h, 30m, 2w"
        ) from None
    return when.timestamp()  # naive: local time


def register(sub: SubParsers, groups: dict[str, SubParsers]) -> None:
    help_text = "reports from the usage record (usage: peak seats, seat-hours, denials)"
    parser = sub.add_parser("report", help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="report_command", metavar="REPORT")
    actions.required = True
    p = actions.add_parser(
        "usage",
        help="per-license usage over a time window",
        description=__doc__.split("\n\n")[2].strip() if __doc__ else None,
    )
    _report_options(p)
    p.set_defaults(handler=cmd_usage)
    d = actions.add_parser(
        "denials",
        help="refused checkouts by license, user, host and code over a time window",
        description="The checkouts either TMR server refused (NO_LICENSE_AVAILABLE, "
        "POLICY_DENIED, QUORUM_LOST, LICENSE_EXPIRED, UNKNOWN_LICENSE), from the backends' "
        "denial records (each refusal counted once, whichever backends kept it), per license, "
        "user, host and code: how many, seats asked, distinct client keys, which servers, "
        "first and last time, the latest rule text. The same request as `tmr report usage` "
        "(admin key or control socket).",
    )
    _report_options(d)
    d.set_defaults(handler=cmd_denials)


def _report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from", dest="since", metavar="WHEN", help="window start (default: --to - 30d)"
    )
    p.add_argument("--to", dest="until", metavar="WHEN", default="now", help="window end")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument(
        "--csv",
        action="store_true",
        help="CSV, one line per license (usage) or per group (denials)",
    )
    fmt.add_argument("--json", action="store_true", help="the full answer as JSON")
    p.add_argument("--endpoint", "-e", dest="endpoints", action="append", metavar="E",
                   help="client endpoint of the service (repeatable)")  # fmt: skip
    p.add_argument("--server-key", metavar="Z85|FILE", help="the service public key")
    p.add_argument("--cluster", metavar="FILE|DIR",
                   help="cluster.json of `tmr local up` (uses its admin key)")  # fmt: skip
    p.add_argument("--client-key", metavar="FILE",
                   help="this client's CURVE key pair (its public key in admin_keys)")  # fmt: skip
    p.add_argument("--ctl", metavar="SOCKET",
                   help="ask the active server's control socket instead (on its host)")  # fmt: skip
    p.add_argument("--client-id", metavar="ID", help="client id (default: generated)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="overall seconds, retries included (default 30)")  # fmt: skip


def fetch_usage(args: argparse.Namespace, since: float, until: float) -> UsageResult:
    if getattr(args, "ctl", None):
        reply = ctl_request(Path(args.ctl), "usage", timeout=args.timeout, since=since, until=until)
        if not reply.get("ok"):
            raise CtlError(f"{reply.get('code', 'ERROR')}: {reply.get('error', reply)}")
        return UsageResult(
            reply["since"],
            reply["until"],
            reply["server"],
            tuple(reply["licenses"]),
            tuple(reply["sources"]),
            reply.get("extra", {}),
        )
    cluster = args.cluster or os.environ.get("TMR_CLUSTER")
    if not args.client_key and cluster:
        # A `tmr local up` cluster names its administrator's key (in the servers' admin_keys).
        args.client_key = cluster_admin_key(cluster)
    with client_from_args(args) as client:
        # The SDK has no named method for this op yet: the generic call retries across
        # fail-over like every other request.
        return client.usage(since, until)


def _window(args: argparse.Namespace) -> tuple[float, float]:
    now = time.time()
    until = parse_when(args.until, now)
    since = parse_when(args.since, now) if args.since else until - DEFAULT_DAYS * 86400
    if until < since:
        raise UsageError("--from must not be after --to")
    if since < 0:
        raise UsageError("--from is before 1970")
    return since, until


def cmd_denials(args: argparse.Namespace) -> int:
    since, until = _window(args)
    result = fetch_usage(args, since, until)
    groups = result.extra.get("denials")
    if not isinstance(groups, list):
        raise UsageError(
            "no backend answered with denial records (backends from before schema 6 keep "
            f"none; {result.server} counted "
            f"{sum(int(lic.get('denials', 0)) for lic in result.licenses)} NO_LICENSE_AVAILABLE "
            "refusals itself: see tmr report usage)"
        )
    if args.json:
        keys = ("denials", "denials_total", "denials_truncated", "denials_read_from",
                "denials_unavailable")  # fmt: skip
        doc = {"since": result.since, "until": result.until, "server": result.server}
        doc.update({k: result.extra.get(k) for k in keys})
        json.dump(doc, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    elif args.csv:
        sys.stdout.write(denials_to_csv(groups, result.since, result.until))
    else:
        sys.stdout.write(format_denials(result, groups))
    return 0


def format_denials(r: UsageResult, groups: list[Any]) -> str:
    read = ", ".join(str(b) for b in r.extra.get("denials_read_from") or []) or "no backend"
    lines = [
        f"Denials from {_ts(r.since)} to {_ts(r.until)} (local time)",
        f"answered by {r.server}; denial records read from {read}",
        "",
    ]
    header = ["LICENSE", "USER", "HOST", "CODE", "DENIALS", "SEATS", "KEYS", "SERVERS",
              "FIRST", "LAST", "RULE"]  # fmt: skip
    rows = [
        [
            f"{g.get('firm')}:{g.get('product')}",
            str(g.get("user") or "-"),
            str(g.get("host") or "-"),
            str(g.get("code")),
            str(g.get("denials", 0)),
            str(g.get("seats_asked", 0)),
            str(g.get("keys", 0)),
            ",".join(str(x) for x in g.get("servers") or []),
            _ts(g.get("first")),
            _ts(g.get("last")),
            str(g.get("rule") or "")[:60],
        ]
        for g in groups
        if isinstance(g, dict)
    ]
    lines.append(format_table(header, rows) if rows else "no refusal in this window")
    lines.append(f"{r.extra.get('denials_total', 0)} refusal(s)")
    if r.extra.get("denials_truncated"):
        lines.append("note: only the most denied groups are listed; ask for a shorter window")
    for u in r.extra.get("denials_unavailable") or []:
        if isinstance(u, dict):
            lines.append(f"note: {u.get('backend')} not read: {u.get('reason')}")
    return "\n".join(lines) + "\n"


def cmd_usage(args: argparse.Namespace) -> int:
    since, until = _window(args)
    result = fetch_usage(args, since, until)
    if args.json:
        json.dump(result.to_wire(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    elif args.csv:
        sys.stdout.write(to_csv(result.licenses, result.since, result.until))
    else:
        sys.stdout.write(format_report(result))
    return 0


def _ts(t: Any) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(float(t)).strftime("%Y-%m-%d %H:%M:%S")


def format_report(r: UsageResult) -> str:
    sources = ", ".join(str(s.get("backend")) for s in r.sources)
    lines = [
        f"Usage from {_ts(r.since)} to {_ts(r.until)} (local time)",
        f"answered by {r.server}; usage record read from {sources or 'no backend'}",
        "",
    ]
    header = ["LICENSE", "LQ", "PEAK", "PEAK AT", "SEAT-HOURS", "CHECKOUTS", "RELEASES",
              "EXPIRIES", "DENIALS", "CLIENTS"]  # fmt: skip
    rows = [
        [
            f"{lic.get('firm')}:{lic.get('product')}",
            "-" if lic.get("quantity") is None else str(lic.get("quantity")),
            str(lic.get("peak_seats", 0)),
            _ts(lic.get("peak_at")),
            f"{float(lic.get('seat_hours', 0.0)):.2f}",
            str(lic.get("checkouts", 0)),
            str(lic.get("releases", 0)),
            str(lic.get("expiries", 0)),
            str(lic.get("denials", 0)),
            str(lic.get("clients", 0)),
        ]
        for lic in r.licenses
    ]
    lines.append(format_table(header, rows) if rows else "no license and no usage in this window")
    extra = r.extra
    if extra.get("complete") is False:
        lines.append(
            f"note: the usage record starts at {_ts(extra.get('record_starts'))}; earlier "
            "usage was trimmed (backend usage_retention)"
        )
    for s in r.sources:
        if s.get("truncated"):
            lines.append(f"note: {s.get('backend')} had more rows than one answer holds")
    for u in extra.get("unavailable") or []:
        if isinstance(u, dict):
            lines.append(f"note: {u.get('backend')} not read: {u.get('reason')}")
    if "denials_counted_by" in extra:
        lines.append(
            f"note: denials are those counted by {extra['denials_counted_by']} (no backend "
            "keeps denial records: each TMR server counts the checkouts it refused)"
        )
    else:
        read = ", ".join(str(b) for b in extra.get("denials_read_from") or []) or "no backend"
        lines.append(f"note: denials of both servers, from the denial records of {read}")
    return "\n".join(lines) + "\n"
