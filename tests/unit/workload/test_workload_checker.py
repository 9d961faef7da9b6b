"""The checker over hand-made histories: each violation is caught, clean histories pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wl_helpers import WALL0, Hist

from tmr.cli.main import main
from tmr.workload.checker import (
    CheckOptions,
    LqSchedule,
    Report,
    check,
    parse_events,
    read_schedule,
)
from tmr.workload.history import HandlesSnapshot, HistoryError, ServerHandle


def _table(hist: Hist, at: float, *handles: tuple[str, str, int]) -> HandlesSnapshot:
    return HandlesSnapshot(
        [ServerHandle(h, cid, seats, 6000123, 42) for h, cid, seats in handles],
        hist.wall(at),
        hist.wall(at) + 0.01,
        "tmr-b",
        "active",
        "test",
    )


def _clean() -> Hist:
    """Two clients sharing LQ 3: a full license, refusals, releases, a handover."""
    h = Hist()
    h.checkout("c1", "h1", 2, 0.0, 0.1)
    h.checkout("c2", "h2", 1, 0.0, 0.1)
    h.checkout("c2", None, 1, 0.2, 0.25, "NO_LICENSE_AVAILABLE")
    h.heartbeat("c1", "h1", 1.0, 1.1)
    h.release("c1", "h1", 1.2, 1.3, lease_end=11.0)
    # c2's second checkout is answered after c1's release call started: no overlap.
    h.checkout("c2", "h3", 2, 1.25, 1.4)
    h.release("c2", "h2", 2.0, 2.1, lease_end=10.0)
    h.release("c2", "h3", 3.0, 3.1, lease_end=11.25)
    return h


def _violations(report: Report, inv: str) -> list[str]:
    return [v.message for v in report.violations if v.invariant == inv]


def test_clean_history_passes() -> None:
    h = _clean()
    report = check(h.history(), CheckOptions(lq=3))
    assert report.ok, report.summary()
    assert report.max_held == 3
    assert report.counts["checkout"] == {"ok": 3, "NO_LICENSE_AVAILABLE": 1}
    assert len(report.lives) == 3
    doc = report.to_json()
    assert doc["ok"] is True and doc["violations"] == []
    assert "result: OK" in report.summary()


def test_over_allocation_is_caught() -> None:
    h = _clean()
    # A third client is granted 1 seat while c1 (2) and c2 (1) still hold theirs.
    h.checkout("c3", "h9", 1, 0.5, 0.6)
    h.release("c3", "h9", 0.9, 1.0, lease_end=10.5)
    report = check(h.history(), CheckOptions(lq=3))
    found = _violations(report, "I1")
    assert len(found) == 1, report.summary()
    v = next(v for v in report.violations if v.invariant == "I1")
    assert v.details["held"] == 4 and v.details["lq"] == 3
    assert v.at == pytest.approx(0.6) and v.details["until"] == pytest.approx(0.9)
    assert "h9" in v.details["handles"] and "c3" in v.details["clients"]
    assert not report.ok


def test_seats_count_only_until_the_lease_the_client_knows() -> None:
    """A crashed client's seat is free after its lease: reusing it then is no violation."""
    h = Hist()
    h.checkout("c1", "h1", 1, 0.0, 0.1)  # never heartbeated nor released: lease ends at 10
    h.checkout("c2", "h2", 1, 10.0, 10.2)
    assert check(h.history(), CheckOptions(lq=1)).ok
    # ...but a grant before the lease ran out is an over-allocation.
    h.checkout("c3", "h3", 1, 9.0, 9.5)
    report = check(h.history(), CheckOptions(lq=1))
    assert _violations(report, "I1"), report.summary()


def test_heartbeats_extend_the_known_lease() -> None:
    h = Hist()
    h.checkout("c1", "h1", 1, 0.0, 0.1)
    h.heartbeat("c1", "h1", 8.0, 8.1)  # lease now until 18
    h.checkout("c2", "h2", 1, 12.0, 12.2)  # c1 still holds its seat
    report = check(h.history(), CheckOptions(lq=1))
    assert _violations(report, "I1")


