"""Attack: a peer (or a bug) sends malformed or hostile probe exchanges (docs/design.md §5
Probes: `Probe.have`, `Status.state`, `Status.since`, `Status.gone`).

A backend answers a malformed probe with a typed `PeerError` and serves on; a server decodes
a malformed status to a `ProtocolError` (logged, dropped: `_drain_backend`), and a
well-formed status that is a delta from a state the server does not hold, or from the
future, changes nothing it holds and makes it ask for everything."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.replication.harness import Harness
from tmr.backend.service import BackendService
from tmr.protocol import peer_api
from tmr.protocol.errors import ProtocolError
from tmr.replication.leader import Role
from tmr.replication.messages import PeerError, Probe, Status
from tmr.replication.types import Epoch, LicenseInfo, Version

KEY = (6_000_123, 42)


def probe(svc: BackendService, have: tuple[str, int] | None) -> Status:
    reply = svc.handle_frame(peer_api.encode_request(Probe(5, have=have)))
    assert reply is not None
    status = peer_api.decode_reply(reply)
    assert isinstance(status, Status)
    return status


@pytest.mark.parametrize(
    "have", ["0f1e:3", ["0f1e"], ["0f1e", -1], ["", 1], ["x" * 65, 1], [1, 1], {"a": 1}]
)
def test_a_malformed_probe_is_a_typed_error_and_the_backend_serves_on(
    backend: BackendService, have: object
) -> None:
    bad = backend.counters["bad_requests"]
    reply = backend.handle_frame(msgpack.packb({"t": "probe", "mid": 1, "have": have}))
    assert reply is not None and isinstance(peer_api.decode_reply(reply), PeerError)
    assert backend.counters["bad_requests"] == bad + 1
    assert probe(backend, None).since is None


def test_a_probe_claiming_a_state_the_backend_never_had_gets_everything(
    backend: BackendService,
) -> None:
    whole = probe(backend, None)
    assert whole.state is not None and whole.versions.keys() == whole.seats.keys()
    base, gen = whole.state
    for have in ((base, gen + 1), ("not-its-base", gen), (base, 2**63 - 1)):
        assert probe(backend, have) == replace(whole, leader_age=probe(backend, have).leader_age)
    assert probe(backend, whole.state).since == gen  # the state it holds: a delta


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["state", "since", "gone", "versions", "licenses"]),
        st.one_of(
            st.none(),
            st.integers(-(2**63), 2**64 - 1),
            st.text(max_size=70),
            st.lists(st.one_of(st.integers(-5, 2**33), st.text(max_size=3)), max_size=3),
            st.lists(st.lists(st.integers(-1, 2**33), max_size=3), max_size=3),
        ),
    )
)
def test_random_status_state_only_raises_protocol_error(extra: dict[str, object]) -> None:
    body = {
        "t": "status",
        "mid": 9,
        "name": "backend-2",
        "promised": [3, "tmr-a"],
        "caught_up": True,
        "versions": [],
        "seats": [],
        "licenses": [],
        **extra,
    }
    try:
        peer_api.decode_reply(msgpack.packb(body))
    except ProtocolError:
        pass


@pytest.fixture
def active() -> Harness:
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote()
    assert h.leader.role == Role.ACTIVE
    return h


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    base=st.sampled_from(["", "held", "other"]),
    gen=st.integers(0, 2**63 - 1),
    since=st.integers(0, 2**63 - 1),
    seq=st.integers(0, 50),
)
def test_a_hostile_delta_never_crashes_the_server_or_changes_what_it_holds_wrongly(
    active: Harness, base: str, gen: int, since: int, seq: int
) -> None:
    h = active
    b = h.leader.backends[0]
    assert b.state is not None
    held = b.state
    versions = dict(b.versions)
    state = (held[0] if base == "held" else base or "x", gen)
    h.leader._probe(b, h.now, h.leader.tick(h.now))
    mid = max(b.outstanding)
    e = h.leader.epoch or Epoch(1, "sa")
    msg = Status(
        mid, b.name, e, True, {KEY: Version(e, seq)}, {KEY: 1}, {}, state=state, since=since
    )
    h.leader.on_reply(b.name, msg, h.now)
    if base == "held" and since <= held[1] < gen:
        assert b.state == state and b.versions[KEY] == Version(e, seq)  # a delta it can apply
    elif base == "held" and since <= held[1]:
        # older than what it holds, or a delta to the state it holds (nothing new)
        assert b.state == held and b.versions == versions
    else:
        assert b.state is None and b.versions == versions  # it asks for everything next
    h.advance(0.5)  # and gets it: back to the backend's real state
    assert b.state is not None and b.state[0] == h.acceptors[b.name].status_token[0]
    assert b.versions == {KEY: h.acceptors[b.name].state.products[KEY].version}
