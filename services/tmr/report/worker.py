"""The TMR server's usage-report worker: a background thread with its own backend links.

The poll loop must never wait on a report: `UsageWorker.submit` queues a `UsageJob` (with
what the loop knows: which backends are up, the licenses' LQ, the client's routing token);
the thread has the report made in the low-priority worker process (`tmr.report.offload`),
which reads each of those backends on its own CURVE link, merges and summarises the rows and
returns the encoded reply. The thread queues it and wakes the poll loop through an inproc
PAIR socket (`wake_socket`), and the loop sends the reply on the client socket with `take`.
Replication traffic never shares a socket with these queries.

A backend's rows come in chunks of at most `CHUNK_BYTES` (a chunked `UsageQuery`, answered
by `tmr.report.records.UsageReader`), one chunk in flight per backend: a backend's peer
socket and its ZeroMQ I/O thread, which also carry the replication traffic, never hold a
frame of megabytes, and the backends work only as fast as this process asks: after each
chunk it pauses as long as the chunk took (`PACE`).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, TypeVar

import zmq

from tmr.config import BackendRef
from tmr.ctl import encode_ctl
from tmr.errors import ErrorCode
from tmr.keys import NodeKeys
from tmr.logs import log
from tmr.protocol import peer_api
from tmr.protocol.client_api import ErrorReply, OkReply, Reply, UsageResult, encode_reply
from tmr.protocol.errors import ProtocolError
from tmr.replication.messages import (
    DenialQuery,
    DenialRecords,
    DenialRow,
    PeerError,
    UsageQuery,
    UsageRecords,
    UsageRow,
)
from tmr.replication.types import ProductKey
from tmr.report.denials import DenialLog
from tmr.report.offload import Offload, put_stop
from tmr.report.summary import (
    denial_breakdown,
    denial_counts,
    merge_denials,
    merge_rows,
    summarize,
)

QUERY_TIMEOUT = 5.0  # for each chunk
GRACE_MS = 100  # past a chunk's deadline, how long to look for its answer before giving up
CHUNK_BYTES = 256 * 1024  # the most a backend sends in one usage answer
# After each chunk, a pause PACE times as long as the chunk took: a report keeps a backend
# busy at most 1 / (1 + PACE) of the time (measured: docs/performance.md, usage reports).
PACE = 1.0
MAX_QUEUED = 16
ROW_LIMIT = 200_000  # usage rows per backend in one report; more: BAD_REQUEST (shorter window)
MAX_WINDOW = 400 * 86400.0  # the longest window a report may cover (seconds)
FLUSH_INTERVAL = 10.0
CTL_TOKEN = ("ctl",)  # the token of a report asked on the control socket (JSON answer)


@dataclass(frozen=True)
class UsageJob:
    token: Any  # the client's routing token, handed back with the reply
    rid: str
    since: float
    until: float
    backends: tuple[str, ...]  # the backends to ask (those up when the request came)
    quantities: dict[ProductKey, int] = field(default_factory=dict)
    down: tuple[str, ...] = ()  # the others: reported as not read
    # The up backends that keep denial records (schema 6, `Status.denials`): their records
    # give the report's denials (both servers'); none: this server's own counts (`DenialLog`).
    denial_backends: tuple[str, ...] = ()


MsgT = TypeVar("MsgT", UsageRecords, DenialRecords)


@dataclass
class _Pull(Generic[MsgT]):
    """One backend's chunks for one report, of either kind (usage rows, denial rows): what
    `UsageWorker._pull_all` keeps per backend. A kind says how to ask for a chunk, how to
    read its answer, and what to do with it; the loop (ask, pace, time out) is shared."""

    name: str
    socket: zmq.Socket[bytes]
    after: int = 0  # the record id the next chunk starts after
    mid: int = 0  # the query in flight
    deadline: float = 0.0  # its answer is due by then (monotonic)
    asked_at: float = 0.0  # when it was sent (monotonic)
    ask_at: float | None = None  # no query in flight: when to ask for the next chunk
    problem: str | None = None  # why this backend was given up (None: not given up)

    BAD_REPLY: ClassVar[tuple[str, str]]  # how an answer it cannot decode is logged: (event, level)

    def query(self, mid: int, job: UsageJob, row_limit: int) -> bytes:
        raise NotImplementedError

    def decode(self, frame: bytes) -> MsgT | PeerError:
        raise NotImplementedError

    def absorb(self, msg: MsgT, row_limit: int) -> int | None:
        """Take one chunk: the record id to ask the next chunk after, or None when this
        backend is done (its result kept, or `problem` set)."""
        raise NotImplementedError


@dataclass
class _UsagePull(_Pull[UsageRecords]):
    """The usage rows read so far from one backend (`UsageQuery` chunks)."""

    chunks: int = 0
    oldest: float | None = None
    rows: list[UsageRow] = field(default_factory=list)
    answer: UsageRecords | None = None  # once complete (or over the row limit)

    BAD_REPLY: ClassVar[tuple[str, str]] = ("usage_bad_reply", "warning")

    def query(self, mid: int, job: UsageJob, row_limit: int) -> bytes:
        return peer_api.encode_usage_query(
            UsageQuery(mid, job.since, job.until, row_limit, self.after, CHUNK_BYTES)
        )

    def decode(self, frame: bytes) -> UsageRecords | PeerError:
        return peer_api.decode_usage_reply(frame)

    def absorb(self, msg: UsageRecords, row_limit: int) -> int | None:
        if self.chunks == 0:
            self.oldest = msg.oldest  # the first chunk says how far back the record goes
        self.chunks += 1
        self.rows.extend(msg.rows)
        truncated = msg.truncated or len(self.rows) > row_limit
        if msg.next is not None and not truncated:
            return msg.next
        self.answer = UsageRecords(
            msg.mid, self.name, tuple(self.rows[:row_limit]), self.oldest, truncated
        )
        return None

    @property
    def over(self) -> bool:
        """More rows in the window than the row limit: the report is refused."""
        return self.answer is not None and self.answer.truncated


@dataclass
class _DenialPull(_Pull[DenialRecords]):
    """The denial rows read so far from one backend (`DenialQuery` chunks)."""

    rows: list[DenialRow] = field(default_factory=list)
    complete: bool = False

    # e.g. a late usage chunk on the same link, after a usage fetch that stopped early
    BAD_REPLY: ClassVar[tuple[str, str]] = ("denial_bad_reply", "debug")

    def query(self, mid: int, job: UsageJob, row_limit: int) -> bytes:
        return peer_api.encode_denial_query(
            DenialQuery(mid, job.since, job.until, self.after, CHUNK_BYTES)
        )

    def decode(self, frame: bytes) -> DenialRecords | PeerError:
        return peer_api.decode_denial_reply(frame)

    def absorb(self, msg: DenialRecords, row_limit: int) -> int | None:
        self.rows.extend(msg.rows)
        if len(self.rows) > row_limit:
            self.problem = f"more than {row_limit} denial rows: shorter window"
            return None
        if msg.next is None:
            self.complete = True
            return None
        return msg.next


class UsageWorker:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        server: str,
        backends: tuple[BackendRef, ...],
        node_keys: NodeKeys,
        denials: DenialLog,
        *,
        timeout: float = QUERY_TIMEOUT,
        clock: Callable[[], float] = time.time,
        row_limit: int = ROW_LIMIT,
    ) -> None:
        self.ctx = ctx
        self.server = server
        self.refs = {b.name: b for b in backends}
        self.node_keys = node_keys
        self.denials = denials
        self.timeout = timeout
        self.row_limit = row_limit
        self.clock = clock
        self._jobs: queue.Queue[UsageJob | None] = queue.Queue(MAX_QUEUED)
        self._done: queue.Queue[tuple[Any, str, bytes]] = queue.Queue()
        self._addr = f"inproc://tmr-usage-{id(self)}"
        self.wake_socket: zmq.Socket[bytes] = ctx.socket(zmq.PAIR)
        self.wake_socket.setsockopt(zmq.LINGER, 0)
        self.wake_socket.bind(self._addr)
        self._mids = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name="tmr-usage", daemon=True)
        self.offload = Offload()

    # ---------------------------------------------------------------- poll-loop side

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (pending jobs are dropped: their clients retry) and close."""
        if self._thread.is_alive():
            put_stop(self._jobs)
            self._thread.join(timeout=self.timeout + 2.0)
        self.offload.close()
        self.wake_socket.close(linger=0)

    def submit(self, job: UsageJob) -> bool:
        """Queue a report; False if too many are queued already."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            return False
        return True

    def take(self) -> list[tuple[Any, str, bytes]]:
        """Replies ready to send: (client token, request id, encoded reply). Call when
        `wake_socket` is readable."""
        while True:
            try:
                self.wake_socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    # ---------------------------------------------------------------- worker thread

    def _run(self) -> None:
        wake = self.ctx.socket(zmq.PAIR)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(self._addr)
        links: dict[str, zmq.Socket[bytes]] = {}
        last_flush = time.monotonic()
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=1.0)
                except queue.Empty:
                    job = None
                    if time.monotonic() - last_flush < FLUSH_INTERVAL:
                        continue
                else:
                    if job is None:
                        return
                if job is not None:
                    self._done.put((job.token, job.rid, self._offloaded_report(job)))
                    wake.send(b"", zmq.NOBLOCK)
                if time.monotonic() - last_flush >= FLUSH_INTERVAL:
                    self.denials.flush(self.clock())
                    last_flush = time.monotonic()
        finally:
            self.denials.flush(self.clock())
            for s in links.values():
                s.close(linger=0)
            wake.close(linger=0)

    def _offloaded_report(self, job: UsageJob) -> bytes:
        """The encoded answer to ``job``, computed in the low-priority worker process
        (`tmr.report.offload`): the server's poll loop never waits for this thread."""
        try:
            return self.offload.run(
                remote_report,
                self.server,
                tuple(self.refs.values()),
                self.node_keys,
                replace(job, token=None),
                self.denials.counts(job.since, job.until),
                self.timeout,
                self.row_limit,
                job.token == CTL_TOKEN,
            )
        except Exception as exc:  # a bug, or a worker process that died: answer anyway
            log("usage_report_failed", level="error", error=repr(exc))
            return encode_for(
                job.token, ErrorReply(job.rid, ErrorCode.BAD_REQUEST, "usage report failed")
            )

    def _link(self, links: dict[str, zmq.Socket[bytes]], name: str) -> zmq.Socket[bytes]:
        s = links.get(name)
        if s is None:
            ref = self.refs[name]
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.IMMEDIATE, 1)
            s.setsockopt(zmq.RECONNECT_IVL, 100)
            s.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            s.setsockopt(zmq.MAXMSGSIZE, peer_api.MAX_PEER_FRAME)
            s.setsockopt(zmq.CURVE_SERVERKEY, ref.public_key.encode())
            s.setsockopt(zmq.CURVE_PUBLICKEY, self.node_keys.public.encode())
            s.setsockopt(zmq.CURVE_SECRETKEY, self.node_keys.secret.encode())
            s.connect(ref.endpoint)
            links[name] = s
        return s

    def fetch(
        self, job: UsageJob, links: dict[str, zmq.Socket[bytes]]
    ) -> tuple[dict[str, UsageRecords], dict[str, str]]:
        """Ask the job's backends for their usage rows, chunk by chunk (`_pull_all`);
        (answers by backend, problems by backend). A backend whose window holds more than the
        row limit (its first chunk says so, or the rows read pass it) ends the fetch: the
        report is refused, and the other backends are not read further. A backend that
        answers a chunked query with all its rows at once (a version before chunks) is read
        as well."""
        pulls = [
            _UsagePull(name, self._link(links, name)) for name in job.backends if name in self.refs
        ]
        self._pull_all(job, pulls, stop=lambda: any(p.over for p in pulls))
        problems = {name: "down" for name in job.down}
        problems.update({p.name: p.problem for p in pulls if p.problem is not None})
        return {p.name: p.answer for p in pulls if p.answer is not None}, problems

    def fetch_denials(
        self, job: UsageJob, links: dict[str, zmq.Socket[bytes]]
    ) -> tuple[dict[str, list[DenialRow]], dict[str, str]]:
        """The denial rows of the job's window from each of ``job.denial_backends``, chunk by
        chunk (`_pull_all`); (rows by backend, problems by backend)."""
        pulls = [
            _DenialPull(name, self._link(links, name))
            for name in job.denial_backends
            if name in self.refs
        ]
        self._pull_all(job, pulls, stop=lambda: False)
        problems = {p.name: p.problem for p in pulls if p.problem is not None}
        return {p.name: p.rows for p in pulls if p.complete}, problems

    def _pull_all(
        self, job: UsageJob, pulls: Sequence[_Pull[Any]], stop: Callable[[], bool]
    ) -> None:
        """Read every pull's backend to its end, in parallel: one chunk of at most CHUNK_BYTES
        in flight per backend (no large frame on a backend's peer socket), the next one asked
        for after a pause (`PACE`: a report never keeps a backend busy). Each pull ends with
        its result or its `problem`; ``stop()`` true ends them all (the rest left as they are).
        """
        live: dict[str, _Pull[Any]] = {}
        poller = zmq.Poller()
        for pull in pulls:
            # A link that is not connected yet gets a moment (IMMEDIATE queues nothing).
            deadline = time.monotonic() + min(1.0, self.timeout)
            while not self._ask(job, pull):
                if time.monotonic() > deadline:
                    pull.problem = "not connected"
                    break
                time.sleep(0.02)
            if pull.problem is None:
                live[pull.name] = pull
                poller.register(pull.socket, zmq.POLLIN)

        def end(pull: _Pull[Any], problem: str | None = None) -> None:
            if problem is not None:
                pull.problem = problem
            poller.unregister(live.pop(pull.name).socket)

        while live and not stop():
            now = time.monotonic()
            for pull in list(live.values()):
                # Past the deadline, read what came first: on a busy host this low-priority
                # process may be the one that was slow, the answer waiting since long before
                # (GRACE: its I/O thread, as slow, may not have handed it to the socket yet).
                due = pull.ask_at is None and pull.deadline <= now
                if due and pull.socket.poll(GRACE_MS) and self._receive(pull):
                    end(pull)
                elif pull.ask_at is not None and pull.ask_at <= now:
                    if not self._ask(job, pull):
                        end(pull, "the link went down between two chunks")
                elif due and pull.ask_at is None:  # nothing came (or only the next ask's time)
                    end(pull, f"no answer within {self.timeout:g} s")
            if not live or stop():
                break
            wait = min(p.deadline if p.ask_at is None else p.ask_at for p in live.values())
            for s, _ in poller.poll(int(max(0.0, wait - time.monotonic()) * 1000) + 1):
                pull = next(p for p in live.values() if p.socket is s)
                if self._receive(pull):
                    end(pull)

    def _ask(self, job: UsageJob, pull: _Pull[Any]) -> bool:
        """Send the query for ``pull``'s next chunk; False if the link cannot take it yet."""
        mid = next(self._mids)
        try:
            pull.socket.send(pull.query(mid, job, self.row_limit), zmq.NOBLOCK)
        except zmq.Again:
            return False
        pull.mid, pull.ask_at = mid, None
        pull.asked_at = time.monotonic()
        pull.deadline = pull.asked_at + self.timeout
        return True

    def _receive(self, pull: _Pull[Any]) -> bool:
        """Read what ``pull``'s link has; True once the backend's answer is complete or it
        failed (``pull.problem``)."""
        while True:
            try:
                frames = pull.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return False
            try:
                msg = pull.decode(frames[-1])
            except ProtocolError as exc:
                event, level = pull.BAD_REPLY
                log(event, level=level, backend=pull.name, error=exc.message)
                continue
            if msg.mid != pull.mid:
                continue  # a late answer to an earlier query
            if isinstance(msg, PeerError):
                pull.problem = msg.message
                return True
            after = pull.absorb(msg, self.row_limit)
            if after is None:
                return True
            pull.after = after
            # Paced: the next chunk is asked for after a pause as long as this one took
            # (asked, read, sent, decoded), so a report keeps a backend busy at most about
            # half the time, less on a busy host, where chunks take longer.
            now = time.monotonic()
            pull.ask_at = now + PACE * (now - pull.asked_at)
            return False

    def report(
        self,
        job: UsageJob,
        links: dict[str, zmq.Socket[bytes]],
        denials: dict[ProductKey, int] | None = None,
    ) -> Reply:
        """The report for ``job`` (``denials``: the denial counts of its window, default:
        this server's denial record)."""
        answers, problems = self.fetch(job, links)
        full = sorted(name for name, a in answers.items() if a.truncated)
        if full:
            return ErrorReply(
                job.rid,
                ErrorCode.BAD_REQUEST,
                f"the window holds more than {self.row_limit} usage rows on {', '.join(full)}: "
                "ask for a shorter window",
            )
        if not answers:
            why = "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())) or "none up"
            return ErrorReply(
                job.rid, ErrorCode.QUORUM_LOST, f"no backend answered the usage query ({why})"
            )
        denial_rows: list[DenialRow] | None = None
        denial_problems: dict[str, str] = {}
        if job.denial_backends:
            read, denial_problems = self.fetch_denials(job, links)
            if read:
                denial_rows = merge_denials(read.values())
        # The merged record reaches back as far as the backend that kept the most (None:
        # a backend that never trimmed its record has all of it).
        olds = [a.oldest for a in answers.values()]
        oldest = None if None in olds else min(o for o in olds if o is not None)
        now = self.clock()
        licenses = summarize(
            merge_rows(a.rows for a in answers.values()),
            job.since,
            job.until,
            now=now,
            denials=(
                denial_counts(denial_rows, job.since, job.until)
                if denial_rows is not None
                else self.denials.counts(job.since, job.until)
                if denials is None
                else denials
            ),
            quantities=job.quantities,
            oldest=oldest,
        )
        sources = [
            {"backend": n, "rows": len(a.rows), "oldest": a.oldest, "truncated": a.truncated}
            for n, a in sorted(answers.items())
        ]
        extra: dict[str, Any] = {
            "generated_at": now,
            "complete": oldest is None or oldest <= job.since,
            "record_starts": oldest,
            "unavailable": [{"backend": n, "reason": r} for n, r in sorted(problems.items())],
        }
        if denial_rows is None:
            extra["denials_counted_by"] = self.server
        else:
            groups, cut = denial_breakdown(denial_rows, job.since, job.until)
            extra["denials"] = groups
            extra["denials_truncated"] = cut
            extra["denials_total"] = sum(int(g["denials"]) for g in groups)
            extra["denials_read_from"] = sorted(set(job.denial_backends) - set(denial_problems))
            extra["denials_unavailable"] = [
                {"backend": n, "reason": r} for n, r in sorted(denial_problems.items())
            ]
        result = UsageResult(
            job.since, job.until, self.server, tuple(licenses), tuple(sources), extra
        )
        return OkReply(job.rid, result)


