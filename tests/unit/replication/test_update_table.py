"""The update table of docs/design.md §3, driven through the real leader and acceptors."""

from __future__ import annotations

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
from tmr.replication.leader import Role
from tmr.replication.types import LicenseInfo

KEY = (6000123, 42)
V7 = LicenseInfo(tmr_id=7, quantity=20, valid=True)
V8 = LicenseInfo(tmr_id=8, quantity=30, valid=True)


def view(h: Harness) -> tuple[str, int]:
    (entry,) = h.leader.licenses_view()
    return entry.status, entry.quantity


def checkout(h: Harness, n: int, seats: int = 1) -> ErrorCode | None:
    return h.call("checkout", f"r{n}", "client", KEY[0], KEY[1], seats).error


def test_update_table_row_by_row() -> None:
    h = Harness({KEY: V7})
    h.promote()
    assert h.leader.role == Role.ACTIVE
    # 18 seats in use through the whole update: they must never be lost.
    assert checkout(h, 0, seats=18) is None
    rows = [
        ("before", None, None, "1:#7 2:#7 3:#7", 20),
        ("updating B1", "b1", "down", "1:- 2:#7 3:#7", 20),
        ("after B1", "b1", V8, "1:(#8) 2:#7 3:#7", 20),
        ("updating B2", "b2", "down", "1:(#8) 2:- 3:#7", 20),
        ("after B2", "b2", V8, "1:#8 2:#8 3:(#7)", 30),
        ("updating B3", "b3", "down", "1:#8 2:#8 3:-", 30),
        ("after B3", "b3", V8, "1:#8 2:#8 3:#8", 30),
    ]
    for i, (stage, backend, change, status, lq) in enumerate(rows):
        if change == "down":
            assert backend is not None
            h.down.add(backend)
        elif change is not None:
            assert backend is not None and isinstance(change, LicenseInfo)
            h.down.discard(backend)
            h.set_license(backend, change, KEY)
        h.advance(2.0)
        assert view(h) == (status, lq), stage
        # The seats clients can get are exactly LQ minus the 18 held.
        assert checkout(h, 100 + i, seats=lq - 18) is None, stage
        assert checkout(h, 200 + i) == ErrorCode.NO_LICENSE_AVAILABLE, stage
        extra = [x for x in h.leader.handles_view(h.now) if x["client_id"] == "client"]
        assert sum(x["seats"] for x in extra) == lq, stage
        # Give the extra seats back for the next row.
        for x in extra:
            if x["seats"] != 18:
                assert h.call("release", f"rel{i}-{x['handle']}", "client", x["handle"]).ok


def test_lq_shrink_keeps_held_seats_and_refuses_new_ones() -> None:
    h = Harness({KEY: LicenseInfo(7, 30, True)})
    h.promote()
    assert checkout(h, 1, seats=25) is None
    for b in ("b1", "b2", "b3"):
        h.set_license(b, LicenseInfo(8, 20, True), KEY)
    h.advance(2.0)
    assert view(h) == ("1:#8 2:#8 3:#8", 20)
    (held,) = h.leader.handles_view(h.now)
    assert held["seats"] == 25  # no seat is revoked
    assert checkout(h, 2) == ErrorCode.NO_LICENSE_AVAILABLE
    assert h.call("release", "rel", "client", held["handle"]).ok
    assert checkout(h, 3, seats=20) is None


def test_backend_refuses_grant_above_its_own_lq() -> None:
    """Backends check too: a copy with a lower LQ refuses what the leader would grant."""
    h = Harness({KEY: LicenseInfo(7, 20, True)})
    h.set_license("b3", LicenseInfo(6, 5, True), KEY)  # an older copy with a lower LQ
    h.promote()
    assert checkout(h, 1, seats=10) is None  # b1 and b2 accept, b3 refuses
    status = h.leader.status()
    b3 = next(b for b in status["backends"] if b["name"] == "b3")
    assert "above this copy's LQ" in b3["refused"]["6000123:42"]
    assert h.acceptors["b3"].state.products.get(KEY) is None or (
        h.acceptors["b3"].state.products[KEY].seats() <= 5
    )
    # With b1 down, only b2 and the refusing b3 remain: the grant cannot be committed twice.
    h.down.add("b1")
    h.advance(2.0)
    assert checkout(h, 2) is not None
