"""The effective-version rule against DESIGN.md section 4 and the reference slides."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmr.licensing import Effective, Holding, effective_version


def held(cell: str) -> Holding | None:
    """A table cell: "20/#7" (LQ 20, TMR ID 7) or "-" (backend down / being updated)."""
    if cell == "-":
        return None
    lq, tmr_id = cell.split("/#")
    return Holding(tmr_id=int(tmr_id), quantity=int(lq))


# "Installing an Update" (000_f7962cf163683535.txt), as copied into DESIGN.md section 4.
UPDATE_TABLE = [
    # stage          B1       B2       B3       TMR status          LQ seen by clients
    ("before", "20/#7", "20/#7", "20/#7", "1:#7 2:#7 3:#7", 20),
    ("updating B1", "-", "20/#7", "20/#7", "1:- 2:#7 3:#7", 20),
    ("after B1", "30/#8", "20/#7", "20/#7", "1:(#8) 2:#7 3:#7", 20),
    ("updating B2", "30/#8", "-", "20/#7", "1:(#8) 2:- 3:#7", 20),
    ("after B2", "30/#8", "30/#8", "20/#7", "1:#8 2:#8 3:(#7)", 30),
    ("updating B3", "30/#8", "30/#8", "-", "1:#8 2:#8 3:-", 30),
    ("after B3", "30/#8", "30/#8", "30/#8", "1:#8 2:#8 3:#8", 30),
]


@pytest.mark.parametrize("row", UPDATE_TABLE, ids=[row[0] for row in UPDATE_TABLE])
def test_update_table_row_for_row(row: tuple[str, str, str, str, str, int]) -> None:
    _, b1, b2, b3, status, lq = row
    eff = effective_version([held(b1), held(b2), held(b3)])
    assert eff.available
    assert eff.status == status
    assert eff.quantity == lq


# "Reliability of a TMR System": the backend columns and the client access column. The
# TMR server columns only decide which server is active, not what the rule returns.
A, F = "Available", "Failure"
RELIABILITY_TABLE = [
    ("Normal operation", A, A, A, "ok"),
    ("Normal operation (B active)", A, A, A, "ok"),
    ("Maintenance/Failure TMR server (1)", A, A, A, "ok"),
    ("Maintenance/Failure TMR server (2)", A, A, A, "ok"),
    ("Maintenance/Failure Backend (1)", F, A, A, "ok"),
    ("Maintenance/Failure Backend (2)", A, F, A, "ok"),
    ("Maintenance/Failure Backend (3)", A, A, F, "ok"),
    ("Failure (1)", A, F, A, "ok"),
    ("Failure (2)", A, F, F, "Error"),
]


@pytest.mark.parametrize(("scenario", "b1", "b2", "b3", "access"), RELIABILITY_TABLE)
def test_reliability_table_backend_columns(
    scenario: str, b1: str, b2: str, b3: str, access: str
) -> None:
    holdings = [Holding(7, 20) if b == A else None for b in (b1, b2, b3)]
    eff = effective_version(holdings)
    assert eff.available == (access == "ok")
    if eff.available:
        assert (eff.tmr_id, eff.quantity) == (7, 20)
    else:
        assert (eff.tmr_id, eff.quantity) == (None, 0)


def test_single_backend_is_never_enough() -> None:
    """A license with a TMR ID is never served by one backend: not even the newest copy."""
    assert effective_version([Holding(9, 100), None, None]) == Effective(
        available=False, tmr_id=None, quantity=0, status="1:(#9) 2:- 3:-"
    )
    assert effective_version([None, None, None]).status == "1:- 2:- 3:-"


def test_three_different_versions() -> None:
    eff = effective_version([Holding(9, 40), Holding(8, 30), Holding(7, 20)])
    assert (eff.tmr_id, eff.quantity, eff.status) == (8, 30, "1:(#9) 2:#8 3:(#7)")


def test_inconsistent_lq_at_the_same_id_takes_the_smaller() -> None:
    eff = effective_version([Holding(8, 30), Holding(8, 25), None])
    assert (eff.tmr_id, eff.quantity) == (8, 25)


holdings = st.lists(
    st.none() | st.builds(Holding, st.integers(1, 20), st.integers(1, 100)), min_size=3, max_size=3
)


@given(holdings)
def test_rule_properties(hs: list[Holding | None]) -> None:
    eff = effective_version(hs)
    up = [h for h in hs if h is not None]
    assert eff.available == (len(up) >= 2)
    if eff.available:
        assert eff.tmr_id is not None
        # at least two up backends have reached the effective ID, and no higher ID has two
        assert sum(h.tmr_id >= eff.tmr_id for h in up) >= 2
        assert sum(h.tmr_id > eff.tmr_id for h in up) <= 1
        # the effective LQ is the LQ of a copy at that ID: it never comes from thin air
        assert eff.quantity in {h.quantity for h in up if h.tmr_id == eff.tmr_id}
    assert len(eff.status.split()) == 3
