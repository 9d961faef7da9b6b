"""`productlog.next_message` on a site with many products (issue 17): a product whose entries
a backend has all costs no floor check; one with new entries still gets it."""

from __future__ import annotations

import itertools

from tmr.replication import productlog
from tmr.replication.backends import Backend
from tmr.replication.productlog import Product
from tmr.replication.types import Epoch, LicenseInfo, ProductKey

EPOCH = Epoch(1, "sa")


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
    kw = {"epoch": EPOCH, "first_snapshot": False, "notify": lambda c: False}
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
