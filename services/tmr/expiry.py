"""Days left of each license and its expiry state (status, `tmr client list`, WebAdmin,
/metrics): FlexNet's and RLM's "expires in N days" warnings, CodeMeter WebAdmin's expiry
column.

The server adds ``days_left`` (float days from the server's wall clock to the license's expiry,
None for a license without one) and ``expiry`` (an `ExpiryState` value) to each license entry.
``warning`` starts ``expiry_warning_days`` (server.toml, default 30) before the expiry.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

DAY = 86_400.0


class ExpiryState(enum.StrEnum):
    NONE = "none"  # no expiry date: a perpetual license
    OK = "ok"
    WARNING = "warning"  # expires within expiry_warning_days
    EXPIRED = "expired"


def days_left(expires: float | None, now_wall: float) -> float | None:
    """Days from ``now_wall`` to ``expires`` (negative once past; None: never expires)."""
    if expires is None:
        return None
    return (expires - now_wall) / DAY


def expiry_state(expires: float | None, now_wall: float, warning_days: float) -> ExpiryState:
    left = days_left(expires, now_wall)
    if left is None:
        return ExpiryState.NONE
    if left <= 0:
        return ExpiryState.EXPIRED
    if left <= warning_days:
        return ExpiryState.WARNING
    return ExpiryState.OK


def with_expiry(
    licenses: Iterable[Mapping[str, Any]], now_wall: float, warning_days: float
) -> list[dict[str, Any]]:
    """Copies of the license entries (each with an ``expires`` UNIX time or None) with
    ``days_left`` (rounded to 0.01 day) and ``expiry`` added."""
    return [
        {**lic, **expiry_fields(lic.get("expires"), now_wall, warning_days)} for lic in licenses
    ]


def expiry_fields(expires: float | None, now_wall: float, warning_days: float) -> dict[str, Any]:
    """``days_left`` (rounded to 0.01 day) and ``expiry`` of a license expiring at
    ``expires``: what the server adds to each license entry."""
    left = days_left(expires, now_wall)
    return {
        "days_left": None if left is None else round(left, 2),
        "expiry": expiry_state(expires, now_wall, warning_days).value,
    }
