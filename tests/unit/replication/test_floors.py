"""Replicated floors: the `Floor` op, its application and wire format, and the leader's rule
(a copy below the trio's TMR ID floor, or expired at its time floor, does not count)."""

from __future__ import annotations

import pytest

from tests.unit.replication.harness import Harness, own_copy
from tmr.errors import ErrorCode
from tmr.protocol.codec import pack, unpack
from tmr.protocol.errors import ProtocolError
from tmr.protocol.peer_api import decode_reply, decode_request, encode_reply, encode_request
from tmr.replication.acceptor import Acceptor, AcceptorState, ProductWrite, Write, apply_write
from tmr.replication.leader import TIME_FLOOR_STEP
from tmr.replication.messages import (
    Accept,
    Accepted,
    AcceptEntry,
    EntryStatus,
    Prepare,
    Probe,
    Promise,
    Snapshot,
    SnapshotEntry,
    Status,
)
from tmr.replication.types import (
    NO_FLOOR,
    ZERO_EPOCH,
    CopyReason,
    Epoch,
    Floor,
    Grant,
    HandleRecord,
    LicenseInfo,
    Version,
    floor_after,
    floor_refusal,
    under_floor,
)

KEY = (6000123, 42)
E = Epoch(1, "sa")
WALL = 1_800_000_000.0
V7 = LicenseInfo(tmr_id=7, quantity=20, valid=True)
V8 = LicenseInfo(tmr_id=8, quantity=10, valid=True)


def rec(handle: str, seats: int = 1) -> HandleRecord:
    return HandleRecord(handle, KEY[0], KEY[1], seats, "c", f"r-{handle}", 1.0)


# ------------------------------------------------------------------ the op


def test_floors_only_rise() -> None:
    f = Floor(8, 100.0)
    assert f.merge(Floor(7, 50.0)) is f
    assert f.merge(Floor(9, 50.0)) == Floor(9, 100.0)
    assert f.merge(Floor(0, 200.0)) == Floor(8, 200.0)
    ops = (Grant(rec("h1")), Floor(9, 10.0), Floor(8, 300.0))
    assert floor_after(f, ops) == Floor(9, 300.0)
    assert floor_after(f, (Grant(rec("h1")),)) is f


def test_a_copy_below_the_floor_or_expired_at_it_does_not_count() -> None:
    floor = Floor(8, WALL)
    assert floor_refusal(V8, floor) == ""
    assert floor_refusal(V7, floor) == CopyReason.BELOW_FLOOR
    assert floor_refusal(LicenseInfo(8, 10, True, expires=WALL), floor) == "expired"
    assert floor_refusal(LicenseInfo(8, 10, True, expires=WALL + 1), floor) == ""
    assert under_floor(V7, floor) == LicenseInfo(7, 20, False, CopyReason.BELOW_FLOOR)
    assert under_floor(V8, floor) is V8
    invalid = LicenseInfo(7, 20, False, CopyReason.CLOCK_ROLLBACK)
    assert under_floor(invalid, floor) is invalid  # its own reason stays


def test_apply_write_raises_floors_from_ops_and_snapshots_never_lowers() -> None:
    state = AcceptorState(E, True)
    apply_write(state, Write(products=(ProductWrite(KEY, Version(E, 1), ops=(Floor(8, 5.0),)),)))
    assert state.products[KEY].floor == Floor(8, 5.0)
    old = ProductWrite(KEY, Version(E, 2), replace=(rec("h1"),), floor=Floor(7, 1.0))
    apply_write(state, Write(products=(old,)))
    assert state.products[KEY].floor == Floor(8, 5.0)
    assert list(state.products[KEY].handles) == ["h1"]
    assert state.products[KEY].copy().floor == Floor(8, 5.0)


# ------------------------------------------------------------------ the acceptor


def fresh(lic: LicenseInfo) -> Acceptor:
    acc = Acceptor("b1", AcceptorState(ZERO_EPOCH, False), {KEY: lic})
    for msg in (Prepare(1, E), Snapshot(2, E, (SnapshotEntry(KEY, 0, ()),))):
        step = acc.handle(msg, 0.0)
        acc.committed(step)
    return acc


def accept(acc: Acceptor, mid: int, seq: int, *ops: object) -> Accepted:
    step = acc.handle(Accept(mid, E, (AcceptEntry(KEY, seq, tuple(ops)),)), 0.0)  # type: ignore[arg-type]
    acc.committed(step)
    assert isinstance(step.reply, Accepted)
    return step.reply


def test_an_acceptor_below_the_committed_floor_refuses_the_product() -> None:
    acc = fresh(V7)
    assert accept(acc, 3, 1, Floor(8, 0.0)).results[KEY].status is EntryStatus.OK
    assert acc.state.products[KEY].floor == Floor(8, 0.0)
    refused = accept(acc, 4, 2, Grant(rec("h1"))).results[KEY]
    assert refused.status is EntryStatus.REFUSED and CopyReason.BELOW_FLOOR in refused.reason
    status = acc.handle(Probe(5), 0.0).reply
    assert isinstance(status, Status)
    assert status.licenses[KEY] == LicenseInfo(7, 20, False, CopyReason.BELOW_FLOOR)
    assert status.floors == {KEY: Floor(8, 0.0)}
    acc.set_licenses({KEY: V8})  # the copy at the floor is installed: served again
    assert accept(acc, 6, 2, Grant(rec("h1"))).results[KEY].status is EntryStatus.OK


