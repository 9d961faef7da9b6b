"""`tmr workload ...`: the load generator, the handle-table capture and the checker.

    tmr workload run --cluster DIR --clients 20 --duration 60 --seed 7 --out history.jsonl
    tmr workload run -e tcp://10.0.0.100:22350 --server-key service.pub --out history.jsonl
    tmr workload handles --socket /run/tmr/server.sock --out handles.json
    tmr workload check history.jsonl --lq 20 --handles handles.json [--lq-schedule FILE]

Where `run` connects: ``--endpoint`` / ``--server-key``, else the cluster file (``--cluster``
or ``$TMR_CLUSTER``), else ``$TMR_ENDPOINTS`` / ``$TMR_SERVER_KEY`` (as `tmr client`).

Exit codes: ``run`` 0 when it finished (failed operations are data, not errors), 1 when
clients got stuck; ``handles`` 0, or 1 when no server is active; ``check`` 0 clean,
1 on any violation, 2 when an input file is malformed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmr.cli.client_cmds import read_cluster_file
from tmr.cli.signals import stop_signals
from tmr.client import load_client_keys
from tmr.errors import ConfigError, UsageError
from tmr.workload.checker import CheckOptions, check, parse_events, read_schedule
from tmr.workload.generator import AT_END, WorkloadConfig, run_workload
from tmr.workload.history import (
    HistoryError,
    capture_handles,
    read_handles,
    read_history,
    write_json,
)

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_VIOLATION = 1
EXIT_BAD_INPUT = 2


def register(sub: SubParsers, groups: dict[str, SubParsers]) -> None:
    """Add `tmr workload ...` to the `tmr` command."""
    help_text = "load generator and invariant checker of the end-to-end tests"
    parser = sub.add_parser("workload", help=help_text, description=help_text + ".")
    actions = parser.add_subparsers(dest="workload_command", metavar="ACTION")
    actions.required = True

    p = actions.add_parser(
        "run",
        help="run N concurrent clients (checkout, hold, heartbeat, release) into a history",
        description="Run N concurrent SDK clients, each in a loop of checkout -> hold "
        "(random) -> heartbeat -> release, for --duration seconds, recording every operation "
        "with its start and end times and outcome in a JSON-lines history. Seeded.",
    )
    conn = p.add_argument_group("connection")
    conn.add_argument(
        "--endpoint",
        "-e",
        dest="endpoints",
        action="append",
        metavar="E",
        help="client endpoint of the service, e.g. tcp://10.0.0.100:22350 (repeatable)",
    )
    conn.add_argument("--server-key", metavar="Z85|FILE", help="the service public key")
    conn.add_argument("--cluster", metavar="FILE|DIR", help="cluster.json of `tmr local up`")
    conn.add_argument("--client-key", metavar="FILE", help="client CURVE key pair (allowlist)")
    conn.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="per request (default 10)"
    )
    conn.add_argument(
        "--attempt-timeout",
        type=float,
        default=0.5,
        metavar="S",
        help="per attempt before trying the next endpoint (default 0.5)",
    )
    p.add_argument("--clients", type=int, default=20, metavar="N", help="default 20")
    p.add_argument("--duration", type=float, default=60.0, metavar="S", help="default 60")
    p.add_argument("--seed", type=int, default=None, metavar="N", help="default: random")
    p.add_argument("--out", default="history.jsonl", metavar="FILE", help="the history")
    p.add_argument("--firm", type=int, default=None, metavar="F", help="default: the license")
    p.add_argument("--product", type=int, default=None, metavar="P")
    p.add_argument("--seats-max", type=int, default=2, metavar="N", help="seats per checkout")
    p.add_argument("--hold-max", type=float, default=5.0, metavar="S", help="hold 0..S s")
    p.add_argument(
        "--think-max", type=float, default=0.5, metavar="S", help="pause after a refusal"
    )
    p.add_argument(
        "--at-end",
        choices=AT_END,
        default="release",
        help="what to do with the seats held at the end: release them (default), or renew "
        "them once and leave them held without heartbeats, to compare with the handle "
        "table (`tmr workload handles`) taken within the lease",
    )
    p.add_argument("--progress", type=float, default=5.0, metavar="S", help="progress every S")
    p.add_argument("--client-prefix", metavar="ID", help="client ids are PREFIX-000, ...")
    p.set_defaults(handler=cmd_run)

    p = actions.add_parser(
        "handles",
        help="save the active server's handle table (with the time it was taken)",
        description="Ask the TMR servers' control sockets which one is active and save its "
        "handle table, with the UNIX time it was taken, for `tmr workload check --handles`.",
    )
    p.add_argument("--socket", action="append", metavar="PATH", help="control socket (repeatable)")
    p.add_argument("--cluster", metavar="FILE|DIR", help="cluster.json: its servers' sockets")
    p.add_argument("--out", default="handles.json", metavar="FILE", help="default handles.json")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S")
    p.set_defaults(handler=cmd_handles)

    p = actions.add_parser(
        "check",
        help="check a history: I1 seats <= LQ, I7 no lost grant, I8 one seat set per request",
        description="Check a workload history (and the handle table taken after it): "
        "(I1) the seats certainly held never exceed the LQ in force, (I7) no acknowledged "
        "grant is lost, (I8) each checkout takes one seat set; report the client-visible "
        "unavailability. Prints a summary, writes JSON, exits 1 on any violation.",
    )
    p.add_argument("history", metavar="HISTORY", help="history.jsonl of `tmr workload run`")
    p.add_argument("--lq", type=int, default=None, metavar="N", help="the LQ (license quantity)")
    p.add_argument(
        "--lq-schedule",
        metavar="FILE",
        help='LQ changes: JSON list of {"at": UNIX time, "lq": N} (in force from then on)',
    )
    p.add_argument(
        "--schedule-margin",
        type=float,
        default=0.5,
        metavar="S",
        help="around a change the larger LQ applies for S s (default 0.5)",
    )
    p.add_argument("--handles", metavar="FILE", help="the handle table taken after the run")
    p.add_argument(
        "--handles-time",
        type=float,
        default=None,
        metavar="UNIX",
        help="when the table was taken (default: recorded in the file, else its mtime)",
    )
    p.add_argument(
        "--clock-skew",
        type=float,
        default=0.5,
        metavar="S",
        help="wall-clock difference allowed between hosts (default 0.5)",
    )
    p.add_argument(
        "--gap", type=float, default=0.5, metavar="S", help="list gaps over S s (default 0.5)"
    )
    p.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="LABEL@UNIX",
        help="report the time from this event to the next successful operation (repeatable)",
    )
    p.add_argument(
        "--fail-on",
        default="",
        metavar="OUTCOMES",
        help="comma-separated outcomes that are violations too, e.g. unknown,QUORUM_LOST "
        "or release:unknown",
    )
    p.add_argument("--out", metavar="FILE", help="the JSON report (default HISTORY.check.json)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result line")
    p.set_defaults(handler=cmd_check)


# ---------------------------------------------------------------------------- run


def _connection(args: argparse.Namespace) -> tuple[list[str], str, dict[str, Any]]:
    """(endpoints, server key, the cluster file's JSON or {})."""
    endpoints: list[str] | None = args.endpoints
    server_key: str | None = args.server_key
    cluster_doc: dict[str, Any] = {}
    cluster = args.cluster or os.environ.get("TMR_CLUSTER") or None
    if cluster:
        cluster_endpoints, cluster_key = read_cluster_file(cluster)
        endpoints = endpoints or cluster_endpoints
        server_key = server_key or cluster_key
        cluster_doc = _cluster_doc(cluster)
    if not endpoints:
        env = os.environ.get("TMR_ENDPOINTS", "")
        endpoints = [e.strip() for e in env.split(",") if e.strip()]
    server_key = server_key or os.environ.get("TMR_SERVER_KEY") or None
    if not endpoints:
        raise UsageError("no endpoint: give --endpoint E or --cluster DIR (or set TMR_ENDPOINTS)")
    if not server_key:
        raise UsageError("no server key: give --server-key or --cluster (or set TMR_SERVER_KEY)")
    return endpoints, server_key, cluster_doc


def _cluster_doc(cluster: str) -> dict[str, Any]:
    p = Path(cluster)
    if p.is_dir():
        p = p / "cluster.json"
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read cluster file {p}: {exc}") from None
    return doc if isinstance(doc, dict) else {}


def cmd_run(args: argparse.Namespace) -> int:
    endpoints, server_key, cluster = _connection(args)
    firm = args.firm if args.firm is not None else cluster.get("firm_code")
    product = args.product if args.product is not None else cluster.get("product_code")
    cfg = WorkloadConfig(
        endpoints=endpoints,
        server_key=server_key,
        firm=firm if isinstance(firm, int) else None,
        product=product if isinstance(product, int) else None,
        clients=args.clients,
        duration=args.duration,
        seed=args.seed if args.seed is not None else secrets.randbelow(2**31),
        seats_max=args.seats_max,
        hold_max=args.hold_max,
        think_max=args.think_max,
        timeout=args.timeout,
        attempt_timeout=args.attempt_timeout,
        at_end=args.at_end,
        progress_interval=args.progress,
        client_keys=load_client_keys(args.client_key) if args.client_key else None,
        client_prefix=args.client_prefix,
    )
    stop = threading.Event()
    try:
        with stop_signals(lambda _signum: stop.set()):
            result = run_workload(cfg, args.out, stop=stop)
    except ValueError as exc:  # e.g. a malformed server key
        raise UsageError(str(exc)) from None
    return result.exit_code


# ---------------------------------------------------------------------------- handles


def cmd_handles(args: argparse.Namespace) -> int:
    sockets = [Path(s) for s in args.socket or []]
    if args.cluster:
        doc = _cluster_doc(args.cluster)
        nodes = doc.get("nodes") or []
        sockets += [
            Path(n["ctl_socket"])
            for n in nodes
            if isinstance(n, dict) and n.get("role") == "server" and n.get("ctl_socket")
        ]
    if not sockets:
        raise UsageError("give --socket PATH (repeatable) or --cluster FILE")
    snap = capture_handles(sockets, timeout=args.timeout)
    write_json(args.out, snap.to_json())
    print(
        f"saved {len(snap.handles)} handle(s) ({sum(h.seats for h in snap.handles)} seats) "
        f"of the active server {snap.server or snap.source} to {args.out}"
    )
    return 0


# ---------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    if args.lq is not None and args.lq < 0:
        raise UsageError("--lq must be >= 0")
    try:
        history = read_history(args.history)
        opts = CheckOptions(
            lq=args.lq,
            schedule=read_schedule(args.lq_schedule) if args.lq_schedule else (),
            schedule_margin=args.schedule_margin,
            handles=read_handles(args.handles, at=args.handles_time) if args.handles else None,
            clock_skew=args.clock_skew,
            gap_threshold=args.gap,
            events=parse_events(args.event),
            fail_on=frozenset(s.strip() for s in args.fail_on.split(",") if s.strip()),
        )
        report = check(history, opts)
    except HistoryError as exc:
        print(f"tmr: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = args.out or f"{args.history}.check.json"
    write_json(out, report.to_json())
    if args.quiet:
        print(
            f"result: OK ({len(history.ops)} ops)"
            if report.ok
            else f"result: {len(report.violations)} VIOLATION(S)"
        )
    else:
        print(report.summary())
    print(f"report: {out}")
    return 0 if report.ok else EXIT_VIOLATION
