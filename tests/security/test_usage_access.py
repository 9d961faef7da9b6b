"""Attack: usage reports (`op: usage`) asked by any client, over any window, served by a
full-table query on the backends' replication loop.

A report shows every client's usage and made each backend read its whole usage record on the
poll loop: a few concurrent reports pushed checkout p50 from 4 ms to 30-74 ms (max 1.6 s)
and servers saw backends down. Now: only keys in ``admin_keys`` (the CURVE key of the
connection, from ZAP) or the control socket get a report; the window and the rows are
bounded (BAD_REQUEST beyond); the backends read on a thread of their own, so checkouts are
not delayed (p99 within 2x of idle while ten 100k-row reports run)."""

from __future__ import annotations

import json
import re
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_helpers import LocalCluster
from tmr.client import Client
from tmr.ctl import ctl_request
from tmr.errors import ApiError, ErrorCode
from tmr.keys import NodeKeys, generate_keypair
from tmr.local.cluster import FIRM, PRODUCT

ROWS = 100_000
MAX_ROWS = 150_000  # usage_max_rows of the test servers
# usage_query_timeout of the test servers: reports run at nice 19, and on a loaded machine a
# backend's chunk can take over the default 5 s; these tests are about what a report holds.
QUERY_TIMEOUT = 30
# How long a test waits for one report: on an idle machine one takes 1-3 s; beside four busy
# processes a 100,000-row report took about 60 s (docs/performance.md, usage reports).
REPORT_WAIT = 180


