"""Handle ids and the handle index (docs/design.md §4, §7.1)."""

from __future__ import annotations

import pytest

from tmr.replication import handles
from tmr.replication.handles import HandleIndex
from tmr.replication.types import Epoch


def test_a_handle_id_names_the_epoch_that_granted_it() -> None:
    h = handles.handle_id(Epoch(7, "tmr-a"), "ab" * 16)
    assert h == f"h7-tmr-a-{'ab' * 16}"
    assert handles.granted_after(h, Epoch(6, "tmr-b"))
    assert not handles.granted_after(h, Epoch(7, "tmr-a"))
    assert not handles.granted_after(h, Epoch(8, "tmr-a"))


@pytest.mark.parametrize("bad", ["", "x7-a-1", "h-a-1", "hx-a-1", "h7--1", "h7"])
def test_what_is_no_handle_id_is_never_from_a_newer_leader(bad: str) -> None:
    assert not handles.granted_after(bad, Epoch(0, ""))


def test_a_released_request_is_remembered_and_its_handle_forgotten_at_commit() -> None:
    idx = HandleIndex()
    req = ("key", "c1", "r1")
    idx.add("h1", (1, 2), req)
    assert (idx.by_request(req), idx.key_of("h1"), len(idx)) == ("h1", (1, 2), 1)
    idx.released(req)
    assert idx.by_request(req) is None and idx.was_released(req)
    assert idx.key_of("h1") == (1, 2)  # known until its release commits
    idx.forget("h1")
    assert idx.key_of("h1") is None and len(idx) == 0


def test_the_released_requests_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handles, "RECENT_RELEASED", 2)
    idx = HandleIndex()
    for i in range(3):
        idx.released(("k", "c", f"r{i}"))
    assert [idx.was_released(("k", "c", f"r{i}")) for i in range(3)] == [False, True, True]