def encode_for(token: Any, reply: Reply) -> bytes:
    """The reply as the asker reads it: JSON for the control socket, else the client API."""
    if token != CTL_TOKEN:
        return encode_reply(reply)
    if isinstance(reply, ErrorReply):
        return encode_ctl({"ok": False, "code": reply.error, "error": reply.message})
    result = reply.result
    if not isinstance(result, UsageResult):
        return encode_ctl({"ok": False, "code": "INTERNAL", "error": "not a usage result"})
    return encode_ctl(
        {
            "ok": True,
            "since": result.since,
            "until": result.until,
            "server": result.server,
            "licenses": [dict(m) for m in result.licenses],
            "sources": [dict(m) for m in result.sources],
            "extra": dict(result.extra),
        }
    )


# In the worker process: one worker object and its backend links, kept between reports.
_REMOTE: dict[str, tuple[UsageWorker, dict[str, zmq.Socket[bytes]]]] = {}


def remote_report(
    server: str,
    refs: tuple[BackendRef, ...],
    node_keys: NodeKeys,
    job: UsageJob,
    denials: dict[ProductKey, int],
    timeout: float,
    row_limit: int,
    for_ctl: bool,
) -> bytes:
    """(In the worker process.) `UsageWorker.report` on links of this process, encoded."""
    if server not in _REMOTE:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        worker = UsageWorker(
            ctx, server, refs, node_keys, DenialLog(None, 1.0), timeout=timeout, row_limit=row_limit
        )
        _REMOTE[server] = (worker, {})
    worker, links = _REMOTE[server]
    try:
        reply: Reply = worker.report(job, links, denials)
    except Exception as exc:
        log("usage_report_failed", level="error", error=repr(exc))
        reply = ErrorReply(job.rid, ErrorCode.BAD_REQUEST, "usage report failed")
    return encode_for(CTL_TOKEN if for_ctl else None, reply)
