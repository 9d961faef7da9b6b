"""Queued checkouts (RLM's queuing) on a real local cluster: `client.checkout(..., wait=)`
waits in the license's FIFO, the position shows to the client (`on_queued`) and to the
administrator (`tmr admin queue`), seats go in queue order, and a failover is invisible to
the waiting caller (it queues again on the new active server)."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import pytest

from tests.integration.cluster_helpers import LocalCluster, wait_for
from tmr.cli.main import main
from tmr.client import Client, Handle
from tmr.errors import NoLicenseAvailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRM, PRODUCT = 6000123, 42


class Waiter:
    """A checkout with `wait` in its own thread: its positions, its handle or error."""

    def __init__(self, client: Client, wait: float = 60.0, seats: int = 1) -> None:
        self.positions: list[int] = []
        self.handle: Handle | None = None
        self.error: BaseException | None = None
        self.done_at = 0.0
        self._thread = threading.Thread(target=self._run, args=(client, wait, seats))
        self._thread.start()

    def _run(self, client: Client, wait: float, seats: int) -> None:
        try:
            self.handle = client.checkout(
                FIRM, PRODUCT, seats, wait=wait, on_queued=self.positions.append
            )
        except BaseException as exc:  # handed to the test
            self.error = exc
        self.done_at = time.monotonic()

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the queued checkout never returned"


def queue(
    cluster: LocalCluster, server: str, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    code = main(["admin", "--socket", cluster.nodes[server]["ctl_socket"], "queue", *args])
    out, err = capsys.readouterr()
    return code, out, err


def queued(
    cluster: LocalCluster, server: str, capsys: pytest.CaptureFixture[str]
) -> list[dict[str, Any]]:
    code, out, err = queue(cluster, server, capsys, "--json")
    assert code == 0, err
    return list(json.loads(out)["queue"])


def test_queue_order_positions_and_admin_view(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        cluster.client(user="alice") as alice,
        cluster.client(user="bob") as bob,
        cluster.client(user="carol") as carol,
    ):
        held = [alice.checkout(FIRM, PRODUCT) for _ in range(3)]
        b = Waiter(bob)
        wait_for("bob to be queued", lambda: b.positions == [1], 15)
        c = Waiter(carol)
        wait_for("carol to be queued", lambda: c.positions == [2], 15)
        rows = queued(cluster, "tmr-a", capsys)
        assert [(r["user"], r["position"], r["seats"]) for r in rows] == [
            ("bob", 1, 1),
            ("carol", 2, 1),
        ]
        assert rows[0]["owner"] == bob.public_key and rows[0]["hold_left"] > 0
        code, out, _ = queue(cluster, "tmr-a", capsys)
        assert code == 0 and "2 queued checkout(s), 2 seat(s) wanted" in out and "bob" in out
        # A checkout without wait does not overtake the queue
        with pytest.raises(NoLicenseAvailable):
            alice.checkout(FIRM, PRODUCT)
        # A checkout that waits too little gives up with NoLicenseAvailable
        started = time.monotonic()
        with pytest.raises(NoLicenseAvailable):
            alice.checkout(FIRM, PRODUCT, wait=1.0)
        assert 0.9 <= time.monotonic() - started < 8.0

        held.pop().release()
        b.join()
        assert b.handle is not None and b.error is None
        wait_for("carol to move up", lambda: c.positions == [2, 1], 15)
        assert c.handle is None
        held.pop().release()
        c.join()
        assert c.handle is not None and b.done_at < c.done_at
        assert queued(cluster, "tmr-a", capsys) == []


def test_a_failover_requeues_the_waiting_client(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    with cluster.client(user="alice") as alice, cluster.client(user="bob") as bob:
        held = alice.checkout(FIRM, PRODUCT, seats=3)
        b = Waiter(bob, wait=120.0)
        wait_for("bob to be queued", lambda: b.positions == [1], 15)
        cluster.kill("tmr-a", signal.SIGKILL)
        cluster.promote("tmr-b", timeout=30.0)
        wait_for(
            "bob to queue again on tmr-b",
            lambda: [r["user"] for r in queued(cluster, "tmr-b", capsys)] == ["bob"],
            30,
        )
        assert b.handle is None and b.error is None  # the caller noticed nothing
        held.release()
        b.join(60.0)
        assert b.error is None and b.handle is not None and b.handle.held
