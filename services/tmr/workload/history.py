"""The files of the workload tools: the operation history and the handle-table snapshot.

History (``history.jsonl``): JSON lines, one record per line, written and flushed as they
happen (a reader may see a partial last line while the generator runs; `read_history`
ignores it with a warning). Every record has a ``type``:

``run`` (first line)
    ``format`` (``"tmr-workload-history"``), ``version``, ``seed``, ``clients``,
    ``duration``, ``firm``, ``product``, ``seats_max``, ``hold_max``, ``endpoints``,
    ``host``, ``pid``, ``at_end`` (``release`` or ``abandon``), ``start_mono`` and
    ``start_wall`` (the same instant on the generator's monotonic clock and as a UNIX time:
    the checker maps every monotonic time to wall time with this one offset), and
    ``license`` (the listed entry of the product at start: ``quantity``, ``in_use``,
    ``tmr_id``, ``lease``; or null).

``op`` (one per operation)
    ``client`` (client id), ``n`` (per-client sequence number), ``op`` (``checkout``,
    ``heartbeat``, ``release``, ``lost``, ``abandon``), ``start_mono``, ``end_mono``,
    ``start_wall``, ``end_wall``, ``outcome`` (``"ok"``, a typed error code such as
    ``"NO_LICENSE_AVAILABLE"``, or ``"unknown"`` when the result is not known: timeout,
    malformed reply), ``message`` (error text or null), ``handle`` and ``rid`` (request id of
    the checkout, known when it succeeded), ``seats``, ``lease`` (seconds), ``tmr_id``, and
    ``lease_end_mono``: the end of the handle's lease *as the client knows it* at the end of
    the operation (for a failed operation: before it), i.e. the first send time of the last
    successful checkout or heartbeat plus the lease. The server counts a lease from when it
    handles the request, so the seats are held at least until then unless released.
    ``lost`` is the SDK telling (from its heartbeat) that the server no longer knows the
    handle; ``abandon`` is a handle left held, without heartbeats, at the end of the run
    (``--at-end abandon``): the lease frees it. For ``lost`` and ``abandon``, start = end.

``end`` (last line)
    ``end_mono``, ``end_wall``, ``ops`` (number of op records), ``stuck`` (workers that did
    not finish in time).

Handle snapshot (``handles.json``, written by ``tmr workload handles``): the handle table of
the active TMR server right after the run, ``{"format": "tmr-workload-handles", "version",
"server", "role", "captured_wall_lo", "captured_wall_hi", "handles": [...]}`` where each
handle is what ``tmr ctl handles`` prints (``handle``, ``client_id``, ``seats``, ``firm``,
``product``, ...). The raw output of ``tmr ctl --socket PATH handles`` (``{"ok": true,
"handles": [...]}``) or a bare list is accepted too; its capture time is then the file's
modification time unless given.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from tmr.ctl import CtlError, ctl_request
from tmr.errors import UsageError

HISTORY_FORMAT = "tmr-workload-history"
HANDLES_FORMAT = "tmr-workload-handles"
VERSION = 1

OK = "ok"
UNKNOWN = "unknown"
OPS = ("checkout", "heartbeat", "release", "lost", "abandon")

MAX_LINE = 64 * 1024
MAX_HANDLES_FILE = 64 * 1024 * 1024


class HistoryError(UsageError):
    """A history or handles file cannot be read or is malformed."""


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class RunHeader:
    seed: int
    clients: int
    duration: float
    firm: int
    product: int
    seats_max: int
    hold_max: float
    endpoints: tuple[str, ...]
    start_mono: float
    start_wall: float
    host: str = ""
    pid: int = 0
    at_end: str = "release"
    license: Mapping[str, Any] | None = None

    @property
    def wall_offset(self) -> float:
        """Add to a monotonic time of this run to get a UNIX time."""
        return self.start_wall - self.start_mono

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["endpoints"] = list(self.endpoints)
        doc["license"] = dict(self.license) if self.license is not None else None
        return {"type": "run", "format": HISTORY_FORMAT, "version": VERSION, **doc}


@dataclass(frozen=True, slots=True)
class OpRecord:
    client: str
    n: int
    op: str
    start_mono: float
    end_mono: float
    start_wall: float
    end_wall: float
    outcome: str
    message: str | None = None
    handle: str | None = None
    rid: str | None = None
    seats: int | None = None
    lease: float | None = None
    tmr_id: int | None = None
    lease_end_mono: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    def to_json(self) -> dict[str, Any]:
        return {"type": "op", **asdict(self)}


@dataclass(frozen=True, slots=True)
class EndRecord:
    end_mono: float
    end_wall: float
    ops: int
    stuck: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"type": "end", **asdict(self)}


@dataclass
class History:
    header: RunHeader
    ops: list[OpRecord]
    end: EndRecord | None = None
    warnings: list[str] = field(default_factory=list)

    def wall(self, mono: float) -> float:
        return mono + self.header.wall_offset

    def mono(self, wall: float) -> float:
        return wall - self.header.wall_offset

    @property
    def end_mono(self) -> float:
        if self.end is not None:
            return self.end.end_mono
        return max((r.end_mono for r in self.ops), default=self.header.start_mono)


# ---------------------------------------------------------------------------- writing


class HistoryWriter:
    """Append records to a history file, one flushed JSON line each (thread-safe)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._fh: IO[str] = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise HistoryError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._lock = threading.Lock()
        self._ended = False
        self.ops = 0
        self.dropped = 0  # ops of stuck clients that finished after the 'end' record

    def _write(self, doc: dict[str, Any], *, op: bool = False) -> None:
        line = json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            if self._ended:
                self.dropped += 1
                return
            self._fh.write(line)
            self._fh.flush()
            self.ops += op

    def header(self, header: RunHeader) -> None:
        self._write(header.to_json())

    def op(self, record: OpRecord) -> None:
        self._write(record.to_json(), op=True)

    def end(self, record: EndRecord) -> None:
        """Write the last record; later ops are dropped (counted in `dropped`)."""
        self._write(record.to_json())
        with self._lock:
            self._ended = True

    def close(self) -> None:
        with self._lock:
            self._ended = True
            self._fh.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- reading


