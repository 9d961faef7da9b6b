"""The reliability table of the TMR source document, row by row, on the six lab hosts.

A workload of 20 clients (checkout, hold, heartbeat, release) runs on client-1 against the VIP
for the whole scenario. Each row's state is produced for real; then a checkout probe from
client-1 must give the table's "Client Access" (ok: granted, or a typed "all seats taken";
error: refused with a typed error and no checkout granted to the workload), the VIP must be on
exactly one host, and the faults are healed before the next row. Then a keepalived split
brain, a failover onto a host whose notify FIFO reader was killed (its health script
promotes on the VIP), and a host without its reader that lost the VIP (its health script
demotes the server, and the host can take the VIP back). At the end the workload checker
(I1 seats <= LQ, I7 no lost grant, I8 one seat set per request) must be clean; the report, the
table and the failover times go to artifacts/tmr-mol-failover/.

Then failover on the VIP, measured (issue 17): the active TMR host is killed VIP_KILLS times
under the workload, alternating kill -9 of tmr-server and a kill of the whole host
(`bench.failover_vip.measure_kill`): after each, the other server must be active with the VIP
and grant checkouts through it. The times (kill -> first granted checkout, against issue 17's
goal of p50 < 1.0 s and max < 1.5 s) are printed and kept in
artifacts/tmr-mol-failover/failover-vip.json, not asserted: tests check behaviour, and the
benchmark (`make bench-lab`, ten kills or more) measures the goal.

The lab's Prometheus (role tmr_monitoring on client-1, 2 s scrape and evaluation intervals)
watches it all with the shipped alert rules: asked through its HTTP API, it must scrape both
servers at the start, fire TmrBackendDown for backend-2 while that host is down (rows 8 and 9,
where a backend stays down longest) and resolve it once the backend is back.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any

import pytest
import yaml

from bench.failover_vip import GOAL_MAX, GOAL_P50, goal_met, measure_kill, summarize
from tests.lab.labctl import (
    BACKENDS,
    CTL_SOCKET,
    REPO,
    TMR,
    Lab,
    LabError,
    Workload,
    check,
    say,
)

A, B = "tmr-a", "tmr-b"
B1, B2, B3 = BACKENDS
LQ = 20
ROWS: list[dict[str, Any]] = []
OK_PROBES = ("ok", "NO_LICENSE_AVAILABLE")  # the service answered and serves the license
RULES = REPO / "monitoring" / "prometheus" / "tmr-alerts.yml"  # what the role installs
BACKEND_ALERT = "TmrBackendDown"  # for: 30s
# kills of the active TMR host in test_failover_on_the_vip (each about 8 s; 10+ in bench-lab)
VIP_KILLS = ("service", "host", "service", "host")


@pytest.fixture(scope="module")
def lab() -> Lab:
    lab = Lab()
    say(f"lab {lab.name}: VIP {lab.vip}")
    lab.wait_healthy(180)
    return lab


@pytest.fixture(scope="module")
def workload(lab: Lab) -> Iterator[Workload]:
    wl = lab.start_workload(
        "failover", duration=1800, clients=20, seed=5, extra=["--at-end", "abandon"]
    )
    yield wl
    if wl.running():
        wl.stop()


def make_active(lab: Lab, server: str) -> None:
    """Planned switchover (playbooks/switchover.yml) when `server` is not the active one."""
    active = lab.wait_healthy()
    if active != server:
        lab.mark(f"switchover to {server}")
        lab.playbook("switchover.yml")
        got = lab.wait_healthy()
        assert got == server, f"switchover left {got} active"


def verify_row(
    lab: Lab,
    wl: Workload,
    row: str,
    expect: str,
    state: dict[str, str],
    fault_at: float,
) -> dict[str, Any]:
    """The row's state is in place: probe the client access and record the row."""
    holders = lab.vip_holders()
    roles = lab.roles()
    outcome, output = lab.probe_checkout()
    result: dict[str, Any] = {
        "row": row,
        **state,
        "expected": expect,
        "probe": outcome,
        "vip": holders,
        "roles": roles,
    }
    say(f"row {row!r}: probe {outcome}; VIP on {holders}; roles {roles}")
    assert len(holders) == 1, f"VIP on {holders}, not exactly one host"
    if expect == "ok":
        assert outcome in OK_PROBES, f"client access should be ok, got {outcome}: {output}"
        granted = wl.wait_granted(fault_at, n=3, timeout=60)
        result["granted_after_fault"] = granted
    else:
        assert outcome not in OK_PROBES, f"client access should fail, got {outcome}: {output}"
        since = time.time()
        # the workload keeps trying for a few attempts (each up to its 10 s timeout)
        lab.wait_for("the workload tried again", lambda: len(wl.recent(since)) >= 5, 60)
        granted = wl.granted_since(since)
        result["granted_after_fault"] = granted
        assert granted == 0, f"{granted} checkouts granted while the table says error"
    ROWS.append(result)
    return result


