"""Wire format between TMR servers and backends (replication, status, crypto calls).

One msgpack map per frame (`tmr.protocol.codec`), key "t" naming the message type. Decoding
is strict: every field is type- and range-checked and anything else raises `ProtocolError`,
so a malformed frame never reaches the acceptor or the leader.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from sys import intern
from typing import Any, TypeVar

from tmr.protocol.codec import pack, unpack
from tmr.protocol.errors import ProtocolError
from tmr.replication.messages import (
    Accept,
    Accepted,
    AcceptEntry,
    Crypt,
    CryptResult,
    DenialQuery,
    DenialRecords,
    DenialRow,
    Denials,
    EntryResult,
    EntryStatus,
    PeerError,
    PeerReply,
    PeerRequest,
    Prepare,
    Probe,
    Promise,
    Rejected,
    Snapshot,
    SnapshotEntry,
    StateToken,
    Status,
    UsageQuery,
    UsageRecords,
    UsageRow,
)
from tmr.replication.types import (
    NO_FLOOR,
    AccessMode,
    CopyReason,
    Epoch,
    Floor,
    Grant,
    HandleRecord,
    LicenseInfo,
    Op,
    ProductKey,
    Release,
    ReleaseReason,
    Version,
    handle_record,
)

MAX_PEER_FRAME = 64 * 1024 * 1024
MAX_STR = 256
MAX_OWNER = 64  # a Z85 CURVE public key is 40 characters; "" in records of older peers
MAX_POLICY_NAME = 64  # a server id or a policy digest in a probe or a status
MAX_POLICIES = 8  # servers a backend reports policy digests of (two in a cluster)
U32 = 2**32 - 1
U63 = 2**63 - 1
T = TypeVar("T")

# ------------------------------------------------------------------ encoding


def _epoch(e: Epoch) -> list[Any]:
    return [e.counter, e.server]


def _version(v: Version) -> list[Any]:
    return [_epoch(v.epoch), v.seq]


def _key(k: ProductKey) -> list[int]:
    return [k[0], k[1]]


def _record(r: HandleRecord) -> list[Any]:
    """12 fields; 11 for a user_limit handle (the mode every handle had before modes), and 8
    when the client also gave no user, host or pid, as peers from before backend schemas 7 and 5
    write them (so they can still decode them, e.g. a promise during a rolling upgrade).
    A station_share or exclusive record needs peers that know modes."""
    out = [r.handle, r.firm, r.product, r.seats, r.client_id, r.request_id, r.granted_at, r.owner]
    if r.mode is not AccessMode.USER_LIMIT:
        out += [r.user, r.host, r.pid, r.mode.value]
    elif r.user or r.host or r.pid:
        out += [r.user, r.host, r.pid]
    return out


def _op(op: Op) -> list[Any]:
    if isinstance(op, Grant):
        return ["g", _record(op.record)]
    if isinstance(op, Floor):
        return ["f", op.tmr_id, op.time]
    return ["r", op.handle, op.reason.value, op.at]


# The leader sends the same log entry (one tuple of ops) to all three backends: encode its ops
# once. Keyed by the tuple's id, with the tuple itself kept alive and compared by identity, so
# an id can never be reused while its entry is cached; a few hundred entries suffice. Bounded
# in ops as well as entries: a burst of big entries (thousands of grants each) must not keep
# every record's encoding alive after all three backends were sent it (about 250 bytes per
# held handle otherwise).
class _OpsCache:
    def __init__(self, max_entries: int = 512, max_ops: int = 4096) -> None:
        self.max_entries = max_entries
        self.max_ops = max_ops
        self.entries: dict[int, tuple[tuple[Op, ...], list[list[Any]]]] = {}
        self.ops = 0

    def clear(self) -> None:
        self.entries.clear()
        self.ops = 0

    def encode(self, ops: tuple[Op, ...]) -> list[list[Any]]:
        hit = self.entries.get(id(ops))
        if hit is not None and hit[0] is ops:
            return hit[1]
        out = [_op(o) for o in ops]
        if len(self.entries) >= self.max_entries or self.ops + len(out) > self.max_ops:
            self.clear()
        self.entries[id(ops)] = (ops, out)
        self.ops += len(out)
        return out


_OPS_CACHE = _OpsCache()
_ops = _OPS_CACHE.encode


def _license(lic: LicenseInfo) -> list[Any]:
    return [
        lic.tmr_id,
        lic.quantity,
        lic.valid,
        lic.reason.value,
        lic.expires,
        [list(kv) for kv in lic.features],
        lic.set_id,
        lic.set_index,
        lic.fingerprint,
        lic.backend_key,
    ]


def _licenses(m: dict[ProductKey, LicenseInfo]) -> list[Any]:
    return [[_key(k), _license(v)] for k, v in m.items()]


def _floors(m: dict[ProductKey, Floor]) -> list[Any]:
    """Only raised floors are sent (an older peer sends none, a new one none while 0)."""
    return [[_key(k), f.tmr_id, f.time] for k, f in m.items() if f != NO_FLOOR]


def _snapshot_entry(e: SnapshotEntry) -> list[Any]:
    out = [_key(e.key), e.seq, [_record(r) for r in e.handles]]
    if e.floor != NO_FLOOR or e.base is not None:  # absent while 0: what older backends read
        out.append([e.floor.tmr_id, e.floor.time])
    if e.base is not None:  # only to backends whose promise said `refs`
        out.append(_version(e.base))
    return out


def encode_request(msg: PeerRequest) -> bytes:
    body: dict[str, Any]
    match msg:
        case Probe():
            body = {"t": "probe"}
            if msg.epoch is not None:  # absent, not null: what older senders send
                body["epoch"] = _epoch(msg.epoch)
            if msg.server:  # absent while empty: what older senders send
                body["server"] = msg.server
                body["policy"] = msg.policy
            if msg.have is not None:  # absent: send everything (older backends ignore it)
                body["have"] = [msg.have[0], msg.have[1]]
        case Prepare():
            body = {"t": "prepare", "epoch": _epoch(msg.epoch)}
            if not msg.tables:  # absent while true: what older servers send
                body["tables"] = False
        case Accept():
            body = {
                "t": "accept",
                "epoch": _epoch(msg.epoch),
                "entries": [[_key(e.key), e.seq, _ops(e.ops)] for e in msg.entries],
            }
            if msg.commits:  # absent while none: what older senders send
                body["commits"] = [[_key(k), seq] for k, seq in msg.commits]
            if msg.notice:  # absent while none: what older senders send
                body["notice"] = [[_key(k), seq] for k, seq in msg.notice]
        case Snapshot():
            body = {
                "t": "snapshot",
                "epoch": _epoch(msg.epoch),
                "entries": [_snapshot_entry(e) for e in msg.entries],
            }
            if msg.committed:  # absent, not false: what older senders send
                body["committed"] = True
        case Crypt():
            body = {
                "t": "crypt",
                "epoch": _epoch(msg.epoch),
                "key": _key(msg.key),
                "handle": msg.handle,
                "cid": msg.client_id,
                "operation": msg.operation,
                "data": msg.data,
                "owner": msg.owner,
            }
    body["mid"] = msg.mid
    return pack(body)


def encode_reply(msg: PeerReply) -> bytes:
    body: dict[str, Any]
    match msg:
        case Status():
            body = {
                "t": "status",
                "name": msg.name,
                "promised": _epoch(msg.promised),
                "caught_up": msg.caught_up,
                "versions": [[_key(k), _version(v)] for k, v in msg.versions.items()],
                "seats": [[_key(k), v] for k, v in msg.seats.items()],
                "licenses": _licenses(msg.licenses),
            }
            if msg.leader_age is not None:
                body["leader_age"] = msg.leader_age
            if msg.clock is not None:
                body["clock"] = msg.clock
            if msg.floors:
                body["floors"] = _floors(msg.floors)
            if msg.policies:
                body["policies"] = [[s, d] for s, d in sorted(msg.policies.items())]
            if msg.denials:  # absent while false: what older backends send
                body["denials"] = True
            if msg.state is not None:  # absent: an older backend (older servers ignore it)
                body["state"] = [msg.state[0], msg.state[1]]
            if msg.since is not None:  # only to a server that said what it has
                body["since"] = msg.since
                if msg.gone:
                    body["gone"] = [_key(k) for k in msg.gone]
        case Promise():
            body = {
                "t": "promise",
                "name": msg.name,
                "epoch": _epoch(msg.epoch),
                "caught_up": msg.caught_up,
                "logs": [
                    [_key(k), _version(v), [_record(r) for r in hs]]
                    for k, (v, hs) in msg.logs.items()
                ],
                "licenses": _licenses(msg.licenses),
                "floors": _floors(msg.floors),
            }
            if msg.commits:  # absent while none: what older backends send
                body["commits"] = [[_key(k), _version(v)] for k, v in msg.commits.items()]
            if msg.marked:  # absent while none: what older backends send
                body["marked"] = [
                    [_key(k), [[h, _version(v)] for h, v in marks]]
                    for k, marks in msg.marked.items()
                ]
            if msg.refs:  # absent while false: what older backends send
                body["refs"] = True
            if not msg.tables:  # absent while true: what older backends send
                body["tables"] = False
        case Rejected():
            body = {"t": "rejected", "promised": _epoch(msg.promised)}
        case Accepted():
            body = {
                "t": "accepted",
                "epoch": _epoch(msg.epoch),
                "results": [
                    [_key(k), r.status.value, r.seq, r.reason] for k, r in msg.results.items()
                ],
                "licenses": _licenses(msg.licenses),
            }
            if msg.durable:  # absent while false: what older backends send
                body["durable"] = True
        case CryptResult():
            body = {
                "t": "crypt_result",
                "ok": msg.ok,
                "data": msg.data,
                "error": msg.error,
                "message": msg.message,
            }
        case PeerError():
            body = {"t": "error", "message": msg.message}
    body["mid"] = msg.mid
    return pack(body)


# ------------------------------------------------------------------ decoding


def _fail(what: str) -> ProtocolError:
    return ProtocolError(what)


def _int(v: Any, what: str, lo: int = 0, hi: int = U63) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(f"{what}: expected an integer in [{lo}, {hi}]")
    return v


def _float(v: Any, what: str) -> float:
    if type(v) not in (int, float) or not math.isfinite(v):
        raise _fail(f"{what}: expected a finite number")
    return float(v)


def _str(v: Any, what: str, maxlen: int = MAX_STR, empty: bool = False) -> str:
    if type(v) is not str or len(v) > maxlen or (not v and not empty):
        raise _fail(f"{what}: expected a string of at most {maxlen} characters")
    return v


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise _fail(f"{what}: expected a boolean")
    return v


def _bytes(v: Any, what: str, maxlen: int) -> bytes:
    if type(v) is not bytes or len(v) > maxlen:
        raise _fail(f"{what}: expected binary of at most {maxlen} bytes")
    return v


def _list(v: Any, what: str, n: int | None = None) -> list[Any]:
    if type(v) is not list or (n is not None and len(v) != n):
        raise _fail(f"{what}: expected a list" + (f" of {n} items" if n is not None else ""))
    return v


def _d_epoch(v: Any, what: str) -> Epoch:
    c, s = _list(v, what, 2)
    return Epoch(_int(c, what), _str(s, what, empty=True))


def _d_version(v: Any, what: str) -> Version:
    e, seq = _list(v, what, 2)
    return Version(_d_epoch(e, what), _int(seq, what))


def _d_key(v: Any, what: str) -> ProductKey:
    f, p = _list(v, what, 2)
    return (_int(f, what, 0, U32), _int(p, what, 0, U32))


def _d_record(v: Any, what: str) -> HandleRecord:
    """A handle record: 12 fields; the 11 of a peer from before access modes (user_limit);
    the 8 of a peer from before records carried the client's user, host and pid (they decode
    as "", "", 0); or the 7 of a peer from before handles had owners (owned by no key). An
    unknown mode is a bad frame."""
    items = _list(v, what)
    if len(items) == 7:
        items = [*items, ""]
    if len(items) == 8:
        items = [*items, "", "", 0]
    if len(items) == 11:
        items = [*items, AccessMode.USER_LIMIT.value]
    h, f, p, seats, cid, rid, at, owner, user, host, pid, mode = _list(items, what, 12)
    access = _MODES.get(mode) if type(mode) is str else None
    if access is None:
        raise _fail(f"{what}: unknown access mode")
    return HandleRecord(
        _str(h, what),
        _int(f, what, 0, U32),
        _int(p, what, 0, U32),
        _int(seats, what, 1, U32),
        _str(cid, what),
        _str(rid, what),
        _float(at, what),
        _str(owner, what, MAX_OWNER, empty=True),
        _str(user, what, empty=True),
        _str(host, what, empty=True),
        _int(pid, what, 0, U32),
        access,
    )


def _d_op(v: Any, what: str) -> Op:
    items = _list(v, what)
    if items and items[0] == "g" and len(items) == 2:
        return Grant(_d_record(items[1], what))
    if items and items[0] == "r" and len(items) == 4:
        try:
            reason = ReleaseReason(items[2])
        except ValueError:
            raise _fail(f"{what}: unknown release reason") from None
        return Release(_str(items[1], what), reason, _float(items[3], what))
    if items and items[0] == "f" and len(items) == 3:
        return _d_floor(items[1], items[2], what)
    raise _fail(f"{what}: unknown op")


def _d_floor(tmr_id: Any, at: Any, what: str) -> Floor:
    time = _float(at, what)
    if time < 0:
        raise _fail(f"{what}: expected a time >= 0")
    return Floor(_int(tmr_id, what, 0, U32), time)


def _d_token(v: Any, what: str) -> StateToken | None:
    """A backend's status state token `[base, gen]` (None: absent)."""
    if v is None:
        return None
    base, gen = _list(v, what, 2)
    return (_str(base, what, MAX_POLICY_NAME), _int(gen, what))