def _field(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise HistoryError(f"{where}: field {key!r} is missing or not {_kind_name(kind)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise HistoryError(f"{where}: field {key!r} is not finite")
    return value


def _opt(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if doc.get(key) is None:
        return None
    return _field(doc, key, kind, where)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


NUM = (int, float)


def _header(doc: Mapping[str, Any], where: str) -> RunHeader:
    if doc.get("format") != HISTORY_FORMAT:
        raise HistoryError(f"{where}: not a {HISTORY_FORMAT} file")
    version = doc.get("version")
    if version != VERSION:
        raise HistoryError(f"{where}: unsupported history version {version!r}")
    endpoints = doc.get("endpoints") or []
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise HistoryError(f"{where}: field 'endpoints' must be a list of strings")
    lic = doc.get("license")
    if lic is not None and not isinstance(lic, dict):
        raise HistoryError(f"{where}: field 'license' must be an object or null")
    return RunHeader(
        seed=_field(doc, "seed", int, where),
        clients=_field(doc, "clients", int, where),
        duration=float(_field(doc, "duration", NUM, where)),
        firm=_field(doc, "firm", int, where),
        product=_field(doc, "product", int, where),
        seats_max=_field(doc, "seats_max", int, where),
        hold_max=float(_field(doc, "hold_max", NUM, where)),
        endpoints=tuple(endpoints),
        start_mono=float(_field(doc, "start_mono", NUM, where)),
        start_wall=float(_field(doc, "start_wall", NUM, where)),
        host=str(doc.get("host") or ""),
        pid=int(doc.get("pid") or 0),
        at_end=str(doc.get("at_end") or "release"),
        license=lic,
    )


def _op(doc: Mapping[str, Any], where: str) -> OpRecord:
    op = _field(doc, "op", str, where)
    if op not in OPS:
        raise HistoryError(f"{where}: unknown op {op!r}")
    lease = _opt(doc, "lease", NUM, where)
    lease_end = _opt(doc, "lease_end_mono", NUM, where)
    rec = OpRecord(
        client=_field(doc, "client", str, where),
        n=_field(doc, "n", int, where),
        op=op,
        start_mono=float(_field(doc, "start_mono", NUM, where)),
        end_mono=float(_field(doc, "end_mono", NUM, where)),
        start_wall=float(_field(doc, "start_wall", NUM, where)),
        end_wall=float(_field(doc, "end_wall", NUM, where)),
        outcome=_field(doc, "outcome", str, where),
        message=_opt(doc, "message", str, where),
        handle=_opt(doc, "handle", str, where),
        rid=_opt(doc, "rid", str, where),
        seats=_opt(doc, "seats", int, where),
        lease=None if lease is None else float(lease),
        tmr_id=_opt(doc, "tmr_id", int, where),
        lease_end_mono=None if lease_end is None else float(lease_end),
    )
    if rec.end_mono < rec.start_mono:
        raise HistoryError(f"{where}: op ends before it starts")
    if rec.op == "checkout" and rec.ok and (rec.handle is None or not rec.seats):
        raise HistoryError(f"{where}: a successful checkout needs 'handle' and 'seats'")
    if rec.op != "checkout" and rec.handle is None:
        raise HistoryError(f"{where}: a {rec.op} op needs 'handle'")
    return rec


def _end(doc: Mapping[str, Any], where: str) -> EndRecord:
    return EndRecord(
        end_mono=float(_field(doc, "end_mono", NUM, where)),
        end_wall=float(_field(doc, "end_wall", NUM, where)),
        ops=_field(doc, "ops", int, where),
        stuck=int(doc.get("stuck") or 0),
    )


def _lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, complete) of each line."""
    try:
        fh = path.open("r", encoding="utf-8", errors="replace")
    except OSError as exc:
        raise HistoryError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for number, line in enumerate(fh, 1):
            yield number, line, line.endswith("\n")


def read_history(path: str | os.PathLike[str]) -> History:
    """Parse a history file; raises `HistoryError` with the line number of a bad record."""
    p = Path(path)
    header: RunHeader | None = None
    ops: list[OpRecord] = []
    end: EndRecord | None = None
    warnings: list[str] = []
    for number, line, complete in _lines(p):
        where = f"{p}:{number}"
        if not line.strip():
            continue
        if len(line) > MAX_LINE:
            raise HistoryError(f"{where}: line longer than {MAX_LINE} bytes")
        try:
            doc = json.loads(line)
        except ValueError:
            if not complete:  # the generator was writing it (or was killed mid-line)
                warnings.append(f"{where}: ignored a partial last line")
                continue
            raise HistoryError(f"{where}: not JSON") from None
        if not isinstance(doc, dict):
            raise HistoryError(f"{where}: a record must be a JSON object")
        kind = doc.get("type")
        if header is None:
            if kind != "run":
                raise HistoryError(f"{where}: the first record must be the 'run' header")
            header = _header(doc, where)
        elif kind == "op":
            if end is not None:
                raise HistoryError(f"{where}: op after the 'end' record")
            ops.append(_op(doc, where))
        elif kind == "end":
            if end is not None:
                raise HistoryError(f"{where}: a second 'end' record")
            end = _end(doc, where)
        else:
            raise HistoryError(f"{where}: unknown record type {kind!r}")
    if header is None:
        raise HistoryError(f"{p}: empty history (no 'run' header)")
    if end is None:
        warnings.append(f"{p}: no 'end' record: the run did not finish (or is still running)")
    return History(header, ops, end, warnings)


# ---------------------------------------------------------------------------- handles


@dataclass(frozen=True, slots=True)
class ServerHandle:
    handle: str
    client_id: str
    seats: int
    firm: int | None = None
    product: int | None = None


@dataclass
class HandlesSnapshot:
    """The active server's handle table and when it was taken (a UNIX-time interval)."""

    handles: list[ServerHandle]
    captured_wall_lo: float
    captured_wall_hi: float
    server: str | None = None
    role: str | None = None
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": HANDLES_FORMAT,
            "version": VERSION,
            "server": self.server,
            "role": self.role,
            "captured_wall_lo": self.captured_wall_lo,
            "captured_wall_hi": self.captured_wall_hi,
            "handles": [asdict(h) for h in self.handles],
        }


def parse_handles(items: Any, where: str) -> list[ServerHandle]:
    if not isinstance(items, list):
        raise HistoryError(f"{where}: 'handles' must be a list")
    out = []
    for i, item in enumerate(items):
        w = f"{where}: handle #{i}"
        if not isinstance(item, dict):
            raise HistoryError(f"{w}: must be an object")
        out.append(
            ServerHandle(
                handle=_field(item, "handle", str, w),
                client_id=_field(item, "client_id", str, w),
                seats=_field(item, "seats", int, w),
                firm=_opt(item, "firm", int, w),
                product=_opt(item, "product", int, w),
            )
        )
    return out


def read_handles(path: str | os.PathLike[str], *, at: float | None = None) -> HandlesSnapshot:
    """Read a handle snapshot; `at` (UNIX time) overrides its capture time."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_HANDLES_FILE + 1)
        mtime = p.stat().st_mtime
    except OSError as exc:
        raise HistoryError(f"cannot read {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_HANDLES_FILE:
        raise HistoryError(f"{p}: too large")
    try:
        doc = json.loads(data)
    except ValueError:
        raise HistoryError(f"{p}: not JSON") from None
    where = str(p)
    server = role = None
    if isinstance(doc, list):
        items: Any = doc
        lo = hi = mtime
    elif isinstance(doc, dict):
        if doc.get("ok") is False:
            raise HistoryError(f"{p}: the server answered an error: {doc.get('error')}")
        items = doc.get("handles")
        server = doc.get("server") if isinstance(doc.get("server"), str) else None
        role = doc.get("role") if isinstance(doc.get("role"), str) else None
        if doc.get("format") == HANDLES_FORMAT:
            lo = float(_field(doc, "captured_wall_lo", NUM, where))
            hi = float(_field(doc, "captured_wall_hi", NUM, where))
        else:
            lo = hi = mtime
    else:
        raise HistoryError(f"{p}: must hold a JSON object or list")
    if at is not None:
        lo = hi = at
    return HandlesSnapshot(parse_handles(items, where), lo, hi, server, role, str(p))


def write_json(path: str | os.PathLike[str], doc: Any) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(p)
    except OSError as exc:
        raise HistoryError(f"cannot write {p}: {exc.strerror or exc}") from None


def capture_handles(sockets: list[Path], *, timeout: float = 5.0) -> HandlesSnapshot:
    """The handle table of the active server among the control sockets `sockets`.

    When more than one server says it is active (a split brain being resolved), the one in
    the highest epoch is taken. Raises `HistoryError` when none is active.
    """
    best: tuple[tuple[int, str], Path, str] | None = None
    problems = []
    for sock in sockets:
        try:
            st = ctl_request(sock, "status", timeout=timeout)
        except CtlError as exc:
            problems.append(str(exc))
            continue
        role = st.get("role")
        if role != "active":
            problems.append(f"{sock}: {role}")
            continue
        epoch = st.get("epoch")
        key = (
            (int(epoch[0]), str(epoch[1]))
            if isinstance(epoch, list) and len(epoch) == 2 and isinstance(epoch[0], int)
            else (-1, "")
        )
        if best is None or key > best[0]:
            best = (key, sock, str(st.get("server") or ""))
    if best is None:
        raise HistoryError("no active TMR server: " + "; ".join(problems))
    _, sock, server = best
    lo = time.time()
    try:
        reply = ctl_request(sock, "handles", timeout=timeout)
    except CtlError as exc:
        raise HistoryError(str(exc)) from None
    hi = time.time()
    if not reply.get("ok"):
        raise HistoryError(f"{sock}: {reply.get('error', 'handles failed')}")
    return HandlesSnapshot(
        parse_handles(reply.get("handles"), str(sock)), lo, hi, server, "active", str(sock)
    )
