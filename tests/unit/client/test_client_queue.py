"""The SDK's queued checkout (`client.checkout(..., wait=)`) against the fake server: it asks
again with the same request id until granted, reports each new position, gives up with
NoLicenseAvailable when `wait` runs out, and rides out a server that stops answering."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fake_tmr_server import DROP, FakeServer

from tmr.client import Client, NodeKeys, NoLicenseAvailable
from tmr.protocol.client_api import (
    CheckoutRequest,
    ErrorReply,
    OkReply,
    QueuedResult,
    Request,
)

FIRM, PRODUCT = 6000123, 42


@pytest.fixture
def clients(service_keys: NodeKeys) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(endpoints: list[str] | str, **kwargs: object) -> Client:
        opts: dict[str, object] = {"timeout": 5.0, "attempt_timeout": 0.2, **kwargs}
        client = Client(endpoints, service_keys.public, **opts)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def checkouts(server: FakeServer) -> list[CheckoutRequest]:
    return [r for r in server.requests if isinstance(r, CheckoutRequest)]


def test_queued_then_granted_with_the_same_request_id(
    make_server: Callable[..., FakeServer], clients: Callable[..., Client]
) -> None:
    answers = iter([3, 2, 2, 1])

    def queue(req: Request, s: FakeServer) -> object:
        position = next(answers, None)
        if isinstance(req, CheckoutRequest) and position is not None:
            return OkReply(req.rid, QueuedResult(True, position, 5.0, 0.05))
        return None  # granted

    server = make_server(hook=queue)
    client = clients(server.endpoint)
    seen: list[int] = []
    handle = client.checkout(FIRM, PRODUCT, 2, wait=30, on_queued=seen.append)
    assert handle.held and handle.seats == 2
    assert seen == [3, 2, 1]  # once per new position
    asks = checkouts(server)
    assert len(asks) == 5 and len({r.rid for r in asks}) == 1
    waits = [r.wait for r in asks]
    assert all(w is not None and 0 < w <= 30 for w in waits)
    assert waits == sorted(waits, key=lambda w: -(w or 0))  # the time left, shrinking
    assert server.in_use == 2


def test_a_checkout_without_wait_sends_no_wait(
    make_server: Callable[..., FakeServer], clients: Callable[..., Client]
) -> None:
    server = make_server()
    clients(server.endpoint).checkout(FIRM, PRODUCT)
    (req,) = checkouts(server)
    assert req.wait is None


def test_wait_runs_out_with_a_last_ask_without_wait(
    make_server: Callable[..., FakeServer], clients: Callable[..., Client]
) -> None:
    def full(req: Request, s: FakeServer) -> object:
        if not isinstance(req, CheckoutRequest):
            return None
        if req.wait is None:
            return ErrorReply(req.rid, "NO_LICENSE_AVAILABLE", "all seats in use")
        return OkReply(req.rid, QueuedResult(True, 1, min(5.0, req.wait), 0.1))

    server = make_server(hook=full)
    with pytest.raises(NoLicenseAvailable):
        clients(server.endpoint).checkout(FIRM, PRODUCT, wait=0.5)
    asks = checkouts(server)
    assert asks[-1].wait is None and all(r.wait is not None for r in asks[:-1])
    assert len(asks) >= 3


def test_a_silent_server_while_queued_is_waited_out(
    make_server: Callable[..., FakeServer], clients: Callable[..., Client]
) -> None:
    """A failover under way: no answer for longer than the client's timeout; the queued
    checkout asks again while `wait` lasts instead of raising Timeout."""
    state = {"n": 0}

    def flaky(req: Request, s: FakeServer) -> object:
        if not isinstance(req, CheckoutRequest):
            return None
        state["n"] += 1
        if state["n"] == 1:
            return OkReply(req.rid, QueuedResult(True, 1, 5.0, 0.05))
        if state["n"] <= 8:
            return DROP  # about 1.2 s of silence, the client's timeout is 0.5 s
        return None

    server = make_server(hook=flaky)
    client = clients(server.endpoint, timeout=0.5, attempt_timeout=0.15)
    handle = client.checkout(FIRM, PRODUCT, wait=20)
    assert handle.held and state["n"] >= 9


def test_bad_wait_is_refused_locally(
    make_server: Callable[..., FakeServer], clients: Callable[..., Client]
) -> None:
    server = make_server()
    client = clients(server.endpoint)
    for wait in (0, -1):
        with pytest.raises(ValueError, match="wait"):
            client.checkout(FIRM, PRODUCT, wait=wait)
    assert checkouts(server) == []
