"""Seeded random faults with the workload running; afterwards the cluster heals by itself.

For TMR_CHAOS_SECONDS (default 180) one fault after another, each held for 2-8 s, then
undone: kill -9 of a service (systemd restarts it), a host paused and resumed, a backend cut
off by its firewall, the active TMR host shut down and booted again, VRRP cut between the two
TMR hosts. The seed is TMR_CHAOS_SEED (default: random) and is printed first; the same seed
gives the same fault plan. After the last fault the cluster must become whole without help
(one active server holding the VIP, one standby, three backends caught up) and the checker must
be clean: never more seats than the LQ, no acknowledged grant lost, one seat set per request.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from typing import Any

import pytest

from tests.lab.labctl import BACKENDS, SERVERS, Lab, check, say

DURATION = float(os.environ.get("TMR_CHAOS_SECONDS", "180"))
SEED = int(os.environ.get("TMR_CHAOS_SEED") or secrets.randbelow(2**31))
KINDS = ("kill -9 service", "pause host", "cut backend", "stop active host", "cut VRRP")


def inject(lab: Lab, rng: random.Random, kind: str) -> dict[str, Any]:
    """Apply one fault, hold it, undo it; returns what was done."""
    hold = round(rng.uniform(2.0, 8.0), 1)
    fault: dict[str, Any] = {"kind": kind, "hold": hold}
    if kind == "kill -9 service":
        host = rng.choice((*SERVERS, *BACKENDS))
        unit = "tmr-server" if host in SERVERS else "tmr-backend"
        fault.update(host=host, at=lab.kill_unit(host, unit))
        time.sleep(hold)  # the fault's duration; systemd restarts the service meanwhile
    elif kind == "pause host":
        host = rng.choice((*SERVERS, *BACKENDS))
        fault.update(host=host, at=lab.pause_host(host))
        time.sleep(hold)
        lab.unpause_host(host)
    elif kind == "cut backend":
        host = rng.choice(BACKENDS)
        fault.update(host=host, at=lab.cut_backend(host))
        time.sleep(hold)
        lab.heal_net(host)
    elif kind == "stop active host":
        host = lab.active() or rng.choice(SERVERS)
        fault.update(host=host, at=lab.stop_host(host))
        time.sleep(hold)
        lab.start_host(host)
    else:  # cut VRRP
        fault.update(host="tmr-a+tmr-b", at=lab.block_vrrp(SERVERS[0]))
        lab.block_vrrp(SERVERS[1])
        time.sleep(hold)
        for s in SERVERS:
            lab.heal_net(s)
    fault["healed"] = time.time()
    return fault


@pytest.mark.timeout(int(DURATION) + 900)
def test_chaos() -> None:
    say(f"chaos: seed {SEED} (TMR_CHAOS_SEED={SEED} replays the fault plan), {DURATION:g} s")
    rng = random.Random(SEED)
    lab = Lab()
    lab.wait_healthy(180)
    wl = lab.start_workload(
        "chaos",
        duration=DURATION + 600,
        clients=20,
        seed=SEED,
        extra=["--seats-max", "2", "--at-end", "abandon"],
    )
    faults: list[dict[str, Any]] = []
    deadline = time.monotonic() + DURATION
    try:
        while time.monotonic() < deadline:
            kind = rng.choice(KINDS)
            faults.append(inject(lab, rng, kind))
            time.sleep(round(rng.uniform(1.0, 3.0), 1))  # quiet time between faults
    finally:
        lab.heal_all()
    t = lab.mark("all faults healed")
    active = lab.wait_healthy(180)
    recovered = lab.mark("cluster whole again")
    say(f"cluster whole again after {recovered - t:.1f} s, {active} active")
    wl.wait_granted(recovered, n=10, timeout=60)

    history = wl.stop()
    handles = wl.handles()
    report = check(history, lq=20, handles=handles, events=lab.events)
    by_kind = {k: sum(1 for f in faults if f["kind"] == k) for k in KINDS}
    summary = {
        "seed": SEED,
        "duration": DURATION,
        "faults": len(faults),
        "faults_by_kind": by_kind,
        "ops": report["run"]["ops"],
        "counts": report["counts"],
        "max_seats_held": report["max_seats_held"],
        "longest_gap": report["unavailability"]["longest_gap"],
        "recovery_seconds": round(recovered - t, 2),
        "plan": faults,
    }
    (lab.artifacts / "chaos-summary.json").write_text(json.dumps(summary, indent=1))
    say(
        f"chaos: seed {SEED}: {len(faults)} faults {by_kind}; {report['run']['ops']} operations; "
        f"checker {'clean' if report['ok'] else 'VIOLATIONS'}"
    )
    assert report["ok"], f"seed {SEED}: checker violations: {report['violations'][:5]}"
    assert len(faults) >= DURATION / 12, f"only {len(faults)} faults in {DURATION:g} s"
    granted = report["counts"].get("checkout", {}).get("ok", 0)
    assert granted > 0, "no checkout was granted during the run"
