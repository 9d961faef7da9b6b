"""Attack: rollback floors were local files.

Stopping a backend, ``DELETE FROM installed`` in its SQLite store and restarting loaded #7
(LQ 20) again although #8 (LQ 10) was installed. Deleting ``clock.json`` and setting the clock
back two hours made an expired copy install again. Do that on two backends, one after the
other, and the trio serves the old terms.

Defence: the trio's floors are committed through the quorum like seats (`Floor` op in each
product log): the effective TMR ID two backends reached, and a wall time two backends' clocks
reached. Every backend stores them with its product log and seeds a wiped backend with them
(snapshot); its loader and clock guard use the higher of its own and the replicated floors;
the leader does not count a copy below the floor or expired at the time floor, whatever the
backend that reports it says, and shows why (``below floor``).

The tests: the real backend service with its store and license files (the local attack), the
real leader and acceptors (a wiped backend, two backends rolled back one after the other),
and the simulation with a fault that restores older copies.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_helpers import LocalCluster, eventually
from tests.sim.simulation import InvariantViolation, Simulation
from tests.unit.replication.harness import Harness, own_copy
from tmr.backend.service import CLOCK_NAME, DB_NAME, BackendService
from tmr.config import BackendConfig
from tmr.errors import ErrorCode
from tmr.isv import init_vendor, issue_set
from tmr.keys import generate_keypair, write_keypair
from tmr.licensing import make_fingerprint_doc
from tmr.protocol.peer_api import decode_reply, encode_request
from tmr.replication import acceptor as acceptor_mod
from tmr.replication import floors as floors_mod
from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.messages import (
    Accept,
    Accepted,
    AcceptEntry,
    EntryStatus,
    PeerReply,
    PeerRequest,
    Prepare,
    Probe,
    Promise,
    Snapshot,
    SnapshotEntry,
    Status,
)
from tmr.replication.types import (
    ZERO_EPOCH,
    CopyReason,
    Epoch,
    Floor,
    Grant,
    HandleRecord,
    LicenseInfo,
)

FIRM, PRODUCT = 6_000_123, 42
KEY = (FIRM, PRODUCT)
NOW = 1_800_000_000.0
E1 = Epoch(1, "tmr-a")
TWO_HOURS = 7200.0


class FakeTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    config: BackendConfig
    clock: FakeTime
    copies: dict[int, Path]  # TMR ID -> this backend's copy in its license directory


def make_backend(root: Path, issues: list[tuple[int, int, int | None]], start: float) -> Backend:
    """Backend 1 of a set, with its copies of the (TMR ID, LQ, expires) issues."""
    vendor = init_vendor(root / "vendor", FIRM, "Acme")
    keys = generate_keypair()
    write_keypair(root / "node.key", keys)
    (root / "machine-id").write_text("m-1\n")
    docs = [make_fingerprint_doc(keys.public, "m-1")]
    docs += [make_fingerprint_doc(generate_keypair().public, f"m-{i}") for i in (2, 3)]
    (root / "licenses").mkdir()
    copies = {}
    for tmr_id, lq, expires in issues:
        issued = issue_set(
            vendor,
            product_code=PRODUCT,
            quantity=lq,
            tmr_id=tmr_id,
            fingerprints=docs,
            out_dir=root / f"issued-{tmr_id}",
            expires=expires,
            now=NOW - 100_000,
        )
        path = root / "licenses" / f"copy-{tmr_id}.tmrlic"
        issued.copies[0].path.rename(path)
        copies[tmr_id] = path
    config = BackendConfig(
        name="b1",
        key_file=root / "node.key",
        state_dir=root / "state",
        license_dir=root / "licenses",
        vendor_keys=(root / "vendor" / "vendor.pub",),
        allowed_servers=(generate_keypair().public,),
        machine_id_file=root / "machine-id",
        ctl_socket=root / "ctl.sock",
    )
    return Backend(config, FakeTime(start), copies)


@pytest.fixture
def running() -> Iterator[list[BackendService]]:
    """Services started by a test, closed at its end."""
    started: list[BackendService] = []
    yield started
    for svc in started:
        svc.close()


def start(b: Backend, running: list[BackendService]) -> BackendService:
    svc = BackendService(b.config, time_source=b.clock)
    svc.open()
    running.append(svc)
    return svc


def ask(svc: BackendService, msg: PeerRequest) -> PeerReply:
    reply = svc.handle_frame(encode_request(msg))
    assert reply is not None
    return decode_reply(reply)


def commit_floor(svc: BackendService, floor: Floor) -> None:
    """What the leader sends a backend of its trio: its promise, then the snapshot that
    carries the floors committed through the quorum."""
    assert isinstance(ask(svc, Prepare(1, E1)), Promise)
    snap = ask(svc, Snapshot(2, E1, (SnapshotEntry(KEY, 0, (), floor),)))
    assert isinstance(snap, Accepted) and snap.results[KEY].status is EntryStatus.OK


def reported(svc: BackendService) -> LicenseInfo:
    status = ask(svc, Probe(9))
    assert isinstance(status, Status)
    return status.licenses[KEY]


def test_deleting_the_installed_table_does_not_bring_an_older_copy_back(
    tmp_path: Path, running: list[BackendService]
) -> None:
    b = make_backend(tmp_path, [(7, 20, None), (8, 10, None)], start=NOW)
    svc = start(b, running)
    lic = reported(svc)
    assert (lic.tmr_id, lic.quantity, lic.valid) == (8, 10, True)
    commit_floor(svc, Floor(8, NOW))
    svc.close()
    # The attack: the backend's own record of #8 deleted, and #8's file with it.
    conn = sqlite3.connect(b.config.state_dir / DB_NAME)
    with conn:
        conn.execute("DELETE FROM installed")
    conn.close()
    b.copies[8].unlink()
    svc = start(b, running)
    lic = reported(svc)
    assert (lic.tmr_id, lic.valid, lic.reason) == (7, False, CopyReason.BELOW_FLOOR)
    rec = HandleRecord("h1", FIRM, PRODUCT, 15, "c", "r1", NOW)
    refused = ask(svc, Accept(3, E1, (AcceptEntry(KEY, 1, (Grant(rec),)),)))
    assert isinstance(refused, Accepted)
    assert refused.results[KEY].status is EntryStatus.REFUSED
    product = svc.status()["products"][0]
    assert product["floor"]["tmr_id"] == 8 and product["license"]["valid"] is False


def test_deleting_clock_json_and_setting_the_clock_back_does_not_revive_an_expired_copy(
    tmp_path: Path, running: list[BackendService]
) -> None:
    expires = int(NOW) + 1000
    b = make_backend(tmp_path, [(7, 20, expires)], start=NOW)
    svc = start(b, running)
    assert reported(svc).valid
    b.clock.now = NOW + 2000  # the copy expires; the trio's clocks reached this time
    commit_floor(svc, Floor(7, NOW + 2000))
    svc.check_licenses()
    assert not reported(svc).valid
    svc.close()
    (b.config.state_dir / CLOCK_NAME).unlink()
    b.clock.now = NOW + 2000 - TWO_HOURS  # before the expiry date again
    svc = start(b, running)
    lic = reported(svc)
    assert not lic.valid and lic.reason in ("expired", "clock rollback")
    svc.check_licenses()
    assert not reported(svc).valid


# ------------------------------------------------------------------ the trio's view

V7 = LicenseInfo(tmr_id=7, quantity=20, valid=True)
V8 = LicenseInfo(tmr_id=8, quantity=10, valid=True)
WALL = NOW


def trio(lic: LicenseInfo) -> Harness:
    h = Harness({KEY: lic})
    for acc in h.acceptors.values():
        acc.trusted_time = WALL
    h.promote()
    h.advance(1.5)  # a floor scan: floors proposed and committed
    return h


def wipe(h: Harness, name: str, lic: LicenseInfo, clock: float = WALL) -> Acceptor:
    """The backend's state directory deleted (store and clock.json), an older copy or an
    older clock put in place, and the backend restarted."""
    acc = Acceptor(name, AcceptorState(ZERO_EPOCH, False), {KEY: own_copy(lic, name)})
    acc.trusted_time = clock
    h.acceptors[name] = acc
    h.advance(2.0)
    return acc


def test_two_backends_rolled_back_one_after_the_other_never_serve_the_older_copy() -> None:
    h = trio(V7)
    for name in ("b1", "b2", "b3"):
        h.set_license(name, V8, KEY)
        h.advance(1.5)
    assert h.leader.licenses_view()[0].tmr_id == 8
    assert all(a.state.products[KEY].floor.tmr_id == 8 for a in h.acceptors.values())
    # Today's attack, on b1 then b3: each wiped and restarted with #7 (LQ 20).
    first = wipe(h, "b1", V7)
    assert first.state.products[KEY].floor.tmr_id == 8  # rejoined and seeded with the floor
    assert h.call("checkout", "r1", "c1", KEY[0], KEY[1], 10).ok  # b2 and b3 still hold #8
    wipe(h, "b3", V7)
    for n in range(5):
        reply = h.call("checkout", f"r{n + 2}", "c2", KEY[0], KEY[1], 1)
        assert reply.error == ErrorCode.QUORUM_LOST  # not #7's 20 seats
    (entry,) = h.leader.licenses_view()
    assert entry.tmr_id is None and entry.extra["floor"]["tmr_id"] == 8
    refused = {b["name"]: b["refused"] for b in h.leader.status()["backends"]}
    assert "below floor" in str(refused["b1"]) + str(h.leader.status()["backends"][0]["licenses"])


def test_an_expired_copy_stays_expired_whatever_one_backends_clock_says() -> None:
    h = trio(LicenseInfo(tmr_id=7, quantity=20, valid=True, expires=WALL - 10))
    assert h.call("checkout", "r1", "c1", KEY[0], KEY[1], 1).error == ErrorCode.LICENSE_EXPIRED
    # Two backends lose their state and run two hours back: each reports the copy valid.
    for name in ("b1", "b2"):
        acc = wipe(h, name, LicenseInfo(7, 20, True, expires=WALL - 10), clock=WALL - TWO_HOURS)
        assert acc.state.products[KEY].floor.time == WALL  # seeded with the time floor
    reply = h.call("checkout", "r2", "c1", KEY[0], KEY[1], 1)
    assert reply.error in (ErrorCode.LICENSE_EXPIRED, ErrorCode.QUORUM_LOST)


# ------------------------------------------------------------------ real processes


def test_a_loopback_trio_commits_its_floors_and_seeds_a_wiped_backend(tmp_path: Path) -> None:
    """Two servers and three backends as processes: the floors reach every backend's store
    and the servers' status; a backend whose state directory is deleted (store, installed
    table and clock.json) rejoins and is given them again."""
    cluster = LocalCluster(tmp_path / "cluster", quantity=3)
    try:

        def floor_of(backend: str) -> dict[str, Any]:
            (product,) = cluster.ctl(backend, "status")["products"]
            floor = product["floor"]
            assert floor is not None and floor["tmr_id"] == 7 and floor["time"] > 0, floor
            return dict(floor)

        def committed() -> None:
            (lic,) = cluster.ctl("tmr-a", "status")["licenses"]
            assert lic["floor"]["tmr_id"] == 7 and lic["floor"]["time"] > 0, lic
            for name in ("backend-1", "backend-2", "backend-3"):
                floor_of(name)

        eventually("the floors committed on every backend", committed, 30)
        cluster.kill("backend-1")
        shutil.rmtree(tmp_path / "cluster" / "backend-1" / "state")
        cluster.start("backend-1")
        eventually("backend-1 seeded with the floors", lambda: floor_of("backend-1"), 30)
    finally:
        cluster.stop_all()


# ------------------------------------------------------------------ the simulation


def rollback_heavy(sim: Simulation) -> None:
    """Faults as usual, plus frequent license updates and restores of older copies."""
    base = sim.fault

    def fault() -> None:
        r = sim.rng.random()
        if r < 0.15:
            sim.license_update()
        elif r < 0.5:
            sim.rollback_backend(sim.rng.choice(list(sim.backends.values())))
        else:
            base()

    sim.fault = fault  # type: ignore[method-assign]


def test_the_simulation_never_grants_below_the_committed_floor() -> None:
    rollbacks = 0
    for seed in range(12):
        sim = Simulation(seed, duration=30.0)
        rollback_heavy(sim)
        sim.run()
        rollbacks += sim.stats["rollbacks"]
    assert rollbacks > 10


def test_the_simulation_catches_a_trio_without_floors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: with floors ignored, a restored older copy sets the LQ (caught in 6
    of seeds 0-29 since the simulated clients' checkouts are SDK calls: 13, 15, 17, 20, 27,
    29)."""
    monkeypatch.setattr(floors_mod, "floor_refusal", lambda lic, floor: "")
    monkeypatch.setattr(acceptor_mod, "under_floor", lambda lic, floor: lic)
    caught = 0
    for seed in range(30):
        sim = Simulation(seed, duration=30.0)
        rollback_heavy(sim)
        try:
            sim.run()
        except InvariantViolation as exc:
            caught += "I11" in str(exc)
    assert caught > 0
