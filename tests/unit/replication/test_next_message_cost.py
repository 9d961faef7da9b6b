"""`productlog.next_message` on a site with many products (issue 17): a product whose entries
a backend has all costs no floor check; one with new entries still gets it."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypedDict

import pytest

from tmr.replication import productlog
from tmr.replication.backends import Backend
from tmr.replication.messages import Accept
from tmr.replication.productlog import Product
from tmr.replication.types import Epoch, LicenseInfo, ProductKey

EPOCH = Epoch(1, "sa")


class _WithNotify(TypedDict):
    """The `next_message` keywords a test fixes, with `notify`."""

    epoch: Epoch
    first_snapshot: bool
    notify: Callable[[list[tuple[ProductKey, int]]], bool]


class _WithBelowFloor(TypedDict):
    """The `next_message` keywords a test fixes, with `below_floor`."""

    epoch: Epoch
    first_snapshot: bool
    below_floor: Callable[[Backend, ProductKey], str]


def _site(products: int) -> tuple[dict[ProductKey, Product], Backend]:
    keys = [(6_000_001, i) for i in range(products)]
    b = Backend("b1", 0, up=True)
    lic = LicenseInfo(7, 100, True)
    b.licenses = dict.fromkeys(keys, lic)
    ps = {k: Product(k, seq=3, committed=3, log={}) for k in keys}
    for k in keys:
        b.acked[k] = b.told[k] = 3  # it has every entry and knows every commit
    return ps, b


def test_products_a_backend_is_up_to_date_with_cost_no_floor_check() -> None:
    ps, b = _site(1000)
    checked: list[ProductKey] = []

    def below_floor(_: Backend, key: ProductKey) -> str:
        checked.append(key)
        return ""

    mids = itertools.count(1)
    kw: _WithNotify = {"epoch": EPOCH, "first_snapshot": False, "notify": lambda c: False}
    out = productlog.next_message(
        ps, b, 0.0, below_floor=below_floor, new_mid=lambda: next(mids), **kw
    )
    assert out is None and checked == []
    busy = (6_000_001, 7)
    ps[busy].log[4] = ()
    ps[busy].seq = 4
    out = productlog.next_message(
        ps, b, 0.0, below_floor=below_floor, new_mid=lambda: next(mids), **kw
    )
    assert checked == [busy]
    assert out is not None and out[1] == "accept" and out[2] == {busy: 4}


def test_many_untold_commits_go_in_one_notice_so_their_products_settle() -> None:
    """After a takeover no backend was told the commits of the adopted tables: with no
    update under way they would wait for an ACCEPT of their product, and every pump would
    check each of them again (`notify_commits`, `productlog.settled`). Many of them are told
    in one commit notice; a few still ride on the next ACCEPT."""
    ps, b = _site(1000)
    b.told.clear()
    mids = itertools.count(1)
    asked: list[int] = []

    def notify(commits: list[tuple[ProductKey, int]]) -> bool:
        asked.append(len(commits))
        return False

    kw: _WithBelowFloor = {"epoch": EPOCH, "first_snapshot": False, "below_floor": lambda b, k: ""}
    out = productlog.next_message(ps, b, 0.0, notify=notify, new_mid=lambda: next(mids), **kw)
    assert out is not None and asked == []
    msg, kind, _ = out
    assert kind == "accept" and isinstance(msg, Accept)
    assert msg.entries == () and len(msg.commits) == 1000
    few = dict(itertools.islice(ps.items(), productlog.NOTICE_BATCH - 1))
    out = productlog.next_message(few, b, 0.0, notify=notify, new_mid=lambda: next(mids), **kw)
    assert out is None and asked == [productlog.NOTICE_BATCH - 1]


def test_an_idle_leader_with_many_products_pumps_none_of_them() -> None:
    from tests.unit.replication.harness import Harness

    keys = [(6_000_001, i) for i in range(200)]
    h = Harness(dict.fromkeys(keys, LicenseInfo(7, 100, True)))
    h.promote()
    h.advance(1.0)
    assert h.leader._dirty == set()
    assert all(b.told == dict.fromkeys(keys, 0) for b in h.leader.backends)


def test_a_product_with_only_an_untold_commit_costs_an_idle_pump_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a checkout commits, no backend is told that commit until the product's next
    ACCEPT carries it: the product is kept apart (`Leader._untold`), and a pump with nothing
    else to send looks at no product; a new op brings it back, and its ACCEPT tells the
    commit."""
    from tests.unit.replication.harness import Harness

    key = (6_000_001, 1)
    h = Harness({key: LicenseInfo(7, 100, True)})
    h.promote()
    assert h.call("checkout", "r1", "c1", key[0], key[1], 1).ok
    leader = h.leader
    assert leader._dirty == set() and leader._untold == {key}
    assert all(b.told[key] < leader._products[key].committed for b in leader.backends)
    visited: list[int] = []
    real = productlog.next_message

    def counting(products: dict[ProductKey, Product], *a: Any, **kw: Any) -> Any:
        visited.append(len(products))
        return real(products, *a, **kw)

    monkeypatch.setattr(productlog, "next_message", counting)
    for _ in range(5):
        assert leader.pump(h.now).send == []
    assert visited == []
    assert h.call("checkout", "r2", "c2", key[0], key[1], 1).ok
    assert visited  # the new entry is sent, and carries the commit of the first
    assert all(b.told[key] >= 1 for b in leader.backends)
