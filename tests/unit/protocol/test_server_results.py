"""The client results as the server builds them (docs/design.md §4): each one survives
to_wire -> encode -> decode -> from_wire unchanged, and from_wire refuses it malformed.

The objects come from the builders the server uses (`admission.grant_result` and
`license_row`, the leader's heartbeat/release/crypt/admin-release answers, the service's
`list_result` and `status_result`, the usage worker's `UsageResult`), not from hand-written
maps, so a server-side value that a client would refuse fails here."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.replication.harness import Harness
from tmr.licensing.effective import CopyProblem, Effective
from tmr.protocol import results as r
from tmr.protocol.client_api import (
    RESULT_TYPES,
    AdminReleaseResult,
    CheckoutResult,
    CryptResult,
    HeartbeatResult,
    LicenseEntry,
    ListResult,
    OkReply,
    ReleaseResult,
    StatusResult,
    UsageResult,
    decode_reply,
    encode_ok,
    encode_reply,
)
from tmr.protocol.errors import ProtocolError
from tmr.protocol.results import RELEASED, Result, WireResult
from tmr.replication import admission
from tmr.replication.types import CopyReason, HandleRecord, LicenseInfo
from tmr.server.service import ServerService

KEY = (6000123, 42)
OP_OF: dict[type, str] = {cls: op for op, cls in RESULT_TYPES.items()}

printable = st.text(min_size=1, max_size=40).filter(str.isprintable)
finite = st.floats(min_value=0.0, max_value=1e12, allow_nan=False)


def round_trip(result: WireResult, op: str) -> Any:
    """What a client reads of `result` (the server's one encoding path)."""
    assert isinstance(result, RESULT_TYPES[op])
    reply = decode_reply(encode_reply(OkReply("r-1", result)), op=op)
    assert isinstance(reply, OkReply)
    return reply.result


# ---------------------------------------------------------------------------- builders


@st.composite
def checkout_results(draw: st.DrawFn) -> CheckoutResult:
    rec = HandleRecord(
        handle=draw(printable),
        firm=draw(st.integers(6_000_000, 6_999_999)),
        product=draw(st.integers(0, 2**32 - 1)),
        seats=draw(st.integers(1, 100_000)),
        client_id=draw(printable),
        request_id="r",
        granted_at=draw(finite),
        owner=draw(st.text(max_size=40)),
        user=draw(st.text(max_size=10)),
        host=draw(st.text(max_size=10)),
        pid=draw(st.integers(0, 2**32 - 1)),
    )
    return admission.grant_result(rec, draw(st.integers(0, 2**40)), draw(finite))


@st.composite
def license_entries(draw: st.DrawFn) -> LicenseEntry:
    available = draw(st.booleans())
    problems = tuple(draw(st.lists(st.none() | st.sampled_from(CopyProblem), max_size=3)))
    eff = Effective(
        available,
        draw(st.integers(0, 2**40)) if available else None,
        draw(st.integers(0, 10**6)),
        draw(st.text(max_size=30)),
        problems,
    )
    lic = draw(
        st.none()
        | st.builds(
            LicenseInfo,
            st.integers(0, 2**40),
            st.integers(0, 10**6),
            st.booleans(),
            st.sampled_from(CopyReason),
            st.none() | finite,
            st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3).map(
                lambda kv: tuple(sorted(dict(kv).items()))
            ),
        )
    )
    floor = {"tmr_id": draw(st.integers(0, 2**40)), "time": draw(finite)}
    return admission.license_row(
        (draw(st.integers(6_000_000, 6_999_999)), draw(st.integers(0, 2**32 - 1))),
        eff,
        draw(st.integers(0, 10**6)),
        floor,
        lic,
    )


wire_maps = st.dictionaries(
    st.text(max_size=8),
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8) | finite,
    max_size=4,
)

usage_results = st.builds(
    UsageResult,
    finite,
    finite,
    printable,
    st.lists(wire_maps, max_size=3).map(tuple),
    st.lists(wire_maps, max_size=3).map(tuple),
    st.just({"generated_at": 1.5, "complete": True, "unavailable": []}),
)

