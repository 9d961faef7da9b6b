"""Deterministic, seeded simulation of the replication protocol.

The real `Leader` and `Acceptor` classes run over a simulated network that loses, reorders
and duplicates messages and cuts links; backends crash (losing nothing committed), restart,
and are sometimes wiped; TMR servers crash, restart, and are promoted and demoted at random,
both at once too, and paused (SIGSTOP: messages queue, the clock jumps on resume); license
updates stop half way (mixed TMR IDs and LQs) when a backend fails, the license expires under
load, and two backends are cut from both servers for longer than a lease. Simulated clients
call as the SDK does, on its two channels (`SimChannel`): each ask of a checkout and each
release is one call of the main channel, each heartbeat one call of the heartbeat channel,
retried with the same request id by the SDK's own `RetrySchedule` until the call's timeout
(`call_tick`); a queued checkout asks again after the pause its answer gives, as
`Client.checkout` does (`checkout_answered`, `call_timed_out`). Heartbeats come on the SDK's
schedule (`tmr.client._heartbeats`: on a grid of their hosts' wall clocks, which are a few
milliseconds apart, so their heartbeats come in bursts; a late answer keeps the phase of the
heartbeat's first send; a second after an error);
an administrator frees handles now and then (`Leader.admin_release`, `tmr admin release`);
both servers enforce one policy file (`POLICY`: a max, a reserve and an exclude rule on the
clients' users and hosts), which must hold across every failover as the seat count does.
Takeovers meet faults in their windows (`takeover_window`): a backend crashes, is cut off or
answers late between its versions-only promise and its table, or between the table request
and its answer to entry 0, and the only backend holding the highest version goes down just
after its promise. After every step the invariants of docs/design.md §8 are checked, and
liveness: a leader that stays active answers every request within ANSWER_BOUND, and never
expires a handle whose heartbeats keep arriving, and answers QUORUM_LOST only when it is true
(`check_truthful`); a takeover completes once two caught-up backends it reaches and the
server itself were left alone by faults for TAKEOVER_BOUND (`check_takeovers`).
A violation raises `InvariantViolation` naming the seed and step.

Run one seed by hand:  python -m tests.sim.simulation --seed 17 --steps 4000 -v
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tmr.client._heartbeats import LATE, next_heartbeat, on_grid
from tmr.client._retry import RetrySchedule
from tmr.client.client import HEARTBEAT_RETRY_MAX
from tmr.errors import ErrorCode
from tmr.policy import EMPTY as EMPTY_POLICY
from tmr.policy import Policy, parse_policy
from tmr.protocol.client_api import WAIT_MAX
from tmr.protocol.results import AdminReleaseResult, CheckoutResult, QueuedResult
from tmr.replication.acceptor import Acceptor, AcceptorState, Step, Write, apply_write
from tmr.replication.leader import ClientReply, Effects, Leader, LeaderConfig, Role
from tmr.replication.messages import (
    Accept,
    Accepted,
    PeerRequest,
    Prepare,
    Probe,
    Promise,
    Snapshot,
    Status,
)
from tmr.replication.roles import Phase
from tmr.replication.types import (
    NO_FLOOR,
    ZERO_EPOCH,
    AccessMode,
    CopyReason,
    Epoch,
    Grant,
    HandleRecord,
    LicenseInfo,
    Op,
    ProductKey,
    ProductLog,
    Release,
    ReleaseReason,
    Version,
    seat_count,
)

FIRM = 6000123
PRODUCT = 42
KEY: ProductKey = (FIRM, PRODUCT)
BACKENDS = ("b1", "b2", "b3")
BACKEND_KEYS = tuple(f"{i:02x}" * 32 for i in (1, 2, 3))  # their CURVE public keys (hex)
SERVERS = ("sa", "sb")
WALL_START = 1_700_000_000.0  # the backends' wall clocks at simulated time 0
LEASE = 5.0
HEARTBEAT_INTERVAL = LEASE / 3  # the SDK's: a third of the lease
# The clients' hosts' wall clocks (the heartbeats' grid, `tmr.client._heartbeats.on_grid`):
# within this of each other, as NTP keeps a site's hosts.
CLIENT_CLOCK_SKEW = 0.005
BACKEND_TIMEOUT = 0.5
# A call's first attempt waits this long (the SDK's `attempt_timeout`, 0.5 s by default)
CLIENT_TIMEOUT = 0.6
# A call gives up after this, retries included: the SDK's `timeout` (10 s by default, a third
# of the default 30 s lease). A heartbeat's is scaled as the lease is (it must end within the
# lease). A checkout's ask's or a release's: half the clients keep the default, unscaled, as
# what such a call spans is not scaled either (takeovers, attempt timeouts, back-offs), so
# they wait through a failover as with the SDK; the other half are applications with a short
# timeout (the heartbeat's), whose calls give up during one.
CLIENT_CALL_TIMEOUT = LEASE / 3
MAIN_CALL_TIMEOUTS = (10.0, CLIENT_CALL_TIMEOUT)
TICK = 0.02  # the servers' timer tick (the service's is 0.05 s)
# A request that reaches a server taking over waits this long for the end (the default)
TAKEOVER_HOLD = 0.3
PROBE_INTERVAL = 0.1
# Liveness: a leader that stays active answers every request within this (backend_timeout
# and one probe interval for a commit, or QUORUM_LOST; the rest is tick granularity).
ANSWER_BOUND = BACKEND_TIMEOUT + PROBE_INTERVAL + 0.05
# Liveness of a takeover: a server taking over, not paused, becomes active (or gives up:
# fenced, yielded) within this once neither it nor two caught-up backends it reaches were
# touched by a fault (`check_takeovers`). The longest legitimate takeover: a probe phase
# waiting backend_timeout for a third backend or backend_timeout + leader_live_window for a
# live leader, a table asked of a holder that does not answer (backend_timeout), entry 0
# sent to a holder that goes down (backend_timeout), and a few lost or slow messages.
TAKEOVER_BOUND = 5 * (BACKEND_TIMEOUT + PROBE_INTERVAL)
# The takeover window faults (`takeover_window`): how often a backend is crashed, cut off or
# made silent between its versions-only promise and its table, and between the table
# request and its answer to entry 0; a crashed or cut backend is back after this long
# (longer than TAKEOVER_BOUND: a takeover waiting for it is caught). After a backend asked
# for its table crashed or was cut off, and after the sole holder of the highest version
# crashed, no random fault comes before it is back (`check_takeovers` then applies when
# the two others are up).
WINDOW_TABLE = 0.3
WINDOW_SOLE = 1.0
WINDOW_ENTRY0 = 0.12
WINDOW_BACK = (TAKEOVER_BOUND + 0.5, TAKEOVER_BOUND + 2.5)
ADMIN = "admin"  # the reply token of an administrator's release (`tmr admin release`)
QUEUE_HOLD = 1.0  # the leaders keep a queued checkout's place this long without an ask
QUEUE_WAIT = 3.0  # the queueing clients (c1: 2 seats, c2: 1 seat) wait this long
# Access modes among the random ops: each checkout draws its mode (weights in this order).
# Clients c6 and c7 are other processes of the stations of c0 and c1 (the same CURVE key,
# user and host), so their station_share checkouts share seats.
MODES = (AccessMode.USER_LIMIT, AccessMode.STATION_SHARE, AccessMode.EXCLUSIVE)
MODE_WEIGHTS = (6, 3, 1)
STATIONS = 6  # client i is a process of station i % STATIONS
QUEUEING = (1, 2)
# The site's policy both servers enforce (tmr.policy). Client i says it is user u{i % 3} on
# host h{i % 2}, and the last client of six on host "kiosk". LQ is 4 (or more after updates).
MAX_U0 = 2  # user u0 (clients c0, 1 seat, and c3, 2 seats) holds at most 2 seats
RESERVE_U1 = 2  # two seats are kept for user u1 (clients c1 and c4)
POLICY = parse_policy(
    {
        "licenses": {
            f"{FIRM}:{PRODUCT}": {
                "exclude": ["host:kiosk"],
                "max": [{"seats": MAX_U0, "for": "user:u0"}],
                "reserve": [{"seats": RESERVE_U1, "for": "user:u1"}],
            }
        }
    },
    "sim-policy",
)


def copy_of(name: str, tmr_id: int, lq: int) -> LicenseInfo:
    """Backend ``name``'s copy of the set of ``tmr_id``: its own index, bound to its key."""
    i = BACKENDS.index(name) + 1
    return LicenseInfo(
        tmr_id=tmr_id,
        quantity=lq,
        valid=True,
        set_id=f"{tmr_id:032x}",
        set_index=i,
        fingerprint=f"{0xF0 + i:02x}" * 32,
        backend_key=BACKEND_KEYS[i - 1],
    )


class InvariantViolation(AssertionError):
    pass


# ------------------------------------------------------------------ durable stores


class MemoryStore:
    """An acceptor's disk: holds only committed writes, so a crash loses nothing else.

    It also checks the acceptor-side invariants on every commit (I2, I3, I4)."""

    def __init__(self, sim: Simulation, name: str) -> None:
        self.sim = sim
        self.name = name
        self.state = AcceptorState(ZERO_EPOCH, False)
        self.licenses: dict[ProductKey, LicenseInfo] = {}

    def load(self) -> AcceptorState:
        return self.state.copy()

    def commit(self, write: Write) -> None:
        before = self.state.copy()
        if write.promised is not None and write.promised < before.promised:
            self.sim.fail(
                f"I3: {self.name} promise would go back {before.promised} -> {write.promised}"
            )
        for pw in write.products:
            if pw.version.epoch < before.promised and (
                write.promised is None or pw.version.epoch < write.promised
            ):
                self.sim.fail(
                    f"I4: {self.name} writes {pw.version} below promise {before.promised}"
                )
        # Backends that held each handle durably before this write (committed: two of them).
        prior = {
            r.handle: set(self.sim.stored_by.get(r.handle, ()))
            for pw in write.products
            for r in pw.replace or ()
        }
        apply_write(self.state, write)
        for pw in write.products:
            log = self.state.products[pw.key]
            for h in log.handles:
                self.sim.stored_by.setdefault(h, set()).add(self.name)
            lic = self.licenses.get(pw.key)
            old_log = before.products.get(pw.key, ProductLog())
            old = old_log.seats()
            # A backend votes only for grants within a valid copy's LQ. What it records
            # beyond that must be state a quorum committed: a snapshot may add only handles
            # two backends held durably before, an entry on an invalid copy only releases.
            if pw.replace is not None:
                new = [h for h in log.handles if h not in old_log.handles]
                votes = [h for h in new if len(prior.get(h, ())) < 2]
            else:
                votes = [op.record.handle for op in pw.ops if isinstance(op, Grant)]
            if votes and (lic is None or not lic.valid):
                self.sim.fail(f"I2: {self.name} granted {votes} without a valid copy")
            elif votes and lic is not None and log.seats() > max(lic.quantity, old):
                self.sim.fail(
                    f"I2: {self.name} grew {pw.key} to {log.seats()} seats, LQ {lic.quantity}"
                )
            if pw.replace is None and pw.ops:
                self.sim.record_slot(pw.key, pw.version, pw.ops, self.name)
        self.sim.note_committed_floor()


# ------------------------------------------------------------------ nodes


@dataclass
class BackendNode:
    name: str
    store: MemoryStore
    acceptor: Acceptor | None = None

    @property
    def up(self) -> bool:
        return self.acceptor is not None


@dataclass
class ServerNode:
    name: str
    counter: int = 0  # the durably persisted epoch counter
    leader: Leader | None = None
    terms: list[Epoch] = field(default_factory=list)
    paused_until: float | None = None  # SIGSTOP: nothing runs, messages to it queue
    pauses: int = 0  # how often it was paused (a request across a pause may go unanswered)