def _seed_usage(db: Path, rows: int, now: float) -> None:
    """``rows`` usage rows (grant/release pairs) in the last day, written beside the running
    backend (WAL: its own writes go on)."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        batch = []
        for i in range(rows // 2):
            at = now - 86400 + i * (86000 / (rows // 2))
            h = f"seed-{i:08d}"
            batch.append((at, at, "granted", FIRM, PRODUCT, h, 1, f"c{i % 50}"))
            batch.append((at + 5, at + 5, "released", FIRM, PRODUCT, h, 1, f"c{i % 50}"))
        with conn:
            conn.executemany(
                "INSERT INTO usage (at, recorded_at, event, firm, product, handle, seats, "
                "client_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                batch,
            )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def admin() -> NodeKeys:
    return generate_keypair()


def start_cluster(root: Path, admin: NodeKeys) -> LocalCluster:
    """A local cluster whose servers know ``admin`` as an admin key, and ROWS usage rows on
    every backend."""
    c = LocalCluster(root, quantity=3)
    try:
        for name in ("tmr-a", "tmr-b"):
            cfg = Path(c.nodes[name]["config"])
            # `tmr local up` lists its own administrator key; this test's key replaces it.
            text = re.sub(r"(?m)^admin_keys = .*\n", "", cfg.read_text())
            extra = (
                f"admin_keys = [{json.dumps(admin.public)}]\nusage_max_rows = {MAX_ROWS}\n"
                f"usage_query_timeout = {QUERY_TIMEOUT}\n"
            )
            cfg.write_text(extra + text)
            c.kill(name)
            c.start(name)
        c.promote("tmr-a")
        c.wait_backends("tmr-a", {"backend-1", "backend-2", "backend-3"})
        now = time.time()
        for b in ("backend-1", "backend-2", "backend-3"):
            db = Path(c.nodes[b]["config"]).parent / "state" / "backend.sqlite3"
            _seed_usage(db, ROWS, now)
    except BaseException:
        c.stop_all()
        raise
    return c


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, admin: NodeKeys) -> Iterator[LocalCluster]:
    c = start_cluster(tmp_path_factory.mktemp("usage") / "cluster", admin)
    try:
        yield c
    finally:
        c.stop_all()


def _day() -> tuple[float, float]:
    now = time.time()
    return now - 86400 - 60, now


def test_a_client_key_not_in_admin_keys_gets_unauthorized(cluster: LocalCluster) -> None:
    with cluster.client() as client, pytest.raises(ApiError) as err:  # a fresh CURVE key
        client.usage(*_day())
    assert err.value.code == ErrorCode.UNAUTHORIZED


def test_an_admin_key_gets_the_report(cluster: LocalCluster, admin: NodeKeys) -> None:
    with cluster.client(client_keys=admin, timeout=REPORT_WAIT) as client:
        result = client.usage(*_day())
    assert {s["backend"] for s in result.sources} == {"backend-1", "backend-2", "backend-3"}
    assert all(s["rows"] >= ROWS for s in result.sources)
    (lic,) = [x for x in result.licenses if x["product"] == PRODUCT]
    assert lic["checkouts"] >= ROWS // 2


def test_a_window_longer_than_the_limit_is_a_bad_request(
    cluster: LocalCluster, admin: NodeKeys
) -> None:
    now = time.time()
    with cluster.client(client_keys=admin) as client, pytest.raises(ApiError) as err:
        client.usage(now - 401 * 86400, now)
    assert err.value.code == ErrorCode.BAD_REQUEST
    assert "400 days" in str(err.value)


def test_more_rows_than_the_limit_is_a_bad_request(cluster: LocalCluster, admin: NodeKeys) -> None:
    db = Path(cluster.nodes["backend-2"]["config"]).parent / "state" / "backend.sqlite3"
    _seed_usage(db, MAX_ROWS, time.time() - 5 * 86400)  # an older day, beyond the limit
    now = time.time()
    with (
        cluster.client(client_keys=admin, timeout=REPORT_WAIT) as client,
        pytest.raises(ApiError) as err,
    ):
        client.usage(now - 7 * 86400, now)
    assert err.value.code == ErrorCode.BAD_REQUEST
    assert "backend-2" in str(err.value) and "shorter window" in str(err.value)


def test_the_control_socket_answers_usage_reports(cluster: LocalCluster) -> None:
    since, until = _day()
    reply = ctl_request(
        Path(cluster.nodes["tmr-a"]["ctl_socket"]),
        "usage",
        timeout=REPORT_WAIT,
        since=since,
        until=until,
    )
    assert reply["ok"] is True, reply
    assert reply["server"] == "tmr-a" and len(reply["sources"]) == 3
    assert cluster.ctl("tmr-a", "status")["ok"] is True  # the socket serves again
    bad = ctl_request(Path(cluster.nodes["tmr-a"]["ctl_socket"]), "usage", since="yesterday")
    assert bad["ok"] is False and bad["code"] == "BAD_REQUEST"
    standby = ctl_request(
        Path(cluster.nodes["tmr-b"]["ctl_socket"]), "usage", since=since, until=until
    )
    assert standby["ok"] is False and "not active" in standby["error"]


# ---------------------------------------------------------------- checkouts while reports run


def _checkout_latencies(client: Client, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        handle = client.checkout(FIRM, PRODUCT)
        out.append(time.perf_counter() - t0)
        handle.release()


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def measure(
    cluster: LocalCluster, admin: NodeKeys, *, reports: int = 10, window: float = 15.0
) -> dict[str, Any]:
    """Checkout latency idle for ``window`` seconds, then for as long (or until they are done)
    while ``reports`` reports of the whole seeded record run concurrently."""
    since, until = _day()
    with cluster.client() as client:
        client.checkout(FIRM, PRODUCT).release()  # connect and warm up
        idle: list[float] = []
        stop = threading.Event()
        t = threading.Thread(target=_checkout_latencies, args=(client, stop, idle))
        t.start()
        stop.wait(window)  # a measurement window, not a wait for a condition
        stop.set()
        t.join()

        loaded: list[float] = []
        errors: list[BaseException] = []
        done = threading.Semaphore(0)

        def report() -> None:
            try:
                with cluster.client(client_keys=admin, timeout=300) as c:
                    c.usage(since, until)
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.release()

        stop = threading.Event()
        t = threading.Thread(target=_checkout_latencies, args=(client, stop, loaded))
        t.start()
        started = time.monotonic()
        runners = [threading.Thread(target=report) for _ in range(reports)]
        for r in runners:
            r.start()
        deadline = started + window
        finished = 0
        while finished < reports and done.acquire(timeout=max(0.0, deadline - time.monotonic())):
            finished += 1
        stop.set()
        t.join()
        for r in runners:
            r.join(300)
        took = time.monotonic() - started
    assert not errors, errors

    def stats(values: list[float]) -> dict[str, float]:
        return {"n": len(values), "p50": _p(values, 50), "p99": _p(values, 99), "max": max(values)}

    return {
        "idle": stats(idle),
        "loaded": stats(loaded),
        "reports": reports,
        "rows_per_backend": ROWS,
        "reports_seconds": took,
    }


def _backend_down_events(cluster: LocalCluster) -> int:
    return Path(cluster.nodes["tmr-a"]["log"]).read_text().count('"event":"backend_down"')


def test_checkouts_are_not_delayed_by_concurrent_usage_reports(
    cluster: LocalCluster, admin: NodeKeys
) -> None:
    """Three concurrent reports of 100k rows per backend. Before, checkout p99 went to
    0.79 s (max 1.5 s) with ten and the server saw backends down. What holds on any host:
    every report is answered, replication is never starved (no backend is seen down; the
    backends send the rows in chunks of at most 256 KiB, `tests/unit/web/
    test_usage_chunks.py`) and no checkout waits anywhere near that long. The timing itself
    depends on what else the host runs: `python -m tests.security.test_usage_access`
    measures ten reports against the 2x bound (see its output and docs/performance.md)."""
    down_before = _backend_down_events(cluster)
    result = measure(cluster, admin, reports=3, window=8.0)  # every report answered
    print(json.dumps(result, indent=2))
    assert _backend_down_events(cluster) == down_before
    backends = cluster.ctl("tmr-a", "status")["backends"]
    assert [b["up"] for b in backends] == [True, True, True], backends
    assert result["loaded"]["p99"] <= max(2 * result["idle"]["p99"], 0.25), result


def main() -> int:
    """Ten concurrent 100k-row reports: checkout p99 against twice the idle p99."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        admin_keys = generate_keypair()
        c = start_cluster(Path(tmp) / "cluster", admin_keys)
        try:
            result = measure(c, admin_keys, reports=10, window=30.0)
        finally:
            c.stop_all()
    ratio = result["loaded"]["p99"] / result["idle"]["p99"]
    result["p99_ratio"] = ratio
    print(json.dumps(result, indent=2))
    return 0 if ratio <= 2.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())


