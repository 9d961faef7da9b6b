"""The effective-version rule against docs/design.md §3 and the reference slides."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmr.licensing import CopyProblem, Effective, Holding, distinct_copies, effective_version


def held(cell: str) -> Holding | None:
    """A table cell: "20/#7" (LQ 20, TMR ID 7) or "-" (backend down / being updated)."""
    if cell == "-":
        return None
    lq, tmr_id = cell.split("/#")
    return Holding(tmr_id=int(tmr_id), quantity=int(lq))


# "Installing an Update" (000_f7962cf163683535.txt), as copied into docs/design.md §3.
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


# ---------------------------------------------------------------- distinct copies of one set

KEYS = [f"{i:02x}" * 32 for i in (1, 2, 3)]  # the backends' CURVE public keys (hex)
SET8 = "88" * 16


def copy_of(index: int, tmr_id: int = 8, quantity: int = 30, set_id: str = SET8) -> Holding:
    """Copy ``index`` (1..3) of a set, bound to backend ``index``'s key."""
    return Holding(tmr_id, quantity, set_id, index, f"{0xF0 + index:02x}" * 32, KEYS[index - 1])


def test_distinct_copies_of_one_set_count() -> None:
    eff = effective_version([copy_of(1), copy_of(2), copy_of(3)], KEYS)
    assert (eff.available, eff.tmr_id, eff.quantity) == (True, 8, 30)
    assert eff.status == "1:#8 2:#8 3:#8"
    assert eff.problems == (None, None, None) and eff.reason is None


def test_one_copy_cloned_onto_three_backends_is_one_copy() -> None:
    """Backend 1's node key, machine-id and copy on three hosts, and a server configured
    with that key three times: one copy, no quorum, reason CLONED_COPY."""
    clone = copy_of(1)
    eff = effective_version([clone, clone, clone], [KEYS[0]] * 3)
    assert (eff.available, eff.tmr_id, eff.quantity) == (False, None, 0)
    assert eff.status == "1:(#8) 2:!#8 3:!#8"
    assert eff.problems == (None, CopyProblem.CLONED_COPY, CopyProblem.CLONED_COPY)
    assert eff.reason == CopyProblem.CLONED_COPY


@pytest.mark.parametrize(
    "twin",
    [
        pytest.param(replace(copy_of(2), backend_key=KEYS[0]), id="same key"),
        pytest.param(replace(copy_of(2), fingerprint=copy_of(1).fingerprint), id="same fp"),
        pytest.param(replace(copy_of(2), set_index=1), id="same index"),
        pytest.param(copy_of(1, tmr_id=7, quantity=20, set_id="77" * 16), id="older copy"),
    ],
)
def test_the_same_copy_index_fingerprint_or_key_counts_once(twin: Holding) -> None:
    """Whatever the second backend's copy shares with the first (its place in the set, its
    fingerprint or its key; an older copy of the same backend), it does not count."""
    eff = effective_version([copy_of(1), twin, None], [KEYS[0], KEYS[0], KEYS[2]])
    assert not eff.available
    assert eff.problems[1] in (CopyProblem.CLONED_COPY, CopyProblem.WRONG_BACKEND_KEY)
    eff = effective_version([copy_of(1), twin, copy_of(3)], [KEYS[0], twin.backend_key, KEYS[2]])
    assert eff.problems == (None, CopyProblem.CLONED_COPY, None)
    assert (eff.available, eff.tmr_id) == (True, 8)


def test_copy_reported_by_another_key_is_not_counted() -> None:
    """Copy 2 (bound to key 2) reported by the backend authenticated as key 3 does not count;
    neither does a copy that names no set (an older backend)."""
    eff = effective_version([copy_of(1), copy_of(2), None], [KEYS[0], KEYS[2], KEYS[1]])
    assert not eff.available and eff.status == "1:(#8) 2:!#8 3:-"
    assert eff.problems == (None, CopyProblem.WRONG_BACKEND_KEY, None)
    eff = effective_version([copy_of(1), Holding(8, 30), None], KEYS)
    assert not eff.available and eff.reason == CopyProblem.UNBOUND_COPY


def test_a_rollout_counts_copies_of_two_sets() -> None:
    """During an update the backends hold copies of two sets: all distinct, all count."""
    old = "77" * 16
    hs = [copy_of(1), copy_of(2, tmr_id=7, quantity=20, set_id=old), copy_of(3, 7, 20, old)]
    eff = effective_version(hs, KEYS)
    assert (eff.available, eff.tmr_id, eff.quantity, eff.reason) == (True, 7, 20, None)
    assert eff.status == "1:(#8) 2:#7 3:#7"


def test_keys_must_match_the_backends() -> None:
    with pytest.raises(ValueError, match="one backend key per holding"):
        distinct_copies([copy_of(1), None, None], KEYS[:2])


bound = st.builds(
    Holding,
    st.integers(7, 9),
    st.integers(1, 50),
    st.sampled_from(["77" * 16, "88" * 16]),
    st.integers(1, 3),
    st.sampled_from(["f1" * 32, "f2" * 32, "f3" * 32]),
    st.sampled_from(KEYS),
)


@given(st.lists(st.none() | bound, min_size=3, max_size=3), st.permutations(KEYS))
def test_counted_copies_are_distinct_and_bound_to_their_backend(
    hs: list[Holding | None], keys: list[str]
) -> None:
    counted, problems = distinct_copies(hs, keys)
    got = [(h, k) for h, k in zip(counted, keys, strict=True) if h is not None]
    assert all(h.backend_key == k for h, k in got)
    for attr in ("fingerprint", "backend_key"):
        assert len({getattr(h, attr) for h, _ in got}) == len(got)
    assert len({(h.set_id, h.set_index) for h, _ in got}) == len(got)
    for h, c, p in zip(hs, counted, problems, strict=True):
        assert (c is None) == (h is None or p is not None)
    eff = effective_version(hs, keys)
    assert eff.available == (len(got) >= 2)