@dataclass
class Msg:
    src: str
    dst: str
    payload: Any
    kind: str  # peer_req | peer_rep | client_req | client_rep
    incarnation: int = 0  # a message to a node that restarted since it was sent is lost
    src_incarnation: int = 0  # the sender's incarnation when it sent the message
    # A status (maybe a delta): the backend's whole status when it answered (`check_status`)
    truth: Status | None = None


@dataclass
class HeldSeat:
    handle: str
    seats: int
    since: float
    lease_ref: float  # send time of the latest acknowledged checkout/heartbeat
    # An administrator asked to free it (`admin_release`): from then on the client no longer
    # certainly holds it (I1 does not count it), whatever its heartbeats are answered.
    revoked: bool = False
    mode: AccessMode = AccessMode.USER_LIMIT


@dataclass
class SimChannel:
    """One of a simulated client's SDK channels (`tmr.client._channel.Channel`) and the call in
    flight on it (one `Channel.call`): its request (id, operation and arguments, the same on
    every attempt); when its first attempt was sent (`sent`: the call's deadline counts from
    it, and a heartbeat's lease); when the latest attempt was sent and how long it waits; the
    SDK's own `RetrySchedule` from its first failed attempt; after a NOT_ACTIVE, the end of the
    pause before the next attempt; a QUORUM_LOST being checked on the other endpoint; the
    attempts so far (`Outcome.attempts`)."""

    name: str  # "main" or "hb": the prefix of its counters in `Simulation.stats`
    timeout: float  # the call's (the SDK's `timeout`): MAIN_CALL_TIMEOUTS, CLIENT_CALL_TIMEOUT
    index: int = 0  # the endpoint it talks to (it stays between calls)
    rid: str = ""  # the call in flight ("": none)
    op: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    sent: float = 0.0
    attempt: float = 0.0
    wait: float = CLIENT_TIMEOUT
    retry: RetrySchedule | None = None
    resend_at: float | None = None
    quorum_lost: bool = False
    attempts: int = 0


@dataclass
class SimClient:
    cid: str
    seats: int
    state: str = "idle"  # idle | checkout | holding | release
    rid: str = ""  # the current checkout's (every ask) or release's request id
    rid_n: int = 0
    # The current checkout's first ask: the granted handle's lease counts from it (the SDK
    # counts from the start of its last ask, later when it was queued; this is the safer side
    # for I1, which counts seats the client certainly holds)
    first_sent: float = 0.0
    next_action: float = 0.0
    held: HeldSeat | None = None
    # The SDK's two channels: the main one (checkouts and releases) and the heartbeat one
    # (`Handle._heartbeat_once`), each with its call in flight.
    main: SimChannel = field(default_factory=lambda: SimChannel("main", MAIN_CALL_TIMEOUTS[0]))
    hb: SimChannel = field(default_factory=lambda: SimChannel("hb", CLIENT_CALL_TIMEOUT))
    release_handle: str = ""
    # A checkout queued: the place it was last given in the queue (`Client.checkout`'s
    # `position`, 0 before), and when it asks again (none while an ask is in flight)
    position: int = 0
    ask_at: float | None = None
    # the next heartbeat: the SDK's schedule (`next_heartbeat`, on the wall clock's grid),
    # or a back-off after an unconfirmed one
    hb_next: float = 0.0
    wall_offset: float = WALL_START  # this client's host's wall clock minus the simulated time
    kept: bool = False  # the latest heartbeat answer: QUORUM_LOST, lease kept (not confirmed)
    wait: float = 0.0  # > 0: checkouts queue for up to this long (client.checkout(wait=))
    wait_until: float = 0.0  # the current checkout's deadline in the queue
    mode: AccessMode = AccessMode.USER_LIMIT  # the current checkout's (the same on retries)


@dataclass
class Waiting:
    """A client request a leader received and has not answered yet (liveness check)."""

    since: float
    leader: Leader
    epoch: Epoch | None
    pauses: int
    step: int


# ------------------------------------------------------------------ the simulation


def stale_queued(op: str, args: dict[str, Any], reply: ClientReply) -> bool:
    """A queued answer to a checkout's ask that carries no `wait` (its last ask, out of time):
    the server queues only an ask with `wait`, so this answers an earlier ask of the same
    request id, sent on a connection the SDK has closed since (a parked copy answered late,
    say). The SDK never reads it; the simulation, which reads late replies from the current
    endpoint (`Simulation.call_reply`), drops it. (Seen at seed 10926.)"""
    return (
        op == "checkout"
        and "wait" not in args
        and reply.ok
        and isinstance(reply.result, QueuedResult)
    )


