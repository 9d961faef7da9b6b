"""requirements/*.txt pin what pyproject.toml asks for, every pin with sha256 hashes.

The wheelhouse is built and installed with pip --require-hashes from these files; a dependency
added to pyproject.toml without regenerating them (see the operator guide) fails here first.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


def parse_pins(path: Path) -> dict[str, tuple[Version, int]]:
    """canonical name -> (pinned version, number of sha256 hashes)."""
    pins: dict[str, tuple[Version, int]] = {}
    current: str | None = None
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            assert current not in pins, f"{path.name}: {current} pinned twice"
            pins[current] = (Version(m.group(2)), 0)
        elif current is not None:
            version, n = pins[current]
            pins[current] = (version, n + len(_HASH.findall(line)))
        else:
            pytest.fail(f"{path.name}: unexpected line {line!r}")
    return pins


@pytest.mark.parametrize(
    ("file", "requirements"),
    [
        ("wheelhouse.txt", PYPROJECT["project"]["dependencies"]),
        ("build.txt", PYPROJECT["build-system"]["requires"]),
    ],
)
def test_every_requirement_is_pinned_with_hashes(file: str, requirements: list[str]) -> None:
    pins = parse_pins(REPO / "requirements" / file)
    assert pins, file
    for name, (_, hashes) in pins.items():
        assert hashes >= 1, f"{file}: {name} has no sha256 hash"
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{file}: {name} (pyproject.toml) is not pinned: regenerate it"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"{file}: {name}=={version} does not satisfy {req.specifier} in pyproject.toml"
        )


def test_parser_sees_a_missing_hash(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text(
        "pyzmq==27.3.0\n    # via x\nmsgpack==1.2.4 \\\n    --hash=sha256:" + "a" * 64 + "\n"
    )
    assert parse_pins(path) == {"pyzmq": (Version("27.3.0"), 0), "msgpack": (Version("1.2.4"), 1)}
