"""CLI: `tmr server run`, `tmr ctl`, `tmr local up|down|status`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tmr.ctl import ctl_request

CTL_COMMANDS = {
    "promote": "become the active TMR server (keepalived notify_master); gives up and stays "
    "standby while another server is alive as leader, unless --force",
    "demote": "become standby (keepalived notify_backup/fault/stop)",
    "health": "exit 0 only when the server is up and not fenced (keepalived track_script)",
    "status": "print the server's status as JSON",
    "handles": "print the current handles as JSON",
    "reload": "servers: re-read server.toml and the policy file, put in force the client "
    "allowlist, the admin keys and the policy, and name the other keys that changed (they "
    "need a restart); a bad file is refused and what is in force stays. Backends: re-read "
    "and re-verify the license container",
}


def _server_run(args: argparse.Namespace) -> int:
    # imported here: `tmr ctl` (keepalived's notify and health scripts) must not load the
    # configuration and its cryptography, 40-80 ms of every promote on a busy host
    from tmr.config import load_server_config
    from tmr.server.service import ServerService

    path = Path(args.config)
    return ServerService(load_server_config(path), config_path=path).run()


def _ctl(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {}
    if args.force:
        if args.cmd != "promote":
            print("tmr ctl: --force only goes with promote", file=sys.stderr)
            return 2
        extra["force"] = True
    reply = ctl_request(Path(args.socket), args.cmd, timeout=args.timeout, **extra)
    if args.cmd == "health" and not args.verbose:
        return 0 if reply.get("ok") else 1
    json.dump(reply, sys.stdout, indent=2 if sys.stdout.isatty() else None, default=str)
    sys.stdout.write("\n")
    return 0 if reply.get("ok") else 1


def _vrrp_notify(args: argparse.Namespace) -> int:
    import syslog

    from tmr.vrrp_notify import run_reader

    syslog.openlog("tmr-keepalived", 0, syslog.LOG_DAEMON)

    def log(message: str) -> None:
        syslog.syslog(syslog.LOG_INFO, message)

    return run_reader(
        Path(args.fifo),
        Path(args.socket),
        instance=args.instance or None,
        state_file=Path(args.state_file) if args.state_file else None,
        retry_seconds=args.retry_seconds,
        retry_interval=args.retry_interval,
        log=log,
        lock_file=Path(args.lock_file) if args.lock_file else None,
    )


def _local_up(args: argparse.Namespace) -> int:
    from tmr.local.cluster import local_up

    info = local_up(
        Path(args.dir),
        quantity=args.quantity,
        products=args.products,
        tmr_id=args.tmr_id,
        lease=args.lease,
        base_port=args.base_port,
        progress=not args.quiet,
        backend_timeout=args.backend_timeout,
        wait=not args.no_wait,
        timeout=args.timeout,
    )
    _print(info, args.json)
    return 0


def _local_down(args: argparse.Namespace) -> int:
    from tmr.local.cluster import local_down

    stopped = local_down(Path(args.dir))
    if not args.quiet:
        print(f"stopped {stopped} process(es)")
    return 0


def _local_status(args: argparse.Namespace) -> int:
    from tmr.local.cluster import local_status

    _print(local_status(Path(args.dir)), True)
    return 0


def _print(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    print(f"cluster file: {info['cluster_file']}")
    print(f"client endpoints: {' '.join(info['client_endpoints'])}")
    print(f"service public key: {info['service_public_key']}")
    for node in info["nodes"]:
        print(f"  {node['name']:<10} pid {node['pid']:<8} {node['endpoint']}")


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value >= 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def register(sub: Any, groups: dict[str, Any]) -> None:
    p = sub.add_parser(
        "server",
        help="TMR server: run the service",
        description="The TMR server presents the three backends as one virtual container.",
    )
    ps = p.add_subparsers(dest="server_command", metavar="ACTION")
    ps.required = True
    run = ps.add_parser("run", help="run the TMR server (standby until promoted)")
    run.add_argument("--config", required=True, help="server.toml")
    run.set_defaults(handler=_server_run)
    vn = ps.add_parser(
        "vrrp-notify",
        help="keepalived's vrrp_notify_fifo_script: MASTER -> promote, BACKUP/FAULT/STOP -> "
        "demote, one resident process (tmr.vrrp_notify)",
    )
    vn.add_argument("--socket", default="/run/tmr/server.sock", help="control socket path")
    vn.add_argument("--instance", default="", help="only this vrrp_instance (default: any)")
    vn.add_argument(
        "--state-file", default="", help="write each VRRP state here (the health script reads it)"
    )
    vn.add_argument(
        "--lock-file",
        default="",
        help="hold this file's lock while running (the health script takes it to learn that "
        "the reader is gone)",
    )
    vn.add_argument(
        "--retry-seconds",
        type=_non_negative,
        default=15.0,
        help="send a command that failed (tmr-server restarting) again for this long (15)",
    )
    vn.add_argument(
        "--retry-interval",
        type=_positive,
        default=0.05,
        help="seconds between two tries of a command that failed (0.05)",
    )
    vn.add_argument("fifo", help="keepalived's notify FIFO (keepalived appends it)")
    vn.set_defaults(handler=_vrrp_notify)

    c = sub.add_parser(
        "ctl",
        help="talk to a local service's control socket",
        description="Local control of a TMR server or backend: "
        + "; ".join(f"{k}: {v}" for k, v in CTL_COMMANDS.items()),
    )
    c.add_argument("--socket", default="/run/tmr/server.sock", help="control socket path")
    c.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    c.add_argument("-v", "--verbose", action="store_true", help="health: print the answer too")
    c.add_argument(
        "--force",
        action="store_true",
        help="promote: take over even while another TMR server is alive as the leader (a "
        "majority of backends heard it within leader_live_window). Without it, promote waits "
        "for that server to fall silent and gives up if it does not (promote_yielded), so a "
        "keepalived split brain never fences a working leader. With it, the other server is "
        "fenced at once: an operator override",
    )
    c.add_argument(
        "cmd", choices=sorted(CTL_COMMANDS), metavar="COMMAND", help=", ".join(CTL_COMMANDS)
    )
    c.set_defaults(handler=_ctl)

    lo = sub.add_parser(
        "local",
        help="a whole cluster (3 backends, 2 TMR servers) on 127.0.0.1",
        description="Start or stop a local cluster of real processes on loopback, "
        "for trying the product out and for the tests.",
    )
    ls = lo.add_subparsers(dest="local_command", metavar="ACTION")
    ls.required = True
    up = ls.add_parser(
        "up", help="generate keys and a license set, start, promote the first server"
    )
    up.add_argument("--dir", required=True, help="working directory for keys, configs, state, logs")
    up.add_argument("--quantity", type=int, default=20, help="LQ of the demo license (default 20)")
    up.add_argument(
        "--products",
        type=int,
        default=1,
        help="license sets to issue: products 42, 43, ... each with --quantity (default 1)",
    )
    up.add_argument("--tmr-id", type=int, default=7, help="TMR ID of the demo license (default 7)")
    up.add_argument(
        "--lease", type=float, default=30.0, help="lease seconds (default 30; at least 0.15)"
    )
    up.add_argument("--base-port", type=int, default=0, help="first port (default: free ports)")
    up.add_argument(
        "--backend-timeout",
        type=float,
        default=1.0,
        help="seconds without an answer before a backend counts as down (default 1)",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the cluster to serve before giving up (default 60)",
    )
    up.add_argument(
        "--no-wait",
        action="store_true",
        help="return once the first server is promoted, not once the cluster serves "
        "(an active server answering list with all backends up)",
    )
    up.add_argument("--json", action="store_true", help="print cluster.json")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    up.set_defaults(handler=_local_up)
    down = ls.add_parser("down", help="stop the cluster's processes")
    down.add_argument("--dir", required=True)
    down.add_argument("-q", "--quiet", action="store_true")
    down.set_defaults(handler=_local_down)
    st = ls.add_parser("status", help="print cluster.json with which processes are alive")
    st.add_argument("--dir", required=True)
    st.set_defaults(handler=_local_status)
