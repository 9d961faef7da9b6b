"""The repository root is the Ansible collection tmr.license_server (galaxy.yml).

The tarball that `make collection` builds holds roles/, playbooks/ and meta/runtime.yml and none
of the checkout's tests, lab or virtualenv; every playbook calls the roles by their fully
qualified names, so the playbooks run from an installed copy (as make lab and molecule run
them); the collection's version is the Python package's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import tmr

REPO = Path(__file__).resolve().parents[2]
GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"
PLAYBOOKS = sorted((REPO / "playbooks").glob("*.yml"))
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())
ROLE_KEYS = ("ansible.builtin.include_role", "ansible.builtin.import_role")
ROLE_KEYS_SHORT = ("include_role", "import_role")
# what an operator's collection must not carry (paths relative to the collection root)
NOT_SHIPPED = (
    "tests/",
    "lab/",
    ".venv/",
    "bench/",
    "model/",
    "molecule/",
    "services/",
    "build/",
    ".git/",
    ".ci/",
    "docs/",
    "inventory/lab/",
    "requirements/",
    "pyproject.toml",
    "Makefile",
    "ansible.cfg",
)


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: the lab extra (make lab-deps) installs ansible")
        pytest.skip(f"{name} not installed (make lab-deps)")
    return str(path)


@cache
def _built(out: Path) -> Path:
    subprocess.run(
        [
            _tool("ansible-galaxy"),
            "collection",
            "build",
            "--force",
            "--output-path",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (tarball,) = out.glob("*.tar.gz")
    return tarball


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _built(tmp_path_factory.mktemp("collection"))


def _role_refs(node: Any) -> Iterator[str]:
    """Every role a play or task list names: roles: entries, include_role/import_role."""
    if isinstance(node, list):
        for item in node:
            yield from _role_refs(item)
    elif isinstance(node, dict):
        for entry in node.get("roles") or []:
            yield entry if isinstance(entry, str) else entry.get("role", entry.get("name"))
        for key in (*ROLE_KEYS, *ROLE_KEYS_SHORT):
            if key in node:
                yield node[key]["name"]
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            if key in node:
                yield from _role_refs(node[key])


def test_the_tarball_holds_roles_playbooks_and_runtime_and_nothing_of_the_checkout(
    tarball: Path,
) -> None:
    assert tarball.name == f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    files = set(names)
    assert "meta/runtime.yml" in files
    assert "MANIFEST.json" in files
    for role in ROLES:
        assert f"roles/{role}/tasks/main.yml" in files, role
        assert f"roles/{role}/meta/argument_specs.yml" in files, role
    for playbook in PLAYBOOKS:
        assert f"playbooks/{playbook.name}" in files, playbook.name
    assert "monitoring/prometheus/tmr-alerts.yml" in files
    leaked = [n for n in names for bad in NOT_SHIPPED if n == bad.rstrip("/") or n.startswith(bad)]
    assert not leaked, f"build_ignore lets these into the collection: {leaked[:10]}"
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".tar.gz"))]


def test_every_playbook_calls_the_roles_by_their_fully_qualified_name() -> None:
    task_files = [
        *PLAYBOOKS,
        *(REPO / "playbooks" / "tasks").glob("*.yml"),
        *(REPO / "roles").glob("*/tasks/*.yml"),
    ]
    seen = 0
    for path in task_files:
        for ref in _role_refs(yaml.safe_load(path.read_text())):
            seen += 1
            prefix, _, role = ref.rpartition(".")
            assert prefix == FQCN, f"{path.relative_to(REPO)}: role {ref!r} is not {FQCN}.<role>"
            assert role in ROLES, f"{path.relative_to(REPO)}: no role {role!r} in roles/"
    assert seen >= 5  # site.yml's four roles and the rolling upgrade's include_role at least


def test_the_fqcn_check_sees_a_short_role_name() -> None:
    play = [
        {
            "hosts": "all",
            "roles": [{"role": "tmr_common"}],
            "tasks": [{"block": [{"ansible.builtin.include_role": {"name": "tmr_server"}}]}],
        }
    ]
    assert list(_role_refs(play)) == ["tmr_common", "tmr_server"]


def test_one_version_for_the_collection_the_python_package_and_the_cli() -> None:
    assert GALAXY["version"] == tmr.__version__
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" in project.get("dynamic", []) or project["version"] == tmr.__version__
    out = subprocess.run(
        [sys.executable, "-m", "tmr", "--version"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "services")},
    ).stdout
    assert out.split() == ["tmr", GALAXY["version"]]


def test_the_runtime_range_admits_the_ansible_core_ci_runs() -> None:
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    spec = SpecifierSet(runtime["requires_ansible"])
    out = subprocess.run(
        [_tool("ansible"), "--version"], check=True, capture_output=True, text=True
    ).stdout
    m = re.search(r"\[core ([0-9.]+)\]", out)
    assert m, out
    assert spec.contains(Version(m.group(1))), f"ansible-core {m.group(1)} not in {spec}"


def test_the_installed_tarball_runs_every_playbook_by_its_fqcn(
    tarball: Path, tmp_path: Path
) -> None:
    """ansible-galaxy installs it into a clean path; ansible-playbook finds each playbook, its
    roles and task files there only (no roles_path, not the checkout)."""
    dest = tmp_path / "collections"
    subprocess.run(
        [
            _tool("ansible-galaxy"),
            "collection",
            "install",
            "--offline",
            "-p",
            str(dest),
            str(tarball),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(dest),
        "ANSIBLE_ROLES_PATH": str(tmp_path),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "TMR_REPO_DIR": str(REPO),
    }
    installed = dest / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    for playbook in PLAYBOOKS:
        proc = subprocess.run(
            [
                _tool("ansible-playbook"),
                "-i",
                str(REPO / "inventory" / "lab"),
                f"{FQCN}.{playbook.stem}",
                "--list-tasks",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"playbook: {installed}/playbooks/{playbook.name}" in proc.stdout