def test_lost_acknowledged_grant_while_leased_is_caught() -> None:
    h = _clean()
    h.checkout("c4", "h4", 1, 4.0, 4.1)
    # The server answers UNKNOWN_HANDLE 2 s later although the lease runs until 14.
    h.lost("c4", "h4", 6.0, lease_end=14.0)
    report = check(h.history(), CheckOptions(lq=3))
    found = _violations(report, "I7")
    assert len(found) == 1 and "h4" in found[0] and "lost while leased" in found[0]


def test_unknown_handle_on_heartbeat_or_release_is_a_lost_grant() -> None:
    h = Hist()
    h.checkout("c1", "h1", 1, 0.0, 0.1)
    h.op("c1", "heartbeat", 3.0, 3.1, "UNKNOWN_HANDLE", handle="h1", lease_end=10.0)
    h.op("c1", "lost", 3.1, handle="h1", lease_end=10.0)  # the SDK's callback, same loss
    h.checkout("c2", "h2", 1, 0.0, 0.1)
    h.release("c2", "h2", 4.0, 4.1, "UNKNOWN_HANDLE", lease_end=10.0)
    report = check(h.history(), CheckOptions(lq=2))
    found = _violations(report, "I7")
    assert len(found) == 2, report.summary()  # one per handle
    assert {v.details["handle"] for v in report.violations} == {"h1", "h2"}


def test_loss_after_the_lease_ran_out_is_expiry() -> None:
    h = Hist()
    h.checkout("c1", "h1", 1, 0.0, 0.1)
    h.lost("c1", "h1", 10.5, lease_end=10.0)  # cut off past its lease: expired, fine
    assert check(h.history(), CheckOptions(lq=1)).ok


def test_duplicated_handle_is_caught() -> None:
    h = _clean()
    h.checkout("c3", "h2", 1, 5.0, 5.1)  # h2 was c2's handle
    report = check(h.history(), CheckOptions(lq=3))
    found = _violations(report, "I8")
    assert len(found) == 1 and "h2" in found[0] and "twice" in found[0]


def test_op_on_another_clients_handle_is_caught() -> None:
    h = Hist()
    h.checkout("c1", "h1", 1, 0.0, 0.1)
    h.release("c2", "h1", 1.0, 1.1)
    report = check(h.history(), CheckOptions(lq=1))
    assert _violations(report, "I8")


def test_lq_schedule_is_respected() -> None:
    h = Hist()
    for i in range(3):
        h.checkout(f"c{i}", f"a{i}", 1, 0.0, 0.1)
        h.release(f"c{i}", f"a{i}", 4.0, 4.1, lease_end=10.0)
    for i in range(5):  # 5 seats after the LQ went from 3 to 5
        h.checkout(f"d{i}", f"b{i}", 1, 5.0, 5.1)
        h.release(f"d{i}", f"b{i}", 8.0, 8.1, lease_end=15.0)
    # LQ 3 until +4.5 s, then 5: clean.
    good = CheckOptions(lq=3, schedule=[(h.wall(4.5), 5)])
    report = check(h.history(), good)
    assert report.ok, report.summary()
    assert report.lq["describe"] == "3, 5 from +4.50 s"
    # The same history with a constant LQ of 3, or a change after the 5 were granted: caught.
    assert _violations(check(h.history(), CheckOptions(lq=3)), "I1")
    late = check(h.history(), CheckOptions(lq=3, schedule=[(h.wall(6.0), 5)]))
    found = [v for v in late.violations if v.invariant == "I1"]
    assert len(found) == 1 and found[0].at == pytest.approx(5.1)
    assert found[0].details["until"] == pytest.approx(5.5)  # the margin around the change
    # A decrease back to 3 while 5 are held is caught too.
    down = check(h.history(), CheckOptions(lq=3, schedule=[(h.wall(4.5), 5), (h.wall(7), 3)]))
    assert [v.at for v in down.violations if v.invariant == "I1"] == [pytest.approx(7.5)]