results = (
    checkout_results()
    | finite.map(HeartbeatResult)
    | st.just(ReleaseResult(True))
    | st.builds(CryptResult, st.binary(max_size=300), printable)
    | st.builds(
        ListResult, printable, printable, st.lists(license_entries(), max_size=3).map(tuple)
    )
    | usage_results
)


@settings(max_examples=300)
@given(results)
def test_server_built_results_round_trip(result: WireResult) -> None:
    assert round_trip(result, OP_OF[type(result)]) == result


@settings(max_examples=200)
@given(license_entries())
def test_license_entries_keep_floor_and_reason(entry: LicenseEntry) -> None:
    (back,) = round_trip(ListResult("131-0000001", "tmr-a", (entry,)), "list").licenses
    assert back == entry and back.extra["floor"] == entry.extra["floor"]
    assert back.reason == entry.reason


# ---------------------------------------------------------------------------- a real leader


def test_every_answer_of_a_leader_session_round_trips() -> None:
    """checkout, its retry, heartbeat, crypt, release and an administrator's release, as the
    sans-I/O leader answers them."""
    h = Harness({KEY: LicenseInfo(7, 5, True, expires=2e9, features=(("edition", "pro"),))})
    for acc in h.acceptors.values():
        acc._crypt = lambda key, operation, data: data[::-1]  # no product key in the harness
    h.promote()
    grant = h.call("checkout", "r1", "c1", KEY[0], KEY[1], 2)
    again = h.call("checkout", "r1", "c1", KEY[0], KEY[1], 2)
    assert isinstance(grant.result, CheckoutResult) and again.result == grant.result
    handle = grant.result.handle
    answers = [
        grant,
        h.call("heartbeat", "r2", "c1", handle),
        h.call("crypt", "r3", "c1", handle, "hmac", b"data"),
        h.call("release", "r4", "c1", handle),
    ]
    kinds = [type(a.result) for a in answers]
    assert kinds == [CheckoutResult, HeartbeatResult, CryptResult, ReleaseResult], answers
    for a in answers:
        assert a.result is not None
        assert round_trip(a.result, OP_OF[type(a.result)]) == a.result
    (entry,) = h.leader.licenses_view()
    assert round_trip(ListResult("131-0000001", "sa", (entry,)), "list").licenses == (entry,)

    other = h.call("checkout", "r5", "c2", KEY[0], KEY[1], 1)
    assert isinstance(other.result, CheckoutResult)
    h.run(h.leader.admin_release("admin", "ctl", other.result.handle, h.now, by="op"))
    h.advance(0.2)
    (freed,) = [r for r in h.replies if r.token == "admin"]
    assert isinstance(freed.result, AdminReleaseResult)
    assert AdminReleaseResult.from_wire(freed.result.to_wire()) == freed.result
    assert (freed.result.released, freed.result.handle) == (True, other.result.handle)


# ---------------------------------------------------------------------------- the service


def test_the_services_list_and_status_round_trip(svc: ServerService) -> None:
    status = svc.status_result(svc.started + 5.0)
    assert isinstance(status, StatusResult)
    assert [b.name for b in status.backends] == ["b1", "b2", "b3"]
    assert "uptime" in status.extra and "licenses" in status.extra
    assert round_trip(status, "status") == status
    listed = svc.list_result()
    assert isinstance(listed, ListResult) and listed.server == "tmr-a"
    assert round_trip(listed, "list") == listed


# ---------------------------------------------------------------------------- malformed

# Values of a type no field of that annotation accepts (an int for a bool, a string for an
# array, NaN for a number, ...).
BAD_VALUES: dict[str, list[Any]] = {
    "str": [1, None, b"x", ["x"]],
    "int": ["1", 1.5, True, None, -1],
    "float": ["1", None, math.nan, math.inf, True],
    "bool": [1, "true", None],
    "bytes": ["x", 1, None],
    "int | None": ["1", 1.5, True, -1],
    "float | None": ["1", math.nan, True],
    "str | None": [1, b"x"],
    "Mapping[str, str]": [[("a", "b")], "x", {"a": 1}, {1: "a"}],
    "tuple[LicenseEntry, ...]": ["x", {}, [{"firm": 1}], [1]],
    "tuple[BackendStatus, ...]": ["x", {}, [{"name": "b1"}], [1]],
    "tuple[int, str] | None": ["x", [1], [1, 2], ["1", "a"], [1, "a", 2]],
    "tuple[Mapping[str, Any], ...]": ["x", {}, [1], [[1]]],
}


