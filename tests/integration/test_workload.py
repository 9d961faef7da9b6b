"""The workload tools against a real local cluster, through a failover and a backend loss.

10 clients on a license of LQ 5 for 15 s; mid-run the active TMR server is killed (kill -9)
and the standby promoted, then a backend is killed. The generator's history and the new
active server's handle table must pass the checker (I1, I7, I8); the measured
unavailability is printed (``pytest -s``) and bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_helpers import LocalCluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LQ = 5
LEASE = 6.0
DURATION = 15.0


def _ok_ops(history: Path) -> int:
    """Operations answered ok so far (complete lines of the history being written)."""
    n = 0
    with history.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            rec = json.loads(line)
            n += rec.get("type") == "op" and rec["op"] != "lost" and rec["outcome"] == "ok"
    return n


def _tmr(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tmr", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_workload_through_failover_is_clean(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", quantity=LQ, lease=LEASE)
    cluster_file = str(cluster.root / "cluster.json")
    history = tmp_path / "history.jsonl"
    log = (tmp_path / "workload.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tmr",
            "workload",
            "run",
            "--cluster",
            cluster_file,
            "--clients",
            "10",
            "--duration",
            str(DURATION),
            "--seed",
            "20240605",
            "--hold-max",
            "1.5",
            "--think-max",
            "0.2",
            "--at-end",
            "abandon",
            "--progress",
            "3",
            "--out",
            str(history),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    events: list[tuple[str, float]] = []
    try:
        wait_for("the history to start", lambda: history.exists() and _ok_ops(history) > 0, 15)
        base = _ok_ops(history)
        wait_for("20 successful operations", lambda: _ok_ops(history) >= base + 20, 10)

        events.append(("kill -9 of the active server tmr-a", time.time()))
        cluster.kill("tmr-a")
        cluster.promote("tmr-b")
        after_failover = _ok_ops(history)
        wait_for(
            "20 successful operations after the failover",
            lambda: _ok_ops(history) >= after_failover + 20,
            10,
        )

        events.append(("kill -9 of backend-2", time.time()))
        cluster.kill("backend-2")
        cluster.wait_backends("tmr-b", {"backend-1", "backend-3"})
        after_backend = _ok_ops(history)
        wait_for(
            "20 successful operations on 2 backends",
            lambda: _ok_ops(history) >= after_backend + 20,
            10,
        )
        assert proc.poll() is None, "the faults must happen while the workload runs"
        assert proc.wait(timeout=DURATION + 30) == 0, (tmp_path / "workload.log").read_text()

        # The handle table of the new active server, right after the run (within the lease
        # of the handles the clients left held at the end).
        handles = tmp_path / "handles.json"
        cap = _tmr(
            "workload",
            "handles",
            "--cluster",
            cluster_file,
            "--timeout",
            "1",
            "--out",
            str(handles),
        )
        assert cap.returncode == 0, cap.stderr
        assert json.loads(handles.read_text())["server"] == "tmr-b"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        cluster.stop_all()

    report_file = tmp_path / "report.json"
    args = ["workload", "check", str(history), "--lq", str(LQ), "--handles", str(handles)]
    for label, at in events:
        args += ["--event", f"{label}@{at}"]
    res = _tmr(*args, "--out", str(report_file))
    print(res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
    report: dict[str, Any] = json.loads(report_file.read_text())
    assert report["ok"] and report["violations"] == []

    counts = report["counts"]
    assert counts["checkout"]["ok"] >= 30
    assert report["max_seats_held"] == LQ  # the license was in full use
    abandoned = counts.get("abandon", {}).get("ok", 0)
    table = report["handle_table"]
    assert table["checked_present"] == abandoned == table["ours"]

    failover = report["events"][0]
    unavail = report["unavailability"]["longest_gap"]["length"]
    print(
        f"failover (kill -9 of the active server, then promote): next successful operation "
        f"after {failover['to_first_ok']:.3f} s, granted checkout after "
        f"{failover['to_first_checkout']:.3f} s; longest gap without a successful operation "
        f"{unavail:.3f} s"
    )
    assert failover["to_first_checkout"] is not None and failover["to_first_checkout"] < 10
    assert unavail < 10