def test_an_expired_copy_stays_expired_at_the_time_floor() -> None:
    acc = fresh(LicenseInfo(8, 10, True, expires=WALL + 10))
    accept(acc, 3, 1, Floor(0, WALL + 60))
    refused = accept(acc, 4, 2, Grant(rec("h1"))).results[KEY]
    assert refused.status is EntryStatus.REFUSED and "expired" in refused.reason


def test_a_snapshot_seeds_a_wiped_acceptor_with_the_floors() -> None:
    acc = Acceptor("b1", AcceptorState(ZERO_EPOCH, False), {KEY: V7})
    acc.committed(acc.handle(Prepare(1, E), 0.0))
    step = acc.handle(Snapshot(2, E, (SnapshotEntry(KEY, 4, (rec("h1"),), Floor(8, WALL)),)), 0.0)
    assert step.write is not None
    acc.committed(step)
    assert acc.state.products[KEY].floor == Floor(8, WALL)
    promise = acc.handle(Prepare(3, Epoch(2, "sb")), 0.0).reply
    assert isinstance(promise, Promise)
    assert promise.floors == {KEY: Floor(8, WALL)}
    assert not promise.licenses[KEY].valid


# ------------------------------------------------------------------ wire format


@pytest.mark.parametrize(
    "msg",
    [
        Accept(1, E, (AcceptEntry(KEY, 1, (Floor(8, WALL), Grant(rec("h1")))),)),
        Snapshot(2, E, (SnapshotEntry(KEY, 3, (rec("h1"),), Floor(8, WALL)),)),
        Snapshot(3, E, (SnapshotEntry(KEY, 3, (rec("h1"),)),)),
    ],
)
def test_floor_requests_round_trip(msg: object) -> None:
    assert decode_request(encode_request(msg)) == msg  # type: ignore[arg-type]


def test_floor_replies_round_trip() -> None:
    status = Status(1, "b1", E, True, {}, {}, {}, None, WALL, {KEY: Floor(8, WALL)})
    promise = Promise(2, "b1", E, True, {}, {}, {KEY: Floor(8, WALL)})
    assert decode_reply(encode_reply(status)) == status
    assert decode_reply(encode_reply(promise)) == promise


def test_an_old_snapshot_entry_has_no_floor_and_no_floor_is_not_sent() -> None:
    old = pack({"t": "snapshot", "mid": 1, "epoch": [1, "sa"], "entries": [[[*KEY], 0, []]]})
    decoded = decode_request(old)
    assert isinstance(decoded, Snapshot) and decoded.entries[0].floor == NO_FLOOR
    # A snapshot without floors encodes as before (older backends read it).
    body = unpack(encode_request(Snapshot(1, E, (SnapshotEntry(KEY, 0, ()),))), max_size=1 << 20)
    assert body["entries"] == [[[*KEY], 0, []]]


@pytest.mark.parametrize(
    "op",
    [["f", 8], ["f", -1, 1.0], ["f", 8, -1.0], ["f", 8, float("nan")], ["f", "8", 1.0]],
)
def test_malformed_floor_ops_are_refused(op: list[object]) -> None:
    frame = pack({"t": "accept", "mid": 1, "epoch": [1, "sa"], "entries": [[[*KEY], 1, [op]]]})
    with pytest.raises(ProtocolError):
        decode_request(frame)


def test_malformed_status_floors_are_refused() -> None:
    good = encode_reply(Status(1, "b1", E, True, {}, {}, {}, None, WALL, {KEY: Floor(8, 1.0)}))
    assert isinstance(decode_reply(good), Status)
    for extra in ({"clock": -5.0}, {"floors": [[[*KEY], 8]]}, {"floors": [[[*KEY], 8, "x"]]}):
        body = {"t": "status", "mid": 1, "name": "b1", "promised": [1, "sa"], "caught_up": True}
        body.update(versions=[], seats=[], licenses=[], **extra)
        with pytest.raises(ProtocolError):
            decode_reply(pack(body))


# ------------------------------------------------------------------ the leader


def cluster(lic: LicenseInfo, clocks: tuple[float, float, float] = (WALL, WALL, WALL)) -> Harness:
    h = Harness({KEY: lic})
    for acc, clock in zip(h.acceptors.values(), clocks, strict=True):
        acc.trusted_time = clock
    h.promote()
    h.advance(1.5)  # a floor scan: the floors are proposed and committed
    return h


def floors(h: Harness) -> list[Floor]:
    return [a.state.products[KEY].floor for a in h.acceptors.values()]


