"""Fixtures of the licensing tests (helpers live in lic_world.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lic_world import NOW, World, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One world per module, for hypothesis tests (function fixtures do not reset per example)."""
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def sample_copy(shared_world: World) -> bytes:
    """Copy for backend 1 of a set with every optional field set."""
    issued = shared_world.issue(
        7, expires=int(NOW) + 86_400 * 365, features={"edition": "pro", "seats.max": "50"}
    )
    return shared_world.copies(issued)[0]
