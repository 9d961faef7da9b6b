"""The backend's side of the replication protocol: a sans-I/O acceptor.

`Acceptor.handle(request, now)` computes the reply and the durable write that must be
committed before the reply may be sent; it never changes the acceptor. The service (or the
simulation) commits the write to its store and only then calls `Acceptor.committed(step)`,
which applies it in memory, and sends the reply. A failed commit means: no reply, no change.
Call `committed` for every step whose reply is sent, also one without a write: it records
when the leader was last heard.

Rules (docs/design.md §5):
- a request whose epoch is below the promise is rejected (`Rejected`), whatever it is;
- PREPARE stores the new promise durably before answering PROMISE with the accepted state;
- ACCEPT applies an entry only if it follows the product log in the same epoch, and only if
  this backend holds a valid copy of the license and its own seat count stays within its LQ;
- SNAPSHOT replaces a product log (same license checks; a snapshot may keep, never grow, a
  count above LQ, which happens when an update lowered LQ below the seats in use);
- a fresh backend (no state yet) is not `caught_up` until it receives a snapshot, and the
  leader does not count its promise (I10).

Leader liveness (not persisted, monotonic `now`): the acceptor remembers when it last
received a request carrying exactly its promised epoch (a PROBE with that epoch, ACCEPT,
SNAPSHOT, CRYPT, and the PREPARE that set it) and reports the age in `Status.leader_age`. A
server being promoted uses it to see that another server still leads (`Leader.promote`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from tmr.replication.messages import (
    Accept,
    Accepted,
    Crypt,
    CryptResult,
    EntryResult,
    EntryStatus,
    PeerReply,
    PeerRequest,
    Prepare,
    Probe,
    Promise,
    Rejected,
    Snapshot,
    StateToken,
    Status,
)
from tmr.replication.types import (
    ZERO_VERSION,
    Epoch,
    Floor,
    Grant,
    HandleRecord,
    LicenseInfo,
    Op,
    ProductKey,
    ProductLog,
    Release,
    Version,
    floor_after,
    seat_count,
    under_floor,
)

MAX_POLICIES = 8  # servers whose policy digests a backend reports (a cluster has two)

CryptFn = Callable[[ProductKey, str, bytes], bytes]


@dataclass
class AcceptorState:
    """Everything an acceptor keeps durably."""

    promised: Epoch
    caught_up: bool
    products: dict[ProductKey, ProductLog] = field(default_factory=dict)
    # Per product, the highest version a leader said is committed (an ACCEPT's `commits`, a
    # committed snapshot): the table at that version is committed state (docs/design.md §6).
    known: dict[ProductKey, Version] = field(default_factory=dict)

    def copy(self) -> AcceptorState:
        return AcceptorState(
            self.promised,
            self.caught_up,
            {k: v.copy() for k, v in self.products.items()},
            dict(self.known),
        )


@dataclass(frozen=True)
class ProductWrite:
    key: ProductKey
    version: Version
    ops: tuple[Op, ...] = ()  # applied in order when `replace` is None
    replace: tuple[HandleRecord, ...] | None = None  # full table (snapshot)
    floor: Floor | None = None  # raise the floors to at least this (snapshot)


@dataclass(frozen=True)
class Write:
    """One atomic, durable transaction on the acceptor's store."""

    promised: Epoch | None = None
    caught_up: bool | None = None
    products: tuple[ProductWrite, ...] = ()
    # Raise the known committed version of these products (`AcceptorState.known`).
    known: tuple[tuple[ProductKey, Version], ...] = ()
    # Set these products' marked grants (`ProductLog.marked`), after `products`.
    marks: tuple[tuple[ProductKey, tuple[tuple[str, Version], ...]], ...] = ()

    def empty(self) -> bool:
        return (
            self.promised is None
            and self.caught_up is None
            and not self.products
            and not self.known
            and not self.marks
        )


