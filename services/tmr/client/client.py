"""The Python SDK of the TMR license service: `Client` and `Handle`.

See docs/client-guide.md for the guide. In short::

    from tmr.client import Client

    with Client(["tcp://10.0.0.100:22350"], "<service public key, Z85>") as client:
        with client.checkout(6000123, 42, seats=1) as handle:
            ...  # the seat is held (and heartbeated in the background) here
            sealed = handle.crypt("encrypt", b"secret")
"""

from __future__ import annotations

import getpass
import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self, TypeVar

import zmq

from tmr.client._channel import Channel, ClientClosedError, Outcome
from tmr.client._heartbeats import next_heartbeat, on_grid
from tmr.client.keys import check_key_pair, key_bytes, load_public_key
from tmr.errors import ApiError, ErrorCode, Timeout, Unauthorized, UnknownHandle
from tmr.keys import NodeKeys, generate_keypair
from tmr.protocol.client_api import (
    CID_MAX,
    HOST_MAX,
    PID_MAX,
    USER_MAX,
    WAIT_MAX,
    CheckoutRequest,
    CheckoutResult,
    CryptOperation,
    CryptRequest,
    CryptResult,
    ErrorReply,
    HeartbeatRequest,
    HeartbeatResult,
    ListRequest,
    ListResult,
    QueuedResult,
    ReleaseRequest,
    ReleaseResult,
    Request,
    Result,
    StatusRequest,
    StatusResult,
    UsageRequest,
    UsageResult,
)
from tmr.protocol.errors import ProtocolError
from tmr.replication.types import AccessMode

__all__ = ["Client", "ClientClosedError", "Handle", "LostCallback", "QueuedCallback"]

log = logging.getLogger("tmr.client")

LostCallback = Callable[["Handle"], None]
QueuedCallback = Callable[[int], None]  # the position in the license's queue (1: next)
_R = TypeVar("_R", bound=Result)

HEARTBEAT_MIN_INTERVAL = 0.05
HEARTBEAT_RETRY_MAX = 1.0
# `Handle.lost_reason`: the server answered UNKNOWN_HANDLE (or a release "not released") ...
LOST_UNKNOWN = "the server no longer holds its seats"
# ... or refused this client's key (a reload took it off client_allowlist)
LOST_UNAUTHORIZED = "the server no longer admits this client's key"
CLOSE_RELEASE_TIMEOUT = 2.0


def _default_client_id() -> str:
    host = "".join(c for c in socket.gethostname() if c.isprintable())[:64] or "host"
    return f"{host}/{os.getpid()}/{secrets.token_hex(4)}"[:CID_MAX]


def _printable(text: str, limit: int) -> str:
    return "".join(c for c in text if c.isprintable())[:limit]


