"""Fixtures of the backend tests: a store's database path and an open `SqliteStore`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tmr.backend.store import SqliteStore


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "backend.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(db)
    try:
        yield s
    finally:
        s.close()
