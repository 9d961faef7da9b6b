"""Each product's replicated log: group commit, pipelining, commit by quorum.

See docs/design.md §5 (The log). A `Product` is one product's handle table and log in the
leader's epoch. Ops queue (`propose`) while an entry is uncommitted and go together into the
next entry (`flush`, group commit); up to `PIPELINE` entries are in flight once
`PIPELINE_MIN_OPS` ops wait. An entry commits with two durable acks (`recommit`); only then
are the clients waiting on it answered (`reply_when`, `answer_overdue`). `next_message` is
what one backend lacks: a snapshot, the next entries, or a commit notice. `abort_grants`
aborts grants whose commit is in doubt and that a backend refused (docs/design.md §6): a
snapshot at the next seq without them supersedes the entries that hold them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tmr.errors import ErrorCode
from tmr.licensing.effective import QUORUM
from tmr.replication.backends import Backend
from tmr.replication.effects import ClientReply, Effects
from tmr.replication.messages import (
    Accept,
    Accepted,
    AcceptEntry,
    EntryStatus,
    Snapshot,
    SnapshotEntry,
)
from tmr.replication.types import (
    NO_FLOOR,
    Epoch,
    Floor,
    Grant,
    HandleRecord,
    Op,
    ProductKey,
    Release,
    SeatCount,
    Version,
    key_str,
)

MAX_ENTRY_OPS = 4096  # cap of ops in one log entry (keeps messages well under frame limits)
PIPELINE = 4  # uncommitted log entries per product, and ACCEPTs in flight per backend
# Untold commits a backend is sent in a commit notice of their own (when nothing else goes to
# it) although no update needs them: each keeps its product off `settled`, so every pump
# would visit it again until an ACCEPT carries it (after a takeover: every product).
NOTICE_BATCH = 32
# While an entry of a product is uncommitted, the next one is formed only once this many ops
# wait: smaller batches keep growing until the entry in flight commits. Every entry costs a
# message to and a durable commit on each backend, whatever its size; pipelining small entries
# spent that on ever smaller rounds (measured: 17 ops a round at 100 clients instead of 41,
# and about 10 % more CPU per checkout on the servers and backends).
PIPELINE_MIN_OPS = 32


@dataclass
class Waiter:
    seq: int
    reply: ClientReply
    deadline: float  # answered QUORUM_LOST if its entry has not committed by then
    grant: str = ""  # the handle whose grant this reply announces (a checkout)


@dataclass
class Product:
    key: ProductKey
    seq: int = 0
    committed: int = -1
    handles: dict[str, HandleRecord] = field(default_factory=dict)
    log: dict[int, tuple[Op, ...]] = field(default_factory=dict)
    pending: list[Op] = field(default_factory=list)
    waiters: list[Waiter] = field(default_factory=list)
    grant_seq: dict[str, int] = field(default_factory=dict)
    releasing: dict[str, int] = field(default_factory=dict)  # handle -> seq of its release
    released_by: dict[str, tuple[str, str]] = field(default_factory=dict)  # (owner, client id)
    # Records of released handles whose release is not committed yet (for snapshots).
    pending_released: dict[str, HandleRecord] = field(default_factory=dict)
    # `seat_count` of `handles` (access modes), kept running as handles come and go
    count: SeatCount = field(default_factory=SeatCount)
    floor: Floor = NO_FLOOR  # the replicated floors, with those of the pending ops
    floor_seq: int = 0  # the entry of the latest Floor op
    floor_committed: Floor = NO_FLOOR  # the floors in force (`floor` once floor_seq commits)
    # The table adopted at takeover is committed state: a promise said its version was
    # committed, so entry 0 goes out as a committed snapshot (recorded above a backend's LQ).
    adopted_committed: bool = False
    # Aborting grants in doubt (`abort_grants`, docs/design.md §6):
    formed: dict[int, float] = field(default_factory=dict)  # uncommitted seq -> when formed
    refused: dict[str, int] = field(default_factory=dict)  # backend -> seq of the entry it refused
    void: dict[int, int] = field(default_factory=dict)  # aborted seq -> committed seq then
    # The abort's snapshot (seq, table) until it commits: sent as a proposal.
    abort: tuple[int, tuple[HandleRecord, ...]] | None = None
    abort_ops: int = 0  # the ops the abort's snapshot commits (all but the aborted grants)
    # Entries formed during a license update (`update_under_way`) and sent flagged `notice`:
    # their grants are answered only once two backends durably know the entry committed
    # (`durable`), so a new leader may abort a grant of such an entry that no promise knows
    # committed (docs/design.md §6). Seqs above `durable` only.
    notice: set[int] = field(default_factory=set)
    durable: int = -1  # the highest seq two backends acknowledged knowing committed
    # The backends whose promise held the adopted table itself (at version `adopted_from`,
    # none aborted from it): entry 0 goes to them as a reference to their own table
    # (`SnapshotEntry.base`), not as the table. A backend that refuses it gets the table.
    adopted_from: Version | None = None
    holders: set[str] = field(default_factory=set)

    def seats(self) -> int:
        return self.count.total

    def add(self, rec: HandleRecord) -> None:
        old = self.handles.get(rec.handle)
        if old is not None:
            self.count.remove(old)
        self.count.add(rec)
        self.handles[rec.handle] = rec

    def adopt(self, table: Sequence[HandleRecord]) -> None:
        """The table adopted at takeover, as entry 0 (one pass, no per-handle calls)."""
        for rec in table:
            if rec.handle in self.handles:
                self.count.remove(self.handles[rec.handle])
            self.handles[rec.handle] = rec
            self.count.add(rec)
        self.grant_seq.update(dict.fromkeys(self.handles, 0))

    def pop(self, handle: str) -> HandleRecord:
        rec = self.handles.pop(handle)
        self.count.remove(rec)
        return rec

    def handles_committed(self) -> list[HandleRecord]:
        """The handle table as of the committed entry (entry 0 until that one commits):
        without grants that are not committed, with handles whose release is not."""
        upto = max(self.committed, 0)
        table = {**self.handles, **self.pending_released}
        return [r for h, r in table.items() if self.grant_seq.get(h, 0) <= upto]


def propose(p: Product, op: Op) -> int:
    """Queue an op; return the seq of the entry it will be committed in (each entry takes
    the next MAX_ENTRY_OPS pending ops, in order)."""
    p.pending.append(op)
    return p.seq + 1 + (len(p.pending) - 1) // MAX_ENTRY_OPS


def reply_when(
    p: Product, seq: int, reply: ClientReply, deadline: float, fx: Effects, grant: str = ""
) -> None:
    """Answer now if entry `seq` is committed, else once it commits (or at `deadline`).
    `grant`: the handle a checkout's reply announces (if its grant is aborted, `abort_grants`
    answers instead)."""
    if seq <= p.committed and not (grant and seq in p.notice):
        fx.replies.append(reply)
    else:
        p.waiters.append(Waiter(seq, reply, deadline, grant))


def answer_overdue(p: Product, now: float, message: Callable[[], str], fx: Effects) -> None:
    """Tell the clients whose deadline passed QUORUM_LOST, with `message()`."""
    if not p.waiters or p.waiters[0].deadline > now:
        return
    late = [w for w in p.waiters if w.deadline <= now]
    p.waiters = [w for w in p.waiters if w.deadline > now]
    text = message()
    for w in late:
        fx.replies.append(
            ClientReply(w.reply.token, w.reply.rid, error=ErrorCode.QUORUM_LOST, message=text)
        )


def fail_waiters(p: Product, code: ErrorCode, message: str, fx: Effects) -> None:
    for w in p.waiters:
        fx.replies.append(ClientReply(w.reply.token, w.reply.rid, error=code, message=message))
    p.waiters.clear()


def commit_state(p: Product, backends: Sequence[Backend]) -> str:
    """Per backend, why it does not help commit `p` (for QUORUM_LOST messages)."""
    out = []
    for b in backends:
        if not b.up:
            state = "down"
        elif b.refusal.get(p.key):
            state = f"refuses: {b.refusal[p.key]}"
        elif p.key not in b.licenses:
            state = "no copy"
        else:
            state = f"at {b.acked.get(p.key, '-')}"
        out.append(f"{b.name} {state}")
    return f"committed {p.committed}, last {p.seq}; " + ", ".join(out)


def update_under_way(p: Product, backends: Sequence[Backend]) -> bool:
    """The product holds more seats (its pending grants included) than some backend's
    valid copy allows: a license update is under way."""
    for x in backends:
        lic = x.licenses.get(p.key)
        if lic is not None and lic.valid and p.seats() > lic.quantity:
            return True
    return False


def flush(p: Product, now: float, update: bool = False) -> None:
    """Turn pending ops into the next log entry: at once if every entry is committed;
    behind uncommitted ones (at most PIPELINE) only with PIPELINE_MIN_OPS ops or more.
    `update`: a license update is under way; an entry with a grant is then flagged
    `notice` (see `Product.notice`)."""
    if not p.pending or p.committed < 0:
        return
    uncommitted = p.seq - p.committed
    if uncommitted >= PIPELINE or (uncommitted and len(p.pending) < PIPELINE_MIN_OPS):
        return
    ops, p.pending = tuple(p.pending[:MAX_ENTRY_OPS]), p.pending[MAX_ENTRY_OPS:]
    p.seq += 1
    p.log[p.seq] = ops
    p.formed[p.seq] = now
    if update and any(isinstance(op, Grant) for op in ops):
        p.notice.add(p.seq)


def recommit(p: Product, backends: Sequence[Backend], fx: Effects) -> tuple[int, list[str]]:
    """Commit what a quorum acknowledged: answer its waiters and trim the log. Returns the
    number of ops newly committed and the handles whose release committed (forgotten)."""
    acks = sorted((b.acked[p.key] for b in backends if p.key in b.acked), reverse=True)
    if len(acks) < QUORUM or acks[QUORUM - 1] <= p.committed:
        answer_durable(p, backends, fx)
        return 0, []
    new = acks[QUORUM - 1]
    ops = sum(len(p.log.get(s, ())) for s in range(max(p.committed + 1, 1), new + 1))
    p.committed = new
    ready = [w for w in p.waiters if w.seq <= new and not (w.grant and w.seq in p.notice)]
    if ready:
        p.waiters = [w for w in p.waiters if w.seq > new or (w.grant and w.seq in p.notice)]
        fx.replies.extend(w.reply for w in ready)
    gone = []
    for h, s in list(p.releasing.items()):
        if s <= new:
            del p.releasing[h]
            p.pending_released.pop(h, None)
            p.released_by.pop(h, None)
            p.grant_seq.pop(h, None)
            gone.append(h)
    for s in [s for s in p.formed if s <= new]:
        del p.formed[s]
    p.refused = {name: s for name, s in p.refused.items() if s > new}
    if p.abort is not None and p.abort[0] <= new:
        ops += p.abort_ops  # the abort's seq has no log entry: its ops commit here
        p.abort = None
    answer_durable(p, backends, fx)
    # Trim the log: entries every synced backend has are no longer needed for resends.
    floor = min(acks)
    for s in [s for s in p.log if s <= floor]:
        del p.log[s]
    return ops, gone


def answer_durable(p: Product, backends: Sequence[Backend], fx: Effects) -> None:
    """Raise `durable` to the committed seq two backends acknowledged knowing, and answer
    the grants of flagged entries it now covers (`Product.notice`)."""
    known = sorted((b.known[p.key] for b in backends if p.key in b.known), reverse=True)
    if len(known) < QUORUM or known[QUORUM - 1] <= p.durable:
        return
    p.durable = min(known[QUORUM - 1], p.committed)
    covered = {s for s in p.notice if s <= p.durable}
    if not covered:
        return
    p.notice -= covered
    ready = [w for w in p.waiters if w.seq in covered]
    if ready:
        p.waiters = [w for w in p.waiters if w.seq not in covered]
        fx.replies.extend(w.reply for w in ready)


def resume(
    b: Backend,
    products: dict[ProductKey, Product],
    versions: dict[ProductKey, Version],
    epoch: Epoch,
    keys: Iterable[ProductKey] | None = None,
) -> None:
    """A backend that was away resumes where its durable log (`versions`) is, if that is in
    this epoch's log; else it gets a snapshot. `keys`: only these products (None: all)."""
    some = products.items() if keys is None else ((k, products[k]) for k in keys if k in products)
    for key, p in some:
        v = versions.get(key)
        if (
            v is not None
            and v.epoch == epoch
            and v.seq <= p.seq
            and (v.seq == p.seq or (v.seq + 1) in p.log)
        ):
            b.acked[key] = max(b.acked.get(key, -1), v.seq)
        else:
            b.acked.pop(key, None)
        b.sent.pop(key, None)


