"""`tmr admin handles|release` on a real local cluster: who holds what (user, host, pid from
the SDK, across a failover), and a release committed by the backends and logged."""

from __future__ import annotations

import getpass
import json
import os
import pwd
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_helpers import LocalCluster, wait_for
from tmr.cli.main import main
from tmr.errors import NoLicenseAvailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRM, PRODUCT = 6000123, 42


def admin(
    cluster: LocalCluster, server: str, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    sock = cluster.nodes[server]["ctl_socket"]
    code = main(["admin", "--socket", sock, *args])
    out, err = capsys.readouterr()
    return code, out, err


def handles(
    cluster: LocalCluster, server: str, capsys: pytest.CaptureFixture[str]
) -> list[dict[str, Any]]:
    code, out, err = admin(cluster, server, capsys, "handles", "--json")
    assert code == 0, err
    return list(json.loads(out)["handles"])


def log_events(cluster: LocalCluster, server: str, event: str) -> list[dict[str, Any]]:
    text = Path(cluster.nodes[server]["log"]).read_text(errors="replace")
    out = []
    for line in text.splitlines():
        if f'"event":"{event}"' in line:
            out.append(json.loads(line))
    return out


def test_admin_handles_and_release(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    with cluster.client(user="Alice (CAD)") as alice, cluster.client() as other:
        held = alice.checkout(FIRM, PRODUCT)
        other.checkout(FIRM, PRODUCT)
        other.checkout(FIRM, PRODUCT, seats=1)
        with pytest.raises(NoLicenseAvailable):
            other.checkout(FIRM, PRODUCT)

        rows = {h["handle"]: h for h in handles(cluster, "tmr-a", capsys)}
        assert len(rows) == 3
        mine = rows[held.id]
        assert (mine["user"], mine["host"], mine["pid"]) == (
            "Alice (CAD)",
            socket.gethostname(),
            os.getpid(),
        )
        assert mine["owner"] == alice.public_key
        assert {h["user"] for h in rows.values()} == {"Alice (CAD)", getpass.getuser()}
        assert mine["lease_end"] > mine["granted_at"]

        code, out, _ = admin(cluster, "tmr-a", capsys, "handles", "--product", f"{FIRM}:{PRODUCT}")
        assert code == 0 and "Alice (CAD)" in out and "3 handle(s), 3 seat(s)" in out
        code, out, _ = admin(cluster, "tmr-a", capsys, "handles", "--product", "43")
        assert code == 0 and "0 handle(s)" in out

        # lmremove: committed by the backends before the answer, then the seat is free.
        code, out, err = admin(cluster, "tmr-a", capsys, "release", held.id)
        assert code == 0, err
        assert f"released {held.id}" in out and "Alice (CAD)" in out
        assert held.id not in {h["handle"] for h in handles(cluster, "tmr-a", capsys)}
        for b in cluster.backend_view("tmr-a").values():
            assert b["up"]
        other.checkout(FIRM, PRODUCT)  # the freed seat
        wait_for("the holder to learn it lost the handle", lambda: held.lost, 40)

        # Logged as a JSON event naming the local user who asked (SO_PEERCRED).
        (event,) = log_events(cluster, "tmr-a", "handle_removed")
        me = pwd.getpwuid(os.getuid()).pw_name
        assert event["by"] == f"ctl:{me}" and event["handle"] == held.id
        assert event["user"] == "Alice (CAD)"

        # An unknown handle: a clear error and a non-zero exit.
        code, _, err = admin(cluster, "tmr-a", capsys, "release", "h1-tmr-a-nosuchhandle")
        assert code == 1 and "UNKNOWN_HANDLE" in err and "nosuchhandle" in err


def test_client_identity_survives_failover(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    with cluster.client(user="bob") as bob:
        held = bob.checkout(FIRM, PRODUCT)
        cluster.kill("tmr-a", signal.SIGKILL)
        cluster.promote("tmr-b", timeout=30.0)
        rows = {h["handle"]: h for h in handles(cluster, "tmr-b", capsys)}
        assert rows[held.id]["user"] == "bob"
        assert rows[held.id]["pid"] == os.getpid()
        code, _, err = admin(cluster, "tmr-b", capsys, "release", held.id)
        assert code == 0, err


def test_admin_on_a_standby_says_so(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = admin(cluster, "tmr-b", capsys, "handles")
    assert code == 1 and "standby" in err
    code, _, err = admin(cluster, "tmr-b", capsys, "release", "h1-tmr-a-x")
    assert code == 1 and "NOT_ACTIVE" in err


def test_status_and_list_show_days_left(cluster: LocalCluster) -> None:
    st = cluster.ctl("tmr-a", "status")
    assert st["expiry_warning_days"] == 30.0
    (lic,) = st["licenses"]
    assert lic["expiry"] in ("none", "ok", "warning", "expired")
    assert ("days_left" in lic) and (lic["days_left"] is None) == (lic["expires"] is None)
    with cluster.client() as c:
        (entry,) = c.list_licenses().licenses
        assert entry.extra["expiry"] == lic["expiry"]
