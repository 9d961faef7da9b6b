"""The update table of DESIGN.md section 4, produced by playbooks/license_rollout.yml.

The lab is converged with TMR ID #7 (LQ 20) on the three backends, delivered online: a ticket
made on vendor-1, redeemed at vendor-1's portal by the roll-out, receipts posted back. The
update to #8 (LQ 30) goes the offline way between the two parties: the customer's request file
(playbooks/license_request.yml), `tmr vendor issue --request` on vendor-1 (the vendor key never
leaves it), the update file installed by license_rollout.yml -e tmr_license_update_file, the
receipts file confirmed with `tmr vendor confirm` on vendor-1, which must then have recorded both
sets (#7 through the portal, #8 offline).

With the workload running (20 clients of up to 2 seats: the demand is above both LQs), the
roll-out of #8 goes backend after backend while the active server's status is sampled without
pause. Every sampled state must be a row of the table, the rows must come in the table's order,
and every "after Bn" row must be seen. The checker then checks the history against the LQ in
force at each moment (20 until the effective TMR ID became #8, then 30).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.labctl import BACKENDS, PRODUCT, VENDOR, Lab, LabError, check, say

# stage -> (per-backend TMR IDs: None = "-"), TMR status, LQ seen by clients
TABLE: list[tuple[str, str, int]] = [
    ("before", "1:#7 2:#7 3:#7", 20),
    ("updating B1", "1:- 2:#7 3:#7", 20),
    ("after B1", "1:(#8) 2:#7 3:#7", 20),
    ("updating B2", "1:(#8) 2:- 3:#7", 20),
    ("after B2", "1:#8 2:#8 3:(#7)", 30),
    ("updating B3", "1:#8 2:#8 3:-", 30),
    ("after B3", "1:#8 2:#8 3:#8", 30),
]
MUST_SEE = ("before", "after B1", "after B2", "after B3")


class Sampler(threading.Thread):
    """Samples the active server's license status until stopped."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            active = self.lab.active()
            lic = self.lab.license_row(active) if active else None
            if lic is not None:
                self.samples.append(
                    {
                        "at": time.time(),
                        "server": active,
                        "status": lic.get("status"),
                        "tmr_id": lic.get("tmr_id"),
                        "lq": lic.get("quantity"),
                        "in_use": lic.get("in_use"),
                        "available": lic.get("available"),
                    }
                )
            self.stop.wait(0.1)