def settled(p: Product, backends: Sequence[Backend]) -> bool:
    """Nothing of `p` to send to any backend until it changes: no op waiting, every entry
    committed, every backend told the commit and, if it holds a copy, holding the whole log
    and not refusing it, no grant of a flagged entry waiting for two backends to know its
    commit (`Product.notice`). A product that is not settled stays on the leader's pump list
    (`Leader._pump`)."""
    if p.pending or p.abort is not None or p.seq != p.committed or p.notice:
        return False
    key, seq = p.key, p.seq
    for b in backends:
        if b.told.get(key, -1) < seq or key in b.refusal:
            return False
        if key in b.licenses and b.acked.get(key) != seq:
            return False
    return True


def untold_only(p: Product, backends: Sequence[Backend]) -> bool:
    """`p` is not settled only because some backend was not told its last commit, and no
    license update makes that commit worth a notice of its own (`notify_commits`): a pump
    sends nothing for it until an ACCEPT goes to that backend anyway, or until NOTICE_BATCH
    untold commits make a notice. It changes only with a new op, a backend's answer or status
    about it, or a change of a backend's state, each of which puts it back on the leader's
    pump list (`Leader._dirty`, `Leader._sweep_next_pump`)."""
    if p.pending or p.abort is not None or p.seq != p.committed or p.notice:
        return False
    key, seq = p.key, p.seq
    for b in backends:
        if key in b.refusal or (key in b.licenses and b.acked.get(key) != seq):
            return False
    return not update_under_way(p, backends)


