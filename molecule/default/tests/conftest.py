"""Helpers for the lab's testinfra tests: hosts by inventory name, group membership, lab facts."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)

FIRM = 6000123
PRODUCT = 42
TMR_ID = 7
QUANTITY = 20
CLIENT_PORT = 22350
BACKEND_PORT = 22360
TMR = "/opt/tmr/venv/bin/tmr"
PY = "/opt/tmr/venv/bin/python"


def group(name: str) -> list[str]:
    return sorted(RUNNER.get_hosts(name))


def host(name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def hostvars(name: str) -> dict[str, Any]:
    return RUNNER.get_variables(name)


def vip() -> str:
    net = os.environ.get("LAB_SUBNET", "10.89.47.0/24").split("/")[0].rsplit(".", 1)[0]
    return f"{net}.{os.environ.get('LAB_VIP_OCTET', '100')}"


def address(name: str) -> str:
    return str(hostvars(name)["ansible_host"])


def server_status(name: str) -> dict[str, Any]:
    out = host(name).check_output(f"{TMR} ctl --socket /run/tmr/server.sock status")
    return json.loads(out)


@pytest.fixture(scope="session")
def servers() -> list[str]:
    return group("tmr_servers")


@pytest.fixture(scope="session")
def backends() -> list[str]:
    return group("tmr_backends")


@pytest.fixture(scope="session")
def client() -> Any:
    return host(group("tmr_clients")[0])
