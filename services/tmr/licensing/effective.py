"""The effective-version rule (DESIGN.md section 4), as a pure function.

For one (firm code, product code): a license is available iff at least two up backends hold
a valid copy; its effective TMR ID is the second-highest TMR ID among them (the highest ID
two backends have reached) and its effective LQ that copy's LQ. Status strings show each
backend as ``#ID``, ``(#ID)`` when the copy is not at the effective ID, ``-`` when the
backend is down or holds no copy: ``1:#8 2:#8 3:(#7)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Holding:
    tmr_id: int
    quantity: int


@dataclass(frozen=True)
class Effective:
    available: bool
    tmr_id: int | None
    quantity: int
    status: str


QUORUM = 2


def effective_version(holdings: Sequence[Holding | None]) -> Effective:
    """``holdings[i]`` is what backend i+1 holds, or None if it is down or holds no copy."""
    held = [h for h in holdings if h is not None]
    ids = sorted((h.tmr_id for h in held), reverse=True)
    available = len(ids) >= QUORUM
    tmr_id = ids[QUORUM - 1] if available else None
    # Copies with the same TMR ID carry the same LQ; should they not, take the smaller.
    quantity = min((h.quantity for h in held if h.tmr_id == tmr_id), default=0)
    parts = []
    for i, h in enumerate(holdings, start=1):
        if h is None:
            parts.append(f"{i}:-")
        elif h.tmr_id == tmr_id:
            parts.append(f"{i}:#{h.tmr_id}")
        else:
            parts.append(f"{i}:(#{h.tmr_id})")
    return Effective(available=available, tmr_id=tmr_id, quantity=quantity, status=" ".join(parts))
