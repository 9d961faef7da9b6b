"""The TMR server's side of the replication protocol: a sans-I/O leader.

The leader is fed client requests, backend replies and timer ticks (monotonic `now`), and
returns `Effects`: messages to send to backends, replies to clients, log events, and an epoch
counter that must be persisted before anything is sent. It does no I/O of its own; the server
service and the deterministic simulation drive the very same class.

Roles: STANDBY (answers NOT_ACTIVE), TAKEOVER (probing and preparing after `promote`), ACTIVE
(serving), FENCED (a backend has a higher promise: stop serving, never prepare again by itself;
only `demote` then a new `promote` starts a new term).

Leader-liveness guard (keepalived split brain): every server keeps probing the backends, and a
leader's probes and requests carry its epoch, so each backend knows how long ago it last heard
the epoch it promised (`Status.leader_age`). A `promote` does not prepare while a majority of
backends heard another server's epoch within `leader_live_window`: that server is alive and
serving, and taking over would only fence it (and then be fenced back when keepalived promotes
it again). It keeps probing and prepares as soon as that server falls silent (a demoted or
dead leader stops within the window); if the other server is still alive `backend_timeout +
leader_live_window` after the promote, it gives up and goes back to STANDBY
(`promote_yielded`). `promote(force=True)` skips the guard (operator override).

Replication (docs/design.md §5): every product (firm, product) has its own log of entries
numbered 1, 2, ... in the leader's epoch, after a snapshot at seq 0 written at takeover. Ops
collected while an entry is uncommitted go together into the next entry (group commit). Each
backend has at most one ACCEPT or SNAPSHOT in flight, so a slow backend never slows the
majority. An entry is committed once two backends acknowledged it durably; only then are the
clients that wait on it answered.

The parts (docs/design.md §2): `roles` (role and phase, every transition in one table),
`takeover` (a takeover's decisions), `backends` (backend health, what a status changes),
`productlog` (per-product log, group commit, pipelining, aborts), `leases` (the lease clock),
`floors` (the replicated floors), `admission` (admission and the views' rows), `queue` (queued
checkouts), `parking` (requests during a takeover), `status_rows` (the status view's kept
rows), `crypt_router` (crypt calls, one reply each). `Leader` owns them and routes its inputs.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from sys import intern
from typing import Any

from tmr.errors import ErrorCode
from tmr.licensing.effective import QUORUM, Effective
from tmr.policy import EMPTY as EMPTY_POLICY
from tmr.policy import Policy, Subject
from tmr.protocol.results import (
    RELEASED,
    AdminReleaseResult,
    CheckoutResult,
    HeartbeatResult,
    LicenseEntry,
)
from tmr.replication import (
    admission,
    backends,
    floors,
    handles,
    productlog,
    status_rows,
    takeover,
)
from tmr.replication import queue as checkout_queue
from tmr.replication.admission import Admission
from tmr.replication.backends import Backend, Outstanding
from tmr.replication.crypt_router import CryptJob, CryptRouter
from tmr.replication.effects import ClientReply, Effects
from tmr.replication.floors import FLOOR_SCAN, TIME_FLOOR_STEP
from tmr.replication.handles import HandleIndex
from tmr.replication.leases import EXPIRY_SCAN, Leases
from tmr.replication.messages import (
    Accept,
    Accepted,
    Crypt,
    CryptResult,
    EntryStatus,
    PeerError,
    PeerReply,
    PeerRequest,
    Prepare,
    Probe,
    Promise,
    Rejected,
    Status,
)
from tmr.replication.parking import TAKEOVER_HOLD, Parked, Parking
from tmr.replication.productlog import (
    MAX_ENTRY_OPS,
    PIPELINE,
    PIPELINE_MIN_OPS,
    Product,
)
from tmr.replication.roles import Event, IllegalTransition, Phase, Role, RoleState
from tmr.replication.status_rows import StatusRows
from tmr.replication.types import (
    AccessMode,
    Epoch,
    Floor,
    Grant,
    HandleRecord,
    LicenseInfo,
    Op,
    ProductKey,
    Release,
    ReleaseReason,
    Station,
    key_str,
)

__all__ = [
    "EXPIRY_SCAN",
    "FLOOR_SCAN",
    "MAX_ENTRY_OPS",
    "PIPELINE",
    "PIPELINE_MIN_OPS",
    "TIME_FLOOR_STEP",
    "ClientReply",
    "Effects",
    "IllegalTransition",
    "Leader",
    "LeaderConfig",
    "Role",
]

HANDLE_RANDOM_BYTES = 16  # a handle id is h<epoch counter>-<server>-<128 random bits, hex>
HANDLE_SHOWN = 128  # characters of an unknown handle id quoted back in an error message


@dataclass(frozen=True)
class LeaderConfig:
    server_id: str
    backends: tuple[str, ...]
    lease: float = 30.0
    backend_timeout: float = 1.0
    probe_interval: float = 0.25
    refuse_retry: float = 1.0
    crypt_timeout: float = 1.0
    container_serial: str = "131-0000000"
    # Another server whose epoch a majority of backends heard this recently is alive: a
    # promote waits for it to fall silent (see the module docstring). Keep it well above
    # probe_interval, the gap between two probes of an idle leader.
    leader_live_window: float = 0.6
    # Hex CURVE public key of each backend (server.toml backends[].public_key), in the order
    # of `backends`: a copy counts only from the backend whose key it is bound to, and each
    # copy once (tmr.licensing.distinct_copies). () = keys not known: only distinctness.
    backend_keys: tuple[str, ...] = ()
    # Seconds a queued checkout keeps its place without asking again (replication/queue.py)
    queue_hold: float = checkout_queue.QUEUE_HOLD
    # Seconds a client request arriving during a takeover waits for its end before it is
    # answered NOT_ACTIVE (replication/parking.py); 0: answered at once
    takeover_hold: float = TAKEOVER_HOLD


class Leader:
    """The façade over the parts (docs/design.md §2, §5): it owns the role state, the
    backends, the product logs, the leases and the crypt router, routes every input to
    them, and keeps the API the server and the simulation call."""

    _force: bool  # this takeover skips the leader-liveness guard (set by `_reset_term`)
    # While active, `_pump` visits only the products that may have something to send (see
    # `_pump`); False: every product on every pump (the reference the tests compare with).
    DIRTY_PUMP = True
    # While active, a status that changes nothing of a backend reconciled since its last
    # change skips the reconcile (see `_on_status`); False: every status reconciles (the
    # reference the tests compare with).
    QUIET_STATUS = True

    def __init__(
        self,
        config: LeaderConfig,
        *,
        last_counter: int = 0,
        wall_clock: Callable[[], float] | None = None,
        random_ids: Callable[[], str] | None = None,
    ) -> None:
        """`random_ids`: the random part of new handle ids (default: 128 bits from `secrets`;
        the simulation passes a seeded one to replay a run)."""
        self.cfg = config
        self._roles = RoleState()
        self.epoch: Epoch | None = None
        self.last_counter = last_counter
        self._wall = wall_clock or (lambda: 0.0)
        self._random_ids = random_ids or (lambda: secrets.token_hex(HANDLE_RANDOM_BYTES))
        self._mids = itertools.count(1)
        self._eff_cache: dict[ProductKey, Effective] = {}  # cleared when a backend changes
        # The status view's rows, kept with their inputs (`status_rows`)
        self._rows = StatusRows(len(config.backends))
        self._next_floor_scan = 0.0
        self._leases = Leases(config.lease, config.backend_timeout)
        # Every heartbeat held is answered the same result (frozen): built once, not per
        # heartbeat (10,000 idle clients send 1,000 a second).
        self._renewed = HeartbeatResult(config.lease)
        self._crypt = CryptRouter(self)
        # Client requests waiting for this server's takeover to end, or for its first probes
        # after a pause to confirm it (not part of a term: they are answered whatever the
        # outcome)
        self._parking = Parking(config.takeover_hold)
        # What the requests in the parking wait for: "takeover" (its end) or "pause" (the
        # first probes after a pause), as the first of them found it; in `parked_answered`.
        self._parked_for = "takeover"
        self.backends = [Backend(name, i) for i, name in enumerate(config.backends)]
        self._by_name = {b.name: b for b in self.backends}
        self._reset_term()
        self.ops_committed = 0
        # The site's rules (tmr.policy), set by the server at start and at `tmr ctl reload`
        self.policy: Policy = EMPTY_POLICY
        # POLICY_DENIED answers per product since start (a metric; the rule goes to the log)
        self.policy_denials: dict[ProductKey, int] = {}
        # The other servers' policy digests, as their probes left them on the backends
        self.peer_policies: dict[str, str] = {}
        self.fenced_by: Epoch | None = None
        self.auto_pump = True  # the service turns it off and calls `pump` once per loop turn
        self._now = 0.0  # the latest time the leader was given (for `status`)
        # Pause detection (SIGSTOP, a frozen VM), see `_clock`: ticks and client requests come
        # at least every probe interval, so a longer silence means this process was stopped.
        self._pause_gap = 2 * config.probe_interval
        self._last_seen: float | None = None  # time of the latest tick or client request
        self._resumed_at = float("-inf")  # when this server noticed its latest pause ended

    @property
    def role(self) -> Role:
        return self._roles.role

    @property
    def parked(self) -> int:
        """Client requests waiting for this server to be ready (`tmr.replication.parking`)."""
        return len(self._parking)

    def awaiting_backends(self) -> bool:
        """Whether a message other than a probe is unanswered by a backend (an entry, a
        takeover's prepare, a crypt request): a client waits for its answer. Probes do not
        count: a down backend's stays unanswered for `backend_timeout`, probed again every
        `probe_interval`, and its answer only needs to come within that."""
        return any(out.kind != "probe" for b in self.backends for out in b.outstanding.values())

    @property
    def _phase(self) -> Phase:
        return self._roles.phase

    # ================================================================== public inputs

    def promote(self, now: float, force: bool = False) -> Effects:
        """Start a takeover. Unless `force`, it waits while another server is alive as leader
        and gives up (back to STANDBY, `promote_yielded`) if that server stays alive."""
        fx = Effects()
        self._now = now
        if self.role == Role.TAKEOVER and force and not self._force:
            # An operator forces a takeover that waits for a live leader: stop waiting.
            self._force = True
            fx.events.append({"event": "promote", "server": self.cfg.server_id, "force": True})
            if self._phase == Phase.PROBE:
                self._maybe_prepare(now, fx)
            return fx
        if self.role in (Role.ACTIVE, Role.TAKEOVER):
            return fx
        self._reset_term()
        self._roles.fire(Event.PROMOTE)
        self.fenced_by = None
        self._takeover_started = now
        self._force = force
        fx.events.append({"event": "promote", "server": self.cfg.server_id, "force": force})
        mismatch = self.policy_mismatch()
        if mismatch:  # the rules change with this takeover: say so loudly
            fx.events.append(
                {
                    "event": "policy_mismatch",
                    "level": "warning",
                    "ours": self.policy.digest,
                    "peers": {s: self.peer_policies[s] for s in mismatch},
                    "role": "promote",
                }
            )
        for b in self.backends:
            self._probe(b, now, fx)  # a takeover counts only answers to probes from now on
        return fx

    def demote(self, now: float, reason: str = "demote") -> Effects:
        fx = Effects()
        if self.role == Role.STANDBY:
            return fx
        self._fail_all_waiters(fx, ErrorCode.NOT_ACTIVE, "server demoted")
        self._roles.fire(Event.DEMOTE)
        self.epoch = None
        self._reset_term()
        fx.events.append({"event": "demote", "server": self.cfg.server_id, "reason": reason})
        self._settle_parked(now, fx)
        return fx

    def tick(self, now: float) -> Effects:
        fx = Effects()
        self._clock(now)
        # Never earlier than an input already seen: a service's tick carries its loop turn's
        # start, before the client requests that turn read, and after a pause the first of
        # them marks its end (`_resumed_at`): probes stamped before it would confirm nothing,
        # and what waits for them (`_waits`) would wait for the next probe round.
        if self._last_seen is not None and now < self._last_seen:
            now = self._last_seen
        self._now = now
        for b in self.backends:
            for mid, out in list(b.outstanding.items()):
                limit = self.cfg.crypt_timeout if out.kind == "crypt" else self.cfg.backend_timeout
                # A request counts as unanswered only for the time this server was awake to
                # receive the answer: after a pause everything sent before it would time out
                # at once (and every backend look down) although the answers may be queued.
                if now - max(out.sent_at, self._resumed_at) >= limit:
                    self._timeout(b, mid, out, now, fx)
            # Probe every probe_interval, also while an earlier probe is unanswered: a lost
            # message then costs one interval, not backend_timeout, of a leader being heard
            # (leader_live_window) and of this server knowing who is heard.
            if now - b.last_probe >= self.cfg.probe_interval:
                self._probe(b, now, fx)
        if self.role == Role.TAKEOVER and self._phase == Phase.PROBE:
            self._maybe_prepare(now, fx)
        if self.role == Role.ACTIVE and self._leases.scan_due(now):
            self._expire(now, fx)
            self._queue.expire(now, fx.events)
        if self.role == Role.ACTIVE:
            self._abort_refused(now, fx)
            self._answer_overdue(now, fx)
        if self.role == Role.ACTIVE and now >= self._next_floor_scan:
            self._next_floor_scan = now + FLOOR_SCAN
            self._raise_floors(fx)
        if self._parking.waiting:
            self._settle_parked(now, fx)
        self._pump(now, fx)
        return fx

    def on_reply(self, backend: str, msg: PeerReply, now: float) -> Effects:
        fx = Effects()
        self._now = now
        self._clock(now)
        b = self._by_name.get(backend)
        if b is None:
            return fx
        out = b.outstanding.pop(msg.mid, None)
        if out is None:
            return fx  # late or duplicate reply: its request was given up already
        self._mark_up(b, fx)
        b.answered_at = max(b.answered_at, out.sent_at)
        if isinstance(msg, Status) and out.sent_at < b.status_sent_at:
            return fx  # probes overlap: an older probe's answer overtaken by a newer one
        if isinstance(msg, Rejected):
            if out.kind == "crypt":
                self._crypt.on_rejected(msg.mid, fx)
            self._fence(msg.promised, b, fx)
        elif isinstance(msg, Status):
            changed = self._take_status(b, msg, fx)
            if changed is None:
                return fx  # a delta from a state this server does not hold: as if lost
            b.status_sent_at = out.sent_at
            if self.epoch is not None and msg.promised <= self.epoch and msg.caught_up:
                b.confirmed_at = max(b.confirmed_at, out.sent_at)
            self._on_status(b, msg, changed, now, fx)
        elif isinstance(msg, Promise):
            if out.sent_at >= self._resumed_at:
                self._on_promise(b, msg, now, fx)
            else:
                # Asked before this server was paused: the state is stale (another leader
                # may have committed since, and a backend wiped meanwhile would take this
                # term's snapshot). Ask again; the next status sends a fresh PREPARE.
                b.prepare_sent = False
        elif isinstance(msg, Accepted):
            self._on_accepted(b, msg, out, now, fx)
        elif isinstance(msg, CryptResult):
            self._crypt.on_result(msg.mid, msg, b.name, now, fx)
        elif isinstance(msg, PeerError):
            fx.events.append({"event": "backend_error", "backend": b.name, "message": msg.message})
            if out.kind == "repl":
                b.synced = False
                b.inflight.pop(msg.mid, None)
                b.acked.clear()
                b.sent.clear()
                self._sweep_next_pump()
        if self._parking.waiting:
            self._settle_parked(now, fx)
        self._auto_pump(now, fx)
        return fx

    def pump(self, now: float) -> Effects:
        """Send what is due: call once per loop turn when `auto_pump` is off.

        With `auto_pump` off, client requests and backend replies only queue their ops; a
        service that hands the leader every request of a burst and then pumps once puts the
        whole burst in one log entry (group commit) instead of one entry per request."""
        fx = Effects()
        self._pump(now, fx)
        return fx

    def _auto_pump(self, now: float, fx: Effects) -> None:
        if self.auto_pump:
            self._pump(now, fx)

    # ---------------------------------------------------------------- client requests

    def checkout(
        self,
        token: Any,
        rid: str,
        client_id: str,
        firm: int,
        product: int,
        seats: int,
        now: float,
        *,
        owner: str,
        user: str = "",
        host: str = "",
        pid: int = 0,
        wait: float | None = None,
        mode: AccessMode = AccessMode.USER_LIMIT,
    ) -> Effects:
        """`owner`: the authenticated CURVE public key of the client's connection (Z85). Only
        that key may heartbeat, release or use the handle; a request id is deduplicated per
        key, so no other key can take over a retried checkout's reply. `user`, `host`, `pid`:
        what the client says it is, recorded with the handle (informational only).
        `wait`: queue instead of NO_LICENSE_AVAILABLE, for at most `wait` seconds without
        another ask (`replication/queue.py`; answered with a queued result). `mode`: how the
        handle counts (`AccessMode`, docs/design.md §7.6); a station is (owner, user, host),
        so only handles of the same CURVE key ever share seats."""
        fx = Effects()
        if self._waits(now):
            replay = partial(
                self.checkout,
                token,
                rid,
                client_id,
                firm,
                product,
                seats,
                owner=owner,
                user=user,
                host=host,
                pid=pid,
                wait=wait,
                mode=mode,
            )
            return self._park(fx, token, rid, now, replay)
        if self._refuse_unconfirmed(fx, token, rid, now):
            return fx
        assert self.epoch is not None
        key = (firm, product)
        existing = self._handles.by_request((owner, client_id, rid))
        if existing is not None:
            key_held = self._handles.key_of(existing)
            assert key_held is not None
            p = self._products[key_held]
            rec = p.handles[existing]
            reply = ClientReply(token, rid, self._grant_result(rec, now))
            self._reply_when(p, p.grant_seq.get(existing, 0), reply, fx, grant=existing)
            self._auto_pump(now, fx)
            return fx
        if self._handles.was_released((owner, client_id, rid)):
            fx.replies.append(
                ClientReply(
                    token,
                    rid,
                    error=ErrorCode.UNKNOWN_HANDLE,
                    message="this request id was already used for a handle since released",
                )
            )
            return fx
        request = (owner, client_id, rid)
        station = (owner, user, host)
        ahead = self._queue.seats_ahead(key, request)
        admitted = self._admission(key, seats, mode, station)
        held = self._products.get(key)
        count = held.count if held else None
        quantity = admitted[2].quantity if admitted[2] is not None else 0
        need = admission.increase(count, mode, station, seats, quantity)
        if admitted[0] is None and (ahead is None or ahead):
            used = held.seats() if held else 0
            admitted = checkout_queue.head_of_line(key, used, need, ahead, admitted)
        code, message, eff = admitted
        denial = admission.policy_denial(
            self.policy,
            key,
            Subject(user=user, host=host, key=owner),
            need,
            held.handles.values() if held else (),
            admitted,
        )
        if denial is not None:
            code, message = ErrorCode.POLICY_DENIED, denial.message
            self.policy_denials[key] = self.policy_denials.get(key, 0) + 1
            fx.events.append(
                {
                    "event": "policy_denied",
                    "license": key_str(key),
                    "rule": denial.rule,
                    "seats": seats,
                    "user": user,
                    "host": host,
                    "client_id": client_id,
                }
            )
        if code == ErrorCode.NO_LICENSE_AVAILABLE and wait is not None:
            place = self._queue.enqueue(
                key,
                request,
                admission.granted_seats(mode, seats, quantity),
                now,
                wait,
                wall=self._wall(),
                user=user,
                host=host,
                pid=pid,
                events=fx.events,
            )
            if place is not None:
                fx.replies.append(ClientReply(token, rid, place))
                return fx
        if code is not None:
            self._queue.unqueue(key, request, code.value, fx.events)
            self.denials[key] = self.denials.get(key, 0) + (code == ErrorCode.NO_LICENSE_AVAILABLE)
            fx.replies.append(ClientReply(token, rid, error=code, message=message))
            return fx
        assert eff is not None
        queued = self._queue.unqueue(key, request, "granted", fx.events)
        p = self._product(key)
        handle = handles.handle_id(self.epoch, self._random_ids())
        seats = admission.granted_seats(mode, seats, eff.quantity)
        # One string object per client, not per held handle (issue 17: memory per handle).
        owner, client_id, user, host = intern(owner), intern(client_id), intern(user), intern(host)
        firm, product = p.key
        rec = HandleRecord(
            handle, firm, product, seats, client_id, rid, self._wall(), owner, user, host, pid, mode
        )
        seq = self._propose(p, Grant(rec))
        p.add(rec)
        p.grant_seq[handle] = seq
        self._handles.add(handle, p.key, (owner, client_id, rid))
        self._leases.grant(handle, now)
        reply = ClientReply(token, rid, self._grant_result(rec, now))
        self._reply_when(p, seq, reply, fx, grant=handle)
        fx.events.append(
            {
                "event": "handle_granted",
                "handle": handle,
                "license": key_str(key),
                "seats": seats,
                "mode": mode.value,
                "client_id": client_id,
                "rid": rid,
                "queued": queued,
            }
        )
        self._auto_pump(now, fx)
        return fx

    def queue_view(self, now: float) -> list[dict[str, Any]]:
        """`tmr admin queue`: the queued checkouts of this term, per product in order."""
        return self._queue.view(now)

    def heartbeat(
        self, token: Any, rid: str, client_id: str, handle: str, now: float, *, owner: str
    ) -> Effects:
        fx = Effects()
        # Heartbeats are not replicated: only extend a lease while a majority of backends has
        # answered in our epoch recently, so a deposed leader cannot extend leases the new
        # leader does not know of (new leaders add the same margin on takeover).
        held = self.role == Role.ACTIVE and self._holds(handle, client_id, owner)
        if held:
            # Kept also when not confirmed below: a quorum loss of any length does not
            # expire a handle whose heartbeats arrive. That only delays this server's own
            # expiry (a deposed server commits nothing; a new leader restarts every lease).
            self._leases.extend(handle, now)
        if self._waits(now):
            replay = partial(self.heartbeat, token, rid, client_id, handle, owner=owner)
            return self._park(fx, token, rid, now, replay)
        if self._refuse_unconfirmed(fx, token, rid, now):
            return fx
        if not held:
            return self._unknown_handle(fx, token, rid, handle)
        fx.replies.append(ClientReply(token, rid, self._renewed))
        return fx

    def renew(self, handle: str, client_id: str, now: float, *, owner: str) -> bool:
        """A heartbeat's usual case, decided without effects: True when this server is active
        and confirmed (`_leadership_confirmed`) and `owner` holds `handle` under `client_id`,
        not being released; its lease is extended and the answer is `renewed`. False: nothing
        was changed, and `heartbeat` decides (the same rules, and every other answer)."""
        self._clock(now)
        if self.role != Role.ACTIVE or self.epoch is None or not self._leadership_confirmed(now):
            return False
        if not self._holds(handle, client_id, owner):
            return False
        self._leases.extend(handle, now)
        return True

    @property
    def renewed(self) -> HeartbeatResult:
        """The result of every renewed heartbeat (the lease is the configured one)."""
        return self._renewed

    def release(
        self, token: Any, rid: str, client_id: str, handle: str, now: float, *, owner: str
    ) -> Effects:
        """A handle this key does not hold (never granted, another key's, released already)
        answers UNKNOWN_HANDLE, the same in every case (no oracle); the client library counts
        it as released when it comes to a retry."""
        fx = Effects()
        if self._waits(now):
            replay = partial(self.release, token, rid, client_id, handle, owner=owner)
            return self._park(fx, token, rid, now, replay)
        if self._refuse_unconfirmed(fx, token, rid, now):
            return fx
        key = self._handles.key_of(handle)
        if key is None:
            return self._unknown_handle(fx, token, rid, handle)
        p = self._products[key]
        rec = p.handles.get(handle)
        if rec is None:
            seq = p.releasing.get(handle)
            if seq is not None and p.released_by.get(handle) == (owner, client_id) and owner:
                # A retry of this key's release whose commit is pending: answer with it.
                self._reply_when(p, seq, ClientReply(token, rid, RELEASED), fx)
                return fx
            return self._unknown_handle(fx, token, rid, handle)
        if not owner or rec.owner != owner or rec.client_id != client_id:
            return self._unknown_handle(fx, token, rid, handle)
        seq = self._remove_handle(p, handle, ReleaseReason.RELEASE, fx)
        self._reply_when(p, seq, ClientReply(token, rid, RELEASED), fx)
        self._auto_pump(now, fx)
        return fx

    def crypt(
        self,
        token: Any,
        rid: str,
        client_id: str,
        handle: str,
        operation: str,
        data: bytes,
        now: float,
        *,
        owner: str,
    ) -> Effects:
        fx = Effects()
        if self._waits(now):
            replay = partial(
                self.crypt, token, rid, client_id, handle, operation, data, owner=owner
            )
            return self._park(fx, token, rid, now, replay, len(data))
        if self._refuse_unconfirmed(fx, token, rid, now):
            return fx
        rec = self._find(handle, client_id, owner)
        if rec is None:
            return self._unknown_handle(fx, token, rid, handle)
        p = self._products[rec.key]
        min_seq = p.grant_seq.get(handle, 0)
        job = CryptJob(token, rid, rec.key, handle, client_id, operation, data, min_seq, owner)
        self._crypt.start(job, now, fx)
        return fx

    def admin_release(self, token: Any, rid: str, handle: str, now: float, *, by: str) -> Effects:
        """An administrator frees `handle` whoever holds it (`tmr admin release`, like
        FlexNet's lmremove): an ordinary release op through the quorum, answered once it
        commits (`{"released": true, ...}`), or UNKNOWN_HANDLE if no client holds it (never
        granted, released, or its release is already under way). `by` names the administrator
        in the `handle_removed` event. The client learns it on its next heartbeat
        (UNKNOWN_HANDLE)."""
        fx = Effects()
        if self._refuse_unconfirmed(fx, token, rid, now):
            return fx
        key = self._handles.key_of(handle)
        rec = self._products[key].handles.get(handle) if key is not None else None
        if key is None or rec is None:
            message = f"no client holds handle {handle[:HANDLE_SHOWN]!r} on this server"
            fx.replies.append(
                ClientReply(token, rid, error=ErrorCode.UNKNOWN_HANDLE, message=message)
            )
            return fx
        p = self._products[key]
        if p.grant_seq.get(handle, 0) > p.committed:
            # Its grant is not committed yet (its client still waits for the answer): a
            # release now could join the grant's own entry, and the client would be told it
            # holds a handle that never existed on any backend.
            message = f"handle {handle!r} is still being granted (not committed yet); retry"
            fx.replies.append(
                ClientReply(token, rid, error=ErrorCode.UNKNOWN_HANDLE, message=message)
            )
            return fx
        seq = self._remove_handle(p, handle, ReleaseReason.RELEASE, fx)
        fx.events.append(
            {
                "event": "handle_removed",
                "handle": handle,
                "license": key_str(key),
                "seats": rec.seats,
                "client_id": rec.client_id,
                "user": rec.user,
                "host": rec.host,
                "pid": rec.pid,
                "by": by,
            }
        )
        result = AdminReleaseResult(
            True, handle, rec.firm, rec.product, rec.seats, rec.user, rec.host, rec.pid
        )
        self._reply_when(p, seq, ClientReply(token, rid, result), fx)
        self._auto_pump(now, fx)
        return fx

    def _from_newer_leader(self, handle: str) -> bool:
        return self.epoch is not None and handles.granted_after(handle, self.epoch)

    def _unknown_handle(self, fx: Effects, token: Any, rid: str, handle: str) -> Effects:
        if self._from_newer_leader(handle):
            # A newer leader granted it: this server is deposed and does not know yet.
            # Never make a client drop a handle it holds: send it to the other endpoint.
            fx.replies.append(
                ClientReply(
                    token,
                    rid,
                    error=ErrorCode.NOT_ACTIVE,
                    message="a newer TMR server leads; retry on the other endpoint",
                )
            )
        else:
            fx.replies.append(
                ClientReply(token, rid, error=ErrorCode.UNKNOWN_HANDLE, message="no such handle")
            )
        return fx

    def _leadership_confirmed(self, now: float) -> bool:
        """A majority of backends answered, in our epoch, requests sent within the last
        backend_timeout and after the latest pause of this server."""
        since = max(now - self.cfg.backend_timeout, self._resumed_at)
        return backends.leadership_confirmed(self.backends, since)

    def _refuse_unconfirmed(self, fx: Effects, token: Any, rid: str, now: float) -> bool:
        """Answer, and return True for, a client request this server may not answer from its
        own state (its handle table, seat counts and backend view).

        Only a leader confirmed by a majority of backends recently, in its epoch and since its
        latest pause (`_leadership_confirmed`), answers from its state: a deposed server that
        was paused would otherwise grant a released handle again or count released seats.
        Unconfirmed within backend_timeout of a pause: NOT_ACTIVE (the client retries; the
        first probes after the pause either confirm this server or fence it). The client
        requests read then are parked first (`_waits`): this answer is for one that waited
        `takeover_hold`, or found the parking off or full. Unconfirmed
        while awake for longer: no majority answered its own requests within backend_timeout,
        a true quorum loss as far as it can tell: QUORUM_LOST (the SDK checks that answer
        against the other endpoint once)."""
        self._clock(now)
        if self.role != Role.ACTIVE or self.epoch is None:
            self._not_active(fx, token, rid)
            return True
        if self._leadership_confirmed(now):
            return False
        if now - self._resumed_at >= self.cfg.backend_timeout:
            seen = " ".join(f"{b.name}:{'up' if b.up else '-'}" for b in self.backends)
            code = ErrorCode.QUORUM_LOST
            message = (
                f"fewer than {QUORUM} backends answered this server within "
                f"{self.cfg.backend_timeout:g} s ({seen})"
            )
        else:
            code = ErrorCode.NOT_ACTIVE
            message = "this TMR server was paused and has not confirmed its leadership; retry"
        fx.replies.append(ClientReply(token, rid, error=code, message=message))
        return True

    def _clock(self, now: float) -> None:
        """Notice a pause: no tick or client request for far longer than the tick rate (the
        process was stopped). What this server learned before is stale from then on:
        `_leadership_confirmed` counts only answers to requests sent since, and timeouts
        count only time awake."""
        if self._last_seen is not None and now - self._last_seen > self._pause_gap:
            self._resumed_at = now
        self._last_seen = now if self._last_seen is None else max(self._last_seen, now)

    # ---------------------------------------------------------------- read-only views

    def healthy(self) -> bool:
        return self.role != Role.FENCED

    def licenses_view(self) -> list[LicenseEntry]:
        """The licenses as `list` reports them (also, as maps, in `status`)."""
        return [entry for entry, _ in self._license_rows(self._view_inputs())]

    def _view_inputs(self) -> status_rows.Inputs:
        return status_rows.Inputs(self._floor, self._effective)

    def _license_rows(
        self, inputs: status_rows.Inputs
    ) -> list[tuple[LicenseEntry, dict[str, Any]]]:
        products = self._products if self.role == Role.ACTIVE else {}
        return self._rows.licenses(self.backends, products, inputs)

    def live_leader(self, now: float) -> str | None:
        """Another server that a majority of reachable backends heard as their promised
        leader within `leader_live_window` (None: no other server is alive as leader)."""
        return backends.live_leader(
            self.backends, self.cfg.server_id, now, self.cfg.leader_live_window
        )

    def policy_mismatch(self) -> list[str]:
        """The other servers whose latest policy digest differs from ours: then a failover
        changes the rules (docs/design.md §7.6)."""
        ours = self.policy.digest
        return [s for s, d in self.peer_policies.items() if d and d != ours]

    def _note_peer_policies(self, reported: dict[str, str], fx: Effects) -> None:
        changed = False
        for server, digest in reported.items():
            if server != self.cfg.server_id and self.peer_policies.get(server) != digest:
                self.peer_policies[server] = digest
                changed = True
        if changed and self.policy_mismatch():
            fx.events.append(
                {
                    "event": "policy_mismatch",
                    "level": "warning",
                    "ours": self.policy.digest,
                    "peers": {s: self.peer_policies[s] for s in self.policy_mismatch()},
                    "role": self.role.value,
                }
            )

    def status(self, now: float | None = None) -> dict[str, Any]:
        """A JSON view; `now` defaults to the latest time the leader was given. Its
        per-product rows are kept between calls and rebuilt when what they show changed
        (`status_rows`)."""
        now = self._now if now is None else now
        inputs = self._view_inputs()
        return {
            "server": self.cfg.server_id,
            "role": self.role.value,
            "epoch": [self.epoch.counter, self.epoch.server] if self.epoch else None,
            "fenced_by": str(self.fenced_by) if self.fenced_by else None,
            "live_leader": self.live_leader(now),
            "serial": self.cfg.container_serial,
            "backends": [self._rows.backend(i, b, inputs) for i, b in enumerate(self.backends)],
            "handles": sum(len(p.handles) for p in self._products.values()),
            "ops_committed": self.ops_committed,
            # client requests waiting for this server's takeover to end (replication/parking)
            "parked": self.parked,
            "policy": {
                **self.policy.summary(),
                "peers": dict(sorted(self.peer_policies.items())),
                "mismatch": sorted(self.policy_mismatch()),
            },
            "licenses": [wire for _, wire in self._license_rows(inputs)],
            # (places, seats wanted) per product queued in this term (replication/queue.py)
            "queued": {key_str(k): list(v) for k, v in sorted(self._queue.lengths().items())},
        }

    def handles_view(self, now: float) -> list[dict[str, Any]]:
        return [
            admission.handle_row(
                rec,
                self._leases.left(rec.handle, now),
                p.grant_seq.get(rec.handle, 0) <= p.committed,
            )
            for p in self._products.values()
            for rec in p.handles.values()
        ]

    # ================================================================== internals

    def _reset_term(self) -> None:
        """Forget the term's state (the role changes through `self._roles` alone)."""
        self._products: dict[ProductKey, Product] = {}
        # `_pump`'s work list: products that may have something to send (ordered as
        # `_products`), and whether the next pump must look at every product.
        self._dirty: set[ProductKey] = set()
        # Products whose only business is a commit some backend was not told
        # (`productlog.untold_only`):
        # visited only with other products (an ACCEPT of theirs carries it) or once there are
        # NOTICE_BATCH of them (a commit notice), never by a pump with nothing else to do.
        self._untold: set[ProductKey] = set()
        self._order: dict[ProductKey, int] = {}
        self._sweep = True
        self._handles = HandleIndex()
        self._leases.clear()
        self._bootstrap = False
        self._takeover_started = 0.0
        self._force = False
        self._waiting_for: str | None = None  # the live leader a takeover waits for
        # The backends a takeover asked for their tables (PREPARE asks none at first: one
        # table of the highest version is enough, `takeover.lacking_tables`).
        self._tables_from: set[str] = set()
        self.denials: dict[ProductKey, int] = {}
        # Not replicated: a new term starts with empty queues (the clients queue again)
        self._queue = checkout_queue.CheckoutQueue(self.cfg.queue_hold)
        for b in self.backends if hasattr(self, "backends") else ():
            b.new_term()

    def _send(self, b: Backend, msg: PeerRequest, out: Outstanding, fx: Effects) -> None:
        b.outstanding[msg.mid] = out
        fx.send.append((b.name, msg))

    def _probe(self, b: Backend, now: float, fx: Effects) -> None:
        mid = next(self._mids)
        b.last_probe = now
        # The epoch only while leading: a standby's or fenced server's probe is no sign of life.
        probe = Probe(mid, self.epoch, self.cfg.server_id, self.policy.digest, b.state)
        self._send(b, probe, Outstanding("probe", now), fx)

    def _mark_up(self, b: Backend, fx: Effects) -> None:
        if backends.mark_up(b, fx.events):
            self._eff_cache.clear()
            self._sweep_next_pump()

    def _mark_down(self, b: Backend, fx: Effects, why: str) -> None:
        for p in self._products.values():
            p.holders.discard(b.name)  # entry 0 no longer waits for it (`next_message`)
        if backends.mark_down(b, fx.events, why):
            self._eff_cache.clear()
            self._sweep_next_pump()

    def _timeout(self, b: Backend, mid: int, out: Outstanding, now: float, fx: Effects) -> None:
        del b.outstanding[mid]
        self._sweep_next_pump()
        if out.kind != "probe":
            b.synced = False
        if out.kind == "probe" and b.answered_at > out.sent_at:
            return  # one lost probe: it answered a later request, so it is up
        if out.kind == "repl":
            b.inflight.pop(mid, None)
            b.carrying.pop(mid, None)
            if b.answered_at > out.sent_at:
                # One lost message: it answers later requests, so it is up. Resend what it
                # has not acked (a duplicate is acked again; a gap gets it a snapshot),
                # and the commits it may not have been told.
                b.sent.clear()
                b.told.clear()
                return
        if out.kind == "prepare":
            b.prepare_sent = False
        if out.kind == "crypt":
            self._crypt.on_timeout(mid, now, fx)
            return  # a slow crypt call alone does not make a backend down
        self._mark_down(b, fx, f"no answer to {out.kind} within {self.cfg.backend_timeout}s")
        if (
            out.kind == "prepare"
            and b.name in self._tables_from
            and self.role == Role.TAKEOVER
            and self._phase == Phase.PREPARE
        ):
            # It was asked for its tables and did not answer: ask another holder.
            self._tables_from.discard(b.name)
            self._try_adopt(now, fx)

    def _fence(self, promised: Epoch, b: Backend, fx: Effects) -> None:
        if self.role not in (Role.ACTIVE, Role.TAKEOVER):
            return
        if self.epoch is not None and promised <= self.epoch:
            return
        self._fail_all_waiters(fx, ErrorCode.NOT_ACTIVE, "server fenced by a newer epoch")
        fx.events.append(
            {
                "event": "fenced",
                "server": self.cfg.server_id,
                "epoch": str(self.epoch) if self.epoch else None,
                "by": str(promised),
                "backend": b.name,
            }
        )
        self._roles.fire(Event.FENCE)
        self.fenced_by = promised
        self.epoch = None
        self._reset_term()

    def _park(
        self,
        fx: Effects,
        token: Any,
        rid: str,
        now: float,
        replay: Callable[[float], Effects],
        size: int = 0,
    ) -> Effects:
        """A client request during a takeover, or before the first probes after a pause
        confirm this server (`_waits`): parked until then (`tmr.replication.parking`), or
        answered now as `_answer_unready` says if parking is off or full. Called after
        `_waits`, which read the request's time (`_clock`)."""
        first = not self._parking.waiting
        if self._parking.park(Parked(now, token, rid, replay, size)):
            fx.parked = True
            if first:
                self._parked_for = "takeover" if self.role == Role.TAKEOVER else "pause"
        else:
            self._answer_unready(fx, token, rid, now)
        return fx

    def _answer_unready(self, fx: Effects, token: Any, rid: str, now: float) -> None:
        """What a request that cannot wait (or waited long enough) is answered while
        `_unready`: NOT_ACTIVE, the message saying why (taking over, or resumed from a pause
        and not confirmed yet)."""
        if self.role == Role.TAKEOVER:
            self._not_active(fx, token, rid)
        else:
            self._refuse_unconfirmed(fx, token, rid, now)

    def _waits(self, now: float) -> bool:
        """Whether a client request arriving now is parked (`_park`) rather than decided:
        while this server takes over, and while it is active but has not confirmed its
        leadership since a pause (`_unready`). The request is the first sign of time after a
        pause (SIGSTOP, a frozen VM), read before any tick: `_clock` notices the pause first.
        Without the parking every request queued during the pause would be answered
        NOT_ACTIVE the moment the server resumes, and each client would back off and retry:
        10,000 heartbeating clients after a 5 s pause made 8,000 to 11,000 retries, with
        heartbeat round trips of up to 19 s (`bench.heartbeat_cost --pause 5`)."""
        self._clock(now)
        return self._unready(now)

    def _unready(self, now: float) -> bool:
        """Whether parked requests keep waiting (`_settle_parked`): while this server takes
        over, and, once active, until it has confirmed its leadership if a pause lies within
        `backend_timeout` (then `_refuse_unconfirmed` would answer NOT_ACTIVE). A long step of
        the server's own counts as a pause (`_clock`): adopting a table of 100,000 handles
        takes 0.6 s, and the snapshot acknowledgements that activate the server answer
        messages sent before that step ended; the probes of the next tick confirm it."""
        role = self.role
        if role == Role.TAKEOVER:
            return True
        return (
            role == Role.ACTIVE
            and now - self._resumed_at < self.cfg.backend_timeout
            and not self._leadership_confirmed(now)
        )

    def _settle_parked(self, now: float, fx: Effects) -> None:
        """Answer what waits in the parking: while the takeover goes on, the requests that
        waited `takeover_hold` (NOT_ACTIVE); once it ended, every one, handed to the leader
        again in the order they came (served when ACTIVE, NOT_ACTIVE in any other role)."""
        if not self._parking.waiting:
            return
        if self._unready(now):
            for p in self._parking.overdue(now):
                self._answer_unready(fx, p.token, p.rid, now)
            return
        taken = self._parking.take_all()
        for p in taken:
            fx.extend(p.replay(now))
        fx.events.append(
            {
                "event": "parked_answered",
                "server": self.cfg.server_id,
                "role": self.role.value,
                "after": self._parked_for,
                "requests": len(taken),
                "turned_away": self._parking.turned_away,
            }
        )
        self._parking.turned_away = 0

    def _not_active(self, fx: Effects, token: Any, rid: str) -> Effects:
        msg = {
            Role.STANDBY: "this TMR server is the standby",
            Role.TAKEOVER: "this TMR server is taking over; retry",
            Role.FENCED: "this TMR server was fenced by a newer leader",
            Role.ACTIVE: "",
        }[self.role]
        fx.replies.append(ClientReply(token, rid, error=ErrorCode.NOT_ACTIVE, message=msg))
        return fx

    def _fail_all_waiters(self, fx: Effects, code: ErrorCode, message: str) -> None:
        for p in self._products.values():
            productlog.fail_waiters(p, code, message, fx)
        self._crypt.fail_all(code, message, fx)

    # ---------------------------------------------------------------- licenses

    def _effective(self, key: ProductKey) -> Effective:
        self._floor_in_force(key)
        eff = self._eff_cache.get(key)
        if eff is None:
            eff = self._eff_cache[key] = admission.effective(
                self.backends,
                key,
                below_floor=self._below_floor,
                floor_id=lambda k: self._floor(k).tmr_id,
                backend_keys=self.cfg.backend_keys,
            )
        return eff

    def _admission(
        self,
        key: ProductKey,
        seats: int,
        mode: AccessMode = AccessMode.USER_LIMIT,
        station: Station = ("", "", ""),
    ) -> Admission:
        p = self._products.get(key)
        count = p.count if p else None
        return admission.admit(self.backends, key, seats, self._effective, count, mode, station)

    def _grant_result(self, rec: HandleRecord, now: float) -> CheckoutResult:
        eff = self._effective(rec.key)
        tmr_id = eff.tmr_id
        if tmr_id is None:  # a retry while not available (expired, quorum lost): the copy's
            lic = admission.best_license(self.backends, rec.key, eff)
            tmr_id = lic.tmr_id if lic else 0
        return admission.grant_result(rec, tmr_id, self.cfg.lease)

    # ---------------------------------------------------------------- floors

    def _floor_in_force(self, key: ProductKey) -> None:
        p = self._products.get(key)
        if p is not None and floors.in_force(p):
            self._eff_cache.pop(key, None)

    def _floor(self, key: ProductKey) -> Floor:
        self._floor_in_force(key)
        return floors.floor_of(self._products.get(key), key, self.backends)

    def _below_floor(self, b: Backend, key: ProductKey) -> str:
        return floors.below_floor(b, key, self._floor)

    def _raise_floors(self, fx: Effects) -> None:
        """Propose a `Floor` op for each product whose effective TMR ID rose above its floor,
        or whose time floor is `TIME_FLOOR_STEP` behind the trusted time."""
        if any(b.up and b.clock is None for b in self.backends):
            return  # a backend of an older version would not read a Floor op
        trusted = floors.trusted_time(self.backends)
        for p in self._products.values():
            if p.committed < 0:
                continue
            eff = self._effective(p.key)
            new = floors.raised(p, eff.tmr_id if eff.available else None, trusted)
            if new == p.floor:
                continue
            if new.tmr_id > p.floor.tmr_id:
                fx.events.append(
                    {"event": "floor_raised", "license": key_str(p.key), "tmr_id": new.tmr_id}
                )
            p.floor_seq = self._propose(p, new)
            p.floor = new

    # ---------------------------------------------------------------- leases

    def _expire(self, now: float, fx: Effects) -> None:
        """Expire the handles whose lease ran out (a scan costs those, not every handle)."""
        for h in self._leases.due(now):
            key = self._handles.key_of(h)
            p = self._products.get(key) if key is not None else None
            if p is None or h not in p.handles:
                continue  # not held (any more): nothing to expire
            if p.grant_seq.get(h, 0) > p.committed:
                self._leases.again(h, now)  # not under a client still waiting for the grant
                continue
            self._remove_handle(p, h, ReleaseReason.EXPIRE, fx)

    # ---------------------------------------------------------------- crypt (CryptPort)

    def crypt_refusal(self, job: CryptJob) -> tuple[ErrorCode, str] | None:
        if self.role != Role.ACTIVE or self.epoch is None:
            return ErrorCode.NOT_ACTIVE, "this TMR server is not active"
        # The license must be available as for a checkout (two reachable backends with a
        # valid copy of the effective version), not merely one backend holding the handle.
        code, message, _eff = self._admission(job.key, 0)
        if code is not None and code != ErrorCode.NO_LICENSE_AVAILABLE:
            return code, message
        return None

    def crypt_backends(self, job: CryptJob) -> list[str]:
        return [
            b.name
            for b in self.backends
            if b.up
            and b.holds(job.key)
            and not self._below_floor(b, job.key)
            and b.acked.get(job.key, -1) >= job.min_seq
            and b.name not in job.tried
        ]

    def send_crypt(self, backend: str, job: CryptJob, now: float, fx: Effects) -> int:
        assert self.epoch is not None
        mid = next(self._mids)
        msg = Crypt(
            mid,
            self.epoch,
            job.key,
            job.handle,
            job.client_id,
            job.operation,
            job.data,
            job.owner,
        )
        self._send(self._by_name[backend], msg, Outstanding("crypt", now), fx)
        return mid

    # ---------------------------------------------------------------- log and commit

    def _product(self, key: ProductKey) -> Product:
        p = self._products.get(key)
        if p is None:
            p = Product(key)
            self._products[key] = p
            self._order[key] = len(self._order)
            self._dirty.add(key)
        return p

    def _propose(self, p: Product, op: Op) -> int:
        self._dirty.add(p.key)
        return productlog.propose(p, op)

    def _remove_handle(self, p: Product, handle: str, reason: ReleaseReason, fx: Effects) -> int:
        rec = p.pop(handle)
        p.pending_released[handle] = rec
        seq = self._propose(p, Release(handle, reason, self._wall()))
        p.releasing[handle] = seq
        p.released_by[handle] = (rec.owner, rec.client_id)
        self._leases.drop(handle)
        self._handles.released((rec.owner, rec.client_id, rec.request_id))
        fx.events.append(
            {
                "event": "handle_expired" if reason == ReleaseReason.EXPIRE else "handle_released",
                "handle": handle,
                "license": key_str(p.key),
                "seats": rec.seats,
                "client_id": rec.client_id,
            }
        )
        return seq

    def _reply_when(
        self, p: Product, seq: int, reply: ClientReply, fx: Effects, grant: str = ""
    ) -> None:
        deadline = self._now + self.cfg.backend_timeout + self.cfg.probe_interval
        productlog.reply_when(p, seq, reply, deadline, fx, grant)

    def _answer_overdue(self, now: float, fx: Effects) -> None:
        """A client waits at most backend_timeout (a resend after a lost message included)
        and one probe interval for its entry to commit: after that it is told QUORUM_LOST
        with the backends' state (the op stays queued and may still commit; a retry with
        the same request id gets its outcome).

        Time spent paused does not count (`_clock`): a deadline that passed while the process
        was stopped is held to the same bound after the resume, so the first probes and
        resends after it decide, not the pause (a retry read at the resume, parked until the
        probes confirm this server, would else be told QUORUM_LOST with its entry's quorum
        up)."""
        if now - self._resumed_at < self.cfg.backend_timeout + self.cfg.probe_interval:
            return
        for p in self._unsettled():
            if p.waiters and p.waiters[0].deadline <= now:  # most products: nobody waits
                productlog.answer_overdue(p, now, partial(self._overdue_message, p), fx)

    def _abort_refused(self, now: float, fx: Effects) -> None:
        """Abort grants whose commit is in doubt and that an up backend with a valid copy
        refused (above its own LQ, docs/design.md §6), when the backends that did not refuse
        are too few for a quorum (the other one is down), or the first uncommitted entry has
        waited half of backend_timeout (the rest of the clients' wait bound is for the
        abort's round): `productlog.abort_due`, `productlog.abort_grants`. The wait counts only
        time awake, as a backend's timeout does (`tick`): after a pause of this server the
        acknowledgements may be queued unread."""
        for p in self._unsettled():
            wait = self.cfg.backend_timeout / 2
            refusers = productlog.abort_due(
                p, self.backends, self._below_floor, now, self._resumed_at, wait
            )
            if not refusers:
                continue
            aborted = productlog.abort_grants(p, refusers, self.backends, now, fx)
            self._dirty.add(p.key)
            for h, rec in aborted.items():
                self._handles.abort(h, (rec.owner, rec.client_id, rec.request_id))
                self._leases.drop(h)

    def _overdue_message(self, p: Product) -> str:
        return (
            f"not committed within {self.cfg.backend_timeout + self.cfg.probe_interval:g}s "
            f"(license {key_str(p.key)}: {productlog.commit_state(p, self.backends)})"
        )

    def _recommit(self, p: Product, fx: Effects) -> None:
        committed = p.committed
        ops, gone = productlog.recommit(p, self.backends, fx)
        if p.committed != committed:
            self._dirty.add(p.key)  # the backends are to be told of the commit
        self.ops_committed += ops
        for h in gone:
            self._handles.forget(h)

    def _pump(self, now: float, fx: Effects) -> None:
        if self.role not in (Role.ACTIVE, Role.TAKEOVER) or self.epoch is None:
            return
        if self.role == Role.TAKEOVER and self._phase != Phase.SYNC:
            return
        if self.role != Role.ACTIVE or self._sweep or not self.DIRTY_PUMP:
            # Every product: in a takeover, and after a change of a backend's state
            # (`_sweep_next_pump`). The first pump of a term is a takeover's.
            visit = self._products
            self._sweep = self.role != Role.ACTIVE
        else:
            # Only the products that may have something to send: those with new ops
            # (`_propose`), new commits (`_recommit`), a backend's answer about them
            # (`_on_accepted`), and those not yet settled at the last pump
            # (`productlog.settled`).
            # Products with only an untold commit (`_untold`) come along when there is
            # anything else to send, or when there are enough of them for a commit notice:
            # else a pump would find nothing to send for them (`productlog.next_message`).
            if not self._dirty and len(self._untold) < productlog.NOTICE_BATCH:
                return
            order = self._order
            keys = self._dirty | self._untold
            visit = {k: self._products[k] for k in sorted(keys, key=order.__getitem__)}
        for p in visit.values():
            if p.pending:
                # Flagged only while two backends keep commit knowledge durably (during a
                # rolling upgrade older backends do not): else a grant is answered at its
                # commit and a new leader never aborts it, as before.
                durable = sum(1 for b in self.backends if b.durable) >= QUORUM
                update = durable and productlog.update_under_way(p, self.backends)
                productlog.flush(p, now, update)
        for b in self.backends:
            if not b.up or "snapshot" in b.inflight.values():
                continue
            if self.role == Role.TAKEOVER and b.promise is None:
                continue
            takeover = self.role == Role.TAKEOVER
            if not backends.may_seed(
                self.backends, b, bootstrap=self._bootstrap, takeover=takeover
            ):
                continue
            self._pump_backend(b, visit, now, fx)
        self._dirty, self._untold = set(), set()
        for k, p in visit.items():
            if not productlog.settled(p, self.backends):
                untold = productlog.untold_only(p, self.backends)
                (self._untold if untold else self._dirty).add(k)

    def _unsettled(self) -> list[Product]:
        """The products a tick's scans look at (`_abort_refused`, `_answer_overdue`): those
        that may have an entry not committed or a client waiting, in `_products`' order. A
        product gets either only by a new op or an abort, which put it on `_pump`'s list
        (`_dirty`), and stays on that list while either lasts (it is not settled then, nor
        only untold: `productlog.settled`, `productlog.untold_only`), so the list holds them
        all; an idle leader with 1,000 products walks none of them 20 times a second. With
        `DIRTY_PUMP` off, every product (the simulation compares the two:
        tests/sim/test_pump_dirty.py)."""
        if not self.DIRTY_PUMP:
            return list(self._products.values())
        return [self._products[k] for k in sorted(self._dirty, key=self._order.__getitem__)]

    def _sweep_next_pump(self) -> None:
        """A backend's state changed (up or down, its licenses, floors or log position): the
        next pump looks at every product."""
        self._sweep = True

    def _pump_backend(
        self, b: Backend, products: dict[ProductKey, Product], now: float, fx: Effects
    ) -> None:
        """Send one backend what it lacks: a snapshot, or the next entries (pipelined)."""
        assert self.epoch is not None
        out = productlog.next_message(
            products,
            b,
            now,
            epoch=self.epoch,
            first_snapshot=self.role == Role.TAKEOVER and not b.snapshot_acked,
            below_floor=self._below_floor,
            notify=self._notify_commits,
            new_mid=lambda: next(self._mids),
        )
        if out is None:
            return
        msg, kind, sent = out
        if isinstance(msg, Accept):
            b.told.update(msg.commits)
            if msg.commits:
                b.carrying[msg.mid] = msg.commits
        elif msg.committed:
            b.carrying[msg.mid] = tuple((e.key, e.seq) for e in msg.entries)
        b.inflight[msg.mid] = kind
        b.sent.update(sent)
        self._send(b, msg, Outstanding("repl", now), fx)

    def _notify_commits(self, commits: list[tuple[ProductKey, int]]) -> bool:
        """See `productlog.notify_commits` (only while active)."""
        if self.role != Role.ACTIVE:
            return False
        return productlog.notify_commits(self._products, self.backends, commits)

    # ---------------------------------------------------------------- backend replies

    def _take_status(self, b: Backend, msg: Status, fx: Effects) -> set[ProductKey] | None:
        """`backends.take_status`, and the copies and floors it reports changed applied: a
        change of either makes `b` unsynced (it is reconciled whole) and the effective
        licenses are computed again."""
        taken = backends.take_status(b, msg)
        if taken is None:
            return None
        changed, licenses, floors = taken
        if licenses is not None and self._update_licenses(b, licenses, fx):
            b.synced = False
        if floors is not None and floors != b.floors:
            self._eff_cache.clear()
            self._sweep_next_pump()
            b.floors = floors
            b.synced = False
        return changed

    def _on_status(
        self, b: Backend, msg: Status, changed: set[ProductKey], now: float, fx: Effects
    ) -> None:
        self._note_peer_policies(msg.policies, fx)
        was_caught_up = b.caught_up
        b.clock = msg.clock
        b.promised = msg.promised
        if msg.leader_age is None:
            b.live_epoch, b.live_at = None, float("-inf")
        else:
            b.live_epoch, b.live_at = msg.promised, now - msg.leader_age
        backends.set_caught_up(b, msg.caught_up, now)
        if b.caught_up != was_caught_up:
            self._sweep_next_pump()  # it may now seed or be seeded (`backends.may_seed`)
        if self.epoch is not None and msg.promised > self.epoch:
            self._fence(msg.promised, b, fx)
            return
        if self.role == Role.TAKEOVER:
            if self._phase == Phase.PROBE:
                self._maybe_prepare(now, fx)
            elif not b.prepare_sent and self.epoch is not None:
                self._send_prepare(b, now, fx)
            return
        if self.role == Role.ACTIVE and not b.inflight and self.epoch is not None:
            if b.synced and self.QUIET_STATUS:
                # Reconciled since anything else changed: only the products whose version
                # changed need it (a cost per product, ten times a second, for nothing).
                productlog.resume(b, self._products, b.versions, self.epoch, changed)
                for key in changed:
                    p = self._products.get(key)
                    if p is not None:
                        self._dirty.add(key)
                        self._recommit(p, fx)
                return
            # Reconcile a backend that was away: resume where its durable log is, or snapshot.
            productlog.resume(b, self._products, b.versions, self.epoch)
            self._sweep_next_pump()
            if not b.prepare_sent:
                b.prepare_sent = True  # it joins through snapshots, which raise its promise
            for p in self._products.values():
                self._recommit(p, fx)
            for key in b.licenses:
                self._product(key)
            b.synced = True

    def _update_licenses(
        self, b: Backend, licenses: dict[ProductKey, LicenseInfo], fx: Effects
    ) -> bool:
        if backends.update_licenses(b, licenses, fx.events):
            self._eff_cache.clear()
            self._sweep_next_pump()
            return True
        return False

    # ---------------------------------------------------------------- takeover

    def _maybe_prepare(self, now: float, fx: Effects) -> None:
        if not self._force and self._other_leader_alive(now, fx):
            return
        wait = self.cfg.backend_timeout
        replied = takeover.prepare_to(self.backends, self._takeover_started, now, wait)
        if replied is not None:
            self.last_counter = takeover.next_counter(self.last_counter, self.backends)
            self.epoch = Epoch(self.last_counter, self.cfg.server_id)
            fx.persist_counter = self.last_counter
            self._roles.fire(Event.PREPARE)
            fx.events.append(
                {"event": "prepare", "server": self.cfg.server_id, "epoch": str(self.epoch)}
            )
            for b in replied:
                self._send_prepare(b, now, fx)

    def _other_leader_alive(self, now: float, fx: Effects) -> bool:
        """The liveness guard of a takeover's probe phase: True while it must not prepare
        (another server leads and is alive); gives the promote up once that has lasted
        `backend_timeout + leader_live_window`."""
        other = self.live_leader(now)
        if other is None:
            if self._waiting_for is not None:
                fx.events.append(
                    {
                        "event": "leader_silent",
                        "server": self.cfg.server_id,
                        "was": self._waiting_for,
                    }
                )
                self._waiting_for = None
            return False
        if now - self._takeover_started >= self.cfg.backend_timeout + self.cfg.leader_live_window:
            self._roles.fire(Event.YIELD)
            self._reset_term()
            fx.events.append(
                {"event": "promote_yielded", "server": self.cfg.server_id, "active": other}
            )
        elif self._waiting_for != other:
            self._waiting_for = other
            fx.events.append(
                {"event": "promote_waiting", "server": self.cfg.server_id, "active": other}
            )
        return True

    def _send_prepare(self, b: Backend, now: float, fx: Effects) -> None:
        assert self.epoch is not None
        b.prepare_sent = True
        prepare = Prepare(next(self._mids), self.epoch, tables=b.name in self._tables_from)
        self._send(b, prepare, Outstanding("prepare", now), fx)

    def _on_promise(self, b: Backend, msg: Promise, now: float, fx: Effects) -> None:
        if self.role != Role.TAKEOVER or msg.epoch != self.epoch:
            return
        if self._update_licenses(b, msg.licenses, fx):
            b.state = None  # the copies now come from the promise: the next status is whole
            b.synced = False
        b.promise = msg
        backends.set_caught_up(b, msg.caught_up, now)
        if self._phase != Phase.PREPARE:
            # Adopted already; this late backend joins through a snapshot (by reference to
            # its own table where it holds the adopted one).
            for key, p in self._products.items():
                if p.adopted_from is not None and b.name in takeover.holders(
                    [msg], key, p.adopted_from
                ):
                    p.holders.add(b.name)
            return
        self._try_adopt(now, fx)

    def _try_adopt(self, now: float, fx: Effects) -> None:
        adopt = takeover.to_adopt(self.backends)
        if adopt is None:
            return
        counted, self._bootstrap = adopt
        away = {b.name for b in self.backends if not b.up}
        lacking = takeover.lacking_tables(counted, away)
        present = [pr for pr in counted if pr.name not in away]
        if lacking & away and len(present) >= QUORUM:
            # Only a backend that is down holds a highest version's table: adopt from the
            # promises of the others, a quorum (Paxos adopts from any quorum; a version
            # neither of two backends holds was never committed, so never answered).
            counted = present
            lacking = takeover.lacking_tables(counted, away)
        if lacking:  # the highest version's table is not among them yet: ask its holders
            for name in lacking - self._tables_from:
                self._tables_from.add(name)
                self._send_prepare(self._by_name[name], now, fx)
            return
        self._adopt(counted, now, fx)

    def _adopt(self, promises: list[Promise], now: float, fx: Effects) -> None:
        best = takeover.adopted_logs(promises)
        keys = set(best)
        for b in self.backends:
            keys.update(b.licenses)
        for key in keys:
            table = takeover.adopt(self._product(key), promises, best, fx.events)
            self._handles.adopt(key, table)
            # Leases restart at takeover, plus the margin a deposed leader may have used to
            # confirm a heartbeat (see `heartbeat`).
            self._leases.restart_all([r.handle for r in table], now)
        self._roles.fire(Event.ADOPT)
        fx.events.append(
            {
                "event": "adopted",
                "server": self.cfg.server_id,
                "epoch": str(self.epoch),
                "from": [pr.name for pr in promises],
                "handles": len(self._handles),
            }
        )

    def _on_accepted(
        self, b: Backend, msg: Accepted, out: Outstanding, now: float, fx: Effects
    ) -> None:
        if out.kind != "repl" or msg.epoch != self.epoch:
            return
        kind = b.inflight.pop(msg.mid, None)
        b.confirmed_at = max(b.confirmed_at, out.sent_at)
        if not b.caught_up:
            self._sweep_next_pump()  # it may now seed or be seeded (`backends.may_seed`)
        # The backend replies once its write is durable: it knows these commits (a
        # committed snapshot's entries only where it took them).
        carried = b.carrying.pop(msg.mid, ())
        b.durable = msg.durable
        for key, seq in carried if msg.durable else ():  # an older backend: memory only
            res = msg.results.get(key)
            if kind == "accept" or (res is not None and res.status == EntryStatus.OK):
                b.known[key] = max(b.known.get(key, -1), seq)
        backends.set_caught_up(b, True, now)
        retry_at = now + self.cfg.refuse_retry
        self._dirty.update(productlog.take_results(b, msg, kind, self._products, retry_at, fx))
        if self.role == Role.TAKEOVER and not b.snapshot_acked:
            b.snapshot_acked = True
            if sum(1 for x in self.backends if x.snapshot_acked) >= QUORUM:
                self._roles.fire(Event.ACTIVATE)
                fx.events.append(
                    {"event": "active", "server": self.cfg.server_id, "epoch": str(self.epoch)}
                )
        for key in {*msg.results, *(k for k, _ in carried)}:
            p = self._products.get(key)
            if p is not None:
                self._recommit(p, fx)

    # ---------------------------------------------------------------- helpers

    def _holds(self, handle: str, client_id: str, owner: str) -> bool:
        """Whether `owner` holds `handle` under `client_id` and it is not being released: a
        heartbeat of it renews its lease (`heartbeat`, `renew`)."""
        rec = self._find(handle, client_id, owner)
        return rec is not None and handle not in self._products[rec.key].releasing

    def _find(self, handle: str, client_id: str, owner: str) -> HandleRecord | None:
        """The handle if `owner` holds it under `client_id` (no owner "" ever does)."""
        key = self._handles.key_of(handle)
        if key is None:
            return None
        rec = self._products[key].handles.get(handle)
        if rec is None or not owner or rec.owner != owner or rec.client_id != client_id:
            return None
        return rec