def test_lq_schedule_margin() -> None:
    s = LqSchedule(20, [(100.0, 30), (200.0, 10)], 0.5)
    assert [s.allowed(t) for t in (99.0, 99.6, 100.4, 101.0)] == [20, 30, 30, 30]
    assert [s.allowed(t) for t in (199.0, 199.6, 200.4, 201.0)] == [30, 30, 30, 10]
    assert LqSchedule(None, [(100.0, 5)], 0.0).at(50.0) is None


def test_lq_from_the_listing_when_not_given() -> None:
    h = _clean()
    h.license_lq = 2
    report = check(h.history())
    assert _violations(report, "I1")
    assert any("listed at the start" in w for w in report.warnings)
    h.license_lq = None
    with pytest.raises(HistoryError, match="no LQ"):
        check(h.history())


def test_handle_table_clean() -> None:
    h = Hist()
    h.checkout("c1", "h1", 2, 0.0, 0.1)
    h.heartbeat("c1", "h1", 19.0, 19.1)
    h.abandon("c1", "h1", 19.2, lease_end=29.0)
    h.checkout("c2", "h2", 1, 0.0, 0.1)
    h.release("c2", "h2", 5.0, 5.1, lease_end=10.0)
    h.checkout("c3", None, 1, 6.0, 16.0, "unknown")  # timed out: may hold a seat
    table = _table(h, 21.0, ("h1", "c1", 2), ("h7", "c3", 1), ("x1", "someone-else", 1))
    report = check(h.history(), CheckOptions(lq=4, handles=table))
    assert report.ok, report.summary()
    assert report.handles is not None
    assert report.handles["checked_present"] == 1
    assert (report.handles["ours"], report.handles["foreign"], report.handles["orphans"]) == (
        2,
        1,
        1,
    )


def test_lost_acknowledged_grant_missing_from_the_table_is_caught() -> None:
    h = Hist()
    h.checkout("c1", "h1", 2, 0.0, 0.1)
    h.heartbeat("c1", "h1", 19.0, 19.1)
    h.abandon("c1", "h1", 19.2, lease_end=29.0)
    report = check(h.history(), CheckOptions(lq=4, handles=_table(h, 21.0)))
    found = _violations(report, "I7")
    assert len(found) == 1 and "missing from the handle table" in found[0]
    # Taken after the lease ran out, it may legitimately be gone.
    assert check(h.history(), CheckOptions(lq=4, handles=_table(h, 30.0))).ok


def test_released_handle_in_the_table_is_caught() -> None:
    h = Hist()
    h.checkout("c1", "h1", 1, 0.0, 0.1)
    h.release("c1", "h1", 5.0, 5.1, lease_end=10.0)
    report = check(h.history(), CheckOptions(lq=4, handles=_table(h, 21.0, ("h1", "c1", 1))))
    assert any("release was acknowledged" in m for m in _violations(report, "I7"))


def test_orphan_handles_beyond_unknown_checkouts_are_caught() -> None:
    h = Hist()
    h.checkout("c1", None, 1, 0.0, 10.0, "unknown")
    h.checkout("c1", "h1", 1, 10.0, 10.1)
    h.release("c1", "h1", 11.0, 11.1, lease_end=20.0)
    one = _table(h, 12.0, ("o1", "c1", 1))
    assert check(h.history(), CheckOptions(lq=4, handles=one)).ok
    two = _table(h, 12.0, ("o1", "c1", 1), ("o2", "c1", 1))
    found = _violations(check(h.history(), CheckOptions(lq=4, handles=two)), "I8")
    assert len(found) == 1 and "no checkout acknowledged" in found[0]


def test_table_mismatch_and_table_over_lq_are_caught() -> None:
    h = Hist()
    h.checkout("c1", "h1", 1, 0.0, 0.1)
    h.abandon("c1", "h1", 1.0, lease_end=10.0)
    report = check(
        h.history(),
        CheckOptions(lq=2, handles=_table(h, 2.0, ("h1", "c1", 2), ("x", "other", 1))),
    )
    assert any("acknowledged as 1 seat" in m for m in _violations(report, "I8"))
    assert any("handle table holds 3 seats" in m for m in _violations(report, "I1"))


