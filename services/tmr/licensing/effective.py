"""The effective-version rule (docs/design.md §3), as a pure function.

For one (firm code, product code): a license is available iff at least two up backends hold
a valid copy; its effective TMR ID is the second-highest TMR ID among them (the highest ID
two backends have reached) and its effective LQ that copy's LQ. Status strings show each
backend as ``#ID``, ``(#ID)`` when the copy is not at the effective ID, ``-`` when the
backend is down or holds no copy: ``1:#8 2:#8 3:(#7)``.

Distinct copies: given the backends' CURVE keys, a copy counts only if it names its set
(``set_id``, ``set_index``) and is bound to the key of the backend that reports it, and each
(set, index), fingerprint and bound key counts once (the first backend in order keeps it). A
copy that does not count shows as ``!#ID`` with its `CopyProblem`: one backend's node key,
machine-id and copy cloned onto three hosts is one copy, not a quorum.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Sequence
from dataclasses import dataclass


class CopyProblem(enum.StrEnum):
    """Why a valid copy reported by an up backend is not counted toward the 2 of 3."""

    CLONED_COPY = "CLONED_COPY"  # its (set, index), fingerprint or key is counted already
    WRONG_BACKEND_KEY = "WRONG_BACKEND_KEY"  # bound to another key than the reporting backend's
    UNBOUND_COPY = "UNBOUND_COPY"  # names no set / index / key (an older backend or copy)


@dataclass(frozen=True)
class Holding:
    tmr_id: int
    quantity: int
    set_id: str = ""
    set_index: int = 0
    fingerprint: str = ""
    backend_key: str = ""  # hex of the CURVE public key the copy is bound to


@dataclass(frozen=True)
class Effective:
    available: bool
    tmr_id: int | None
    quantity: int
    status: str
    problems: tuple[CopyProblem | None, ...] = ()  # per backend; () when not checked

    @property
    def reason(self) -> CopyProblem | None:
        """The first problem of a copy that did not count (None: every copy counted)."""
        return next((p for p in self.problems if p is not None), None)


QUORUM = 2  # copies of a 3-copy set that make a license usable: the one definition


def distinct_copies(
    holdings: Sequence[Holding | None], backend_keys: Sequence[str]
) -> tuple[list[Holding | None], list[CopyProblem | None]]:
    """The holdings that count (others None) and, per backend, why its copy does not.

    ``backend_keys[i]`` is the hex CURVE public key backend i+1 authenticated with ("": not
    known, the key check is skipped for it; the other checks still apply)."""
    if len(backend_keys) != len(holdings):
        raise ValueError("one backend key per holding")
    counted: list[Holding | None] = []
    problems: list[CopyProblem | None] = []
    seen_slots: set[tuple[str, int]] = set()
    seen_fps: set[str] = set()
    seen_keys: set[str] = set()
    for h, key in zip(holdings, backend_keys, strict=True):
        problem = None
        if h is None:
            pass
        elif not (h.set_id and h.set_index and h.fingerprint and h.backend_key):
            problem = CopyProblem.UNBOUND_COPY
        elif key and not hmac.compare_digest(h.backend_key, key):
            problem = CopyProblem.WRONG_BACKEND_KEY
        elif (
            (h.set_id, h.set_index) in seen_slots
            or h.fingerprint in seen_fps
            or h.backend_key in seen_keys
        ):
            problem = CopyProblem.CLONED_COPY
        else:
            seen_slots.add((h.set_id, h.set_index))
            seen_fps.add(h.fingerprint)
            seen_keys.add(h.backend_key)
        counted.append(h if problem is None else None)
        problems.append(problem)
    return counted, problems


def effective_version(
    holdings: Sequence[Holding | None], backend_keys: Sequence[str] | None = None
) -> Effective:
    """``holdings[i]`` is what backend i+1 holds, or None if it is down or holds no copy.

    With ``backend_keys`` (one per backend, see `distinct_copies`) only distinct copies bound
    to their backend's key count; without, every holding counts (the bare rule)."""
    counted: list[Holding | None]
    problems: list[CopyProblem | None]
    if backend_keys is None:
        counted, problems = list(holdings), [None] * len(holdings)
    else:
        counted, problems = distinct_copies(holdings, backend_keys)
    held = [h for h in counted if h is not None]
    ids = sorted((h.tmr_id for h in held), reverse=True)
    available = len(ids) >= QUORUM
    tmr_id = ids[QUORUM - 1] if available else None
    # Copies with the same TMR ID carry the same LQ; should they not, take the smaller.
    quantity = min((h.quantity for h in held if h.tmr_id == tmr_id), default=0)
    parts = []
    for i, (h, problem) in enumerate(zip(holdings, problems, strict=True), start=1):
        if h is None:
            parts.append(f"{i}:-")
        elif problem is not None:
            parts.append(f"{i}:!#{h.tmr_id}")
        elif h.tmr_id == tmr_id:
            parts.append(f"{i}:#{h.tmr_id}")
        else:
            parts.append(f"{i}:(#{h.tmr_id})")
    return Effective(
        available=available,
        tmr_id=tmr_id,
        quantity=quantity,
        status=" ".join(parts),
        problems=tuple(problems) if backend_keys is not None else (),
    )