def _d_policies(v: Any) -> dict[str, str]:
    items = _list(v, "policies")
    if len(items) > MAX_POLICIES:
        raise _fail(f"policies: more than {MAX_POLICIES} servers")
    out = {}
    for i, x in enumerate(items):
        server, digest = _list(x, f"policies[{i}]", 2)
        out[_str(server, "policies.server", MAX_POLICY_NAME)] = _str(
            digest, "policies.digest", MAX_POLICY_NAME, empty=True
        )
    return out


def _d_floors(v: Any, what: str) -> dict[ProductKey, Floor]:
    out = {}
    for i, x in enumerate(_list(v, what)):
        k, tmr_id, at = _list(x, f"{what}[{i}]", 3)
        out[_d_key(k, what)] = _d_floor(tmr_id, at, what)
    return out


def _d_clock(v: Any, what: str) -> float | None:
    if v is None:
        return None
    clock = _float(v, what)
    if clock < 0:
        raise _fail(f"{what}: expected a time >= 0")
    return clock


_REASONS = {r.value: r for r in ReleaseReason}
_MODES = {m.value: m for m in AccessMode}
_finite = math.isfinite


def _fast_record(v: Any) -> HandleRecord | None:
    """`_d_record` of a well-formed record, with no error texts built; None if any check
    fails (the caller then runs `_d_record`, which names the problem). Accepts exactly what
    `_d_record` accepts, except a whole-number ``granted_at`` and the 7 fields of an older
    peer's record (both left to `_d_record`)."""
    n = len(v) if type(v) is list else 0
    if n in (8, 11, 12):
        h, f, p, seats, cid, rid, at, owner, user, host, pid = v[:11] if n != 8 else [*v, "", "", 0]
        mode: AccessMode | None = AccessMode.USER_LIMIT
        if n == 12:
            mode = _MODES.get(v[11]) if type(v[11]) is str else None
        if (
            mode is not None
            and type(h) is str
            and 0 < len(h) <= MAX_STR
            and type(f) is int
            and 0 <= f <= U32
            and type(p) is int
            and 0 <= p <= U32
            and type(seats) is int
            and 1 <= seats <= U32
            and type(cid) is str
            and 0 < len(cid) <= MAX_STR
            and type(rid) is str
            and 0 < len(rid) <= MAX_STR
            and type(at) is float
            and _finite(at)
            and type(owner) is str
            and len(owner) <= MAX_OWNER
            and type(user) is str
            and len(user) <= MAX_STR
            and type(host) is str
            and len(host) <= MAX_STR
            and type(pid) is int
            and 0 <= pid <= U32
        ):
            # The strings a client repeats in each of its handles are shared, not one copy per
            # held handle (issue 17: memory per handle, on the backends and at takeover).
            cid, owner, user, host = intern(cid), intern(owner), intern(user), intern(host)
            return handle_record(h, f, p, seats, cid, rid, at, owner, user, host, pid, mode)
    return None


