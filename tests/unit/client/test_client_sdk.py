"""The SDK against a fake server on loopback: retries, fail-over, heartbeats, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from fake_tmr_server import DROP, FIRM, PRODUCT, FakeServer

from tmr.client import (
    ApiError,
    BadRequest,
    Client,
    ClientClosedError,
    Handle,
    LicenseExpired,
    NodeKeys,
    NoLicenseAvailable,
    QuorumLost,
    Timeout,
    Unauthorized,
    UnknownHandle,
    UnknownLicense,
    generate_keypair,
)
from tmr.errors import ConfigError, ErrorCode
from tmr.protocol import ProtocolError
from tmr.protocol.client_api import (
    CheckoutRequest,
    ErrorReply,
    HeartbeatRequest,
    OkReply,
    ReleaseRequest,
    ReleaseResult,
    Request,
    encode_reply,
)

MakeServer = Callable[..., FakeServer]
FAST = {"attempt_timeout": 0.2}


@pytest.fixture
def clients(service_keys: NodeKeys) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(endpoints: list[str] | str, **kwargs: object) -> Client:
        opts: dict[str, object] = {"timeout": 5.0, **FAST, **kwargs}
        client = Client(endpoints, service_keys.public, **opts)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def free_port() -> int:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close(linger=0)
    ctx.term()
    return port


# ---------------------------------------------------------------------------- basics


def test_list_and_status_are_typed(make_server: MakeServer, clients: Callable[..., Client]) -> None:
    server = make_server(name="tmr1")
    client = clients(server.endpoint)
    listing = client.list_licenses()
    assert listing.serial == "131-0000001"
    assert listing.server == "tmr1"
    (entry,) = listing.licenses
    assert (entry.firm, entry.product, entry.tmr_id, entry.quantity) == (FIRM, PRODUCT, 8, 5)
    assert entry.status == "1:#8 2:#8 3:(#7)"
    assert entry.features == {"edition": "pro"}
    status = client.status()
    assert status.role == "active"
    assert status.epoch == (1, "tmr1")
    assert [b.name for b in status.backends] == ["b1", "b2", "b3"]
    assert status.backends[0].extra == {"tmr_ids": {f"{FIRM}/{PRODUCT}": 8}}


def test_checkout_context_manager_heartbeats_and_releases(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    server = make_server(lease=0.3)
    client = clients(server.endpoint)
    with client.checkout(FIRM, PRODUCT, seats=2) as handle:
        assert handle.held
        assert (handle.firm_code, handle.product_code, handle.seats) == (FIRM, PRODUCT, 2)
        assert handle.tmr_id == 8
        assert handle.lease == pytest.approx(0.3)
        assert server.in_use == 2
        # lease/3 = 0.1 s: several heartbeats arrive while the seat is held.
        server.wait_for(lambda: server.handles[handle.id].heartbeats >= 3)
    assert handle.released and not handle.lost
    assert server.in_use == 0
    assert server.released == [handle.id]
    assert all(r.cid == client.client_id for r in server.requests if hasattr(r, "cid"))


def test_each_request_is_one_frame(make_server: MakeServer, clients: Callable[..., Client]) -> None:
    """No empty delimiter before the payload: with CURVE every frame is a box of its own to
    seal, send, open and receive on both sides, for nothing (the server answers in kind)."""
    server = make_server(lease=0.3)
    client = clients(server.endpoint)
    with client.checkout(FIRM, PRODUCT) as handle:
        server.wait_for(lambda: server.handles[handle.id].heartbeats >= 1)
    client.status()
    ops = [r.op for r in server.requests]
    assert {"checkout", "heartbeat", "release", "status"} <= set(ops)
    assert server.envelopes == [[]] * len(ops)


def test_heartbeats_stop_after_release(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    server = make_server(lease=0.15)
    client = clients(server.endpoint)
    handle = client.checkout(FIRM, PRODUCT)
    server.wait_for(lambda: len(server.seen("heartbeat")) >= 2)
    assert handle.release() is True
    count = len(server.seen("heartbeat"))
    # A second handle keeps the heartbeat thread busy for a while: the first gets no more.
    other = client.checkout(FIRM, PRODUCT)
    server.wait_for(lambda: server.handles[other.id].heartbeats >= 4)
    late = [r for r in server.seen("heartbeat")[count:] if getattr(r, "handle", "") == handle.id]
    assert late == []
    other.release()


def test_release_is_idempotent(make_server: MakeServer, clients: Callable[..., Client]) -> None:
    server = make_server()
    client = clients(server.endpoint)
    handle = client.checkout(FIRM, PRODUCT)
    assert handle.release() is True
    assert handle.release() is False
    assert len(server.seen("release")) == 1
    with pytest.raises(UnknownHandle):
        handle.crypt("encrypt", b"x")


def test_crypt(make_server: MakeServer, clients: Callable[..., Client]) -> None:
    server = make_server()
    client = clients(server.endpoint)
    with client.checkout(FIRM, PRODUCT) as handle:
        assert handle.crypt("encrypt", b"abc") == b"cba"
        assert handle.decrypt(b"cba") == b"abc"
        assert len(handle.hmac(b"abc")) == 32
        big = bytes(range(256)) * 256  # 64 KiB, the maximum
        result = handle.crypt_result("encrypt", big)
        assert result.data == big[::-1] and result.backend == "b2"
        sent = len(server.requests)
        with pytest.raises(BadRequest):
            handle.crypt("encrypt", big + b"x")
        with pytest.raises(BadRequest):
            handle.crypt("sign", b"x")  # type: ignore[arg-type]
        assert len(server.requests) == sent  # refused before sending


def test_close_releases_held_seats(make_server: MakeServer, clients: Callable[..., Client]) -> None:
    server = make_server()
    client = clients(server.endpoint)
    first = client.checkout(FIRM, PRODUCT)
    second = client.checkout(FIRM, PRODUCT, seats=2)
    assert server.in_use == 3
    client.close()
    assert server.in_use == 0
    assert first.released and second.released
    assert client.closed
    with pytest.raises(ClientClosedError):
        client.list_licenses()
    client.close()  # idempotent


# ---------------------------------------------------------------------------- retries


def test_lost_checkout_reply_is_retried_with_the_same_rid(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    dropped: list[str] = []

    def drop_first_checkout(req: Request, server: FakeServer) -> bool:
        if isinstance(req, CheckoutRequest) and not dropped:
            dropped.append(req.rid)
            return True
        return False

    server = make_server(drop_reply=drop_first_checkout)
    client = clients(server.endpoint)
    handle = client.checkout(FIRM, PRODUCT)
    checkouts = server.seen("checkout")
    assert len(checkouts) == 2
    assert checkouts[0].rid == checkouts[1].rid == dropped[0]
    assert server.in_use == 1  # one seat, not two
    assert list(server.handles) == [handle.id]


def test_failover_from_a_standby_to_the_active_server(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    standby = make_server(name="tmr2", role="standby")
    active = make_server(name="tmr1")
    client = clients([standby.endpoint, active.endpoint])
    handle = client.checkout(FIRM, PRODUCT)
    assert active.in_use == 1
    (asked,) = standby.seen("checkout")
    (served,) = active.seen("checkout")
    assert asked.rid == served.rid
    handle.release()


def test_failover_from_a_silent_server(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    dead = make_server(name="dead", hook=lambda req, s: DROP)
    active = make_server(name="tmr1")
    client = clients([dead.endpoint, active.endpoint])
    started = time.monotonic()
    handle = client.checkout(FIRM, PRODUCT)
    assert time.monotonic() - started < 2.0
    assert dead.seen("checkout")[0].rid == active.seen("checkout")[0].rid
    assert active.in_use == 1
    handle.release()


def test_failover_stays_with_the_standby_while_the_other_server_is_silent(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    """The active server died (silent); the standby answers NOT_ACTIVE until it is promoted
    (here: at its second request). The SDK asks the standby again after a back-off instead
    of going back to the dead server for another attempt timeout."""
    dead = make_server(name="dead", hook=lambda req, s: DROP)

    def promoted_at_the_second_checkout(req: Request, server: FakeServer) -> None:
        if len(server.seen("checkout")) >= 2:
            server.role = "active"

    standby = make_server(name="standby", role="standby", hook=promoted_at_the_second_checkout)
    client = clients([dead.endpoint, standby.endpoint])
    handle = client.checkout(FIRM, PRODUCT)
    assert standby.in_use == 1
    assert len(dead.seen("checkout")) == 1  # not asked again
    assert len(standby.seen("checkout")) == 2
    assert len({r.rid for r in dead.seen("checkout") + standby.seen("checkout")}) == 1
    handle.release()


def _checkout_after_failover(
    make_server: MakeServer,
    clients: Callable[..., Client],
    dead: FakeServer,
    role: str,
    hook: Callable[[Request, FakeServer], None],
) -> tuple[FakeServer, Handle]:
    """A checkout by a client of `dead` (silent) and a second server starting in `role`
    (`hook` on each of its requests), with the SDK's default attempt timeout (this module's
    clients use 0.2 s, below a takeover's hold): the second server and the handle."""
    promoted = make_server(name="promoted", role=role, hook=hook)
    client = clients([dead.endpoint, promoted.endpoint], attempt_timeout=0.5, timeout=10.0)
    return promoted, client.checkout(FIRM, PRODUCT)


