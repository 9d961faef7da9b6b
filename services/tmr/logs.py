"""Structured logs: one JSON object per line on stderr.

Every service calls `configure(service, level)` once at start, then `log(event, **fields)`:

    {"ts": "2025-01-01T12:00:00.123Z", "level": "info", "service": "backend-1",
     "event": "license_loaded", "firm": 6000123, ...}

``ts`` is UTC wall time, ``level`` one of debug/info/warning/error; records below the
configured level are dropped. Field values that JSON cannot encode are written as strings.

`configure` also routes the standard library's log records (pyzmq's ``zmq.auth``, the
client's ``tmr.client``, Python's warnings) into the same stream, one line each
(`JsonFormatter`): event ``log``, with ``logger``, ``msg``, ``exc`` (a traceback, as one
string) and the record's ``extra`` fields. ``text`` instead of JSON (`LogFormat`) is chosen by
``TMR_LOG_FORMAT=text`` in the environment (e.g. a systemd drop-in) or ``tmr --log-format
text``; services default to JSON, the other CLI commands to text.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
_RANK = {name: i for i, name in enumerate(LEVELS)}
FORMAT_ENV = "TMR_LOG_FORMAT"


class LogFormat(enum.StrEnum):
    JSON = "json"  # one JSON object per line (services' default)
    TEXT = "text"  # "ts level service event key=value ..." for a person at a terminal


_STDLIB_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# The attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
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
        self.format = LogFormat.JSON


_logger = _Logger()


def parse_format(text: str) -> LogFormat:
    """``json`` or ``text``; anything else is a ValueError naming the choices."""
    try:
        return LogFormat(text.strip().lower())
    except ValueError:
        choices = ", ".join(f.value for f in LogFormat)
        raise ValueError(f"log format must be one of {choices}, not {text!r}") from None


def chosen_format(default: LogFormat, environ: Mapping[str, str] = os.environ) -> LogFormat:
    """The operator's choice, ``TMR_LOG_FORMAT`` in the environment (``tmr --log-format``
    sets it for the command and the processes it starts), else ``default``."""
    env = environ.get(FORMAT_ENV, "")
    if env.strip():
        try:
            return parse_format(env)
        except ValueError as exc:
            raise ValueError(f"{FORMAT_ENV}: {exc}") from None
    return default


def configure(
    service: str,
    level: str = "info",
    stream: TextIO | None = None,
    *,
    buffered: bool = False,
    default_format: LogFormat = LogFormat.JSON,
) -> None:
    """Set the service name written in every record and the lowest level written, and route
    the standard library's log records (at that level and above) into the same stream.

    `buffered`: records are collected and written by `flush()` (a service loop calls it once
    per turn, so a burst of events costs one write, not one per record).
    `default_format`: JSON for services; the operator's choice (`chosen_format`) wins.
    A bad ``TMR_LOG_FORMAT`` is a ValueError."""
    if level not in _RANK:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    fmt = chosen_format(default_format)
    flush()
    _logger.service = service
    _logger.heads = {}
    _logger.threshold = _RANK[level]
    _logger.stream = stream
    _logger.buffer = [] if buffered else None
    _logger.format = fmt
    _install_stdlib_handler(_STDLIB_LEVELS[level])


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
    if _logger.format is LogFormat.TEXT:
        return _text_record(event, level, fields)
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


def _text_record(event: str, level: str, fields: Mapping[str, Any]) -> str:
    """One line for a person: ``ts level service event key=value ...``; a value with a space,
    a quote or a line break is written JSON-quoted, so a record stays one line."""
    parts = [_timestamp(), level, _logger.service, event]
    for key, value in fields.items():
        text = value if isinstance(value, str) else _ENCODER.encode(value)
        if not text or any(c in text for c in ' "=\\\n\r\t\u2028\u2029'):
            text = _encode_str(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _stdlib_level(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    return "info" if levelno >= logging.INFO else "debug"


class JsonFormatter(logging.Formatter):
    """A standard library log record as one line of this module's format: event ``log``,
    ``logger``, ``msg`` (the formatted message), ``exc`` (the traceback, if any), then the
    record's ``extra`` fields. JSON or text as `configure` chose."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            fields["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            fields["exc"] = record.exc_text
        if record.stack_info:
            fields["stack"] = record.stack_info
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in fields:
                fields[key] = value
        return format_record("log", _stdlib_level(record.levelno), fields)


class _StdlibHandler(logging.Handler):
    """Writes standard library records through this module (same stream, lock, buffer)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a bad %-format in somebody's log call must not stop the service
            line = format_record(
                "log", "error", {"logger": record.name, "msg": repr(record.msg), "bad": True}
            )
        _emit(line + "\n")


def _install_stdlib_handler(level: int) -> None:
    """One handler of ours on the root logger (replacing an earlier one), at ``level``;
    Python's warnings go through logging too (logger ``py.warnings``)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    handler = _StdlibHandler(level)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


def log(event: str, *, level: str = "info", **fields: Any) -> None:
    """Write one record (if ``level`` passes the filter). Never raises on a broken stream."""
    if not enabled(level):
        return
    _emit(format_record(event, level if level in _RANK else "error", fields) + "\n")


def _emit(line: str) -> None:
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
