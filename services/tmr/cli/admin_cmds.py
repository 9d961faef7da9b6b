"""CLI: `tmr admin handles|queue|denials|release`, the administrator's view of who holds what.

Through the local control socket of the active TMR server (like `tmr ctl`), so only a local
user who may open that socket (group ``tmr``, mode 0660) can use it::

    tmr admin handles [--product FIRM:PRODUCT|PRODUCT] [--json]   # like FlexNet's lmstat -a
    tmr admin queue [--product FIRM:PRODUCT|PRODUCT] [--json]     # RLM's queued requests
    tmr admin denials [--product ...] [--limit N] [--json]        # DENIED lines of a report log
    tmr admin release HANDLE                                      # like FlexNet's lmremove

The user, host and pid shown are what each client said of itself (informational, not proof);
the CURVE key (``owner``) is the identity the server checked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tmr.ctl import CtlError, ctl_request

DEFAULT_SOCKET = "/run/tmr/server.sock"


def _product_filter(text: str) -> tuple[int | None, int]:
    """``FIRM:PRODUCT`` or ``PRODUCT`` -> (firm or None, product)."""
    firm, sep, product = text.rpartition(":")
    try:
        if sep:
            return int(firm), int(product)
        return None, int(product)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected PRODUCT or FIRM:PRODUCT (numbers)"
        ) from None


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _of_product(row: dict[str, Any], product: tuple[int | None, int] | None) -> bool:
    """Whether a handle or queue row is of `product` (PRODUCT or FIRM:PRODUCT; None: any)."""
    if product is None:
        return True
    firm, code = product
    return row.get("product") == code and (firm is None or row.get("firm") == firm)


def _aligned(table: Sequence[Sequence[str]]) -> list[str]:
    """The rows of a table (the header first) with their columns aligned."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]


def handle_rows(
    handles: list[dict[str, Any]], product: tuple[int | None, int] | None, now: float
) -> list[dict[str, Any]]:
    """The handles to show (filtered by product), each with its lease end as a wall time,
    oldest grant first."""
    rows = []
    for h in handles:
        if not _of_product(h, product):
            continue
        rows.append({**h, "lease_end": now + float(h.get("lease_left", 0.0))})
    rows.sort(key=lambda h: (h.get("granted_at", 0.0), h.get("handle", "")))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ("HANDLE", "LICENSE", "SEATS", "USER", "HOST", "PID", "SINCE", "LEASE END")
    table = [head]
    for h in rows:
        table.append(
            (
                str(h["handle"]),
                f"{h['firm']}:{h['product']}",
                str(h["seats"]),
                str(h.get("user") or "-"),
                str(h.get("host") or "-"),
                str(h.get("pid") or "-"),
                _when(float(h["granted_at"])),
                _when(float(h["lease_end"])) + ("" if h.get("committed", True) else " (pending)"),
            )
        )
    lines = _aligned(table)
    seats = sum(int(h["seats"]) for h in rows)
    lines.append(f"{len(rows)} handle(s), {seats} seat(s)")
    return "\n".join(lines)