def notify_commits(
    products: dict[ProductKey, Product],
    backends: Sequence[Backend],
    commits: list[tuple[ProductKey, int]],
) -> bool:
    """Whether to tell a backend of these commits now, in a message of its own (else the
    next ACCEPT carries them). Only while a product holds more seats than some backend's
    valid copy allows (a license update under way): a new leader may then adopt a table
    that backend refuses as a proposal, and records only as committed state, which it
    knows to be so from a promise that was told (docs/design.md §6)."""
    for key, _ in commits:
        p = products[key]
        if update_under_way(p, backends) or any(s <= p.committed for s in p.notice):
            return True
    return False


def next_message(
    products: dict[ProductKey, Product],
    b: Backend,
    now: float,
    *,
    epoch: Epoch,
    first_snapshot: bool,
    below_floor: Callable[[Backend, ProductKey], str],
    notify: Callable[[list[tuple[ProductKey, int]]], bool],
    new_mid: Callable[[], int],
) -> tuple[Snapshot | Accept, str, dict[ProductKey, int]] | None:
    """What backend `b` lacks, as one message: a snapshot, or the next entries (pipelined),
    or a commit notice; with its kind and the seq sent per product (None: nothing now)."""
    snap: list[SnapshotEntry] = []  # committed state
    proposals: list[SnapshotEntry] = []  # entry 0 of a takeover or an abort: not committed
    entries: list[AcceptEntry] = []
    notice: list[tuple[ProductKey, int]] = []  # entries sent whose grants wait for `durable`
    sent: dict[ProductKey, int] = {}
    commits: list[tuple[ProductKey, int]] = []  # committed seqs it was not told yet
    for p in products.values():
        if p.committed > b.told.get(p.key, -1):
            commits.append((p.key, p.committed))
        # Also a backend whose copy is not valid (expired): it records releases and
        # committed state, and refuses grants.
        if p.key not in b.licenses or now < b.refused_until.get(p.key, float("-inf")):
            continue
        acked = b.acked.get(p.key)
        if p.abort is not None and acked is not None and p.committed <= acked < p.abort[0]:
            # An abort's snapshot (`abort_grants`): the table without the aborted grants, at
            # the seq after them, a proposal each backend checks against its own LQ.
            seq, table = p.abort
            proposals.append(SnapshotEntry(p.key, seq, table, p.floor))
            continue
        if (
            acked is None
            or (acked < p.seq and (acked + 1) not in p.log)
            or (p.key in b.refusal and acked < p.committed)
        ):
            # Committed state only, then the newer entries one by one: a backend that
            # refused a grant above its own LQ (committed by others) records what a
            # quorum committed (also above its LQ) and still checks every grant it
            # would be a vote for. The floors go with it: a wiped backend is seeded.
            at = max(p.committed, 0)
            if p.committed < 0 and p.abort is None and b.name in p.holders:
                # Entry 0 is the adopted table (`handles_committed`), which it holds.
                entry = SnapshotEntry(p.key, 0, (), p.floor, base=p.adopted_from)
            elif p.committed < 0 and len(p.holders) >= QUORUM:
                # Entry 0 commits with the holders (the leader drops one that goes down or
                # refuses): this backend gets the table once it is committed state, and the
                # takeover does not wait for the table to be encoded for it.
                continue
            else:
                entry = SnapshotEntry(p.key, at, tuple(p.handles_committed()), p.floor)
            (snap if p.committed >= 0 or p.adopted_committed else proposals).append(entry)
            continue
        start = max(acked, b.sent.get(p.key, acked)) + 1
        if start > p.seq:
            continue  # it has every entry (most products on most turns: check this first)
        if below_floor(b, p.key):
            continue  # seeded: no entries until it holds a copy at or above the floors
        # Up to an aborted seq (`abort_grants`): the abort's snapshot follows once it has these.
        seqs = list(itertools.takewhile(p.log.__contains__, range(start, p.seq + 1)))
        entries.extend(AcceptEntry(p.key, seq, p.log[seq]) for seq in seqs)
        notice.extend((p.key, seq) for seq in seqs if seq in p.notice)
        if seqs:
            sent[p.key] = seqs[-1]
    if snap or proposals or first_snapshot:
        if b.inflight:
            return None  # a snapshot waits until the pipelined ACCEPTs are answered
        # One kind per message: the backend checks a proposal against its own LQ.
        committed = bool(snap)
        snap = snap or proposals
        msg = Snapshot(new_mid(), epoch, tuple(snap), committed=committed)
        return msg, "snapshot", {e.key: e.seq for e in snap}
    if entries and len(b.inflight) < PIPELINE:
        accept = Accept(new_mid(), epoch, tuple(entries), tuple(commits), tuple(notice))
        return accept, "accept", sent
    if commits and not b.inflight and (len(commits) >= NOTICE_BATCH or notify(commits)):
        # A commit notice (an ACCEPT without entries): see `notify_commits`; or many commits
        # untold since a takeover (`NOTICE_BATCH`), told once instead of checked each pump.
        return Accept(new_mid(), epoch, (), tuple(commits)), "accept", sent
    return None