class Simulation:
    bases = 0  # status state bases drawn (`new_base`)

    def __init__(
        self,
        seed: int,
        *,
        duration: float = 30.0,
        fault_interval: float = 0.7,
        lq: int = 4,
        clients: int = 8,
        slow_tail: bool = True,
        policy: Policy = POLICY,
        noise: bool = True,
    ) -> None:
        self.seed = seed
        self.policy = policy
        self.noise = noise  # 2% of messages lost, 1.5% duplicated (False: none)
        self.rng = random.Random(seed)
        self.duration = duration
        self.fault_interval = fault_interval
        self.slow_tail = slow_tail  # 1% of messages take 50-800 ms (reorders, times out)
        self.step_no = 0
        self.now = 0.0
        self.lq = lq  # the highest LQ any verified copy has granted so far
        self.version = 7
        self.version_lq = lq
        self.queue: list[tuple[float, int, str, Any]] = []
        self._qn = 0
        self.incarnation: dict[str, int] = {}
        # node -> when a fault last touched it or one of its links (crash, restart, cut,
        # a lost, slow or duplicated message, a license change, a promote): the truthfulness
        # check of QUORUM_LOST (`check_truthful`) looks only at undisturbed stretches.
        self.disturbed: dict[str, float] = {}
        # node -> when a fault (not message noise: a crash, restart, cut, heal, promote,
        # pause, license change) last touched it (`check_takeovers`).
        self.upset: dict[str, float] = {}
        self.faults_on = True
        self.cut: set[frozenset[str]] = set()
        self.log: list[str] = []
        self.slots: dict[tuple[ProductKey, Version], tuple[Op, ...]] = {}
        self.slot_holders: dict[tuple[ProductKey, Version], set[str]] = {}
        self.stored_by: dict[str, set[str]] = {}  # handle -> backends that stored it durably
        self.backends = {n: BackendNode(n, MemoryStore(self, n)) for n in BACKENDS}
        for b in self.backends.values():
            b.store.licenses = {KEY: copy_of(b.name, 7, lq)}
            self._start_backend(b)
        self.servers = {n: ServerNode(n) for n in SERVERS}
        for s in self.servers.values():
            self._start_server(s)
        self.clients = [
            SimClient(
                f"c{i}",
                seats=1 + (i % 2),
                wait=QUEUE_WAIT * (i in QUEUEING),
                main=SimChannel("main", MAIN_CALL_TIMEOUTS[i // 2 % 2], index=i % 2),
                hb=SimChannel("hb", CLIENT_CALL_TIMEOUT, index=i % 2),
            )
            for i in range(clients)
        ]
        # Each client host's wall clock, a few milliseconds off the others' (drawn apart from
        # `rng`, which decides the run): where the grid of its heartbeats lies.
        clocks = random.Random(f"{seed}/clocks")
        site = clocks.uniform(0.0, 1.0)
        for c in self.clients:
            c.wall_offset = (
                WALL_START + site + clocks.uniform(-CLIENT_CLOCK_SKEW, CLIENT_CLOCK_SKEW)
            )
        # (server, epoch) -> the queued checkouts (client, request id) in order, from the
        # leader's checkout_queued / checkout_unqueued events: Q1 checks each grant of a
        # queued checkout is to the head of its term's queue.
        self.queues: dict[tuple[str, str], list[tuple[str, str]]] = {}
        # Ground truth for the checks.
        # Grants read by their clients: handle -> (cid, rid, seats) (the administrator picks
        # among them)
        self.acked_grants: dict[str, tuple[str, str, int]] = {}
        self.gone: set[str] = set()  # handles released (acked) or expired by a leader
        # Every grant a server acknowledged, read by its client or not (I7), and the handle
        # each request was acknowledged with (I8: one per request, `check_client_reply`)
        self.sent_grants: dict[str, tuple[str, str]] = {}  # handle -> (cid, rid)
        self.sent_rid_handles: dict[tuple[str, str], str] = {}
        self.last_hb: dict[str, float] = {}  # handle -> time a leader last extended it
        # (server, handle) -> when that leader last received a heartbeat for it while active
        # and holding it (answered or not): it must not expire the handle within a lease.
        self.hb_seen: dict[tuple[str, str], float] = {}
        self.waiting: dict[tuple[str, str, str], Waiting] = {}  # (server, client, request id)
        self.parked: dict[tuple[str, str, str], Waiting] = {}  # taken during a takeover
        self.stats = {
            "checkouts": 0,
            "releases": 0,
            "denied": 0,
            "failovers": 0,
            "crashes": 0,
            "forced": 0,  # promotes with force (operator override)
            "fenced": 0,  # a leader fenced by a newer epoch
            "yielded": 0,  # a promote that gave up: another server was alive as leader
            "pauses": 0,  # a server stopped (SIGSTOP) and resumed later
            "quorum_losses": 0,  # two backends cut from both servers for longer than a lease
            "expiries": 0,  # the license expired on every backend (renewed by an update)
            "kept_alive": 0,  # heartbeats answered QUORUM_LOST (lease kept, not confirmed)
            "renewed": 0,  # heartbeats answered by `Leader.renew` (the server's usual case)
            # Heartbeats (one SDK call each) asked again (an attempt timed out, or NOT_ACTIVE),
            # answered OK `LATE` or more after their first send (`next_heartbeat` then keeps
            # their phase), and given up after the call's timeout.
            "hb_retries": 0,
            "hb_late": 0,
            "hb_given_up": 0,
            "hb_stays": 0,  # NOT_ACTIVE answers after which the SDK stays with that server
            "hb_quorum_lost_checked": 0,  # QUORUM_LOST answers asked of the other endpoint
            # The same for checkouts' asks and releases (calls on the main channel); then
            # checkouts queued already that asked again after a call given up (time left),
            # and releases answered UNKNOWN_HANDLE after a retry (the SDK: released).
            "main_retries": 0,
            "main_given_up": 0,
            "main_stays": 0,
            "main_quorum_lost_checked": 0,
            "queued_timeouts": 0,
            "released_after_retry": 0,
            "stale_queued": 0,  # queued answers to an earlier ask dropped (`stale_queued`)
            "rollbacks": 0,  # a backend restored to an older copy (rollback_backend)
            # QUORUM_LOST answers of an undisturbed server in one term, whose backends the
            # truthfulness check looked at (`check_truthful`)
            "quorum_lost_examined": 0,
            "admin_releases": 0,  # an administrator freed a held handle (tmr admin release)
            "queued": 0,  # checkout answers that were a place in the queue (each ask)
            "queue_grants": 0,  # queued checkouts granted, each to the head of its queue
            "aborted": 0,  # grants a leader aborted (refused above a backend's LQ, in doubt)
            "status_full": 0,  # statuses with every product (the first, after a restart, ...)
            "status_delta": 0,  # statuses with only the products changed since the probe's
            "status_delta_lost": 0,  # delta statuses lost on the way (the next covers them)
            "status_delta_ignored": 0,  # deltas a server could not apply (asks everything)
            "mode_user_limit": 0,  # checkouts granted per access mode
            "mode_station_share": 0,
            "mode_exclusive": 0,
            "station_shared": 0,
            "takeover_aborted": 0,  # of which a new leader aborted (never answered, §6)
            "window_crashes": 0,  # `crash_mid_update`: the leader crashed in the window
            # Client requests a server parked during its takeover (`check_parked`), and how
            # they were answered: served (any answer but NOT_ACTIVE) or NOT_ACTIVE.
            "parked": 0,
            "parked_after_pause": 0,  # by an active server not confirmed since its pause
            "parked_served": 0,
            # Checkouts parked and admitted when the server turned active or was confirmed
            # (`note_parked_admissions`)
            "parked_admitted": 0,
            "parked_not_active": 0,
            # Takeovers: snapshot entries sent as a reference to the backend's own table, of
            # which backends refused (not the table they promised: sent whole later), and
            # PREPAREs asking for tables after promises without them.
            "snapshot_refs": 0,
            "refs_refused": 0,
            "tables_asked": 0,
            # The takeover window faults (`takeover_window`): a backend crashed, cut off or
            # made silent between its versions-only promise and its table (of which it held
            # the highest version alone), or between the table request and its answer to
            # entry 0; a second backend asked for its tables in one term (the first did not
            # answer), and adoptions from promises without the highest version (only a backend
            # that went down held it).
            "window_table": 0,
            "window_sole_holder": 0,
            "window_entry0": 0,
            "tables_reasked": 0,
            "adopted_below_highest": 0,
            "takeovers_checked": 0,  # takeovers `check_takeovers` applied to (at some step)
            "takeover_calm_ms": 0,  # the longest a takeover it applied to went on (ms)
        }
        # Draws of the takeover window faults, apart from the main stream.
        self.wrng = random.Random(f"{seed}/takeover-window")
        self.tables_from: dict[Epoch, set[str]] = {}  # backends asked for tables, per term
        self.quiet_until = 0.0  # no random fault before (after a takeover window fault)
        self.checked_terms: set[tuple[str, float]] = set()  # (server, takeover start)
        # (server, backend) -> when `check_takeovers` last saw the backend down, cut off from
        # the server or not caught up
        self.unfit: dict[tuple[str, str], float] = {}
        self.noisy: dict[str, list[float]] = {}  # server -> its takeover messages lost or slow
        self.prepared: set[tuple[str, Epoch]] = set()  # (backend, epoch) sent a PREPARE
        # A fault script: called after every step (a directed scenario, see tests/sim).
        self.on_step: Callable[[Simulation], None] | None = None
        # handle -> (server, leader, epoch) whose admin release of it was answered ok: that
        # leader must never renew the handle again.
        self.admin_released: dict[str, tuple[str, Leader, Epoch | None]] = {}
        self.revoked: set[str] = set()  # handles an administrator asked to free
        self._admin_n = 0
        self.committed_floor = 0  # the highest TMR ID floor two stores held (I11)
        # (server, client, request id) -> (effective TMR ID, committed floor) at admission
        self.admitted: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.first_admitted: dict[tuple[str, str], tuple[int, int]] = {}  # (client, request id)

    # -------------------------------------------------------------- helpers

    def fail(self, what: str) -> None:
        tail = "\n".join(self.log[-40:])
        raise InvariantViolation(
            f"seed {self.seed} step {self.step_no} t={self.now:.2f}: {what}\n"
            f"--- last events:\n{tail}"
        )

    def note(self, text: str) -> None:
        self.log.append(f"[{self.step_no} t={self.now:.2f}] {text}")

    def disturb(self, *names: str, noise: bool = False) -> None:
        """`noise`: a lost, slow or duplicated message (not a fault for `check_takeovers`)."""
        for name in names:
            self.disturbed[name] = self.now
            if not noise:
                self.upset[name] = max(self.upset.get(name, self.now), self.now)

    def record_slot(self, key: ProductKey, version: Version, ops: tuple[Op, ...], who: str) -> None:
        slot = (key, version)
        have = self.slots.get(slot)
        if have is None:
            self.slots[slot] = ops
        elif have != ops:
            self.fail(f"I2: slot {slot} holds two different ops ({who})")
        holders = self.slot_holders.setdefault(slot, set())
        holders.add(who)
        if len(holders) == 2:  # committed by a majority: now it really happened
            for op in ops:
                if isinstance(op, Release) and op.reason == ReleaseReason.EXPIRE:
                    self.check_expiry(op.handle)

    def _start_backend(self, b: BackendNode) -> None:
        self.disturb(b.name)
        b.acceptor = Acceptor(b.name, b.store.load(), b.store.licenses, new_base=self.new_base)
        b.acceptor.trusted_time = WALL_START + self.now

    # -------------------------------------------------------------- replicated floors

    def new_base(self) -> str:
        """A status state base (`Acceptor.status_token`): unique, and replayable."""
        self.bases += 1
        return f"base{self.bases}"

    def backend_clocks(self) -> None:
        """Each backend's clock guard reports its trusted time (the leader's time floor)."""
        for b in self.backends.values():
            if b.acceptor is not None:
                b.acceptor.trusted_time = WALL_START + self.now

    def note_committed_floor(self) -> None:
        """A floor two stores hold is committed (monotonic: seen once, it stays)."""
        ids = sorted(
            (
                b.store.state.products[KEY].floor.tmr_id
                for b in self.backends.values()
                if KEY in b.store.state.products
            ),
            reverse=True,
        )
        if len(ids) >= 2:
            self.committed_floor = max(self.committed_floor, ids[1])

    def admission_eff(self, leader: Leader) -> int | None:
        """The effective TMR ID an active leader admits a checkout under (None: none)."""
        if leader.role != Role.ACTIVE:
            return None
        return leader._effective(KEY).tmr_id

    def note_admission(
        self, leader: Leader, cid: str, rid: str, tmr_id: int | None, fx: Effects
    ) -> None:
        # Answered at once: refused, or a retry of a grant already held (a new grant waits
        # for its commit, I5), which was admitted when it was first asked for.
        answered = any(r.rid == rid for r in fx.replies)
        slot = (leader.cfg.server_id, cid, rid)
        if tmr_id is not None and not answered and slot not in self.admitted:
            self.admitted[slot] = (tmr_id, self.committed_floor)
            self.first_admitted.setdefault((cid, rid), self.admitted[slot])

    def note_parked_admissions(self, s: ServerNode, fx: Effects) -> None:
        """A server serves the requests it parked once it is active (a takeover's end) or
        confirmed (after a pause): the checkouts among them not answered at once are admitted
        then, under the effective TMR ID and the floor committed at that moment (at their
        arrival it was taking over, and `note_admission` had nothing to record)."""
        assert s.leader is not None
        eff = self.admission_eff(s.leader)
        if eff is None:
            return
        answered = {(r.token, r.rid) for r in fx.replies}
        for slot in self.parked:
            server, cid, rid = slot
            if server == s.name and (cid, rid) not in answered and slot not in self.admitted:
                self.admitted[slot] = (eff, self.committed_floor)
                self.first_admitted.setdefault((cid, rid), self.admitted[slot])
                self.stats["parked_admitted"] += 1

    def check_floor_grant(self, s: ServerNode, reply: ClientReply) -> None:
        # I11: a grant is admitted under an effective TMR ID (whose LQ bounds it) at or above
        # the floor committed then, and no committed grant is answered under one below the
        # committed floor: a backend restored to an older copy never sets the LQ.
        result = reply.result if reply.ok else None
        if not isinstance(result, CheckoutResult):
            return
        admitted = self.admitted.get((s.name, reply.token, reply.rid))
        if admitted is not None and admitted[0] < admitted[1]:
            self.fail(f"I11: {s.name} admitted under #{admitted[0]}, floor #{admitted[1]}")
        # The reply names the TMR ID in force when it was built (admission, or a retry), which
        # may be before a newer floor committed while the grant waited for its own commit: hold
        # it against the floor committed at the admission (floors only rise).
        # A retry answered by a later leader is held against its first admission, by any
        # server (the seats were granted then; the retry grants none).
        first = admitted or self.first_admitted.get((reply.token, reply.rid))
        floor = self.committed_floor if first is None else first[1]
        if 0 < result.tmr_id < floor:  # 0: not available when answered
            self.fail(
                f"I11: {s.name} granted under #{result.tmr_id}, "
                f"below the floor #{floor} committed when it was admitted"
            )

    def rollback_backend(self, b: BackendNode) -> None:
        """An administrator restores an older copy on one backend: its local floor deleted
        (only the copy changes) or its whole state wiped with it (a restored backup)."""
        lic = b.store.licenses[KEY]
        if lic.tmr_id <= 7 or not b.up:
            return
        old = copy_of(b.name, lic.tmr_id - 1, lic.quantity)
        if self.rng.random() < 0.5:
            self.wipe_backend(b)
            if b.up:
                return  # not wiped (another backend is not caught up)
            self._start_backend(b)
        b.store.licenses = {KEY: old}
        assert b.acceptor is not None
        b.acceptor.set_licenses(b.store.licenses)
        self.stats["rollbacks"] += 1
        self.disturb(b.name)
        self.note(f"{b.name}: rolled back to #{old.tmr_id}")

    def _start_server(self, s: ServerNode) -> None:
        self.disturb(s.name)
        cfg = LeaderConfig(
            server_id=s.name,
            backends=BACKENDS,
            backend_keys=BACKEND_KEYS,
            lease=LEASE,
            backend_timeout=BACKEND_TIMEOUT,
            probe_interval=PROBE_INTERVAL,
            refuse_retry=0.5,
            queue_hold=QUEUE_HOLD,
            takeover_hold=TAKEOVER_HOLD,
        )
        ids = random.Random(f"{self.seed}/{s.name}/{s.counter}")  # replayable handle ids
        s.leader = Leader(
            cfg,
            last_counter=s.counter,
            wall_clock=lambda: self.now,
            random_ids=lambda: f"{ids.getrandbits(128):032x}",
        )
        # Odd seeds run the leaders as the service does: ops queue, one pump per turn.
        s.leader.auto_pump = self.seed % 2 == 0
        s.leader.policy = self.policy

    def schedule(self, at: float, kind: str, payload: Any = None) -> None:
        self._qn += 1
        heapq.heappush(self.queue, (at, self._qn, kind, payload))

    def latency(self) -> float:
        r = self.rng.random()
        if r < 0.9:
            return self.rng.uniform(0.0005, 0.005)
        if r < 0.99 or not self.slow_tail:
            return self.rng.uniform(0.005, 0.05)
        return self.rng.uniform(0.05, 0.8)  # a slow path: reorders and times out

    def send(
        self,
        src: str,
        dst: str,
        payload: Any,
        kind: str,
        reply_to: Msg | None = None,
        truth: Status | None = None,
        delay: float | None = None,
    ) -> None:
        """`reply_to`: the request this answers. The answer goes to the incarnation that
        sent the request, as a ZeroMQ ROUTER routes it to that connection: a server that
        restarted since never sees answers to its predecessor's requests (whose message ids
        it may reuse). `delay`: this one takes that long (a silent backend)."""
        if frozenset((src, dst)) in self.cut:
            return
        r = self.rng.random()
        if not self.noise:
            r = 0.5
        if r < 0.02:
            if kind.startswith("peer"):
                self.disturb(src, dst, noise=True)
                self.takeover_noise(src, dst, payload)
            if isinstance(payload, Status) and payload.since is not None:
                self.stats["status_delta_lost"] += 1  # the next one covers its changes
            return  # lost
        to = self.incarnation.get(dst, 0) if reply_to is None else reply_to.src_incarnation
        msg = Msg(src, dst, payload, kind, to, self.incarnation.get(src, 0), truth)
        if delay is None:
            delay = self.latency()
        self.schedule(self.now + delay, "msg", msg)
        if delay > 0.05 and kind.startswith("peer"):
            self.disturb(src, dst, noise=True)  # a slow path: the sender may time out
            self.takeover_noise(src, dst, payload)
        if r > 0.985 and kind.startswith("peer"):
            self.disturb(src, dst, noise=True)
            self.schedule(self.now + self.latency(), "msg", msg)  # duplicated

    def takeover_noise(self, src: str, dst: str, payload: Any) -> None:
        """A takeover's message (PREPARE, PROMISE, snapshot or its answer) lost or slow: the
        takeover may take one backend_timeout and probe interval longer (`check_takeovers`)."""
        server = src if src in self.servers else dst
        leader = self.servers[server].leader if server in self.servers else None
        takeover = isinstance(payload, (Prepare, Promise, Snapshot, Accepted))
        if takeover and leader is not None and leader.role == Role.TAKEOVER:
            self.noisy.setdefault(server, []).append(self.now)

    # -------------------------------------------------------------- effects of a leader

    def apply_effects(self, s: ServerNode, fx: Effects) -> None:
        assert s.leader is not None
        if fx.persist_counter is not None:
            if fx.persist_counter <= s.counter:
                self.fail(f"I6: {s.name} reuses epoch counter {fx.persist_counter}")
            s.counter = fx.persist_counter
            epoch = Epoch(fx.persist_counter, s.name)
            for other in self.servers.values():
                if epoch in other.terms:
                    self.fail(f"I6: epoch {epoch} used twice")
            s.terms.append(epoch)
        for ev in fx.events:
            self.note(f"{s.name}: {ev}")
            if ev["event"] == "fenced":
                self.stats["fenced"] += 1
            elif ev["event"] == "promote_yielded":
                self.stats["yielded"] += 1
            elif ev["event"] == "grants_aborted":
                self.stats["aborted"] += len(ev["handles"])
                if ev.get("takeover"):
                    self.stats["takeover_aborted"] += len(ev["handles"])
            if ev["event"] == "adopted":
                self.check_adoption(s)
                self.note_adopted(s, ev)
            if ev["event"] == "active":
                self.check_active(s)
            if ev["event"] in ("handle_expired", "handle_released"):
                self.gone.add(ev["handle"])  # its client asked; the release may commit
            if ev["event"] == "handle_expired":
                self.check_kept(s, ev["handle"])
            if ev["event"] in ("checkout_queued", "checkout_unqueued"):
                self.check_queue_order(s, ev)
            if ev["event"] == "parked_answered":
                self.note_parked_admissions(s, fx)
        for dst, msg in fx.send:
            self.send(s.name, dst, msg, "peer_req")
        for reply in fx.replies:
            pw = self.parked.pop((s.name, reply.token, reply.rid), None)
            if pw is not None:
                not_active = reply.error == ErrorCode.NOT_ACTIVE
                self.stats["parked_not_active" if not_active else "parked_served"] += 1
                # A retry of the same request parked again while this copy waited (answered
                # NOT_ACTIVE after the hold): it stays parked, from its own arrival.
                again = self.parked_at(s, reply.token, reply.rid)
                if again:
                    self.parked[(s.name, reply.token, reply.rid)] = replace(pw, since=min(again))
            w = self.waiting.pop((s.name, reply.token, reply.rid), None)
            if pw is not None and w is None and reply.error == ErrorCode.QUORUM_LOST:
                # Served from the parking: as true as any QUORUM_LOST of this term
                term = Waiting(pw.since, s.leader, s.leader.epoch, pw.pauses, pw.step)
                self.check_truthful(s, term, reply)
            if w is not None and reply.error == ErrorCode.QUORUM_LOST:
                self.check_truthful(s, w, reply)
            if reply.token == ADMIN:
                self.admin_reply(s, reply)
                continue
            self.check_client_reply(s, reply)
            self.check_floor_grant(s, reply)
            self.send(s.name, reply.token, reply, "client_rep")

    # -------------------------------------------------------------- invariant checks

    def durable_holders(self, handle: str) -> int:
        return len(self.stored_by.get(handle, ()))

    def check_client_reply(self, s: ServerNode, reply: ClientReply) -> None:
        # I5: a grant is acknowledged only once two backends hold it durably.
        if reply.ok and isinstance(reply.result, CheckoutResult):
            h = reply.result.handle
            if self.durable_holders(h) < 2:
                self.fail(f"I5: {s.name} acknowledged {h} with fewer than 2 durable copies")
            # I8 and I7 over every grant a server acknowledged, whether its client reads the
            # answer or not (a call given up, or moved to the other endpoint, does not).
            request = (str(reply.token), reply.rid)
            prev = self.sent_rid_handles.setdefault(request, h)
            if prev != h:
                self.fail(f"I8: {s.name} acknowledged request {request} with {h}, also {prev}")
            self.sent_grants[h] = request

    def check_active(self, s: ServerNode) -> None:
        # I7: every acknowledged, not released/expired grant is in the table of a leader that
        # starts serving. (A takeover may adopt promises that are stale by then, a quorum
        # having promised a newer epoch since: it cannot serve, its first snapshot fences it.)
        assert s.leader is not None
        epoch = s.leader.epoch
        newer = sum(
            1
            for b in self.backends.values()
            if epoch is not None and b.store.state.promised > epoch
        )
        if newer >= 2:
            # Deposed before it activated (paused mid-takeover, the replies to its snapshots
            # queued meanwhile): a quorum promised a newer epoch, so nothing it proposes can
            # commit and it serves nothing unconfirmed (its next request is rejected: fenced).
            return
        p = s.leader._products.get(KEY)
        table = p.handles if p else {}
        # A request parked during the takeover is served in the input that activates
        # (`tmr.replication.parking`): a release among them has taken its handle out of the
        # table by now, into `releasing` (adopted, its release not committed yet).
        releasing = p.releasing if p else {}
        for h in self.sent_grants:
            if h not in self.gone and h not in table and h not in releasing:
                self.fail(f"I7: {s.name} serves a table without acknowledged handle {h}")

    def check_adoption(self, s: ServerNode) -> None:
        assert s.leader is not None
        # I10: only caught-up promises were counted (bootstrap: all fresh).
        promises = [b.promise for b in s.leader.backends if b.promise is not None]
        counted = [p for p in promises if p.caught_up]
        if len(counted) < 2 and len(promises) < 3:
            self.fail("I10: adopted without two caught-up promises")

    def check_kept(self, s: ServerNode, handle: str) -> None:
        # Liveness: a handle whose heartbeats keep arriving survives a quorum loss of any
        # length (its leader keeps the lease even when it cannot confirm it).
        seen = self.hb_seen.get((s.name, handle))
        if seen is not None and self.now < seen + LEASE - 1e-9:
            self.fail(f"liveness: {s.name} expired {handle}, a heartbeat arrived at {seen:.2f}")

    def check_answers(self) -> None:
        """Liveness: a leader that stays active (same term, not paused) answers every
        request within ANSWER_BOUND of receiving it: with a commit, the exact error, or
        QUORUM_LOST, never silence."""
        for (server, cid, rid), w in list(self.waiting.items()):
            if self.now - w.since <= ANSWER_BOUND:
                continue
            del self.waiting[(server, cid, rid)]
            s = self.servers[server]
            if (
                s.leader is w.leader
                and s.leader.epoch == w.epoch
                and s.leader.role == Role.ACTIVE
                and s.pauses == w.pauses
                and s.paused_until is None
            ):
                self.fail(
                    f"liveness: {server} left request {rid} of {cid} (received at step "
                    f"{w.step}, t={w.since:.2f}) unanswered for {self.now - w.since:.2f}s"
                )

    @staticmethod
    def parked_at(s: ServerNode, cid: str, rid: str) -> list[float]:
        """When the copies of request `rid` of `cid` that `s`'s leader keeps parked arrived."""
        assert s.leader is not None
        return [p.at for p in s.leader._parking.waiting if p.token == cid and p.rid == rid]

    def check_parked(self) -> None:
        """Liveness of parking (`tmr.replication.parking`): a request a server took while
        taking over is answered NOT_ACTIVE within TAKEOVER_HOLD (and one tick) while the
        takeover goes on, and handed to the leader the moment it ends: answered at once in
        any role but ACTIVE; once active, within ANSWER_BOUND like any request
        (`check_answers`). A server that crashed or was paused meanwhile is exempt (its
        clients time out)."""
        for key, w in list(self.parked.items()):
            s = self.servers[key[0]]
            if s.leader is not w.leader or s.pauses != w.pauses:
                del self.parked[key]
                continue
            if s.paused_until is not None:
                continue
            role = s.leader.role
            waits = bool(self.parked_at(s, key[1], key[2]))
            if waits:  # taking over, or active and not confirmed since a pause
                if self.now - w.since > TAKEOVER_HOLD + TICK + 1e-9:
                    self.fail(
                        f"parking: {key[0]} kept request {key[2]} of {key[1]} for "
                        f"{self.now - w.since:.2f}s while taking over (hold {TAKEOVER_HOLD}s)"
                    )
            elif role == Role.TAKEOVER:
                self.fail(f"parking: {key[0]} lost request {key[2]} of {key[1]}")
            elif role == Role.ACTIVE:
                del self.parked[key]
                later = Waiting(self.now, s.leader, s.leader.epoch, s.pauses, self.step_no)
                self.waiting.setdefault(key, later)
            else:
                self.fail(
                    f"parking: {key[0]} left request {key[2]} of {key[1]} (parked at "
                    f"t={w.since:.2f}) unanswered after its takeover ended ({role.value})"
                )

    def check_truthful(self, s: ServerNode, w: Waiting, reply: ClientReply) -> None:
        """Liveness: QUORUM_LOST only when it is true. An active, unpaused leader in one term
        that had two good backends (up, caught up, a copy valid under its own floors and the
        leader's) must serve, not answer QUORUM_LOST, when nothing disturbed either server or
        those backends since well before the request (no crash, restart, cut, promote,
        license change, lost or slow message). Nothing is exempt: a grant above a lagging
        backend's LQ that the other backend does not acknowledge is aborted, and so is one a
        new leader adopts that no promise knows committed (docs/design.md §6)."""
        if s.leader is not w.leader or s.leader.epoch != w.epoch or s.pauses != w.pauses:
            return
        start = w.since - 2 * (BACKEND_TIMEOUT + PROBE_INTERVAL)
        if any(self.disturbed.get(n, float("-inf")) >= start for n in SERVERS):
            return
        self.stats["quorum_lost_examined"] += 1
        p = s.leader._products.get(KEY)
        proposed = p.floor.tmr_id if p is not None else 0
        good = [
            b.name
            for b in self.backends.values()
            if b.up
            and frozenset((s.name, b.name)) not in self.cut
            and self.disturbed.get(b.name, float("-inf")) < start
            and b.store.state.caught_up
            and b.acceptor is not None
            and b.acceptor.reported_licenses()[KEY].valid  # under its own floors too
            and b.store.licenses[KEY].tmr_id >= self.committed_floor
            and not s.leader._below_floor(s.leader._by_name[b.name], KEY)  # the leader's
            and b.store.licenses[KEY].tmr_id >= proposed  # and a floor it is committing
        ]
        if len(good) < 2:
            return
        self.fail(
            f"liveness: {s.name} answered QUORUM_LOST to {reply.rid} (received at step "
            f"{w.step}, t={w.since:.2f}) while {good} were good and undisturbed since "
            f"t={start:.2f}: {reply.message}"
        )

    def check_queue_order(self, s: ServerNode, ev: dict[str, Any]) -> None:
        """Q1: within one term, queued checkouts of the license are granted in queue order
        (the one granted is the head of the queue of that leader's term)."""
        assert s.leader is not None
        term = (s.name, str(s.leader.epoch))
        q = self.queues.setdefault(term, [])
        place = (ev["client_id"], ev["rid"])
        if ev["event"] == "checkout_queued":
            if place in q:
                self.fail(f"Q1: {s.name} queued {place} twice in one term")
            q.append(place)
            if ev["position"] != len(q):
                self.fail(f"Q1: {s.name} gave {place} position {ev['position']}, not {len(q)}")
            return
        if place not in q:
            self.fail(f"Q1: {s.name} unqueued {place}, which it never queued in this term")
        if ev["why"] == "granted":
            if q[0] != place:
                self.fail(f"Q1: {s.name} granted queued {place} ahead of {q[0]} ({q})")
            self.stats["queue_grants"] += 1
        q.remove(place)

    def check_expiry(self, handle: str) -> None:
        # I9: no handle expires before its lease from its last heartbeat (or takeover).
        hb = self.last_hb.get(handle)
        if hb is not None and self.now < hb + LEASE - 1e-9:
            self.fail(f"I9: {handle} expired at {self.now:.2f}, heartbeat at {hb:.2f}")
        self.gone.add(handle)

    def certainly_held(self) -> list[HandleRecord]:
        """The handles clients certainly hold, as records (their mode, key, user and host)."""
        out = []
        for c in self.clients:
            h = c.held
            if h and not h.revoked and self.now < h.lease_ref + LEASE:
                user, host = self.identity(c.cid)
                out.append(
                    HandleRecord(h.handle, FIRM, PRODUCT, h.seats, c.cid, "", 0.0,
                                 self.key_of(c.cid), user, host, 0, h.mode)
                )  # fmt: skip
        return out

    def check_seats(self) -> None:
        # I1: the seats clients certainly hold, counted under their access modes (station
        # shares of one station once), never exceed LQ.
        records = self.certainly_held()
        held = seat_count(records)
        if held < sum(r.seats for r in records):
            self.stats["station_shared"] += 1  # steps at which station shares saved seats
        # X1: a handle certainly held exclusively is the only handle certainly held.
        if len(records) > 1 and any(r.mode is AccessMode.EXCLUSIVE for r in records):
            self.fail(f"X1: an exclusive handle is held with others: {records}")
        if held > self.lq:
            desc = [
                (c.cid, c.held.handle, c.held.seats, round(c.held.lease_ref, 2))
                for c in self.clients
                if c.held
            ]
            self.fail(f"I1: clients certainly hold {held} seats > LQ {self.lq}: {desc}")
        self.check_policy()

    def check_policy(self) -> None:
        """P1-P3: the policy's rules hold for the seats clients certainly hold, across every
        failover (rules are checked by each leader against the replicated table)."""
        if self.policy is EMPTY_POLICY:
            return
        records = self.certainly_held()
        for r in records:
            if r.host == "kiosk":
                self.fail(f"P1: {r.client_id} on host kiosk holds {r.handle} (exclude host:kiosk)")
        u0 = seat_count(r for r in records if r.user == "u0")
        if u0 > MAX_U0:
            self.fail(f"P2: user u0 certainly holds {u0} seats > max {MAX_U0}")
        others = seat_count(r for r in records if r.user != "u1")
        if others > self.lq - RESERVE_U1:
            self.fail(
                f"P3: users other than u1 certainly hold {others} seats > LQ {self.lq} - "
                f"reserve {RESERVE_U1}"
            )

    # -------------------------------------------------------------- delivery

    def deliver(self, m: Msg) -> None:
        if frozenset((m.src, m.dst)) in self.cut:
            return
        if m.incarnation != self.incarnation.get(m.dst, 0):
            return
        if m.kind == "peer_req":
            b = self.backends[m.dst]
            if b.acceptor is None:
                return
            window = self.takeover_window(b, m)
            if window in ("crash", "cut"):
                return  # the request is lost with the backend or the link
            self.count_takeover(m.dst, m.payload)
            step: Step = b.acceptor.handle(m.payload, self.now)
            if step.write is not None:
                if self.faults_on and self.rng.random() < 0.01:
                    self.crash_backend(b, "crash during fsync")
                    return
                b.store.commit(step.write)
            b.acceptor.committed(step)
            truth: Status | None = None
            if isinstance(step.reply, Status):
                whole = b.acceptor.handle(Probe(0), self.now).reply  # everything, as of now
                assert isinstance(whole, Status)
                truth = whole
                self.stats["status_full" if step.reply.since is None else "status_delta"] += 1
            delay = None
            if window == "silent":  # it answers after the leader gave up waiting
                delay = self.wrng.uniform(BACKEND_TIMEOUT + 0.05, BACKEND_TIMEOUT + 1.0)
            self.send(m.dst, m.src, step.reply, "peer_rep", reply_to=m, truth=truth, delay=delay)
            if window == "after" or self.sole_holder_promised(b, m, step.reply):
                # It answered (the promise or the table is on its way) and goes down.
                self.crash_backend(b, "crash in the takeover window, after its answer")
                back = self.now + self.wrng.uniform(*WINDOW_BACK)
                if window != "after":  # the sole holder: the takeover must not wait for it
                    self.quiet_until = max(self.quiet_until, back)
                self.schedule(back, "restart", b.name)
        elif m.kind == "peer_rep":
            s = self.servers[m.dst]
            if s.leader is None or self.paused(s, m):
                return
            if isinstance(m.payload, Accepted):
                self.stats["refs_refused"] += sum(
                    1 for r in m.payload.results.values() if "by reference" in r.reason
                )
            self.apply_effects(s, s.leader.on_reply(m.src, m.payload, self.now))
            if m.truth is not None:
                self.check_status(s.leader, m.src, m.payload, m.truth)
            self.maybe_pump(s)
        elif m.kind == "client_req":
            s = self.servers[m.dst]
            if s.leader is None or self.paused(s, m):
                return
            w = Waiting(self.now, s.leader, s.leader.epoch, s.pauses, self.step_no)
            rid = m.payload["rid"]
            active = s.leader.role == Role.ACTIVE
            fx = self.serve(s.leader, m.src, m.payload)
            if fx.parked:
                # Held to the hold by `check_parked`; its answer bound (`check_answers`) starts
                # when the parking hands it to the leader, as a takeover's parked request's
                # does: the leader counts its wait for a commit from then.
                self.parked.setdefault((s.name, m.src, rid), w)
                self.stats["parked"] += 1
                if active:  # resumed from a pause, not confirmed yet
                    self.stats["parked_after_pause"] += 1
            elif active:
                self.waiting.setdefault((s.name, m.src, rid), w)
            self.apply_effects(s, fx)
            self.maybe_pump(s)
        else:
            self.client_reply(m.dst, m.src, m.payload)

    def count_takeover(self, dst: str, req: PeerRequest) -> None:
        if isinstance(req, Snapshot):
            self.stats["snapshot_refs"] += sum(1 for e in req.entries if e.base is not None)
        elif isinstance(req, Prepare):
            seen = (dst, req.epoch) in self.prepared
            self.stats["tables_asked"] += seen and req.tables
            self.prepared.add((dst, req.epoch))
            if seen and req.tables:
                asked = self.tables_from.setdefault(req.epoch, set())
                asked.add(dst)
                self.stats["tables_reasked"] += len(asked) == 2

    # -------------------------------------------------------------- takeover window faults

    def taking_over(self, server: str, epoch: Epoch, phase: Phase) -> Leader | None:
        """The leader of `server` if it is taking over in `epoch`, at `phase` (a request it
        sent is current, not a duplicate of one it no longer waits for)."""
        s = self.servers.get(server)
        leader = s.leader if s is not None else None
        if leader is None or leader.role != Role.TAKEOVER or leader.epoch != epoch:
            return None
        return leader if leader._phase == phase else None

    def takeover_window(self, b: BackendNode, m: Msg) -> str | None:
        """A fault in a window of the takeover (docs/design.md §5), decided as a request
        arrives at backend `b`: the table request (PREPARE with tables, after its
        versions-only promise) or the takeover's entry 0 (a snapshot at seq 0, by reference
        or whole). The backend crashes (the request is lost; it restarts after WINDOW_BACK),
        its link to the server is cut (healed after WINDOW_BACK), it answers later than
        backend_timeout ("silent"), or, for entry 0, it answers and then crashes ("after").
        Returns what happened (None: nothing)."""
        req = m.payload
        if not self.faults_on:
            return None
        if isinstance(req, Prepare):
            asked = req.tables and (b.name, req.epoch) in self.prepared
            leader = self.taking_over(m.src, req.epoch, Phase.PREPARE)
            if not asked or leader is None or b.name not in leader._tables_from:
                return None
            if self.wrng.random() >= WINDOW_TABLE:
                return None
            kind = self.wrng.choice(("crash", "cut", "silent", "after"))
            # "after": it sends its table, then goes down before its answer to entry 0.
            stat = "window_entry0" if kind == "after" else "window_table"
        elif isinstance(req, Snapshot):
            if not any(e.seq == 0 for e in req.entries):
                return None
            if self.taking_over(m.src, req.epoch, Phase.SYNC) is None:
                return None
            if self.wrng.random() >= WINDOW_ENTRY0:
                return None
            stat, kind = "window_entry0", self.wrng.choice(("crash", "cut", "silent", "after"))
        else:
            return None
        self.stats[stat] += 1
        self.note(f"{b.name}: takeover window fault ({stat}): {kind}")
        back = self.now + self.wrng.uniform(*WINDOW_BACK)
        if stat == "window_table" and kind in ("crash", "cut"):
            self.quiet_until = max(self.quiet_until, back)
        if kind == "crash":
            self.crash_backend(b, "crash in the takeover window")
            self.schedule(back, "restart", b.name)
        elif kind == "cut":
            link = frozenset((m.src, b.name))
            if link not in self.cut:
                self.cut.add(link)
                self.schedule(back, "heal", {link})
            self.disturb(*link)
        else:
            self.disturb(b.name)
        return kind

    def sole_holder_promised(self, b: BackendNode, m: Msg, reply: Any) -> bool:
        """Just after backend `b` sent its versions-only promise holding the highest version
        alone (the others' stores are below it): sometimes it goes down now, before the
        leader asks it for its table (`Leader._try_adopt` then adopts from the others)."""
        req = m.payload
        if not (
            self.faults_on
            and isinstance(req, Prepare)
            and not req.tables
            and isinstance(reply, Promise)
            and not reply.tables
            and KEY in reply.logs
            and self.taking_over(m.src, req.epoch, Phase.PREPARE) is not None
        ):
            return False
        version = reply.logs[KEY][0]
        others = [
            o.store.state.products.get(KEY, ProductLog()).version
            for o in self.backends.values()
            if o is not b
        ]
        if not all(v < version for v in others) or self.wrng.random() >= WINDOW_SOLE:
            return False
        self.stats["window_sole_holder"] += 1
        self.stats["window_table"] += 1
        return True

    def note_adopted(self, s: ServerNode, ev: dict[str, Any]) -> None:
        """Counts adoptions from promises without the highest version promised (fix (b):
        only a backend that went down held it)."""
        assert s.leader is not None
        versions = {
            b.name: b.promise.logs[KEY][0]
            for b in s.leader.backends
            if b.promise is not None and b.promise.caught_up and KEY in b.promise.logs
        }
        adopted = [v for name, v in versions.items() if name in ev["from"]]
        if adopted and max(versions.values()) > max(adopted):
            self.stats["adopted_below_highest"] += 1

    def check_takeovers(self) -> None:
        """Liveness: a server taking over (not paused) becomes active, or gives up (fenced by
        a newer term, or yielding to a live leader), within TAKEOVER_BOUND of the latest of:
        its promote, the last fault that touched it, and the last fault that touched two
        caught-up backends that are up and that it reaches, or the time they became so
        (message noise is no fault: each takeover message lost or slow since then adds a
        backend_timeout and a probe interval)."""
        for s in self.servers.values():
            leader = s.leader
            if leader is None or leader.role != Role.TAKEOVER or s.paused_until is not None:
                continue
            calm = []
            for b in self.backends.values():
                good = b.up and frozenset((s.name, b.name)) not in self.cut
                if not (good and b.store.state.caught_up):
                    self.unfit[(s.name, b.name)] = self.now  # it counts from when it is good
                    continue
                calm.append(
                    max(
                        self.upset.get(b.name, float("-inf")),
                        self.unfit.get((s.name, b.name), float("-inf")),
                    )
                )
            calm.sort()
            if len(calm) < 2:
                continue
            since = max(leader._takeover_started, self.upset.get(s.name, float("-inf")), calm[1])
            if self.now < since:
                continue  # paused until then
            term = (s.name, leader._takeover_started)
            if term not in self.checked_terms:
                self.checked_terms.add(term)
                self.stats["takeovers_checked"] += 1
            waited = round(1000 * (self.now - since))
            self.stats["takeover_calm_ms"] = max(self.stats["takeover_calm_ms"], waited)
            lost = sum(1 for t in self.noisy.get(s.name, ()) if t >= since)
            if self.now - since > TAKEOVER_BOUND + lost * (BACKEND_TIMEOUT + PROBE_INTERVAL):
                self.fail(
                    f"liveness: {s.name}'s takeover (promoted at t="
                    f"{leader._takeover_started:.2f}, {leader.epoch}) stalled: not active "
                    f"{self.now - since:.2f}s after two reachable caught-up backends and "
                    f"the server were left alone (since t={since:.2f}; {lost} of its "
                    "messages lost or slow)"
                )

    def check_status(self, leader: Leader, backend: str, status: Status, truth: Status) -> None:
        """P1: a server that holds a backend's status state at a token holds exactly what the
        backend reported at that token (a delta merged on what it held is the whole)."""
        b = next(x for x in leader.backends if x.name == backend)
        if status.since is not None and b.state != status.state:
            self.stats["status_delta_ignored"] += 1  # from a state the server does not hold
        if b.state is None or b.state != status.state:
            return
        raised = {k: f for k, f in truth.floors.items() if f != NO_FLOOR}
        if b.versions != truth.versions or b.licenses != truth.licenses or b.floors != raised:
            self.fail(
                f"P1: {leader.cfg.server_id} holds {backend}'s state {b.state} as "
                f"{b.versions} {b.licenses} {b.floors}; it was {truth.versions} "
                f"{truth.licenses} {raised}"
            )

    def paused(self, s: ServerNode, m: Msg) -> bool:
        """A stopped server: the message waits in its socket until it resumes."""
        if s.paused_until is None:
            return False
        if self.now >= s.paused_until:
            self.note(f"{s.name}: resumed (clock jumps)")
            s.paused_until = None
            return False
        self.schedule(s.paused_until, "msg", m)
        return True

    def maybe_pump(self, s: ServerNode) -> None:
        """A service loop turn ends: pump, unless a burst is still arriving (same instant)."""
        if s.leader is None or s.leader.auto_pump:
            return
        if self.queue and self.queue[0][0] <= self.now + 0.0005 and self.rng.random() < 0.7:
            return  # more of the burst first; a later delivery or the tick pumps
        self.apply_effects(s, s.leader.pump(self.now))

    def serve(self, leader: Leader, cid: str, req: dict[str, Any]) -> Effects:
        op = req["op"]
        key = self.key_of(cid)  # each station has its own CURVE key: it owns its handles
        if op == "checkout":
            before = self.admission_eff(leader)
            user, host = self.identity(cid)
            fx = leader.checkout(
                cid,
                req["rid"],
                cid,
                FIRM,
                PRODUCT,
                req["seats"],
                self.now,
                owner=key,
                user=user,
                host=host,
                wait=req.get("wait"),
                mode=req.get("mode", AccessMode.USER_LIMIT),
            )
            self.note_admission(leader, cid, req["rid"], before, fx)
            if req.get("wait") is None and any(
                r.rid == req["rid"] and isinstance(r.result, QueuedResult) for r in fx.replies
            ):  # (the clients drop such an answer as an earlier ask's: `stale_queued`)
                self.fail(f"{leader.cfg.server_id} queued {req['rid']} of {cid}, without wait")
            return fx
        if op == "heartbeat":
            if leader.role == Role.ACTIVE and req["handle"] in leader._leases:
                self.hb_seen[(leader.cfg.server_id, req["handle"])] = self.now
            fx = self.heartbeat(leader, cid, req["rid"], req["handle"], key)
            if fx.replies and fx.replies[0].ok:
                self.last_hb[req["handle"]] = self.now
                freed = self.admin_released.get(req["handle"])
                if freed is not None and freed[1] is leader and freed[2] == leader.epoch:
                    self.fail(f"admin: {freed[0]} renewed {req['handle']} after freeing it")
            return fx
        return leader.release(cid, req["rid"], cid, req["handle"], self.now, owner=key)

    def heartbeat(self, leader: Leader, cid: str, rid: str, handle: str, key: str) -> Effects:
        """A heartbeat as the server serves it (`ServerService.on_client`): the usual case by
        `Leader.renew`, answered with `Leader.renewed`; any other by `Leader.heartbeat`."""
        if leader.renew(handle, cid, self.now, owner=key):
            self.stats["renewed"] += 1
            fx = Effects()
            fx.replies.append(ClientReply(cid, rid, leader.renewed))
            return fx
        return leader.heartbeat(cid, rid, cid, handle, self.now, owner=key)

    # -------------------------------------------------------------- clients

    def identity(self, cid: str) -> tuple[str, str]:
        """The user and host client `cid` says it is (what `POLICY` rules on)."""
        i = int(cid[1:]) % STATIONS
        host = "kiosk" if i == 5 else f"h{i % 2}"
        return f"u{i % 3}", host

    @staticmethod
    def key_of(cid: str) -> str:
        """The CURVE key of client `cid`: one per station (c6 shares c0's, c7 c1's)."""
        return f"key-c{int(cid[1:]) % STATIONS}"

    def client_by_id(self, cid: str) -> SimClient:
        return self.clients[int(cid[1:])]

    def client_send(self, c: SimClient, ch: SimChannel) -> None:
        """An attempt of the call in flight on channel `ch`: its request to the channel's
        endpoint."""
        self.send(c.cid, SERVERS[ch.index], {"op": ch.op, "rid": ch.rid, **ch.args}, "client_req")

    def new_rid(self, c: SimClient) -> str:
        c.rid_n += 1
        return f"{c.cid}-r{c.rid_n}"

    def client_act(self, c: SimClient) -> None:
        now = self.now
        if c.held and now >= c.held.lease_ref + LEASE and not c.kept:
            # (While the server answers QUORUM_LOST, lease kept, the client keeps the handle
            # and heartbeats on; it is not certainly held, I1 does not count it.)
            self.note(f"{c.cid}: lease of {c.held.handle} ran out client-side")
            c.held = None
            c.hb.rid = ""  # (its heartbeat's answer, if one comes, is ignored)
            if c.state == "holding":
                c.state = "idle"
        if c.state == "idle" and now >= c.next_action:
            # `Client.checkout`: one request id for every ask and every attempt of each
            c.state = "checkout"
            c.ask_at = None
            c.position = 0
            c.rid = self.new_rid(c)
            c.first_sent = now
            c.wait_until = now + c.wait
            c.mode = self.rng.choices(MODES, MODE_WEIGHTS)[0]
            self.checkout_ask(c)
        elif c.state == "checkout" and c.ask_at is not None:
            if now >= c.ask_at:  # queued: the pause before the next ask is over
                self.checkout_ask(c)
        elif c.state in ("checkout", "release") and c.main.rid:
            self.call_tick(c, c.main)
        elif c.state == "holding" and c.held:
            if now >= c.next_action:
                # `Handle.release`: one call on the main channel
                c.state = "release"
                c.release_handle = c.held.handle
                c.held = None  # not certainly held from the release call on
                # No more heartbeats for it; one in flight is dropped (the SDK lets it end on
                # its channel, where its answer changes nothing for the released handle).
                c.hb.rid = ""
                c.rid = self.new_rid(c)
                self.call(c, c.main, c.rid, "release", handle=c.release_handle)
            elif not c.hb.rid and now >= c.hb_next:
                self.call(c, c.hb, self.new_rid(c), "heartbeat", handle=c.held.handle)
            elif c.hb.rid:
                self.call_tick(c, c.hb)

    # A call on one of a client's channels, as `tmr.client._channel.Channel.call` runs it (with
    # the SDK's own `RetrySchedule`), on the simulation's ticks: a new attempt goes out at the
    # first tick at or after its time. The heartbeat channel's calls end in
    # `heartbeat_answered` or, given up, a new heartbeat at once; the main channel's in
    # `checkout_answered` and `release_answered`, or `call_timed_out`.

    def call(self, c: SimClient, ch: SimChannel, rid: str, op: str, **args: Any) -> None:
        """A call starts on `ch`: its first attempt, to the endpoint the channel is on."""
        ch.rid, ch.op, ch.args = rid, op, args
        ch.sent = ch.attempt = self.now
        ch.wait = CLIENT_TIMEOUT
        ch.retry = None
        ch.resend_at = None
        ch.quorum_lost = False
        ch.attempts = 1
        self.client_send(c, ch)

    def call_tick(self, c: SimClient, ch: SimChannel) -> None:
        """A tick of the call in flight on `ch`: the call's timeout, an attempt that timed out
        (the next endpoint, a longer attempt), the end of a pause after NOT_ACTIVE."""
        now = self.now
        deadline = ch.sent + ch.timeout
        paused = ch.resend_at is not None
        if ch.resend_at is not None:  # (`paused`, narrowed for the type checker)
            if now < min(ch.resend_at, deadline):
                return
            ch.resend_at = None
            if now < deadline:
                self.call_attempt(c, ch)
                return
        elif now - ch.attempt <= min(ch.wait, deadline - ch.attempt):
            return
        if ch.quorum_lost:  # the other endpoint did not answer: the QUORUM_LOST stands
            self.call_quorum_lost(c, ch)
            return
        if not paused:
            # An attempt that timed out moves the channel to the next endpoint, also when the
            # call's time ran out with it (`Channel.call` looks at the deadline after); a
            # pause that ran into the deadline does not.
            retry = self.call_schedule(ch)
            retry.timed_out()
            ch.index, ch.wait = retry.index, retry.attempt
        if now >= deadline:  # `Timeout`
            self.stats[f"{ch.name}_given_up"] += 1
            ch.rid = ""
            self.call_timed_out(c, ch)
        else:
            self.call_attempt(c, ch)

    @staticmethod
    def call_schedule(ch: SimChannel) -> RetrySchedule:
        """The call's `RetrySchedule`, made at its first failed attempt (as `Channel.call`)."""
        if ch.retry is None:
            ch.retry = RetrySchedule(len(SERVERS), ch.index, ch.wait)
        return ch.retry

    def call_quorum_lost(self, c: SimClient, ch: SimChannel) -> None:
        """The QUORUM_LOST the call checked on the other endpoint stands (no answer there, or
        NOT_ACTIVE)."""
        self.call_answered(c, ch, ClientReply(c.cid, ch.rid, None, ErrorCode.QUORUM_LOST))

    def call_attempt(self, c: SimClient, ch: SimChannel) -> None:
        """The same request again, to the channel's endpoint."""
        ch.attempt = self.now
        ch.attempts += 1
        self.stats[f"{ch.name}_retries"] += 1
        self.client_send(c, ch)

    def call_reply(self, c: SimClient, ch: SimChannel, server: str, reply: ClientReply) -> None:
        """A reply to the call in flight on `ch`. Only a reply that comes while an attempt is
        in flight, from its endpoint, is read: the SDK closes a connection it leaves, and
        reads nothing during a pause (before the next attempt). (Simpler than the SDK in two
        cases: a reply of an earlier attempt on the same endpoint whose connection the SDK had
        closed is read, except a queued answer that cannot be the current ask's
        (`stale_queued`), and one that arrives during a pause on a connection the SDK keeps, a
        stay, is dropped, where the SDK reads it after sending the next attempt.)"""
        now = self.now
        if server != SERVERS[ch.index] or ch.resend_at is not None:
            return
        if stale_queued(ch.op, ch.args, reply):
            self.stats["stale_queued"] += 1
            return
        if reply.error == ErrorCode.NOT_ACTIVE:
            if ch.quorum_lost:
                self.call_quorum_lost(c, ch)
                return
            retry = self.call_schedule(ch)
            pause = retry.not_active(now - ch.attempt)
            self.stats[f"{ch.name}_stays"] += retry.staying
            ch.index, ch.wait = retry.index, retry.attempt
            ch.resend_at = now + pause
            return
        if reply.error == ErrorCode.QUORUM_LOST and not ch.quorum_lost:
            # The SDK asks the next endpoint once before it believes a QUORUM_LOST.
            self.stats[f"{ch.name}_quorum_lost_checked"] += 1
            ch.quorum_lost = True
            ch.index = (ch.index + 1) % len(SERVERS)
            ch.resend_at = now
            return
        self.call_answered(c, ch, reply)

    def call_answered(self, c: SimClient, ch: SimChannel, reply: ClientReply) -> None:
        """The call on `ch` returns `reply` (an answer other than NOT_ACTIVE)."""
        ch.rid = ""
        ch.resend_at = None
        if ch is c.hb:
            self.heartbeat_answered(c, reply)
        elif c.state == "checkout":
            self.checkout_answered(c, reply)
        else:
            self.release_answered(c, reply)

    def call_timed_out(self, c: SimClient, ch: SimChannel) -> None:
        """The call on `ch` raised `Timeout` (its deadline passed with no answer): a heartbeat
        is sent anew at once (`Handle._heartbeat_once`); a checkout queued already, with time
        left, asks again at once (`Client.checkout`: a failover under way), or else it ends,
        as a release does (`Handle._release`: the handle is not heartbeated any more, its
        lease runs out on the server)."""
        if ch is c.hb:
            c.hb_next = self.now
        elif c.state == "checkout" and c.position and c.wait and self.now < c.wait_until:
            self.stats["queued_timeouts"] += 1
            self.checkout_ask(c)
        elif c.state == "checkout":
            c.state = "idle"
            c.next_action = self.now + self.rng.uniform(0.1, 1.0)
        else:
            c.state = "idle"

    def heartbeat_answered(self, c: SimClient, reply: ClientReply) -> None:
        """The heartbeat call's result (`Handle._heartbeat_once`): the lease renewed and the
        next heartbeat on the schedule; the handle lost; or an `ApiError`: again within a
        second."""
        now = self.now
        c.kept = reply.error == ErrorCode.QUORUM_LOST
        if c.kept:
            self.stats["kept_alive"] += 1
        if reply.ok and c.held:
            c.held.lease_ref = c.hb.sent
            c.hb_next = next_heartbeat(c.hb.sent, now, HEARTBEAT_INTERVAL, c.wall_offset)
            self.stats["hb_late"] += now - c.hb.sent >= LATE
        elif reply.error == ErrorCode.UNKNOWN_HANDLE and c.held:
            self.note(f"{c.cid}: lost {c.held.handle}")
            c.held = None
            c.state = "idle"
        elif not reply.ok:
            c.hb_next = now + min(HEARTBEAT_INTERVAL, HEARTBEAT_RETRY_MAX)

    def checkout_ask(self, c: SimClient) -> None:
        """One ask of the checkout (`Client.checkout`'s loop): a call on the main channel with
        the checkout's request id, `wait` the time left when the call starts (the same on
        each of its attempts), left out once it ran out (the last ask)."""
        c.ask_at = None
        left = min(c.wait_until - self.now, WAIT_MAX)
        if c.wait and left > 0:
            self.call(c, c.main, c.rid, "checkout", seats=c.seats, wait=left, mode=c.mode)
        else:
            self.call(c, c.main, c.rid, "checkout", seats=c.seats, mode=c.mode)

    def client_reply(self, cid: str, server: str, reply: ClientReply) -> None:
        """A reply to one of the client's calls in flight (to an earlier one: ignored)."""
        c = self.client_by_id(cid)
        if c.hb.rid and reply.rid == c.hb.rid:
            self.call_reply(c, c.hb, server, reply)
        elif c.main.rid and reply.rid == c.main.rid:
            self.call_reply(c, c.main, server, reply)

    def checkout_answered(self, c: SimClient, reply: ClientReply) -> None:
        """An ask's result (`Client.checkout`): queued, asked again with the same request id
        after the pause the answer gives; granted; or refused (an error, QUORUM_LOST too)."""
        now = self.now
        if reply.ok and isinstance(reply.result, QueuedResult):
            wait = c.main.args.get("wait")
            if reply.result.position < 1 or wait is None:
                self.fail(f"{c.cid}: queued result {reply.result} for a checkout")
                return
            self.stats["queued"] += 1
            c.position = reply.result.position
            pause = min(reply.result.retry, reply.result.hold / 2, max(0.0, wait - 0.01))
            c.ask_at = now + max(pause, 0.01)
            return
        if reply.ok:
            assert isinstance(reply.result, CheckoutResult)
            h = reply.result.handle
            granted = reply.result.seats  # an exclusive checkout's: the whole LQ
            if c.mode is not AccessMode.EXCLUSIVE and granted != c.seats:
                self.fail(f"{c.cid}: asked {c.seats} seats ({c.mode}), granted {granted}")
            self.acked_grants[h] = (c.cid, c.rid, granted)
            self.stats["checkouts"] += 1
            self.stats[f"mode_{c.mode.value}"] += 1
            c.held = HeldSeat(h, granted, now, c.first_sent, mode=c.mode)
            # The SDK's first heartbeat: an interval after the answer, on the grid.
            c.hb_next = on_grid(now + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL, c.wall_offset)
            # Freed by an administrator before this answer arrived: not certainly held.
            c.held.revoked = h in self.revoked
            c.state = "holding"
            c.next_action = now + self.rng.uniform(0.1, 1.5 * LEASE) * self.rng.random()
        else:
            self.stats["denied"] += 1
            key = f"err_{reply.error}"
            self.stats[key] = self.stats.get(key, 0) + 1
            c.state = "idle"
            c.next_action = now + self.rng.uniform(0.1, 1.0)

    def release_answered(self, c: SimClient, reply: ClientReply) -> None:
        """The release call's result (`Handle._release`): released; UNKNOWN_HANDLE after a
        retry, which the SDK counts as released (an earlier attempt's answer was lost); or an
        error the SDK raises (the handle is not heartbeated any more either way)."""
        c.state = "idle"
        if reply.ok:
            self.gone.add(c.release_handle)
            self.stats["releases"] += 1
        elif reply.error == ErrorCode.UNKNOWN_HANDLE and c.main.attempts > 1:
            self.stats["released_after_retry"] += 1
        else:
            return
        c.next_action = self.now + self.rng.uniform(0.0, 1.0)

    # -------------------------------------------------------------- faults

    def crash_backend(self, b: BackendNode, why: str = "crash") -> None:
        self.disturb(b.name)
        self.note(f"{b.name}: {why}")
        b.acceptor = None
        self.incarnation[b.name] = self.incarnation.get(b.name, 0) + 1
        self.stats["crashes"] += 1

    def wipe_backend(self, b: BackendNode) -> None:
        others = [o for o in self.backends.values() if o is not b]
        if not all(o.store.state.caught_up for o in others):
            return
        self.crash_backend(b, "wiped")
        b.store.state = AcceptorState(ZERO_EPOCH, False)

    def crash_server(self, s: ServerNode) -> None:
        self.disturb(s.name)
        self.note(f"{s.name}: crash")
        s.leader = None
        self.incarnation[s.name] = self.incarnation.get(s.name, 0) + 1
        self.stats["crashes"] += 1

    def fault(self) -> None:
        rng = self.rng
        r = rng.random()
        if r < 0.25:
            b = rng.choice(list(self.backends.values()))
            if b.up:
                self.crash_backend(b)
            else:
                self.note(f"{b.name}: restart")
                self._start_backend(b)
        elif r < 0.30:
            b = rng.choice(list(self.backends.values()))
            if b.up:
                self.wipe_backend(b)
        elif r < 0.45:
            s = rng.choice(list(self.servers.values()))
            if s.leader is not None:
                self.crash_server(s)
            else:
                self.note(f"{s.name}: restart")
                self._start_server(s)
        elif r < 0.65:
            # keepalived: promote one, sometimes both (split brain), sometimes demote. A
            # promote yields to a live leader; an operator's `promote --force` (a third of
            # them) does not, so fencing and two leaders at once stay exercised.
            choice = rng.random()
            targets = list(self.servers.values())
            picked = targets if choice < 0.25 else [rng.choice(targets)]
            for s in picked:
                if s.leader is None:
                    continue
                if choice > 0.85:
                    self.note(f"{s.name}: keepalived demotes")
                    self.disturb(s.name)
                    self.apply_effects(s, s.leader.demote(self.now))
                else:
                    force = rng.random() < 0.35
                    self.note(f"{s.name}: {'operator force-' if force else 'keepalived '}promotes")
                    self.stats["failovers"] += 1
                    self.stats["forced"] += force
                    self.disturb(s.name)
                    self.apply_effects(s, s.leader.promote(self.now, force=force))
        elif r < 0.68:
            self.license_update()
        elif r < 0.70:
            self.rollback_backend(rng.choice(list(self.backends.values())))
        elif r < 0.74:
            self.pause_server(rng.choice(list(self.servers.values())))
        elif r < 0.755:
            self.quorum_loss()
        elif r < 0.765:
            self.expire_license()
        elif r < 0.80:
            self.admin_release()
        elif r < 0.85:
            link = frozenset((rng.choice(SERVERS), rng.choice(BACKENDS)))
            self.cut.add(link)
            self.disturb(*link)
            self.note(f"cut {sorted(link)}")
        elif self.cut:
            link = rng.choice(sorted(self.cut, key=sorted))
            self.cut.discard(link)
            self.disturb(*link)
            self.note(f"heal {sorted(link)}")

    def admin_release(self) -> None:
        """`tmr admin release`: an administrator frees a handle on an active server (a held
        one mostly, sometimes one long gone or never granted). The leader answers only after
        the release committed (`admin_reply` checks that) and within the liveness bound."""
        rng = self.rng
        live = [
            s
            for s in self.servers.values()
            if s.leader is not None and s.paused_until is None and s.leader.role == Role.ACTIVE
        ]
        if not live:
            return
        s = rng.choice(live)
        leader = s.leader
        assert leader is not None
        p = leader._products.get(KEY)
        table = sorted(p.handles) if p else []
        if table and rng.random() < 0.85:
            handle = rng.choice(table)
        else:
            handle = rng.choice(sorted(self.acked_grants) or ["h0-none-0"])
        if handle in table:
            self.revoked.add(handle)
            for c in self.clients:
                if c.held and c.held.handle == handle:
                    c.held.revoked = True  # its client no longer certainly holds it
        self._admin_n += 1
        rid = f"admin-{self._admin_n}"
        self.note(f"{s.name}: administrator releases {handle}")
        w = Waiting(self.now, leader, leader.epoch, s.pauses, self.step_no)
        self.waiting.setdefault((s.name, ADMIN, rid), w)
        self.apply_effects(s, leader.admin_release(ADMIN, rid, handle, self.now, by="sim"))
        self.maybe_pump(s)

    def admin_reply(self, s: ServerNode, reply: ClientReply) -> None:
        """An administrator's release is answered ok only once committed: at least two
        backends no longer hold the handle durably (I5 for releases)."""
        if not reply.ok:
            self.note(f"{s.name}: admin release {reply.rid}: {reply.error}")
            return
        assert isinstance(reply.result, AdminReleaseResult) and s.leader is not None
        handle = reply.result.handle
        holding = [b for b in BACKENDS if handle in self.backends[b].store.state.products.get(
            KEY, ProductLog()).handles]  # fmt: skip
        if len(BACKENDS) - len(holding) < 2:
            self.fail(f"admin: {s.name} answered the release of {handle} before it committed")
        self.gone.add(handle)
        self.admin_released[handle] = (s.name, s.leader, s.leader.epoch)
        self.stats["admin_releases"] += 1

    def pause_server(self, s: ServerNode) -> None:
        """SIGSTOP, SIGCONT later: its clock jumps, the messages sent to it meanwhile wait.
        keepalived may promote the other server meanwhile (it stops hearing VRRP)."""
        if s.leader is None or s.paused_until is not None:
            return
        s.paused_until = self.now + self.rng.uniform(0.3, 3.0)
        s.pauses += 1
        self.disturb(*SERVERS)
        self.upset[s.name] = s.paused_until  # stopped: no progress to check until it resumes
        self.stats["pauses"] += 1
        self.note(f"{s.name}: paused until {s.paused_until:.2f}")
        other = self.servers[SERVERS[1 - SERVERS.index(s.name)]]
        if other.leader is not None and other.paused_until is None and self.rng.random() < 0.5:
            self.note(f"{other.name}: keepalived promotes")
            self.apply_effects(other, other.leader.promote(self.now))

    def quorum_loss(self) -> None:
        """Two backends cut from both servers for longer than a lease; heartbeats go on."""
        lost = self.rng.sample(BACKENDS, 2)
        links = {frozenset((s, b)) for s in SERVERS for b in lost} - self.cut
        self.cut |= links
        self.disturb(*SERVERS, *lost)
        self.stats["quorum_losses"] += 1
        until = self.now + LEASE * self.rng.uniform(1.1, 2.0)
        self.note(f"quorum loss: {lost} cut until {until:.2f}")
        self.schedule(until, "heal", links)

    def expire_license(self) -> None:
        """Every backend's copy expires at once (an update renews it later)."""
        for b in self.backends.values():
            lic = b.store.licenses[KEY]
            b.store.licenses = {KEY: replace(lic, valid=False, reason=CopyReason.EXPIRED)}
            if b.acceptor is not None:
                b.acceptor.set_licenses(b.store.licenses)
        self.stats["expiries"] += 1
        self.disturb(*BACKENDS)
        self.note("license expired on every backend")

    def license_update(self) -> None:
        """Roll the next TMR ID out one backend at a time, as license_rollout.yml does.

        LQ only grows here: the bound I1 checks is the highest LQ any verified copy grants."""
        lagging = [b for b in self.backends.values() if b.store.licenses[KEY].tmr_id < self.version]
        if not lagging:
            if self.version >= 10:
                return
            self.version += 1
            # Sometimes a big step: seats in use above the old LQ while the update rolls out.
            self.version_lq = self.version_lq + self.rng.choice((0, 1, 2, 4))
            lagging = list(self.backends.values())
        b = lagging[0]
        b.store.licenses = {KEY: copy_of(b.name, self.version, self.version_lq)}
        self.disturb(b.name)
        if b.acceptor is not None:
            b.acceptor.set_licenses(b.store.licenses)
        self.lq = max(self.lq, self.version_lq)
        self.note(f"{b.name}: license updated to #{self.version} LQ {self.version_lq}")
        if b.up and lagging[1:] and self.rng.random() < 0.3:
            # A backend fails mid-update: the rollout stops with mixed TMR IDs and LQs.
            up_to_date = [x for x in self.backends.values() if x not in lagging and x.up]
            self.crash_backend(self.rng.choice(up_to_date or [b]), "crash mid-update")

    def tick(self) -> None:
        self.backend_clocks()
        for s in self.servers.values():
            if s.paused_until is not None and self.now >= s.paused_until:
                self.note(f"{s.name}: resumed (clock jumps)")
                s.paused_until = None
            if s.leader is not None and s.paused_until is None:
                self.apply_effects(s, s.leader.tick(self.now))
        for c in self.clients:
            self.client_act(c)
        self.check_answers()
        self.check_parked()
        self.check_takeovers()

    def ensure_some_leader(self) -> None:
        """keepalived's job: if nobody is active or taking over, promote a live server."""
        live = [s for s in self.servers.values() if s.leader is not None]
        if any(s.leader and s.leader.role in (Role.ACTIVE, Role.TAKEOVER) for s in live):
            return
        if live:
            s = self.rng.choice(live)
            assert s.leader is not None
            if s.leader.role == Role.FENCED:
                self.apply_effects(s, s.leader.demote(self.now))
            self.stats["failovers"] += 1
            self.disturb(s.name)
            self.apply_effects(s, s.leader.promote(self.now))

    # -------------------------------------------------------------- run

    def run(self, *, faults: bool = True) -> dict[str, int]:
        self.faults_on = faults
        self.schedule(0.0, "tick")
        self.schedule(0.0, "keepalived")
        if faults:
            self.schedule(self.rng.expovariate(1 / self.fault_interval), "fault")
        end = self.now + self.duration
        while self.queue and self.queue[0][0] <= end:
            at, _, kind, payload = heapq.heappop(self.queue)
            self.now = max(self.now, at)
            self.step_no += 1
            if kind == "msg":
                self.deliver(payload)
            elif kind == "tick":
                self.tick()
                self.schedule(self.now + TICK, "tick")
            elif kind == "keepalived":
                self.ensure_some_leader()
                self.schedule(self.now + self.rng.uniform(0.2, 1.0), "keepalived")
            elif kind == "restart":
                b = self.backends[payload]
                if not b.up:
                    self.note(f"{b.name}: restart")
                    self._start_backend(b)
            elif kind == "heal":
                healed = payload & self.cut
                self.cut -= healed
                self.disturb(*SERVERS, *BACKENDS)
                if healed:
                    self.note(f"quorum back: healed {sorted(sorted(x) for x in healed)}")
            elif kind == "fault" and faults:
                if self.now >= self.quiet_until:
                    self.fault()
                self.schedule(self.now + self.rng.expovariate(1 / self.fault_interval), "fault")
            if self.on_step is not None:
                self.on_step(self)
            self.check_seats()
        self.now = end
        return self.stats

    def heal_and_settle(self, seconds: float = 15.0) -> None:
        """Heal every fault and let the system converge (the liveness half of the check)."""
        self.note("heal everything")
        self.cut.clear()
        for s in self.servers.values():
            s.paused_until = None
        # The operator finishes the rollout: every backend gets the newest copy (a lagging
        # or rolled back one too); an expired license is renewed by a new update.
        if any(not b.store.licenses[KEY].valid for b in self.backends.values()):
            self.version += 1
        for b in self.backends.values():
            b.store.licenses = {KEY: copy_of(b.name, self.version, self.version_lq)}
            self.disturb(b.name)
            if b.acceptor is not None:
                b.acceptor.set_licenses(b.store.licenses)
        for b in self.backends.values():
            if not b.up:
                self._start_backend(b)
        for s in self.servers.values():
            if s.leader is None:
                self._start_server(s)
        self.queue = [q for q in self.queue if q[2] == "msg"]
        heapq.heapify(self.queue)
        self.duration = seconds
        before = self.stats["checkouts"]
        self.run(faults=False)
        if self.stats["checkouts"] == before:
            self.fail("liveness: no checkout succeeded after every fault was healed")


def stop_mid_update(seed: int, *, duration: float = 8.0) -> Simulation:
    """A directed scenario (docs/design.md §6): an update that lowers LQ is under way: b3
    holds #8 (LQ 4), b1 and b2 still #7 (LQ 6; the effective version is #7, the second-highest
    ID). Once a leader's uncommitted entry grants more seats than b3's LQ (b3 refuses it), b2
    stops for good. From then on b1 and b3 are two good backends: every request must be
    served (`check_answers`, `check_truthful`). No random faults, no lost, duplicated or slow
    messages: nothing else disturbs the two good backends, so the truthfulness check applies
    to every QUORUM_LOST from two rounds after the start on.

    (With the LQ raised instead, b1 and b2 on #8, the TMR ID floor rises to #8 within about a
    second of the update, and b3's #7 no longer counts: then QUORUM_LOST is the truth.)"""
    sim = Simulation(seed, duration=duration, lq=6, slow_tail=False, noise=False)
    sim.version, sim.version_lq = 8, 4
    b3 = sim.backends["b3"]
    b3.store.licenses = {KEY: copy_of("b3", 8, 4)}
    assert b3.acceptor is not None
    b3.acceptor.set_licenses(b3.store.licenses)

    def script(sim: Simulation) -> None:
        b2 = sim.backends["b2"]
        if sim.now < 2 * (BACKEND_TIMEOUT + PROBE_INTERVAL) + 0.3:
            return  # after the takeover's disturbance: the truthfulness check applies
        for s in sim.servers.values():
            p = s.leader._products.get(KEY) if s.leader is not None else None
            if p is None or s.leader is None or s.leader.role != Role.ACTIVE:
                continue
            pending = [p.log.get(q, ()) for q in range(p.committed + 1, p.seq + 1)]
            if any(isinstance(op, Grant) for ops in pending for op in ops) and p.seats() > 4:
                sim.crash_backend(b2, "stops for good mid-update (a grant above b3's LQ)")
                sim.on_step = None
                return

    sim.on_step = script
    sim.run(faults=False)
    return sim


def crash_mid_update(seed: int, *, duration: float = 10.0) -> Simulation:
    """A directed scenario (docs/design.md §6, the takeover window): the update of
    `stop_mid_update` (b3 on #8 with LQ 4, b1 and b2 on #7 with LQ 6). Once an entry granting
    more seats than b3's LQ committed with b1 and b2 and before any backend was told (the
    leader's commit notices of that loop turn are lost with it), the leader crashes and b2
    stops for good. The other server takes over with b1 and b3: it must abort the grants no
    client was told of and serve (`check_truthful` applies two rounds after its promote;
    `check_active` checks that no answered grant is lost)."""
    sim = Simulation(seed, duration=duration, lq=6, slow_tail=False, noise=False)
    sim.version, sim.version_lq = 8, 4
    b3 = sim.backends["b3"]
    b3.store.licenses = {KEY: copy_of("b3", 8, 4)}
    assert b3.acceptor is not None
    b3.acceptor.set_licenses(b3.store.licenses)

    def script(sim: Simulation) -> None:
        if sim.now < 2 * (BACKEND_TIMEOUT + PROBE_INTERVAL) + 0.3:
            return
        for s in sim.servers.values():
            p = s.leader._products.get(KEY) if s.leader is not None else None
            if p is None or s.leader is None or s.leader.role != Role.ACTIVE:
                continue
            if not any(q <= p.committed for q in p.notice) or p.seats() <= 4:
                continue
            # What the next leader keeps: every grant but those of flagged entries above
            # the commit b1 or b3 durably knows (`takeover.unanswered_grants`; b2 is gone).
            known = [
                a.state.known[KEY]
                for a in (sim.backends["b1"].acceptor, sim.backends["b3"].acceptor)
                if a is not None and KEY in a.state.known
            ]
            told = max((v.seq for v in known if v.epoch == s.leader.epoch), default=-1)
            for q in sim.queue:  # and what ACCEPTs on their way to them tell (kept below)
                m = q[3] if q[2] == "msg" else None
                if (
                    isinstance(m, Msg)
                    and m.src == s.name
                    and m.dst in ("b1", "b3")
                    and isinstance(m.payload, Accept)
                    and m.payload.entries
                ):
                    told = max([told, *(seq for k, seq in m.payload.commits if k == KEY)])
            kept = seat_count(
                rec
                for h, rec in {**p.handles, **p.pending_released}.items()
                if not ((g := p.grant_seq.get(h, 0)) in p.notice and g > told)
            )
            if kept > 4:
                # Grants the clients may have been told of (committed with b1 and b2 under
                # #7, and b1 or b3 knows it) exceed b3's LQ: b1 and b3 alone cannot hold
                # that table, so QUORUM_LOST is the truth until enough of them are released.
                # Not this scenario.
                continue
            # Committed, not durably known: the crash loses the notices of this loop turn.
            sim.queue = [
                q
                for q in sim.queue
                if not (
                    q[2] == "msg"
                    and q[3].src == s.name
                    and isinstance(q[3].payload, Accept)
                    and not q[3].payload.entries
                )
            ]
            heapq.heapify(sim.queue)
            sim.crash_server(s)
            sim.crash_backend(sim.backends["b2"], "stops for good mid-update")
            sim.stats["window_crashes"] += 1
            sim.on_step = None
            return

    sim.on_step = script
    sim.run(faults=False)
    return sim


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--duration", type=float, default=30.0, help="simulated seconds")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the event log")
    args = ap.parse_args(argv)
    sim = Simulation(args.seed, duration=args.duration)
    try:
        stats = sim.run()
    finally:
        if args.verbose:
            print("\n".join(sim.log))
    print(f"seed {args.seed}: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