@pytest.mark.parametrize("key", ["admin_keys", "client_allowlist"])
@pytest.mark.parametrize(
    "bad",
    [
        "admin",
        generate_keypair().public[:-1],  # one character short
        generate_keypair().public + "\n",  # a trailing newline: never the key ZAP reports
        generate_keypair().public[:-1] + " ",  # not a Z85 character
    ],
)
def test_admitted_keys_must_be_curve_public_keys(tmp_path: Path, key: str, bad: str) -> None:
    """Both lists of client keys in server.toml: anything but a Z85 public key would never
    match the key ZAP reports (the client silently refused, or a report key that never works);
    the loader refuses it, naming the entry."""
    from tmr.config import load_server_config
    from tmr.errors import ConfigError

    base = 'name = "a"\nservice_key_file = "/k"\nnode_key_file = "/n"\n' + "".join(
        f'[[backends]]\nname = "b{i}"\nendpoint = "tcp://127.0.0.1:{i}"\n'
        f'public_key = "{generate_keypair().public}"\n'
        for i in (1, 2, 3)
    )
    good = generate_keypair().public
    cfg = tmp_path / "server.toml"
    cfg.write_text(f"{key} = [{json.dumps(good)}]\n" + base)
    assert getattr(load_server_config(cfg), key) == (good,)
    cfg.write_text(f"{key} = [{json.dumps(good)}, {json.dumps(bad)}]\n" + base)
    with pytest.raises(ConfigError, match=rf"{key}\[1\] is not a Z85 CURVE public key"):
        load_server_config(cfg)