def _handles(args: argparse.Namespace) -> int:
    reply = ctl_request(Path(args.socket), "handles", timeout=args.timeout)
    if not reply.get("ok"):
        raise CtlError(f"handles: {reply.get('error', 'refused')}")
    role = reply.get("role", "active")
    rows = handle_rows(list(reply.get("handles", [])), args.product, time.time())
    if args.json:
        json.dump({"role": role, "handles": rows}, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(format_table(rows))
    if role != "active":
        print(
            f"tmr admin: this server is {role}: only the active server holds the handles",
            file=sys.stderr,
        )
        return 1
    return 0


def queue_rows(
    places: list[dict[str, Any]], product: tuple[int | None, int] | None
) -> list[dict[str, Any]]:
    """The queued checkouts to show (filtered by product), per license in queue order."""
    rows = []
    for q in places:
        if not _of_product(q, product):
            continue
        rows.append(dict(q))
    rows.sort(key=lambda q: (q.get("firm", 0), q.get("product", 0), q.get("position", 0)))
    return rows


def format_queue_table(rows: list[dict[str, Any]]) -> str:
    head = ("LICENSE", "POS", "SEATS", "USER", "HOST", "PID", "SINCE", "HOLD LEFT", "CLIENT ID")
    table = [head]
    for q in rows:
        table.append(
            (
                f"{q['firm']}:{q['product']}",
                str(q["position"]),
                str(q["seats"]),
                str(q.get("user") or "-"),
                str(q.get("host") or "-"),
                str(q.get("pid") or "-"),
                _when(float(q["since"])),
                f"{float(q.get('hold_left', 0.0)):.1f}s",
                str(q.get("client_id", "")),
            )
        )
    lines = _aligned(table)
    seats = sum(int(q["seats"]) for q in rows)
    lines.append(f"{len(rows)} queued checkout(s), {seats} seat(s) wanted")
    return "\n".join(lines)


def _queue(args: argparse.Namespace) -> int:
    reply = ctl_request(Path(args.socket), "queue", timeout=args.timeout)
    if not reply.get("ok"):
        raise CtlError(f"queue: {reply.get('error', 'refused')}")
    role = reply.get("role", "active")
    rows = queue_rows(list(reply.get("queue", [])), args.product)
    if args.json:
        json.dump({"role": role, "queue": rows}, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(format_queue_table(rows))
    if role != "active":
        print(
            f"tmr admin: this server is {role}: only the active server holds the queue",
            file=sys.stderr,
        )
        return 1
    return 0


def denial_rows(
    denials: list[dict[str, Any]], product: tuple[int | None, int] | None, limit: int
) -> list[dict[str, Any]]:
    """The refusals to show (filtered by product), newest first, at most ``limit``."""
    rows = [d for d in denials if _of_product(d, product)]
    rows.sort(key=lambda d: (-float(d.get("at", 0.0)), str(d.get("id", ""))))
    return rows[:limit]


def format_denial_table(rows: list[dict[str, Any]]) -> str:
    head = ("WHEN", "LICENSE", "SEATS", "USER", "HOST", "PID", "CODE", "KEY", "WHY")
    table = [head]
    for d in rows:
        table.append(
            (
                _when(float(d["at"])),
                f"{d['firm']}:{d['product']}",
                str(d["seats"]),
                str(d.get("user") or "-"),
                str(d.get("host") or "-"),
                str(d.get("pid") or "-"),
                str(d["code"]),
                str(d.get("owner") or "-")[:12],
                str(d.get("rule") or "")[:80],
            )
        )
    lines = _aligned(table)
    lines.append(f"{len(rows)} refusal(s)")
    return "\n".join(lines)


def _denials(args: argparse.Namespace) -> int:
    reply = ctl_request(Path(args.socket), "denials", timeout=args.timeout)
    if not reply.get("ok"):
        raise CtlError(f"denials: {reply.get('error', 'refused')}")
    rows = denial_rows(list(reply.get("denials", [])), args.product, args.limit)
    if args.json:
        out = {k: reply.get(k) for k in ("role", "server", "recorded", "pending", "dropped")}
        json.dump({**out, "denials": rows}, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(format_denial_table(rows))
        if reply.get("dropped"):
            print(
                f"tmr admin: {reply['dropped']} refusal(s) not sent to the backends (buffer full)",
                file=sys.stderr,
            )
    return 0


def _release(args: argparse.Namespace) -> int:
    reply = ctl_request(Path(args.socket), "release", timeout=args.timeout, handle=args.handle)
    if not reply.get("ok"):
        code = reply.get("code", "ERROR")
        print(
            f"tmr admin: release {args.handle}: {code}: {reply.get('error', '')}", file=sys.stderr
        )
        return 1
    if args.json:
        json.dump(reply, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        who = "@".join(x for x in (reply.get("user"), reply.get("host")) if x) or "-"
        pid = f" pid {reply['pid']}" if reply.get("pid") else ""
        print(
            f"released {reply['handle']} ({reply['firm']}:{reply['product']}, "
            f"{reply['seats']} seat(s), {who}{pid}); committed by the backends"
        )
    return 0


def register(sub: Any, groups: dict[str, Any]) -> None:
    p = sub.add_parser(
        "admin",
        help="administrator's view of the active server: who holds what, who waits, free a handle",
        description="Through the local control socket of the active TMR server: list the "
        "handles (like FlexNet's lmstat -a) or free one (like lmremove / rlmremove). The user, "
        "host and pid are what each client said of itself (informational); the CURVE key "
        "(owner) is what the server checked.",
    )
    p.add_argument("--socket", default=DEFAULT_SOCKET, help="control socket path")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    ps = p.add_subparsers(dest="admin_command", metavar="ACTION")
    ps.required = True
    h = ps.add_parser("handles", help="list the handles: product, seats, user, host, pid, ...")
    h.add_argument(
        "--product",
        type=_product_filter,
        metavar="[FIRM:]PRODUCT",
        help="only this product (its product code, or firm code:product code)",
    )
    h.add_argument("--json", action="store_true", help="print JSON")
    h.set_defaults(handler=_handles)
    q = ps.add_parser(
        "queue",
        help="list the queued checkouts (client.checkout(..., wait=...)) per license in order",
        description="The checkouts waiting for a seat on the active server, per license in "
        "queue order (position 1 is admitted next). The queue is not replicated: after a "
        "failover the clients queue again on the new active server.",
    )
    q.add_argument(
        "--product",
        type=_product_filter,
        metavar="[FIRM:]PRODUCT",
        help="only this product (its product code, or firm code:product code)",
    )
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=_queue)
    d = ps.add_parser(
        "denials",
        help="list this server's recent refusals: who, what, why (like DENIED in a report log)",
        description="The checkouts this server refused lately (NO_LICENSE_AVAILABLE, "
        "POLICY_DENIED, QUORUM_LOST, LICENSE_EXPIRED, UNKNOWN_LICENSE), newest first, with the "
        "client's key, user, host and pid and the rule or reason. Kept in memory (the newest "
        "1000); the report over both servers and failovers is `tmr report denials`.",
    )
    d.add_argument(
        "--product",
        type=_product_filter,
        metavar="[FIRM:]PRODUCT",
        help="only this product (its product code, or firm code:product code)",
    )
    d.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (default 50)")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(handler=_denials)
    r = ps.add_parser(
        "release",
        help="free a handle (committed through the quorum, logged with who did it)",
        description="Free HANDLE whoever holds it: an ordinary release committed by two "
        "backends before this answers. The client learns it on its next heartbeat. Logged "
        "as a handle_removed event naming the local user who asked.",
    )
    r.add_argument("handle", metavar="HANDLE")
    r.add_argument("--json", action="store_true", help="print the answer as JSON")
    r.set_defaults(handler=_release)
