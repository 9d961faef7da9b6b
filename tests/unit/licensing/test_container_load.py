"""Loading a backend's license directory, and a rolling update #7 -> #8 with real copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lic_world import FIRM, NOW, PRODUCT, World

from tmr.errors import ConfigError
from tmr.isv import IssuedSet
from tmr.licensing import (
    ClockGuard,
    ContainerLoad,
    Holding,
    LicenseReason,
    effective_version,
    load_container,
)

KEY = (FIRM, PRODUCT)
R = LicenseReason


class Backend:
    """A backend's license directory, clock state and installed-TMR-ID memory."""

    def __init__(self, world: World, index: int, root: Path, now: float = NOW) -> None:
        self.world, self.index = world, index
        self.dir = root / f"b{index + 1}" / "licenses"
        self.dir.mkdir(parents=True)
        self.time = now
        self.clock = ClockGuard(root / f"b{index + 1}" / "clock", time_source=lambda: self.time)
        self.installed: dict[tuple[int, int], int] = {}

    def install(self, issued: IssuedSet) -> Path:
        src = issued.copies[self.index].path
        return Path(shutil.copy(src, self.dir / src.name))

    def load(self) -> ContainerLoad:
        node = self.world.nodes[self.index]
        load = load_container(
            self.dir,
            keyring=self.world.keyring,
            fingerprint=node.fingerprint,
            node_secret=node.keys.secret,
            clock=self.clock,
            installed_tmr_ids=self.installed,
        )
        for key, lic in load.licenses.items():  # what the backend service persists
            self.installed[key] = max(self.installed.get(key, 0), lic.tmr_id)
        return load


def reasons(load: ContainerLoad) -> dict[str, LicenseReason]:
    return {path.name: err.reason for path, err in load.rejected}


@pytest.fixture
def backends(world: World, tmp_path: Path) -> list[Backend]:
    return [Backend(world, i, tmp_path / "backends") for i in range(3)]


def test_rolling_update_from_7_to_8(world: World, backends: list[Backend]) -> None:
    """docs/design.md §3's update table, driven by real copies and real container loads."""
    v7, v8 = world.issue(7, quantity=20), world.issue(8, quantity=30)

    def status(up: list[bool]) -> tuple[str, int]:
        holdings = []
        for b, is_up in zip(backends, up, strict=True):
            lic = b.load().licenses.get(KEY) if is_up else None
            holdings.append(None if lic is None else Holding(lic.tmr_id, lic.quantity))
        eff = effective_version(holdings)
        return eff.status, eff.quantity

    for b in backends:
        b.install(v7)
    assert status([True] * 3) == ("1:#7 2:#7 3:#7", 20)
    expected = [
        ("1:- 2:#7 3:#7", 20, "1:(#8) 2:#7 3:#7", 20),
        ("1:(#8) 2:- 3:#7", 20, "1:#8 2:#8 3:(#7)", 30),
        ("1:#8 2:#8 3:-", 30, "1:#8 2:#8 3:#8", 30),
    ]
    for i, (during, lq_during, after, lq_after) in enumerate(expected):
        up = [j != i for j in range(3)]
        assert status(up) == (during, lq_during)
        backends[i].install(v8)  # the #7 file stays in the directory
        assert status([True] * 3) == (after, lq_after)
    for b in backends:
        load = b.load()
        assert load.licenses[KEY].tmr_id == 8
        assert set(reasons(load).values()) == {R.SUPERSEDED}


def test_installed_license_fields(world: World, backends: list[Backend]) -> None:
    issued = world.issue(7, quantity=5, expires=int(NOW) + 3600, features={"tier": "gold"})
    path = backends[1].install(issued)
    lic = backends[1].load().licenses[KEY]
    assert (lic.firm_code, lic.product_code, lic.tmr_id, lic.quantity) == (FIRM, PRODUCT, 7, 5)
    assert lic.expires == NOW + 3600
    assert lic.features == {"tier": "gold"}
    assert (lic.set_id, lic.serial, lic.path) == (issued.set_id, world.nodes[1].doc.serial, path)
    assert len(lic.product_key) == 32
    assert lic.product_key.hex() not in repr(lic)