def _fast_op(v: Any) -> Op | None:
    """`_d_op` of a well-formed op, like `_fast_record` (None: let `_d_op` decide)."""
    if type(v) is list:
        n = len(v)
        if n == 2 and v[0] == "g":
            rec = _fast_record(v[1])
            if rec is not None:
                return Grant(rec)
        elif n == 4 and v[0] == "r":
            h, reason, at = v[1], v[2], v[3]
            if (
                type(h) is str
                and 0 < len(h) <= MAX_STR
                and type(reason) is str
                and type(at) is float
                and _finite(at)
            ):
                r = _REASONS.get(reason)
                if r is not None:
                    return Release(h, r, at)
    return None


def _items(
    v: Any, what: str, strict: Callable[[Any, str], T], fast: Callable[[Any], T | None]
) -> tuple[T, ...]:
    """The items of list ``v``, each decoded by ``fast`` (hot: no error texts built) or,
    where it declines, by ``strict``, which names the problem as ``what[i]``."""
    items = _list(v, what)
    out = [fast(x) for x in items]
    for i, x in enumerate(out):
        if x is None:
            out[i] = strict(items[i], f"{what}[{i}]")
    return tuple(out)  # type: ignore[arg-type]


def _d_license(v: Any, what: str) -> LicenseInfo:
    """A backend's report of one copy: 10 fields, or the 6 of a backend from before copies
    named their set (reported with no set; the server does not count such a copy)."""
    items = _list(v, what)
    if len(items) == 6:
        items = [*items, "", 0, "", ""]
    tmr_id, qty, valid, reason, expires, feats, set_id, index, fp, bkey = _list(items, what, 10)
    features = tuple(
        (_str(a, what, 4096, True), _str(b, what, 4096, True))
        for a, b in (_list(kv, what, 2) for kv in _list(feats, what))
    )
    return LicenseInfo(
        _int(tmr_id, what),
        _int(qty, what),
        _bool(valid, what),
        _d_copy_reason(reason, what),
        None if expires is None else _float(expires, what),
        features,
        _str(set_id, what, 32, True),
        _int(index, what, 0, 3),
        _str(fp, what, 64, True),
        _str(bkey, what, 64, True),
    )