def test_failover_stays_with_a_server_taking_over_however_long_it_holds_each_request(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    """A server taking over keeps each request up to its takeover_hold_ms before it answers
    NOT_ACTIVE. Such an answer is asked again at once and does not use up the client's stay
    (which its own pauses do: four, 50 + 100 + 200 + 400 ms, the 0.75 s of one more attempt on
    the silent server). Here each NOT_ACTIVE comes 0.3 s late and the server is active at the
    client's eighth request, 2.1 s into the stay."""
    dead = make_server(name="dead", hook=lambda req, s: DROP)

    def taking_over(req: Request, server: FakeServer) -> None:
        if len(server.seen("checkout")) >= 8:
            server.role = "active"
        else:
            time.sleep(0.3)  # the server's hold before its NOT_ACTIVE

    promoted, handle = _checkout_after_failover(make_server, clients, dead, "takeover", taking_over)
    assert promoted.in_use == 1
    assert len(dead.seen("checkout")) == 1  # not asked again
    assert len(promoted.seen("checkout")) == 8
    handle.release()


def test_failover_waits_for_a_server_taking_over_that_is_busy_in_one_long_step(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    """The standby answers NOT_ACTIVE at once, is promoted, and reads the client's next
    request only after one long step (adopting a large table: 1.2 s here, longer than the
    0.75 s attempt after the first timeout). While staying, the SDK waits for it
    (`STAY_WAIT`) instead of going back to the dead server for another attempt."""
    dead = make_server(name="dead", hook=lambda req, s: DROP)

    def busy_then_active(req: Request, server: FakeServer) -> None:
        if len(server.seen("checkout")) >= 2:
            time.sleep(1.2)  # the takeover's step: nothing read meanwhile
            server.role = "active"

    promoted, handle = _checkout_after_failover(
        make_server, clients, dead, "standby", busy_then_active
    )
    assert promoted.in_use == 1
    assert len(dead.seen("checkout")) == 1  # not asked again
    assert len(promoted.seen("checkout")) == 2
    handle.release()


def test_failover_goes_back_to_a_silent_server_after_staying_as_long_as_its_attempt(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    """The first server was only slow (it swallowed one request); the other stays standby.
    The SDK stays with the standby for one attempt timeout, then asks the first again."""
    swallowed: list[str] = []

    def swallow_the_first(req: Request, server: FakeServer) -> object:
        if isinstance(req, CheckoutRequest) and not swallowed:
            swallowed.append(req.rid)
            return DROP
        return None

    slow = make_server(name="slow", hook=swallow_the_first)
    standby = make_server(name="standby", role="standby")
    client = clients([slow.endpoint, standby.endpoint])
    handle = client.checkout(FIRM, PRODUCT)
    assert slow.in_use == 1
    assert len(slow.seen("checkout")) == 2
    assert len(standby.seen("checkout")) >= 2  # stayed: asked again after a back-off
    assert {r.rid for r in slow.seen("checkout") + standby.seen("checkout")} == set(swallowed)
    handle.release()


def test_vip_failover_same_endpoint_new_server(
    make_server: MakeServer, clients: Callable[..., Client], zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """One endpoint (the VIP): the first server swallows the request and dies, a new one
    takes the address; the client reconnects and resends the same request."""
    old = make_server(name="old", hook=lambda req, s: DROP)
    client = clients(old.endpoint)
    result: list[Handle] = []
    worker = threading.Thread(target=lambda: result.append(client.checkout(FIRM, PRODUCT)))
    worker.start()
    old.wait_for(lambda: len(old.seen("checkout")) >= 1)
    old.stop()
    new = make_server(name="new", port=old.port)
    worker.join(10)
    assert result, "checkout did not complete"
    assert new.seen("checkout")[0].rid == old.seen("checkout")[0].rid
    assert new.in_use == 1


def quorum_lost_to_checkouts(req: Request, server: FakeServer) -> object:
    if isinstance(req, CheckoutRequest):
        return ErrorReply(req.rid, ErrorCode.QUORUM_LOST, "(1:- 2:- 3:-)")
    return None


def test_quorum_lost_is_checked_once_on_the_other_endpoint(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    """A deposed server (paused, cut off) may see no backends while the other one serves:
    its QUORUM_LOST is not reported while the other endpoint grants."""
    deposed = make_server(name="deposed", hook=quorum_lost_to_checkouts)
    active = make_server(name="active")
    client = clients([deposed.endpoint, active.endpoint])
    handle = client.checkout(FIRM, PRODUCT)
    assert active.in_use == 1
    assert deposed.seen("checkout")[0].rid == active.seen("checkout")[0].rid
    handle.release()


@pytest.mark.parametrize("other", ["standby", "silent", "quorum_lost"])
def test_quorum_lost_is_reported_when_the_other_endpoint_cannot_serve(
    make_server: MakeServer, clients: Callable[..., Client], other: str
) -> None:
    active = make_server(name="active", hook=quorum_lost_to_checkouts)
    if other == "standby":
        second = make_server(name="standby", role="standby")
    elif other == "silent":
        second = make_server(name="silent", hook=lambda req, s: DROP)
    else:
        second = make_server(name="second", hook=quorum_lost_to_checkouts)
    client = clients([active.endpoint, second.endpoint], timeout=5.0)
    started = time.monotonic()
    with pytest.raises(QuorumLost, match="1:- 2:- 3:-"):
        client.checkout(FIRM, PRODUCT)
    assert time.monotonic() - started < 1.5  # one check, not retries until the timeout
    assert len(active.seen("checkout")) == 1
    assert len(second.seen("checkout")) == 1


def test_not_active_everywhere_times_out(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    a = make_server(role="standby")
    b = make_server(role="fenced")
    client = clients([a.endpoint, b.endpoint], timeout=1.0)
    started = time.monotonic()
    with pytest.raises(Timeout) as err:
        client.checkout(FIRM, PRODUCT)
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 2.5
    assert "NOT_ACTIVE" in str(err.value)
    rids = {r.rid for r in a.seen("checkout") + b.seen("checkout")}
    assert len(rids) == 1  # every attempt was the same request


def test_no_server_times_out() -> None:
    keys = generate_keypair()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with Client([endpoint], keys.public, timeout=0.8, attempt_timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(Timeout) as err:
            client.list_licenses()
        assert time.monotonic() - started < 2.0
        assert err.value.code == ErrorCode.TIMEOUT
        assert isinstance(err.value, ApiError)


def test_wrong_server_key_times_out(make_server: MakeServer) -> None:
    server = make_server()
    wrong_key = generate_keypair().public
    client = Client(server.endpoint, wrong_key, timeout=0.8, attempt_timeout=0.2)
    with client, pytest.raises(Timeout):
        client.status()
    assert server.requests == []  # the CURVE handshake never completed


def test_stale_and_malformed_replies_are_ignored(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    def noise(req: Request, server: FakeServer) -> object:
        return [
            b"\xc1garbage",
            encode_reply(OkReply("someone.else", {"x": 1})),
            encode_reply(ErrorReply("old.1", ErrorCode.NO_LICENSE_AVAILABLE, "stale")),
        ]

    server = make_server(hook=noise)
    client = clients(server.endpoint)
    assert client.list_licenses().serial == "131-0000001"
    assert len(server.seen("list")) == 1


def test_malformed_reply_to_our_request_raises(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    server = make_server(hook=lambda req, s: OkReply(req.rid, {"handle": "h1"}))
    client = clients(server.endpoint)
    with pytest.raises(ProtocolError, match="checkout result: missing key"):
        client.checkout(FIRM, PRODUCT)
    assert len(server.seen("checkout")) == 1


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "exc_type"),
    [
        (ErrorCode.NO_LICENSE_AVAILABLE, NoLicenseAvailable),
        (ErrorCode.QUORUM_LOST, QuorumLost),
        (ErrorCode.UNKNOWN_LICENSE, UnknownLicense),
        (ErrorCode.LICENSE_EXPIRED, LicenseExpired),
        (ErrorCode.UNAUTHORIZED, Unauthorized),
        (ErrorCode.BAD_REQUEST, BadRequest),
        (ErrorCode.UNKNOWN_HANDLE, UnknownHandle),
    ],
)
def test_error_replies_raise_typed_exceptions_at_once(
    make_server: MakeServer,
    clients: Callable[..., Client],
    code: ErrorCode,
    exc_type: type[ApiError],
) -> None:
    server = make_server(hook=lambda req, s: ErrorReply(req.rid, code, f"because {code}"))
    client = clients(server.endpoint)
    with pytest.raises(exc_type, match=f"because {code}"):
        client.checkout(FIRM, PRODUCT)
    assert len(server.seen("checkout")) == 1  # no retry


def test_real_refusals(make_server: MakeServer, clients: Callable[..., Client]) -> None:
    server = make_server(quantity=2)
    client = clients(server.endpoint)
    with client.checkout(FIRM, PRODUCT, seats=2), pytest.raises(NoLicenseAvailable):
        client.checkout(FIRM, PRODUCT)
    with pytest.raises(UnknownLicense):
        client.checkout(FIRM, PRODUCT + 1)
    with pytest.raises(BadRequest):
        client.checkout(5_999_999, PRODUCT)  # refused locally
    assert server.in_use == 0


def test_unknown_error_code_becomes_bad_request(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    server = make_server(hook=lambda req, s: ErrorReply(req.rid, "SOMETHING_NEW", "hm"))
    client = clients(server.endpoint)
    with pytest.raises(BadRequest, match="SOMETHING_NEW"):
        client.status()


# ---------------------------------------------------------------------------- lost handles


def test_heartbeat_unknown_handle_marks_the_handle_lost(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    server = make_server(lease=0.3)
    client = clients(server.endpoint)
    lost: list[Handle] = []
    handle = client.checkout(FIRM, PRODUCT, on_lost=lost.append)
    server.forget(handle.id)  # e.g. its lease expired on the server
    assert handle.wait_lost(5)
    assert handle.lost and not handle.held
    wait_until(lambda: lost == [handle])  # the callback runs right after
    assert handle.release() is False  # nothing to give back
    assert server.seen("release") == []
    with pytest.raises(UnknownHandle):
        handle.heartbeat()


def test_heartbeat_unauthorized_marks_the_handle_lost(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    """The server's reload took this client's key off client_allowlist: no heartbeat will
    renew the handle again, so the application is told at once (not at the lease's end), and
    the seats are given back (the server still takes a release from the key)."""
    refused = threading.Event()

    def hook(req: Request, server: FakeServer) -> object:
        if isinstance(req, HeartbeatRequest) and refused.is_set():
            return ErrorReply(req.rid, ErrorCode.UNAUTHORIZED, "not in client_allowlist")
        return None

    server = make_server(lease=0.3, hook=hook)
    client = clients(server.endpoint)
    lost: list[Handle] = []
    handle = client.checkout(FIRM, PRODUCT, on_lost=lost.append)
    wait_until(lambda: len(server.seen("heartbeat")) >= 1)
    assert not handle.lost
    refused.set()
    assert handle.wait_lost(5)
    assert handle.lost and not handle.held
    assert handle.lost_reason is not None and "no longer admits" in handle.lost_reason
    wait_until(lambda: lost == [handle])
    wait_until(lambda: server.in_use == 0)  # released, not left to its lease
    assert [r.handle for r in server.seen("release")] == [handle.id]
    beats = len(server.seen("heartbeat"))
    time.sleep(0.4)  # more than a heartbeat interval (0.1 s): none is sent after the loss
    assert len(server.seen("heartbeat")) == beats


def test_release_unknown_handle_after_a_retry_counts_as_released(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    """The first release went through but its reply was lost; the retry (same rid) reaches
    a server without the dedupe entry (e.g. after fail-over) and gets UNKNOWN_HANDLE."""
    releases: list[str] = []

    def hook(req: Request, server: FakeServer) -> object:
        if isinstance(req, ReleaseRequest):
            releases.append(req.rid)
            if len(releases) == 2:
                return ErrorReply(req.rid, ErrorCode.UNKNOWN_HANDLE, "no such handle")
        return None

    server = make_server(hook=hook, drop_reply=lambda req, s: isinstance(req, ReleaseRequest))
    client = clients(server.endpoint)
    handle = client.checkout(FIRM, PRODUCT)
    assert handle.release() is True
    assert handle.released and not handle.lost
    assert releases[0] == releases[1]
    assert server.in_use == 0


def test_release_of_an_unknown_handle_raises_but_not_on_exit(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    server = make_server()
    client = clients(server.endpoint)
    handle = client.checkout(FIRM, PRODUCT)
    server.forget(handle.id)
    with pytest.raises(UnknownHandle):
        handle.release()
    assert handle.lost
    with client.checkout(FIRM, PRODUCT) as other:
        server.forget(other.id)
    assert other.lost  # __exit__ logged it instead of raising


def test_release_answered_not_released_marks_lost_and_raises(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    """The real server answers `released: false` for a handle it no longer holds (lease
    expired): the caller is told, not handed a success."""

    def hook(req: Request, server: FakeServer) -> object:
        if isinstance(req, ReleaseRequest):
            return OkReply(req.rid, ReleaseResult(False))
        return None

    server = make_server(hook=hook)
    client = clients(server.endpoint)
    lost: list[Handle] = []
    handle = client.checkout(FIRM, PRODUCT, on_lost=lost.append)
    with pytest.raises(UnknownHandle, match="no longer held"):
        handle.release()
    assert handle.lost and not handle.released and not handle.held
    assert lost == [handle]
    assert handle.release() is False  # nothing more is sent
    assert len(server.seen("release")) == 1
    with client.checkout(FIRM, PRODUCT) as other:
        pass
    assert other.lost  # __exit__ logged it instead of raising


def test_release_not_released_after_a_retry_counts_as_released(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    """The first release went through but its reply was lost; the retry finds the handle
    gone (`released: false`): the first attempt released it."""
    releases: list[str] = []

    def hook(req: Request, server: FakeServer) -> object:
        if isinstance(req, ReleaseRequest):
            releases.append(req.rid)
            if len(releases) == 2:
                return OkReply(req.rid, ReleaseResult(False))
        return None

    server = make_server(hook=hook, drop_reply=lambda req, s: isinstance(req, ReleaseRequest))
    client = clients(server.endpoint)
    handle = client.checkout(FIRM, PRODUCT)
    assert handle.release() is True
    assert handle.released and not handle.lost
    assert releases[0] == releases[1]


def test_exit_does_not_mask_the_body_exception(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    server = make_server()
    client = clients(server.endpoint, timeout=0.5)
    with pytest.raises(RuntimeError, match="body"), client.checkout(FIRM, PRODUCT):
        server.hook = lambda req, s: DROP  # the release will time out
        raise RuntimeError("body")


# ---------------------------------------------------------------------------- threads, keys


def test_concurrent_calls_from_many_threads(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    server = make_server(lease=0.2, quantity=100)
    client = clients(server.endpoint)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                with client.checkout(FIRM, PRODUCT) as handle:
                    client.list_licenses()
                    assert handle.crypt("encrypt", b"ab") == b"ba"
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert server.in_use == 0
    assert len(server.seen("checkout")) == 80


def test_given_client_keys_are_used(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    server = make_server()
    keys = generate_keypair()
    client = clients(server.endpoint, client_keys=keys, client_id="build-agent-7")
    assert client.public_key == keys.public
    client.checkout(FIRM, PRODUCT).release()
    (checkout,) = server.seen("checkout")
    assert isinstance(checkout, CheckoutRequest) and checkout.cid == "build-agent-7"


def test_server_key_from_a_file(
    make_server: MakeServer, service_keys: NodeKeys, tmp_path: Path
) -> None:
    server = make_server()
    pub = tmp_path / "service.pub"
    pub.write_text(service_keys.public + "\n")
    with Client([server.endpoint], str(pub), timeout=2) as client:
        assert client.status().role == "active"


def test_constructor_validation(service_keys: NodeKeys) -> None:
    with pytest.raises(ValueError, match="endpoints"):
        Client([], service_keys.public)
    with pytest.raises(ValueError, match="timeout"):
        Client(["tcp://127.0.0.1:1"], service_keys.public, timeout=0)
    with pytest.raises(BadRequest, match="cid"):
        Client(["tcp://127.0.0.1:1"], service_keys.public, client_id="tab\there")
    with pytest.raises(ConfigError):
        Client(["tcp://127.0.0.1:1"], "not-a-key-and-not-a-file")


# ---------------------------------------------------------------------------- who the client is


def test_checkout_carries_the_os_user_host_and_pid(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    import getpass
    import os
    import socket

    server = make_server()
    client = clients(server.endpoint)
    client.checkout(FIRM, PRODUCT).release()
    (req,) = server.seen("checkout")
    assert isinstance(req, CheckoutRequest)
    assert req.user == getpass.getuser() == client.user
    assert req.host == socket.gethostname()
    assert req.pid == os.getpid()


def test_the_application_may_set_a_display_user(
    make_server: MakeServer, clients: Callable[..., Client]
) -> None:
    server = make_server()
    client = clients(server.endpoint, user="Alice (CAD seat)")
    client.checkout(FIRM, PRODUCT).release()
    (req,) = server.seen("checkout")
    assert isinstance(req, CheckoutRequest) and req.user == "Alice (CAD seat)"


@pytest.mark.parametrize("user", ["x" * 65, "evil\nuser", "\x1b[2J"])
def test_a_bad_display_user_is_refused_at_once(service_keys: NodeKeys, user: str) -> None:
    with pytest.raises(ProtocolError, match="'user'"):
        Client("tcp://127.0.0.1:1", service_keys.public, user=user)
