"""The history and handle-table file formats: round trip, tolerance, clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from wl_helpers import T0, WALL0, Hist

from tmr.workload.history import (
    HANDLES_FORMAT,
    HandlesSnapshot,
    HistoryError,
    ServerHandle,
    read_handles,
    read_history,
    write_json,
)


def _sample() -> Hist:
    h = Hist()
    h.checkout("c1", "h1", 2, 0.0, 0.1)
    h.checkout("c2", None, 1, 0.0, 0.2, "NO_LICENSE_AVAILABLE")
    h.heartbeat("c1", "h1", 1.0, 1.1)
    h.release("c1", "h1", 2.0, 2.1, lease_end=11.0)
    return h


def test_round_trip(tmp_path: Path) -> None:
    h = _sample()
    path = h.write(tmp_path / "h.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == 6
    first = json.loads(lines[0])
    assert first["type"] == "run" and first["format"] == "tmr-workload-history"
    hist = read_history(path)
    assert hist.header == h.header()
    assert hist.ops == h.ops
    assert hist.end == h.end()
    assert hist.warnings == []
    assert hist.wall(T0 + 1.5) == WALL0 + 1.5
    assert hist.mono(WALL0 + 2) == T0 + 2
    ok = hist.ops[0]
    assert (ok.ok, ok.handle, ok.seats, ok.rid, ok.lease_end_mono) == (
        True,
        "h1",
        2,
        "c1.1",
        T0 + 10.0,
    )
    assert hist.ops[1].outcome == "NO_LICENSE_AVAILABLE" and hist.ops[1].handle is None


def test_partial_last_line_and_missing_end_are_warnings(tmp_path: Path) -> None:
    path = _sample().write(tmp_path / "h.jsonl")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:20])  # killed while writing 'end'
    hist = read_history(path)
    assert hist.end is None and len(hist.ops) == 4
    assert any("partial last line" in w for w in hist.warnings)
    assert any("no 'end' record" in w for w in hist.warnings)
    assert hist.end_mono == T0 + 2.1  # the last op's end


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: ls[1:], "first record must be the 'run' header"),
        (lambda ls: [ls[0].replace('"version":1', '"version":9'), *ls[1:]], "version"),
        (lambda ls: [*ls[:2], "{nope\n", *ls[2:]], "h.jsonl:3: not JSON"),
        (lambda ls: [*ls[:2], "[1]\n", *ls[2:]], "must be a JSON object"),
        (lambda ls: [ls[0], ls[1].replace('"seats":2', '"seats":"2"'), *ls[2:]], "'seats'"),
        (lambda ls: [ls[0], ls[1].replace('"op":"checkout"', '"op":"x"'), *ls[2:]], "unknown op"),
        (lambda ls: [ls[0], ls[1].replace('"handle":"h1"', '"handle":null'), *ls[2:]], "handle"),
        (lambda ls: [*ls, ls[-1]], "second 'end'"),
        (lambda ls: [*ls, ls[1]], "op after the 'end'"),
        (lambda ls: [], "empty history"),
    ],
)
def test_malformed_histories(tmp_path: Path, edit: object, message: str) -> None:
    path = _sample().write(tmp_path / "h.jsonl")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))  # type: ignore[operator]
    with pytest.raises(HistoryError, match=message):
        read_history(path)


def test_missing_history_file(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="cannot read"):
        read_history(tmp_path / "nope.jsonl")


def test_handles_formats(tmp_path: Path) -> None:
    snap = HandlesSnapshot(
        [ServerHandle("h1", "c1", 2, 6000123, 42)], 100.0, 100.5, "tmr-b", "active", "x"
    )
    ours = tmp_path / "ours.json"
    write_json(ours, snap.to_json())
    assert json.loads(ours.read_text())["format"] == HANDLES_FORMAT
    back = read_handles(ours)
    assert (back.handles, back.captured_wall_lo, back.captured_wall_hi) == (
        snap.handles,
        100.0,
        100.5,
    )
    assert (back.server, back.role) == ("tmr-b", "active")
    assert read_handles(ours, at=7.0).captured_wall_hi == 7.0

    # Raw `tmr ctl handles` output, as the server prints it: the file's mtime is the time.
    raw = tmp_path / "raw.json"
    raw.write_text(
        json.dumps(
            {
                "ok": True,
                "handles": [
                    {
                        "handle": "h1",
                        "firm": 6000123,
                        "product": 42,
                        "seats": 1,
                        "client_id": "c1",
                        "granted_at": 1.0,
                        "lease_left": 3.0,
                        "committed": True,
                    }
                ],
            }
        )
    )
    os.utime(raw, (5000.0, 5000.0))
    got = read_handles(raw)
    assert got.handles == [ServerHandle("h1", "c1", 1, 6000123, 42)]
    assert got.captured_wall_lo == got.captured_wall_hi == 5000.0

    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([{"handle": "h2", "client_id": "c2", "seats": 3}]))
    assert read_handles(bare).handles == [ServerHandle("h2", "c2", 3)]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"ok": False, "error": "boom"}, "answered an error"),
        ({"handles": [{"handle": "h"}]}, "client_id"),
        ({"handles": "x"}, "must be a list"),
        ("text", "object or list"),
    ],
)
def test_bad_handles_files(tmp_path: Path, doc: object, message: str) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(HistoryError, match=message):
        read_handles(path)
