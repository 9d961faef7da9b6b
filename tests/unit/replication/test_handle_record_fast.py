"""`types.handle_record`, the bulk paths' way to build a `HandleRecord` (a takeover's table,
a backend's start): the very record the constructor builds, still frozen, and the decoder
and the store use it."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmr.protocol import peer_api
from tmr.replication import types
from tmr.replication.types import AccessMode, HandleRecord, handle_record

_text = st.text(max_size=12)
_u32 = st.integers(0, 2**32 - 1)
_args = st.tuples(
    _text,
    _u32,
    _u32,
    st.integers(1, 2**32 - 1),
    _text,
    _text,
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
    _text,
    _text,
    _u32,
    st.sampled_from(list(AccessMode)),
)


@given(_args)
def test_the_same_record_as_the_constructor(args: tuple[object, ...]) -> None:
    fast = handle_record(*args)  # type: ignore[arg-type]
    slow = HandleRecord(*args)  # type: ignore[arg-type]
    assert type(fast) is HandleRecord
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert dataclasses.astuple(fast) == args
    assert dataclasses.replace(fast, seats=3) == dataclasses.replace(slow, seats=3)


def test_still_frozen() -> None:
    rec = handle_record("h", 1, 2, 1, "c", "r", 1.5, "", "", "", 0, AccessMode.USER_LIMIT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.seats = 5  # type: ignore[misc]


def test_every_field_is_set() -> None:
    """The field list `handle_record` sets is the dataclass's (checked at import too)."""
    assert tuple(f.name for f in dataclasses.fields(HandleRecord)) == types._FIELDS


def test_the_peer_decoder_builds_records_this_way(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[HandleRecord] = []

    def counting(*args: object) -> HandleRecord:
        built.append(handle_record(*args))  # type: ignore[arg-type]
        return built[-1]

    monkeypatch.setattr(peer_api, "handle_record", counting)
    rec = HandleRecord("h1", 6000123, 42, 1, "c", "r", 1.5, "K" * 40, "u", "h", 7)
    assert peer_api._fast_record(peer_api._record(rec)) == rec
    assert built == [rec]