def acked_seq(p: Product, seq: int) -> int:
    """The seq an acknowledgement of `seq` counts as: an aborted seq counts only as the
    committed seq before it (the abort's snapshot supersedes it, `abort_grants`)."""
    return p.void.get(seq, seq)


def take_results(
    b: Backend,
    msg: Accepted,
    kind: str | None,
    products: dict[ProductKey, Product],
    retry_at: float,
    fx: Effects,
) -> list[ProductKey]:
    """What `b` answered per product to an ACCEPT or SNAPSHOT (`kind`): how far it
    acknowledged each log, and the entries it refused (not asked again before `retry_at`,
    a `backend_refused` event when the reason is new). The products this leader holds among
    them (each has something new to send or commit)."""
    touched = []
    for key, res in msg.results.items():
        p = products.get(key)
        if p is not None:
            touched.append(key)
        if res.status == EntryStatus.OK:
            seq = acked_seq(p, res.seq) if p is not None else res.seq
            b.acked[key] = max(b.acked.get(key, -1), seq)
            b.refusal.pop(key, None)
            if p is not None and seq >= p.refused.get(b.name, seq + 1):
                del p.refused[b.name]  # it took the entry it had refused
            continue
        b.synced = False
        b.acked.pop(key, None)
        b.sent.pop(key, None)
        if res.status != EntryStatus.REFUSED:
            continue
        if p is not None:
            p.holders.discard(b.name)  # not the table it promised: send it whole
        if kind == "accept" and p is not None:
            # Its log is at res.seq in this epoch; it refused the entry after it.
            p.refused[b.name] = res.seq + 1
        b.refused_until[key] = retry_at
        if b.refusal.get(key) != res.reason:
            fx.events.append(
                {
                    "event": "backend_refused",
                    "backend": b.name,
                    "license": key_str(key),
                    "reason": res.reason,
                }
            )
        b.refusal[key] = res.reason
    return touched


