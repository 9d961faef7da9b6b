"""The activation service's ticket rules (`tmr.isv.portal`) and its API without a socket.

Each refusal names its reason and leaves nothing issued: the product's last TMR ID is
unchanged and the ticket stays unbound.
"""

from __future__ import annotations

import http.client
import json
import threading
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from lic_world import NOW, PRODUCT, Node, World, make_nodes

from tmr.errors import UsageError
from tmr.isv.portal import (
    TICKET_RE,
    Activation,
    BindingState,
    PortalError,
    PortalReason,
    TicketKind,
    TicketStore,
)
from tmr.isv.portal_http import PortalService, make_server, serve_in_thread
from tmr.isv.profile import load_product
from tmr.licensing.exchange import (
    ExchangeError,
    ExchangeReason,
    LicenseRequest,
    LicenseUpdate,
    ReceiptBundle,
    bundle_receipts,
    bundle_request,
    canonical,
    install_update,
    make_receipt,
    signed_fingerprint,
)


def _request(world: World, nodes: list[Node] | None = None) -> LicenseRequest:
    return bundle_request(
        [
            signed_fingerprint(n.keys, n.machine_id, world.vendor.public, now=NOW)
            for n in (nodes or world.nodes)
        ]
    )


def _receipts(world: World, update: LicenseUpdate, tmp: Path) -> ReceiptBundle:
    docs = []
    for i, n in enumerate(world.nodes):
        d = tmp / f"lic{i}"
        d.mkdir(exist_ok=True)
        install_update(
            update, keyring=world.keyring, node=n.keys, machine_id=n.machine_id, license_dir=d,
            now=NOW,
        )  # fmt: skip
        docs.append(
            make_receipt(
                n.keys,
                n.machine_id,
                world.vendor.public,
                license_dir=d,
                product_code=PRODUCT,
                keyring=world.keyring,
                now=NOW + 60,
            )
        )
    return bundle_receipts(docs)


@pytest.fixture
def store(world: World) -> TicketStore:
    return TicketStore(world.vendor)


def _last_tmr_id(world: World) -> int:
    record = load_product(world.vendor, PRODUCT)
    return 0 if record is None else record.last_tmr_id


def _refused(reason: PortalReason, exc: pytest.ExceptionInfo[PortalError]) -> None:
    assert exc.value.reason is reason, str(exc.value)
    assert str(exc.value).startswith(reason.value)


def _new(store: TicketStore, **kw: Any) -> str:
    kw.setdefault("now", NOW - 10)
    return store.create(product_code=PRODUCT, quantity=kw.pop("quantity", 20), **kw).ticket_id


def test_ticket_ids_are_random_and_listed(store: TicketStore) -> None:
    a, b = _new(store), _new(store, kind=TicketKind.UPDATE)
    assert a != b and TICKET_RE.fullmatch(a) and TICKET_RE.fullmatch(b)
    listed = {t.ticket_id: t for t in store.list()}
    assert set(listed) == {a, b}
    assert listed[b].kind is TicketKind.UPDATE and listed[a].trio is None
    assert (store.path.stat().st_mode & 0o777) == 0o600


def test_same_ticket_same_trio_gets_the_same_set_again(world: World, store: TicketStore) -> None:
    ticket = _new(store, tmr_id=7)
    first = store.activate(ticket, _request(world), now=NOW)
    assert not first.replayed and first.update.tmr_id == 7 and first.update.quantity == 20
    again = store.activate(ticket, _request(world), now=NOW + 5)  # a new request, same trio
    assert again.replayed
    assert canonical(again.update.to_obj()) == canonical(first.update.to_obj())
    assert _last_tmr_id(world) == 7  # nothing issued the second time
    t = store.get(ticket)
    assert (t.set_id, t.bound_tmr_id, t.state) == (first.update.set_id, 7, BindingState.ISSUED)


def test_new_ticket_without_tmr_id_takes_the_next_free_one(
    world: World, store: TicketStore
) -> None:
    assert store.activate(_new(store), _request(world), now=NOW).update.tmr_id == 1


def test_ticket_bound_to_one_trio_is_refused_for_another(world: World, store: TicketStore) -> None:
    ticket = _new(store, tmr_id=7)
    store.activate(ticket, _request(world), now=NOW)
    with pytest.raises(PortalError) as exc:
        store.activate(ticket, _request(world, make_nodes()), now=NOW)
    _refused(PortalReason.TICKET_BOUND_ELSEWHERE, exc)
    assert _last_tmr_id(world) == 7


def test_unknown_and_malformed_tickets(world: World, store: TicketStore) -> None:
    with pytest.raises(PortalError) as exc:
        store.activate("tkt-" + "A" * 32, _request(world), now=NOW)
    _refused(PortalReason.UNKNOWN_TICKET, exc)
    with pytest.raises(PortalError) as exc:
        store.activate("'; DROP TABLE tickets; --", _request(world), now=NOW)
    _refused(PortalReason.BAD_TICKET, exc)
    assert _last_tmr_id(world) == 0


