"""`tmr local up` returns once the cluster serves, and survives a port taken before binding."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tmr.client import Client
from tmr.ctl import ctl_request
from tmr.local import cluster as local
from tmr.local.cluster import ClusterError, local_down, local_up, wait_serving


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "cluster"
    try:
        yield d
    finally:
        if (d / "cluster.json").exists():
            local_down(d)


def _serves_now(info: dict[str, Any]) -> None:
    """Everything a script would do right after `tmr local up`, without any waiting."""
    nodes = {n["name"]: n for n in info["nodes"]}
    with urllib.request.urlopen(nodes["tmr-a"]["web_url"] + "api/status", timeout=5) as resp:
        web = json.loads(resp.read())
    assert web["role"] == "active" and web["backends_up"] == 3, web
    status = ctl_request(Path(nodes["tmr-a"]["ctl_socket"]), "status")
    assert all(b["up"] for b in status["backends"]), status["backends"]
    with Client(info["client_endpoints"], info["service_public_key"], timeout=0.5) as c:
        licenses = c.list_licenses().licenses
    assert [lic.available for lic in licenses] == [True]


def test_local_up_returns_once_the_cluster_serves(root: Path, capsys: Any) -> None:
    info = local_up(root, quantity=3, progress=True)
    _serves_now(info)
    out = capsys.readouterr().out
    assert "serving: tmr-a active, 3 backends up, list answered" in out


def test_a_port_taken_before_binding_is_replaced(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Another program takes backend-2's and tmr-b's ports between choosing and binding."""
    squatters: list[socket.socket] = []
    calls = {"n": 0}
    real = local._free_port

    def free_port() -> int:
        calls["n"] += 1
        port = real()
        if calls["n"] in (2, 5):  # backend-2, tmr-b (the order of the ports chosen)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
            squatters.append(s)
        return port

    monkeypatch.setattr(local, "_free_port", free_port)
    try:
        info = local_up(root, quantity=3, progress=True)
        taken = {s.getsockname()[1] for s in squatters}
        used = {int(n["endpoint"].rsplit(":", 1)[1]) for n in info["nodes"]}
        assert len(taken) == 2 and not taken & used
        _serves_now(info)
        out = capsys.readouterr().out
        assert "backend-2: port" in out and "tmr-b: port" in out and "was taken" in out
    finally:
        for s in squatters:
            s.close()


def test_no_wait_returns_after_the_promote(root: Path) -> None:
    info = local_up(root, quantity=3, progress=False, wait=False)
    nodes = {n["name"]: n for n in info["nodes"]}
    assert ctl_request(Path(nodes["tmr-a"]["ctl_socket"]), "status")["role"] == "active"


def test_wait_serving_gives_up_with_what_is_missing() -> None:
    said: list[str] = []
    info = {"dir": "/nowhere"}
    with pytest.raises(ClusterError) as err:
        wait_serving(
            info,
            {"name": "tmr-a"},
            0.3,
            said.append,
            problems_of=lambda i, s: ["backends not up: backend-3"],
            interval=0.01,
        )
    assert "does not serve after 0.3s: backends not up: backend-3" in str(err.value)
    assert said == ["waiting for the cluster to serve: backends not up: backend-3"]


def test_local_up_licenses_as_many_products_as_asked(root: Path) -> None:
    info = local_up(root, quantity=3, products=3, progress=False)
    with Client(info["client_endpoints"], info["service_public_key"], timeout=0.5) as c:
        licenses = c.list_licenses().licenses
    assert sorted(lic.product for lic in licenses) == [
        local.PRODUCT,
        local.PRODUCT + 1,
        local.PRODUCT + 2,
    ]
    assert all(lic.available and lic.quantity == 3 for lic in licenses)


BAD_TIMES = (0.0, -1.0, float("nan"), float("inf"))
BAD_LEASES = (0.1, *BAD_TIMES)


@pytest.mark.parametrize("products", [0, local.MAX_PRODUCTS + 1])
def test_a_product_count_out_of_range_is_refused_before_anything_starts(
    root: Path, products: int
) -> None:
    with pytest.raises(ClusterError, match="products must be 1 to"):
        local_up(root, products=products, progress=False)
    assert not root.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        *(({"lease": v}, r"the lease must be at least 0\.15 s") for v in BAD_LEASES),
        *(
            ({"backend_timeout": v}, "the backend timeout must be greater than 0")
            for v in BAD_TIMES
        ),
    ],
)
def test_a_timing_the_servers_refuse_is_refused_before_anything_starts(
    root: Path, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ClusterError, match=message):
        local_up(root, progress=False, **kwargs)  # type: ignore[arg-type]
    assert not root.exists()