def wait_active_with_vip(lab: Lab, server: str) -> None:
    lab.wait_for(
        f"{server} active with the VIP",
        lambda: lab.vip_holders() == [server] and lab.active() == server,
        60,
    )


def backend_down_seen(lab: Lab, active: str, backend: str) -> bool:
    view = lab.backend_view(active)
    return bool(view) and not view.get(backend, {}).get("up", True)


def backend_alert(lab: Lab, backend: str, state: str) -> dict[str, Any] | None:
    """The TmrBackendDown alert of `backend` in `state` (pending or firing), if any."""
    for alert in lab.alerts(BACKEND_ALERT) or []:
        if alert["labels"].get("backend") == backend and alert["state"] == state:
            return alert
    return None


def no_backend_alert(lab: Lab, backend: str) -> bool:
    """Prometheus answers, and has no TmrBackendDown alert (pending or firing) for `backend`."""
    alerts = lab.alerts(BACKEND_ALERT)
    return alerts is not None and not any(a["labels"].get("backend") == backend for a in alerts)


def unix_time(rfc3339: str) -> float:
    """Prometheus's activeAt ("2026-12-05T03:50:01.123456789Z") as UNIX time."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


# ----------------------------------------------------------------------------- Prometheus


def test_prometheus_watches_both_servers(lab: Lab) -> None:
    """The lab's Prometheus scrapes both TMR servers (with the WebAdmin token), sees the
    active server and the VIP holder, has the shipped alert rules loaded, and raises no
    backend alert for the whole cluster."""
    lab.wait_for(
        "Prometheus scrapes tmr-a and tmr-b",
        lambda: lab.query('up{job="tmr"}') == {A: 1.0, B: 1.0},
        60,
        interval=1,
        describe=lambda: lab.prometheus("/api/v1/targets"),
    )
    active = lab.wait_for(
        "Prometheus sees one active server",
        lambda: lab.query('tmr_role{role="active"} == 1'),
        30,
        interval=1,
    )
    server = lab.wait_healthy()
    assert active == {server: 1.0}, active
    # keepalived's side: the VRRP master, and only it, carries the VIP (tmr_vip_held)
    assert lab.query("tmr_vip_held") == {server: 1.0, (B if server == A else A): 0.0}
    rules = lab.prometheus("/api/v1/rules", type="alert")
    loaded = {r["name"] for g in rules["groups"] for r in g["rules"]}
    shipped = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert loaded == shipped
    assert lab.alerts(BACKEND_ALERT) == []
    say(f"Prometheus: both servers scraped, {len(loaded)} alert rules loaded, active {active}")


# ----------------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    ("active", "state"),
    [
        (A, {"A": "Active", "B": "Standby", "B1": "up", "B2": "up", "B3": "up"}),
        (B, {"A": "Standby", "B": "Active", "B1": "up", "B2": "up", "B3": "up"}),
    ],
)
def test_row1_and_2_normal_operation(
    lab: Lab, workload: Workload, active: str, state: dict[str, str]
) -> None:
    make_active(lab, active)
    verify_row(lab, workload, "Normal operation", "ok", state, time.time())


def test_row3_tmr_server_b_maintenance(lab: Lab, workload: Workload) -> None:
    make_active(lab, B)
    t = lab.stop_unit(B, "tmr-server")  # maintenance of the active server: failover to A
    wait_active_with_vip(lab, A)
    verify_row(
        lab,
        workload,
        "Maintenance/Failure TMR server (1)",
        "ok",
        {"A": "Active", "B": "Maintenance", "B1": "up", "B2": "up", "B3": "up"},
        t,
    )
    lab.start_unit(B, "tmr-server")
    assert lab.wait_healthy() == A


def test_row4_tmr_server_a_failure(lab: Lab, workload: Workload) -> None:
    make_active(lab, A)
    t = lab.kill_host(A)  # the active TMR host fails: keepalived moves the VIP to B
    wait_active_with_vip(lab, B)
    verify_row(
        lab,
        workload,
        "Maintenance/Failure TMR server (2)",
        "ok",
        {"A": "Failure", "B": "Active", "B1": "up", "B2": "up", "B3": "up"},
        t,
    )
    lab.start_host(A)
    assert lab.wait_healthy() == B


@pytest.mark.parametrize(
    ("backend", "how"),
    [(B1, "service stopped"), (B2, "host paused"), (B3, "firewall")],
)
def test_row5_to_7_backend_maintenance(
    lab: Lab, workload: Workload, backend: str, how: str
) -> None:
    make_active(lab, A)
    if how == "service stopped":
        t = lab.stop_unit(backend, "tmr-backend")
    elif how == "host paused":
        t = lab.pause_host(backend)
    else:
        t = lab.cut_backend(backend)
    lab.wait_for(f"A sees {backend} down", lambda: backend_down_seen(lab, A, backend), 30)
    n = BACKENDS.index(backend) + 1
    state = {"A": "Active", "B": "Standby", "B1": "up", "B2": "up", "B3": "up"}
    state[f"B{n}"] = f"down ({how})"
    verify_row(lab, workload, f"Maintenance/Failure Backend ({n})", "ok", state, t)
    if how == "service stopped":
        lab.start_unit(backend, "tmr-backend")
    elif how == "host paused":
        lab.unpause_host(backend)
    else:
        lab.heal_net(backend)
    assert lab.wait_healthy() == A


@pytest.mark.timeout(600)
def test_row8_and_9_double_and_triple_failure(lab: Lab, workload: Workload) -> None:
    make_active(lab, A)
    b2_down = lab.kill_host(B2)
    t = lab.kill_host(A)
    wait_active_with_vip(lab, B)
    lab.wait_for("B sees backend-2 down", lambda: backend_down_seen(lab, B, B2), 30)
    verify_row(
        lab,
        workload,
        "Failure (1)",
        "ok",
        {"A": "Failure", "B": "Active", "B1": "up", "B2": "Failure", "B3": "up"},
        t,
    )

    try:
        t = lab.kill_host(B3)
        lab.wait_for("B sees backend-3 down", lambda: backend_down_seen(lab, B, B3), 30)
        row = verify_row(
            lab,
            workload,
            "Failure (2)",
            "error",
            {"A": "Failure", "B": "Active", "B1": "up", "B2": "Failure", "B3": "Failure"},
            t,
        )

        def unavailable() -> dict[str, Any] | None:
            lic = lab.license_row(B)
            return lic if lic and lic.get("available") is False else None

        lic = lab.wait_for("B reports the license unavailable", unavailable, 30)
        row["license_status"] = lic.get("status")

        # backend-2 has been down since the start of row 8: Prometheus, scraping tmr-b (tmr-a
        # is dead), fires TmrBackendDown for it once its `for: 30s` has passed
        waited = time.time()
        fired = lab.wait_for(
            f"Prometheus fires {BACKEND_ALERT} for {B2}",
            lambda: backend_alert(lab, B2, "firing"),
            90,
            interval=1,
            describe=lambda: lab.alerts(BACKEND_ALERT),
        )
        prom: dict[str, Any] = {
            "row": f"Prometheus {BACKEND_ALERT} {B2}",
            "expected": "firing while down, resolved when back",
            "probe": "firing",
            "pending_after_kill": round(unix_time(fired["activeAt"]) - b2_down, 1),
            "firing_seen_after_kill": round(time.time() - b2_down, 1),
            "waited_for_firing": round(time.time() - waited, 1),
            "firing_alerts": sorted(
                {
                    a["labels"]["alertname"]
                    for a in lab.prometheus("/api/v1/alerts")["alerts"]
                    if a["state"] == "firing"
                }
            ),
        }
        say(f"Prometheus: {BACKEND_ALERT} {B2} firing: {prom}")
    finally:
        # repair: the cluster heals by itself once the hosts are back
        lab.start_host(B3)
        b2_back = lab.start_host(B2)
        t = lab.mark("backends 2 and 3 back")
        lab.start_host(A)
        workload.wait_granted(t, n=3, timeout=60)
    assert lab.wait_healthy() == B
    waited = time.time()
    lab.wait_for(
        f"Prometheus resolves {BACKEND_ALERT} for {B2}",
        lambda: no_backend_alert(lab, B2),
        60,
        interval=1,
        describe=lambda: lab.alerts(BACKEND_ALERT),
    )
    prom["resolved_seen_after_boot"] = round(time.time() - b2_back, 1)
    prom["waited_for_resolve"] = round(time.time() - waited, 1)
    say(f"Prometheus: {BACKEND_ALERT} {B2} resolved: {prom}")
    (lab.artifacts / "prometheus-alert.json").write_text(json.dumps(prom, indent=1))
    ROWS.append(prom)


@pytest.mark.timeout(600)
def test_failover_on_the_vip(lab: Lab, workload: Workload) -> None:
    """Kill the active TMR host (its tmr-server, or the whole host) under the workload, one
    kind after the other: each time the other server is active with the VIP and grants
    checkouts to client-1 through the VIP. The checker at the end finds no lost or duplicate
    seat across these kills. The times are reported against issue 17's goal, not asserted."""
    kills = [asdict(measure_kill(lab, workload, kind, n)) for n, kind in enumerate(VIP_KILLS, 1)]
    summary = summarize(kills)
    (lab.artifacts / "failover-vip.json").write_text(
        json.dumps({"kills": kills, "summary": summary}, indent=1)
    )
    fc = summary["first_checkout"]
    say(f"failover on the VIP, kill -> first granted checkout: p50 {fc['p50']}, max {fc['max']} s")
    ROWS.append({"row": "failover on the VIP", "expected": "ok", "probe": "ok", **summary})
    say(
        f"  issue 17's goal (p50 < {GOAL_P50} s, max < {GOAL_MAX} s): "
        f"{'met' if goal_met(kills) else 'not met'} in this run"
    )
    missing = [k for k in kills if k["first_checkout"] is None]
    assert not missing, f"no checkout granted through the VIP after these kills: {missing}"
    assert fc["n"] == len(VIP_KILLS), summary


