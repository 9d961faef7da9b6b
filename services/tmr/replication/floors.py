"""The replicated floors (lowest TMR ID and trusted time a copy must meet) as the leader keeps them.

See docs/design.md §7.3. A product's floors rise with the effective TMR ID and the trusted
time (`raised`); a proposed floor is in force once its entry commits (`in_force`); a backend
whose copy is below them does not count (`below_floor`, `refusals`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tmr.licensing.effective import QUORUM
from tmr.replication.backends import Backend
from tmr.replication.productlog import Product
from tmr.replication.types import NO_FLOOR, CopyReason, Floor, ProductKey, floor_refusal

# Replicated floors (`Floor`): checked this often; the time floor is raised only once the
# trusted time is this far past it (at most one time Floor op per product and minute).
FLOOR_SCAN = 1.0
TIME_FLOOR_STEP = 60.0


def in_force(p: Product) -> bool:
    """A proposed floor is in force once its entry commits (until then a backend below it
    still gets the entry that carries it). True if the floors in force changed."""
    if p.floor_seq <= p.committed and p.floor_committed != p.floor:
        p.floor_committed = p.floor
        return True
    return False


def floor_of(p: Product | None, key: ProductKey, backends: Sequence[Backend]) -> Floor:
    """The product's replicated floors: this term's (adopted, then raised) and any an up
    backend holds durably (a standby knows them from the backends' status)."""
    floor = p.floor_committed if p is not None else NO_FLOOR
    for b in backends:
        if b.up:
            floor = floor.merge(b.floors.get(key, NO_FLOOR))
    return floor


def below_floor(b: Backend, key: ProductKey, floor: Callable[[ProductKey], Floor]) -> CopyReason:
    """Why backend ``b``'s valid copy of ``key`` does not count under the floors (NONE: it
    does, or it is not valid anyway)."""
    lic = b.licenses.get(key)
    if lic is None or not lic.valid:
        return CopyReason.NONE
    return floor_refusal(lic, floor(key))


def refusals(b: Backend, floor: Callable[[ProductKey], Floor]) -> dict[ProductKey, str]:
    """Its own refusals, and the products for which the leader refuses its copy."""
    out = dict(b.refusal)
    for key, lic in b.licenses.items():
        why = below_floor(b, key, floor)
        if why:
            f = floor(key)
            out[key] = (
                f"{why}: holds #{lic.tmr_id}, the trio's floor is #{f.tmr_id}"
                if lic.tmr_id < f.tmr_id
                else f"{why}: expires {lic.expires}, trusted time {f.time:.0f}"
            )
    return out


def trusted_time(backends: Sequence[Backend]) -> float | None:
    """A wall time at least two up backends' clock guards reached (the second highest):
    one backend's clock running ahead cannot raise it, one set back cannot lower it."""
    times = sorted((b.clock for b in backends if b.up and b.clock), reverse=True)
    return times[QUORUM - 1] if len(times) >= QUORUM else None


def raised(p: Product, tmr_id: int | None, trusted: float | None) -> Floor:
    """`p`'s floors raised to the effective TMR ID (None: not available) and, in steps of
    `TIME_FLOOR_STEP`, to the trusted time."""
    new = p.floor
    if tmr_id is not None and tmr_id > new.tmr_id:
        new = new.merge(Floor(tmr_id, 0.0))
    if trusted is not None and trusted >= new.time + TIME_FLOOR_STEP:
        new = new.merge(Floor(0, trusted))
    return new
