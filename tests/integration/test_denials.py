"""Denials that survive a failover, on a real local cluster: refusals on the active server are
recorded with who asked (key, user, host, pid) through the three backends; after the active
server is killed and the standby promoted, `tmr report denials` on the new one shows each of
them once, and the refusals of both servers together; `tmr admin denials` lists the recent
ones of the server asked."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_helpers import LocalCluster, wait_for
from tmr.cli.main import main
from tmr.errors import NoLicenseAvailable, PolicyDenied

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRM, PRODUCT = 6000123, 42
BACKENDS = ("backend-1", "backend-2", "backend-3")
RULES = f"""
[licenses."{FIRM}:{PRODUCT}"]
exclude = ["user:mallory"]
"""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def recorded(cluster: LocalCluster, backend: str) -> int:
    return int(cluster.ctl(backend, "status")["counters"]["denials_recorded"])


def report(
    cluster: LocalCluster,
    server: str,
    capsys: pytest.CaptureFixture[str],
    *fmt: str,
    kind: str = "denials",
) -> tuple[int, str, str]:
    """The report's exit code and output. A report some backend did not answer in time is
    asked again, for two minutes at most: on a loaded host the backends' report processes
    (nice 19, started on the first query) can take longer to start than a query may take."""
    sock = cluster.nodes[server]["ctl_socket"]
    deadline = time.monotonic() + 120.0
    while True:
        got = cli(capsys, "report", kind, "--ctl", sock, "--from", "1h", "--timeout", "90", *fmt)
        out = got[1]
        partial = got[0] != 0 or "not read" in out or 'unavailable": [\n' in out
        if not partial or time.monotonic() > deadline:
            return got


def test_denials_survive_failover_and_are_reported_once(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = Path(cluster.info["dir"]) / "policy.toml"
    policy.write_text(RULES)
    assert cluster.ctl("tmr-a", "reload")["ok"]
    with cluster.client(user="ann") as ann, cluster.client(user="mallory") as mallory:
        for _ in range(3):
            ann.checkout(FIRM, PRODUCT)
        with pytest.raises(NoLicenseAvailable):
            ann.checkout(FIRM, PRODUCT, seats=2)
        with pytest.raises(PolicyDenied):
            mallory.checkout(FIRM, PRODUCT)
        ann_key, mallory_key = ann.public_key, mallory.public_key

        # tmr admin denials: the active server's recent refusals, who / what / why
        sock = cluster.nodes["tmr-a"]["ctl_socket"]
        code, out, err = cli(capsys, "admin", "--socket", sock, "denials", "--json")
        assert code == 0, err
        recent = json.loads(out)["denials"]
        assert [d["code"] for d in recent] == ["POLICY_DENIED", "NO_LICENSE_AVAILABLE"]
        assert recent[0]["user"] == "mallory" and recent[0]["owner"] == mallory_key
        assert "mallory" in recent[0]["rule"]
        assert (recent[1]["user"], recent[1]["host"], recent[1]["pid"]) == (
            "ann",
            socket.gethostname(),
            os.getpid(),
        )
        assert recent[1]["seats"] == 2 and recent[1]["owner"] == ann_key
        code, out, _ = cli(capsys, "admin", "--socket", sock, "denials", "--product", "43")
        assert code == 0 and "0 refusal(s)" in out

        # best effort, sent four times a second to every up backend: all three keep both
        wait_for(
            "the three backends to record the two refusals",
            lambda: all(recorded(cluster, b) == 2 for b in BACKENDS),
            15,
        )

        cluster.kill("tmr-a", signal.SIGKILL)
        cluster.promote("tmr-b", timeout=30.0)

        code, out, err = report(cluster, "tmr-b", capsys, "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["server"] == "tmr-b" and doc["denials_total"] == 2  # once, not three times
        assert doc["denials_read_from"] == list(BACKENDS)
        groups = {(g["user"], g["code"]): g for g in doc["denials"]}
        assert set(groups) == {("ann", "NO_LICENSE_AVAILABLE"), ("mallory", "POLICY_DENIED")}
        assert groups[("ann", "NO_LICENSE_AVAILABLE")]["host"] == socket.gethostname()
        assert groups[("ann", "NO_LICENSE_AVAILABLE")]["seats_asked"] == 2
        assert groups[("mallory", "POLICY_DENIED")]["servers"] == ["tmr-a"]

        # a refusal on the new active server joins them: the report covers both servers
        with pytest.raises(NoLicenseAvailable):
            ann.checkout(FIRM, PRODUCT)
        wait_for(
            "the backends to record the third refusal",
            lambda: all(recorded(cluster, b) == 3 for b in BACKENDS),
            15,
        )
        code, out, err = report(cluster, "tmr-b", capsys, "--csv")
        assert code == 0, err
        rows: list[dict[str, Any]] = list(csv.DictReader(io.StringIO(out)))
        ann_row = next(r for r in rows if r["user"] == "ann")
        assert ann_row["denials"] == "2" and ann_row["servers"] == "tmr-a tmr-b"
        assert sum(int(r["denials"]) for r in rows) == 3

        # the usage report's denials column (NO_LICENSE_AVAILABLE) comes from the same record
        code, out, err = report(cluster, "tmr-b", capsys, "--json", kind="usage")
        assert code == 0, err
        usage = json.loads(out)
        (lic,) = [x for x in usage["licenses"] if x["product"] == PRODUCT]
        assert lic["denials"] == 2  # both servers' (one each), from the backends
        assert "denials_counted_by" not in usage and "denials_read_from" in usage
        code, out, _ = report(cluster, "tmr-b", capsys)
        assert code == 0 and "3 refusal(s)" in out and "mallory" in out
