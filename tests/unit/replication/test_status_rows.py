"""The status view's kept rows (`status_rows`, issue 17): after every kind of change the
leader's `status` and `licenses_view` equal the same views built from scratch, rows that did
not change are not built again, and an idle leader's tick scans no product."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.replication.harness import Harness
from tmr.protocol.client_api import CheckoutResult
from tmr.replication import status_rows
from tmr.replication.leader import Leader
from tmr.replication.status_rows import RowCache, StatusRows
from tmr.replication.types import LicenseInfo, ProductKey, key_str

KEYS = [(6_000_001, i) for i in range(1, 6)]
V7 = LicenseInfo(7, 10, True)
V8 = LicenseInfo(8, 20, True)


def site() -> Harness:
    h = Harness(dict.fromkeys(KEYS, V7))
    h.promote()
    h.advance(1.0)
    return h


def afresh(leader: Leader) -> tuple[dict[str, Any], list[Any]]:
    """`status` and `licenses_view` with every kept row forgotten (built from scratch)."""
    leader._rows = StatusRows(len(leader.backends))
    return leader.status(), leader.licenses_view()


def views(leader: Leader) -> tuple[dict[str, Any], list[Any]]:
    return leader.status(), leader.licenses_view()


def changes(h: Harness) -> list[tuple[str, Callable[[], None]]]:
    """Each kind of change a row shows, applied in turn."""
    handles: list[str] = []

    def checkout() -> None:
        reply = h.call("checkout", "r1", "c1", KEYS[0][0], KEYS[0][1], 3)
        assert reply.ok and isinstance(reply.result, CheckoutResult)
        handles.append(reply.result.handle)

    def release() -> None:
        assert h.call("release", "r2", "c1", handles[0]).ok

    def backend_down() -> None:
        h.down.add("b2")
        h.advance(2.0)

    def backend_up() -> None:
        h.down.discard("b2")
        h.advance(2.0)

    def update_one_copy() -> None:  # b1 holds #8 (the others #7): its row and the status
        h.set_license("b1", V8, KEYS[1])
        h.advance(2.0)

    def update_the_trio() -> None:  # #8 takes effect: TMR ID, quantity and the floor rise
        for name in ("b2", "b3"):
            h.set_license(name, V8, KEYS[1])
        h.advance(3.0)

    def remove_a_copy() -> None:
        h.set_license("b3", None, KEYS[2])
        h.advance(2.0)

    def remove_a_license() -> None:
        for name in ("b1", "b2", "b3"):
            h.set_license(name, None, KEYS[4])
        h.advance(2.0)

    return [
        ("checkout", checkout),
        ("release", release),
        ("backend down", backend_down),
        ("backend up", backend_up),
        ("one copy updated", update_one_copy),
        ("the trio updated", update_the_trio),
        ("a copy removed", remove_a_copy),
        ("a license removed", remove_a_license),
    ]


def test_kept_rows_equal_rows_built_from_scratch_after_every_change() -> None:
    h = site()
    leader = h.leader
    seen = [views(leader)]
    for what, change in changes(h):
        change()
        kept = views(leader)
        assert kept == afresh(leader), what
        assert kept != seen[-1], f"{what}: the change shows in the view"
        seen.append(kept)
    entry = {e.product: e for e in leader.licenses_view()}
    assert (entry[1].in_use, entry[2].tmr_id, entry[2].quantity) == (0, 8, 20)
    assert 5 not in entry and len(leader._rows.license_rows) == 4


def test_the_comparison_catches_a_row_kept_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    """With rows that are never rebuilt (a cache that ignores its signatures) the views go
    stale and the test above would fail."""

    def stale(
        self: RowCache[Any], key: Any, signature: Any, build: Callable[..., Any], *args: Any
    ) -> Any:
        hit = self._rows.get(key)
        if hit is None:
            hit = self._rows[key] = (signature, build(*args))
        return hit[1]

    h = site()
    views(h.leader)
    monkeypatch.setattr(RowCache, "row", stale)
    stale_after = []
    for what, change in changes(h):
        change()
        kept = views(h.leader)
        fresh = afresh(h.leader)
        views(h.leader)  # the fresh rows are kept from here on
        if kept != fresh:
            stale_after.append(what)
    assert {"checkout", "backend down", "one copy updated", "the trio updated"} <= set(stale_after)


def test_rows_that_did_not_change_are_not_built_again(monkeypatch: pytest.MonkeyPatch) -> None:
    h = site()
    built: list[ProductKey] = []
    made = status_rows.license_row

    def counting(key: ProductKey, *args: Any) -> Any:
        built.append(key)
        return made(key, *args)

    monkeypatch.setattr(status_rows, "license_row", counting)
    first = h.leader.status()
    assert sorted(built) == KEYS
    built.clear()
    again = h.leader.status()
    assert built == []
    assert all(a is b for a, b in zip(first["licenses"], again["licenses"], strict=True))
    name = key_str(KEYS[3])
    assert first["backends"][0]["licenses"][name] is again["backends"][0]["licenses"][name]
    assert h.call("checkout", "r1", "c1", KEYS[3][0], KEYS[3][1], 1).ok
    h.leader.status()
    assert built == [KEYS[3]]  # in use changed: that license's row alone


def test_an_idle_leader_scans_no_product_in_its_tick() -> None:
    """`Leader._unsettled`: what `_abort_refused` and `_answer_overdue` walk 20 times a
    second in the server; empty while nothing is under way, the product while an op of it
    waits for its commit."""
    keys = [(6_000_001, i) for i in range(1, 201)]
    h = Harness(dict.fromkeys(keys, V7))
    h.promote()
    h.advance(1.0)
    leader = h.leader
    assert leader._unsettled() == []
    fx = leader.checkout("tok", "r1", "c1", keys[7][0], keys[7][1], 1, h.now, owner="k")
    assert [p.key for p in leader._unsettled()] == [keys[7]]
    h.run(fx)
    h.advance(1.0)
    assert [r.ok for r in h.replies[-1:]] == [True]
    assert leader._unsettled() == []