def abort_due(
    p: Product,
    backends: Sequence[Backend],
    below_floor: Callable[[Backend, ProductKey], str],
    now: float,
    awake_since: float,
    wait: float,
) -> list[Backend]:
    """The backends whose refusals abort `p`'s grants in doubt now (empty: none): the up
    backends with a valid copy (not below the floor) that refused an entry after the
    committed one, when the others are too few for a quorum, or the first uncommitted entry
    has waited `wait` (counted from `awake_since` at the earliest)."""
    if p.committed < 0 or p.seq <= p.committed or p.abort is not None:
        return []
    good = [b for b in backends if b.up and b.holds(p.key)]
    good = [b for b in good if not below_floor(b, p.key)]
    refusers = [b for b in good if p.refused.get(b.name, -1) > p.committed]
    if not refusers:
        return []
    waited = now - max(p.formed.get(p.committed + 1, now), awake_since)
    if len(good) - len(refusers) >= QUORUM and waited < wait:
        return []
    return refusers


def abort_grants(
    p: Product,
    refusers: Sequence[Backend],
    backends: Sequence[Backend],
    now: float,
    fx: Effects,
) -> dict[str, HandleRecord]:
    """Abort the uncommitted grants above the LQ of the backends that refused them (up, with
    a valid copy): propose, at the next seq, the committed table plus the uncommitted and
    pending ops without those grants (releases, floors and grants within that LQ kept, in
    order). Each refusing backend takes it (it adds no seat above its LQ beyond its own
    count), and it commits with any two backends.

    Safe because no client was told OK for an uncommitted grant: the aborted grants' waiting
    clients are told NO_LICENSE_AVAILABLE here (a `grants_aborted` event), and an
    acknowledgement of an aborted seq counts only as the committed seq (`acked_seq`), so
    none is answered later. The snapshot's higher seq supersedes the aborted entries even
    where a quorum accepted them: a new leader adopts the highest version among a quorum of
    promises, which includes a backend that took the snapshot if it committed. Returns the
    aborted handles (the caller forgets their request ids and leases); none: nothing done."""
    lq = min(b.licenses[p.key].quantity for b in refusers)
    base = p.committed
    table = {r.handle: r for r in p.handles_committed()}
    count = SeatCount(table.values())
    ops = [op for s in range(base + 1, p.seq + 1) for op in p.log.get(s, ())] + p.pending
    aborted: dict[str, HandleRecord] = {}
    for op in ops:
        if isinstance(op, Grant):
            rec = op.record
            if rec.handle in table:
                continue
            more = count.increase(rec.mode, rec.station, rec.seats)
            if count.conflict(rec.mode) or count.total + more > lq:
                aborted[rec.handle] = rec
                continue
            table[rec.handle] = rec
            count.add(rec)
        elif isinstance(op, Release):
            gone = table.pop(op.handle, None)
            if gone is not None:
                count.remove(gone)
    used = count.total
    if not aborted:
        return aborted
    seq = p.seq + 1
    flagged = {s for s in p.notice if s > base}
    if flagged:  # its grants were answered only once durably known committed: so are they now
        p.notice = (p.notice - flagged) | {seq}
    for s in range(base + 1, p.seq + 1):
        p.void[s] = base
        p.log.pop(s, None)
        p.formed.pop(s, None)
    p.pending = []
    p.seq = seq
    p.formed[seq] = now
    p.abort = (seq, tuple(table.values()))
    p.abort_ops = sum(
        1 for op in ops if not (isinstance(op, Grant) and op.record.handle in aborted)
    )
    for h in aborted:
        p.pop(h)
        p.grant_seq.pop(h, None)
    p.grant_seq.update({h: seq for h, s in p.grant_seq.items() if s > base})
    p.releasing.update({h: seq for h, s in p.releasing.items() if s > base})
    if p.floor_seq > base:
        p.floor_seq = seq
    for b in backends:
        b.sent.pop(p.key, None)
        acked = b.acked.get(p.key)
        if acked is not None and acked > base:
            b.acked[p.key] = base
    for b in refusers:
        # It refused the entry after its log's seq in this epoch: it holds that seq.
        if p.refused[b.name] - 1 >= base:
            b.acked[p.key] = max(b.acked.get(p.key, -1), base)
        b.refused_until.pop(p.key, None)
    p.refused.clear()
    names = ", ".join(b.name for b in refusers)
    text = (
        f"no seat of {key_str(p.key)} for this request: {names} refused it (LQ {lq} there, "
        f"{used} seats in use) and the backends with a higher LQ did not acknowledge it "
        f"({commit_state(p, backends)})"
    )
    keep = []
    for w in p.waiters:
        if w.grant in aborted:
            fx.replies.append(
                ClientReply(
                    w.reply.token, w.reply.rid, error=ErrorCode.NO_LICENSE_AVAILABLE, message=text
                )
            )
            continue
        w.seq = seq if w.seq > base else w.seq
        keep.append(w)
    p.waiters = keep
    fx.events.append(
        {
            "event": "grants_aborted",
            "license": key_str(p.key),
            "handles": sorted(aborted),
            "seq": seq,
            "refused_by": [b.name for b in refusers],
        }
    )
    return aborted
