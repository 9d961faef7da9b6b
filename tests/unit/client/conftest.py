"""Fixtures of the SDK and CLI tests. Their fake TMR server on loopback (`make_server`,
`service_keys`) is shared with other unit tests: tests/unit/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq


@pytest.fixture
def zctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)
