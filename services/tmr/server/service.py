"""`tmr server run`: the TMR server, a pyzmq wrapper around the sans-I/O `Leader`.

One thread, one poll loop (`tmr.serving.loop`, shared with the backend; design.md §2): the
ZAP handler, one DEALER per backend (CURVE, this server's node key), the client ROUTER (CURVE,
the shared service key), the leader's pump, the control socket (`tmr.server.ctl_commands`), a
timer tick. Client requests that arrive together are handed to the leader together, so they
share replication rounds (group commit). SIGTERM and SIGINT stop it. No protocol decision is
taken here.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import zmq

from tmr.config import RELOADABLE_SERVER_KEYS, ServerConfig, load_server_config, reload_changes
from tmr.ctl import CtlError, bind_ctl
from tmr.errors import ConfigError, ErrorCode, TmrError
from tmr.expiry import expiry_fields, with_expiry
from tmr.keys import load_keypair
from tmr.licensing.curve import z85_key_bytes
from tmr.logs import enabled, log
from tmr.logs import flush as flush_logs
from tmr.policy import EMPTY as EMPTY_POLICY
from tmr.policy import load_policy
from tmr.protocol import peer_api
from tmr.protocol.client_api import (
    AdminReleaseResult,
    BackendStatus,
    CheckoutRequest,
    CryptRequest,
    ErrorReply,
    HeartbeatRequest,
    LicenseEntry,
    ListRequest,
    ListResult,
    OkReply,
    ReleaseRequest,
    Reply,
    Request,
    StatusRequest,
    StatusResult,
    UsageRequest,
    decode_request,
    encode_ok,
    encode_reply,
)
from tmr.protocol.errors import ProtocolError
from tmr.replication.leader import ClientReply, Effects, Leader, LeaderConfig, Role
from tmr.replication.messages import Denials, Status
from tmr.report.denials import DENIAL_CODES, FLUSH_INTERVAL, DenialRecorder, batches
from tmr.report.worker import CTL_TOKEN
from tmr.server.ctl_commands import SERVER_COMMANDS
from tmr.serving.collector import BULK_FRAME, bulk_step, frozen, thaw
from tmr.serving.commands import CtlServer
from tmr.serving.loop import ServiceLoop, configure_service_logs
from tmr.serving.zap import ZapHandler
from tmr.web.runtime import WebRuntime
from tmr.zap_log import ZapDenials
from tmr.zmqio import NOBLOCK, readable, recv_frames, recv_frames_user, send_frames

TICK = 0.05
_STATUS_KEYS = frozenset(f.name for f in dataclasses.fields(StatusResult)) - {"extra"}
_BACKEND_KEYS = frozenset(f.name for f in dataclasses.fields(BackendStatus)) - {"extra"}


def _with_extra(entry: LicenseEntry, more: dict[str, Any]) -> LicenseEntry:
    return dataclasses.replace(entry, extra={**entry.extra, **more})


MAX_DRAIN = 2000  # messages taken from one socket per loop turn
# The leader's events that end its term or its takeover: what a bulk step froze (the adopted
# table, `tmr.serving.collector.bulk_step`) goes back to the collector (`thaw`).
TERM_ENDS = frozenset({"demote", "fenced", "promote_yielded"})
# ZeroMQ's I/O threads (design.md §2): the client socket's connections on one, the backends'
# on the other. A storm of client connections (10,000 clients reconnecting after a failover:
# a CURVE handshake and a ZAP request each) kept a single I/O thread busy for over a second, so
# the backends' answers waited in it and the leader marked two or three backends down ("no
# answer to repl within 1.0s") and answered QUORUM_LOST although every backend was up.
IO_THREADS = 2
CLIENT_IO = 1 << 0  # ZMQ_AFFINITY bit masks
BACKEND_IO = 1 << 1
# While busy (at least HOLD_MIN_RATE client requests a second over the last RATE_WINDOW), the
# loop waits `idle_hold_ms` (server.toml, 16 ms by default) before it polls again after a turn
# that read client requests and left no message to a backend unanswered (heartbeats, status
# and list requests, refusals: nothing being replicated), so that the requests arriving
# meanwhile share one wake-up (`ServiceLoop.hold`; design.md §2, §11). A turn that starts
# replicating never waits: a checkout or release is answered as soon as its entry commits. A
# request that arrives during a hold waits for its end; below the rate, where a hold would
# gather next to nothing, nothing waits. Measured (docs/performance.md): 1,000 heartbeats a
# second (10,000 clients at the default lease) cost the server 75-89 instead of 125-146 us
# each with 8 ms; 16 ms against 8, paired on a later day: 90-98 against 138 us.
HOLD_MIN_RATE = 200.0
RATE_WINDOW = 1.0
# Events that come at the rate of checkouts are logged at debug: at info they would flood the
# journal (journald drops a service's lines above its rate limit, 10,000 per 30 s by default,
# the important ones with them). The backends' usage record keeps every grant and release
# durably (`tmr report usage`), and /metrics counts them. Expiries stay at info: they are rare
# and say that a client stopped without releasing.
DEBUG_EVENTS = frozenset(
    {"handle_granted", "handle_released", "checkout_queued", "checkout_unqueued"}
)
# The leader's reply token of an administrator's release asked on the control socket
# (`tmr admin release`) is ("ctl-admin", n): its reply goes to the control socket as JSON,
# once committed. The leader answers within backend_timeout + one probe interval; should it
# not, the control socket (keepalived's health checks use it too) is answered TIMEOUT after
# ADMIN_CTL_WAIT and a late reply is dropped.
ADMIN_CTL = "ctl-admin"
ADMIN_CTL_WAIT = 5.0
# The answer to a request on a connection whose key is no longer in client_allowlist
NOT_ADMITTED = "this client's key is not in the server's client_allowlist (any longer)"
WEB_RELEASE = "web-release"  # token ("web-release", id): a release asked on WebAdmin


def container_serial(service_public_key: str) -> str:
    digest = hashlib.sha256(b"tmr-virtual-container\0" + service_public_key.encode()).digest()
    return f"131-{int.from_bytes(digest[:8], 'big') % 10_000_000:07d}"


def log_events(events: list[dict[str, Any]]) -> None:
    """Log the leader's events: `DEBUG_EVENTS` at debug, every other one at its `level`
    (info unless the event says otherwise, e.g. `policy_mismatch` at warning)."""
    debug = enabled("debug")
    for ev in events:
        event = ev["event"]
        level = "debug" if event in DEBUG_EVENTS else str(ev.get("level", "info"))
        if level != "debug" or debug:
            fields = dict(ev)
            del fields["event"]
            fields.pop("level", None)
            log(event, level=level, **fields)


class CounterFile:
    """The highest epoch counter this server used, written durably before it is used."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "epoch_counter"

    def load(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            raise TmrError(f"{self.path}: corrupt epoch counter {text[:20]!r}")
        return int(text)

    def store(self, value: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            fh.write(f"{value}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class ServerService:
    def __init__(self, cfg: ServerConfig, config_path: Path | None = None) -> None:
        self.cfg = cfg  # the configuration in force (a reload replaces its reloadable keys)
        # server.toml, read again by `tmr ctl reload` and SIGHUP (None: only the policy file)
        self.config_path = config_path
        configure_service_logs("server", cfg.name, cfg.log_level)
        self.service_keys = load_keypair(cfg.service_key_file)
        self.node_keys = load_keypair(cfg.node_key_file)
        self.counter = CounterFile(cfg.state_dir)
        self.serial = cfg.container_serial or container_serial(self.service_keys.public)
        self.leader = Leader(
            LeaderConfig(
                server_id=cfg.name,
                backends=tuple(b.name for b in cfg.backends),
                backend_keys=tuple(z85_key_bytes(b.public_key).hex() for b in cfg.backends),
                lease=cfg.lease_seconds,
                backend_timeout=cfg.backend_timeout,
                probe_interval=cfg.probe_interval,
                leader_live_window=cfg.leader_live_window,
                takeover_hold=cfg.takeover_hold_ms / 1000.0,
                container_serial=self.serial,
            ),
            last_counter=self.counter.load(),
            wall_clock=time.time,
        )
        self.leader.auto_pump = False  # the loop pumps once per turn
        # The site's policy file: a bad one stops the start (a ConfigError naming the place);
        # `tmr ctl reload` and SIGHUP replace it only with a file that checks in full.
        self.leader.policy = load_policy(cfg.policy_file) if cfg.policy_file else EMPTY_POLICY
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=IO_THREADS)
        self.loop = ServiceLoop()
        self.started = time.monotonic()
        self.web = WebRuntime(cfg)  # WebAdmin, /metrics, usage reports (tmr.web)
        # Refused checkouts, sent to the backends that keep denial records (design.md §7.6)
        self.denials = DenialRecorder(cfg.name)
        self.denial_backends: set[str] = set()  # those whose latest status said so
        # Checkouts the leader parked during a takeover, by (token, rid): their answers come
        # with a later input's effects and are recorded then (`_parked_answers`)
        self._parked_checkouts: dict[tuple[Any, str], tuple[CheckoutRequest, str]] = {}
        # The control socket's commands (tmr.server.ctl_commands); usage and release are
        # answered when ready, and the socket takes no request meanwhile.
        self.ctl_server = CtlServer(SERVER_COMMANDS, self)
        self._ctl_admin: tuple[str, int] | None = None  # the admin release being committed
        self._ctl_admin_deadline = 0.0
        self._ctl_admin_n = 0
        # Refused client handshakes: counted in /metrics, logged once per key and minute.
        self.zap_denials = ZapDenials(
            "client_denied", on_denied=lambda: self.web.metrics.on_handshake_denied("client")
        )
        # ZAP runs for every client connection, also without an allowlist (then any key is
        # accepted): it sets the User-Id of each message to the client's CURVE public key,
        # which owns the handles that connection checks out.
        self.zap = ZapHandler(None, self.zap_denials, socket="client")
        # Requests on a connection whose key a reload took off the allowlist: refused, logged
        # once per key and minute.
        self.refused_clients = ZapDenials("client_refused")
        self.admin_keys: frozenset[str] = frozenset()  # CURVE keys allowed usage reports
        self._admit(cfg)
        self.idle_hold = cfg.idle_hold_ms / 1000.0  # seconds; 0: never hold a turn back
        self._turn_requests = 0  # client requests read this turn
        self._window_requests = 0  # ... since _window_start
        self._window_start = float("-inf")
        self._busy = False  # the last window's rate reached HOLD_MIN_RATE

    # ------------------------------------------------------------------ sockets

    def _open(self) -> None:
        cfg = self.cfg
        self.loop.serve_zap(self.ctx, self.zap)  # before the CURVE socket is bound
        self.client = self.ctx.socket(zmq.ROUTER)
        self.client.setsockopt(zmq.LINGER, 0)
        self.client.setsockopt(zmq.AFFINITY, CLIENT_IO)  # set before bind to count
        self.client.setsockopt(zmq.CURVE_SERVER, 1)
        self.client.setsockopt(zmq.CURVE_PUBLICKEY, self.service_keys.public.encode())
        self.client.setsockopt(zmq.CURVE_SECRETKEY, self.service_keys.secret.encode())
        self.client.setsockopt(zmq.RCVHWM, 100_000)
        self.client.setsockopt(zmq.SNDHWM, 100_000)
        self.client.setsockopt(zmq.MAXMSGSIZE, 256 * 1024)
        self.client.bind(cfg.client_listen)
        self.dealers: dict[str, zmq.Socket[bytes]] = {}
        self.by_socket: dict[zmq.Socket[bytes], str] = {}
        for ref in cfg.backends:
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.AFFINITY, BACKEND_IO)
            s.setsockopt(zmq.IMMEDIATE, 1)
            s.setsockopt(zmq.SNDHWM, 10_000)
            s.setsockopt(zmq.RCVHWM, 10_000)
            s.setsockopt(zmq.RECONNECT_IVL, 100)
            s.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            # A backend host that died leaves a TCP connect hanging in SYN retries (minutes)
            # when it comes back with its old address: give each attempt 1 s, then retry.
            s.setsockopt(zmq.CONNECT_TIMEOUT, 1000)
            # ZMTP heartbeats drop a connection whose peer vanished without a FIN or RST
            # (host powered off, paused, cut off), so the socket reconnects on its own.
            s.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
            s.setsockopt(zmq.CURVE_SERVERKEY, ref.public_key.encode())
            s.setsockopt(zmq.CURVE_PUBLICKEY, self.node_keys.public.encode())
            s.setsockopt(zmq.CURVE_SECRETKEY, self.node_keys.secret.encode())
            s.connect(ref.endpoint)
            self.dealers[ref.name] = s
            self.by_socket[s] = ref.name
        self.ctl = bind_ctl(self.ctx, cfg.ctl_socket)
        self.web.open(self.ctx, self.node_keys)

    def _close(self) -> None:
        self.web.close()
        for s in [self.client, self.ctl, *self.dealers.values()]:
            s.close(linger=0)
        self.zap.close()
        self.loop.close()
        self.ctx.term()
        try:
            self.cfg.ctl_socket.unlink()
        except OSError:
            pass

    # ------------------------------------------------------------------ effects

    def apply(self, fx: Effects) -> None:
        if self._parked_checkouts:
            self._parked_answers(fx)
        if fx.persist_counter is not None:
            try:
                self.counter.store(fx.persist_counter)
            except OSError as exc:
                # Never lead with an epoch counter that is not durable: give the term up.
                log("storage_error", level="error", error=str(exc), path=str(self.counter.path))
                fx.send.clear()
                self.apply(self.leader.demote(time.monotonic(), "cannot persist epoch"))
        self.web.on_effects(fx)
        if fx.events:
            log_events(fx.events)
            if frozen() and any(ev.get("event") in TERM_ENDS for ev in fx.events):
                thaw()  # the adopted table, frozen by `_drain_backend`, is no longer the term's
        for name, msg in fx.send:
            try:
                self.dealers[name].send(peer_api.encode_request(msg), NOBLOCK)
            except zmq.Again:
                pass  # not connected: the leader times the request out
        for r in fx.replies:
            if isinstance(r.token, tuple) and r.token[0] == ADMIN_CTL:
                self._ctl_admin_answer(r)
            elif isinstance(r.token, tuple) and r.token[0] == WEB_RELEASE:
                self.web.answer_release(r.token[1], self._admin_answer(r))
            else:
                self._send_payload(r.token, self._wire_payload(r))

    def _parked_answers(self, fx: Effects) -> None:
        """Count and record the answers to checkouts that waited for a takeover's end (the
        leader's `parking`) as `dispatch` does for the others: a refusal is a denial."""
        for r in fx.replies:
            got = self._parked_checkouts.pop((r.token, r.rid), None)
            if got is not None:
                self._checkout_answered(*got, Effects(replies=[r]))
        if not self.leader.parked:
            self._parked_checkouts.clear()  # none waits any more (bounded by the parking)

    def _wire_reply(self, r: ClientReply) -> Reply:
        """The reply a leader's (or this service's) answer to a client becomes: the typed
        result is encoded by `encode_reply` through its `to_wire`."""
        if r.error is not None:
            return ErrorReply(r.rid, r.error.value, r.message)
        if r.result is None or isinstance(r.result, AdminReleaseResult):
            raise TypeError(f"no client result for request {r.rid!r}: {r.result!r}")
        return OkReply(r.rid, r.result)

    def _wire_payload(self, r: ClientReply) -> bytes:
        """The one place an answer to a client becomes bytes: `_wire_reply` encoded; an OK
        reply through `encode_ok`'s templates (the same bytes, no reply object)."""
        result = r.result
        if r.error is None and result is not None and not isinstance(result, AdminReleaseResult):
            return encode_ok(r.rid, result)
        return encode_reply(self._wire_reply(r))

    def _reply(self, token: Any, reply: Reply) -> None:
        self._send_payload(token, encode_reply(reply))

    def _send_payload(self, token: Any, payload: bytes) -> None:
        identity, delimited = token
        frames = [identity, b"", payload] if delimited else [identity, payload]
        try:
            send_frames(self.client, frames)
        except zmq.ZMQError:
            pass  # the client went away; it retries with the same request id

    # ------------------------------------------------------------------ inputs

    def on_client(self, frames: list[bytes], now: float, owner: str = "") -> None:
        """One client message; `owner`: the Z85 CURVE key of its connection (ZAP User-Id)."""
        self._turn_requests += 1
        if len(frames) == 3 and frames[1] == b"":
            token, payload = (frames[0], True), frames[2]
        elif len(frames) == 2:
            token, payload = (frames[0], False), frames[1]
        else:
            if frames:
                self._reply((frames[0], False), ErrorReply("", "BAD_REQUEST", "bad envelope"))
            return
        try:
            req = decode_request(payload)
        except ProtocolError as exc:
            self._reply(token, ErrorReply.from_exception(exc))
            return
        allowed = self.zap.allowed
        if allowed is not None and owner not in allowed and type(req) is not ReleaseRequest:
            # A connection made before its key was taken off client_allowlist (`reload`): it
            # may still give its seats back, nothing else.
            self.refused_clients.denied(owner)
            self._reply(token, ErrorReply(req.rid, ErrorCode.UNAUTHORIZED, NOT_ADMITTED))
            return
        if (
            type(req) is HeartbeatRequest
            and owner
            and self.leader.renew(req.handle, req.cid, now, owner=owner)
        ):
            # Most requests of a large site: answered without effects (`Leader.renew`).
            self._send_payload(token, encode_ok(req.rid, self.leader.renewed))
            return
        self.apply(self.dispatch(token, req, now, owner))

    def dispatch(self, token: Any, req: Request, now: float, owner: str = "") -> Effects:
        ld = self.leader
        if not owner and isinstance(
            req, CheckoutRequest | HeartbeatRequest | ReleaseRequest | CryptRequest
        ):
            # Never: ZAP gives every CURVE connection its key. A seat needs an owner.
            fx = Effects()
            fx.replies.append(
                ClientReply(token, req.rid, error=ErrorCode.BAD_REQUEST, message="no client key")
            )
            return fx
        match req:
            case CheckoutRequest():
                fx = ld.checkout(
                    token,
                    req.rid,
                    req.cid,
                    req.firm,
                    req.product,
                    req.seats,
                    now,
                    owner=owner,
                    user=req.user,
                    host=req.host,
                    pid=req.pid,
                    wait=req.wait,
                    mode=req.mode,
                )
                if fx.parked:  # answered when the takeover ends: recorded then (`apply`)
                    self._parked_checkouts[(token, req.rid)] = (req, owner)
                else:
                    self._checkout_answered(req, owner, fx)
                return fx
            case HeartbeatRequest():
                return ld.heartbeat(token, req.rid, req.cid, req.handle, now, owner=owner)
            case ReleaseRequest():
                return ld.release(token, req.rid, req.cid, req.handle, now, owner=owner)
            case CryptRequest():
                return ld.crypt(
                    token, req.rid, req.cid, req.handle, req.operation, req.data, now, owner=owner
                )
            case ListRequest():
                fx = Effects()
                if ld.role != Role.ACTIVE:
                    fx.replies.append(
                        ClientReply(token, req.rid, error=ErrorCode.NOT_ACTIVE, message="standby")
                    )
                else:
                    fx.replies.append(ClientReply(token, req.rid, self.list_result()))
                return fx
            case StatusRequest():
                fx = Effects()
                fx.replies.append(ClientReply(token, req.rid, self.status_result(now)))
                return fx
            case UsageRequest():
                return self._usage_report(token, req, owner)

    def _checkout_answered(self, req: CheckoutRequest, owner: str, fx: Effects) -> None:
        """A checkout's answer (in `fx`) into WebAdmin's counts and the denial record."""
        self.web.on_checkout(req.firm, req.product, req.rid, fx)
        self._record_refusals(req, owner, fx)

    def _record_refusals(self, req: CheckoutRequest, owner: str, fx: Effects) -> None:
        """Record this checkout's refusal, if it was answered one (`DENIAL_CODES`): who
        (the connection's key, the user, host and pid it gave), what, why, when."""
        for r in fx.replies:
            if r.rid == req.rid and r.error in DENIAL_CODES:
                assert r.error is not None
                self.denials.record(
                    time.time(),
                    r.error.value,
                    req.firm,
                    req.product,
                    req.seats,
                    owner=owner,
                    user=req.user,
                    host=req.host,
                    pid=req.pid,
                    rule=r.message,
                )

    def _flush_denials_step(self, now: float) -> None:
        self.flush_denials()

    def flush_denials(self) -> int:
        """Send the buffered refusals to every up backend that keeps denial records (fire and
        forget, at most `MAX_PER_FLUSH` a turn); the number of rows sent. While no such
        backend is up they stay buffered (bounded: `DenialRecorder.max_pending`)."""
        targets = [b.name for b in self.leader.backends if b.up and b.name in self.denial_backends]
        if not targets or not self.denials.pending:
            return 0
        rows = self.denials.take()
        for batch in batches(rows, peer_api.MAX_DENIAL_BATCH):
            frame = peer_api.encode_denials(Denials(0, batch))
            self.denials.sent_batches += 1
            for name in targets:
                try:
                    self.dealers[name].send(frame, NOBLOCK)
                except zmq.Again:
                    pass  # not connected: the other backends keep it
        return len(rows)

    def _usage_report(self, token: Any, req: UsageRequest, owner: str) -> Effects:
        """Queue `tmr report usage` for the worker thread (it answers the client later).

        Only for a connection whose CURVE key (``owner``, from ZAP) is in ``admin_keys``: a
        report shows every client's usage and costs the backends a large read."""
        fx = Effects()
        if not owner or owner not in self.admin_keys:
            fx.replies.append(
                ClientReply(
                    token,
                    req.rid,
                    error=ErrorCode.UNAUTHORIZED,
                    message="usage reports are answered only for admin keys (server.toml "
                    "admin_keys) or on the control socket",
                )
            )
            return fx
        if self.leader.role != Role.ACTIVE:
            fx.replies.append(
                ClientReply(token, req.rid, error=ErrorCode.NOT_ACTIVE, message="standby")
            )
            return fx
        problem = self.web.submit_usage(
            token, req, self.leader.status(), frozenset(self.denial_backends)
        )
        if problem is not None:
            fx.replies.append(
                ClientReply(token, req.rid, error=ErrorCode.BAD_REQUEST, message=problem)
            )
        return fx

    def status(self, now: float) -> dict[str, Any]:
        st = self.leader.status(now)
        # The server whose epoch the reachable backends promised last is the likely leader.
        promised = [b.promised for b in self.leader.backends if b.up]
        top = max(promised, default=None)
        st["active_hint"] = top.server if top is not None and top.server else None
        st["uptime"] = round(now - self.started, 1)
        st["licenses"] = self._licenses_with_expiry(st["licenses"])
        st["expiry_warning_days"] = self.cfg.expiry_warning_days
        return st

    def status_result(self, now: float) -> StatusResult:
        """The `status` operation's result: the operators' status view (`status`), its
        documented keys typed, the rest (licenses, policy, uptime, ...) in ``extra``."""
        st = self.status(now)
        backends = tuple(
            BackendStatus(
                b["name"], b["up"], {k: v for k, v in b.items() if k not in _BACKEND_KEYS}
            )
            for b in st["backends"]
        )
        epoch = st["epoch"]
        return StatusResult(
            server=st["server"],
            role=st["role"],
            epoch=None if epoch is None else (epoch[0], epoch[1]),
            active_hint=st["active_hint"],
            backends=backends,
            handles=st["handles"],
            ops_committed=st["ops_committed"],
            extra={k: v for k, v in st.items() if k not in _STATUS_KEYS},
        )

    def list_result(self) -> ListResult:
        """The `list` operation's result: the leader's license entries, each with its days
        left and expiry state (`tmr.expiry`) in ``extra``."""
        now_wall, warning = time.time(), self.cfg.expiry_warning_days
        return ListResult(
            self.serial,
            self.cfg.name,
            tuple(
                _with_extra(e, expiry_fields(e.expires, now_wall, warning))
                for e in self.leader.licenses_view()
            ),
        )

    def _licenses_with_expiry(self, licenses: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each license with its days left and expiry state (`tmr.expiry`)."""
        return with_expiry(licenses, time.time(), self.cfg.expiry_warning_days)

    def ctl_usage(self, since: float, until: float) -> None:
        """`tmr ctl usage`: queue a usage report; the loop answers when the worker is done
        (the control socket takes no other request meanwhile)."""
        if self.leader.role != Role.ACTIVE:
            raise CtlError(f"usage: this server is {self.leader.role.value}, not active")
        try:
            usage = UsageRequest("ctl", since, until)
        except ProtocolError as exc:
            raise CtlError(f"usage: {exc.message}") from None
        problem = self.web.submit_usage(
            CTL_TOKEN, usage, self.leader.status(), frozenset(self.denial_backends)
        )
        if problem is not None:
            raise CtlError(f"usage: {problem}")

    def ctl_admin_release(self, handle: str, by: str, now: float) -> None:
        """`tmr admin release HANDLE`: free a handle through the quorum (an ordinary release
        op); the control socket is answered once it commits, or with the leader's error."""
        log("ctl", cmd="release", handle=handle, by=by)
        self._ctl_admin_n += 1
        token = (ADMIN_CTL, self._ctl_admin_n)
        self._ctl_admin = token
        self._ctl_admin_deadline = now + ADMIN_CTL_WAIT
        self.apply(self.leader.admin_release(token, "ctl", handle, now, by=by))

    def _ctl_admin_answer(self, r: ClientReply) -> None:
        """The leader's answer to `_ctl_admin_release`, sent on the control socket (a late
        one, after `_ctl_admin_overdue` answered, is dropped)."""
        if r.token != self._ctl_admin:
            return
        self._ctl_admin = None
        self.ctl_server.answer(self._admin_answer(r))

    def _ctl_admin_overdue(self, now: float) -> None:
        """Never leave the control socket waiting: TIMEOUT after ADMIN_CTL_WAIT."""
        if self._ctl_admin is None or now < self._ctl_admin_deadline:
            return
        self._ctl_admin = None
        message = f"release: no answer from the leader within {ADMIN_CTL_WAIT:g} s"
        self.ctl_server.answer({"ok": False, "code": "TIMEOUT", "error": message})

    @staticmethod
    def _admin_answer(r: ClientReply) -> dict[str, Any]:
        if r.error is not None:
            return {"ok": False, "code": r.error.value, "error": r.message}
        return {"ok": True, **(r.result.to_wire() if r.result is not None else {})}

    def _web_releases(self, now: float) -> None:
        """Run the releases an administrator asked on WebAdmin (authenticated only)."""
        for req in self.web.take_releases():
            log("web", cmd="release", handle=req.handle, by=req.by)
            token = (WEB_RELEASE, req.id)
            self.apply(self.leader.admin_release(token, "web", req.handle, now, by=req.by))

    def _on_sighup(self, signum: int) -> None:
        try:
            self.reload("SIGHUP")
        except Exception as exc:  # never: the loaders raise ConfigError; a reload never stops
            log("config_reload_failed", level="error", trigger="SIGHUP", error=repr(exc))

    def _admit(self, cfg: ServerConfig) -> None:
        """Put ``cfg``'s key lists in force (at start and by `reload`): new handshakes meet
        the allowlist at once (ZAP); the connections of a key taken off it are refused request
        by request (`on_client`)."""
        self.admin_keys = frozenset(cfg.admin_keys)
        self.zap.allowed = frozenset(cfg.client_allowlist) if cfg.client_allowlist else None

    def reload(self, trigger: str) -> dict[str, Any]:
        """Read server.toml and the policy file again and put in force what a running server
        can change (`RELOADABLE_SERVER_KEYS`: the client allowlist, the admin keys, the
        policy); the answer lists the other keys that changed, which need a restart. A file
        that does not check in full changes nothing: the answer and the log say why, and the
        keys and the policy in force stay."""
        try:
            cfg = load_server_config(self.config_path) if self.config_path else self.cfg
            path = cfg.policy_file
            policy = load_policy(path) if path is not None else EMPTY_POLICY
        except ConfigError as exc:
            log("config_reload_failed", level="error", trigger=trigger, error=str(exc))
            return {"ok": False, "code": "BAD_REQUEST", "error": str(exc)}
        applied, restart = reload_changes(self.cfg, cfg)
        self.cfg = dataclasses.replace(
            self.cfg, **{k: getattr(cfg, k) for k in RELOADABLE_SERVER_KEYS}
        )
        self._admit(cfg)
        before = self.leader.policy.digest
        self.leader.policy = policy
        summary = policy.summary()
        log("policy_loaded", trigger=trigger, changed=summary["digest"] != before, **summary)
        config = {
            "file": str(self.config_path) if self.config_path else None,
            "applied": applied,
            "restart_needed": restart,
            "client_allowlist": len(cfg.client_allowlist),
            "admin_keys": len(cfg.admin_keys),
        }
        log(
            "config_reloaded",
            level="warning" if restart else "info",
            trigger=trigger,
            **config,
        )
        return {"ok": True, "policy": summary, "config": config}

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        loop = self.loop
        loop.stop_on_signals(signal.SIGTERM, signal.SIGINT)
        loop.on_signal(signal.SIGHUP, self._on_sighup)  # systemctl reload
        loop.install_signals()  # a signal during the start is served by the first turn
        try:
            self._open()
        except BaseException:
            loop.close()  # the signals' previous handlers back
            raise
        log(
            "start",
            server=self.cfg.name,
            client_listen=self.cfg.client_listen,
            serial=self.serial,
            backends=[b.endpoint for b in self.cfg.backends],
            ctl_socket=str(self.cfg.ctl_socket),
        )
        self._add_steps()
        try:
            loop.run()
        finally:
            log("stop", server=self.cfg.name, role=self.leader.role.value)
            flush_logs()
            self._close()
        return 0

    def _add_steps(self) -> None:
        """What the loop serves, in the order of a turn (the sockets once opened)."""
        loop = self.loop
        for s, name in self.by_socket.items():
            loop.watch(s, functools.partial(self._drain_backend, s, name))
        loop.watch(self.client, self._drain_clients)
        # One pump for the whole burst of requests and replies: group commit.
        loop.each_turn(self._pump)
        loop.serve_ctl(self.ctl, self.ctl_server)
        loop.every(TICK, self._tick, first=0.0)
        loop.every(FLUSH_INTERVAL, self._flush_denials_step)
        if self.web.wake_socket is not None:
            loop.watch(self.web.wake_socket, self._usage_replies)
        loop.each_turn(self._publish_web_if_due)
        loop.each_turn(lambda now: self.web.end_turn())  # the turn's counts into /metrics
        # Last: after the pump, whose ACCEPTs make a turn of checkouts not hold.
        loop.each_turn(self._hold_if_idle)

    def _pump(self, now: float) -> None:
        self.apply(self.leader.pump(now))

    def _hold_if_idle(self, now: float) -> None:
        """The loop's last step: hold the next turn back (`idle_hold`) after a turn that read
        client requests and left nothing for a backend to answer, while active and busy."""
        n, self._turn_requests = self._turn_requests, 0
        self._window_requests += n
        if now - self._window_start >= RATE_WINDOW:
            rate = self._window_requests / (now - self._window_start)
            self._busy = rate >= HOLD_MIN_RATE
            self._window_start, self._window_requests = now, 0
        if (
            n
            and self._busy
            and self.idle_hold > 0
            and self.leader.role == Role.ACTIVE
            and not self.leader.awaiting_backends()
        ):
            self.loop.hold(self.idle_hold)

    def _tick(self, now: float) -> None:
        self.apply(self.leader.tick(now))
        self._web_releases(now)
        self._ctl_admin_overdue(now)

    def _usage_replies(self, now: float) -> None:
        for token, payload in self.web.take_usage_replies():
            if token == CTL_TOKEN:
                self.ctl_server.answer_payload(payload)
            else:
                self._send_payload(token, payload)

    def _publish_web_if_due(self, now: float) -> None:
        lead = self.leader
        headline = (lead.role, lead.epoch, tuple(b.up for b in lead.backends))
        if self.web.publish_due(now, headline):
            self._publish_web(now)

    def _publish_web(self, now: float) -> None:
        """Hand the web thread a fresh snapshot (the leader is read here, in the loop)."""
        wanted = self.web.wants_handles()
        handles = self.leader.handles_view(now) if wanted else None
        queue = self.leader.queue_view(now) if wanted else None
        denials = self.denials.recent_view(self.cfg.web_max_handles) if wanted else None
        rec = self.denials
        stats = {"recorded": rec.recorded, "pending": len(rec.pending), "dropped": rec.dropped}
        self.web.publish(self.status(now), handles, now, queue, denials, stats)

    def _drain_clients(self, now: float) -> None:
        for _ in range(MAX_DRAIN):
            got = recv_frames_user(self.client)
            if got is None:
                return
            # The clock is read after the request: one that arrived while this process was
            # stopped (SIGSTOP, a frozen VM) gets a time after the pause, however long ago
            # this loop turn began, so the leader notices the pause (`Leader._clock`).
            self.on_client(got[0], time.monotonic(), got[1])

    def _drain_backend(self, s: zmq.Socket[bytes], name: str, now: float) -> None:
        """The backend's replies: about one per turn under load (measured: 1.2), so after
        each the socket's ZMQ_EVENTS say whether another waits, where reading until `zmq.Again`
        would raise an exception in nearly every turn. (The client socket has about a dozen
        requests per turn under load: there one `zmq.Again` per turn is cheaper than a
        ZMQ_EVENTS read per request.)"""
        for _ in range(MAX_DRAIN):
            frames = recv_frames(s)
            if frames is None:
                return
            # A table (a takeover's promise) is decoded and adopted with the collector
            # paused, and kept out of its reach afterwards (`tmr.serving.collector`).
            with bulk_step(len(frames[-1]) >= BULK_FRAME, self._term_goes_on):
                self._backend_reply(name, frames[-1], now)
            if not readable(s):
                return

    def _term_goes_on(self) -> bool:
        """Whether what a bulk step built is this server's state (`bulk_step` freezes it):
        while it takes over or is active, not once the takeover or the term has ended."""
        return self.leader.role in (Role.TAKEOVER, Role.ACTIVE)

    def _backend_reply(self, name: str, frame: bytes, now: float) -> None:
        try:
            msg = peer_api.decode_reply(frame)
        except ProtocolError as exc:
            log("backend_bad_reply", level="warning", backend=name, error=str(exc))
            return
        if isinstance(msg, Status):
            if msg.denials:
                self.denial_backends.add(name)
            else:
                self.denial_backends.discard(name)
        self.web.on_backend_reply(name, msg)
        self.apply(self.leader.on_reply(name, msg, now))
