"""The TMR server's log of the leader's events: per-handle grants and releases at debug."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tmr import logs
from tmr.server.service import DEBUG_EVENTS, log_events

GRANTED: dict[str, Any] = {
    "event": "handle_granted",
    "handle": "h3-tmr-a-1",
    "license": "6000123:42",
    "seats": 1,
    "client_id": "c-1",
}
RELEASED: dict[str, Any] = {**GRANTED, "event": "handle_released"}
EXPIRED: dict[str, Any] = {**GRANTED, "event": "handle_expired"}
UP: dict[str, Any] = {"event": "backend_up", "backend": "backend-2"}


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    logs.configure("tmr", "info")


def logged(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_at_info_grants_and_releases_are_not_logged_the_rest_is(out: io.StringIO) -> None:
    logs.configure("tmr-server[tmr-a]", "info", stream=out)
    events = [GRANTED, UP, RELEASED, EXPIRED]
    log_events(events)
    recs = logged(out)
    assert [(r["event"], r["level"]) for r in recs] == [
        ("backend_up", "info"),
        ("handle_expired", "info"),
    ]
    assert recs[1]["handle"] == "h3-tmr-a-1" and recs[1]["client_id"] == "c-1"
    assert events[0]["event"] == "handle_granted"  # the leader's events are not changed


def test_at_debug_every_event_is_logged_in_order_with_its_fields(out: io.StringIO) -> None:
    logs.configure("tmr-server[tmr-a]", "debug", stream=out)
    log_events([GRANTED, UP, RELEASED, EXPIRED])
    recs = logged(out)
    assert [(r["event"], r["level"]) for r in recs] == [
        ("handle_granted", "debug"),
        ("backend_up", "info"),
        ("handle_released", "debug"),
        ("handle_expired", "info"),
    ]
    for rec, ev in zip(recs, [GRANTED, UP, RELEASED, EXPIRED], strict=True):
        assert {k: rec[k] for k in ev} == ev


def test_only_the_per_handle_grant_and_release_are_debug() -> None:
    """And the queued checkouts' events, which come at the rate of the waiting clients'
    asks at worst (a place taken, a place given up)."""
    per_checkout = {"handle_granted", "handle_released", "checkout_queued", "checkout_unqueued"}
    assert per_checkout == DEBUG_EVENTS