def test_the_leader_commits_the_effective_tmr_id_and_the_trusted_time() -> None:
    h = cluster(V7, clocks=(WALL - 30, WALL, WALL + 10_000))  # one clock far ahead
    # The time two backends reached, not the one running ahead.
    assert floors(h) == [Floor(7, WALL)] * 3
    h.set_license("b1", V8, KEY)
    h.advance(1.5)
    assert floors(h) == [Floor(7, WALL)] * 3  # one backend at #8 is not the trio's version
    h.set_license("b2", V8, KEY)
    h.advance(1.5)
    assert floors(h) == [Floor(8, WALL)] * 3
    for acc in h.acceptors.values():
        acc.trusted_time = WALL + TIME_FLOOR_STEP / 2
    h.advance(1.5)
    assert floors(h) == [Floor(8, WALL)] * 3  # bounded rate: one step per TIME_FLOOR_STEP
    for acc in h.acceptors.values():
        acc.trusted_time = WALL + TIME_FLOOR_STEP
    h.advance(1.5)
    # (b3, below the TMR ID floor, may get no more entries: it holds no valid copy.)
    assert {f.time for f in floors(h)[:2]} == {WALL + TIME_FLOOR_STEP}
    (entry,) = h.leader.licenses_view()
    assert entry.extra["floor"] == {"tmr_id": 8, "time": WALL + TIME_FLOOR_STEP}


def test_no_floor_op_while_a_backend_of_an_older_version_is_up() -> None:
    h = cluster(V7, clocks=(WALL, WALL, WALL))
    h.acceptors["b3"].trusted_time = None  # reports no clock: an older backend
    h.set_license("b1", V8, KEY)
    h.set_license("b2", V8, KEY)
    h.advance(1.5)
    assert floors(h)[0].tmr_id == 7


def test_a_new_leader_adopts_the_floors() -> None:
    h = cluster(V8)
    sb = h.add_server("sb")
    h.stopped.add("sa")
    h.promote("sb", force=True)
    h.advance(1.0)
    p = sb._products[KEY]
    assert p.floor == Floor(8, WALL)


def test_a_backend_below_the_floor_is_refused_with_a_visible_reason() -> None:
    h = cluster(V8)
    h.set_license("b1", V7, KEY)  # its newer copy deleted (its own floor kept)
    h.advance(1.0)
    (backend,) = [b for b in h.leader.status()["backends"] if b["name"] == "b1"]
    assert backend["licenses"][f"{KEY[0]}:{KEY[1]}"]["reason"] == CopyReason.BELOW_FLOOR
    assert h.call("checkout", "r1", "c1", KEY[0], KEY[1], 1).ok  # b2 and b3 still serve
    assert h.leader.licenses_view()[0].quantity == 10


def test_the_leader_refuses_a_copy_below_the_floor_that_its_backend_reports_valid() -> None:
    """A backend whose floors are gone (its store wiped) reports #7 valid: the leader does
    not count it, and its refusal says why."""
    h = cluster(V8)
    wiped = Acceptor("b1", AcceptorState(ZERO_EPOCH, False), {KEY: own_copy(V7, "b1")})
    wiped.trusted_time = WALL
    h.acceptors["b1"] = wiped
    h.down.add("b2")  # b1 (below) and b3 (#8): no two copies at the floor
    h.advance(2.0)
    reply = h.call("checkout", "r1", "c1", KEY[0], KEY[1], 1)
    assert reply.error == ErrorCode.QUORUM_LOST
    (entry,) = h.leader.licenses_view()
    assert entry.tmr_id != 7
    assert wiped.state.products[KEY].floor.tmr_id == 8  # seeded by the snapshot


def test_an_update_shows_the_table_of_the_design_with_floors_in_force() -> None:
    """The rollout of docs/design.md §3 with floors: the backend not yet updated is below
    the floor once two hold #8, shown as ``(#7)``; seats held through it are kept."""
    v8 = LicenseInfo(tmr_id=8, quantity=30, valid=True)
    h = cluster(V7)
    assert h.call("checkout", "r0", "c0", KEY[0], KEY[1], 18).ok
    rows = [("b1", "1:(#8) 2:#7 3:#7", 20), ("b2", "1:#8 2:#8 3:(#7)", 30)]
    for name, status, lq in rows:
        h.set_license(name, v8, KEY)
        h.advance(2.0)
        (entry,) = h.leader.licenses_view()
        assert (entry.status, entry.quantity) == (status, lq), name
    assert h.acceptors["b3"].state.products[KEY].floor.tmr_id == 8
    refused = h.leader.status()["backends"][2]["licenses"][f"{KEY[0]}:{KEY[1]}"]
    assert refused["reason"] == CopyReason.BELOW_FLOOR
    h.set_license("b3", v8, KEY)
    h.advance(2.0)
    (entry,) = h.leader.licenses_view()
    assert (entry.status, entry.quantity, entry.in_use) == ("1:#8 2:#8 3:#8", 30, 18)
    assert h.call("checkout", "r1", "c1", KEY[0], KEY[1], 12).ok
    assert h.acceptors["b3"].state.products[KEY].seats() == 30
