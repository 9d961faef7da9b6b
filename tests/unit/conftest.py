"""Fixtures shared by the unit tests; `make_server`: the fake TMR server
(tests/unit/client/fake_tmr_server.py) of the SDK, CLI, workload generator and load
generator tests, with the service key pair `service_keys`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent / "client"))

from fake_tmr_server import FakeServer

from tmr.client import NodeKeys
from tmr.config import BackendRef, ServerConfig
from tmr.keys import generate_keypair, write_keypair
from tmr.server.service import ServerService


@pytest.fixture(scope="session")
def service_keys() -> NodeKeys:
    return generate_keypair()


@pytest.fixture
def make_server(service_keys: NodeKeys) -> Iterator[Callable[..., FakeServer]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    servers: list[FakeServer] = []

    def make(**kwargs: object) -> FakeServer:
        server = FakeServer(service_keys, **kwargs)  # type: ignore[arg-type]
        servers.append(server.start(ctx))
        return server

    yield make
    for server in servers:
        server.stop()
    ctx.destroy(linger=0)


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[ServerService]:
    """A `ServerService` (standby, no socket opened, no web thread) with three backends."""
    write_keypair(tmp_path / "service.key", generate_keypair())
    write_keypair(tmp_path / "node.key", generate_keypair())
    backends = tuple(
        BackendRef(f"b{i}", f"tcp://127.0.0.1:{1 + i}", generate_keypair().public)
        for i in (1, 2, 3)
    )
    cfg = ServerConfig(
        "tmr-a",
        tmp_path / "service.key",
        tmp_path / "node.key",
        backends,
        state_dir=tmp_path / "state",
        ctl_socket=tmp_path / "ctl.sock",
        web_listen=None,
    )
    s = ServerService(cfg)
    yield s
    s.loop.close()
    s.ctx.term()