def _d_copy_reason(v: Any, what: str) -> CopyReason:
    """A copy's reason, as the string every version sends (`CopyReason` values)."""
    text = _str(v, what, 1024, True)
    try:
        return CopyReason(text)
    except ValueError:
        raise _fail(f"{what}: unknown copy reason {text[:40]!r}") from None


def _d_age(v: Any, what: str) -> float | None:
    if v is None:
        return None
    age = _float(v, what)
    if age < 0:
        raise _fail(f"{what}: expected a number of seconds >= 0")
    return age


def _d_licenses(v: Any, what: str) -> dict[ProductKey, LicenseInfo]:
    out = {}
    for i, kv in enumerate(_list(v, what)):
        k, lic = _list(kv, f"{what}[{i}]", 2)
        out[_d_key(k, what)] = _d_license(lic, what)
    return out


def _body(frame: bytes) -> tuple[str, int, dict[str, Any]]:
    return _typed(unpack(frame, max_size=MAX_PEER_FRAME, typed_arrays=True))


def _typed(body: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    t = body.get("t")
    if type(t) is not str:
        raise _fail("missing message type")
    return t, _int(body.get("mid"), "mid"), body


def _get(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise _fail(f"missing field {name!r}")
    return body[name]


def decode_request(frame: bytes) -> PeerRequest:
    return _request(*_body(frame))


def _request(t: str, mid: int, b: dict[str, Any]) -> PeerRequest:
    try:
        if t == "probe":
            # An older server sends no epoch: the probe then says nothing about its leader.
            pe = b.get("epoch")
            return Probe(
                mid,
                None if pe is None else _d_epoch(pe, "epoch"),
                _str(b.get("server", ""), "server", MAX_POLICY_NAME, empty=True),
                _str(b.get("policy", ""), "policy", MAX_POLICY_NAME, empty=True),
                _d_token(b.get("have"), "have"),  # an older server sends none
            )
        epoch = _d_epoch(_get(b, "epoch"), "epoch")
        if t == "prepare":
            return Prepare(mid, epoch, _bool(b.get("tables", True), "tables"))
        if t == "accept":
            entries = []
            for i, e in enumerate(_list(_get(b, "entries"), "entries")):
                k, seq, ops = _list(e, f"entries[{i}]", 3)
                entries.append(
                    AcceptEntry(
                        _d_key(k, "key"), _int(seq, "seq", 1), _items(ops, "ops", _d_op, _fast_op)
                    )
                )
            commits = tuple(
                (_d_key(k, "key"), _int(seq, "seq"))
                for k, seq in (_list(x, "commits", 2) for x in _list(b.get("commits", []), "c"))
            )
            notice = (
                tuple(
                    (_d_key(k, "key"), _int(seq, "seq", 1))
                    for k, seq in (_list(x, "notice", 2) for x in _list(b["notice"], "n"))
                )
                if "notice" in b
                else ()  # absent while none: most messages
            )
            return Accept(mid, epoch, tuple(entries), commits, notice)
        if t == "snapshot":
            snaps = []
            for i, e in enumerate(_list(_get(b, "entries"), "entries")):
                items = _list(e, f"entries[{i}]")
                if len(items) == 3:  # no floors (an older server, or none raised yet)
                    items = [*items, [0, 0.0]]
                if len(items) == 4:  # the table itself, not a reference to the backend's own
                    items = [*items, None]
                k, seq, recs, fl, base = _list(items, f"entries[{i}]", 5)
                ft, fa = _list(fl, f"entries[{i}].floor", 2)
                handles = _items(recs, "handles", _d_record, _fast_record)
                if base is not None and handles:
                    raise _fail(f"entries[{i}]: a table by reference carries no handles")
                snaps.append(
                    SnapshotEntry(
                        _d_key(k, "key"),
                        _int(seq, "seq"),
                        handles,
                        _d_floor(ft, fa, f"entries[{i}].floor"),
                        None if base is None else _d_version(base, f"entries[{i}].base"),
                    )
                )
            committed = _bool(b.get("committed", False), "committed")
            return Snapshot(mid, epoch, tuple(snaps), committed)
        if t == "crypt":
            return Crypt(
                mid,
                epoch,
                _d_key(_get(b, "key"), "key"),
                _str(_get(b, "handle"), "handle"),
                _str(_get(b, "cid"), "cid"),
                _str(_get(b, "operation"), "operation", 32),
                _bytes(_get(b, "data"), "data", 1 << 20),
                # An older server sends none: no record with an owner matches "".
                _str(b.get("owner", ""), "owner", MAX_OWNER, empty=True),
            )
    except ValueError as exc:  # wrong arity when unpacking a list
        raise _fail(f"malformed {t}: {exc}") from None
    raise _fail(f"unknown request type {t[:40]!r}")


def decode_reply(frame: bytes) -> PeerReply:
    t, mid, b = _body(frame)
    try:
        if t == "status":
            if "since" in b and b.get("state") is None:
                raise _fail("status: a delta (since) without its state")
            return Status(
                mid,
                _str(_get(b, "name"), "name"),
                _d_epoch(_get(b, "promised"), "promised"),
                _bool(_get(b, "caught_up"), "caught_up"),
                {
                    _d_key(k, "key"): _d_version(v, "version")
                    for k, v in (_list(x, "versions", 2) for x in _list(_get(b, "versions"), "v"))
                },
                {
                    _d_key(k, "key"): _int(v, "seats")
                    for k, v in (_list(x, "seats", 2) for x in _list(_get(b, "seats"), "s"))
                },
                _d_licenses(_get(b, "licenses"), "licenses"),
                _d_age(b.get("leader_age"), "leader_age"),  # an older backend sends none
                _d_clock(b.get("clock"), "clock"),
                _d_floors(b.get("floors", []), "floors"),
                _d_policies(b.get("policies", [])),  # an older backend sends none
                _bool(b.get("denials", False), "denials"),  # an older backend sends none
                _d_token(b.get("state"), "state"),  # an older backend sends none
                None if b.get("since") is None else _int(b["since"], "since"),
                tuple(_d_key(k, "gone") for k in _list(b.get("gone", []), "gone")),
            )
        if t == "promise":
            logs = {}
            for x in _list(_get(b, "logs"), "logs"):
                k, v, recs = _list(x, "log", 3)
                logs[_d_key(k, "key")] = (
                    _d_version(v, "version"),
                    _items(recs, "handles", _d_record, _fast_record),
                )
            return Promise(
                mid,
                _str(_get(b, "name"), "name"),
                _d_epoch(_get(b, "epoch"), "epoch"),
                _bool(_get(b, "caught_up"), "caught_up"),
                logs,
                _d_licenses(_get(b, "licenses"), "licenses"),
                _d_floors(b.get("floors", []), "floors"),  # an older backend sends none
                {
                    _d_key(k, "key"): _d_version(v, "version")
                    for k, v in (_list(x, "commits", 2) for x in _list(b.get("commits", []), "c"))
                },
                {
                    _d_key(k, "key"): tuple(
                        (_str(h, "handle"), _d_version(v, "version"))
                        for h, v in (_list(y, "mark", 2) for y in _list(marks, "marks"))
                    )
                    for k, marks in (_list(x, "marked", 2) for x in _list(b.get("marked", []), "m"))
                },
                _bool(b.get("refs", False), "refs"),  # an older backend sends none
                _bool(b.get("tables", True), "tables"),
            )
        if t == "rejected":
            return Rejected(mid, _d_epoch(_get(b, "promised"), "promised"))
        if t == "accepted":
            results = {}
            for x in _list(_get(b, "results"), "results"):
                k, status, seq, reason = _list(x, "result", 4)
                try:
                    st = EntryStatus(status)
                except ValueError:
                    raise _fail("unknown entry status") from None
                results[_d_key(k, "key")] = EntryResult(
                    st, _int(seq, "seq"), _str(reason, "reason", 1024, True)
                )
            return Accepted(
                mid,
                _d_epoch(_get(b, "epoch"), "epoch"),
                results,
                _d_licenses(b.get("licenses", []), "licenses"),
                _bool(b.get("durable", False), "durable"),  # an older backend sends none
            )
        if t == "crypt_result":
            return CryptResult(
                mid,
                _bool(_get(b, "ok"), "ok"),
                _bytes(_get(b, "data"), "data", 1 << 20),
                _str(_get(b, "error"), "error", 64, True),
                _str(_get(b, "message"), "message", 1024, True),
            )
        if t == "error":
            return PeerError(mid, _str(_get(b, "message"), "message", 1024, True))
    except ValueError as exc:
        raise _fail(f"malformed {t}: {exc}") from None
    raise _fail(f"unknown reply type {t[:40]!r}")


# ------------------------------------------------------------------ usage record (audit)
# Separate entry points: `decode_request` / `decode_reply` above stay exactly as they are, so
# the replication path never sees these messages.

MAX_USAGE_ROWS = 500_000
USAGE_EVENTS = ("granted", "released", "expired")
_EVENT_CODES = {e: i for i, e in enumerate(USAGE_EVENTS)}
# A chunked usage answer (`encode_usage_chunk`) holds at most the bytes its query asks for,
# within these bounds.
MIN_USAGE_CHUNK = 4096
MAX_USAGE_CHUNK = 4 * 1024 * 1024
# Upper bound of the encoded size of one row in a chunk, besides its two strings' UTF-8
# bytes: a float (9), an event code (1), three integers <= U32 (5 each), two string headers
# (5 each). A chunk's fixed part (map keys, name, oldest, next, array headers) is below
# USAGE_CHUNK_OVERHEAD + the name's UTF-8 bytes.
USAGE_ROW_OVERHEAD = 9 + 1 + 3 * 5 + 2 * 5
USAGE_CHUNK_OVERHEAD = 256


def encode_usage_query(msg: UsageQuery) -> bytes:
    body: dict[str, Any] = {
        "t": "usage_query",
        "mid": msg.mid,
        "since": msg.since,
        "until": msg.until,
        "limit": msg.limit,
    }
    if msg.chunk_bytes:
        body["after"] = msg.after
        body["chunk"] = msg.chunk_bytes
    return pack(body)


def decode_usage_query(frame: bytes) -> UsageQuery:
    return _usage_query(*_body(frame))


def _usage_query(t: str, mid: int, b: dict[str, Any]) -> UsageQuery:
    if t != "usage_query":
        raise _fail(f"not a usage query: {t[:40]!r}")
    since = _float(_get(b, "since"), "since")
    until = _float(_get(b, "until"), "until")
    if until < since:
        raise _fail("until: must not be before since")
    limit = _int(_get(b, "limit"), "limit", 1, MAX_USAGE_ROWS)
    if "chunk" not in b:
        return UsageQuery(mid, since, until, limit)
    chunk = _int(b["chunk"], "chunk", MIN_USAGE_CHUNK, MAX_USAGE_CHUNK)
    return UsageQuery(mid, since, until, limit, _int(_get(b, "after"), "after"), chunk)


def _usage_row(r: UsageRow) -> list[Any]:
    return [r.at, r.event, r.firm, r.product, r.handle, r.seats, r.client_id]


def _d_usage_row(v: Any, what: str) -> UsageRow:
    at, event, firm, product, handle, seats, cid = _list(v, what, 7)
    if event not in USAGE_EVENTS:
        raise _fail(f"{what}: unknown usage event")
    return UsageRow(
        _float(at, what),
        event,
        _int(firm, what, 0, U32),
        _int(product, what, 0, U32),
        _str(handle, what),
        _int(seats, what, 0, U32),
        _str(cid, what, empty=True),
    )


def encode_usage_records(msg: UsageRecords) -> bytes:
    return pack(
        {
            "t": "usage_records",
            "mid": msg.mid,
            "name": msg.name,
            "rows": [_usage_row(r) for r in msg.rows],
            "oldest": msg.oldest,
            "truncated": msg.truncated,
        }
    )


def encode_usage_answer(query: UsageQuery, msg: UsageRecords) -> bytes:
    """A backend's answer to ``query``: a chunk if it asked for one, else all the rows."""
    return encode_usage_chunk(msg) if query.chunk_bytes else encode_usage_records(msg)


def usage_row_size(row: UsageRow) -> int:
    """The most bytes ``row`` takes in a chunk (`encode_usage_chunk`)."""
    return USAGE_ROW_OVERHEAD + len(row.handle.encode()) + len(row.client_id.encode())


def encode_usage_chunk(msg: UsageRecords) -> bytes:
    """A chunk of a backend's answer to a chunked `UsageQuery`, by column (7 arrays instead of
    one array per row: a server decodes and checks it in a few C-level passes)."""
    cols: list[tuple[Any, ...]] = list(zip(*msg.rows, strict=True)) or [()] * 7
    at, event, firm, product, handle, seats, client_id = cols
    return pack(
        {
            "t": "usage_chunk",
            "mid": msg.mid,
            "name": msg.name,
            "at": at,
            "event": bytes(_EVENT_CODES[e] for e in event),
            "firm": firm,
            "product": product,
            "handle": handle,
            "seats": seats,
            "client_id": client_id,
            "oldest": msg.oldest,
            "next": msg.next,
            # Only when set (a first chunk whose window holds more rows than the query's
            # limit): servers before the flag ignore the key and count the rows they read.
            **({"truncated": True} if msg.truncated else {}),
        }
    )


def _column(b: dict[str, Any], name: str, n: int, types: frozenset[type]) -> list[Any]:
    col = _list(_get(b, name), name)
    if len(col) != n:
        raise _fail(f"{name}: expected {n} items")
    if not set(map(type, col)) <= types:
        raise _fail(f"{name}: expected {'/'.join(sorted(t.__name__ for t in types))} items")
    return col


_new_tuple = tuple.__new__
_INT = frozenset({int})
_STR = frozenset({str})
_NUM = frozenset({int, float})


def _d_usage_chunk(mid: int, b: dict[str, Any]) -> UsageRecords:
    at = _list(_get(b, "at"), "at")
    n = len(at)
    if n > MAX_USAGE_ROWS:
        raise _fail(f"at: more than {MAX_USAGE_ROWS} rows")
    at = _column(b, "at", n, _NUM)
    try:
        if not all(map(math.isfinite, at)):
            raise _fail("at: expected finite numbers")
    except OverflowError:
        raise _fail("at: expected finite numbers") from None
    at = [float(x) for x in at] if int in set(map(type, at)) else at
    codes = _bytes(_get(b, "event"), "event", n)
    if len(codes) != n or codes.translate(None, bytes(range(len(USAGE_EVENTS)))):
        raise _fail(f"event: expected {n} event codes")
    event = [USAGE_EVENTS[c] for c in codes]
    ints = [_column(b, name, n, _INT) for name in ("firm", "product", "seats")]
    for name, col in zip(("firm", "product", "seats"), ints, strict=True):
        if col and not (min(col) >= 0 and max(col) <= U32):
            raise _fail(f"{name}: expected integers in [0, {U32}]")
    firm, product, seats = ints
    handle = _column(b, "handle", n, _STR)
    client_id = _column(b, "client_id", n, _STR)
    if handle and not (min(map(len, handle)) >= 1 and max(map(len, handle)) <= MAX_STR):
        raise _fail(f"handle: expected strings of 1 to {MAX_STR} characters")
    if client_id and max(map(len, client_id)) > MAX_STR:
        raise _fail(f"client_id: expected strings of at most {MAX_STR} characters")
    oldest = _get(b, "oldest")
    nxt = _get(b, "next")
    return UsageRecords(
        mid,
        _str(_get(b, "name"), "name"),
        # tuple.__new__ straight from the columns: no Python call per row
        tuple(
            map(
                _new_tuple,
                repeat(UsageRow),
                zip(at, event, firm, product, handle, seats, client_id, strict=True),
            )
        ),
        None if oldest is None else _float(oldest, "oldest"),
        _bool(b.get("truncated", False), "truncated"),
        None if nxt is None else _int(nxt, "next"),
    )


def decode_usage_reply(frame: bytes) -> UsageRecords | PeerError:
    """A backend's answer on the usage link: the records (whole, or a chunk of them), or a
    `PeerError` (for instance from a backend too old to know the query)."""
    t, mid, b = _body(frame)
    try:
        if t == "error":
            return PeerError(mid, _str(_get(b, "message"), "message", 1024, True))
        if t == "usage_chunk":
            return _d_usage_chunk(mid, b)
        if t == "usage_records":
            rows = _list(_get(b, "rows"), "rows")
            if len(rows) > MAX_USAGE_ROWS:
                raise _fail(f"rows: more than {MAX_USAGE_ROWS}")
            oldest = _get(b, "oldest")
            return UsageRecords(
                mid,
                _str(_get(b, "name"), "name"),
                tuple(_d_usage_row(r, f"rows[{i}]") for i, r in enumerate(rows)),
                None if oldest is None else _float(oldest, "oldest"),
                _bool(_get(b, "truncated"), "truncated"),
            )
    except ValueError as exc:
        raise _fail(f"malformed {t}: {exc}") from None
    raise _fail(f"unknown reply type {t[:40]!r} on the usage link")


# ------------------------------------------------------------------ what a backend receives


@dataclass(frozen=True)
class BadFrame:
    """A frame a backend cannot serve: ``mid`` is the message id it carries if that much could
    be read (else 0), so the sender can match the `PeerError` answering it."""

    mid: int
    message: str


BackendInbound = PeerRequest | UsageQuery | Denials | DenialQuery | BadFrame


def decode_backend_frame(frame: bytes) -> BackendInbound:
    """Classify one frame sent to a backend with ONE decode (design.md §5, §7.4): a
    replication request, a usage-record query, or a `BadFrame` with the reason. The frame is
    unpacked once; the message id for the error answer comes from that same unpacking, never
    from a second attempt. Never raises `ProtocolError`."""
    try:
        body = unpack(frame, max_size=MAX_PEER_FRAME, typed_arrays=True)
    except ProtocolError as exc:
        return BadFrame(0, exc.message)
    raw_mid = body.get("mid")
    mid = raw_mid if type(raw_mid) is int and 0 <= raw_mid <= U63 else 0
    try:
        t, mid, b = _typed(body)
        if t == "usage_query":
            return _usage_query(t, mid, b)
        if t == "denials":
            return _d_denials(mid, b)
        if t == "denial_query":
            return _d_denial_query(mid, b)
        return _request(t, mid, b)
    except ProtocolError as exc:
        return BadFrame(mid, exc.message)


# ------------------------------------------------------------------ denial record (audit)
# Server -> backend: `Denials` (no answer) and `DenialQuery`; backend -> server:
# `DenialRecords` or `PeerError`. Decoded only by `decode_backend_frame` and
# `decode_denial_reply`: the replication path never sees them (docs/design.md §7.6).

MAX_DENIAL_BATCH = 1024  # rows in one `Denials` message
MAX_DENIAL_ID = 64
MAX_DENIAL_CODE = 32
MAX_DENIAL_RULE = 1024  # characters of a rule text or refusal message
MAX_DENIAL_ROWS = 100_000  # rows in one `DenialRecords` answer
MAX_DENIAL_COUNT = 2**32 - 1
# Upper bound of a denial row's encoded size besides its strings' UTF-8 bytes: a list header
# (1), two floats (9 each), five integers (5 each), seven string headers (5 each).
DENIAL_ROW_OVERHEAD = 1 + 2 * 9 + 5 * 5 + 7 * 5
DENIAL_CHUNK_OVERHEAD = 256


def _denial_row(r: DenialRow) -> list[Any]:
    return list(r)


def denial_row_size(r: DenialRow) -> int:
    """The most bytes ``r`` takes encoded (`encode_denial_records`)."""
    strings = (r.id, r.server, r.code, r.owner, r.user, r.host, r.rule)
    return DENIAL_ROW_OVERHEAD + sum(len(x.encode()) for x in strings)


def _d_denial_row(v: Any, what: str) -> DenialRow:
    rid, at, server, code, firm, product, seats, owner, user, host, pid, rule, count, last = _list(
        v, what, 14
    )
    when, until = _float(at, what), _float(last, what)
    if when < 0 or until < when:
        raise _fail(f"{what}: expected times 0 <= at <= last")
    return DenialRow(
        _str(rid, what, MAX_DENIAL_ID),
        when,
        _str(server, what, MAX_POLICY_NAME),
        _str(code, what, MAX_DENIAL_CODE),
        _int(firm, what, 0, U32),
        _int(product, what, 0, U32),
        _int(seats, what, 0, U32),
        _str(owner, what, MAX_OWNER, empty=True),
        _str(user, what, empty=True),
        _str(host, what, empty=True),
        _int(pid, what, 0, U32),
        _str(rule, what, MAX_DENIAL_RULE, empty=True),
        _int(count, what, 1, MAX_DENIAL_COUNT),
        until,
    )


def encode_denials(msg: Denials) -> bytes:
    return pack({"t": "denials", "mid": msg.mid, "rows": [_denial_row(r) for r in msg.rows]})


def _d_denials(mid: int, b: dict[str, Any]) -> Denials:
    rows = _list(_get(b, "rows"), "rows")
    if len(rows) > MAX_DENIAL_BATCH:
        raise _fail(f"rows: more than {MAX_DENIAL_BATCH} denials in one message")
    return Denials(mid, tuple(_d_denial_row(r, f"rows[{i}]") for i, r in enumerate(rows)))


def encode_denial_query(msg: DenialQuery) -> bytes:
    return pack(
        {
            "t": "denial_query",
            "mid": msg.mid,
            "since": msg.since,
            "until": msg.until,
            "after": msg.after,
            "chunk": msg.chunk_bytes,
        }
    )


def _d_denial_query(mid: int, b: dict[str, Any]) -> DenialQuery:
    since = _float(_get(b, "since"), "since")
    until = _float(_get(b, "until"), "until")
    if until < since:
        raise _fail("until: must not be before since")
    return DenialQuery(
        mid,
        since,
        until,
        _int(_get(b, "after"), "after"),
        _int(_get(b, "chunk"), "chunk", MIN_USAGE_CHUNK, MAX_USAGE_CHUNK),
    )


def encode_denial_records(msg: DenialRecords) -> bytes:
    return pack(
        {
            "t": "denial_records",
            "mid": msg.mid,
            "name": msg.name,
            "rows": [_denial_row(r) for r in msg.rows],
            "oldest": msg.oldest,
            "next": msg.next,
        }
    )


def decode_denial_reply(frame: bytes) -> DenialRecords | PeerError:
    """A backend's answer to a `DenialQuery`: the records (a chunk), or a `PeerError`."""
    t, mid, b = _body(frame)
    try:
        if t == "error":
            return PeerError(mid, _str(_get(b, "message"), "message", 1024, True))
        if t == "denial_records":
            rows = _list(_get(b, "rows"), "rows")
            if len(rows) > MAX_DENIAL_ROWS:
                raise _fail(f"rows: more than {MAX_DENIAL_ROWS}")
            oldest, nxt = _get(b, "oldest"), _get(b, "next")
            return DenialRecords(
                mid,
                _str(_get(b, "name"), "name"),
                tuple(_d_denial_row(r, f"rows[{i}]") for i, r in enumerate(rows)),
                None if oldest is None else _float(oldest, "oldest"),
                None if nxt is None else _int(nxt, "next"),
            )
    except ValueError as exc:
        raise _fail(f"malformed {t}: {exc}") from None
    raise _fail(f"unknown reply type {t[:40]!r} on the denial link")
