"""Structured logs: one JSON object per line, whatever the field values."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
import zmq.auth.thread
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


# ------------------------------------------------ the standard library's records, pyzmq's


@pytest.fixture
def debug_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    out = io.StringIO()
    logs.configure("svc-3", "debug", stream=out)
    yield out
    logs.configure("tmr", "info")


def test_a_stdlib_record_is_one_json_line_with_its_extra_fields(
    debug_stream: io.StringIO,
) -> None:
    logging.getLogger("tmr.client").warning(
        "server %s did not answer\nretrying", "tmr-a", extra={"attempt": 2}
    )
    line = debug_stream.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    (rec,) = records(debug_stream)
    assert list(rec)[:4] == ["ts", "level", "service", "event"]
    assert TS.fullmatch(rec.pop("ts"))
    assert rec == {
        "level": "warning",
        "service": "svc-3",
        "event": "log",
        "logger": "tmr.client",
        "msg": "server tmr-a did not answer\nretrying",
        "attempt": 2,
    }


def test_pyzmq_records_are_json_lines(debug_stream: io.StringIO) -> None:
    """pyzmq's own authenticator logs through logging ("zmq.auth"): every record one line."""
    ctx = zmq.Context()
    auth = zmq.auth.thread.ThreadAuthenticator(ctx)
    auth.start()
    try:
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
    finally:
        auth.stop()
        ctx.term()
    recs = records(debug_stream)
    assert recs, "pyzmq logged nothing"
    zmq_recs = [r for r in recs if r["logger"].startswith("zmq")]
    assert zmq_recs and all(r["event"] == "log" and r["service"] == "svc-3" for r in zmq_recs)
    assert any(r["msg"].startswith("Configure curve: *") for r in zmq_recs), zmq_recs
    assert len(debug_stream.getvalue().splitlines()) == len(recs)


def test_an_exception_is_one_line(debug_stream: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    (exc,) = records(debug_stream)
    assert exc["level"] == "error" and exc["msg"] == "failed"
    assert exc["exc"].startswith("Traceback") and exc["exc"].endswith("RuntimeError: boom")


def test_a_process_writes_its_warnings_and_stdlib_records_as_json_lines() -> None:
    """In a process of its own (pytest captures warnings itself): Python's warnings and a
    library's records come out on stderr as JSON lines, stdout untouched."""
    code = (
        "import logging, warnings; from tmr import logs; logs.configure('svc-7', 'info'); "
        "warnings.warn('old API', DeprecationWarning, stacklevel=1); "
        "logging.getLogger('zmq.auth').info('DENIED (CURVE) %s', 'key'); print('out')"
    )
    env = {k: v for k, v in os.environ.items() if k != logs.FORMAT_ENV}
    env["PYTHONPATH"] = str(Path(logs.__file__).parents[1])
    env["PYTHONWARNINGS"] = "default"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert proc.stdout == "out\n"
    warn, zmq_rec = (json.loads(line) for line in proc.stderr.splitlines())
    assert warn["logger"] == "py.warnings" and warn["level"] == "warning"
    assert "DeprecationWarning: old API" in warn["msg"]
    assert zmq_rec["logger"] == "zmq.auth" and zmq_rec["msg"] == "DENIED (CURVE) key"
    assert zmq_rec["service"] == "svc-7" and zmq_rec["event"] == "log"


def test_the_level_filters_stdlib_records_too(stream: io.StringIO) -> None:
    logging.getLogger("zmq.auth").debug("DENIED (not allowed) address=%s", "127.0.0.2")
    logging.getLogger("zmq.auth").error("Invalid CURVE credentials: %r", b"x")
    (rec,) = records(stream)
    assert rec["logger"] == "zmq.auth" and rec["msg"] == "Invalid CURVE credentials: b'x'"


def test_configure_twice_leaves_one_handler(debug_stream: io.StringIO) -> None:
    logs.configure("svc-4", "info", stream=debug_stream)
    logging.getLogger("a").info("once")
    assert [r["service"] for r in records(debug_stream)] == ["svc-4"]


def test_text_format_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.FORMAT_ENV, "text")
    out = io.StringIO()
    try:
        logs.configure("svc-5", "info", stream=out)
        logs.log("backend_down", backend="backend-2", reason="no answer within 1.0s", n=3)
        logging.getLogger("zmq.auth").warning("two\nlines")
    finally:
        monkeypatch.delenv(logs.FORMAT_ENV)
        logs.configure("tmr", "info")
    first, second = out.getvalue().splitlines()
    ts, rest = first.split(" ", 1)
    assert TS.fullmatch(ts)
    assert rest == 'info svc-5 backend_down backend=backend-2 reason="no answer within 1.0s" n=3'
    assert second.split(" ", 1)[1] == 'warning svc-5 log logger=zmq.auth msg="two\\nlines"'


def test_a_bad_format_in_the_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="TMR_LOG_FORMAT: log format must be one of json, text"):
        logs.configure("svc-6", "info")
    assert logs.chosen_format(logs.LogFormat.TEXT, {}) is logs.LogFormat.TEXT
    assert logs.chosen_format(logs.LogFormat.TEXT, {"TMR_LOG_FORMAT": "JSON"}) is (
        logs.LogFormat.JSON
    )