def test_expired_ticket_issues_nothing(world: World, store: TicketStore) -> None:
    ticket = _new(store, expires=int(NOW))
    with pytest.raises(PortalError) as exc:
        store.activate(ticket, _request(world), now=NOW)
    _refused(PortalReason.TICKET_EXPIRED, exc)
    assert _last_tmr_id(world) == 0 and store.get(ticket).trio is None


def test_expired_ticket_still_replays_its_set(world: World, store: TicketStore) -> None:
    ticket = _new(store, expires=int(NOW) + 100)
    first = store.activate(ticket, _request(world), now=NOW)
    assert store.activate(ticket, _request(world), now=NOW + 1000).update == first.update


def test_update_ticket_needs_a_current_set(world: World, store: TicketStore) -> None:
    ticket = _new(store, kind=TicketKind.UPDATE, quantity=30)
    with pytest.raises(PortalError) as exc:
        store.activate(ticket, _request(world), now=NOW)
    _refused(PortalReason.NO_CURRENT_SET, exc)
    assert store.get(ticket).trio is None


def test_update_ticket_gives_the_next_tmr_id_to_the_holding_trio(
    world: World, store: TicketStore
) -> None:
    store.activate(_new(store, tmr_id=7), _request(world), now=NOW)
    other = _new(store, kind=TicketKind.UPDATE, quantity=30)
    with pytest.raises(ExchangeError) as exc:  # another trio: a second license
        store.activate(other, _request(world, make_nodes()), now=NOW)
    assert exc.value.reason is ExchangeReason.WRONG_TRIO
    assert _last_tmr_id(world) == 7 and store.get(other).trio is None
    update = store.activate(other, _request(world), now=NOW).update
    assert (update.tmr_id, update.quantity) == (8, 30)


def test_new_license_ticket_for_a_licensed_product_is_refused(
    world: World, store: TicketStore
) -> None:
    store.activate(_new(store, tmr_id=7), _request(world), now=NOW)
    second = _new(store)
    with pytest.raises(PortalError) as exc:
        store.activate(second, _request(world), now=NOW)
    _refused(PortalReason.ALREADY_LICENSED, exc)
    assert _last_tmr_id(world) == 7


def test_tampered_request_binds_nothing(world: World, store: TicketStore) -> None:
    ticket = _new(store)
    request = _request(world)
    body = dict(request.backends[0].body)
    body["serial"] = "130-0000001"
    forged = LicenseRequest(
        backends=(
            type(request.backends[0])(request.backends[0].kind, body, request.backends[0].proof),
            *request.backends[1:],
        )
    )
    with pytest.raises(ExchangeError) as exc:
        store.activate(ticket, forged, now=NOW)
    assert exc.value.reason is ExchangeReason.BAD_PROOF
    assert store.get(ticket).trio is None and _last_tmr_id(world) == 0


def test_receipts_confirm_the_tickets_set(world: World, store: TicketStore, tmp_path: Path) -> None:
    fake = _fake_receipts(world, tmp_path)  # valid receipts of another product's set
    ticket = _new(store, tmr_id=7)
    with pytest.raises(PortalError) as exc:
        store.receipts(ticket, fake)
    _refused(PortalReason.NOT_ACTIVATED, exc)
    update = store.activate(ticket, _request(world), now=NOW).update
    bundle = _receipts(world, update, tmp_path)
    other = _new(store, kind=TicketKind.UPDATE)
    store.activate(other, _request(world), now=NOW)
    with pytest.raises(PortalError) as exc:  # receipts of #7 under the #8 ticket
        store.receipts(other, bundle, now=NOW + 60)
    _refused(PortalReason.OTHER_SET, exc)
    done = store.receipts(ticket, bundle, now=NOW + 60)
    assert done["confirmed"] and not done["already_confirmed"] and done["set_id"] == update.set_id
    assert store.get(ticket).state is BindingState.INSTALLED
    again = store.receipts(ticket, bundle, now=NOW + 70)  # a retry after a lost answer
    assert again["confirmed"] and again["already_confirmed"]


def _fake_receipts(world: World, tmp: Path) -> ReceiptBundle:
    store = TicketStore(world.vendor)
    t = store.create(product_code=PRODUCT + 1, quantity=1, now=NOW - 10).ticket_id
    update = store.activate(t, _request(world), now=NOW).update
    docs = []
    for i, n in enumerate(world.nodes):
        d = tmp / f"fake{i}"
        d.mkdir()
        install_update(
            update, keyring=world.keyring, node=n.keys, machine_id=n.machine_id, license_dir=d,
            now=NOW,
        )  # fmt: skip
        docs.append(make_receipt(
            n.keys, n.machine_id, world.vendor.public, license_dir=d,
            product_code=PRODUCT + 1, keyring=world.keyring, now=NOW,
        ))  # fmt: skip
    return bundle_receipts(docs)


