"""`tmr backend run`: the backend service, a pyzmq + SQLite wrapper around the `Acceptor`.

One thread, one poll loop (`tmr.serving.loop`, shared with the TMR server; design.md §2) over:

- the ZAP handler (`tmr.serving.zap`), admitting only the keys in ``allowed_servers``;
- the local control socket (`tmr.backend.ctl_commands`: status, reload, health);
- the peer ROUTER socket (CURVE server with this node's key pair) that the TMR servers
  talk to, and the answers of the usage thread;
- signals (SIGHUP: reload licenses; SIGTERM/SIGINT: stop) and a timer that re-checks
  license expiry.

Every peer frame is decoded once and strictly (`tmr.protocol.peer_api.decode_backend_frame`:
a request, a usage query or a bad frame), a request handed to the acceptor, its write
committed to SQLite, and only then applied and answered. A commit error means no answer (the
leader treats the backend as not having acked) and a reload of the state from disk. No
protocol decision is taken here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import signal
import sqlite3
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from tmr import __version__
from tmr.backend.ctl_commands import BACKEND_COMMANDS
from tmr.backend.licenses import LicenseView, load_license_view
from tmr.backend.store import SqliteStore, StorageError
from tmr.backend.usage_thread import UsageThread
from tmr.config import BackendConfig
from tmr.ctl import bind_ctl
from tmr.errors import ConfigError, TmrError
from tmr.keys import NodeKeys, load_keypair
from tmr.licensing import (
    ClockGuard,
    LicenseReason,
    VendorKeyring,
    make_fingerprint_doc,
    read_machine_id,
)
from tmr.logs import enabled as log_enabled
from tmr.logs import flush as flush_logs
from tmr.logs import log
from tmr.protocol import peer_api
from tmr.protocol.peer_api import BadFrame
from tmr.replication.acceptor import Acceptor, Write
from tmr.replication.messages import (
    Accepted,
    DenialQuery,
    DenialRow,
    Denials,
    EntryStatus,
    PeerError,
    PeerReply,
    PeerRequest,
    Promise,
    Rejected,
    Status,
    UsageQuery,
)
from tmr.replication.types import Epoch, LicenseInfo, ProductKey, Version, key_str
from tmr.report.records import UsageReader
from tmr.serving.collector import BULK_FRAME, gc_paused
from tmr.serving.commands import CtlServer
from tmr.serving.loop import ServiceLoop, configure_service_logs
from tmr.serving.zap import ZapHandler, parse_allowlist
from tmr.zap_log import ZapDenials
from tmr.zmqio import readable, recv_frames, send_frames

DB_NAME = "backend.sqlite3"
CLOCK_NAME = "clock.json"
LOCK_NAME = "backend.lock"
EXPIRY_CHECK_INTERVAL = 30.0
MAX_BATCH = 256  # peer requests served per loop turn before the other sockets get a look
MAX_GROUP = 64  # writes committed together in one transaction (group commit)
ZAP_DOMAIN = b"tmr-backend"

Json = dict[str, Any]


# ------------------------------------------------------------------ identity and allowlist


@dataclass(frozen=True)
class Identity:
    keys: NodeKeys
    fingerprint: str
    serial: str


def load_identity(config: BackendConfig) -> Identity:
    """The node key pair, and the fingerprint and serial derived from it and the machine-id."""
    keys = load_keypair(config.key_file)
    doc = make_fingerprint_doc(keys.public, read_machine_id(config.machine_id_file), config.serial)
    return Identity(keys, doc.fingerprint, doc.serial)


# ------------------------------------------------------------------ peer framing


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], bytes | None]:
    """ROUTER message -> (reply envelope, payload). A DEALER sends [payload], a REQ
    [b"", payload]; anything else has no single payload (None)."""
    if len(frames) >= 3 and frames[1] == b"":
        envelope, rest = frames[:2], frames[2:]
    else:
        envelope, rest = frames[:1], frames[1:]
    return envelope, rest[0] if len(rest) == 1 else None


def error_reply(mid: int, message: str) -> bytes:
    return peer_api.encode_reply(PeerError(mid, message[:1024]))


# ------------------------------------------------------------------ group commit

_Record = tuple[str, str, Json]  # a log record held back until its write is durable
_QUERIES = (UsageQuery, DenialQuery)  # read-only queries: never the acceptor's


@dataclass
class _Group:
    """Requests decided on top of writes that are not durable yet."""

    writes: list[Write] = field(default_factory=list)
    replies: list[tuple[int, bytes]] = field(default_factory=list)  # (request index, reply)
    records: list[_Record] = field(default_factory=list)


def _emit(records: list[_Record]) -> None:
    for event, level, fields in records:
        log(event, level=level, **fields)


# ------------------------------------------------------------------ JSON views


def epoch_json(epoch: Epoch) -> Json:
    return {"counter": epoch.counter, "server": epoch.server, "text": str(epoch)}


def version_json(version: Version) -> Json:
    return {"epoch": epoch_json(version.epoch), "seq": version.seq}


def license_json(lic: LicenseInfo) -> Json:
    return {
        "tmr_id": lic.tmr_id,
        "quantity": lic.quantity,
        "valid": lic.valid,
        "reason": lic.reason,
        "expires": lic.expires,
        "features": dict(lic.features),
    }


def rejected_json(view: LicenseView) -> list[Json]:
    return [
        {"file": str(path), "reason": err.reason.value, "message": str(err)}
        for path, err in view.rejected
    ]


def skipped_json(view: LicenseView) -> list[Json]:
    return [{"file": str(path), "reason": why} for path, why in view.skipped]


# ------------------------------------------------------------------ the service


class BackendService:
    """The backend process. `run()` serves until SIGTERM/SIGINT; `open()`, `handle_frame()`,
    `reload_licenses()`, `check_licenses()`, `status()` and `close()` are its parts (the
    unit tests drive them without sockets)."""

    def __init__(
        self,
        config: BackendConfig,
        *,
        expiry_check_interval: float = EXPIRY_CHECK_INTERVAL,
        time_source: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.expiry_check_interval = expiry_check_interval
        self._time = time_source
        self.identity: Identity | None = None
        self.store: SqliteStore | None = None
        self.clock: ClockGuard | None = None
        self.acceptor: Acceptor | None = None
        self.view = LicenseView()
        self.endpoint = ""
        self.counters = {
            "requests": 0,
            "bad_requests": 0,
            "writes": 0,
            "storage_errors": 0,
            "handshakes_denied": 0,  # refused CURVE handshakes (logged once per key a minute)
            "denials_recorded": 0,  # refusals the servers reported (`Denials`), new ids only
        }
        self._zap_denials = ZapDenials("peer_denied", on_denied=self._count_denial)
        self._started = time.monotonic()
        self._floors: dict[ProductKey, int] = {}
        self._allowed: frozenset[str] = frozenset()  # Z85 keys of allowed_servers
        self._lock_fd: int | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._router: zmq.Socket[bytes] | None = None
        self._zap: ZapHandler | None = None
        self._ctl: zmq.Socket[bytes] | None = None
        self.loop = ServiceLoop()
        self.ctl_server = CtlServer(BACKEND_COMMANDS, self)
        self._usage: UsageReader | None = None  # usage queries without a running loop
        self._usage_thread: UsageThread | None = None  # with one: answered off the loop
        self._usage_deferred: list[tuple[int, UsageQuery | DenialQuery]] = []  # (index, query)
        self._stale = False  # the acceptor's state may differ from the durable one

    # ============================================================== lifecycle

    def run(self) -> int:
        configure_service_logs("backend", self.config.name, self.config.log_level)
        loop = self.loop
        loop.on_signal(signal.SIGHUP, self._on_sighup)
        loop.stop_on_signals(signal.SIGTERM, signal.SIGINT)
        loop.install_signals()  # a signal during the start is served by the first turn
        try:
            try:
                self.open()
                self.open_sockets()
            except TmrError as exc:
                log("start_failed", level="error", error=str(exc))
                raise
            self._log_start()
            self.serve_forever()
        finally:
            self.close()
            log("stop", reason=loop.stop_reason or "stopped")
            flush_logs()
        return 0

    def _on_sighup(self, signum: int) -> None:
        self.reload_licenses("SIGHUP")

    def open(self) -> None:
        """Identity, state directory (locked), store, clock guard, licenses, acceptor."""
        cfg = self.config
        self._allowed = parse_allowlist(cfg.allowed_servers, "allowed_servers")
        self.identity = load_identity(cfg)
        self._lock_state_dir()
        self.store = SqliteStore(
            cfg.state_dir / DB_NAME,
            usage_retention=cfg.usage_retention,
            denial_retention=cfg.denial_retention,
        )
        self.clock = ClockGuard(cfg.state_dir / CLOCK_NAME, time_source=self._time)
        self.acceptor = Acceptor(cfg.name, self.store.load(), crypt=self._crypt)
        result = self.reload_licenses("start")
        if not result["ok"]:
            raise ConfigError(f"cannot load the license container: {result['error']}")

    def _lock_state_dir(self) -> None:
        state_dir = self.config.state_dir
        try:
            state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise StorageError(f"cannot use state directory {state_dir}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StorageError(
                f"state directory {state_dir} is in use by another backend process"
            ) from None
        self._lock_fd = fd

    def open_sockets(self) -> None:
        """ZAP handler, peer ROUTER (CURVE server), control socket."""
        assert self.identity is not None
        self._ctx = zmq.Context()
        self._zap = ZapHandler(self._allowed, self._zap_denials)
        self.loop.serve_zap(self._ctx, self._zap)  # before any CURVE handshake can happen
        self._router = self._peer_socket(self.identity.keys)
        try:
            self._ctl = bind_ctl(self._ctx, self.config.ctl_socket)
        except (zmq.ZMQError, OSError) as exc:
            raise ConfigError(
                f"cannot bind control socket {self.config.ctl_socket}: {exc}"
            ) from None
        assert self.store is not None
        self._usage_thread = UsageThread(self.store.path, self.config.name, self.loop.wake)

    def _count_denial(self) -> None:
        self.counters["handshakes_denied"] += 1

    def _peer_socket(self, keys: NodeKeys) -> zmq.Socket[bytes]:
        assert self._ctx is not None
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, peer_api.MAX_PEER_FRAME)
        sock.curve_secretkey = keys.secret.encode("ascii")
        sock.curve_publickey = keys.public.encode("ascii")
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN
        with contextlib.suppress(zmq.ZMQError, AttributeError):  # draft option in libzmq 4.3
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        try:
            sock.bind(self.config.listen)
        except zmq.ZMQError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {self.config.listen}: {exc}") from None
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def close(self) -> None:
        bound_ctl = self._ctl is not None
        for sock in (self._router, self._ctl):
            if sock is not None:
                sock.close(linger=0)
        self._router = self._ctl = None
        if self._zap is not None:
            self._zap.close()
            self._zap = None
        self.loop.close()
        if bound_ctl:
            with contextlib.suppress(OSError):
                self.config.ctl_socket.unlink()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self._usage_thread is not None:
            self._usage_thread.close()
            self._usage_thread = None
        if self._usage is not None:
            self._usage.close()
            self._usage = None
        if self.store is not None:
            self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ============================================================== main loop

    def stop(self, reason: str = "stop requested") -> None:
        """Ask a running `run()` to stop (from any thread)."""
        self.loop.stop(reason)

    def serve_forever(self) -> None:
        assert self._router is not None and self._ctl is not None
        loop = self.loop
        loop.serve_ctl(self._ctl, self.ctl_server)
        loop.watch(self._router, self._serve_peers)
        loop.each_turn(self._send_usage_answers)
        loop.every(self.expiry_check_interval, lambda now: self.check_licenses())
        loop.run()

    def _send_usage_answers(self, now: float) -> None:
        if self._usage_thread is not None and self._router is not None:
            for envelope, reply in self._usage_thread.take():
                send_frames(self._router, [*envelope, reply])

    def _serve_peers(self, now: float) -> None:
        """Take the peer requests that are queued (at most MAX_BATCH), serve them as one
        group (their writes in one durable transaction), then send the replies in order.

        The socket is drained while its ZMQ_EVENTS say a request waits: a turn usually has
        one (a lone ACCEPT at low load, one per server under load), where reading until
        `zmq.Again` would raise an exception in every turn."""
        router = self._router
        assert router is not None
        envelopes: list[list[bytes]] = []
        payloads: list[bytes | None] = []
        for _ in range(MAX_BATCH):
            frames = recv_frames(router)
            if frames is None:
                break
            envelope, payload = split_envelope(frames)
            envelopes.append(envelope)
            payloads.append(payload)
            if not readable(router):
                break
        if not payloads:
            return
        replies = self.handle_frames(payloads)
        for i, query in self._usage_deferred:
            assert self._usage_thread is not None
            replies[i] = self._usage_thread.submit(envelopes[i], query)
        self._usage_deferred.clear()
        for envelope, reply in zip(envelopes, replies, strict=True):
            if reply is not None:
                send_frames(router, [*envelope, reply])

    # ============================================================== peer requests

    def handle_frame(self, payload: bytes) -> bytes | None:
        """One peer request -> the reply to send, or None when nothing may be sent (the
        write could not be committed). Never raises."""
        return self.handle_frames([payload])[0]

    def handle_frames(self, payloads: Sequence[bytes | None]) -> list[bytes | None]:
        """Peer requests received together -> their replies, in order (None: nothing may be
        sent; a None payload is a message without a single payload frame). Never raises.

        Group commit: each request is decided by the acceptor on the state left by the ones
        before it (their writes applied in memory), and all the writes are committed in ONE
        SQLite transaction before any reply that could reflect them is released. If that
        commit fails, the acceptor's state is reloaded from disk and none of those replies
        is sent, so a visible reply always matches the durable state."""
        replies: list[bytes | None] = [None] * len(payloads)
        group = _Group()
        denials: list[DenialRow] = []  # recorded after the group: never answered
        if self._stale:
            self._reload_state()
        now = time.monotonic()  # one reading for the requests received together
        for i, payload in enumerate(payloads):
            if payload is None:
                self.counters["bad_requests"] += 1
                replies[i] = error_reply(0, "expected exactly one payload frame")
                continue
            self.counters["requests"] += 1
            # a bulk frame (a snapshot of a whole table) is decoded with the collector paused
            with gc_paused(len(payload) >= BULK_FRAME):
                request = self._classify(payload)
            if isinstance(request, BadFrame):
                self.counters["bad_requests"] += 1
                log("bad_request", level="warning", error=request.message, size=len(payload))
                replies[i] = error_reply(request.mid, request.message)
                continue
            if isinstance(request, _QUERIES):  # a tuple: no union type built per request
                replies[i] = self._usage_query(request, i)  # read-only: never the acceptor
                continue
            if isinstance(request, Denials):
                denials.extend(request.rows)  # fire and forget: no answer
                continue
            if self._stale:
                continue  # the state could not be reloaded after a failure: answer nothing
            try:
                self._stage(request, i, group, replies, now)
            except Exception as exc:  # a bug must not take the backend down
                log("internal_error", level="error", error=repr(exc), trace=traceback.format_exc())
                self._commit_group(group, replies)  # the requests before it are fine
                self._reload_state()  # drops whatever the failed step changed in memory
                replies[i] = error_reply(request.mid, "internal error")
                continue
            if len(group.writes) >= MAX_GROUP:
                self._commit_group(group, replies)
        self._commit_group(group, replies)
        if denials:
            self._record_denials(denials)
        return replies

    def _record_denials(self, rows: list[DenialRow]) -> None:
        """Keep the refusals a server reported (after the replication writes of the same
        turn, in a transaction of their own: a failure here never touches the acceptor)."""
        assert self.store is not None
        try:
            self.counters["denials_recorded"] += self.store.add_denials(rows)
        except StorageError as exc:
            self.counters["storage_errors"] += 1
            log("storage_error", level="error", error=str(exc), during="recording denials")

    @staticmethod
    def _classify(payload: bytes) -> peer_api.BackendInbound:
        """One decode step: a request, a usage query, or a bad frame with its reason."""
        try:
            return peer_api.decode_backend_frame(payload)
        except Exception as exc:  # the decoder is strict; this is a bug, not a crash
            log("internal_error", level="error", error=repr(exc), trace=traceback.format_exc())
            return BadFrame(0, "malformed request")

    def _stage(
        self,
        request: PeerRequest,
        i: int,
        group: _Group,
        replies: list[bytes | None],
        now: float,
    ) -> None:
        """Decide one request; its write is applied in memory and joins the group."""
        acceptor = self.acceptor
        assert acceptor is not None
        step = acceptor.handle(request, now)
        write = step.write
        answer = step.reply
        records: list[_Record] | None = None  # most requests log nothing
        if write is not None:
            before = acceptor.state.promised
            acceptor.committed(step)  # in memory only: durable with the group
            group.writes.append(write)
            if write.promised is not None or write.caught_up or write.products:
                records = self._write_records(write, before)
        else:
            acceptor.committed(step)  # nothing durable: only when the leader was heard
        refusals = self._refusal_records(answer)
        if refusals:
            records = refusals if records is None else records + refusals
        if isinstance(answer, Status):  # this backend keeps denial records (schema 6)
            answer = dataclasses.replace(answer, denials=True)
        # A promise carries whole tables at a takeover: encoded with the collector paused
        # (`tmr.serving.collector`; promises are rare, so any promise).
        with gc_paused(isinstance(answer, Promise)):
            reply = peer_api.encode_reply(answer)
        if group.writes:  # the reply may reflect writes that are not durable yet
            group.replies.append((i, reply))
            if records:
                group.records.extend(records)
        else:
            if records:
                _emit(records)
            replies[i] = reply

    def _commit_group(self, group: _Group, replies: list[bytes | None]) -> None:
        """Commit the group's writes in one transaction; only then release its replies."""
        if not group.writes:
            return
        assert self.store is not None
        try:
            self.store.commit_many(group.writes)
        except StorageError as exc:
            self.counters["storage_errors"] += 1
            log("storage_error", level="error", error=str(exc), writes=len(group.writes))
            self._reload_state()
        else:
            self.counters["writes"] += len(group.writes)
            _emit(group.records)
            for i, reply in group.replies:
                replies[i] = reply
        group.writes.clear()
        group.replies.clear()
        group.records.clear()

    def _usage_query(self, query: UsageQuery | DenialQuery, i: int) -> bytes | None:
        """The answer to a usage-record query (`tmr report usage`), or None if the query is
        deferred to the usage thread (``_usage_deferred``: the running service answers it off
        the loop). Read-only: it never touches the acceptor."""
        if self._usage_thread is not None:
            self._usage_deferred.append((i, query))
            return None
        if self._usage is None:
            assert self.store is not None
            self._usage = UsageReader(self.store.path)
        try:
            if isinstance(query, DenialQuery):
                answer = self._usage.denials(query, self.config.name)
                return peer_api.encode_denial_records(answer)
            records = self._usage.query(query, self.config.name)
        except sqlite3.Error as exc:
            self.counters["storage_errors"] += 1
            log("storage_error", level="error", error=str(exc), during="usage query")
            return error_reply(query.mid, f"cannot read the usage or denial record: {exc}")
        return peer_api.encode_usage_answer(query, records)

    @staticmethod
    def _refusal_records(reply: PeerReply) -> list[_Record]:
        if isinstance(reply, Rejected):
            return [
                ("request_rejected", "info", {"promised": str(reply.promised), "mid": reply.mid})
            ]
        records: list[_Record] = []
        if isinstance(reply, Accepted):
            for key, result in reply.results.items():
                if result.status is EntryStatus.REFUSED:
                    fields = {"product": key_str(key), "seq": result.seq, "reason": result.reason}
                    records.append(("entry_refused", "warning", fields))
        return records

    def _reload_state(self) -> None:
        """Make the acceptor's state the durable one again (after a failure). Until that
        succeeds the service answers no peer request (`_stale`)."""
        assert self.acceptor is not None and self.store is not None
        try:
            self.acceptor.state = self.store.load()
        except StorageError as exc:
            self.counters["storage_errors"] += 1
            log("storage_error", level="error", error=str(exc), during="reload of state")
            self._stale = True
        else:
            self._stale = False

    def _write_records(self, write: Write, before: Epoch) -> list[_Record]:
        """The log records of a write just applied in memory (written once it is durable)."""
        assert self.acceptor is not None
        records: list[_Record] = []
        if write.promised is not None:
            records.append(
                ("promise_raised", "info", {"epoch": str(write.promised), "previous": str(before)})
            )
        if write.caught_up:
            records.append(("caught_up", "info", {}))
        debug = log_enabled("debug")
        for pw in write.products:
            plog = self.acceptor.state.products[pw.key]
            if pw.replace is not None:
                fields: Json = {
                    "product": key_str(pw.key),
                    "version": f"{pw.version.epoch}:{pw.version.seq}",
                    "handles": len(plog.handles),
                    "seats": plog.seats(),
                }
                records.append(("snapshot_installed", "info", fields))
            elif debug:  # a record per entry: only when logged at debug
                fields = {
                    "product": key_str(pw.key),
                    "seq": pw.version.seq,
                    "ops": len(pw.ops),
                    "seats": plog.seats(),
                }
                records.append(("ops_committed", "debug", fields))
        return records

    def _crypt(self, key: ProductKey, operation: str, data: bytes) -> bytes:
        return self.view.crypt(key, operation, data)

    # ============================================================== licenses

    def reload_licenses(self, trigger: str) -> Json:
        """Re-read the vendor keys and re-verify every copy; on success the acceptor gets the
        new licenses and raised TMR IDs are recorded. On failure nothing changes."""
        assert self.identity is not None and self.clock is not None
        self._raise_clock()
        try:
            keyring = VendorKeyring.load(self.config.vendor_keys)
            view = load_license_view(
                self.config.license_dir,
                keyring=keyring,
                fingerprint=self.identity.fingerprint,
                node_secret=self.identity.keys.secret,
                clock=self.clock,
                installed_tmr_ids=self._installed_floors(),
            )
        except (TmrError, OSError) as exc:
            log("license_reload_failed", level="error", trigger=trigger, error=str(exc))
            return {"ok": False, "error": str(exc)}
        self.view = view
        self._record_installed({k: lic.tmr_id for k, lic in view.installed.items()})
        for path, why in view.skipped:
            log("license_file_skipped", level="warning", file=str(path), reason=why)
        for path, err in view.rejected:
            quiet = err.reason in (LicenseReason.SUPERSEDED, LicenseReason.DUPLICATE)
            log(
                "license_rejected",
                level="info" if quiet else "warning",
                file=str(path),
                reason=err.reason.value,
                error=str(err),
            )
        self._apply_licenses(view.infos(self.clock), trigger)
        return {
            "ok": True,
            "licenses": self._licenses_json(),
            "rejected": rejected_json(view),
            "skipped": skipped_json(view),
        }

    def _installed_floors(self) -> dict[ProductKey, int]:
        """The highest TMR IDs installed: on disk, and in memory should a write have failed;
        raised to the trio's replicated floors (deleting the local table brings nothing back)."""
        assert self.store is not None and self.acceptor is not None
        floors = dict(self._floors)
        for key, plog in self.acceptor.state.products.items():
            if plog.floor.tmr_id:
                floors[key] = max(plog.floor.tmr_id, floors.get(key, 0))
        try:
            for key, tmr_id in self.store.installed_tmr_ids().items():
                floors[key] = max(tmr_id, floors.get(key, 0))
        except StorageError as exc:
            log("storage_error", level="error", error=str(exc), during="read installed TMR IDs")
        return floors

    def _record_installed(self, ids: dict[ProductKey, int]) -> None:
        assert self.store is not None
        for key, tmr_id in ids.items():
            self._floors[key] = max(tmr_id, self._floors.get(key, 0))
        try:
            self.store.set_installed_tmr_ids(ids)
        except StorageError as exc:
            self.counters["storage_errors"] += 1
            log("storage_error", level="error", error=str(exc), during="record installed TMR IDs")

    def check_licenses(self) -> None:
        """Periodic re-check: a copy that expired (or a clock set back) becomes invalid."""
        assert self.clock is not None
        self._raise_clock()
        self.clock.now()  # also keeps the clock guard's high-water mark moving
        self._apply_licenses(self.view.infos(self.clock), "expiry check")

    def _raise_clock(self) -> None:
        """The clock guard never stays below the trio's replicated time floor: deleting
        clock.json and setting this host's clock back does not make time go back."""
        assert self.clock is not None and self.acceptor is not None
        products = self.acceptor.state.products.values()
        self.clock.raise_to(max((plog.floor.time for plog in products), default=0.0))

    def _apply_licenses(self, infos: dict[ProductKey, LicenseInfo], trigger: str) -> None:
        assert self.acceptor is not None and self.clock is not None
        self.acceptor.trusted_time = self.clock.high_water  # reported to the leader (Status)
        old = self.acceptor.licenses
        if infos == old:
            return
        for key in sorted(set(old) | set(infos)):
            self._log_license_change(key, old.get(key), infos.get(key), trigger)
        self.acceptor.set_licenses(infos)

    def _log_license_change(
        self, key: ProductKey, old: LicenseInfo | None, new: LicenseInfo | None, trigger: str
    ) -> None:
        if old == new:
            return
        product = key_str(key)
        if new is None:
            assert old is not None
            log(
                "license_removed",
                level="warning",
                product=product,
                tmr_id=old.tmr_id,
                trigger=trigger,
            )
            return
        fields: Json = {
            "product": product,
            "tmr_id": new.tmr_id,
            "quantity": new.quantity,
            "valid": new.valid,
            "reason": new.reason,
            "expires": new.expires,
            "trigger": trigger,
        }
        lic = self.view.installed.get(key)
        if lic is not None:
            fields["file"] = str(lic.path)
        if old is None:
            log("license_loaded", level="info" if new.valid else "warning", **fields)
        else:
            fields.update(old_tmr_id=old.tmr_id, old_quantity=old.quantity, old_valid=old.valid)
            log("license_changed", level="info" if new.valid else "warning", **fields)

    def _licenses_json(self) -> list[Json]:
        assert self.acceptor is not None
        return [
            {"firm": k[0], "product": k[1], **license_json(v)}
            for k, v in sorted(self.acceptor.licenses.items())
        ]

    # ============================================================== control socket

    def status(self) -> Json:
        assert self.acceptor is not None and self.identity is not None
        state = self.acceptor.state
        keys = sorted(set(state.products) | set(self.acceptor.licenses))
        reported = self.acceptor.reported_licenses()  # as the replicated floors make them
        products = []
        for key in keys:
            log_ = state.products.get(key)
            lic = reported.get(key)
            products.append(
                {
                    "firm": key[0],
                    "product": key[1],
                    "version": None if log_ is None else version_json(log_.version),
                    "seats": 0 if log_ is None else log_.seats(),
                    "handles": 0 if log_ is None else len(log_.handles),
                    "license": None if lic is None else license_json(lic),
                    "floor": None
                    if log_ is None
                    else {"tmr_id": log_.floor.tmr_id, "time": log_.floor.time},
                }
            )
        return {
            "ok": True,
            "role": "backend",
            "name": self.config.name,
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self._started, 3),
            "serial": self.identity.serial,
            "fingerprint": self.identity.fingerprint,
            "public_key": self.identity.keys.public,
            "endpoint": self.endpoint,
            "promised": epoch_json(state.promised),
            "leader_age": self.acceptor.leader_age(time.monotonic()),
            "caught_up": state.caught_up,
            "products": products,
            "rejected": rejected_json(self.view),
            "skipped": skipped_json(self.view),
            "counters": dict(self.counters),
        }

    def _log_start(self) -> None:
        assert self.acceptor is not None and self.identity is not None
        log(
            "start",
            version=__version__,
            pid=os.getpid(),
            serial=self.identity.serial,
            fingerprint=self.identity.fingerprint,
            public_key=self.identity.keys.public,
            endpoint=self.endpoint,
            ctl_socket=str(self.config.ctl_socket),
            allowed_servers=len(self._allowed),
            promised=str(self.acceptor.state.promised),
            caught_up=self.acceptor.state.caught_up,
            products=len(self.acceptor.state.products),
        )
