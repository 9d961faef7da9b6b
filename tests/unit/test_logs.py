"""Structured logs: one JSON object per line, whatever the field values."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmr import logs

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure("svc-1", "info", stream=out)
    yield out
    logs.configure("tmr", "info")


def records(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_the_fixed_keys_first(stream: io.StringIO) -> None:
    logs.log("handle_granted", handle="h1-a-1", license="6000123:42", seats=1, client_id="c")
    line = stream.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    (rec,) = records(stream)
    assert list(rec)[:4] == ["ts", "level", "service", "event"]
    assert TS.fullmatch(rec.pop("ts"))
    assert rec == {
        "level": "info",
        "service": "svc-1",
        "event": "handle_granted",
        "handle": "h1-a-1",
        "license": "6000123:42",
        "seats": 1,
        "client_id": "c",
    }


def test_records_below_the_level_are_dropped_and_reserved_names_kept(
    stream: io.StringIO,
) -> None:
    logs.log("quiet", level="debug", x=1)
    logs.log("loud", level="warning", service="shadow", ts=5)
    (rec,) = records(stream)
    assert rec["event"] == "loud" and rec["level"] == "warning"
    assert rec["service"] == "svc-1"
    assert rec["field_service"] == "shadow" and rec["field_ts"] == 5


def test_values_json_cannot_encode_are_written_as_strings(stream: io.StringIO) -> None:
    logs.log("odd", path=logs, data=b"\x00", n=3)
    (rec,) = records(stream)
    assert rec["path"] == str(logs) and rec["data"] == str(b"\x00") and rec["n"] == 3


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.sampled_from(["", '"', "\\", "\n", "\x00", "\u2028", "é", "\U0001f600"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@given(
    event=st.text(min_size=1),
    fields=st.dictionaries(
        st.text().filter(lambda k: k not in ("ts", "level", "service", "event")), _values
    ),
)
def test_every_record_decodes_to_exactly_its_fields(event: str, fields: dict[str, Any]) -> None:
    """The hot path encodes strings and integers itself: what it writes must decode to the
    same values as the JSON encoder's output, for any text and any mix of value types."""
    line = logs.format_record(event, "info", fields)
    assert "\n" not in line
    rec = json.loads(line)
    assert rec.pop("event") == event
    for key in ("ts", "level", "service"):
        rec.pop(key)
    assert rec == json.loads(json.dumps(fields))


def test_buffered_records_are_written_by_flush(stream: io.StringIO) -> None:
    out = io.StringIO()
    logs.configure("svc-2", "info", stream=out, buffered=True)
    logs.log("one", n=1)
    logs.log("two", n=2)
    assert out.getvalue() == ""
    logs.flush()
    assert [r["event"] for r in records(out)] == ["one", "two"]
