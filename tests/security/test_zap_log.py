"""Attack: a flood of CURVE handshakes with keys that are not allowed.

Every refused handshake wrote one warning (300 bad handshakes, 300 lines): anyone who can
reach the port could flood the journal and push the important lines out of journald's rate
limit. Now a refusal is logged at most once per key and minute (and at most 100 lines a
minute over all keys), and every one is counted (backend status, server /metrics)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.integration.cluster_helpers import LocalCluster, wait_for
from tmr.logs import configure
from tmr.zap_log import ZapDenials

FLOOD = 300


def _events(log_file: str, event: str) -> list[dict[str, Any]]:
    out = []
    for line in Path(log_file).read_text(errors="replace").splitlines():
        if f'"event":"{event}"' in line:
            out.append(json.loads(line))
    return out


def _flood(endpoint: str, server_key: str, count: int, *, distinct: bool = False) -> None:
    """Open ``count`` CURVE connections with a key the peer does not allow (one key, or a
    fresh key per connection)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    pub, sec = zmq.curve_keypair()
    socks = []
    for _ in range(count):
        if distinct:
            pub, sec = zmq.curve_keypair()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RECONNECT_IVL, 60_000)  # one handshake per socket
        s.curve_serverkey = server_key.encode()
        s.curve_publickey = pub
        s.curve_secretkey = sec
        s.connect(endpoint)
        socks.append(s)
    return_socks.extend(socks)


return_socks: list[zmq.Socket[bytes]] = []


@pytest.fixture(autouse=True)
def _close_flood_sockets() -> Iterator[None]:
    yield
    for s in return_socks:
        s.close(linger=0)
    return_socks.clear()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("zap") / "cluster", quantity=3)
    try:
        yield c
    finally:
        c.stop_all()


def test_backend_logs_a_flood_of_bad_handshakes_once_and_counts_all(
    cluster: LocalCluster,
) -> None:
    node = cluster.nodes["backend-2"]
    before = len(_events(node["log"], "peer_denied"))
    _flood(node["endpoint"], node["public_key"], FLOOD)

    def counted() -> bool:
        return int(cluster.ctl("backend-2", "status")["counters"]["handshakes_denied"]) >= FLOOD

    wait_for(f"backend-2 to refuse {FLOOD} handshakes", counted, 30)
    lines = _events(node["log"], "peer_denied")[before:]
    assert len(lines) == 1, f"{len(lines)} lines for {FLOOD} refusals of one key"
    assert lines[0]["level"] == "warning" and lines[0]["key"]


def test_server_counts_bad_client_handshakes_in_metrics_and_logs_once(
    cluster: LocalCluster,
) -> None:
    """tmr-b restarted with a client allowlist: a key outside it is refused."""
    node = cluster.nodes["tmr-b"]
    allowed_pub, _ = zmq.curve_keypair()
    cfg = Path(node["config"])
    text = cfg.read_text()
    cfg.write_text(f"client_allowlist = [{json.dumps(allowed_pub.decode())}]\n" + text)
    cluster.kill("tmr-b")
    cluster.start("tmr-b")
    before = len(_events(node["log"], "client_denied"))
    _flood(node["endpoint"], cluster.info["service_public_key"], FLOOD)

    def metric() -> float:
        with urllib.request.urlopen(node["web_url"] + "metrics", timeout=5) as resp:
            body = resp.read().decode()
        for line in body.splitlines():
            if line.startswith('tmr_handshakes_denied_total{socket="client"}'):
                return float(line.split()[-1])
        return 0.0

    wait_for(f"tmr-b to count {FLOOD} refused handshakes", lambda: metric() >= FLOOD, 30)
    lines = _events(node["log"], "client_denied")[before:]
    assert len(lines) == 1, f"{len(lines)} lines for {FLOOD} refusals of one key"


# ---------------------------------------------------------------- the throttle alone


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "log.jsonl"
    with out.open("w") as fh:
        configure("test", "info", fh)
        try:
            yield out
        finally:
            configure("test", "info")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_line_per_key_and_interval_with_the_suppressed_count(records: Path) -> None:
    clock = _Clock()
    hits: list[int] = []
    z = ZapDenials("peer_denied", clock=clock, on_denied=lambda: hits.append(1))
    logged = [z.denied("K1", address="127.0.0.1") for _ in range(FLOOD)]
    assert logged.count(True) == 1 and logged[0] is True
    assert z.total == FLOOD and len(hits) == FLOOD
    clock.t += 59.9
    assert z.denied("K1") is False
    clock.t += 0.2
    assert z.denied("K1") is True
    lines = _lines(records)
    assert [ln["suppressed"] for ln in lines] == [0, FLOOD]
    assert lines[0]["key"] == "K1" and lines[0]["address"] == "127.0.0.1"


def test_fresh_keys_cannot_flood_either(records: Path) -> None:
    clock = _Clock()
    z = ZapDenials("peer_denied", clock=clock, max_lines=100, max_keys=1000)
    logged = sum(z.denied(f"K{i}") for i in range(FLOOD))
    assert logged == 100 and z.total == FLOOD
    clock.t += 60.0
    assert z.denied("K150") is True  # throttled before: logged now, with its count
    assert _lines(records)[-1]["suppressed"] == 1


def test_memory_is_bounded() -> None:
    z = ZapDenials("peer_denied", max_keys=50, max_lines=10**9)
    for i in range(5000):
        z.denied(f"K{i}")
    assert len(z._seen) == 50
