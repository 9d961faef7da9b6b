"""Fixtures shared by the security tests: a running backend service (one per module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.backend.test_service_core import NOW, make_setup
from tmr.backend.service import BackendService


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendService]:
    setup = make_setup(tmp_path_factory.mktemp("b"), expires=None, start=NOW)
    service = BackendService(setup.config, time_source=setup.clock)
    service.open()
    try:
        yield service
    finally:
        service.close()