@pytest.mark.timeout(900)
def test_license_rollout_walks_the_update_table() -> None:
    lab = Lab()
    lab.wait_healthy(180)
    # ---- online, refused tickets: the portal's typed error, and nothing installed
    licensed = lab.vendor("ticket", "create", "--product-code", str(PRODUCT), "--quantity", "20")
    for ticket, code in (
        ("tkt-" + "A" * 32, "UNKNOWN_TICKET"),
        (licensed.strip(), "ALREADY_LICENSED"),
    ):
        with pytest.raises(LabError) as refused:
            lab.playbook("license_rollout.yml", "-e", f"tmr_license_ticket={ticket}")
        log = re.search(r"; log (\S+)\)", str(refused.value))  # the whole run's output
        output = Path(log.group(1)).read_text() if log else str(refused.value)
        assert code in output, str(refused.value)
        assert re.search(r"Nothing\s+was\s+installed", output), str(refused.value)
        say(f"license_rollout.yml with a refused ticket stopped: {code}")
    view = lab.backend_view(lab.active() or "tmr-a")
    assert {b: view[b]["tmr_id"] for b in BACKENDS} == {b: 7 for b in BACKENDS}, view

    # ---- offline, before the workload: the customer's request, the vendor's update file
    work = lab.artifacts / "offline"
    work.mkdir(parents=True, exist_ok=True)
    request, update, receipts = work / "request.json", work / "update.json", work / "receipts.json"
    for f in (request, update, receipts):
        f.unlink(missing_ok=True)
    lab.playbook("license_request.yml", "-e", f"tmr_license_request_file={request}")
    lab.put(request, VENDOR, "/tmp/request.json")
    lab.sh(VENDOR, "rm -f /tmp/update.json /tmp/receipts.json")
    issue = ["issue", "--request", "/tmp/request.json", "--product-code", str(PRODUCT)]
    issue += ["--quantity", "30", "--tmr-id", "8", "--out", "/tmp/update.json"]
    issued = json.loads(lab.vendor(*issue))
    say(f"vendor-1 issued #{issued['tmr_id']} LQ {issued['quantity']}, set {issued['set_id']}")
    lab.get(VENDOR, "/tmp/update.json", update)
    wl = lab.start_workload(
        "license-update",
        duration=900,
        clients=20,
        seed=8,
        extra=["--seats-max", "2", "--at-end", "abandon"],
    )
    # the demand is above LQ 20: wait until the workload is refused for lack of seats
    lab.wait_for(
        "the workload at LQ 20",
        lambda: any(r.get("outcome") == "NO_LICENSE_AVAILABLE" for r in wl.recent(0)),
        60,
    )
    sampler = Sampler(lab)
    sampler.start()
    lab.wait_for("first sample", lambda: len(sampler.samples) > 3, 30)
    t0 = lab.mark("license_rollout.yml #7 -> #8 starts")
    lab.playbook(
        "license_rollout.yml",
        "-e",
        f"tmr_license_update_file={update}",
        "-e",
        f"tmr_license_receipt_file={receipts}",
    )
    lab.mark("license_rollout.yml done")
    # keep sampling a little after the last step, and let the workload fill LQ 30
    lab.wait_for(
        "seats in use above 20 under LQ 30",
        lambda: any((s["in_use"] or 0) > 20 for s in sampler.samples[-20:]),
        60,
    )
    sampler.stop.set()
    sampler.join()
    samples = sampler.samples
    (lab.artifacts / "update-samples.json").write_text(json.dumps(samples, indent=1))

    # ---- the sequence of states against the table
    by_status = {status: (i, stage, lq) for i, (stage, status, lq) in enumerate(TABLE)}
    walk: list[dict[str, Any]] = []
    for s in samples:
        assert s["status"] in by_status, f"state {s['status']!r} is not a row of the table: {s}"
        i, stage, lq = by_status[s["status"]]
        assert s["lq"] == lq, f"{stage}: LQ {s['lq']}, the table says {lq}"
        assert s["tmr_id"] == (7 if lq == 20 else 8), s
        if not walk or walk[-1]["stage"] != stage:
            walk.append(
                {"stage": stage, "index": i, "from": s["at"], "status": s["status"], "lq": lq}
            )
    say("update table as observed (stage, TMR status, LQ):")
    for w in walk:
        say(f"  {w['stage']:<12} {w['status']:<18} LQ {w['lq']}  at +{w['from'] - t0:6.2f} s")
    indexes = [w["index"] for w in walk]
    assert indexes == sorted(indexes), f"the rows came out of order: {[w['stage'] for w in walk]}"
    seen = {w["stage"] for w in walk}
    missing = [m for m in MUST_SEE if m not in seen]
    assert not missing, f"rows never observed: {missing}"
    for s in samples:
        limit = 20 if s["tmr_id"] == 7 else 30
        assert (s["in_use"] or 0) <= limit, f"{s['in_use']} seats in use under LQ {limit}: {s}"

    # ---- the LQ in force at each moment: 20 until the effective ID became #8, then 30
    last7 = max(s["at"] for s in samples if s["tmr_id"] == 7)
    first8 = min(s["at"] for s in samples if s["tmr_id"] == 8)
    switch = (last7 + first8) / 2
    margin = max(0.5, (first8 - last7) / 2 + 0.25)
    history = wl.stop()
    handles = wl.handles()
    report = check(
        history,
        lq=20,
        schedule=[{"at": wl.started - 60, "lq": 20}, {"at": switch, "lq": 30}],
        handles=handles,
        events=lab.events,
        fail_on="unknown,QUORUM_LOST,NOT_ACTIVE,UNKNOWN_HANDLE,lost:ok",
        margin=margin,
    )
    summary = {
        "walk": walk,
        "switch_at": switch,
        "margin": margin,
        "ops": report["run"]["ops"],
        "counts": report["counts"],
        "max_seats_held": report["max_seats_held"],
    }
    (lab.artifacts / "license-update-summary.json").write_text(json.dumps(summary, indent=1))
    assert report["ok"], f"checker violations: {report['violations'][:5]}"
    refused = report["counts"].get("checkout", {}).get("NO_LICENSE_AVAILABLE", 0)
    assert refused > 0, "the workload never reached the LQ: I1 was not exercised"
    assert lab.wait_healthy() is not None
    view = lab.backend_view(lab.active() or "tmr-a")
    assert {b: view[b]["tmr_id"] for b in BACKENDS} == {b: 8 for b in BACKENDS}, view

    # ---- the receipts back to the vendor: vendor-1 records #8 next to the online #7
    lab.put(receipts, VENDOR, "/tmp/receipts.json")
    confirmed = json.loads(lab.vendor("confirm", "/tmp/receipts.json"))
    assert (confirmed["tmr_id"], confirmed["set_id"]) == (8, issued["set_id"]), confirmed
    installed = json.loads(lab.vendor("installed"))
    say(f"vendor-1 recorded as installed: {[(r['tmr_id'], r['set_id']) for r in installed]}")
    assert [(r["product_code"], r["tmr_id"]) for r in installed] == [(PRODUCT, 7), (PRODUCT, 8)]
    tickets = json.loads(lab.vendor("ticket", "list"))
    online = [t for t in tickets if t["tmr_id"] == 7]
    assert [t["state"] for t in online] == ["installed"], tickets
    assert online[0]["set_id"] == installed[0]["set_id"], (tickets, installed)
