"""`make bench-lab`: failover on the real VIP of the podman lab, kill after kill (issue 17).

Drives a running lab (`make lab`; or a molecule scenario's lab through LAB_NAME, LAB_PREFIX,
LAB_SUBNET) from the controller with `tests.lab.labctl`: a workload on client-1 checks seats
out and in through the VIP, and the active TMR host is killed ``--kills`` times, in two kinds
(``--kind both``: service, host, host, service, ... so that each server gets both):

- ``service``: ``kill -9`` of tmr-server (systemd restarts it; keepalived, bound to it, stops
  and sends its priority-0 advert, so the VIP moves at once);
- ``host``: ``podman kill`` of the whole host (power failure: the standby's keepalived notices
  the silence after 3 advert intervals plus its skew).

For each kill, times from the kill (UNIX time when the kill command returned) to:

- ``vrrp_master``: the standby's keepalived entered MASTER (its journal);
- ``promote``: the standby's tmr-server logged the ``promote`` (the notify script's
  `tmr ctl promote` arrived) and ``active``: its takeover finished (the ``active`` event);
- ``first_checkout``: the first checkout granted to the workload after the kill by the new
  server: its name is in the handle id, or it was answered after the new server became active
  (a checkout the killed server granted whose reply was lost, answered again by the new server
  to the client's retry: the same request id gets the same handle);
- ``first_heartbeat``: the first heartbeat answered ok once the new server was active.

The kill's time is the host's clock right before ``systemctl kill`` (the lab hosts share the
controller's kernel clock), or, for a host, the instant ``podman kill`` was started: both
include the kill command's own latency, so the times are upper bounds.

Then p50 and max of each, and the workload checker over the whole run (I1 seats <= LQ, I7
no lost grant, I8 no duplicate), with the handle table of the active server at the end.
``--soak S`` instead runs the workload for S seconds without a fault and counts the VRRP
transitions in both servers' keepalived journals (a false failover is any of them).

Writes ``bench/results/failover-vip.json`` (``--out``). Every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_OUT = RESULTS / "failover-vip.json"
KINDS = ("service", "host")
# --kind both: each server gets both kinds (a kill moves the active role to the other server)
BOTH = ("service", "host", "host", "service")
# the goal of issue 17: kill -> first granted checkout
GOAL_P50 = 1.0
GOAL_MAX = 1.5
METRICS = ("vrrp_master", "promote", "active", "first_checkout", "first_heartbeat")

# keepalived's journal: "(TMR) Entering MASTER STATE" (2.x)
VRRP_STATES = ("MASTER", "BACKUP", "FAULT")


# ------------------------------------------------------------------ parsing (unit-tested)


@dataclass(frozen=True)
class JournalRecord:
    at: float  # UNIX time
    ident: str  # SYSLOG_IDENTIFIER (keepalived, tmr-keepalived, tmr) or the unit
    message: str


class ParseError(ValueError):
    """A journal line or a log record that cannot be read."""


def parse_journal(lines: Iterable[str]) -> list[JournalRecord]:
    """`journalctl -o json` output: one JSON object per line. The time is the server's own
    ``ts`` for a TMR JSON log record (the instant it was logged), else journald's
    ``__REALTIME_TIMESTAMP`` (microseconds). Blank lines are skipped; anything else that is
    not a journal record raises `ParseError`."""
    out: list[JournalRecord] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise ParseError(f"journal line {n}: not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ParseError(f"journal line {n}: not an object")
        msg = doc.get("MESSAGE")
        if isinstance(msg, list):  # journald gives non-UTF-8 messages as a byte array
            msg = bytes(int(b) for b in msg).decode("utf-8", "replace")
        if not isinstance(msg, str):
            continue  # a record without a text message (binary blob): nothing to find there
        try:
            at = int(doc["__REALTIME_TIMESTAMP"]) / 1e6
        except (KeyError, TypeError, ValueError):
            raise ParseError(f"journal line {n}: no __REALTIME_TIMESTAMP") from None
        event = tmr_event(msg)
        if event is not None and "ts" in event:
            at = parse_ts(str(event["ts"]))
        ident = str(doc.get("SYSLOG_IDENTIFIER") or doc.get("_SYSTEMD_UNIT") or "")
        out.append(JournalRecord(at, ident, msg))
    return out


def parse_ts(text: str) -> float:
    """A TMR log ``ts`` ("2026-12-05T06:40:01.123Z", UTC) as UNIX time."""
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ParseError(f"not a log timestamp: {text!r}") from None
    if when.tzinfo is None:
        raise ParseError(f"log timestamp without a time zone: {text!r}")
    return when.timestamp()


def tmr_event(message: str) -> dict[str, Any] | None:
    """The record of a TMR JSON log line (it has ``event``), else None."""
    if not message.startswith("{"):
        return None
    try:
        doc = json.loads(message)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and "event" in doc else None


def vrrp_state(message: str) -> str | None:
    """MASTER, BACKUP or FAULT when the line is keepalived entering that state."""
    for state in VRRP_STATES:
        if f"Entering {state} STATE" in message:
            return state
    return None


def first_after(records: Sequence[JournalRecord], after: float, what: str) -> float | None:
    """The time of the first record at or after `after` that is `what`: ``vrrp_master``
    (keepalived entered MASTER) or a TMR log event name (``promote``, ``active``)."""
    for rec in sorted(records, key=lambda r: r.at):
        if rec.at < after:
            continue
        if what == "vrrp_master":
            if vrrp_state(rec.message) == "MASTER":
                return rec.at
            continue
        event = tmr_event(rec.message)
        if event is not None and event.get("event") == what:
            return rec.at
    return None


def vrrp_transitions(records: Iterable[JournalRecord], start: float, end: float) -> list[str]:
    """keepalived state entries in [start, end], as "STATE@time"."""
    return [
        f"{state}@{rec.at:.3f}"
        for rec in records
        if start <= rec.at <= end and (state := vrrp_state(rec.message)) is not None
    ]


def handle_server(handle: str) -> str | None:
    """The server that granted a handle: ids are ``h<epoch counter>-<server>-<hex>``."""
    head, sep, rest = handle.partition("-")
    server, sep2, tail = rest.rpartition("-")
    if not (sep and sep2 and head[:1] == "h" and head[1:].isdigit() and server and tail):
        return None
    return server


def first_op_after(
    history: Iterable[str],
    after: float,
    op: str,
    server: str | None = None,
    server_active: float | None = None,
) -> float | None:
    """End time (UNIX) of the first `op` answered ok that ended after `after`, from the lines
    of a workload history (`tmr.workload.history`); with `server`, only a checkout whose
    handle that server granted (a reply of the killed server can land just after the kill),
    or, with `server_active` (when `server` became active), one answered after that instant:
    only the new server answers then, and a checkout the killed server granted whose reply
    was lost is answered again by the new one (same request id, same handle)."""
    best: float | None = None
    for line in history:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # the line being written when the history was read
        if not isinstance(rec, dict) or rec.get("type") != "op":
            continue
        if rec.get("op") != op or rec.get("outcome") != "ok":
            continue
        end = rec.get("end_wall")
        if not isinstance(end, (int, float)):
            continue
        granted_by = handle_server(str(rec.get("handle") or ""))
        new_server = server is None or granted_by == server
        if not new_server and (server_active is None or end <= server_active):
            continue
        if end > after and (best is None or end < best):
            best = float(end)
    return best


def kill_time(output: str) -> float:
    """The UNIX time `date +%s.%N` printed on the first line of `output`."""
    first = output.strip().splitlines()[0] if output.strip() else ""
    try:
        at = float(first)
    except ValueError:
        raise ParseError(f"not a time from date +%s.%N: {first!r}") from None
    if not math.isfinite(at) or at <= 0:
        raise ParseError(f"not a time from date +%s.%N: {first!r}")
    return at


def podman_time(text: str) -> float:
    """`podman inspect` time ("2026-12-05 06:45:55.294345758 +0000 UTC") as UNIX time."""
    parts = text.split()
    if len(parts) < 3:
        raise ParseError(f"not a podman time: {text!r}")
    day, clock, offset = parts[:3]
    whole, _, frac = clock.partition(".")
    try:
        when = dt.datetime.strptime(f"{day} {whole} {offset}", "%Y-%m-%d %H:%M:%S %z")
        nanos = int(frac.ljust(9, "0")[:9]) if frac else 0
    except ValueError:
        raise ParseError(f"not a podman time: {text!r}") from None
    if when.year < 2000:  # podman's zero time: the container never finished
        raise ParseError(f"the container has not finished: {text!r}")
    return when.timestamp() + nanos / 1e9


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank: a value that was measured."""
    if not values:
        raise ValueError("no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} not in [0, 1]")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summarize(kills: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """p50 and max (seconds after the kill) of every metric, over the kills that have it."""
    out: dict[str, dict[str, float | int | None]] = {}
    for metric in METRICS:
        values = [k[metric] for k in kills if isinstance(k.get(metric), (int, float))]
        out[metric] = {
            "n": len(values),
            "p50": round(percentile(values, 0.5), 3) if values else None,
            "max": round(max(values), 3) if values else None,
        }
    return out


def goal_met(kills: Sequence[dict[str, Any]]) -> bool:
    """Every kill has a first granted checkout, their p50 < GOAL_P50 and max < GOAL_MAX."""
    fc = summarize(kills)["first_checkout"]
    p50, top = fc["p50"], fc["max"]
    return bool(
        kills and fc["n"] == len(kills) and p50 is not None and top is not None
        and p50 < GOAL_P50 and top < GOAL_MAX
    )  # fmt: skip


# ------------------------------------------------------------------ the lab run


@dataclass
class Kill:
    n: int
    kind: str
    host: str  # the active server killed
    standby: str  # the server that took over
    at: float  # UNIX time of the kill
    vrrp_master: float | None = None
    promote: float | None = None
    active: float | None = None
    first_checkout: float | None = None
    first_heartbeat: float | None = None
    landed: float | None = None  # host kill: podman's time of death after the kill command


def _journal(lab: Any, host: str, since: float) -> list[JournalRecord]:
    since_s = dt.datetime.fromtimestamp(since - 1, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    proc = lab.sh(
        host,
        f"journalctl -o json --no-pager --since '{since_s}' -u keepalived -u tmr-server",
        timeout=30,
        check=False,
    )
    return parse_journal(proc.stdout.splitlines())


def _history(lab: Any, wl: Any) -> list[str]:
    out: str = lab.sh("client-1", f"cat {wl.remote}", timeout=30, check=False).stdout
    return out.splitlines()


def _rel(t: float | None, at: float) -> float | None:
    return None if t is None else round(t - at, 3)


def measure_kill(lab: Any, wl: Any, kind: str, n: int = 1, *, settle: float = 1.0) -> Kill:
    """Kill the active TMR host's service or the host (`kind`) while the workload `wl` runs
    through the VIP; wait until the other server is active with the VIP and has granted
    checkouts; read the times from its journal and the workload history; heal (boot the host;
    systemd restarts a killed tmr-server) and wait for a whole cluster again."""
    from tests.lab.labctl import SERVERS, Event, say

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    active = lab.wait_healthy(180)
    standby = next(s for s in SERVERS if s != active)
    # steady state: the workload is being served before the kill
    wl.wait_granted(time.time(), n=3, timeout=60)
    time.sleep(settle)  # not at the instant the last grants came in
    landed = None
    if kind == "service":
        # the host's own clock (the lab hosts share the controller's kernel clock) right
        # before the kill: `podman exec` takes 50-300 ms to get there
        out = lab.sh(active, "date +%s.%N; systemctl kill --signal=SIGKILL tmr-server").stdout
        at = kill_time(out)
        label = f"kill -9 tmr-server on {active}"
    else:
        # the instant `podman kill` is started: the host dies within it, 0.05-0.4 s later on
        # a busy machine (`landed`: podman's record of the death, which can itself lag), so
        # the times of a host kill are upper bounds
        at = time.time()
        lab.podman("kill", lab.container(active))
        lab.forget_ssh()
        fmt = "{{.State.FinishedAt}}"
        died = podman_time(lab.podman("inspect", "--format", fmt, lab.container(active)))
        landed = round(died - at, 3)
        label = f"kill host {active}"
    lab.events.append(Event(label, at))
    say(f"event: {label} at {at:.3f}")
    kill = Kill(n, kind, active, standby, at)
    if kind == "host":
        kill.landed = landed
    lab.wait_for(
        f"{standby} active with the VIP",
        lambda: lab.vip_holders() == [standby] and lab.active() == standby,
        60,
    )
    lab.wait_for(
        f"a checkout granted by {standby}",
        lambda: first_op_after(_history(lab, wl), at, "checkout", standby),
        60,
        interval=0.5,
    )
    journal = _journal(lab, standby, at)
    kill.vrrp_master = _rel(first_after(journal, at, "vrrp_master"), at)
    kill.promote = _rel(first_after(journal, at, "promote"), at)
    became_active = first_after(journal, at, "active")
    kill.active = _rel(became_active, at)
    # a checkout granted by the new server (its name is in the handle id); a heartbeat answered
    # ok at or after the new server became active (before that only the killed one answered)
    kill.first_checkout = _rel(
        first_op_after(_history(lab, wl), at, "checkout", standby, became_active), at
    )
    hb_after = at if became_active is None else became_active - 0.001
    if first_op_after(_history(lab, wl), hb_after, "heartbeat") is None:
        lab.wait_for(
            "a heartbeat after the kill",
            lambda: first_op_after(_history(lab, wl), hb_after, "heartbeat"),
            30,
            interval=0.5,
        )
    kill.first_heartbeat = _rel(first_op_after(_history(lab, wl), hb_after, "heartbeat"), at)
    say(
        f"kill {n} ({kind} {active}): VRRP master {kill.vrrp_master} s, promote "
        f"{kill.promote} s, active {kill.active} s, first checkout "
        f"{kill.first_checkout} s, first heartbeat {kill.first_heartbeat} s"
    )
    if kind == "host":
        lab.start_host(active)
    lab.wait_healthy(180)
    return kill


def run_kills(args: argparse.Namespace) -> dict[str, Any]:
    from tests.lab.labctl import Lab, check, say

    lab = Lab()
    say(f"lab {lab.name}: VIP {lab.vip}; {args.kills} kills ({args.kind}), {args.clients} clients")
    lab.wait_healthy(180)
    wl = lab.start_workload(
        "failover-vip",
        duration=args.max_seconds,
        clients=args.clients,
        seed=17,
        extra=["--at-end", "abandon", "--hold-max", str(args.hold_max)],
    )
    kinds = BOTH if args.kind == "both" else (args.kind,)
    kills: list[Kill] = []
    try:
        for n in range(args.kills):
            kills.append(measure_kill(lab, wl, kinds[n % len(kinds)], n + 1, settle=args.settle))
    finally:
        history = wl.stop()
    handles = wl.handles()
    report = check(history, lq=args.lq, handles=handles, events=lab.events)
    rows = [asdict(k) for k in kills]
    summary = summarize(rows)
    return {
        "kills": rows,
        "summary": summary,
        "goal": {"p50_below": GOAL_P50, "max_below": GOAL_MAX, "met": goal_met(rows)},
        "checker": {
            "ok": report["ok"],
            "violations": report.get("violations", [])[:10],
            "counts": report.get("counts"),
            "max_seats_held": report.get("max_seats_held"),
            "ops": report["run"]["ops"],
        },
    }


def run_soak(args: argparse.Namespace) -> dict[str, Any]:
    from tests.lab.labctl import SERVERS, Lab, check, say

    lab = Lab()
    active = lab.wait_healthy(180)
    say(f"soak: {args.soak:g} s at {args.clients} clients, hold 0..{args.hold_max} s, no fault")
    wl = lab.start_workload(
        "failover-vip-soak",
        duration=args.soak,
        clients=args.clients,
        seed=18,
        extra=["--at-end", "abandon", "--hold-max", str(args.hold_max), "--think-max", "0"],
    )
    start = wl.started
    history = wl.wait(args.soak + 120)
    end = time.time()
    handles = wl.handles()
    report = check(history, lq=args.lq, handles=handles)
    transitions = {s: vrrp_transitions(_journal(lab, s, start), start, end) for s in SERVERS}
    roles = {
        s: [
            f"{e['event']}@{r.at:.3f}"
            for r in _journal(lab, s, start)
            if start <= r.at <= end
            and (e := tmr_event(r.message)) is not None
            and e.get("event") in ("promote", "demote", "active", "fenced")
        ]
        for s in SERVERS
    }
    return {
        "soak": {
            "seconds": round(end - start, 1),
            "clients": args.clients,
            "active_before": active,
            "active_after": lab.active(),
            "vrrp_transitions": transitions,
            "vrrp_transition_count": sum(len(v) for v in transitions.values()),
            "role_events": roles,
            "checker_ok": report["ok"],
            "ops": report["run"]["ops"],
            "counts": report.get("counts"),
        }
    }


TIMER_VARS = (
    "keepalived_advert_int",
    "keepalived_nopreempt",
    "keepalived_health_interval",
    "keepalived_health_timeout",
    "keepalived_health_fall",
    "keepalived_health_rise",
    "tmr_server_probe_interval",
    "tmr_server_leader_live_window",
    "tmr_server_backend_timeout",
)


def timers(lab_vars: Path) -> dict[str, Any]:
    """The failover timers as the role defaults and the lab's inventory set them, and the
    SDK's retry constants (for the JSON)."""
    import inspect

    from tmr.client import _retry as ch
    from tmr.client import client as sdk

    repo = Path(__file__).resolve().parents[1]
    out: dict[str, Any] = {}
    for f in (
        repo / "roles/keepalived/defaults/main.yml",
        repo / "roles/tmr_server/defaults/main.yml",
        lab_vars,
    ):
        for line in f.read_text().splitlines():  # plain `name: value` lines of these files
            name, sep, value = line.partition(":")
            if sep and name in TIMER_VARS:
                out[name] = value.strip()
    out["sdk"] = {
        "attempt_timeout": inspect.signature(sdk.Client).parameters["attempt_timeout"].default,
        "attempt_growth": ch.ATTEMPT_GROWTH,
        "attempt_timeout_max": ch.ATTEMPT_TIMEOUT_MAX,
        "not_active_backoff_min": ch.NOT_ACTIVE_BACKOFF_MIN,
        "not_active_backoff_max": ch.NOT_ACTIVE_BACKOFF_MAX,
    }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.failover_vip", description=__doc__)
    p.add_argument("--kills", type=int, default=10, help="kills of the active host (default 10)")
    p.add_argument("--kind", choices=(*KINDS, "both"), default="both")
    p.add_argument("--clients", type=int, default=20, help="workload clients (default 20)")
    p.add_argument("--hold-max", type=float, default=1.0, help="hold 0..S s (default 1)")
    p.add_argument("--lq", type=int, default=20, help="the lab license's seats")
    p.add_argument("--settle", type=float, default=1.0, help="seconds before each kill")
    p.add_argument("--max-seconds", type=float, default=1800, help="workload duration bound")
    p.add_argument("--soak", type=float, default=0, help="S: no kills, count VRRP transitions")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.kills < 1 and not args.soak:
        p.error("--kills must be at least 1")
    doc: dict[str, Any] = {}
    if args.out.exists():
        try:
            doc = json.loads(args.out.read_text())
        except ValueError:
            doc = {}
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["timers"] = timers(Path(__file__).resolve().parents[1] / "inventory/lab/group_vars/all.yml")
    load = [round(x, 2) for x in os.getloadavg()]
    machine: dict[str, Any] = {"cores": os.cpu_count(), "load_at_start": load}
    if args.soak:  # its own key: the kills of an earlier run stay in the file
        doc.update(run_soak(args))
        doc["soak"]["when"] = when
        doc["soak"]["machine"] = machine
        ok = doc["soak"]["vrrp_transition_count"] == 0 and doc["soak"]["checker_ok"]
    else:
        doc["when"] = when
        doc["machine"] = machine
        doc.update(run_kills(args))
        ok = doc["checker"]["ok"]
        s = doc["summary"]
        print(f"{'#':>3} {'kind':<8} {'host':<6}" + "".join(f"{m:>16}" for m in METRICS))
        for k in doc["kills"]:
            print(
                f"{k['n']:>3} {k['kind']:<8} {k['host']:<6}"
                + "".join(f"{'-' if k[m] is None else k[m]:>16}" for m in METRICS)
            )
        for stat in ("p50", "max"):
            print(f"{stat:>3} {'':<8} {'':<6}" + "".join(f"{s[m][stat]!s:>16}" for m in METRICS))
        met = "MET" if doc["goal"]["met"] else "NOT MET"
        print(f"goal p50 < {GOAL_P50} s, max < {GOAL_MAX} s: {met}")
    machine["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