def default_identity() -> tuple[str, str, int]:
    """(OS user, host name, process id) of this process, as sent with each checkout: made
    printable and cut to the protocol's bounds; "" where the OS does not say."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError, ImportError):  # no login name and no passwd entry
        user = ""
    pid = os.getpid()
    return (
        _printable(user, USER_MAX),
        _printable(socket.gethostname(), HOST_MAX),
        pid if 0 <= pid <= PID_MAX else 0,
    )


class Client:
    """A connection to the TMR service (the virtual container).

    Args:
        endpoints: ZeroMQ endpoints of the service, e.g. ``["tcp://10.0.0.100:22350"]`` (the
            virtual IP) or the client endpoints of both TMR servers. A single string is
            taken as a one-element list.
        server_public_key: the service public key (Z85), or the path of a file holding it.
        client_id: the client id sent with checkout, heartbeat, release and crypt (the
            server deduplicates retries by client id and request id). Default: host name,
            process id and a random suffix.
        timeout: overall seconds a request may take, retries and fail-over included, before
            `tmr.errors.Timeout` is raised.
        client_keys: this client's CURVE key pair (`tmr.keys.NodeKeys`, e.g. from
            `tmr.client.load_client_keys(path)`) when the
            service restricts clients to an allowlist; default: a fresh ephemeral pair.
        attempt_timeout: seconds to wait for the reply to one attempt before trying the
            next endpoint; it grows by 1.5x per attempt up to 2 s.
        user: the user name sent with each checkout and shown to administrators (`tmr admin
            handles`), e.g. a display name; default: the OS user (`getpass.getuser()`). The
            host name and process id are sent too. Informational only: the server trusts the
            CURVE key of the connection, not these.

    All methods are thread-safe. Close the client (or use it as a context manager) to stop
    its heartbeat thread, release the seats still held and free the sockets.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        server_public_key: str,
        *,
        client_id: str | None = None,
        timeout: float = 10.0,
        client_keys: NodeKeys | None = None,
        attempt_timeout: float = 0.5,
        user: str | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        endpoints = list(endpoints)
        if not endpoints or not all(isinstance(e, str) and e for e in endpoints):
            raise ValueError("endpoints must be a non-empty list of ZeroMQ endpoints")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if not attempt_timeout > 0:
            raise ValueError("attempt_timeout must be positive")
        server_key = key_bytes(load_public_key(server_public_key), "server public key")
        public, secret = check_key_pair(client_keys or generate_keypair())
        self._client_id = client_id if client_id is not None else _default_client_id()
        os_user, self._host, self._pid = default_identity()
        self._user = os_user if user is None else user
        # Validate the client id and user once, here, rather than on the first checkout.
        CheckoutRequest("r", self._client_id, 6_000_000, 0, 1, self._user, self._host, self._pid)

        self._endpoints = tuple(endpoints)
        self._timeout = float(timeout)
        self._public_key = public.decode("ascii")
        self._rid_prefix = secrets.token_hex(6)
        self._rid_counter = itertools.count(1)
        self._closing = threading.Event()
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._main = Channel(
            self._context,
            endpoints,
            server_key,
            public,
            secret,
            attempt_timeout=attempt_timeout,
            closing=self._closing,
            name="main",
        )
        # The heartbeat thread has its own socket, so a long user call never delays it.
        self._hb_channel = Channel(
            self._context,
            endpoints,
            server_key,
            public,
            secret,
            attempt_timeout=attempt_timeout,
            closing=self._closing,
            name="heartbeat",
        )
        self._hb_cond = threading.Condition()
        self._hb_due: dict[Handle, float] = {}
        self._hb_thread: threading.Thread | None = None
        self._handles: set[Handle] = set()
        self._close_lock = threading.Lock()
        self._closed = False

    # -- properties

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._endpoints

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def user(self) -> str:
        """The user name sent with each checkout (the OS user unless one was given)."""
        return self._user

    @property
    def public_key(self) -> str:
        """This client's CURVE public key (Z85), e.g. for a server's client allowlist."""
        return self._public_key

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def closed(self) -> bool:
        return self._closed or self._closing.is_set()

    # -- operations

    def list_licenses(self) -> ListResult:
        """The virtual container: its serial and its licenses (`ListResult.licenses`)."""
        return self._call(ListRequest(self._next_rid()), ListResult)

    def status(self) -> StatusResult:
        """Status of the TMR server that answers (the active one, when there is one)."""
        return self._call(StatusRequest(self._next_rid()), StatusResult)

    def usage(self, since: float, until: float) -> UsageResult:
        """Per-license usage between two UNIX times: peak seats, seat-hours, denials.

        Computed by the active server from the backends' usage records."""
        return self._call(UsageRequest(self._next_rid(), since, until), UsageResult)

    def checkout(
        self,
        firm_code: int,
        product_code: int,
        seats: int = 1,
        *,
        on_lost: LostCallback | None = None,
        wait: float | None = None,
        on_queued: QueuedCallback | None = None,
        mode: AccessMode | str = AccessMode.USER_LIMIT,
    ) -> Handle:
        """Allocate `seats` seats of a license; returns the `Handle` that holds them.

        `mode` (`AccessMode` or its string; docs/client-guide.md, "Access modes"):
        ``user_limit`` (the default, CodeMeter "UserLimit"): the handle takes its seats;
        ``station_share`` (CodeMeter "NoUserLimit"): the station_share handles of this
        client's key, user and host take the seats of the largest of them, once;
        ``exclusive`` (CodeMeter "Exclusive"): every seat of the license, only while nothing
        else is held (the handle's `seats` is then the license's quantity). An unknown mode
        raises `ValueError` before anything is sent.

        With `wait` (seconds), a checkout the license cannot serve now waits in the
        license's FIFO queue on the server instead of raising `NoLicenseAvailable`, for at
        most `wait` seconds; then it raises `NoLicenseAvailable`. `on_queued(position)` is
        called (in this thread) when the checkout is queued and whenever its position
        changes (1: next in line). The call asks the server again about twice a second with
        the same request id; after a failover it queues again on the new active server
        (docs/client-guide.md, "Waiting for a seat").

        The handle heartbeats in the background (about every lease/3) until released.
        `on_lost(handle)` is called (from the heartbeat thread) if the server no longer knows
        the handle, e.g. after its lease expired while the client was cut off.

        Retries after a lost reply or a fail-over reuse the request id, so one call never
        takes seats twice. Raises `NoLicenseAvailable`, `UnknownLicense`, `QuorumLost`,
        `LicenseExpired`, `Unauthorized`, `BadRequest` or `Timeout`.
        """
        self._check_open()
        if wait is not None and not wait > 0:
            raise ValueError(f"wait must be a positive number of seconds, not {wait!r}")
        try:
            access = AccessMode(mode)
        except ValueError:
            known = ", ".join(m.value for m in AccessMode)
            raise ValueError(f"unknown access mode {mode!r} (one of {known})") from None
        rid = self._next_rid()
        deadline = None if wait is None else time.monotonic() + wait
        position = 0
        while True:
            left = None if deadline is None else min(deadline - time.monotonic(), WAIT_MAX)
            req = CheckoutRequest(
                rid,
                self._client_id,
                firm_code,
                product_code,
                seats,
                self._user,
                self._host,
                self._pid,
                # Out of time: a last ask without it (granted, or refused and dropped)
                left if left is not None and left > 0 else None,
                access,
            )
            sent = time.monotonic()
            try:
                reply = self._exchange(req).reply
            except Timeout:
                # Queued already, time left: a failover under way (no server answers until
                # the standby is active). Ask again; the new leader queues it at the tail.
                if position and deadline is not None and time.monotonic() < deadline:
                    continue
                raise
            if isinstance(reply, ErrorReply):
                raise reply.to_exception()
            result = reply.result
            if isinstance(result, CheckoutResult):
                break
            if not isinstance(result, QueuedResult) or req.wait is None:
                raise ProtocolError("unexpected result type for checkout", rid=rid)
            if result.position != position:
                position = result.position
                if on_queued is not None:
                    on_queued(position)
            pause = min(result.retry, result.hold / 2, max(0.0, req.wait - 0.01))
            if self._closing.wait(max(pause, 0.01)):
                raise ClientClosedError("the client was closed while the checkout was queued")
        handle = Handle(self, result, on_lost, request_id=rid, sent=sent, mode=access)
        with self._hb_cond:
            if self._closing.is_set():
                closed = True
            else:
                closed = False
                self._handles.add(handle)
        if closed:  # closed while the checkout was in flight: give the seats back
            handle._release_quietly(CLOSE_RELEASE_TIMEOUT)
            raise ClientClosedError("the client was closed during checkout")
        interval = handle._interval()
        self._schedule(handle, on_grid(time.monotonic() + interval, interval))
        return handle

    def close(self) -> None:
        """Release the seats still held (best effort), stop heartbeating, close the sockets.

        Idempotent.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            with self._hb_cond:
                handles = list(self._handles)
                self._hb_due.clear()
            for handle in handles:
                handle._release_quietly(min(self._timeout, CLOSE_RELEASE_TIMEOUT))
            with self._hb_cond:
                self._closing.set()
                self._hb_cond.notify_all()
            thread = self._hb_thread
            if thread is not None and thread is not threading.current_thread():
                thread.join()
            self._main.close()
            self._hb_channel.close()
            self._context.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<tmr.client.Client {state} endpoints={list(self._endpoints)}>"

    # -- internals

    def _check_open(self) -> None:
        if self._closing.is_set() or self._closed:
            raise ClientClosedError("the client is closed")

    def _next_rid(self) -> str:
        return f"{self._rid_prefix}.{next(self._rid_counter)}"

    def _exchange(
        self, req: Request, *, channel: Channel | None = None, timeout: float | None = None
    ) -> Outcome:
        """Send `req` (with retries); the reply, never NOT_ACTIVE, and the attempt count."""
        if self._closing.is_set():
            raise ClientClosedError("the client is closed")
        return (channel or self._main).call(req, self._timeout if timeout is None else timeout)

    def _call(
        self,
        req: Request,
        kind: type[_R],
        *,
        channel: Channel | None = None,
        timeout: float | None = None,
    ) -> _R:
        """Send `req`; its typed result, or the typed exception of an error reply."""
        reply = self._exchange(req, channel=channel, timeout=timeout).reply
        if isinstance(reply, ErrorReply):
            raise reply.to_exception()
        result = reply.result
        if not isinstance(result, kind):  # pragma: no cover - decode_reply(op=) checks this
            raise ProtocolError(f"unexpected result type for {req.op}", rid=req.rid)
        return result

    def _schedule(self, handle: Handle, due: float) -> None:
        with self._hb_cond:
            if self._closing.is_set() or handle not in self._handles:
                return
            self._hb_due[handle] = due
            if self._hb_thread is None:
                self._hb_thread = threading.Thread(
                    target=self._heartbeat_loop, name="tmr-client-heartbeat", daemon=True
                )
                self._hb_thread.start()
            self._hb_cond.notify_all()

    def _forget(self, handle: Handle) -> None:
        with self._hb_cond:
            self._hb_due.pop(handle, None)
            self._handles.discard(handle)
            self._hb_cond.notify_all()

    def _heartbeat_loop(self) -> None:
        while True:
            with self._hb_cond:
                while True:
                    if self._closing.is_set():
                        return
                    now = time.monotonic()
                    if self._hb_due:
                        handle, due = min(self._hb_due.items(), key=lambda item: item[1])
                        if due <= now:
                            del self._hb_due[handle]
                            break
                        self._hb_cond.wait(due - now)
                    else:
                        self._hb_cond.wait()
            try:
                next_due = handle._heartbeat_once()
            except Exception:  # never let the thread die
                log.exception("heartbeat of handle %s failed", handle.id)
                next_due = time.monotonic() + HEARTBEAT_RETRY_MAX
            if next_due is not None:
                self._schedule(handle, next_due)


class Handle:
    """Seats held by one checkout. Use it as a context manager to release on exit.

    Attributes:
        id: the server's handle string.
        firm_code, product_code, seats, tmr_id: what was granted (TMR ID of the license
            version the seats were counted against).
        lease: the lease in seconds, as last reported by the server.
        result: the full `CheckoutResult`.
        request_id: the request id of the checkout (the server deduplicates retries by it).
        mode: the access mode it was checked out in (`AccessMode`).
    """

    def __init__(
        self,
        client: Client,
        result: CheckoutResult,
        on_lost: LostCallback | None,
        *,
        request_id: str = "",
        sent: float | None = None,
        mode: AccessMode = AccessMode.USER_LIMIT,
    ) -> None:
        self._client = client
        self.result = result
        self.mode = mode
        self.request_id = request_id
        self.id = result.handle
        self.firm_code = result.firm
        self.product_code = result.product
        self.seats = result.seats
        self.tmr_id = result.tmr_id
        self.lease = result.lease
        self._on_lost = on_lost
        self._state = threading.Lock()
        self._released = False
        self._releasing = False
        self._lost = False
        self._lost_reason: str | None = None
        self._lost_event = threading.Event()
        self._last_renewal = time.monotonic()
        self._last_renewal_sent = self._last_renewal if sent is None else sent

    # -- state

    @property
    def lost(self) -> bool:
        """True once the server answered UNKNOWN_HANDLE (the seats are no longer held), or
        refused this client's key (UNAUTHORIZED: no heartbeat renews them again)."""
        return self._lost

    @property
    def lost_reason(self) -> str | None:
        """Why the handle was lost, in words (None while it is not)."""
        return self._lost_reason

    @property
    def released(self) -> bool:
        """True once `release` succeeded."""
        return self._released

    @property
    def held(self) -> bool:
        """Neither released nor lost."""
        return not (self._released or self._lost)

    @property
    def last_renewal(self) -> float:
        """`time.monotonic()` of the checkout or the last successful heartbeat."""
        return self._last_renewal

    @property
    def last_renewal_sent(self) -> float:
        """`time.monotonic()` when the request behind `last_renewal` was first sent.

        The server counts the lease from when it handled that request, so the seats are held
        at least until ``last_renewal_sent + lease`` (unless released)."""
        return self._last_renewal_sent

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the handle is lost or `timeout` passes; True if it was lost."""
        return self._lost_event.wait(timeout)

    # -- operations

    def release(self) -> bool:
        """Give the seats back. Idempotent: True if this call released them, False if the
        handle was already released or lost before the call (nothing is sent then).

        If the server no longer holds the handle (it answers ``released: false`` or
        UNKNOWN_HANDLE: the lease expired, e.g. while this client was cut off), the handle
        is marked lost and `UnknownHandle` is raised. A retried release (reply lost,
        fail-over) that gets either answer counts as released: the first attempt did it.
        On `Timeout` the heartbeats stay stopped (the lease then frees the seats) and
        `release` may be called again.
        """
        return self._release(None)

    def crypt(self, operation: CryptOperation, data: bytes) -> bytes:
        """Run `operation` ("encrypt", "decrypt" or "hmac") on `data` (at most 64 KiB)
        with the product key of the license, on a backend that holds this handle."""
        return self.crypt_result(operation, data).data

    def crypt_result(self, operation: CryptOperation, data: bytes) -> CryptResult:
        """Like `crypt`, also telling which backend computed the result."""
        if not self.held:
            raise UnknownHandle(f"handle {self.id} is {'lost' if self._lost else 'released'}")
        client = self._client
        req = CryptRequest(client._next_rid(), client.client_id, self.id, operation, data)
        try:
            return client._call(req, CryptResult)
        except UnknownHandle:
            self._mark_lost()
            raise

    def encrypt(self, data: bytes) -> bytes:
        return self.crypt("encrypt", data)

    def decrypt(self, data: bytes) -> bytes:
        return self.crypt("decrypt", data)

    def hmac(self, data: bytes) -> bytes:
        return self.crypt("hmac", data)

    def heartbeat(self) -> float:
        """Renew the lease now (the background thread does this anyway); the new lease."""
        if not self.held:
            raise UnknownHandle(f"handle {self.id} is {'lost' if self._lost else 'released'}")
        client = self._client
        req = HeartbeatRequest(client._next_rid(), client.client_id, self.id)
        sent = time.monotonic()
        try:
            result = client._call(req, HeartbeatResult)
        except UnknownHandle:
            self._mark_lost()
            raise
        self._renewed(result.lease, sent)
        return result.lease

    def abandon(self) -> None:
        """Stop heartbeating without releasing, as a crashed client would: the server frees
        the seats when the lease runs out. For test tools; `Client.close` then leaves the
        handle alone."""
        self._client._forget(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.release()
        except UnknownHandle as err:
            log.warning("handle %s was lost before release: %s", self.id, err)
        except (ApiError, ClientClosedError) as err:
            if exc is None:
                raise
            log.warning("release of handle %s failed: %s", self.id, err)

    def __repr__(self) -> str:
        state = "lost" if self._lost else "released" if self._released else "held"
        return (
            f"<tmr.client.Handle {self.id} {self.firm_code}/{self.product_code} "
            f"seats={self.seats} {state}>"
        )

    # -- internals

    def _interval(self) -> float:
        return max(self.lease / 3.0, HEARTBEAT_MIN_INTERVAL)

    def _renewed(self, lease: float, sent: float) -> None:
        self.lease = lease
        self._last_renewal = time.monotonic()
        self._last_renewal_sent = sent

    def _mark_lost(self, *, from_heartbeat: bool = False, why: str = LOST_UNKNOWN) -> bool:
        """Mark the handle lost (False: it was released, lost or being released already)."""
        with self._state:
            if self._released or self._lost or (from_heartbeat and self._releasing):
                return False
            self._lost = True
            self._lost_reason = why
        self._client._forget(self)
        self._lost_event.set()
        log.warning("handle %s is lost (%s)", self.id, why)
        if self._on_lost is not None:
            try:
                self._on_lost(self)
            except Exception:
                log.exception("on_lost callback of handle %s failed", self.id)
        return True

    def _release(self, timeout: float | None) -> bool:
        with self._state:
            if self._released or self._lost:
                return False
            self._releasing = True
        client = self._client
        client._forget(self)
        req = ReleaseRequest(client._next_rid(), client.client_id, self.id)
        try:
            outcome = client._exchange(req, timeout=timeout)
        except BaseException:
            with self._state:
                self._releasing = False
            raise
        reply = outcome.reply
        if isinstance(reply, ErrorReply):
            if reply.error == ErrorCode.UNKNOWN_HANDLE and outcome.attempts > 1:
                # Our earlier attempt released it; its reply was lost.
                log.debug("release of %s: UNKNOWN_HANDLE after a retry: released", self.id)
            else:
                with self._state:
                    self._releasing = False
                if reply.error == ErrorCode.UNKNOWN_HANDLE:
                    self._mark_lost()
                raise reply.to_exception()
        elif isinstance(reply.result, ReleaseResult) and not reply.result.released:
            if outcome.attempts > 1:
                log.debug("release of %s: not held after a retry: released", self.id)
            else:
                # The server did not hold the handle any more: its seats were freed (lease
                # expired) before this release, not by it.
                with self._state:
                    self._releasing = False
                self._mark_lost()
                raise UnknownHandle(
                    f"handle {self.id} was no longer held by the server (its lease expired)"
                )
        with self._state:
            self._released = True
            self._releasing = False
        return True

    def _release_quietly(self, timeout: float) -> None:
        try:
            self._release(timeout)
        except (ApiError, ClientClosedError) as exc:
            log.warning("release of handle %s failed: %s", self.id, exc)

    def _heartbeat_once(self) -> float | None:
        """One background heartbeat; when the next is due (None: stop heartbeating)."""
        if not self.held or self._releasing:
            return None
        client = self._client
        req = HeartbeatRequest(client._next_rid(), client.client_id, self.id)
        sent = time.monotonic()
        try:
            result = client._call(req, HeartbeatResult, channel=client._hb_channel)
        except UnknownHandle:
            # Ignored if a release raced with this heartbeat.
            self._mark_lost(from_heartbeat=True)
            return None
        except Unauthorized as exc:
            # The server took this client's key off its allowlist: no heartbeat will renew
            # the seats again. It still takes a release from the key: give them back now
            # (best effort) rather than at the end of the lease.
            log.warning("heartbeat of handle %s refused: %s", self.id, exc)
            if self._mark_lost(from_heartbeat=True, why=LOST_UNAUTHORIZED):
                release = ReleaseRequest(client._next_rid(), client.client_id, self.id)
                try:
                    client._call(release, ReleaseResult, channel=client._hb_channel)
                except (ApiError, ClientClosedError) as err:
                    log.warning("release of lost handle %s failed: %s", self.id, err)
            return None
        except ClientClosedError:
            return None
        except Timeout as exc:
            log.warning("heartbeat of handle %s: %s", self.id, exc)
            return time.monotonic()
        except ApiError as exc:
            log.warning("heartbeat of handle %s failed: %s (%s)", self.id, exc.code, exc)
            return time.monotonic() + min(self._interval(), HEARTBEAT_RETRY_MAX)
        self._renewed(result.lease, sent)
        return next_heartbeat(sent, time.monotonic(), self._interval())
