"""Fixtures of the workload tests: the SDK tests' fake TMR server (tests/unit/client)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "client"))

from fake_tmr_server import FakeServer

from tmr.client import NodeKeys, generate_keypair


@pytest.fixture(scope="session")
def wl_service_keys() -> NodeKeys:
    return generate_keypair()


@pytest.fixture
def fake_server(wl_service_keys: NodeKeys) -> Iterator[Callable[..., FakeServer]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    servers: list[FakeServer] = []

    def make(**kwargs: object) -> FakeServer:
        server = FakeServer(wl_service_keys, **kwargs)  # type: ignore[arg-type]
        servers.append(server.start(ctx))
        return server

    yield make
    for server in servers:
        server.stop()
    ctx.destroy(linger=0)