@st.composite
def server_wire(draw: st.DrawFn) -> tuple[type, dict[str, Any]]:
    result = draw(results)
    return type(result), result.to_wire()


def wire_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.name != "extra"]


@settings(max_examples=300)
@given(server_wire(), st.data())
def test_from_wire_refuses_a_missing_or_mistyped_key(
    built: tuple[type, dict[str, Any]], data: st.DataObject
) -> None:
    cls, wire = built
    fields = wire_fields(cls)
    f = data.draw(st.sampled_from(fields))
    missing = {k: v for k, v in wire.items() if k != f.name}
    with pytest.raises(ProtocolError, match="missing key"):
        cls.from_wire(missing)  # type: ignore[attr-defined]
    bad = data.draw(st.sampled_from(BAD_VALUES[str(f.type)]))
    with pytest.raises(ProtocolError):
        cls.from_wire({**wire, f.name: bad})  # type: ignore[attr-defined]


RESULT_CLASSES = sorted(set(RESULT_TYPES.values()), key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", RESULT_CLASSES)
def test_every_field_annotation_has_bad_values(cls: type) -> None:
    for f in wire_fields(cls):
        assert str(f.type) in BAD_VALUES, (cls.__name__, f.name, f.type)


def test_a_copy_reason_keeps_its_wire_string() -> None:
    """Peers of the previous version send and read these exact strings."""
    assert {r.value for r in CopyReason} == {"", "expired", "clock rollback", "below floor"}
    assert LicenseInfo(7, 1, False, "expired").reason is CopyReason.EXPIRED  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LicenseInfo(7, 1, False, "EXPIRED")  # type: ignore[arg-type]
    assert not CopyReason.NONE and CopyReason.EXPIRED


any_value = st.none() | st.booleans() | st.integers(-10, 2**40) | st.floats() | st.text(max_size=5)


@settings(max_examples=500)
@given(
    st.one_of(any_value, st.text(max_size=130)),
    st.one_of(any_value, st.integers(5_999_990, 7_000_010)),
    any_value,
    st.one_of(any_value, st.integers(0, 100_002)),
    any_value,
    any_value,
)
def test_a_checkout_result_is_refused_exactly_when_a_field_check_fails(
    handle: Any, firm: Any, product: Any, seats: Any, lease: Any, tmr_id: Any
) -> None:
    """The one-test fast path of `CheckoutResult` accepts what the field checks accept."""
    try:
        r._check_str("handle", handle, 1, r.HANDLE_MAX, printable=True)
        r._check_int("firm", firm, r.FIRM_CODE_MIN, r.FIRM_CODE_MAX)
        r._check_int("product", product, 0, r.PRODUCT_CODE_MAX)
        r._check_int("seats", seats, 1, r.SEATS_MAX)
        r._check_float("lease", lease, lo=0.0)
        r._check_int("tmr_id", tmr_id, 0, None)
        valid = True
    except ProtocolError:
        valid = False
    try:
        built = CheckoutResult(handle, firm, product, seats, lease, tmr_id)
    except ProtocolError:
        assert not valid
    else:
        assert valid and type(built.lease) is float


rids = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)


@settings(max_examples=300)
@given(results, rids)
def test_the_reply_templates_encode_the_same_bytes(result: Result, rid: str) -> None:
    """`encode_ok` (the server's templated OK replies, constant bodies cached) gives exactly
    the bytes of `encode_reply(OkReply(...))`, also the second time (from the cache)."""
    want = encode_reply(OkReply(rid, result))
    assert encode_ok(rid, result) == want
    assert encode_ok(rid, result) == want


@pytest.mark.parametrize("rid", ["", "bad rid!", "x" * 65])
def test_the_reply_templates_refuse_a_bad_rid(rid: str) -> None:
    with pytest.raises(ProtocolError):
        encode_ok(rid, RELEASED)