# --- the API without a socket --------------------------------------------------------------


def _call(svc: PortalService, method: str, path: str, body: Any) -> tuple[HTTPStatus, Any]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return svc.handle(method, path, data)


def test_api_errors_are_typed(world: World) -> None:
    svc = PortalService(world.vendor)
    req = _request(world).to_obj()
    cases: list[tuple[str, str, Any, HTTPStatus, str]] = [
        ("GET", "/nope", None, HTTPStatus.NOT_FOUND, "NOT_FOUND"),
        ("GET", "/v1/activate", None, HTTPStatus.METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        ("POST", "/v1/activate", b"{not json", HTTPStatus.BAD_REQUEST, "BAD_BODY"),
        ("POST", "/v1/activate", b"\xff\xfe", HTTPStatus.BAD_REQUEST, "BAD_BODY"),
        ("POST", "/v1/activate", b"[" * 100000, HTTPStatus.BAD_REQUEST, "BAD_BODY"),
        ("POST", "/v1/activate", [1], HTTPStatus.BAD_REQUEST, "BAD_BODY"),
        ("POST", "/v1/activate", {"request": req}, HTTPStatus.BAD_REQUEST, "BAD_BODY"),
        ("POST", "/v1/activate", {"ticket": "x", "request": 1}, HTTPStatus.BAD_REQUEST, "BAD_BODY"),
        (
            "POST", "/v1/activate", {"ticket": "x", "request": {"kind": 1}},
            HTTPStatus.BAD_REQUEST, "WRONG_KIND",
        ),
        ("POST", "/v1/activate", {"ticket": "x", "request": req}, HTTPStatus.BAD_REQUEST,
         "BAD_TICKET"),
        (
            "POST", "/v1/activate", {"ticket": "tkt-" + "a" * 32, "request": req},
            HTTPStatus.NOT_FOUND, "UNKNOWN_TICKET",
        ),
        (
            "POST", "/v1/receipts", {"ticket": "tkt-" + "a" * 32, "receipt": {}},
            HTTPStatus.BAD_REQUEST, "WRONG_KIND",
        ),
    ]  # fmt: skip
    for method, path, body, status, code in cases:
        got, obj = _call(svc, method, path, body)
        assert (got, obj["error"]["code"]) == (status, code), (path, body, obj)
        assert not obj["error"]["message"].startswith(code)
    assert _call(svc, "GET", "/v1/health", None)[1]["ok"] is True


def test_api_activate_and_replay(world: World) -> None:
    svc = PortalService(world.vendor)
    ticket = _new(svc.store, tmr_id=7)
    body = {"ticket": ticket, "request": _request(world).to_obj()}
    status, first = _call(svc, "POST", "/v1/activate", body)
    assert status is HTTPStatus.OK and first["tmr_id"] == 7 and not first["replayed"]
    status, again = _call(svc, "POST", "/v1/activate", body)
    assert again["replayed"] and again["update"] == first["update"]
    body["request"] = _request(world, make_nodes()).to_obj()
    status, obj = _call(svc, "POST", "/v1/activate", body)
    assert (status, obj["error"]["code"]) == (HTTPStatus.CONFLICT, "TICKET_BOUND_ELSEWHERE")


def test_concurrent_activations_issue_one_set(world: World, store: TicketStore) -> None:
    ticket = _new(store, tmr_id=7)
    requests = [_request(world)] * 3 + [_request(world, make_nodes()) for _ in range(3)]
    results: list[Activation | PortalReason] = []

    def run(req: LicenseRequest) -> None:
        try:
            results.append(store.activate(ticket, req, now=NOW))
        except PortalError as exc:
            results.append(exc.reason)

    threads = [threading.Thread(target=run, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    activations = [r for r in results if isinstance(r, Activation)]
    refusals = [r for r in results if isinstance(r, PortalReason)]
    assert len(results) == 6 and _last_tmr_id(world) == 7  # exactly one set was issued
    assert len({a.update.set_id for a in activations}) == 1
    assert sum(not a.replayed for a in activations) == 1
    assert refusals == [PortalReason.TICKET_BOUND_ELSEWHERE] * len(refusals) and refusals


def test_ticket_options_are_checked(store: TicketStore) -> None:
    for kw in (
        {"kind": TicketKind.UPDATE, "tmr_id": 8},
        {"tmr_id": 0},
        {"quantity": 0},
        {"expires": int(NOW) - 20},
    ):
        with pytest.raises(UsageError):
            _new(store, **kw)
    assert store.list() == []


def test_an_internal_failure_is_a_500_without_details(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(world.vendor, ("127.0.0.1", 0))
    thread = serve_in_thread(server)
    try:

        def boom(*args: object, **kw: object) -> None:
            raise RuntimeError("secret detail")

        monkeypatch.setattr(server.service.store, "activate", boom)
        host, port = str(server.server_address[0]), int(server.server_address[1])
        body = json.dumps(
            {"ticket": _new(server.service.store), "request": _request(world).to_obj()}
        )
        for _ in range(2):  # and it keeps serving
            conn = http.client.HTTPConnection(host, port, timeout=30)
            conn.request("POST", "/v1/activate", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            text = resp.read().decode()
            conn.close()
            assert resp.status == 500 and json.loads(text)["error"]["code"] == "INTERNAL"
            assert "secret detail" not in text and "Traceback" not in text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class Crash(BaseException):
    """The service stopping mid-activation (not an error it answers)."""


def _crash_after_issuing(
    monkeypatch: pytest.MonkeyPatch, *, lose_update_record: bool = False
) -> list[LicenseUpdate]:
    """The next activation issues its set, then the service stops before binding the ticket
    (optionally before the set's update.json was written)."""
    from tmr.isv import offline, portal

    issued: list[LicenseUpdate] = []
    real = offline.issue_from_request  # what `portal` imported and calls by that name

    def issue_then_crash(*args: Any, **kw: Any) -> LicenseUpdate:
        monkeypatch.setattr(portal, "issue_from_request", real)  # once
        update = real(*args, **kw)
        issued.append(update)
        if lose_update_record:
            (args[0].directory / "issued" / f"{PRODUCT}-{update.tmr_id}" / "update.json").unlink()
        raise Crash

    monkeypatch.setattr(portal, "issue_from_request", issue_then_crash)
    return issued


@pytest.mark.parametrize("lose_update_record", [False, True])
def test_a_crash_between_issuing_and_binding_skips_no_tmr_id(
    world: World, monkeypatch: pytest.MonkeyPatch, lose_update_record: bool
) -> None:
    store = TicketStore(world.vendor)
    ticket = _new(store, tmr_id=7)
    issued = _crash_after_issuing(monkeypatch, lose_update_record=lose_update_record)
    with pytest.raises(Crash):
        store.activate(ticket, _request(world), now=NOW)
    assert _last_tmr_id(world) == 7 and store.get(ticket).trio is None
    # another trio cannot take the ticket the first one was activating
    restarted = TicketStore(world.vendor)
    with pytest.raises(PortalError) as exc:
        restarted.activate(ticket, _request(world, make_nodes()), now=NOW)
    _refused(PortalReason.TICKET_BOUND_ELSEWHERE, exc)
    # the retry of the same trio gets the set issued before the crash: no second set, no skip
    again = restarted.activate(ticket, _request(world), now=NOW + 5)
    assert (again.update.tmr_id, again.update.set_id) == (7, issued[0].set_id)
    assert canonical(again.update.to_obj()) == canonical(issued[0].to_obj())
    assert _last_tmr_id(world) == 7
    assert restarted.get(ticket).state is BindingState.ISSUED
    assert restarted.activate(ticket, _request(world), now=NOW + 6).replayed
    # and the update after it is the next TMR ID
    update = restarted.activate(
        _new(restarted, kind=TicketKind.UPDATE, quantity=30), _request(world)
    )
    assert update.update.tmr_id == 8


def test_a_crash_during_an_update_activation_skips_no_tmr_id(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TicketStore(world.vendor)
    store.activate(_new(store, tmr_id=7), _request(world), now=NOW)
    ticket = _new(store, kind=TicketKind.UPDATE, quantity=30)
    issued = _crash_after_issuing(monkeypatch)
    with pytest.raises(Crash):
        store.activate(ticket, _request(world), now=NOW)
    again = TicketStore(world.vendor).activate(ticket, _request(world), now=NOW + 5)
    assert (again.update.tmr_id, again.update.set_id) == (8, issued[0].set_id)
    assert _last_tmr_id(world) == 8


def test_a_crash_before_issuing_leaves_the_reserved_id_to_the_retry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tmr.isv import offline, portal

    store = TicketStore(world.vendor)
    ticket = _new(store, tmr_id=7)
    real = offline.issue_from_request  # what `portal` imported and calls by that name

    def crash(*args: Any, **kw: Any) -> LicenseUpdate:
        monkeypatch.setattr(portal, "issue_from_request", real)
        raise Crash

    monkeypatch.setattr(portal, "issue_from_request", crash)
    with pytest.raises(Crash):
        store.activate(ticket, _request(world), now=NOW)
    assert _last_tmr_id(world) == 0
    again = TicketStore(world.vendor).activate(ticket, _request(world), now=NOW)
    assert not again.replayed and again.update.tmr_id == 7
