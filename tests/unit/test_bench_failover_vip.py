"""bench.failover_vip: reading the lab's journals and workload history, and the statistics."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.failover_vip import (
    JournalRecord,
    ParseError,
    first_after,
    first_op_after,
    goal_met,
    handle_server,
    kill_time,
    parse_journal,
    parse_ts,
    percentile,
    podman_time,
    summarize,
    vrrp_state,
    vrrp_transitions,
)

T0 = 1796452575.0  # 2026-12-05T06:36:15Z


def jline(at: float, message: str, ident: str = "Keepalived_vrrp") -> str:
    return json.dumps(
        {
            "__REALTIME_TIMESTAMP": str(round(at * 1e6)),
            "SYSLOG_IDENTIFIER": ident,
            "MESSAGE": message,
        }
    )


def tmr_log(ts: str, event: str) -> str:
    return json.dumps({"ts": ts, "level": "info", "service": "tmr-server[tmr-b]", "event": event})


def test_journal_times_are_journald_s_or_the_server_s_own_ts() -> None:
    lines = [
        jline(T0 + 0.5, "(TMR) Entering MASTER STATE"),
        "",
        # journald received the server's line 40 ms after the server logged it: its ts counts
        jline(T0 + 0.74, tmr_log("2026-12-05T06:36:15.700Z", "active"), ident="tmr"),
    ]
    recs = parse_journal(lines)
    assert recs[0] == JournalRecord(T0 + 0.5, "Keepalived_vrrp", "(TMR) Entering MASTER STATE")
    assert recs[1].at == pytest.approx(T0 + 0.7)
    assert recs[1].ident == "tmr"


def test_a_message_journald_gives_as_bytes_is_decoded() -> None:
    doc = {"__REALTIME_TIMESTAMP": "1000000", "MESSAGE": list(b"(TMR) Entering FAULT STATE")}
    (rec,) = parse_journal([json.dumps(doc)])
    assert vrrp_state(rec.message) == "FAULT"
    assert rec.at == 1.0


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1, 2]",
        json.dumps({"MESSAGE": "no time"}),
        json.dumps({"MESSAGE": "x", "__REALTIME_TIMESTAMP": "soon"}),
        jline(T0, tmr_log("yesterday", "active")),
        jline(T0, tmr_log("2026-12-05T06:36:15", "active")),  # no zone: refused, not guessed
    ],
)
def test_unreadable_journal_lines_raise_a_typed_error(line: str) -> None:
    with pytest.raises(ParseError):
        parse_journal([line])


def test_parse_ts_is_utc() -> None:
    assert parse_ts("2026-12-05T06:36:15.250Z") == pytest.approx(T0 + 0.25)


def test_first_after_finds_the_transition_and_the_events_after_the_kill() -> None:
    recs = parse_journal(
        [
            jline(T0 - 5, "(TMR) Entering MASTER STATE"),  # an earlier failover
            jline(T0 - 4, tmr_log("2026-12-05T06:36:11.000Z", "active"), ident="tmr"),
            jline(T0 + 0.36, "(TMR) Entering MASTER STATE"),
            jline(T0 + 0.40, tmr_log("2026-12-05T06:36:15.380Z", "promote"), ident="tmr"),
            jline(T0 + 0.41, tmr_log("2026-12-05T06:36:15.390Z", "prepare"), ident="tmr"),
            jline(T0 + 0.42, tmr_log("2026-12-05T06:36:15.410Z", "active"), ident="tmr"),
        ]
    )
    assert first_after(recs, T0, "vrrp_master") == pytest.approx(T0 + 0.36)
    assert first_after(recs, T0, "promote") == pytest.approx(T0 + 0.38)
    assert first_after(recs, T0, "active") == pytest.approx(T0 + 0.41)
    assert first_after(recs, T0, "fenced") is None
    assert first_after(recs, T0 + 1, "vrrp_master") is None


def test_vrrp_transitions_count_only_the_window() -> None:
    recs = [
        JournalRecord(T0 - 1, "k", "(TMR) Entering BACKUP STATE"),
        JournalRecord(T0 + 1, "k", "(TMR) Entering MASTER STATE"),
        JournalRecord(T0 + 2, "k", "(TMR) Entering FAULT STATE"),
        JournalRecord(T0 + 3, "k", "VRRP_Script(tmr_health) succeeded"),
        JournalRecord(T0 + 99, "k", "(TMR) Entering BACKUP STATE"),
    ]
    got = vrrp_transitions(recs, T0, T0 + 10)
    assert got == [f"MASTER@{T0 + 1:.3f}", f"FAULT@{T0 + 2:.3f}"]
    assert vrrp_transitions(recs, T0 + 3, T0 + 10) == []


def op(op: str, outcome: str, end: float, handle: str = "h7-tmr-b-00ff") -> str:
    rec: dict[str, Any] = {
        "type": "op", "op": op, "outcome": outcome, "end_wall": end, "handle": handle
    }  # fmt: skip
    return json.dumps(rec)


def test_first_op_after_is_the_earliest_ok_end_after_the_kill() -> None:
    history = [
        json.dumps({"type": "header"}),
        op("checkout", "ok", T0 - 0.1),  # answered before the kill
        op("checkout", "TIMEOUT", T0 + 0.2),
        op("checkout", "NO_LICENSE_AVAILABLE", T0 + 0.3),  # answered, but not granted
        op("checkout", "ok", T0 + 0.9),
        op("checkout", "ok", T0 + 0.7),  # workers write out of order
        op("heartbeat", "ok", T0 + 0.65),
        '{"type": "op", "op": "chec',  # the line being written
    ]
    assert first_op_after(history, T0, "checkout") == T0 + 0.7
    assert first_op_after(history, T0, "heartbeat") == T0 + 0.65
    assert first_op_after(history, T0, "release") is None


def test_percentile_is_a_measured_value() -> None:
    values = [0.9, 0.4, 0.5, 0.6, 1.4]
    assert percentile(values, 0.5) == 0.6
    assert percentile(values, 1.0) == 1.4
    assert percentile(values, 0.0) == 0.4
    assert percentile([0.3, 0.7], 0.5) == 0.3
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile(values, 1.5)


def test_summarize_reports_p50_and_max_over_the_kills_that_have_the_metric() -> None:
    kills: list[dict[str, float | None]] = [
        {"vrrp_master": 0.1, "promote": 0.2, "active": 0.35, "first_checkout": 0.4,
         "first_heartbeat": 0.41},
        {"vrrp_master": 0.36, "promote": 0.4, "active": 0.42, "first_checkout": 0.5,
         "first_heartbeat": None},
        {"vrrp_master": None, "promote": 0.3, "active": 0.37, "first_checkout": 0.45,
         "first_heartbeat": 0.6},
    ]  # fmt: skip
    s = summarize(kills)
    assert s["first_checkout"] == {"n": 3, "p50": 0.45, "max": 0.5}
    assert s["vrrp_master"] == {"n": 2, "p50": 0.1, "max": 0.36}
    assert s["first_heartbeat"] == {"n": 2, "p50": 0.41, "max": 0.6}
    assert summarize([])["active"] == {"n": 0, "p50": None, "max": None}


def test_goal_met_needs_every_kill_served_within_the_bounds() -> None:
    def kills(*fc: float | None) -> list[dict[str, Any]]:
        return [{"first_checkout": v} for v in fc]

    assert goal_met(kills(0.4, 0.6, 0.9, 1.4))
    assert not goal_met(kills(0.4, 0.6, 0.9, 1.5))  # max not below 1.5 s
    assert not goal_met(kills(1.0, 1.0, 0.2))  # p50 not below 1.0 s
    assert not goal_met(kills(0.4, None))  # a kill without a granted checkout
    assert not goal_met([])


def test_kill_time_reads_date_s_output() -> None:
    assert kill_time("1796452575.123456789\n") == pytest.approx(1796452575.123457)
    assert kill_time("1796452575.5\nsome output of systemctl\n") == 1796452575.5
    for bad in ("", "\n", "Sat Dec  5 06:36:15 UTC 2026", "nan", "-1"):
        with pytest.raises(ParseError):
            kill_time(bad)


def test_podman_time_keeps_the_fraction_and_the_offset() -> None:
    assert podman_time("2026-12-05 06:36:15.294345758 +0000 UTC\n") == pytest.approx(T0 + 0.294346)
    assert podman_time("2026-12-05 07:36:15.5 +0100 CET") == pytest.approx(T0 + 0.5)
    assert podman_time("2026-12-05 06:36:15 +0000 UTC") == T0
    for bad in ("", "0001-01-01 00:00:00 +0000 UTC", "2026-12-05 06:36:15.x +0000 UTC", "soon"):
        with pytest.raises(ParseError):
            podman_time(bad)


def test_handle_server_is_the_granting_server() -> None:
    assert handle_server("h26-tmr-a-eda9469e6f49fb04ae0ac0da41e0a95a") == "tmr-a"
    assert handle_server("h3-b-ff") == "b"
    for bad in ("", "tmr-a", "x26-tmr-a-ff", "h-tmr-a-ff", "h26-ff", "h26--ff"):
        assert handle_server(bad) is None


def test_first_checkout_of_the_new_server_skips_a_late_reply_of_the_killed_one() -> None:
    history = [
        op("checkout", "ok", T0 + 0.002, handle="h25-tmr-a-aa"),  # in flight at the kill
        op("checkout", "ok", T0 + 0.45, handle="h26-tmr-b-bb"),
        op("checkout", "ok", T0 + 0.40, handle="garbage"),
    ]
    assert first_op_after(history, T0, "checkout") == T0 + 0.002
    assert first_op_after(history, T0, "checkout", "tmr-b") == T0 + 0.45
    assert first_op_after(history, T0, "checkout", "tmr-c") is None


def test_a_lost_reply_answered_again_by_the_new_server_counts_once_it_is_active() -> None:
    """The killed server granted the checkout, its reply was lost; the client's retry (same
    request id) is answered by the new server with the same handle, after it became active."""
    history = [
        op("checkout", "ok", T0 + 0.002, handle="h25-tmr-a-aa"),  # the killed server, in time
        op("checkout", "ok", T0 + 0.62, handle="h25-tmr-a-cc"),  # retried, answered by tmr-b
        op("checkout", "ok", T0 + 0.83, handle="h26-tmr-b-bb"),
    ]
    assert first_op_after(history, T0, "checkout", "tmr-b") == T0 + 0.83
    assert first_op_after(history, T0, "checkout", "tmr-b", T0 + 0.5) == T0 + 0.62
    # before the new server was active only the killed one can have answered
    assert first_op_after(history, T0, "checkout", "tmr-b", T0 + 0.7) == T0 + 0.83
