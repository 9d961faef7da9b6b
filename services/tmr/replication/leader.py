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
"""

from __future__ import annotations

import enum
import itertools
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tmr.errors import ErrorCode
from tmr.licensing.effective import QUORUM, Effective, Holding, effective_version
from tmr.replication.messages import (
    Accept,
    Accepted,
    AcceptEntry,
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
    Snapshot,
    SnapshotEntry,
    Status,
)
from tmr.replication.types import (
    NO_FLOOR,
    ZERO_EPOCH,
    ZERO_VERSION,
    Epoch,
    Floor,
    Grant,
    HandleRecord,
    LicenseInfo,
    Op,
    ProductKey,
    Release,
    ReleaseReason,
    Version,
    floor_refusal,
    key_str,
)

MAX_ENTRY_OPS = 4096  # cap of ops in one log entry (keeps messages well under frame limits)
PIPELINE = 4  # uncommitted log entries per product, and ACCEPTs in flight per backend
# While an entry of a product is uncommitted, the next one is formed only once this many ops
# wait: smaller batches keep growing until the entry in flight commits. Every entry costs a
# message to and a durable commit on each backend, whatever its size; pipelining small entries
# spent that on ever smaller rounds (measured: 17 ops a round at 100 clients instead of 41,
# and about 10 % more CPU per checkout on the servers and backends).
PIPELINE_MIN_OPS = 32
EXPIRY_SCAN = 0.25  # seconds between lease scans (expiry may be this late, never early)
# Replicated floors (`Floor`): checked this often; the time floor is raised only once the
# trusted time is this far past it (at most one time Floor op per product and minute).
FLOOR_SCAN = 1.0
TIME_FLOOR_STEP = 60.0
RECENT_RELEASED = 100_000  # (owner, client id, request id) of released handles remembered per term
HANDLE_RANDOM_BYTES = 16  # a handle id is h<epoch counter>-<server>-<128 random bits, hex>
HANDLE_SHOWN = 128  # characters of an unknown handle id quoted back in an error message


class Role(enum.StrEnum):
    STANDBY = "standby"
    TAKEOVER = "takeover"
    ACTIVE = "active"
    FENCED = "fenced"


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


@dataclass(frozen=True)
class ClientReply:
    token: Any  # opaque routing information of the service
    rid: str
    result: dict[str, Any] | None = None
    error: ErrorCode | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Effects:
    persist_counter: int | None = None  # write durably BEFORE sending anything
    send: list[tuple[str, PeerRequest]] = field(default_factory=list)
    replies: list[ClientReply] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Effects) -> None:
        if other.persist_counter is not None:
            self.persist_counter = other.persist_counter
        self.send.extend(other.send)
        self.replies.extend(other.replies)
        self.events.extend(other.events)


@dataclass
class _Outstanding:
    kind: str  # probe | prepare | repl | crypt
    sent_at: float
    crypt: _CryptJob | None = None


@dataclass
class _CryptJob:
    token: Any
    rid: str
    key: ProductKey
    handle: str
    client_id: str
    operation: str
    data: bytes
    min_seq: int
    owner: str
    tried: set[str] = field(default_factory=set)
    mid: int = 0  # message id of the attempt in flight (the key in `Leader._crypt_jobs`)
    answered: bool = False  # its one reply was sent: no attempt follows


@dataclass
class _Backend:
    name: str
    index: int
    up: bool = False
    promised: Epoch = ZERO_EPOCH
    caught_up: bool = False
    licenses: dict[ProductKey, LicenseInfo] = field(default_factory=dict)
    versions: dict[ProductKey, Version] = field(default_factory=dict)
    outstanding: dict[int, _Outstanding] = field(default_factory=dict)
    last_probe: float = float("-inf")
    answered_at: float = float("-inf")  # send time of the latest request it answered
    status_sent_at: float = float("-inf")  # send time of the probe of the latest Status used
    inflight: dict[int, str] = field(default_factory=dict)  # ACCEPT/SNAPSHOT mids in flight
    sent: dict[ProductKey, int] = field(default_factory=dict)  # highest seq sent (pipelined)
    told: dict[ProductKey, int] = field(default_factory=dict)  # committed seq it was told
    acked: dict[ProductKey, int] = field(default_factory=dict)
    refused_until: dict[ProductKey, float] = field(default_factory=dict)
    refusal: dict[ProductKey, str] = field(default_factory=dict)
    promise: Promise | None = None
    confirmed_at: float = float("-inf")  # send time of the latest request it answered in our epoch
    fresh_since: float | None = None  # when we saw it report a wiped (not caught-up) store
    live_epoch: Epoch | None = None  # its promise, when it reported hearing that leader
    live_at: float = float("-inf")  # when (our clock) it last heard `live_epoch`
    prepare_sent: bool = False
    snapshot_acked: bool = False
    clock: float | None = None  # its trusted wall time (Status; None: an older backend)
    floors: dict[ProductKey, Floor] = field(default_factory=dict)  # its replicated floors

    def holds(self, key: ProductKey) -> bool:
        lic = self.licenses.get(key)
        return lic is not None and lic.valid


@dataclass
class _Waiter:
    seq: int
    reply: ClientReply
    deadline: float  # answered QUORUM_LOST if its entry has not committed by then


@dataclass
class _Product:
    key: ProductKey
    seq: int = 0
    committed: int = -1
    handles: dict[str, HandleRecord] = field(default_factory=dict)
    log: dict[int, tuple[Op, ...]] = field(default_factory=dict)
    pending: list[Op] = field(default_factory=list)
    waiters: list[_Waiter] = field(default_factory=list)
    grant_seq: dict[str, int] = field(default_factory=dict)
    releasing: dict[str, int] = field(default_factory=dict)  # handle -> seq of its release
    released_by: dict[str, tuple[str, str]] = field(default_factory=dict)  # (owner, client id)
    # Records of released handles whose release is not committed yet (for snapshots).
    pending_released: dict[str, HandleRecord] = field(default_factory=dict)
    used: int = 0  # seats of `handles`, kept as handles come and go
    floor: Floor = NO_FLOOR  # the replicated floors, with those of the pending ops
    floor_seq: int = 0  # the entry of the latest Floor op
    floor_committed: Floor = NO_FLOOR  # the floors in force (`floor` once floor_seq commits)
    # The table adopted at takeover is committed state: a promise said its version was
    # committed, so entry 0 goes out as a committed snapshot (recorded above a backend's LQ).
    adopted_committed: bool = False

    def seats(self) -> int:
        return self.used

    def add(self, rec: HandleRecord) -> None:
        if rec.handle not in self.handles:
            self.used += rec.seats
        self.handles[rec.handle] = rec

    def pop(self, handle: str) -> HandleRecord:
        rec = self.handles.pop(handle)
        self.used -= rec.seats
        return rec

    def handles_committed(self) -> list[HandleRecord]:
        """The handle table as of the committed entry (entry 0 until that one commits):
        without grants that are not committed, with handles whose release is not."""
        upto = max(self.committed, 0)
        table = {**self.handles, **self.pending_released}
        return [r for h, r in table.items() if self.grant_seq.get(h, 0) <= upto]


class Leader:
    _phase: str  # TAKEOVER: "probe", "prepare", "sync" (set by `_reset_term`)
    _force: bool  # this takeover skips the leader-liveness guard

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
        self.role = Role.STANDBY
        self.epoch: Epoch | None = None
        self.last_counter = last_counter
        self._wall = wall_clock or (lambda: 0.0)
        self._random_ids = random_ids or (lambda: secrets.token_hex(HANDLE_RANDOM_BYTES))
        self._mids = itertools.count(1)
        self._eff_cache: dict[ProductKey, Effective] = {}  # cleared when a backend changes
        self._next_scan = 0.0
        self._next_floor_scan = 0.0
        self._rr = itertools.count()
        self.backends = [_Backend(name, i) for i, name in enumerate(config.backends)]
        self._by_name = {b.name: b for b in self.backends}
        self._reset_term()
        self.ops_committed = 0
        self.fenced_by: Epoch | None = None
        self.auto_pump = True  # the service turns it off and calls `pump` once per loop turn
        self._now = 0.0  # the latest time the leader was given (for `status`)
        # Pause detection (SIGSTOP, a frozen VM), see `_clock`: ticks and client requests come
        # at least every probe interval, so a longer silence means this process was stopped.
        self._pause_gap = 2 * config.probe_interval
        self._last_seen: float | None = None  # time of the latest tick or client request
        self._resumed_at = float("-inf")  # when this server noticed its latest pause ended

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
            if self._phase == "probe":
                self._maybe_prepare(now, fx)
            return fx
        if self.role in (Role.ACTIVE, Role.TAKEOVER):
            return fx
        self._reset_term()
        self.role = Role.TAKEOVER
        self.fenced_by = None
        self._takeover_started = now
        self._phase = "probe"
        self._force = force
        fx.events.append({"event": "promote", "server": self.cfg.server_id, "force": force})
        for b in self.backends:
            self._probe(b, now, fx)  # a takeover counts only answers to probes from now on
        return fx

    def demote(self, now: float, reason: str = "demote") -> Effects:
        fx = Effects()
        if self.role == Role.STANDBY:
            return fx
        self._fail_all_waiters(fx, ErrorCode.NOT_ACTIVE, "server demoted")
        self.role = Role.STANDBY
        self.epoch = None
        self._reset_term()
        fx.events.append({"event": "demote", "server": self.cfg.server_id, "reason": reason})
        return fx

    def tick(self, now: float) -> Effects:
        fx = Effects()
        self._clock(now)
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
        if self.role == Role.TAKEOVER and self._phase == "probe":
            self._maybe_prepare(now, fx)
        if self.role == Role.ACTIVE and now >= self._next_scan:
            self._next_scan = now + EXPIRY_SCAN
            self._expire(now, fx)
        if self.role == Role.ACTIVE:
            self._answer_overdue(now, fx)
        if self.role == Role.ACTIVE and now >= self._next_floor_scan:
            self._next_floor_scan = now + FLOOR_SCAN
            self._raise_floors(fx)
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
            if out.kind == "crypt" and out.crypt is not None:
                self._crypt_failed(out.crypt, ErrorCode.NOT_ACTIVE, "fenced", fx)
            self._fence(msg.promised, b, fx)
        elif isinstance(msg, Status):
            b.status_sent_at = out.sent_at
            if self.epoch is not None and msg.promised <= self.epoch and msg.caught_up:
                b.confirmed_at = max(b.confirmed_at, out.sent_at)
            self._on_status(b, msg, now, fx)
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
            self._on_crypt_result(b, msg, out, now, fx)
        elif isinstance(msg, PeerError):
            fx.events.append({"event": "backend_error", "backend": b.name, "message": msg.message})
            if out.kind == "repl":
                b.inflight.pop(msg.mid, None)
                b.acked.clear()
                b.sent.clear()
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
    ) -> Effects:
        """`owner`: the authenticated CURVE public key of the client's connection (Z85). Only
        that key may heartbeat, release or use the handle; a request id is deduplicated per
        key, so no other key can take over a retried checkout's reply. `user`, `host`, `pid`:
        what the client says it is, recorded with the handle (informational only)."""
        fx = Effects()
        if self._refuse_unconfirmed(fx, token, rid, now):
            return fx
        assert self.epoch is not None
        key = (firm, product)
        existing = self._by_request.get((owner, client_id, rid))
        if existing is not None:
            p = self._products[self._handle_key[existing]]
            rec = p.handles[existing]
            reply = ClientReply(token, rid, self._grant_result(rec, now))
            self._reply_when(p, p.grant_seq.get(existing, 0), reply, fx)
            self._auto_pump(now, fx)
            return fx
        if (owner, client_id, rid) in self._recent_released:
            fx.replies.append(
                ClientReply(
                    token,
                    rid,
                    error=ErrorCode.UNKNOWN_HANDLE,
                    message="this request id was already used for a handle since released",
                )
            )
            return fx
        code, message, eff = self._admission(key, seats)
        if code is not None:
            self.denials[key] = self.denials.get(key, 0) + (code == ErrorCode.NO_LICENSE_AVAILABLE)
            fx.replies.append(ClientReply(token, rid, error=code, message=message))
            return fx
        assert eff is not None
        p = self._product(key)
        # Random, not a counter: a handle id cannot be guessed (and is useless to another key).
        handle = f"h{self.epoch.counter}-{self.cfg.server_id}-{self._random_ids()}"
        rec = HandleRecord(
            handle, firm, product, seats, client_id, rid, self._wall(), owner, user, host, pid
        )
        seq = self._propose(p, Grant(rec))
        p.add(rec)
        p.grant_seq[handle] = seq
        self._handle_key[handle] = key
        self._by_request[(owner, client_id, rid)] = handle
        self._leases[handle] = now + self.cfg.lease
        self._reply_when(p, seq, ClientReply(token, rid, self._grant_result(rec, now)), fx)
        fx.events.append(
            {
                "event": "handle_granted",
                "handle": handle,
                "license": key_str(key),
                "seats": seats,
                "client_id": client_id,
            }
        )
        self._auto_pump(now, fx)
        return fx

    def heartbeat(
        self, token: Any, rid: str, client_id: str, handle: str, now: float, *, owner: str
    ) -> Effects:
        fx = Effects()
        # Heartbeats are not replicated: only extend a lease while a majority of backends has
        # answered in our epoch recently, so a deposed leader cannot extend leases the new
        # leader does not know of (new leaders add the same margin on takeover).
        rec = self._find(handle, client_id, owner) if self.role == Role.ACTIVE else None
        held = rec is not None and handle not in self._products[rec.key].releasing
        if held:
            # Kept also when not confirmed below: a quorum loss of any length does not
            # expire a handle whose heartbeats arrive. That only delays this server's own
            # expiry (a deposed server commits nothing; a new leader restarts every lease).
            self._leases[handle] = max(self._leases.get(handle, now), now + self.cfg.lease)
        if self._refuse_unconfirmed(fx, token, rid, now):
            return fx
        if not held:
            return self._unknown_handle(fx, token, rid, handle)
        fx.replies.append(ClientReply(token, rid, {"lease": self.cfg.lease}))
        return fx

    def release(
        self, token: Any, rid: str, client_id: str, handle: str, now: float, *, owner: str
    ) -> Effects:
        """A handle this key does not hold (never granted, another key's, released already)
        answers UNKNOWN_HANDLE, the same in every case (no oracle); the client library counts
        it as released when it comes to a retry."""
        fx = Effects()
        if self._refuse_unconfirmed(fx, token, rid, now):
            return fx
        key = self._handle_key.get(handle)
        if key is None:
            return self._unknown_handle(fx, token, rid, handle)
        p = self._products[key]
        rec = p.handles.get(handle)
        if rec is None:
            seq = p.releasing.get(handle)
            if seq is not None and p.released_by.get(handle) == (owner, client_id) and owner:
                # A retry of this key's release whose commit is pending: answer with it.
                self._reply_when(p, seq, ClientReply(token, rid, {"released": True}), fx)
                return fx
            return self._unknown_handle(fx, token, rid, handle)
        if not owner or rec.owner != owner or rec.client_id != client_id:
            return self._unknown_handle(fx, token, rid, handle)
        seq = self._remove_handle(p, handle, ReleaseReason.RELEASE, fx)
        self._reply_when(p, seq, ClientReply(token, rid, {"released": True}), fx)
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
        if self._refuse_unconfirmed(fx, token, rid, now):
            return fx
        rec = self._find(handle, client_id, owner)
        if rec is None:
            return self._unknown_handle(fx, token, rid, handle)
        p = self._products[rec.key]
        min_seq = p.grant_seq.get(handle, 0)
        job = _CryptJob(token, rid, rec.key, handle, client_id, operation, data, min_seq, owner)
        self._crypt_dispatch(job, now, fx)
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
        key = self._handle_key.get(handle)
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
        result = {
            "released": True,
            "handle": handle,
            "firm": rec.firm,
            "product": rec.product,
            "seats": rec.seats,
            "user": rec.user,
            "host": rec.host,
            "pid": rec.pid,
        }
        self._reply_when(p, seq, ClientReply(token, rid, result), fx)
        self._auto_pump(now, fx)
        return fx

    def _from_newer_leader(self, handle: str) -> bool:
        """Handle ids carry the epoch that granted them: `h<counter>-<server>-<random>`."""
        if self.epoch is None or not handle.startswith("h"):
            return False
        counter, _, rest = handle[1:].partition("-")
        server, _, _n = rest.rpartition("-")
        if not counter.isdigit() or not server:
            return False
        return Epoch(int(counter), server) > self.epoch

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
        times = sorted((b.confirmed_at for b in self.backends), reverse=True)
        since = max(now - self.cfg.backend_timeout, self._resumed_at)
        return len(times) >= QUORUM and times[QUORUM - 1] >= since

    def _refuse_unconfirmed(self, fx: Effects, token: Any, rid: str, now: float) -> bool:
        """Answer, and return True for, a client request this server may not answer from its
        own state (its handle table, seat counts and backend view).

        Only a leader confirmed by a majority of backends recently, in its epoch and since its
        latest pause (`_leadership_confirmed`), answers from its state: a deposed server that
        was paused would otherwise grant a released handle again or count released seats.
        Unconfirmed within backend_timeout of a pause: NOT_ACTIVE (the client retries; the
        first probes after the pause either confirm this server or fence it). Unconfirmed
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

    def licenses_view(self) -> list[dict[str, Any]]:
        keys: set[ProductKey] = set()
        for b in self.backends:
            keys.update(b.licenses)
        out = []
        for key in sorted(keys):
            eff = self._effective(key)
            p = self._products.get(key)
            lic = self._best_license(key, eff)
            out.append(
                {
                    "firm": key[0],
                    "product": key[1],
                    "tmr_id": eff.tmr_id,
                    "quantity": eff.quantity,
                    "in_use": p.seats() if p and self.role == Role.ACTIVE else 0,
                    "available": eff.available,
                    "status": eff.status,
                    "floor": self._floor_json(key),
                    "reason": eff.reason.value if eff.reason else None,
                    "expires": lic.expires if lic else None,
                    "features": dict(lic.features) if lic else {},
                }
            )
        return out

    def live_leader(self, now: float) -> str | None:
        """Another server that a majority of reachable backends heard as their promised
        leader within `leader_live_window` (None: no other server is alive as leader)."""
        heard: dict[str, int] = {}
        for b in self.backends:
            e = b.live_epoch
            if (
                b.up
                and e is not None
                and e.server
                and e.server != self.cfg.server_id
                and now - b.live_at < self.cfg.leader_live_window
            ):
                heard[e.server] = heard.get(e.server, 0) + 1
        return next((server for server, n in heard.items() if n >= QUORUM), None)

    def status(self, now: float | None = None) -> dict[str, Any]:
        """A JSON view; `now` defaults to the latest time the leader was given."""
        now = self._now if now is None else now
        return {
            "server": self.cfg.server_id,
            "role": self.role.value,
            "epoch": [self.epoch.counter, self.epoch.server] if self.epoch else None,
            "fenced_by": str(self.fenced_by) if self.fenced_by else None,
            "live_leader": self.live_leader(now),
            "serial": self.cfg.container_serial,
            "backends": [
                {
                    "name": b.name,
                    "up": b.up,
                    "promised": str(b.promised),
                    "caught_up": b.caught_up,
                    "licenses": {
                        key_str(k): {
                            "tmr_id": v.tmr_id,
                            "quantity": v.quantity,
                            "valid": v.valid,
                            "reason": v.reason,
                            "set_index": v.set_index,
                            "problem": self._copy_problem(i, k),
                        }
                        for k, v in sorted(b.licenses.items())
                    },
                    "synced": {key_str(k): s for k, s in sorted(b.acked.items())},
                    "refused": {key_str(k): r for k, r in sorted(self._refusals(b).items())},
                }
                for i, b in enumerate(self.backends)
            ],
            "handles": sum(len(p.handles) for p in self._products.values()),
            "ops_committed": self.ops_committed,
            "licenses": self.licenses_view(),
        }

    def handles_view(self, now: float) -> list[dict[str, Any]]:
        out = []
        for p in self._products.values():
            for rec in p.handles.values():
                out.append(
                    {
                        "handle": rec.handle,
                        "firm": rec.firm,
                        "product": rec.product,
                        "seats": rec.seats,
                        "client_id": rec.client_id,
                        "user": rec.user,
                        "host": rec.host,
                        "pid": rec.pid,
                        "owner": rec.owner,
                        "granted_at": rec.granted_at,
                        "lease_left": max(0.0, self._leases.get(rec.handle, now) - now),
                        "committed": p.grant_seq.get(rec.handle, 0) <= p.committed,
                    }
                )
        return out

    # ================================================================== internals

    def _reset_term(self) -> None:
        self._products: dict[ProductKey, _Product] = {}
        self._handle_key: dict[str, ProductKey] = {}
        self._by_request: dict[tuple[str, str, str], str] = {}  # (owner, client, request id)
        self._recent_released: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._leases: dict[str, float] = {}
        self._crypt_jobs: dict[int, _CryptJob] = {}
        self._phase = ""
        self._bootstrap = False
        self._takeover_started = 0.0
        self._force = False
        self._waiting_for: str | None = None  # the live leader a takeover waits for
        self.denials: dict[ProductKey, int] = {}
        for b in getattr(self, "backends", []):
            b.acked.clear()
            b.confirmed_at = float("-inf")
            b.refused_until.clear()
            b.refusal.clear()
            b.promise = None
            b.prepare_sent = False
            b.snapshot_acked = False
            b.inflight.clear()
            b.sent.clear()
            b.told.clear()
            for mid, out in list(b.outstanding.items()):
                if out.kind != "probe":
                    del b.outstanding[mid]

    def _send(self, b: _Backend, msg: PeerRequest, out: _Outstanding, fx: Effects) -> None:
        b.outstanding[msg.mid] = out
        fx.send.append((b.name, msg))

    def _probe(self, b: _Backend, now: float, fx: Effects) -> None:
        mid = next(self._mids)
        b.last_probe = now
        # The epoch only while leading: a standby's or fenced server's probe is no sign of life.
        self._send(b, Probe(mid, self.epoch), _Outstanding("probe", now), fx)

    def _mark_up(self, b: _Backend, fx: Effects) -> None:
        if not b.up:
            self._eff_cache.clear()
            b.up = True
            fx.events.append({"event": "backend_up", "backend": b.name})

    def _mark_down(self, b: _Backend, fx: Effects, why: str) -> None:
        # Its acks stay durable facts, but it no longer counts for commits or log trimming
        # until it answers again; then it resumes from its log or gets a snapshot.
        b.acked.clear()
        b.sent.clear()
        b.told.clear()
        b.confirmed_at = float("-inf")
        if b.up:
            self._eff_cache.clear()
            b.up = False
            fx.events.append({"event": "backend_down", "backend": b.name, "reason": why})

    def _timeout(self, b: _Backend, mid: int, out: _Outstanding, now: float, fx: Effects) -> None:
        del b.outstanding[mid]
        if out.kind == "probe" and b.answered_at > out.sent_at:
            return  # one lost probe: it answered a later request, so it is up
        if out.kind == "repl":
            b.inflight.pop(mid, None)
            if b.answered_at > out.sent_at:
                # One lost message: it answers later requests, so it is up. Resend what it
                # has not acked (a duplicate is acked again; a gap gets it a snapshot),
                # and the commits it may not have been told.
                b.sent.clear()
                b.told.clear()
                return
        if out.kind == "prepare":
            b.prepare_sent = False
        if out.kind == "crypt" and out.crypt is not None:
            self._crypt_dispatch(out.crypt, now, fx)
            return  # a slow crypt call alone does not make a backend down
        self._mark_down(b, fx, f"no answer to {out.kind} within {self.cfg.backend_timeout}s")

    def _fence(self, promised: Epoch, b: _Backend, fx: Effects) -> None:
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
        self.role = Role.FENCED
        self.fenced_by = promised
        self.epoch = None
        self._reset_term()

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
            for w in p.waiters:
                fx.replies.append(
                    ClientReply(w.reply.token, w.reply.rid, error=code, message=message)
                )
            p.waiters.clear()
        for job in list(self._crypt_jobs.values()):
            self._crypt_failed(job, code, message, fx)
        self._crypt_jobs.clear()

    # ---------------------------------------------------------------- licenses

    def _effective(self, key: ProductKey) -> Effective:
        self._floor_in_force(key)
        eff = self._eff_cache.get(key)
        if eff is None:
            eff = self._eff_cache[key] = self._compute_effective(key)
        return eff

    def _compute_effective(self, key: ProductKey) -> Effective:
        holdings: list[Holding | None] = []
        for b in self.backends:
            lic = b.licenses.get(key)
            ok = b.up and lic is not None and lic.valid and not self._below_floor(b, key)
            holdings.append(
                Holding(
                    lic.tmr_id,
                    lic.quantity,
                    lic.set_id,
                    lic.set_index,
                    lic.fingerprint,
                    lic.backend_key,
                )
                if ok and lic
                else None
            )
        keys = self.cfg.backend_keys or ("",) * len(holdings)
        return self._show_below_floor(key, effective_version(holdings, keys))

    def _show_below_floor(self, key: ProductKey, eff: Effective) -> Effective:
        """A reachable backend's copy below the TMR ID floor does not count, but shows as not
        at the effective ID, ``(#7)``, as during an update (not as ``-``, no copy)."""
        floor = self._floor(key).tmr_id
        parts = eff.status.split(" ")
        if not floor or len(parts) != len(self.backends):
            return eff
        for i, b in enumerate(self.backends):
            lic = b.licenses.get(key)
            if b.up and lic is not None and lic.tmr_id < floor and parts[i] == f"{i + 1}:-":
                parts[i] = f"{i + 1}:(#{lic.tmr_id})"
        return replace(eff, status=" ".join(parts))

    def _copy_problem(self, index: int, key: ProductKey) -> str | None:
        """Why backend ``index``'s copy of ``key`` does not count (None: it counts or is
        not valid / not reachable)."""
        problems = self._effective(key).problems
        problem = problems[index] if index < len(problems) else None
        return problem.value if problem else None

    def _best_license(self, key: ProductKey, eff: Effective) -> LicenseInfo | None:
        best = None
        for b in self.backends:
            lic = b.licenses.get(key)
            if lic is None:
                continue
            if eff.tmr_id is not None and lic.tmr_id == eff.tmr_id:
                return lic
            if best is None or lic.tmr_id > best.tmr_id:
                best = lic
        return best

    def _admission(
        self, key: ProductKey, seats: int
    ) -> tuple[ErrorCode | None, str, Effective | None]:
        known = [b for b in self.backends if key in b.licenses]
        if not known:
            return ErrorCode.UNKNOWN_LICENSE, f"no license {key_str(key)} in this container", None
        eff = self._effective(key)
        if not eff.available:
            up_copies = [b.licenses[key] for b in known if b.up]
            valid = sum(1 for lic in up_copies if lic.valid)
            expired = sum(1 for lic in up_copies if lic.reason == "expired")
            if expired and valid + expired >= QUORUM:
                return ErrorCode.LICENSE_EXPIRED, f"license {key_str(key)} has expired", eff
            why = f", {eff.reason.value}" if eff.reason else ""
            return (
                ErrorCode.QUORUM_LOST,
                f"license {key_str(key)} is held by fewer than 2 reachable backends "
                f"({eff.status}{why})",
                eff,
            )
        p = self._products.get(key)
        used = p.seats() if p else 0
        if used + seats > eff.quantity:
            return (
                ErrorCode.NO_LICENSE_AVAILABLE,
                f"{used} of {eff.quantity} seats of {key_str(key)} in use, {seats} requested",
                eff,
            )
        return None, "", eff

    def _grant_result(self, rec: HandleRecord, now: float) -> dict[str, Any]:
        eff = self._effective(rec.key)
        tmr_id = eff.tmr_id
        if tmr_id is None:  # a retry while not available (expired, quorum lost): the copy's
            lic = self._best_license(rec.key, eff)
            tmr_id = lic.tmr_id if lic else 0
        return {
            "handle": rec.handle,
            "firm": rec.firm,
            "product": rec.product,
            "seats": rec.seats,
            "lease": self.cfg.lease,
            "tmr_id": tmr_id,
        }

    # ---------------------------------------------------------------- log and commit

    def _product(self, key: ProductKey) -> _Product:
        p = self._products.get(key)
        if p is None:
            p = _Product(key)
            self._products[key] = p
        return p

    def _propose(self, p: _Product, op: Op) -> int:
        """Queue an op; return the seq of the entry it will be committed in (each entry
        takes the next MAX_ENTRY_OPS pending ops, in order)."""
        p.pending.append(op)
        return p.seq + 1 + (len(p.pending) - 1) // MAX_ENTRY_OPS

    def _remove_handle(self, p: _Product, handle: str, reason: ReleaseReason, fx: Effects) -> int:
        rec = p.pop(handle)
        p.pending_released[handle] = rec
        seq = self._propose(p, Release(handle, reason, self._wall()))
        p.releasing[handle] = seq
        p.released_by[handle] = (rec.owner, rec.client_id)
        self._leases.pop(handle, None)
        request = (rec.owner, rec.client_id, rec.request_id)
        self._by_request.pop(request, None)
        self._recent_released[request] = None
        if len(self._recent_released) > RECENT_RELEASED:
            self._recent_released.popitem(last=False)
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

    def _reply_when(self, p: _Product, seq: int, reply: ClientReply, fx: Effects) -> None:
        if seq <= p.committed:
            fx.replies.append(reply)
        else:
            deadline = self._now + self.cfg.backend_timeout + self.cfg.probe_interval
            p.waiters.append(_Waiter(seq, reply, deadline))

    def _answer_overdue(self, now: float, fx: Effects) -> None:
        """A client waits at most backend_timeout (a resend after a lost message included)
        and one probe interval for its entry to commit: after that it is told QUORUM_LOST
        with the backends' state (the op stays queued and may still commit; a retry with
        the same request id gets its outcome)."""
        for p in self._products.values():
            if not p.waiters or p.waiters[0].deadline > now:
                continue
            late = [w for w in p.waiters if w.deadline <= now]
            p.waiters = [w for w in p.waiters if w.deadline > now]
            message = (
                f"not committed within {self.cfg.backend_timeout + self.cfg.probe_interval:g}s "
                f"(license {key_str(p.key)}: {self._commit_state(p)})"
            )
            for w in late:
                fx.replies.append(
                    ClientReply(
                        w.reply.token, w.reply.rid, error=ErrorCode.QUORUM_LOST, message=message
                    )
                )

    def _commit_state(self, p: _Product) -> str:
        """Per backend, why it does not help commit `p` (for QUORUM_LOST messages)."""
        out = []
        for b in self.backends:
            if not b.up:
                state = "down"
            elif b.refusal.get(p.key):
                state = f"refuses: {b.refusal[p.key]}"
            elif p.key not in b.licenses:
                state = "no copy"
            else:
                state = f"at {b.acked.get(p.key, '-')}"
            out.append(f"{b.name} {state}")
        return f"committed {p.committed}, last {p.seq}; " + ", ".join(out)

    def _flush(self, p: _Product) -> None:
        """Turn pending ops into the next log entry: at once if every entry is committed;
        behind uncommitted ones (at most PIPELINE) only with PIPELINE_MIN_OPS ops or more."""
        if not p.pending or p.committed < 0:
            return
        uncommitted = p.seq - p.committed
        if uncommitted >= PIPELINE or (uncommitted and len(p.pending) < PIPELINE_MIN_OPS):
            return
        ops, p.pending = tuple(p.pending[:MAX_ENTRY_OPS]), p.pending[MAX_ENTRY_OPS:]
        p.seq += 1
        p.log[p.seq] = ops

    def _recommit(self, p: _Product, fx: Effects) -> None:
        acks = sorted((b.acked[p.key] for b in self.backends if p.key in b.acked), reverse=True)
        if len(acks) < QUORUM or acks[QUORUM - 1] <= p.committed:
            return
        new = acks[QUORUM - 1]
        for s in range(max(p.committed + 1, 1), new + 1):
            self.ops_committed += len(p.log.get(s, ()))
        p.committed = new
        ready = [w for w in p.waiters if w.seq <= new]
        if ready:
            p.waiters = [w for w in p.waiters if w.seq > new]
            fx.replies.extend(w.reply for w in ready)
        for h, s in list(p.releasing.items()):
            if s <= new:
                del p.releasing[h]
                p.pending_released.pop(h, None)
                p.released_by.pop(h, None)
                del self._handle_key[h]
                p.grant_seq.pop(h, None)
        # Trim the log: entries every synced backend has are no longer needed for resends.
        floor = min(acks)
        for s in [s for s in p.log if s <= floor]:
            del p.log[s]

    def _pump(self, now: float, fx: Effects) -> None:
        if self.role not in (Role.ACTIVE, Role.TAKEOVER) or self.epoch is None:
            return
        if self.role == Role.TAKEOVER and self._phase != "sync":
            return
        for p in self._products.values():
            self._flush(p)
        for b in self.backends:
            if not b.up or "snapshot" in b.inflight.values():
                continue
            if self.role == Role.TAKEOVER and b.promise is None:
                continue
            if not self._may_seed(b):
                continue
            self._pump_backend(b, now, fx)

    def _pump_backend(self, b: _Backend, now: float, fx: Effects) -> None:
        """Send one backend what it lacks: a snapshot, or the next entries (pipelined)."""
        assert self.epoch is not None
        snap: list[SnapshotEntry] = []  # committed state
        proposals: list[SnapshotEntry] = []  # entry 0 of a takeover, not committed yet
        entries: list[AcceptEntry] = []
        sent: dict[ProductKey, int] = {}
        commits: list[tuple[ProductKey, int]] = []  # committed seqs it was not told yet
        for p in self._products.values():
            if p.committed > b.told.get(p.key, -1):
                commits.append((p.key, p.committed))
            # Also a backend whose copy is not valid (expired): it records releases and
            # committed state, and refuses grants.
            if p.key not in b.licenses or now < b.refused_until.get(p.key, float("-inf")):
                continue
            acked = b.acked.get(p.key)
            if (
                acked is None
                or (acked < p.seq and (acked + 1) not in p.log)
                or (p.key in b.refusal and acked < p.committed)
            ):
                # Committed state only, then the newer entries one by one: a backend that
                # refused a grant above its own LQ (committed by others) records what a
                # quorum committed (also above its LQ) and still checks every grant it
                # would be a vote for. The floors go with it: a wiped backend is seeded.
                at = max(p.committed, 0)
                entry = SnapshotEntry(p.key, at, tuple(p.handles_committed()), p.floor)
                (snap if p.committed >= 0 or p.adopted_committed else proposals).append(entry)
                continue
            if self._below_floor(b, p.key):
                continue  # seeded: no entries until it holds a copy at or above the floors
            start = max(acked, b.sent.get(p.key, acked)) + 1
            entries.extend(AcceptEntry(p.key, seq, p.log[seq]) for seq in range(start, p.seq + 1))
            if start <= p.seq:
                sent[p.key] = p.seq
        first_snapshot = self.role == Role.TAKEOVER and not b.snapshot_acked
        msg: Snapshot | Accept
        if snap or proposals or first_snapshot:
            if b.inflight:
                return  # a snapshot waits until the pipelined ACCEPTs are answered
            # One kind per message: the backend checks a proposal against its own LQ.
            committed = bool(snap)
            snap = snap or proposals
            msg = Snapshot(next(self._mids), self.epoch, tuple(snap), committed=committed)
            kind = "snapshot"
            sent = {e.key: e.seq for e in snap}
        elif entries and len(b.inflight) < PIPELINE:
            msg = Accept(next(self._mids), self.epoch, tuple(entries), tuple(commits))
            kind = "accept"
        elif commits and not b.inflight and self._notify_commits(commits):
            # A commit notice (an ACCEPT without entries): see `_notify_commits`.
            kind, msg = "accept", Accept(next(self._mids), self.epoch, (), tuple(commits))
        else:
            return
        if isinstance(msg, Accept):
            b.told.update(msg.commits)
        b.inflight[msg.mid] = kind
        b.sent.update(sent)
        self._send(b, msg, _Outstanding("repl", now), fx)

    def _notify_commits(self, commits: list[tuple[ProductKey, int]]) -> bool:
        """Whether to tell a backend of these commits now, in a message of its own (else the
        next ACCEPT carries them). Only while a product holds more seats than some backend's
        valid copy allows (a license update under way): a new leader may then adopt a table
        that backend refuses as a proposal, and records only as committed state, which it
        knows to be so from a promise that was told (docs/design.md §6)."""
        if self.role != Role.ACTIVE:
            return False
        for key, _ in commits:
            used = self._products[key].used
            for x in self.backends:
                lic = x.licenses.get(key)
                if lic is not None and lic.valid and used > lic.quantity:
                    return True
        return False

    # ---------------------------------------------------------------- replies

    def _on_status(self, b: _Backend, msg: Status, now: float, fx: Effects) -> None:
        self._update_licenses(b, msg.licenses, fx)
        b.clock = msg.clock
        if msg.floors != b.floors:
            self._eff_cache.clear()
            b.floors = dict(msg.floors)
        b.promised = msg.promised
        if msg.leader_age is None:
            b.live_epoch, b.live_at = None, float("-inf")
        else:
            b.live_epoch, b.live_at = msg.promised, now - msg.leader_age
        self._set_caught_up(b, msg.caught_up, now)
        b.versions = dict(msg.versions)
        if self.epoch is not None and msg.promised > self.epoch:
            self._fence(msg.promised, b, fx)
            return
        if self.role == Role.TAKEOVER:
            if self._phase == "probe":
                self._maybe_prepare(now, fx)
            elif not b.prepare_sent and self.epoch is not None:
                self._send_prepare(b, now, fx)
            return
        if self.role == Role.ACTIVE and not b.inflight and self.epoch is not None:
            # Reconcile a backend that was away: resume where its durable log is, or snapshot.
            for key, p in self._products.items():
                v = msg.versions.get(key)
                if (
                    v is not None
                    and v.epoch == self.epoch
                    and v.seq <= p.seq
                    and (v.seq == p.seq or (v.seq + 1) in p.log)
                ):
                    b.acked[key] = max(b.acked.get(key, -1), v.seq)
                else:
                    b.acked.pop(key, None)
                b.sent.pop(key, None)
            if not b.prepare_sent:
                b.prepare_sent = True  # it joins through snapshots, which raise its promise
            for p in self._products.values():
                self._recommit(p, fx)
            for key in msg.licenses:
                self._product(key)

    def _update_licenses(
        self, b: _Backend, licenses: dict[ProductKey, LicenseInfo], fx: Effects
    ) -> None:
        if licenses == b.licenses:
            return
        self._eff_cache.clear()
        for key in set(licenses) | set(b.licenses):
            old, new = b.licenses.get(key), licenses.get(key)
            if old != new:
                fx.events.append(
                    {
                        "event": "license_changed",
                        "backend": b.name,
                        "license": key_str(key),
                        "tmr_id": new.tmr_id if new else None,
                        "quantity": new.quantity if new else None,
                        "valid": new.valid if new else False,
                        "reason": new.reason if new else "removed",
                    }
                )
                b.refused_until.pop(key, None)
        b.licenses = dict(licenses)

    def _set_caught_up(self, b: _Backend, caught_up: bool, now: float) -> None:
        b.caught_up = caught_up
        if caught_up:
            b.fresh_since = None
        elif b.fresh_since is None:
            b.fresh_since = now

    def _may_seed(self, b: _Backend) -> bool:
        """May this leader write a snapshot to a backend whose store was wiped?

        A wiped backend forgot its promise, so by itself it would accept a deposed leader.
        Seed it only when two other backends confirmed this epoch after it was seen wiped
        (or, at takeover, promised it), which rules out any newer epoch with a majority."""
        if b.caught_up or self._bootstrap:
            return True
        if self.role == Role.TAKEOVER:
            counted = [x for x in self.backends if x is not b and x.promise and x.promise.caught_up]
            return len(counted) >= QUORUM
        since = b.fresh_since if b.fresh_since is not None else float("inf")
        confirmed = [x for x in self.backends if x is not b and x.confirmed_at >= since]
        return len(confirmed) >= QUORUM

    def _maybe_prepare(self, now: float, fx: Effects) -> None:
        if not self._force and self._other_leader_alive(now, fx):
            return
        # Backends that answered a probe sent since the promote (their state is current).
        replied = [b for b in self.backends if b.up and b.status_sent_at >= self._takeover_started]
        waited = now - self._takeover_started >= self.cfg.backend_timeout
        if len(replied) == len(self.backends) or (len(replied) >= QUORUM and waited):
            top = max([self.last_counter] + [b.promised.counter for b in self.backends])
            self.last_counter = top + 1
            self.epoch = Epoch(self.last_counter, self.cfg.server_id)
            fx.persist_counter = self.last_counter
            self._phase = "prepare"
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
            self.role = Role.STANDBY
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

    def _send_prepare(self, b: _Backend, now: float, fx: Effects) -> None:
        assert self.epoch is not None
        b.prepare_sent = True
        self._send(b, Prepare(next(self._mids), self.epoch), _Outstanding("prepare", now), fx)

    def _on_promise(self, b: _Backend, msg: Promise, now: float, fx: Effects) -> None:
        if self.role != Role.TAKEOVER or msg.epoch != self.epoch:
            return
        self._update_licenses(b, msg.licenses, fx)
        b.promise = msg
        self._set_caught_up(b, msg.caught_up, now)
        if self._phase != "prepare":
            return  # adopted already; this late backend joins through a snapshot
        promises = [x.promise for x in self.backends if x.promise is not None]
        counted = [p for p in promises if p.caught_up]
        # Bootstrap: every backend promised and at most one was ever seeded. Nothing can have
        # been committed without two seeded backends, so the seeded one (if any) has it all.
        bootstrap = len(promises) == len(self.backends) and len(counted) < QUORUM
        if len(counted) < QUORUM and not bootstrap:
            return
        self._bootstrap = bootstrap
        self._adopt(counted, now, fx)

    def _adopt(self, promises: list[Promise], now: float, fx: Effects) -> None:
        best: dict[ProductKey, tuple[Version, tuple[HandleRecord, ...]]] = {}
        for pr in promises:
            for key, (version, handles) in pr.logs.items():
                if key not in best or version > best[key][0]:
                    best[key] = (version, handles)
        keys = set(best)
        for b in self.backends:
            keys.update(b.licenses)
        for key in keys:
            p = self._product(key)
            for pr in promises:  # floors only rise: the highest any promise holds
                p.floor = p.floor.merge(pr.floors.get(key, NO_FLOOR))
            p.floor_committed = p.floor
            # A backend was told this version committed: the table is committed state (the
            # highest version among a quorum's promises is at least any committed one).
            p.adopted_committed = key in best and any(
                pr.commits.get(key, ZERO_VERSION) >= best[key][0] for pr in promises
            )
            for rec in best.get(key, (None, ()))[1]:
                p.add(rec)
                p.grant_seq[rec.handle] = 0
                self._handle_key[rec.handle] = key
                self._by_request[(rec.owner, rec.client_id, rec.request_id)] = rec.handle
                # Leases restart at takeover, plus the margin a deposed leader may have used
                # to confirm a heartbeat (see `heartbeat`).
                self._leases[rec.handle] = now + self.cfg.lease + self.cfg.backend_timeout
        self._phase = "sync"
        fx.events.append(
            {
                "event": "adopted",
                "server": self.cfg.server_id,
                "epoch": str(self.epoch),
                "from": [pr.name for pr in promises],
                "handles": len(self._handle_key),
            }
        )

    def _on_accepted(
        self, b: _Backend, msg: Accepted, out: _Outstanding, now: float, fx: Effects
    ) -> None:
        if out.kind != "repl" or msg.epoch != self.epoch:
            return
        b.inflight.pop(msg.mid, None)
        b.confirmed_at = max(b.confirmed_at, out.sent_at)
        self._set_caught_up(b, True, now)
        for key, res in msg.results.items():
            if res.status == EntryStatus.OK:
                b.acked[key] = max(b.acked.get(key, -1), res.seq)
                b.refusal.pop(key, None)
            else:
                b.acked.pop(key, None)
                b.sent.pop(key, None)
                if res.status == EntryStatus.REFUSED:
                    b.refused_until[key] = now + self.cfg.refuse_retry
                    if b.refusal.get(key) != res.reason:
                        fx.events.append(
                            {
                                "event": "backend_refused",
                                "backend": b.name,
                                "license": key_str(key),
                                "reason": res.reason,
                            }
                        )
                    b.refusal[key] = res.reason
        if self.role == Role.TAKEOVER and not b.snapshot_acked:
            b.snapshot_acked = True
            if sum(1 for x in self.backends if x.snapshot_acked) >= QUORUM:
                self.role = Role.ACTIVE
                fx.events.append(
                    {"event": "active", "server": self.cfg.server_id, "epoch": str(self.epoch)}
                )
        for key in msg.results:
            p = self._products.get(key)
            if p is not None:
                self._recommit(p, fx)

    # ---------------------------------------------------------------- floors

    def _floor_in_force(self, key: ProductKey) -> None:
        """A proposed floor is in force once its entry commits (until then a backend below
        it still gets the entry that carries it)."""
        p = self._products.get(key)
        if p is not None and p.floor_seq <= p.committed and p.floor_committed != p.floor:
            p.floor_committed = p.floor
            self._eff_cache.pop(key, None)

    def _floor(self, key: ProductKey) -> Floor:
        """The product's replicated floors: this term's (adopted, then raised) and any an up
        backend holds durably (a standby knows them from the backends' status)."""
        self._floor_in_force(key)
        p = self._products.get(key)
        floor = p.floor_committed if p is not None else NO_FLOOR
        for b in self.backends:
            if b.up:
                floor = floor.merge(b.floors.get(key, NO_FLOOR))
        return floor

    def _floor_json(self, key: ProductKey) -> dict[str, Any]:
        floor = self._floor(key)
        return {"tmr_id": floor.tmr_id, "time": floor.time}

    def _below_floor(self, b: _Backend, key: ProductKey) -> str:
        """Why backend ``b``'s valid copy of ``key`` does not count under the floors ("": it
        does, or it is not valid anyway)."""
        lic = b.licenses.get(key)
        if lic is None or not lic.valid:
            return ""
        return floor_refusal(lic, self._floor(key))

    def _refusals(self, b: _Backend) -> dict[ProductKey, str]:
        """Its own refusals, and the products for which the leader refuses its copy."""
        out = dict(b.refusal)
        for key, lic in b.licenses.items():
            why = self._below_floor(b, key)
            if why:
                floor = self._floor(key)
                out[key] = (
                    f"{why}: holds #{lic.tmr_id}, the trio's floor is #{floor.tmr_id}"
                    if lic.tmr_id < floor.tmr_id
                    else f"{why}: expires {lic.expires}, trusted time {floor.time:.0f}"
                )
        return out

    def _trusted_time(self) -> float | None:
        """A wall time at least two up backends' clock guards reached (the second highest):
        one backend's clock running ahead cannot raise it, one set back cannot lower it."""
        times = sorted((b.clock for b in self.backends if b.up and b.clock), reverse=True)
        return times[QUORUM - 1] if len(times) >= QUORUM else None

    def _raise_floors(self, fx: Effects) -> None:
        """Propose a `Floor` op for each product whose effective TMR ID rose above its floor,
        or whose time floor is `TIME_FLOOR_STEP` behind the trusted time."""
        if any(b.up and b.clock is None for b in self.backends):
            return  # a backend of an older version would not read a Floor op
        trusted = self._trusted_time()
        for p in self._products.values():
            if p.committed < 0:
                continue
            eff = self._effective(p.key)
            new = p.floor
            if eff.available and eff.tmr_id is not None and eff.tmr_id > new.tmr_id:
                new = new.merge(Floor(eff.tmr_id, 0.0))
            if trusted is not None and trusted >= new.time + TIME_FLOOR_STEP:
                new = new.merge(Floor(0, trusted))
            if new == p.floor:
                continue
            if new.tmr_id > p.floor.tmr_id:
                fx.events.append(
                    {"event": "floor_raised", "license": key_str(p.key), "tmr_id": new.tmr_id}
                )
            p.floor_seq = self._propose(p, new)
            p.floor = new

    # ---------------------------------------------------------------- expiry

    def _expire(self, now: float, fx: Effects) -> None:
        for p in self._products.values():
            # A grant still waiting for its commit is not expired under its waiting client.
            expired = [
                h
                for h in p.handles
                if self._leases.get(h, now) < now and p.grant_seq.get(h, 0) <= p.committed
            ]
            for h in expired:
                self._remove_handle(p, h, ReleaseReason.EXPIRE, fx)

    # ---------------------------------------------------------------- crypt

    def _crypt_dispatch(self, job: _CryptJob, now: float, fx: Effects) -> None:
        """Send the job's next attempt (the one in flight, if any, is given up), or answer.
        A job is in `_crypt_jobs` only under the mid of its attempt in flight, until its one
        reply: retries and fences leave nothing behind to be answered twice."""
        self._crypt_jobs.pop(job.mid, None)
        if job.answered:
            return
        if self.role != Role.ACTIVE or self.epoch is None:
            self._crypt_failed(job, ErrorCode.NOT_ACTIVE, "this TMR server is not active", fx)
            return
        # The license must be available as for a checkout (two reachable backends with a
        # valid copy of the effective version), not merely one backend holding the handle.
        code, message, _eff = self._admission(job.key, 0)
        if code is not None and code != ErrorCode.NO_LICENSE_AVAILABLE:
            self._crypt_failed(job, code, message, fx)
            return
        candidates = [
            b
            for b in self.backends
            if b.up
            and b.holds(job.key)
            and not self._below_floor(b, job.key)
            and b.acked.get(job.key, -1) >= job.min_seq
            and b.name not in job.tried
        ]
        if not candidates:
            self._crypt_failed(job, ErrorCode.QUORUM_LOST, "no backend can serve this call", fx)
            return
        b = candidates[next(self._rr) % len(candidates)]
        job.tried.add(b.name)
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
        job.mid = mid
        self._crypt_jobs[mid] = job
        self._send(b, msg, _Outstanding("crypt", now, crypt=job), fx)

    def _crypt_failed(self, job: _CryptJob, code: ErrorCode, message: str, fx: Effects) -> None:
        self._crypt_answer(job, ClientReply(job.token, job.rid, error=code, message=message), fx)

    def _crypt_answer(self, job: _CryptJob, reply: ClientReply, fx: Effects) -> None:
        """Send the one reply of a crypt request (a second one is dropped)."""
        self._crypt_jobs.pop(job.mid, None)
        if not job.answered:
            job.answered = True
            fx.replies.append(reply)

    def _on_crypt_result(
        self, b: _Backend, msg: CryptResult, out: _Outstanding, now: float, fx: Effects
    ) -> None:
        job = self._crypt_jobs.pop(msg.mid, None)
        if job is None:
            return
        if msg.ok:
            reply = ClientReply(job.token, job.rid, {"data": msg.data, "backend": b.name})
            self._crypt_answer(job, reply, fx)
        elif msg.error == ErrorCode.BAD_REQUEST.value:
            reply = ClientReply(
                job.token, job.rid, error=ErrorCode.BAD_REQUEST, message=msg.message
            )
            self._crypt_answer(job, reply, fx)
        else:
            self._crypt_dispatch(job, now, fx)

    # ---------------------------------------------------------------- helpers

    def _find(self, handle: str, client_id: str, owner: str) -> HandleRecord | None:
        """The handle if `owner` holds it under `client_id` (no owner "" ever does)."""
        key = self._handle_key.get(handle)
        if key is None:
            return None
        rec = self._products[key].handles.get(handle)
        if rec is None or not owner or rec.owner != owner or rec.client_id != client_id:
            return None
        return rec
