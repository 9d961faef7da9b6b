"""The denial record on the server side: the bounded recorder, the merged report (each refusal
once, by license, user, host and code; CSV), and the metrics (queue length, denial records)."""

from __future__ import annotations

import csv
import io

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.web.test_metrics import _status_with_refusals
from tmr.replication.messages import DenialRow
from tmr.replication.queue import CheckoutQueue
from tmr.report.denials import DenialRecorder, batches
from tmr.report.summary import (
    denial_breakdown,
    denial_counts,
    denials_to_csv,
    merge_denials,
)
from tmr.web.metrics import ServerMetrics
from tmr.web.snapshot import build_snapshot

T0 = 1_700_000_000.0
KEY = (6000123, 42)


def row(n: int, user: str = "ann", code: str = "NO_LICENSE_AVAILABLE", **kw: object) -> DenialRow:
    base = DenialRow(f"tmr-a/x/{n}", T0 + n, "tmr-a", code, *KEY, 1, "K" * 40, user, "ws-1", 7, "")
    return base._replace(**kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- recorder


def test_a_refusal_repeated_is_one_row_with_a_count() -> None:
    rec = DenialRecorder("tmr-a", max_pending=2)
    for i in range(1000):  # a flood from one client: one row, not a thousand
        rec.record(T0 + i, "NO_LICENSE_AVAILABLE", *KEY, 2, owner="K", user="ann", rule="full")
    rec.record(T0 + 5, "POLICY_DENIED", *KEY, 1, owner="L", user="mallory", rule="exclude")
    rec.record(T0 + 6, "QUORUM_LOST", *KEY, 1, user="bob")  # a third kind: the buffer is full
    rec.record(T0 + 1000, "NO_LICENSE_AVAILABLE", *KEY, 2, owner="K", user="ann", rule="full")
    assert (rec.recorded, len(rec.pending), rec.dropped) == (1003, 2, 1)
    ann, mallory = rec.take()
    assert (ann.user, ann.times, ann.at, ann.last) == ("ann", 1001, T0, T0 + 1000)
    assert (mallory.user, mallory.times, mallory.at, mallory.last) == ("mallory", 1, T0 + 5, T0 + 5)
    assert len(rec.recent) == 1000  # the recent list keeps each refusal (the newest RECENT)
    groups, _ = denial_breakdown([ann, mallory], T0, T0 + 2000)
    assert [(g["user"], g["denials"], g["seats_asked"]) for g in groups] == [
        ("ann", 1001, 2002),
        ("mallory", 1, 1),
    ]
    assert denial_counts([ann, mallory], T0, T0 + 2000) == {KEY: 1001}


def test_the_recorder_is_bounded_and_counts_what_it_drops() -> None:
    rec = DenialRecorder("tmr-a", max_pending=10, recent=5)
    for i in range(25):
        rec.record(T0 + i, "NO_LICENSE_AVAILABLE", *KEY, 1, user=f"u{i}", rule="x" * 5000)
    assert (rec.recorded, len(rec.pending), rec.dropped) == (25, 10, 15)
    assert len(rec.recent) == 5 and len(rec.recent[-1].rule) == 1024
    sent = rec.take(4)
    assert [r.user for r in sent] == ["u0", "u1", "u2", "u3"] and len(rec.pending) == 6
    assert [d["user"] for d in rec.recent_view(2)] == ["u24", "u23"]  # newest first
    assert rec.recent_view(product=(None, 43)) == []
    assert len(rec.recent_view(product=(KEY[0], KEY[1]))) == 5


def test_refusal_ids_differ_across_servers_and_restarts() -> None:
    a1, a2, b = DenialRecorder("tmr-a"), DenialRecorder("tmr-a"), DenialRecorder("tmr-b")
    ids = {r.record(T0, "QUORUM_LOST", *KEY, 1).id for r in (a1, a2, b) for _ in range(3)}
    assert len(ids) == 9 and all(len(i) <= 64 for i in ids)


def test_batches_split_at_the_wire_bound() -> None:
    rows = [row(i) for i in range(2500)]
    assert [len(b) for b in batches(rows, 1024)] == [1024, 1024, 452]


# ---------------------------------------------------------------- report


def test_each_refusal_counts_once_whatever_the_backends_that_kept_it() -> None:
    a, b, c = [row(1), row(2)], [row(2), row(3)], [row(1), row(3), row(4, user="bob")]
    merged = merge_denials([a, b, c])
    assert [r.id for r in merged] == ["tmr-a/x/1", "tmr-a/x/2", "tmr-a/x/3", "tmr-a/x/4"]
    assert denial_counts(merged, T0, T0 + 10) == {KEY: 4}
    assert denial_counts(merged, T0 + 2, T0 + 3) == {KEY: 2}
    assert denial_counts(merged, T0, T0 + 10, "POLICY_DENIED") == {}


def test_the_breakdown_is_by_license_user_host_and_code() -> None:
    rows = [
        row(1),
        row(2, seats=3, owner="L" * 40),
        row(3, server="tmr-b"),
        row(4, code="POLICY_DENIED", rule="exclude user:ann"),
        row(5, user="bob", host="ws-2"),
        row(99),  # outside the window
    ]
    groups, cut = denial_breakdown(rows, T0, T0 + 10)
    assert not cut
    by = {(g["user"], g["host"], g["code"]): g for g in groups}
    ann = by[("ann", "ws-1", "NO_LICENSE_AVAILABLE")]
    assert (ann["denials"], ann["seats_asked"], ann["keys"]) == (3, 5, 2)
    assert ann["servers"] == ["tmr-a", "tmr-b"]
    assert (ann["first"], ann["last"]) == (T0 + 1, T0 + 3)
    assert by[("ann", "ws-1", "POLICY_DENIED")]["rule"] == "exclude user:ann"
    assert by[("bob", "ws-2", "NO_LICENSE_AVAILABLE")]["denials"] == 1
    text = denials_to_csv(groups, T0, T0 + 10)
    lines = list(csv.DictReader(io.StringIO(text)))
    assert len(lines) == 3 and lines[0]["from"] == "2023-11-14T22:13:20Z"
    assert {x["servers"] for x in lines} == {"tmr-a tmr-b", "tmr-a"}


def test_the_breakdown_keeps_the_most_denied_groups() -> None:
    rows = [row(i, user=f"u{i % 7}") for i in range(70)] + [row(100 + i) for i in range(50)]
    groups, cut = denial_breakdown(rows, T0, T0 + 1000, limit=3)
    assert cut and len(groups) == 3
    assert max(g["denials"] for g in groups) == 50  # ann's 50: always kept


# ---------------------------------------------------------------- metrics


def samples(m: ServerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_queue_length_per_license_and_denial_records_are_metrics() -> None:
    q = CheckoutQueue()
    q.ask(KEY, ("k", "c1", "r1"), 2, 0.0, 60.0, wall=T0, user="ann")
    q.ask(KEY, ("k", "c2", "r2"), 3, 0.0, 60.0, wall=T0, user="bob")
    assert q.lengths() == {KEY: (2, 5)}
    st = _status_with_refusals()
    st["queued"] = {"6000123:42": [2, 5]}
    snap = build_snapshot(
        st,
        now_wall=1.7e9,
        lease=30.0,
        denial_records={"recorded": 12, "pending": 3, "dropped": 1},
    )
    snap["published_at"] = 0.0
    s = samples(ServerMetrics(lambda: snap, lambda: 0.0))
    lic = (("firm", "6000123"), ("product", "42"))
    assert s[("tmr_license_queue_length", lic)] == 2
    assert s[("tmr_license_queue_seats", lic)] == 5
    assert s[("tmr_denial_records_total", (("outcome", "recorded"),))] == 12
    assert s[("tmr_denial_records_total", (("outcome", "dropped"),))] == 1
    assert s[("tmr_denial_records_pending", ())] == 3
