"""The status snapshot: license levels, the documents' notation, who is active, handles."""

from __future__ import annotations

from typing import Any

import pytest

from tmr.web.snapshot import active_hint, build_snapshot, client_host, parse_epoch


def backend(
    name: str, up: bool, tmr_id: int | None, *, valid: bool = True, promised: str = "3/tmr-a"
) -> dict[str, Any]:
    lic = (
        {}
        if tmr_id is None
        else {
            "6000123:42": {
                "tmr_id": tmr_id,
                "quantity": 20,
                "valid": valid,
                "reason": "" if valid else "expired",
            }
        }
    )
    return {"name": name, "up": up, "promised": promised, "caught_up": True, "licenses": lic}


def status(
    backends: list[dict[str, Any]],
    *,
    role: str = "active",
    available: bool = True,
    tmr_id: int | None = 8,
    in_use: int = 5,
    quantity: int = 30,
    st: str = "1:#8 2:#8 3:(#7)",
) -> dict[str, Any]:
    return {
        "server": "tmr-a",
        "role": role,
        "epoch": [3, "tmr-a"] if role == "active" else None,
        "fenced_by": None,
        "serial": "131-0000001",
        "uptime": 12.0,
        "backends": backends,
        "handles": 2,
        "ops_committed": 7,
        "licenses": [
            {
                "firm": 6000123,
                "product": 42,
                "tmr_id": tmr_id,
                "quantity": quantity,
                "in_use": in_use,
                "available": available,
                "status": st,
                "expires": None,
                "features": {},
            }
        ],
    }


def snap(st: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return build_snapshot(st, now_wall=1.7e9, lease=30.0, **kw)


def test_three_holders_ok_and_notation() -> None:
    s = snap(status([backend("b1", True, 8), backend("b2", True, 8), backend("b3", True, 7)]))
    lic = s["licenses"][0]
    assert lic["level"] == "ok" and lic["holders"] == 3 and lic["quorum_margin"] == 1
    assert [b["text"] for b in lic["backends"]] == ["#8", "#8", "(#7)"]
    assert s["backends_up"] == 3 and s["quorum_margin"] == 1
    assert s["epoch"] == "3/tmr-a" and s["epoch_counter"] == 3 and s["healthy"]
    assert s["active"]["this"] is True


def test_two_holders_warn_one_more_failure() -> None:
    s = snap(status([backend("b1", True, 8), backend("b2", False, 8), backend("b3", True, 8)]))
    lic = s["licenses"][0]
    assert lic["level"] == "warning" and "one more failure" in lic["message"]
    assert lic["backends"][1]["text"] == "-" and lic["backends"][1]["reason"] == "backend down"
    assert s["quorum_margin"] == 0


def test_fewer_than_two_is_an_error() -> None:
    st = status(
        [backend("b1", True, 8), backend("b2", False, 8), backend("b3", False, None)],
        available=False,
        tmr_id=None,
        st="1:#8 2:- 3:-",
    )
    lic = snap(st)["licenses"][0]
    assert lic["level"] == "error" and "QUORUM_LOST" in lic["message"]
    assert lic["quorum_margin"] == -1 and lic["backends"][2]["reason"] == "backend down"


def test_expired_copies_are_an_error_too() -> None:
    bs = [backend(f"b{i}", True, 8, valid=False) for i in (1, 2, 3)]
    lic = snap(status(bs, available=False, tmr_id=None))["licenses"][0]
    assert lic["level"] == "error" and lic["holders"] == 0


def test_all_seats_in_use_is_a_warning() -> None:
    bs = [backend(f"b{i}", True, 8) for i in (1, 2, 3)]
    lic = snap(status(bs, in_use=30, quantity=30))["licenses"][0]
    assert lic["level"] == "warning" and "all 30 seats" in lic["message"]


def test_standby_shows_no_seats_and_names_the_active_server() -> None:
    bs = [
        backend("b1", True, 8, promised="4/tmr-b"),
        backend("b2", True, 8, promised="3/tmr-a"),
        backend("b3", False, 8, promised="9/tmr-x"),
    ]
    s = snap(status(bs, role="standby"))
    assert s["licenses"][0]["in_use"] is None
    assert s["epoch"] is None
    # b3 is down: its promise is not evidence; the highest reachable promise is 4/tmr-b.
    assert s["active"] == {
        "server": "tmr-b",
        "epoch": "4/tmr-b",
        "this": False,
        "source": "highest epoch promised by the reachable backends",
    }


def test_no_license_yet() -> None:
    st = status([backend(f"b{i}", True, None, promised="0") for i in (1, 2, 3)])
    st["licenses"] = []
    s = snap(st)
    assert s["licenses"] == [] and s["quorum_margin"] == 1
    assert active_hint({**st, "role": "standby"}) is None


def test_handles_section() -> None:
    hs = [
        {
            "handle": f"h{i}",
            "firm": 6000123,
            "product": 42,
            "seats": 1,
            "client_id": f"host{i}/12/ab",
            "granted_at": 1.7e9 + i,
            "lease_left": 25.0,
            "committed": True,
        }
        for i in range(5)
    ]
    s = snap(status([backend(f"b{i}", True, 8) for i in (1, 2, 3)]), handles=hs, max_handles=3)
    h = s["handles"]
    assert (
        h["total"] == 5
        and h["truncated"]
        and [x["handle"] for x in h["shown"]] == ["h0", "h1", "h2"]
    )
    assert h["shown"][0]["host"] == "host0" and h["shown"][0]["heartbeat_ago"] == 5.0
    assert "request_id" not in h["shown"][0]
    none = snap(status([]))["handles"]
    assert none == {"total": None, "shown": [], "truncated": False}


@pytest.mark.parametrize(
    ("text", "want"), [("3/tmr-a", (3, "tmr-a")), ("0", None), (None, None), ("x/y", None)]
)
def test_parse_epoch(text: str | None, want: tuple[int, str] | None) -> None:
    assert parse_epoch(text) == want


def test_client_host() -> None:
    assert client_host("ws-12/4242/ab") == "ws-12"
    assert client_host("plain-id") == "plain-id"


def test_queue_section() -> None:
    """WebAdmin's queue table: per license in queue order, at most the handles' limit, no
    owner key or request id."""
    places = [
        {
            "firm": 6000123,
            "product": 43 - (i % 2),
            "position": i // 2 + 1,
            "seats": 1 + i,
            "client_id": f"ws{i}/7/ab",
            "request_id": f"r{i}",
            "owner": "key",
            "user": "" if i else "alice",
            "host": "",
            "pid": 0,
            "since": 1.7e9 + i,
            "hold_left": 4.26,
        }
        for i in range(5)
    ]
    s = snap(status([backend(f"b{i}", True, 8) for i in (1, 2, 3)]), queue=places, max_handles=4)
    q = s["queue"]
    assert q["total"] == 5 and q["truncated"]
    shown = [(x["product"], x["position"], x["seats"]) for x in q["shown"]]
    assert shown == [(42, 1, 2), (42, 2, 4), (43, 1, 1), (43, 2, 3)]
    first = q["shown"][2]
    assert (first["user"], first["host"], first["pid"], first["hold_left"]) == (
        "alice",
        "ws0",
        None,
        4.3,
    )
    assert "owner" not in first and "request_id" not in first
    assert snap(status([]))["queue"] == {"total": None, "shown": [], "truncated": False}