def test_rollback_to_an_older_copy_is_refused(world: World, backends: list[Backend]) -> None:
    v7, v8 = world.issue(7), world.issue(8)
    b = backends[0]
    p7, p8 = b.install(v7), b.install(v8)
    assert b.load().licenses[KEY].tmr_id == 8
    p8.unlink()  # the customer puts back only the old copy
    load = b.load()
    assert KEY not in load.licenses
    assert reasons(load) == {p7.name: R.ROLLBACK}
    b.install(v8)  # the current copy back: the old one is merely superseded
    load = b.load()
    assert load.licenses[KEY].tmr_id == 8
    assert reasons(load) == {p7.name: R.SUPERSEDED}


def test_foreign_and_broken_files(world: World, backends: list[Backend]) -> None:
    issued = world.issue(7)
    b = backends[0]
    b.install(issued)
    shutil.copy(issued.copies[1].path, b.dir / "from-b2.tmrlic")  # copy for another backend
    (b.dir / "garbage.tmrlic").write_bytes(b"\x00" * 10)
    (b.dir / "huge.tmrlic").write_bytes(b"{" * (70 * 1024))
    (b.dir / "dir.tmrlic").mkdir()
    (b.dir / ".partial.tmrlic").write_bytes(b"half")  # hidden: an installer's temporary
    (b.dir / "notes.txt").write_text("ignored")
    load = b.load()
    assert load.licenses[KEY].tmr_id == 7
    assert reasons(load) == {
        "from-b2.tmrlic": R.WRONG_FINGERPRINT,
        "garbage.tmrlic": R.MALFORMED,
        "huge.tmrlic": R.MALFORMED,
    }
    # Not a regular file: never opened, listed apart with what it is.
    assert [(p.name, why) for p, why in load.skipped] == [
        ("dir.tmrlic", "a directory, not a regular file")
    ]


def test_copy_whose_sealed_key_is_for_another_node(world: World, tmp_path: Path) -> None:
    """A backend configured with the wrong secret key (fingerprint right) loads nothing: the
    copy names the CURVE key it is bound to (and its product key would not open either)."""
    b = Backend(world, 0, tmp_path / "x")
    b.install(world.issue(7))
    node = world.nodes[0]
    load = load_container(
        b.dir,
        keyring=world.keyring,
        fingerprint=node.fingerprint,
        node_secret=world.nodes[2].keys.secret,
        clock=b.clock,
        installed_tmr_ids={},
    )
    assert [e.reason for _, e in load.rejected] == [R.WRONG_BACKEND_KEY]


def test_duplicate_copy_keeps_one(world: World, backends: list[Backend]) -> None:
    b = backends[0]
    path = b.install(world.issue(7))
    shutil.copy(path, b.dir / "0-again.tmrlic")
    load = b.load()
    assert load.licenses[KEY].path == b.dir / "0-again.tmrlic"  # first in name order
    assert reasons(load) == {path.name: R.DUPLICATE}


def test_expiry_and_clock_rollback(world: World, backends: list[Backend]) -> None:
    b = backends[0]
    b.install(world.issue(7, product_code=1, expires=int(NOW) + 3600))
    b.install(world.issue(1, product_code=2))  # never expires
    assert set(b.load().licenses) == {(FIRM, 1), (FIRM, 2)}
    b.time = NOW + 3600
    load = b.load()
    assert set(load.licenses) == {(FIRM, 2)}
    assert list(reasons(load).values()) == [R.EXPIRED]
    b.time = NOW - 86_400  # clock set back a day: the expiring license must not come back
    load = b.load()
    assert set(load.licenses) == {(FIRM, 2)}
    assert list(reasons(load).values()) == [R.CLOCK_ROLLBACK]


def test_missing_directory(world: World, backends: list[Backend], tmp_path: Path) -> None:
    b = backends[0]
    with pytest.raises(ConfigError, match="does not exist"):
        load_container(
            tmp_path / "none",
            keyring=world.keyring,
            fingerprint=world.nodes[0].fingerprint,
            node_secret=world.nodes[0].keys.secret,
            clock=b.clock,
            installed_tmr_ids={},
        )
