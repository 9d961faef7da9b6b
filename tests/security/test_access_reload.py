"""Attack: a client key that must be shut out, and an administrator who must be let in, on a
cluster in service.

Before, `client_allowlist` and `admin_keys` were read only at start: taking a leaked key off
the allowlist (or adding an administrator's key) meant restarting both servers, a failover
each, and a connection made before the restart kept its access until then. Now `tmr ctl
reload` (and SIGHUP) put both lists in force in the running server: new handshakes are
checked against the new list, the requests of a connection whose key was taken off it are
refused UNAUTHORIZED (but a release, which only gives seats back), and the answer names every
other key that changed (in force only after a restart). A file that does not check in full
changes nothing, and a reload never stops the server."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_helpers import LocalCluster, wait_for
from tmr.cli.main import main
from tmr.client import Client
from tmr.errors import ErrorCode, NotActive, Timeout, Unauthorized
from tmr.keys import NodeKeys, generate_keypair

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRM, PRODUCT = 6000123, 42
SERVERS = ("tmr-a", "tmr-b")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("access") / "cluster", quantity=5)
    try:
        c.promote("tmr-a")
        c.wait_backends("tmr-a", {"backend-1", "backend-2", "backend-3"})
        yield c
    finally:
        c.stop_all()


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` at once (a reload never reads half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _set(cluster: LocalCluster, key: str, value: Any) -> None:
    """Write ``key = value`` into both servers' server.toml (replacing the line if there is
    one)."""
    for name in SERVERS:
        cfg = Path(cluster.nodes[name]["config"])
        text = re.sub(rf"(?m)^{key} = .*\n", "", cfg.read_text())
        _write(cfg, (f"{key} = {json.dumps(value)}\n" + text).encode())


def _count(cluster: LocalCluster, name: str, event: str) -> int:
    return Path(cluster.nodes[name]["log"]).read_text(errors="replace").count(f'"event":"{event}"')


def _sighup(cluster: LocalCluster, name: str) -> str:
    """SIGHUP (systemctl reload) to ``name``; the event its reload logged."""
    done = {e: _count(cluster, name, e) for e in ("config_reloaded", "config_reload_failed")}
    os.kill(cluster.nodes[name]["pid"], signal.SIGHUP)
    wait_for(
        f"{name} to reload",
        lambda: any(_count(cluster, name, e) > n for e, n in done.items()),
        10,
    )
    return next(e for e, n in done.items() if _count(cluster, name, e) > n)


def _reload(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """`tmr ctl reload` on tmr-a, SIGHUP to tmr-b (systemctl reload); tmr-a's answer."""
    code = main(["ctl", "--socket", cluster.nodes["tmr-a"]["ctl_socket"], "reload"])
    out, _ = capsys.readouterr()
    answer: dict[str, Any] = json.loads(out)
    assert (code == 0) == answer["ok"], answer
    ok = _sighup(cluster, "tmr-b") == "config_reloaded"
    assert ok == answer["ok"]
    return answer


def _checkout_release(client: Client) -> None:
    client.checkout(FIRM, PRODUCT).release()


def _one_server(
    cluster: LocalCluster, keys: NodeKeys, timeout: float = 10.0, server: str = "tmr-a"
) -> Client:
    """A client of ``server``'s endpoint alone (no failover to the other)."""
    return Client(
        [cluster.endpoint(server)],
        cluster.info["service_public_key"],
        client_keys=keys,
        timeout=timeout,
    )


def _admitted(cluster: LocalCluster, server: str, keys: NodeKeys) -> bool:
    """Whether ``server`` admits a new connection with ``keys``: an answer (the standby's
    NOT_ACTIVE too) or silence (its handshake refused)."""
    with _one_server(cluster, keys, timeout=1.5, server=server) as c:
        try:
            c.status()
        except Timeout:
            return False
        except NotActive:
            pass
    return True


