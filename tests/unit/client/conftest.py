"""Fixtures of the SDK and CLI tests: a fake TMR server on loopback (see fake_tmr_server)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import zmq
from fake_tmr_server import FakeServer

from tmr.client import NodeKeys, generate_keypair


@pytest.fixture
def zctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture(scope="session")
def service_keys() -> NodeKeys:
    return generate_keypair()


@pytest.fixture
def make_server(
    zctx: zmq.Context[zmq.Socket[bytes]], service_keys: NodeKeys
) -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def make(**kwargs: object) -> FakeServer:
        server = FakeServer(service_keys, **kwargs)  # type: ignore[arg-type]
        servers.append(server.start(zctx))
        return server

    yield make
    for server in servers:
        server.stop()
