"""The decisions of a takeover: when to prepare, with which epoch, and what to adopt.

See docs/design.md §5 (Takeover). The leader moves through the phases in `roles`; these
functions decide, from what the backends answered, when a phase is done: PREPARE once every
backend (or, after `backend_timeout`, a majority) answered a probe sent since the promote,
with the epoch above every counter seen; ADOPT with two promises from caught-up backends (or
at bootstrap), taking per product the state of the highest version and the highest floors
(`adopt`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from tmr.licensing.effective import QUORUM
from tmr.replication.backends import Backend
from tmr.replication.messages import Promise
from tmr.replication.productlog import Product
from tmr.replication.types import (
    NO_FLOOR,
    ZERO_VERSION,
    Floor,
    HandleRecord,
    ProductKey,
    Version,
    key_str,
)

AdoptedLog = tuple[Version, tuple[HandleRecord, ...]]


def prepare_to(
    backends: Sequence[Backend], started: float, now: float, wait: float
) -> list[Backend] | None:
    """The backends to send PREPARE to, once the probe phase is done (None: not yet): those
    that answered a probe sent since the promote (their state is current), all of them, or
    a majority after `wait`."""
    replied = [b for b in backends if b.up and b.status_sent_at >= started]
    if len(replied) == len(backends) or (len(replied) >= QUORUM and now - started >= wait):
        return replied
    return None


def next_counter(last_counter: int, backends: Sequence[Backend]) -> int:
    """The epoch counter of a new term: above ours and every promise seen."""
    return max([last_counter] + [b.promised.counter for b in backends]) + 1


def to_adopt(backends: Sequence[Backend]) -> tuple[list[Promise], bool] | None:
    """The promises to adopt and whether this is a bootstrap (None: not enough yet)."""
    promises = [x.promise for x in backends if x.promise is not None]
    counted = [p for p in promises if p.caught_up]
    # Bootstrap: every backend promised and at most one was ever seeded. Nothing can have
    # been committed without two seeded backends, so the seeded one (if any) has it all.
    bootstrap = len(promises) == len(backends) and len(counted) < QUORUM
    if len(counted) < QUORUM and not bootstrap:
        return None
    return counted, bootstrap


def adopted_versions(promises: Sequence[Promise]) -> dict[ProductKey, Version]:
    """Per product, the highest version among the promises."""
    best: dict[ProductKey, Version] = {}
    for pr in promises:
        for key, (version, _) in pr.logs.items():
            if key not in best or version > best[key]:
                best[key] = version
    return best


def lacking_tables(promises: Sequence[Promise], away: Collection[str] = ()) -> set[str]:
    """The backends to ask for their tables (`Prepare.tables`) before adopting: for each
    product whose highest version no promise with tables holds, one backend that holds it,
    one not `away` (down, or it did not answer the ask) where there is one (empty:
    `adopted_logs` has every table)."""
    versions = adopted_versions(promises)
    have = {k for pr in promises if pr.tables for k, (v, _) in pr.logs.items() if v == versions[k]}
    ask: set[str] = set()
    for key, version in versions.items():
        if key not in have:
            names = {pr.name for pr in promises if key in pr.logs and pr.logs[key][0] == version}
            ask.add(min(names - set(away) or names))
    return ask


def adopted_logs(promises: Sequence[Promise]) -> dict[ProductKey, AdoptedLog]:
    """Per product, the state of the highest version among the promises (its table from a
    promise that carries tables; `lacking_tables` is empty). Two promises of one version
    hold the same table: an epoch writes one entry (or snapshot) per seq."""
    versions = adopted_versions(promises)
    best: dict[ProductKey, AdoptedLog] = {}
    for pr in promises:
        if pr.tables:
            for key, (version, handles) in pr.logs.items():
                if version == versions[key]:
                    best[key] = (version, handles)
    if len(best) != len(versions):
        raise ValueError("a table of the highest version is missing (lacking_tables)")
    return best


def holders(promises: Sequence[Promise], key: ProductKey, version: Version) -> set[str]:
    """The backends whose promise holds the adopted table of ``key`` itself (at ``version``)
    and takes it by reference (`SnapshotEntry.base`): caught up, and not the empty table."""
    if version == ZERO_VERSION:
        return set()
    return {
        pr.name
        for pr in promises
        if pr.refs and pr.caught_up and key in pr.logs and pr.logs[key][0] == version
    }


def adopted_floor(floor: Floor, promises: Sequence[Promise], key: ProductKey) -> Floor:
    """Floors only rise: `floor` raised to the highest any promise holds."""
    for pr in promises:
        floor = floor.merge(pr.floors.get(key, NO_FLOOR))
    return floor


def adopted_committed(
    promises: Sequence[Promise], best: dict[ProductKey, AdoptedLog], key: ProductKey
) -> bool:
    """A backend was told this version committed: the table is committed state (the
    highest version among a quorum's promises is at least any committed one)."""
    return key in best and any(pr.commits.get(key, ZERO_VERSION) >= best[key][0] for pr in promises)


def unanswered_grants(
    promises: Sequence[Promise], best: dict[ProductKey, AdoptedLog], key: ProductKey
) -> set[str]:
    """The grants of the adopted table no client was told of: marked (taken from an entry
    whose grants are answered only once two backends durably know it committed) with a
    version above every known commit among the promises. An answered grant is durably known
    committed by two backends, one of which is among any quorum of promises, so its version
    is at or below the highest known commit (docs/design.md §6)."""
    if key not in best:
        return set()
    known = max((pr.commits.get(key, ZERO_VERSION) for pr in promises), default=ZERO_VERSION)
    marks: dict[str, Version] = {}
    for pr in promises:
        for handle, version in pr.marked.get(key, ()):
            marks[handle] = min(version, marks.get(handle, version))
    table = {r.handle for r in best[key][1]}
    return {h for h, v in marks.items() if h in table and v > known}


def adopt(
    p: Product,
    promises: Sequence[Promise],
    best: dict[ProductKey, AdoptedLog],
    events: list[dict[str, Any]],
) -> list[HandleRecord]:
    """Adopt the state of `p`'s product from `promises` (`best`: `adopted_logs`): its floor,
    whether the table is committed state, and the table without the grants no client was
    told of (aborted, docs/design.md §6; a `grants_aborted` event). The table adopted."""
    key = p.key
    p.floor = p.floor_committed = adopted_floor(p.floor, promises, key)
    p.adopted_committed = adopted_committed(promises, best, key)
    unanswered = set()
    if not p.adopted_committed:
        unanswered = unanswered_grants(promises, best, key)
    if unanswered:
        events.append(
            {
                "event": "grants_aborted",
                "license": key_str(key),
                "handles": sorted(unanswered),
                "seq": 0,
                "refused_by": [],
                "takeover": True,
            }
        )
    if key in best and not unanswered:
        p.adopted_from = best[key][0]
        p.holders = holders(promises, key, p.adopted_from)
    table = [r for r in best.get(key, (None, ()))[1] if r.handle not in unanswered]
    p.adopt(table)
    return table
