"""Rows of the leader's status view, kept with what they were built from.

`Leader.status` runs for every WebAdmin snapshot (every 2 s, every `web_publish_interval`
while someone looks), every `status` control command and, through `Leader.licenses_view`,
every client's `list`. Its rows are per product: a license entry each, and per backend the
copy it holds. At 1,000 products building them all each time took about 23 ms of the loop
(docs/performance.md). A `RowCache` keeps each row with its *signature*, a tuple of
everything the row is computed from, and builds it again only when the signature differs.
Nothing has to remember to invalidate anything: a row is rebuilt exactly when one of its
inputs compares unequal, so the view cannot go stale (a unit test checks it against rows
built from scratch after each kind of change). What remains per product and snapshot is
computing the inputs, which the leader keeps at hand (`Leader._effective`, the floors).
`StatusRows` holds the leader's caches and builds the view's per-product parts with them.

The rows are shared between snapshots: their readers (the web thread, JSON and msgpack
encoders) only read them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from tmr.licensing.effective import Effective
from tmr.protocol.results import LicenseEntry
from tmr.replication import admission, floors
from tmr.replication.backends import Backend
from tmr.replication.productlog import Product
from tmr.replication.types import Floor, LicenseInfo, ProductKey, key_str

T = TypeVar("T")


class RowCache(Generic[T]):
    """Rows by key, each rebuilt when its signature changes (`row`)."""

    def __init__(self) -> None:
        self._rows: dict[Hashable, tuple[tuple[object, ...], T]] = {}

    def row(
        self, key: Hashable, signature: tuple[object, ...], build: Callable[..., T], *args: Any
    ) -> T:
        """The row for `key`: the kept one if it was built from an equal signature (tuples
        compare their items by identity first, so unchanged inputs cost little), else a new
        one, ``build(*args)``."""
        hit = self._rows.get(key)
        if hit is not None and hit[0] == signature:
            return hit[1]
        made = build(*args)
        self._rows[key] = (signature, made)
        return made

    def retain(self, keys: Collection[Hashable]) -> None:
        """Forget the rows of keys no longer shown (a license taken out of every backend)."""
        if len(self._rows) > len(keys):
            self._rows = {k: v for k, v in self._rows.items() if k in keys}

    def __len__(self) -> int:
        return len(self._rows)


class Inputs:
    """One view's floors and effective licenses, each computed once per product (a backend's
    copy row and the license's entry read the same ones)."""

    def __init__(
        self,
        floor: Callable[[ProductKey], Floor],
        effective: Callable[[ProductKey], Effective],
    ) -> None:
        self._floor_of, self._effective_of = floor, effective
        self._floors: dict[ProductKey, Floor] = {}
        self._effs: dict[ProductKey, Effective] = {}

    def floor(self, key: ProductKey) -> Floor:
        f = self._floors.get(key)
        if f is None:
            f = self._floors[key] = self._floor_of(key)
        return f

    def effective(self, key: ProductKey) -> Effective:
        e = self._effs.get(key)
        if e is None:
            e = self._effs[key] = self._effective_of(key)
        return e

    def problem(self, index: int, key: ProductKey) -> str | None:
        """Why backend `index`'s copy of `key` does not count (None: it counts, or is not
        valid or not reachable)."""
        problems = self.effective(key).problems
        problem = problems[index] if index < len(problems) else None
        return problem.value if problem else None


def license_row(
    key: ProductKey, eff: Effective, in_use: int, floor: Floor, lic: LicenseInfo | None
) -> tuple[LicenseEntry, dict[str, Any]]:
    """A license's entry of `Leader.licenses_view` and its wire form (`status`)."""
    entry = admission.license_row(
        key, eff, in_use, {"tmr_id": floor.tmr_id, "time": floor.time}, lic
    )
    return entry, entry.to_wire()


def copy_row(lic: LicenseInfo, problem: str | None) -> dict[str, Any]:
    """A backend's copy of a license in `status`, with why it does not count (None: it does,
    or it is not valid or not reachable)."""
    return {
        "tmr_id": lic.tmr_id,
        "quantity": lic.quantity,
        "valid": lic.valid,
        "reason": lic.reason,
        "set_index": lic.set_index,
        "problem": problem,
    }


class StatusRows:
    """The kept rows of the leader's status view: per license, and per backend per copy;
    and each product's name as the view writes it."""

    def __init__(self, backends: int) -> None:
        self.license_rows: RowCache[tuple[LicenseEntry, dict[str, Any]]] = RowCache()
        self.copy_rows: list[RowCache[dict[str, Any]]] = [RowCache() for _ in range(backends)]
        self._names: dict[ProductKey, str] = {}

    def licenses(
        self,
        backends: Sequence[Backend],
        products: Mapping[ProductKey, Product],
        inputs: Inputs,
    ) -> list[tuple[LicenseEntry, dict[str, Any]]]:
        """Each license's entry and its wire form, rebuilt only when what it shows changed.
        `products`: the held handles that count as in use (none unless the leader is
        active)."""
        keys: set[ProductKey] = set()
        for b in backends:
            keys.update(b.licenses)
        rows = self.license_rows
        out = []
        for key in sorted(keys):
            eff = inputs.effective(key)
            p = products.get(key)
            in_use = p.seats() if p else 0
            lic = admission.best_license(backends, key, eff)
            f = inputs.floor(key)
            sig = (eff, in_use, f, lic)
            out.append(rows.row(key, sig, license_row, key, *sig))
        rows.retain(keys)
        return out

    def backend(self, i: int, b: Backend, inputs: Inputs) -> dict[str, Any]:
        """Backend `b`'s part of `Leader.status`: its copies (a kept row each), how far it
        acknowledged each product's log, and the copies it or the leader refuses."""
        rows = self.copy_rows[i]
        names = self._names
        copies = {}
        for k, v in sorted(b.licenses.items()):
            name = names.get(k) or names.setdefault(k, key_str(k))
            problem = inputs.problem(i, k)
            copies[name] = rows.row(k, (v, problem), copy_row, v, problem)
        rows.retain(b.licenses)
        return {
            "name": b.name,
            "up": b.up,
            "promised": str(b.promised),
            "caught_up": b.caught_up,
            "licenses": copies,
            "synced": {key_str(k): s for k, s in sorted(b.acked.items())},
            "refused": {key_str(k): r for k, r in sorted(floors.refusals(b, inputs.floor).items())},
        }