def test_reload_puts_the_allowlist_and_admin_keys_in_force_without_a_restart(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    pids = {name: cluster.nodes[name]["pid"] for name in SERVERS}
    alice, mallory = generate_keypair(), generate_keypair()
    with _one_server(cluster, mallory) as early:
        held = early.checkout(FIRM, PRODUCT)  # mallory's connection, made while any key is in

        _set(cluster, "client_allowlist", [alice.public])
        answer = _reload(cluster, capsys)
        assert answer["config"]["applied"] == ["client_allowlist"]
        assert answer["config"]["restart_needed"] == []
        assert answer["config"]["client_allowlist"] == 1

        # The connection made before is refused request by request, with a reason; it may
        # still give its seats back.
        with pytest.raises(Unauthorized, match="client_allowlist"):
            early.checkout(FIRM, PRODUCT)
        with pytest.raises(Unauthorized, match="client_allowlist"):
            held.heartbeat()
        assert held.release() is True
    # tmr-b, the standby, reloaded by SIGHUP: the same list
    assert _admitted(cluster, "tmr-b", alice) and not _admitted(cluster, "tmr-b", mallory)
    # A new connection with mallory's key is refused at the handshake: no answer at all.
    with _one_server(cluster, mallory, timeout=1.5) as late, pytest.raises(Timeout):
        late.checkout(FIRM, PRODUCT)
    with _one_server(cluster, alice) as a:
        _checkout_release(a)

        # Admin keys: alice's usage report is refused, then answered once her key is listed.
        with pytest.raises(Unauthorized):
            a.usage(0, 1)
        _set(cluster, "admin_keys", [alice.public])
        answer = _reload(cluster, capsys)
        assert answer["config"]["applied"] == ["admin_keys"]
        assert answer["config"]["restart_needed"] == []
    with _one_server(cluster, alice, timeout=30) as a:
        assert {s["backend"] for s in a.usage(0, 1).sources} == {
            "backend-1",
            "backend-2",
            "backend-3",
        }

    # A key a reload cannot change is named, and not put in force: named again next time.
    _set(cluster, "lease_seconds", 45.0)
    for _ in range(2):
        answer = _reload(cluster, capsys)
        assert answer["config"] == {
            "file": cluster.nodes["tmr-a"]["config"],
            "applied": [],
            "restart_needed": ["lease_seconds"],
            "client_allowlist": 1,
            "admin_keys": 1,
        }

    # A file that does not check in full changes nothing: alice stays in, mallory out.
    _set(cluster, "client_allowlist", [mallory.public, "not a key"])
    answer = _reload(cluster, capsys)
    assert answer["ok"] is False and answer["code"] == ErrorCode.BAD_REQUEST
    assert "client_allowlist" in answer["error"]
    with _one_server(cluster, alice) as a:
        _checkout_release(a)
    with _one_server(cluster, mallory, timeout=1.5) as late, pytest.raises(Timeout):
        late.checkout(FIRM, PRODUCT)
    # Nor does a file that is not text, reloaded by SIGHUP: the server goes on as it was.
    cfg = Path(cluster.nodes["tmr-b"]["config"])
    good = cfg.read_bytes()
    _write(cfg, b'name = "tmr-\xff"\n' + good)
    assert _sighup(cluster, "tmr-b") == "config_reload_failed"
    assert cluster.role("tmr-b") == "standby"
    assert _admitted(cluster, "tmr-b", alice) and not _admitted(cluster, "tmr-b", mallory)
    _write(cfg, good)

    # No allowlist again: every key is admitted.
    _set(cluster, "client_allowlist", [])
    _set(cluster, "lease_seconds", 30.0)
    answer = _reload(cluster, capsys)
    assert answer["config"]["applied"] == ["client_allowlist"]
    assert answer["config"]["restart_needed"] == []
    with _one_server(cluster, mallory) as m:
        _checkout_release(m)

    # None of it restarted a server, and tmr-a kept its term.
    assert {name: cluster.nodes[name]["pid"] for name in SERVERS} == pids
    assert cluster.role("tmr-a") == "active"
