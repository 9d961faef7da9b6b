"""The Python package builds as a wheel and an sdist (`python -m build`, as `make dist` runs it),
both of the one version that `tmr --version` prints and the Ansible collection carries."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

import tmr

REPO = Path(__file__).resolve().parents[2]
VERSION = tmr.__version__
# what goes into the sdist: the tracked files `make dist` copies (not the working tree's caches)
SDIST_INPUTS = (
    "pyproject.toml",
    "MANIFEST.in",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "requirements",
    "services",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--", *SDIST_INPUTS],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        rel = Path(os.fsdecode(name))
        if not (REPO / rel).is_file():  # deleted in the work tree, not yet committed
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes((REPO / rel).read_bytes())
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": "315532800", "PIP_CONSTRAINT": ""},
        cwd=out,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "deprecated" not in proc.stdout + proc.stderr, "the build warns: fix pyproject.toml"
    return out


def test_tmr_version_prints_the_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tmr", "--version"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "services")},
    ).stdout
    assert out == f"tmr {VERSION}\n"


def test_the_wheel_is_the_one_version_with_the_tmr_command(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"tmr_license_server-{VERSION}-py3-none-any.whl"
    info = f"tmr_license_server-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = email.message_from_bytes(zf.read(f"{info}/METADATA"))
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
        zf.extractall(tmp_path / "site")
    assert meta["Version"] == VERSION
    assert meta["License-Expression"] == "Apache-2.0"
    assert "tmr = tmr.cli.main:main" in entry_points
    assert {"tmr/__init__.py", "tmr/py.typed", "tmr/cli/main.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "services/")) or "__pycache__" in n]
    # the unpacked wheel, not the checkout, answers --version (dependencies from this venv)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tmr; from tmr.cli.main import main; print(tmr.__file__); "
            "sys.argv = ['tmr', '--version']; main()",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert proc.returncode == 0, proc.stderr
    where, printed = proc.stdout.splitlines()
    assert where.startswith(str(tmp_path / "site"))
    assert printed == f"tmr {VERSION}"


def test_the_sdist_has_the_sources_and_the_pinned_constraints(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    top = f"tmr_license_server-{VERSION}"
    assert sdist.name == f"{top}.tar.gz"
    with tarfile.open(sdist) as tar:
        names = {n.removeprefix(f"{top}/") for n in tar.getnames()}
    assert {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "PKG-INFO",
        "services/tmr/__init__.py",
        "requirements/wheelhouse.txt",
        "requirements/build.txt",
    } <= names
    assert not [n for n in names if n.startswith(("tests/", "lab/", "roles/", "bench/"))]


def test_the_collection_has_the_package_version() -> None:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert galaxy["version"] == VERSION
