"""Access modes on a real local cluster (LQ 3): station_share checkouts of one station (the
same client key, user and host) share their seats, another key never does; an exclusive
checkout takes every seat and refuses everything else; `tmr admin handles` shows the mode;
and the standby that takes over counts the adopted handles' modes exactly as the seat count."""

from __future__ import annotations

import json

import pytest

from tests.integration.cluster_helpers import LocalCluster
from tmr.cli.main import main
from tmr.client import Client, generate_keypair
from tmr.errors import NoLicenseAvailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRM, PRODUCT = 6000123, 42


def in_use(client: Client) -> int:
    entry = next(e for e in client.list_licenses().licenses if e.product == PRODUCT)
    return entry.in_use


def admin_handles(
    cluster: LocalCluster, server: str, capsys: pytest.CaptureFixture[str]
) -> list[dict[str, object]]:
    code = main(["admin", "--socket", cluster.nodes[server]["ctl_socket"], "handles", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return list(json.loads(out)["handles"])


def test_station_share_and_exclusive_across_failover(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = generate_keypair()  # two processes of one station: one key file, user and host
    with (
        cluster.client(client_keys=keys, user="alice") as p1,
        cluster.client(client_keys=keys, user="alice") as p2,
        cluster.client(user="alice") as other_key,
        cluster.client(user="bob") as bob,
    ):
        a = p1.checkout(FIRM, PRODUCT, 2, mode="station_share")
        b = p2.checkout(FIRM, PRODUCT, 2, mode="station_share")
        assert (a.mode.value, b.mode.value) == ("station_share", "station_share")
        assert in_use(bob) == 2
        # The same user and host claimed under another key is another station
        with pytest.raises(NoLicenseAvailable):
            other_key.checkout(FIRM, PRODUCT, 2, mode="station_share")
        rows = admin_handles(cluster, "tmr-a", capsys)
        assert sorted(str(r["mode"]) for r in rows) == ["station_share", "station_share"]
        code = main(["admin", "--socket", cluster.nodes["tmr-a"]["ctl_socket"], "handles"])
        table = capsys.readouterr().out
        assert code == 0 and "MODE" in table and "(2 counted under the access modes)" in table
        with pytest.raises(NoLicenseAvailable, match="exclusive access"):
            bob.checkout(FIRM, PRODUCT, mode="exclusive")
        with pytest.raises(ValueError, match="unknown access mode"):
            bob.checkout(FIRM, PRODUCT, mode="borrowed")

        # failover: tmr-b adopts the shared station and counts it once
        cluster.kill("tmr-a")
        cluster.promote("tmr-b", force=True)
        assert in_use(bob) == 2
        c = p1.checkout(FIRM, PRODUCT, 1, mode="station_share")  # within the station: free
        assert in_use(bob) == 2
        bob.checkout(FIRM, PRODUCT, 1).release()  # the third seat
        for h in (a, b, c):
            h.release()
        assert in_use(bob) == 0

        excl = bob.checkout(FIRM, PRODUCT, 1, mode="exclusive")
        assert excl.seats == 3 and in_use(bob) == 3
        with pytest.raises(NoLicenseAvailable, match="held exclusively"):
            p1.checkout(FIRM, PRODUCT, 1, mode="station_share")
        rows = admin_handles(cluster, "tmr-b", capsys)
        assert [(r["mode"], r["seats"]) for r in rows] == [("exclusive", 3)]

        # back to tmr-a (restarted): it adopts the exclusive handle and still refuses
        cluster.start("tmr-a")
        cluster.kill("tmr-b")
        cluster.promote("tmr-a", force=True)
        with pytest.raises(NoLicenseAvailable, match="held exclusively"):
            p2.checkout(FIRM, PRODUCT, 1)
        excl.release()
        p2.checkout(FIRM, PRODUCT, 3).release()


def test_the_cli_checks_out_in_a_mode_and_refuses_an_unknown_one(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["client", "--cluster", cluster.info["dir"], "--json", "checkout"]
    product = ["--firm", str(FIRM), "--product", str(PRODUCT), "--hold", "0"]
    assert main([*base, *product, "--mode", "exclusive"]) == 0
    event = json.loads(capsys.readouterr().out.splitlines()[0])
    assert event["mode"] == "exclusive" and event["seats"] == 3
    with pytest.raises(SystemExit) as exit_:
        main([*base, *product, "--mode", "borrowed"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err