@pytest.mark.timeout(600)
def test_keepalived_split_brain(lab: Lab, workload: Workload) -> None:
    """VRRP between the two TMR hosts blocked: both claim the VIP, exactly one server commits."""
    active = lab.wait_healthy()
    other = B if active == A else A
    before = {s: (lab.status(s) or {}).get("ops_committed", 0) for s in (A, B)}
    lab.block_vrrp(A)
    t = lab.block_vrrp(B)
    lab.mark("split brain: VRRP blocked between tmr-a and tmr-b")
    samples: list[dict[str, Any]] = []
    both_held = 0
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        holders = lab.vip_holders()
        roles = lab.roles()
        samples.append({"t": round(time.time() - t, 2), "vip": holders, "roles": roles})
        both_held += len(holders) == 2
        assert list(roles.values()).count("active") <= 1 or _one_fenced(lab), roles
        time.sleep(0.5)
    after = {s: (lab.status(s) or {}).get("ops_committed", 0) for s in (A, B)}
    lab.heal_net(A)
    lab.heal_net(B)
    lab.mark("split brain healed")
    (lab.artifacts / "split-brain.json").write_text(json.dumps(samples, indent=1))
    say(
        f"split brain: both hosts held the VIP in {both_held} of {len(samples)} samples; "
        f"commits {before} -> {after}"
    )
    assert both_held > 0, "VRRP blocked but the VIP was never on both hosts: no split brain made"
    assert after[active] > before[active], "the active server stopped committing"
    assert after[other] == before[other], f"{other} committed during the split brain"
    assert lab.active() == active
    ROWS.append(
        {
            "row": "keepalived split brain",
            "expected": "ok",
            "active": active,
            "both_held_samples": both_held,
            "samples": len(samples),
            "commits": {"before": before, "after": after},
        }
    )
    lab.wait_healthy()


