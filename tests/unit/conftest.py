"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tmr.config import BackendRef, ServerConfig
from tmr.keys import generate_keypair, write_keypair
from tmr.server.service import ServerService


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