def test_unavailability_gaps_and_events() -> None:
    h = Hist(duration=10.0)
    h.checkout("c1", "h1", 1, 0.0, 0.1)
    h.checkout("c2", None, 1, 0.2, 0.3, "NO_LICENSE_AVAILABLE")  # answered: counts
    h.checkout("c2", None, 1, 0.4, 3.0, "unknown")  # the outage
    h.heartbeat("c1", "h1", 1.0, 3.4)  # answered once the new server is active
    h.checkout("c2", "h2", 1, 3.5, 3.6)
    h.release("c1", "h1", 9.0, 9.95, lease_end=11.0)
    report = check(
        h.history(),
        CheckOptions(lq=2, gap_threshold=0.5, events=[("kill", h.wall(1.0))]),
    )
    assert report.ok, report.summary()
    assert report.longest_gap == {"from": 3.6, "to": 9.95, "length": pytest.approx(6.35)}
    outage = next(g for g in report.gaps if g["from"] == pytest.approx(0.3))
    assert outage["length"] == pytest.approx(3.1)
    assert outage["outcomes"] == {"checkout unknown": 1}
    [ev] = report.events
    assert ev["to_first_ok"] == pytest.approx(2.4)
    assert ev["to_first_checkout"] == pytest.approx(2.6)
    assert "event 'kill'" in report.summary()


def test_fail_on_outcomes() -> None:
    h = _clean()
    h.checkout("c3", None, 1, 5.0, 15.0, "unknown")
    assert check(h.history(), CheckOptions(lq=3)).ok
    report = check(h.history(), CheckOptions(lq=3, fail_on=frozenset({"checkout:unknown"})))
    assert _violations(report, "outcome") == ["1 checkout operation(s) ended unknown"]


def test_parse_events_and_schedule(tmp_path: Path) -> None:
    assert parse_events(["kill a@1.5"]) == [("kill a", 1.5)]
    with pytest.raises(HistoryError):
        parse_events(["no-time"])
    f = tmp_path / "s.json"
    f.write_text(json.dumps([{"at": 10, "lq": 20}, [20.5, 30]]))
    assert read_schedule(f) == [(10.0, 20), (20.5, 30)]
    f.write_text(json.dumps([{"at": "x", "lq": 1}]))
    with pytest.raises(HistoryError):
        read_schedule(f)


# ---------------------------------------------------------------------------- the CLI


def test_check_cli_exit_codes_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = _clean()
    path = h.write(tmp_path / "history.jsonl")
    assert main(["workload", "check", str(path), "--lq", "3"]) == 0
    out = capsys.readouterr().out
    assert "result: OK" in out
    doc = json.loads((tmp_path / "history.jsonl.check.json").read_text())
    assert doc["ok"] is True and doc["max_seats_held"] == 3

    # An over-allocation: exit 1, the violation in the JSON report.
    assert main(["workload", "check", str(path), "--lq", "2", "--out", str(tmp_path / "r.json")])
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["ok"] is False and doc["violations_by_invariant"] == {"I1": 2}

    # A schedule raising the LQ to 3 before the handover: clean again.
    sched = tmp_path / "lq.json"
    sched.write_text(json.dumps([{"at": WALL0 - 1, "lq": 3}]))
    assert main(["workload", "check", str(path), "--lq", "2", "--lq-schedule", str(sched)]) == 0

    # The handle table: the raw `tmr ctl handles` output, its capture time given.
    table = tmp_path / "handles.json"
    table.write_text(
        json.dumps({"ok": True, "handles": [{"handle": "h1", "client_id": "c1", "seats": 2}]})
    )
    code = main(
        [
            "workload",
            "check",
            str(path),
            "--lq",
            "3",
            "--handles",
            str(table),
            "--handles-time",
            str(WALL0 + 2),
        ]
    )
    assert code == 1  # h1's release was acknowledged at +1.3 s
    assert "release was acknowledged" in capsys.readouterr().out

    # Malformed input: exit 2 with the line number.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text().replace('"op":"release"', '"op":"juggle"', 1))
    assert main(["workload", "check", str(bad), "--lq", "3"]) == 2
    assert "bad.jsonl:" in capsys.readouterr().err