NOTIFY_LOCK = "/run/tmr-keepalived/notify.lock"
# kill -9 of keepalived's notify FIFO reader (`tmr server vrrp-notify`); keepalived does not
# start it again
KILL_READER = (
    "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null"
    " | grep -q '[s]erver vrrp-notify' && kill -9 ${p#/proc/}; done; true"
)


def _reader_gone(lab: Lab, host: str) -> bool:
    """The notify reader's lock is free (what tmr-health.sh asks)."""
    return lab.sh(host, f"flock -n {NOTIFY_LOCK} true", check=False, timeout=10).returncode == 0


def _restore_reader(lab: Lab, host: str) -> None:
    """`systemctl reload keepalived` starts a notify reader again; wait until it holds its lock."""
    lab.sh(host, "systemctl reload keepalived")
    lab.mark(f"reload keepalived on {host}: a notify reader again")
    lab.wait_for(f"a notify reader on {host}", lambda: not _reader_gone(lab, host), 30)


@pytest.mark.timeout(600)
def test_failover_without_the_notify_reader(lab: Lab, workload: Workload) -> None:
    """The standby host's notify reader was killed (keepalived does not start it again); then
    the active tmr-server dies. The VIP moves to the standby host, where nothing reads
    keepalived's MASTER: its health script sees the reader's lock free and the VIP on its host,
    and promotes the server itself. Healed with `systemctl reload keepalived`, which starts a
    reader again."""
    active = lab.wait_healthy()
    other = B if active == A else A
    lab.sh(other, KILL_READER)
    lab.mark(f"kill -9 the notify reader on {other}")
    lab.wait_for(f"the notify reader gone on {other}", lambda: _reader_gone(lab, other), 20)
    t = lab.kill_unit(active, "tmr-server")
    wait_active_with_vip(lab, other)
    granted = workload.wait_granted(t, n=3, timeout=60)
    say(
        f"without a notify reader: {other} active with the VIP "
        f"{time.time() - t:.1f} s after the kill"
    )
    journal = lab.sh(other, f"journalctl -t tmr-keepalived --since @{int(t) - 1} --no-pager").stdout
    assert "notify reader is not running" in journal, journal
    assert "tmr-server is standby: tmr ctl promote" in journal, journal
    _restore_reader(lab, other)
    assert lab.wait_healthy() == other
    ROWS.append(
        {
            "row": "failover without the notify reader",
            "expected": "ok",
            "probe": "ok",
            "granted_after_fault": granted,
        }
    )


