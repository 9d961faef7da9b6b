"""Structured logs: one JSON object per line on stderr.

Every service calls `configure(service, level)` once at start, then `log(event, **fields)`:

    {"ts": "2025-01-01T12:00:00.123Z", "level": "info", "service": "backend-1",
     "event": "license_loaded", "firm": 6000123, ...}

``ts`` is UTC wall time, ``level`` one of debug/info/warning/error; records below the
configured level are dropped. Field values that JSON cannot encode are written as strings.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
_RANK = {name: i for i, name in enumerate(LEVELS)}
_RESERVED = ("ts", "level", "service", "event")
# One encoder for every record: `json.dumps` with options builds a new one per call.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"), ensure_ascii=False)
# The same string encoding as `_ENCODER` (ensure_ascii=False), for the hot path below.
_encode_str = json.encoder.encode_basestring
_KEYS: dict[str, str] = {}  # field name -> its encoded '"name":'


class _Logger:
    def __init__(self) -> None:
        self.service = "tmr"
        self.threshold = _RANK["info"]
        self.stream: TextIO | None = None  # None: sys.stderr at the time of the write
        self.lock = threading.Lock()
        self.buffer: list[str] | None = None  # buffered mode: written by `flush()`
        self.ts_second = -1
        self.ts_prefix = ""
        self.heads: dict[str, str] = {}  # level -> the encoded "level", "service", "event" keys


_logger = _Logger()


def configure(
    service: str, level: str = "info", stream: TextIO | None = None, *, buffered: bool = False
) -> None:
    """Set the service name written in every record and the lowest level written.

    `buffered`: records are collected and written by `flush()` (a service loop calls it once
    per turn, so a burst of events costs one write, not one per record)."""
    if level not in _RANK:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    flush()
    _logger.service = service
    _logger.heads = {}
    _logger.threshold = _RANK[level]
    _logger.stream = stream
    _logger.buffer = [] if buffered else None


def enabled(level: str) -> bool:
    return _RANK.get(level, _RANK["error"]) >= _logger.threshold


def _timestamp() -> str:
    now = time.time()
    second = int(now)
    if second != _logger.ts_second:
        stamp = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _logger.ts_second, _logger.ts_prefix = second, stamp
    return f"{_logger.ts_prefix}{int((now - second) * 1000):03d}Z"


def format_record(event: str, level: str, fields: dict[str, Any]) -> str:
    if fields.keys().isdisjoint(_RESERVED):  # the usual case: splice the encoded parts
        head = _logger.heads.get(level)
        if head is None:
            head = _ENCODER.encode({"level": level, "service": _logger.service})[1:-1]
            _logger.heads[level] = head = f'{head},"event":'
        return f'{{"ts":"{_timestamp()}",{head}{_encode_str(event)}{_fields(fields)}}}'
    record: dict[str, Any] = {
        "ts": _timestamp(),
        "level": level,
        "service": _logger.service,
        "event": event,
    }
    for key, value in fields.items():
        record[f"field_{key}" if key in _RESERVED else key] = value
    return _ENCODER.encode(record)


def _fields(fields: dict[str, Any]) -> str:
    """``fields`` encoded as the members of a JSON object, with a leading comma ("" if none).

    Records carry mostly strings and integers: those are encoded here directly, anything
    else by the JSON encoder (the same text; it costs twice as much)."""
    parts = []
    for key, value in fields.items():
        name = _KEYS.get(key)
        if name is None:
            name = _KEYS[key] = f"{_encode_str(key)}:"
        kind = type(value)
        if kind is str:
            parts.append(name + _encode_str(value))
        elif kind is int:
            parts.append(name + str(value))
        else:
            return f",{_ENCODER.encode(fields)[1:-1]}"
    return "," + ",".join(parts) if parts else ""


def log(event: str, *, level: str = "info", **fields: Any) -> None:
    """Write one record (if ``level`` passes the filter). Never raises on a broken stream."""
    if not enabled(level):
        return
    line = format_record(event, level if level in _RANK else "error", fields) + "\n"
    with _logger.lock:
        if _logger.buffer is not None:
            _logger.buffer.append(line)
            if len(_logger.buffer) < 1000:
                return
            line, _logger.buffer[:] = "".join(_logger.buffer), []
        _write(line)


def flush() -> None:
    """Write the buffered records (buffered mode); harmless otherwise."""
    with _logger.lock:
        if _logger.buffer:
            text, _logger.buffer[:] = "".join(_logger.buffer), []
            _write(text)


def _write(text: str) -> None:
    stream = _logger.stream or sys.stderr
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass  # stderr closed or gone: logging must never take the service down