@dataclass(frozen=True)
class Step:
    reply: PeerReply
    write: Write | None = None
    # The request carried the promised epoch (or the one this write promises): (epoch, now).
    seen: tuple[Epoch, float] | None = None


def apply_write(state: AcceptorState, write: Write) -> None:
    """Apply a committed write to a state in place (shared by the acceptor and stores)."""
    if write.promised is not None:
        state.promised = write.promised
    if write.caught_up is not None:
        state.caught_up = write.caught_up
    for pw in write.products:
        log = state.products.setdefault(pw.key, ProductLog())
        if pw.replace is not None:
            log.replace_handles(pw.replace)
        else:
            log.apply(pw.ops)
        log.floor = floor_after(log.floor, pw.ops)
        if pw.floor is not None:
            log.floor = log.floor.merge(pw.floor)
        log.version = pw.version
    for key, marks in write.marks:
        state.products.setdefault(key, ProductLog()).marked = dict(marks)
    for key, version in write.known:
        if version > state.known.get(key, ZERO_VERSION):
            state.known[key] = version


class Acceptor:
    def __init__(
        self,
        name: str,
        state: AcceptorState,
        licenses: Mapping[ProductKey, LicenseInfo] | None = None,
        crypt: CryptFn | None = None,
        new_base: Callable[[], str] | None = None,
    ) -> None:
        self.name = name
        self._new_base = new_base or (lambda: secrets.token_hex(8))
        self._state = state
        self.licenses: dict[ProductKey, LicenseInfo] = dict(licenses or {})
        # The status state's token (`Status.state`): a fresh base whenever the state is
        # replaced (start, reload after a failed commit), `_gen` counting the changes since,
        # and each product changed since the base with the gen of its latest change, in
        # that order (oldest first): a delta walks it from the newest end only.
        self._base = self._new_base()
        self._gen = 0
        self._changed: dict[ProductKey, int] = {}
        self._crypt = crypt
        # The backend's trusted wall time (its clock guard's high-water), reported in Status
        # for the leader's time floor; set by the service (None: not known).
        self.trusted_time: float | None = None
        # When a request last carried this epoch (monotonic, memory only). It counts only
        # while the epoch is the promise, so a state reloaded after a failed commit, or a
        # restart, makes the leader's age unknown rather than wrong.
        self._seen: tuple[Epoch, float] | None = None
        # server id -> the policy digest of its latest probe (memory only), for Status
        self.policies: dict[str, str] = {}

    # ------------------------------------------------------------------ inputs

    @property
    def state(self) -> AcceptorState:
        return self._state

    @state.setter
    def state(self, state: AcceptorState) -> None:
        """The state is replaced (reloaded from disk): servers are sent everything again."""
        self._state = state
        self._base = self._new_base()
        self._gen = 0
        self._changed.clear()

    @property
    def status_token(self) -> StateToken:
        return (self._base, self._gen)

    def set_licenses(self, licenses: Mapping[ProductKey, LicenseInfo]) -> None:
        """The license container was (re)loaded and verified by the service."""
        old = self.licenses
        self.licenses = dict(licenses)
        self._touch([k for k in old.keys() | self.licenses.keys() if old.get(k) != licenses.get(k)])

    def _touch(self, keys: Iterable[ProductKey]) -> None:
        """These products' status entries (may) have changed: a new gen."""
        changed = self._changed
        gen = self._gen + 1
        for key in keys:
            changed.pop(key, None)
            changed[key] = gen
            self._gen = gen

    def handle(self, req: PeerRequest, now: float) -> Step:
        """The reply to one request and the write to commit first; `now` is monotonic."""
        promised = self.state.promised
        if isinstance(req, Probe):
            if req.server:
                self._note_policy(req.server, req.policy)
            if req.epoch is not None and req.epoch == promised:
                return Step(self._status(req.mid, 0.0, req.have), seen=(promised, now))
            return Step(self._status(req.mid, self.leader_age(now), req.have))
        if req.epoch < promised:
            return Step(Rejected(req.mid, promised))
        if isinstance(req, Prepare):
            step = self._prepare(req)
        elif isinstance(req, Accept):
            step = self._accept(req)
        elif isinstance(req, Snapshot):
            step = self._snapshot(req)
        else:
            step = self._crypt_call(req)
        raises = step.write is not None and step.write.promised == req.epoch
        if req.epoch == promised or raises:
            # Not `dataclasses.replace`: a few microseconds per request on the hot path.
            step = Step(step.reply, step.write, (req.epoch, now))
        return step

    def committed(self, step: Step) -> None:
        """The step's write is durable: make it the acceptor's state."""
        if step.write is not None:
            apply_write(self.state, step.write)
            write = step.write
            if write.products or write.marks:
                self._touch([pw.key for pw in write.products] + [k for k, _ in write.marks])
        if step.seen is not None:
            self._seen = step.seen

    @property
    def known_commit(self) -> dict[ProductKey, Version]:
        """Per product, the highest version a leader said is committed (an ACCEPT's
        `commits`, a committed snapshot), durable (`AcceptorState.known`, written in the
        transaction of the message that carried it). Reported in promises so that a new
        leader can tell the table it adopts was committed, and which grants of it no client
        was told of (docs/design.md §6)."""
        return self.state.known

    def _note_policy(self, server: str, digest: str) -> None:
        """Keep the latest policy digest a server's probe carried (memory only), for at most
        `MAX_POLICIES` servers: a cluster has two."""
        self.policies.pop(server, None)
        self.policies[server] = digest
        while len(self.policies) > MAX_POLICIES:
            del self.policies[next(iter(self.policies))]

    def leader_age(self, now: float) -> float | None:
        """Seconds since a request last carried the promised epoch (None: not since start)."""
        seen = self._seen
        if seen is None or seen[0] != self.state.promised:
            return None
        return max(0.0, now - seen[1])

    # ------------------------------------------------------------------ handlers

    def _status(self, mid: int, leader_age: float | None, have: StateToken | None) -> Status:
        """Everything, or only what changed since the state `have` the server holds (its
        cost then does not grow with the products: the server probes ten times a second)."""
        products = self.state.products
        since: int | None = None
        gone: list[ProductKey] = []
        if have is not None and have[0] == self._base and have[1] <= self._gen:
            since = have[1]
            keys: list[ProductKey] = []
            for key, gen in reversed(self._changed.items()):
                if gen <= since:
                    break
                keys.append(key)
            logs = {k: products[k] for k in keys if k in products}
            licenses = self.licenses
            copies = {k: self._reported(k, licenses[k]) for k in keys if k in licenses}
            gone = [k for k in keys if k not in licenses]
        else:
            logs = products
            copies = self.reported_licenses()
        return Status(
            mid=mid,
            name=self.name,
            promised=self.state.promised,
            caught_up=self.state.caught_up,
            versions={k: v.version for k, v in logs.items()},
            seats={k: v.seats() for k, v in logs.items()},
            licenses=copies,
            leader_age=leader_age,
            clock=self.trusted_time,
            floors={k: v.floor for k, v in logs.items()},
            policies=dict(self.policies),
            state=(self._base, self._gen),
            since=since,
            gone=tuple(gone),
        )

    def _reported(self, key: ProductKey, lic: LicenseInfo) -> LicenseInfo:
        log = self.state.products.get(key)
        return under_floor(lic, log.floor) if log is not None else lic

    def reported_licenses(self) -> dict[ProductKey, LicenseInfo]:
        """The copies as the replicated floors make them: a copy below the product's TMR ID
        floor, or expired at its time floor, is not valid here (`under_floor`)."""
        products = self.state.products
        return {
            k: under_floor(v, products[k].floor) if k in products else v
            for k, v in self.licenses.items()
        }

    def _promise_write(self, epoch: Epoch) -> Epoch | None:
        return epoch if epoch > self.state.promised else None

    def _prepare(self, req: Prepare) -> Step:
        reply = Promise(
            mid=req.mid,
            name=self.name,
            epoch=req.epoch,
            caught_up=self.state.caught_up,
            logs={
                k: (v.version, tuple(v.handles.values()) if req.tables else ())
                for k, v in self.state.products.items()
            },
            licenses=self.reported_licenses(),
            floors={k: v.floor for k, v in self.state.products.items()},
            commits=dict(self.state.known),
            marked={k: tuple(v.marked.items()) for k, v in self.state.products.items() if v.marked},
            refs=True,
            tables=req.tables,
        )
        promised = self._promise_write(req.epoch)
        return Step(reply, Write(promised=promised) if promised else None)

    def _license_refusal(self, key: ProductKey, log: ProductLog | None = None) -> str:
        lic = self.licenses.get(key)
        if lic is None:
            return "no copy of this license on this backend"
        if log is None:
            log = self.state.products.get(key)
        if log is not None:
            lic = under_floor(lic, log.floor)
        if not lic.valid:
            return f"license copy not valid here: {lic.reason or 'invalid'}"
        return ""

    def _accept(self, req: Accept) -> Step:
        results: dict[ProductKey, EntryResult] = {}
        writes: list[ProductWrite] = []
        # Entries for the same product may follow each other in one message (pipelining):
        # the second one is checked against a copy with the first applied. The state itself
        # changes only in `committed`.
        work: dict[ProductKey, ProductLog] = {}
        blocked: set[ProductKey] = set()
        notice = set(req.notice) if req.notice else ()
        several = len(req.entries) > 1  # pipelined entries (one per message at low load)
        marks: dict[ProductKey, dict[str, Version]] = {}
        for entry in req.entries:
            key = entry.key
            if key in blocked:
                continue
            log = work.get(key)
            if log is None:
                log = self.state.products.get(key) or ProductLog()
            have = log.version
            if have.epoch == req.epoch and entry.seq <= have.seq:
                results[key] = EntryResult(EntryStatus.OK, have.seq)  # duplicate
                continue
            if have.epoch != req.epoch or entry.seq != have.seq + 1:
                results[key] = EntryResult(EntryStatus.NEED_SNAPSHOT, have.seq)
                blocked.add(key)
                continue
            # Releases are recorded whatever the copy: only a grant needs a valid one.
            grants = any(isinstance(op, Grant) for op in entry.ops)
            refusal = self._license_refusal(key, log) if grants else ""
            refusal = refusal or self._check_ops(key, log, entry.ops)
            if refusal:
                results[key] = EntryResult(EntryStatus.REFUSED, have.seq, refusal)
                blocked.add(key)
                continue
            version = Version(req.epoch, entry.seq)
            flagged = (key, entry.seq) in notice
            if flagged or key in marks or log.marked:
                marked = marks.setdefault(key, dict(log.marked))
                _mark(marked, log.handles, entry.ops, version if flagged else None)
            if several and any(e.key == key and e.seq > entry.seq for e in req.entries):
                log = log.copy() if key not in work else log
                log.apply(entry.ops)
                log.floor = floor_after(log.floor, entry.ops)
                log.version = version
                work[key] = log
            writes.append(ProductWrite(key, version, ops=entry.ops))
            results[key] = EntryResult(EntryStatus.OK, entry.seq)
        promised = self._promise_write(req.epoch)
        commits = [(key, Version(req.epoch, seq)) for key, seq in req.commits]
        known, changed = self._knowledge(commits, marks)
        write = Write(promised=promised, products=tuple(writes), known=known, marks=changed)
        reply = Accepted(req.mid, req.epoch, results, durable=True)
        return Step(reply, None if write.empty() else write)

    def _knowledge(
        self,
        commits: list[tuple[ProductKey, Version]],
        marks: dict[ProductKey, dict[str, Version]],
    ) -> tuple[
        tuple[tuple[ProductKey, Version], ...],
        tuple[tuple[ProductKey, tuple[tuple[str, Version], ...]], ...],
    ]:
        """The known commits this message raises and the marked grants it changes (marks at
        or below the known commit are dropped: those grants are known committed)."""
        state = self.state
        known: dict[ProductKey, Version] = {}
        for key, version in commits:
            top = state.known.get(key, ZERO_VERSION)
            raised = known.get(key)
            if raised is not None and raised > top:
                top = raised
            if version > top:
                known[key] = version
        products = state.products
        for key in known:
            log = products.get(key)
            # A product without marks keeps none (at low load: every ACCEPT, nothing to do).
            if key not in marks and log is not None and log.marked:
                marks[key] = dict(log.marked)
        if not marks:
            return tuple(known.items()), ()
        changed = []
        for key, m in marks.items():
            top = known.get(key) or self.state.known.get(key, ZERO_VERSION)
            kept = tuple((h, v) for h, v in m.items() if v > top)
            log = self.state.products.get(key)
            if kept != tuple((log.marked if log is not None else {}).items()):
                changed.append((key, kept))
        return tuple(known.items()), tuple(changed)

    def _check_ops(self, key: ProductKey, log: ProductLog, ops: tuple[Op, ...]) -> str:
        """Why this backend refuses the entry's ops on ``log`` ("" if it takes them): a
        malformed grant, a grant that breaks the exclusive rule, or one that takes the count
        (`SeatCount`, with access modes) above this copy's LQ. Works on a trial of the log's
        running count: a cost per op, not per handle held (issue 17); the log is unchanged."""
        count = log.count.trial()
        table = log.handles
        quantity = self.licenses[key].quantity if key in self.licenses else 0
        added: dict[str, HandleRecord] = {}  # handles this entry grants
        gone: set[str] = set()  # handles of the table this entry releases
        for op in ops:
            if isinstance(op, Floor):
                continue  # floors only rise; a copy below them is refused from the next entry
            if isinstance(op, Grant):
                rec = op.record
                if rec.key != key or rec.seats < 1:
                    return f"malformed grant {rec.handle} for product {key}"
                if rec.handle in added or (rec.handle in table and rec.handle not in gone):
                    continue
                why = count.conflict(rec.mode)  # the exclusive rule, as admission has it
                if why:
                    return f"grant {rec.handle} ({rec.mode.value}) refused: {why}"
                added[rec.handle] = rec
                count.add(rec)
                if count.total > quantity:
                    return (
                        f"grant {rec.handle} would take {count.total} seats, "
                        f"above this copy's LQ {quantity}"
                    )
            elif op.handle in added:
                count.remove(added.pop(op.handle))
            elif op.handle in table and op.handle not in gone:
                gone.add(op.handle)
                count.remove(table[op.handle])
        return ""

    def _snapshot(self, req: Snapshot) -> Step:
        results: dict[ProductKey, EntryResult] = {}
        writes: list[ProductWrite] = []
        marks: dict[ProductKey, dict[str, Version]] = {}
        for entry in req.entries:
            key = entry.key
            current = self.state.products.get(key, ProductLog())
            have = current.version
            if have.epoch == req.epoch and entry.seq <= have.seq:
                results[key] = EntryResult(EntryStatus.OK, have.seq)  # stale or duplicate
                continue
            if entry.base is not None:
                # The leader adopted this backend's own table at `base`: keep it, relabelled.
                # A table at another version (wiped, restored) is not the one it adopted.
                if entry.base != have:
                    why = f"snapshot by reference to {entry.base}, this backend holds {have}"
                    results[key] = EntryResult(EntryStatus.REFUSED, have.seq, why)
                    continue
                refusal = "" if key in self.licenses else self._license_refusal(key)
                if refusal:
                    results[key] = EntryResult(EntryStatus.REFUSED, have.seq, refusal)
                    continue
                version = Version(req.epoch, entry.seq)
                writes.append(ProductWrite(key, version, floor=entry.floor))
                results[key] = EntryResult(EntryStatus.OK, entry.seq)
                continue  # the same table: every mark stays
            # Committed state is recorded with any copy, also above its LQ: this backend's
            # acknowledgement commits nothing new (the leader sends it at a committed seq).
            # So is a table that adds no handle to this backend's: it only records releases.
            adds = any(current.handles.get(r.handle) != r for r in entry.handles)
            recorded = key in self.licenses and (req.committed or not adds)
            refusal = "" if recorded else self._license_refusal(key)
            if not refusal:
                if any(r.key != key or r.seats < 1 for r in entry.handles):
                    refusal = "malformed snapshot"
                elif not recorded:
                    new = seat_count({r.handle: r for r in entry.handles}.values())
                    limit = max(self.licenses[key].quantity, current.seats())
                    if new > limit:
                        refusal = f"snapshot holds {new} seats, above this copy's LQ"
            if refusal:
                results[key] = EntryResult(EntryStatus.REFUSED, have.seq, refusal)
                continue
            version = Version(req.epoch, entry.seq)
            writes.append(
                ProductWrite(key, version, replace=tuple(entry.handles), floor=entry.floor)
            )
            if current.marked:  # a handle keeps its mark where the snapshot keeps its record
                table = {r.handle: r for r in entry.handles}
                marks[key] = {
                    h: v for h, v in current.marked.items() if table.get(h) == current.handles[h]
                }
            results[key] = EntryResult(EntryStatus.OK, entry.seq)
        # A wiped backend is caught up (its promise counts, I10) only by a snapshot it took
        # whole: one with a refused entry left it without that product's state.
        whole = all(r.status == EntryStatus.OK for r in results.values())
        # A committed snapshot is sent at the leader's committed seq: its version is known.
        commits = (
            [
                (e.key, Version(req.epoch, e.seq))
                for e in req.entries
                if results[e.key].status == EntryStatus.OK
            ]
            if req.committed
            else []
        )
        known, changed = self._knowledge(commits, marks)
        write = Write(
            promised=self._promise_write(req.epoch),
            caught_up=None if self.state.caught_up or not whole else True,
            products=tuple(writes),
            known=known,
            marks=changed,
        )
        reply = Accepted(req.mid, req.epoch, results, durable=True)
        return Step(reply, None if write.empty() else write)

    def _crypt_call(self, req: Crypt) -> Step:
        log = self.state.products.get(req.key)
        rec = log.handles.get(req.handle) if log else None
        # The same answer for a handle held by another key as for none: no oracle.
        if rec is None or rec.client_id != req.client_id or rec.owner != req.owner:
            return Step(
                CryptResult(req.mid, False, error="UNKNOWN_HANDLE", message="handle not held here")
            )
        refusal = self._license_refusal(req.key)
        if refusal or self._crypt is None:
            return Step(
                CryptResult(req.mid, False, error="QUORUM_LOST", message=refusal or "no crypto")
            )
        try:
            out = self._crypt(req.key, req.operation, req.data)
        except (ValueError, KeyError) as exc:
            return Step(CryptResult(req.mid, False, error="BAD_REQUEST", message=str(exc)))
        return Step(CryptResult(req.mid, True, data=out))


def _mark(
    marked: dict[str, Version],
    table: Mapping[str, HandleRecord],
    ops: tuple[Op, ...],
    version: Version | None,
) -> None:
    """Update `marked` for an entry applied to `table`: its new grants are marked with its
    version when it is flagged `notice` (`version` not None); a released handle loses its
    mark."""
    for op in ops:
        if isinstance(op, Grant):
            if version is not None and op.record.handle not in table:
                marked.setdefault(op.record.handle, version)
        elif isinstance(op, Release):
            marked.pop(op.handle, None)