@pytest.mark.timeout(600)
def test_a_host_without_the_notify_reader_that_loses_the_vip_is_demoted(
    lab: Lab, workload: Workload
) -> None:
    """The active host's notify reader was killed; then the other server takes over (an
    operator's `tmr ctl promote --force` there), which fences the server here. Its host fails
    its health check and goes FAULT: the VIP moves. Nothing reads that transition here, so
    the health script, seeing the reader gone and the VIP gone, demotes the fenced server, and
    the host rejoins VRRP. When the new active server dies, the VIP comes back here and the
    health script promotes. (A fenced server left as it was fails the health check for ever:
    the host would stay in FAULT and nothing would take the VIP.)"""
    active = lab.wait_healthy()
    other = B if active == A else A
    lab.sh(active, KILL_READER)
    lab.mark(f"kill -9 the notify reader on {active}")
    lab.wait_for(f"the notify reader gone on {active}", lambda: _reader_gone(lab, active), 20)
    t = lab.mark(f"tmr ctl promote --force on {other}")
    lab.sh(other, f"{TMR} ctl --socket {CTL_SOCKET} promote --force")
    wait_active_with_vip(lab, other)
    lab.wait_for(
        f"{active} demoted to standby",
        lambda: (lab.status(active) or {}).get("role") == "standby",
        60,
    )
    assert lab.wait_healthy() == other
    since = f"--since @{int(t) - 1} --no-pager"
    journal = lab.sh(active, f"journalctl -t tmr-keepalived {since}").stdout
    assert "(no VIP on this host) but tmr-server is" in journal, journal
    say(f"without a notify reader: {active} lost the VIP and was demoted by its health script")
    t = lab.kill_unit(other, "tmr-server")
    wait_active_with_vip(lab, active)
    granted = workload.wait_granted(t, n=3, timeout=60)
    say(f"... and took the VIP back {time.time() - t:.1f} s after {other}'s server was killed")
    _restore_reader(lab, active)
    assert lab.wait_healthy() == active
    ROWS.append(
        {
            "row": "VIP lost without the notify reader",
            "expected": "ok",
            "probe": "ok",
            "granted_after_fault": granted,
        }
    )


