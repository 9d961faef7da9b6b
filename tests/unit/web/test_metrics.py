"""Prometheus metrics: event counters, round latency, batch size, snapshot gauges."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tmr.errors import ErrorCode
from tmr.protocol.results import ReleaseResult
from tmr.replication.leader import ClientReply, Effects
from tmr.replication.messages import (
    Accept,
    Accepted,
    AcceptEntry,
    EntryResult,
    EntryStatus,
    Probe,
    Snapshot,
)
from tmr.replication.types import Epoch, Grant, HandleRecord, Release, ReleaseReason
from tmr.web.metrics import CopyRefusal, ServerMetrics, refusal_reason
from tmr.web.snapshot import build_snapshot

E = Epoch(3, "tmr-a")
KEY = (6000123, 42)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def samples(m: ServerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    m.flush()  # what the server's loop does at the end of every turn
    out = {}
    text = generate_latest(m.registry).decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def rec(h: str) -> HandleRecord:
    return HandleRecord(h, KEY[0], KEY[1], 1, "c/1/x", "r" + h, 1.7e9)


def test_event_counters_and_errors() -> None:
    m = ServerMetrics(lambda: None)
    fx = Effects()
    fx.events += [
        {"event": "handle_granted", "license": "6000123:42"},
        {"event": "handle_granted", "license": "6000123:42"},
        {"event": "handle_released", "license": "6000123:42"},
        {"event": "handle_expired", "license": "6000123:42"},
        {"event": "backend_up", "backend": "b1"},
    ]
    fx.replies += [
        ClientReply(None, "r1", error=ErrorCode.NO_LICENSE_AVAILABLE),
        ClientReply(None, "r2", error=ErrorCode.QUORUM_LOST),
        ClientReply(None, "r3", ReleaseResult(True)),
    ]
    m.on_effects(fx)
    m.on_denial(*KEY)
    s = samples(m)
    lic = (("firm", "6000123"), ("product", "42"))
    assert s[("tmr_checkouts_total", lic)] == 2
    assert s[("tmr_releases_total", lic)] == 1
    assert s[("tmr_expiries_total", lic)] == 1
    assert s[("tmr_denials_total", lic)] == 1
    assert s[("tmr_client_errors_total", (("code", "NO_LICENSE_AVAILABLE"),))] == 1
    assert s[("tmr_client_errors_total", (("code", "QUORUM_LOST"),))] == 1


def test_event_counts_reach_the_counters_at_the_turns_end_exactly() -> None:
    """Counts gathered as plain integers within a loop turn are added once per turn
    (`flush`): nothing before the flush, every event exactly once after it, over many turns
    with several licenses and error codes."""
    import random

    rng = random.Random(17)
    m = ServerMetrics(lambda: None)
    licenses = ["6000123:42", "6000123:43", "7000001:1"]
    events = ["handle_granted", "handle_released", "handle_expired", "backend_up"]
    codes = [ErrorCode.NO_LICENSE_AVAILABLE, ErrorCode.QUORUM_LOST, ErrorCode.NOT_ACTIVE]
    want: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    names = {
        "handle_granted": "tmr_checkouts_total",
        "handle_released": "tmr_releases_total",
        "handle_expired": "tmr_expiries_total",
    }
    for turn in range(200):
        for _ in range(rng.randrange(4)):
            fx = Effects()
            for _ in range(rng.randrange(6)):
                event, lic = rng.choice(events), rng.choice(licenses)
                fx.events.append({"event": event, "license": lic})
                if event in names:
                    firm, product = lic.split(":")
                    k: tuple[str, tuple[tuple[str, str], ...]]
                    k = (names[event], (("firm", firm), ("product", product)))
                    want[k] = want.get(k, 0) + 1
            for _ in range(rng.randrange(3)):
                code = rng.choice(codes)
                fx.replies.append(ClientReply(None, "r1", error=code))
                k = ("tmr_client_errors_total", (("code", code.value),))
                want[k] = want.get(k, 0) + 1
            fx.replies.append(ClientReply(None, "r2", ReleaseResult(True)))
            m.on_effects(fx)
        if turn == 0 and want:
            text = generate_latest(m.registry).decode()
            assert "tmr_checkouts_total{" not in text  # not flushed yet
        got = samples(m)  # flushes, as the loop does once per turn
        assert {k: got.get(k, 0) for k in want} == want
    m.flush()  # a flush with nothing gathered changes nothing
    assert {k: samples(m).get(k, 0) for k in want} == want


def test_round_latency_and_batch_size_by_message_id() -> None:
    clock = Clock()
    m = ServerMetrics(lambda: None, clock)
    ops = (Grant(rec("h1")), Grant(rec("h2")), Release("h0", ReleaseReason.RELEASE, 1.7e9))
    fx = Effects()
    fx.send += [
        ("b1", Accept(10, E, (AcceptEntry(KEY, 5, ops),))),
        ("b2", Accept(11, E, (AcceptEntry(KEY, 5, ops[:1]),))),
        ("b3", Snapshot(12, E, ())),
        ("b1", Probe(13)),
        ("b2", Accept(14, E, (), commits=((KEY, 5),))),  # a commit notice: not a batch
    ]
    m.on_effects(fx)
    ok = {KEY: EntryResult(EntryStatus.OK, 5)}
    clock.t += 0.004
    m.on_reply("b1", Accepted(10, E, ok))
    m.on_reply("b1", Accepted(10, E, ok))  # a duplicate is counted once
    m.on_reply("b2", Accepted(99, E, ok))  # unknown id: ignored
    clock.t += 0.3
    m.on_reply("b3", Accepted(12, E, ok))
    m.on_reply("b2", Accepted(14, E, {}))
    s = samples(m)
    assert s[("tmr_replication_batch_ops_count", ())] == 2
    assert s[("tmr_replication_batch_ops_sum", ())] == 4
    assert s[("tmr_replication_round_seconds_count", (("kind", "accept"),))] == 1
    assert s[("tmr_replication_round_seconds_bucket", (("kind", "accept"), ("le", "0.005")))] == 1
    assert s[("tmr_replication_round_seconds_bucket", (("kind", "accept"), ("le", "0.0025")))] == 0
    assert s[("tmr_replication_round_seconds_count", (("kind", "snapshot"),))] == 1
    assert s[("tmr_replication_round_seconds_count", (("kind", "notice"),))] == 1
    # b2's send was never answered: forgotten after a while, not leaked.
    clock.t += 60
    m.prune()
    assert m._inflight == {}


def test_snapshot_gauges() -> None:
    st: dict[str, Any] = {
        "server": "tmr-a",
        "role": "active",
        "epoch": [3, "tmr-a"],
        "serial": "131-0000001",
        "backends": [
            {
                "name": f"b{i}",
                "up": i != 3,
                "promised": "3/tmr-a",
                "licenses": {"6000123:42": {"tmr_id": 8, "quantity": 20, "valid": True}},
            }
            for i in (1, 2, 3)
        ],
        "handles": 4,
        "ops_committed": 11,
        "policy": {"file": "/etc/tmr/policy.toml", "digest": "0123456789abcdef", "mismatch": ["b"]},
        "licenses": [
            {
                "firm": 6000123,
                "product": 42,
                "tmr_id": 8,
                "quantity": 20,
                "in_use": 7,
                "available": True,
                "status": "1:#8 2:#8 3:-",
                "expires": 2e9,
                "features": {},
            }
        ],
    }
    clock = Clock()
    snap = build_snapshot(st, now_wall=1.7e9, lease=30.0)
    snap["published_at"] = clock.t - 2.0
    m = ServerMetrics(lambda: snap, clock)
    s = samples(m)
    lic = (("firm", "6000123"), ("product", "42"))
    assert s[("tmr_license_seats_in_use", lic)] == 7
    assert s[("tmr_license_quantity", lic)] == 20
    assert s[("tmr_license_quorum_margin", lic)] == 0
    assert s[("tmr_license_holders", lic)] == 2
    assert s[("tmr_license_expiry_timestamp_seconds", lic)] == 2e9
    assert s[("tmr_quorum_margin", ())] == 0
    assert s[("tmr_backends_up", ())] == 2
    assert s[("tmr_backend_up", (("backend", "b3"),))] == 0
    assert s[("tmr_role", (("role", "active"),))] == 1
    assert s[("tmr_role", (("role", "fenced"),))] == 0
    assert s[("tmr_epoch", ())] == 3
    assert s[("tmr_handles", ())] == 4
    assert s[("tmr_ops_committed_total", ())] == 11
    assert s[("tmr_status_age_seconds", ())] == 2.0
    assert s[("tmr_policy_info", (("digest", "0123456789abcdef"),))] == 1
    assert s[("tmr_policy_mismatch", ())] == 1
    assert snap["policy"]["file"] == "/etc/tmr/policy.toml"


def test_policy_denials_are_counted_apart_from_seat_denials() -> None:
    from tmr.web.runtime import WebRuntime

    m = ServerMetrics(lambda: None)
    rt = WebRuntime.__new__(WebRuntime)  # only the checkout hook and its counters
    rt.metrics = m
    rt.denials_since_start = {}
    fx = Effects()
    fx.replies.append(ClientReply("t", "r1", error=ErrorCode.POLICY_DENIED, message="exclude x"))
    rt.on_checkout(KEY[0], KEY[1], "r1", fx)
    s = samples(m)
    lic = (("firm", "6000123"), ("product", "42"))
    assert s[("tmr_policy_denials_total", lic)] == 1
    assert ("tmr_denials_total", lic) not in s
    assert rt.denials_since_start == {}


def test_no_snapshot_no_gauges() -> None:
    m = ServerMetrics(lambda: None)
    assert not any(name.startswith("tmr_role") for name, _ in samples(m))


def _status_with_refusals() -> dict[str, Any]:
    lic = {"tmr_id": 8, "quantity": 20, "valid": True}
    return {
        "server": "tmr-a",
        "role": "active",
        "epoch": [3, "tmr-a"],
        "serial": "131-0000001",
        "backends": [
            # b1: the leader refuses its entry for 6000123:42 (the backend's own check failed)
            {"name": "b1", "up": True, "licenses": {"6000123:42": lic},
             "refused": {"6000123:42": "signature does not verify"}},
            # b2: holds #7 while the trio's floor is #8 (the leader's floor refusal)
            {"name": "b2", "up": True,
             "licenses": {"6000123:42": {**lic, "tmr_id": 7}},
             "refused": {"6000123:42": "below floor: holds #7, the trio's floor is #8"}},
            # b3: reports its own copy below its floor; and one of a license nobody else lists
            {"name": "b3", "up": True,
             "licenses": {"6000123:42": {**lic, "tmr_id": 6, "valid": False,
                                         "reason": "below floor"}},
             "refused": {"6000123:43": "expired: expires 1.0, trusted time 1700000000"}},
            # a down backend's refusals are stale: not counted
            {"name": "b4", "up": False, "licenses": {},
             "refused": {"6000123:42": "below floor: holds #5, the trio's floor is #8"}},
        ],
        "handles": 0,
        "ops_committed": 0,
        "licenses": [
            {"firm": 6000123, "product": 42, "tmr_id": 8, "quantity": 20, "in_use": 0,
             "available": True, "status": "", "expires": None, "features": {}},
        ],
    }  # fmt: skip


def test_refused_copies_by_reason() -> None:
    snap = build_snapshot(_status_with_refusals(), now_wall=1.7e9, lease=30.0)
    snap["published_at"] = 0.0
    s = samples(ServerMetrics(lambda: snap, lambda: 0.0))

    def refused(product: str, reason: str) -> float:
        labels = (("firm", "6000123"), ("product", product), ("reason", reason))
        return s[("tmr_license_copies_refused", labels)]

    assert refused("42", "BELOW_FLOOR") == 2  # b2 (leader) and b3 (its own view), not b4
    assert refused("42", "CHECK_FAILED") == 1
    assert refused("42", "EXPIRED") == 0
    assert refused("42", "CLOCK_ROLLBACK") == 0
    assert refused("43", "EXPIRED") == 1
    assert refused("43", "BELOW_FLOOR") == 0


def test_a_license_without_refusals_reports_zero_for_every_reason() -> None:
    st = _status_with_refusals()
    for b in st["backends"]:
        b["refused"] = {}
        b["licenses"] = {"6000123:42": {"tmr_id": 8, "quantity": 20, "valid": True}}
    snap = build_snapshot(st, now_wall=1.7e9, lease=30.0)
    snap["published_at"] = 0.0
    s = samples(ServerMetrics(lambda: snap, lambda: 0.0))
    got = {k[1]: v for k, v in s.items() if k[0] == "tmr_license_copies_refused"}
    assert len(got) == len(CopyRefusal)
    assert set(got.values()) == {0.0}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("below floor", CopyRefusal.BELOW_FLOOR),
        ("below floor: holds #7, the trio's floor is #8", CopyRefusal.BELOW_FLOOR),
        ("expired: expires 5, trusted time 9", CopyRefusal.EXPIRED),
        ("clock rollback", CopyRefusal.CLOCK_ROLLBACK),
        ("not bound to this backend", CopyRefusal.CHECK_FAILED),
        ("", CopyRefusal.CHECK_FAILED),
    ],
)
def test_refusal_reason(text: str, reason: CopyRefusal) -> None:
    assert refusal_reason(text) is reason