def _one_fenced(lab: Lab) -> bool:
    return any((lab.status(s) or {}).get("fenced_by") for s in (A, B))


@pytest.mark.timeout(600)
def test_checker_clean(lab: Lab, workload: Workload) -> None:
    history = workload.stop()
    handles = workload.handles()
    report = check(history, lq=LQ, handles=handles, events=lab.events)
    events: dict[str, dict[str, Any]] = {}
    for e in report.get("events", []):
        events.setdefault(e["label"], e)  # the first kill of tmr-a is row 4's failover
    failover = events.get(f"kill host {A}") or {}
    summary = {
        "rows": ROWS,
        "ops": report["run"]["ops"],
        "counts": report["counts"],
        "max_seats_held": report["max_seats_held"],
        "longest_gap": report["unavailability"]["longest_gap"],
        "failover_unavailability": {
            "event": f"kill host {A} (the active TMR host)",
            "to_first_ok": failover.get("to_first_ok"),
            "to_first_checkout": failover.get("to_first_checkout"),
        },
        "events": report.get("events", []),
    }
    (lab.artifacts / "failover-summary.json").write_text(json.dumps(summary, indent=1))
    say("reliability table as produced:")
    for r in ROWS:
        say(f"  {r['row']:<38} expected {r['expected']:<5} probe {r.get('probe', '-')}")
    say(
        f"failover unavailability (kill of the active TMR host -> first granted checkout): "
        f"{failover.get('to_first_checkout')} s"
    )
    assert report["ok"], f"checker violations: {report['violations'][:5]}"
    if not report["run"]["finished"]:
        raise LabError("the workload history has no end record")
