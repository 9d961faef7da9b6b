"""The load generator: N concurrent SDK clients checking seats out and in, with a history.

Each worker thread has its own `tmr.client.Client` and loops until the run's deadline:

    checkout (1..seats_max seats) -> hold (0..hold_max s; the SDK heartbeats meanwhile)
    -> heartbeat -> release              or, when the checkout is refused: think, retry

Every operation is recorded in the history file (`tmr.workload.history`) with its start and
end times and its outcome; so are the handles the SDK reports lost. The random choices are
drawn from one `random.Random` per worker seeded from the run's seed, so a run can be
repeated (the timing of the service, of course, cannot).

At the deadline the workers finish their current operation and release what they hold
(``at_end="release"``), or renew it one last time and leave it held without heartbeats
(``at_end="abandon"``), so that the handle table captured right after the run can be
compared with the history (invariant I7: each of those handles must still be there until its
lease runs out).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tmr.client import ApiError, Client, Handle, NodeKeys, Timeout
from tmr.errors import TmrError, UsageError
from tmr.protocol.client_api import CID_MAX, SEATS_MAX
from tmr.workload.checker import answered
from tmr.workload.history import (
    OK,
    UNKNOWN,
    EndRecord,
    HistoryWriter,
    OpRecord,
    RunHeader,
)

log = logging.getLogger("tmr.workload")

AT_END = ("release", "abandon")
# Time allowed after the deadline for the last operations (each bounded by the client
# timeout: the one in flight, a heartbeat and a release) and closing the clients.
CLOSE_MARGIN = 5.0


@dataclass
class WorkloadConfig:
    endpoints: list[str]
    server_key: str
    firm: int | None = None
    product: int | None = None
    clients: int = 20
    duration: float = 60.0
    seed: int = 0
    seats_max: int = 2
    hold_max: float = 5.0
    think_max: float = 0.5
    timeout: float = 10.0
    attempt_timeout: float = 0.5
    at_end: str = "release"
    progress_interval: float = 5.0
    client_keys: NodeKeys | None = None
    client_prefix: str | None = None

    def validate(self) -> None:
        if not self.endpoints:
            raise UsageError("no endpoint")
        if not 1 <= self.clients <= 1000:
            raise UsageError("--clients must be between 1 and 1000")
        if not self.duration > 0:
            raise UsageError("--duration must be positive")
        if not 1 <= self.seats_max <= SEATS_MAX:
            raise UsageError(f"--seats-max must be between 1 and {SEATS_MAX}")
        if self.hold_max < 0 or self.think_max < 0:
            raise UsageError("--hold-max and --think-max must be >= 0")
        if not (self.timeout > 0 and self.attempt_timeout > 0):
            raise UsageError("--timeout and --attempt-timeout must be positive")
        if self.at_end not in AT_END:
            raise UsageError(f"--at-end must be one of {', '.join(AT_END)}")
        if not self.progress_interval > 0:
            raise UsageError("--progress must be positive")


def default_client_prefix() -> str:
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-.")[:32] or "host"
    return f"wl-{host}-{os.getpid()}-{secrets.token_hex(2)}"


def outcome_of(exc: BaseException) -> tuple[str, str]:
    """(outcome, message) of a failed operation: a typed error code, or unknown."""
    if isinstance(exc, Timeout):
        return UNKNOWN, str(exc)
    if isinstance(exc, ApiError):
        return exc.code.value, str(exc)
    return UNKNOWN, f"{type(exc).__name__}: {exc}"


def lease_end(handle: Handle) -> float:
    """The end of the handle's lease as the client knows it (monotonic)."""
    return handle.last_renewal_sent + handle.lease


# ---------------------------------------------------------------------------- statistics


@dataclass
class RunStats:
    """Live counters of a run (read by the progress line and by tests)."""

    start_mono: float = 0.0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    held_handles: int = 0
    held_seats: int = 0
    last_ok_mono: float | None = None
    workers_done: int = 0
    crashed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, op: str, outcome: str = OK) -> int:
        with self.lock:
            return self.counts[(op, outcome)]

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            by_op: dict[str, dict[str, int]] = {}
            for (op, outcome), n in sorted(self.counts.items()):
                by_op.setdefault(op, {})[outcome] = n
            return {
                "ops": sum(self.counts.values()),
                "by_op": by_op,
                "held_handles": self.held_handles,
                "held_seats": self.held_seats,
                "crashed_workers": self.crashed,
            }

    def progress_line(self, now: float) -> str:
        with self.lock:
            c = self.counts
            denied = sum(
                n for (op, oc), n in c.items() if op == "checkout" and oc not in (OK, UNKNOWN)
            )
            last = "never" if self.last_ok_mono is None else f"{now - self.last_ok_mono:.1f} s ago"
            return (
                f"[{now - self.start_mono:6.1f} s] ops {sum(c.values())}"
                f" | checkout ok {c[('checkout', OK)]} refused {denied}"
                f" unknown {c[('checkout', UNKNOWN)]}"
                f" | heartbeat ok {c[('heartbeat', OK)]}"
                f" | release ok {c[('release', OK)]}"
                f" | lost {c[('lost', OK)]}"
                f" | held {self.held_seats} seat(s) in {self.held_handles} handle(s)"
                f" | last ok {last}"
            )


# ---------------------------------------------------------------------------- the run


class _Run:
    def __init__(self, cfg: WorkloadConfig, writer: HistoryWriter, stop: threading.Event):
        self.cfg = cfg
        self.writer = writer
        self.stop = stop
        self.stats = RunStats()
        self.done = threading.Condition()
        self.firm = 0
        self.product = 0

    def record(self, rec: OpRecord) -> None:
        self.writer.op(rec)
        with self.stats.lock:
            self.stats.counts[(rec.op, rec.outcome)] += 1
            if answered(rec):
                self.stats.last_ok_mono = rec.end_mono


class _Held:
    """One granted handle and whether its seats still count as held by the generator."""

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self.seats = handle.seats
        self.lost = threading.Event()
        self._done = False
        self._lock = threading.Lock()

    def finish(self) -> bool:
        """Mark the seats as no longer held (True the first time)."""
        with self._lock:
            first = not self._done
            self._done = True
            return first


class _Worker:
    def __init__(self, run: _Run, index: int, client_id: str) -> None:
        self.run = run
        self.cfg = run.cfg
        self.index = index
        self.client_id = client_id
        self.rng = random.Random(f"{self.cfg.seed}:{index}")
        self._n = 0
        self._n_lock = threading.Lock()
        self.client: Client | None = None

    # -- recording

    def _next_n(self) -> int:
        with self._n_lock:
            self._n += 1
            return self._n

    def _rec(
        self,
        op: str,
        start: tuple[float, float],
        outcome: str,
        message: str | None = None,
        *,
        handle: Handle | None = None,
        seats: int | None = None,
        lease_end_mono: float | None = None,
        end: tuple[float, float] | None = None,
    ) -> None:
        end_mono, end_wall = end if end is not None else (time.monotonic(), time.time())
        self.run.record(
            OpRecord(
                client=self.client_id,
                n=self._next_n(),
                op=op,
                start_mono=start[0],
                end_mono=end_mono,
                start_wall=start[1],
                end_wall=end_wall,
                outcome=outcome,
                message=message,
                handle=handle.id if handle is not None else None,
                rid=(handle.request_id or None) if handle is not None else None,
                seats=handle.seats if handle is not None else seats,
                lease=handle.lease if handle is not None else None,
                tmr_id=handle.tmr_id if handle is not None else None,
                lease_end_mono=lease_end_mono,
            )
        )

    def _release_seats(self, held: _Held) -> None:
        if held.finish():
            with self.run.stats.lock:
                self.run.stats.held_handles -= 1
                self.run.stats.held_seats -= held.seats

    # -- the loop

    def main(self) -> None:
        try:
            self.client = Client(
                self.cfg.endpoints,
                self.cfg.server_key,
                client_id=self.client_id,
                timeout=self.cfg.timeout,
                attempt_timeout=self.cfg.attempt_timeout,
                client_keys=self.cfg.client_keys,
            )
            while not self.run.stop.is_set():
                self.cycle(self.client)
        except Exception:
            log.exception("workload client %s failed", self.client_id)
            with self.run.stats.lock:
                self.run.stats.crashed += 1
        finally:
            if self.client is not None:
                self.client.close()  # holds nothing: every handle was released or abandoned
            with self.run.done:
                self.run.stats.workers_done += 1
                self.run.done.notify_all()

    def _wait(self, seconds: float, also: threading.Event | None = None) -> None:
        """Wait `seconds`, or less if the run stops (or `also` is set)."""
        deadline = time.monotonic() + seconds
        while not self.run.stop.is_set() and not (also is not None and also.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Either event ends the wait; poll `also` at a short interval.
            self.run.stop.wait(min(remaining, 0.05 if also is not None else remaining))

    def cycle(self, client: Client) -> None:
        cfg = self.cfg
        seats = self.rng.randint(1, cfg.seats_max)
        hold = self.rng.uniform(0.0, cfg.hold_max)
        think = self.rng.uniform(0.0, cfg.think_max)
        held = self.checkout(client, seats)
        if held is None:
            self._wait(think)
            return
        try:
            self._wait(hold, held.lost)
            if not held.handle.held:
                return  # lost: recorded by the callback
            self.heartbeat(held)
            if not held.handle.held:
                return
            if self.run.stop.is_set() and cfg.at_end == "abandon":
                self.abandon(held)
            else:
                self.release(held)
        except BaseException:
            # Never let Client.close() give the seats back unrecorded.
            if held.handle.held:
                self.abandon(held)
            raise

    # -- operations

    def checkout(self, client: Client, seats: int) -> _Held | None:
        box: list[_Held] = []
        start = (time.monotonic(), time.time())
        try:
            handle = client.checkout(
                self.run.firm, self.run.product, seats, on_lost=lambda h: self._on_lost(box, h)
            )
        except Exception as exc:  # typed errors, timeouts, malformed replies
            outcome, message = outcome_of(exc)
            self._rec("checkout", start, outcome, message, seats=seats)
            return None
        held = _Held(handle)
        box.append(held)
        with self.run.stats.lock:
            self.run.stats.held_handles += 1
            self.run.stats.held_seats += held.seats
        self._rec("checkout", start, OK, handle=handle, lease_end_mono=lease_end(handle))
        return held

    def _on_lost(self, box: list[_Held], handle: Handle) -> None:
        now = (time.monotonic(), time.time())
        self._rec(
            "lost",
            now,
            OK,
            "the server does not know the handle any more",
            handle=handle,
            lease_end_mono=lease_end(handle),
            end=now,
        )
        if box:
            box[0].lost.set()
            self._release_seats(box[0])

    def heartbeat(self, held: _Held) -> None:
        handle = held.handle
        before = lease_end(handle)
        start = (time.monotonic(), time.time())
        try:
            handle.heartbeat()
        except Exception as exc:  # typed errors, timeouts, malformed replies
            outcome, message = outcome_of(exc)
            self._rec("heartbeat", start, outcome, message, handle=handle, lease_end_mono=before)
            return
        self._rec("heartbeat", start, OK, handle=handle, lease_end_mono=lease_end(handle))

    def release(self, held: _Held) -> None:
        handle = held.handle
        before = lease_end(handle)
        start = (time.monotonic(), time.time())
        try:
            handle.release()
        except Exception as exc:  # typed errors, timeouts, malformed replies
            outcome, message = outcome_of(exc)
            self._rec("release", start, outcome, message, handle=handle, lease_end_mono=before)
        else:
            self._rec("release", start, OK, handle=handle, lease_end_mono=before)
        self._release_seats(held)

    def abandon(self, held: _Held) -> None:
        handle = held.handle
        handle.abandon()
        now = (time.monotonic(), time.time())
        self._rec(
            "abandon",
            now,
            OK,
            "left held without heartbeats: the lease frees it",
            handle=handle,
            lease_end_mono=lease_end(handle),
            end=now,
        )
        self._release_seats(held)


# ---------------------------------------------------------------------------- entry point


@dataclass
class RunResult:
    history: Path
    header: RunHeader
    stats: dict[str, Any]
    stuck: int
    elapsed: float

    @property
    def exit_code(self) -> int:
        return 1 if self.stuck else 0


def _preflight(cfg: WorkloadConfig, say: Callable[[str], None]) -> tuple[int, int, Any]:
    """(firm, product, the product's license entry or None) from the service's list."""
    entry = None
    firm, product = cfg.firm, cfg.product
    try:
        with Client(
            cfg.endpoints,
            cfg.server_key,
            timeout=cfg.timeout,
            attempt_timeout=cfg.attempt_timeout,
            client_keys=cfg.client_keys,
        ) as client:
            licenses = client.list_licenses().licenses
    except TmrError as exc:
        if firm is None or product is None:
            raise UsageError(
                f"cannot list the licenses to pick --firm/--product: {exc.code}: {exc}"
            ) from None
        say(f"warning: cannot list the licenses ({exc.code}: {exc}); going on")
        return firm, product, None
    if firm is None or product is None:
        matching = [
            e
            for e in licenses
            if (firm is None or e.firm == firm) and (product is None or e.product == product)
        ]
        if len(matching) != 1:
            raise UsageError(
                f"the service lists {len(matching)} matching license(s): give --firm and --product"
            )
        firm, product = matching[0].firm, matching[0].product
    for e in licenses:
        if (e.firm, e.product) == (firm, product):
            entry = {
                "quantity": e.quantity,
                "in_use": e.in_use,
                "tmr_id": e.tmr_id,
                "status": e.status,
            }
    if entry is None:
        say(f"warning: the service lists no license {firm}/{product}")
    return firm, product, entry


def run_workload(
    cfg: WorkloadConfig,
    out: str | os.PathLike[str],
    *,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
    stop: threading.Event | None = None,
    on_start: Callable[[RunStats], None] | None = None,
) -> RunResult:
    """Run the workload for `cfg.duration` seconds (or until `stop` is set) into `out`."""
    cfg.validate()
    stop = stop or threading.Event()
    prefix = cfg.client_prefix or default_client_prefix()
    ids = [f"{prefix}-{i:03d}" for i in range(cfg.clients)]
    if max(len(i) for i in ids) > CID_MAX:
        raise UsageError(f"client id prefix too long (client ids are at most {CID_MAX} chars)")
    firm, product, entry = _preflight(cfg, say)
    lic = f"LQ {entry['quantity']}, {entry['in_use']} in use" if entry else "LQ unknown"
    say(
        f"workload: seed {cfg.seed} (repeat with --seed {cfg.seed}); {cfg.clients} clients, "
        f"{cfg.duration:g} s, license {firm}/{product} ({lic}), seats 1-{cfg.seats_max}, "
        f"hold 0-{cfg.hold_max:g} s, at end: {cfg.at_end}; history {out}"
    )
    with HistoryWriter(out) as writer:
        run = _Run(cfg, writer, stop)
        run.firm, run.product = firm, product
        start_mono, start_wall = time.monotonic(), time.time()
        header = RunHeader(
            seed=cfg.seed,
            clients=cfg.clients,
            duration=cfg.duration,
            firm=firm,
            product=product,
            seats_max=cfg.seats_max,
            hold_max=cfg.hold_max,
            endpoints=tuple(cfg.endpoints),
            start_mono=start_mono,
            start_wall=start_wall,
            host=socket.gethostname(),
            pid=os.getpid(),
            at_end=cfg.at_end,
            license=entry,
        )
        writer.header(header)
        run.stats.start_mono = start_mono
        workers = [_Worker(run, i, cid) for i, cid in enumerate(ids)]
        threads = [
            threading.Thread(target=w.main, name=f"workload-{w.index}", daemon=True)
            for w in workers
        ]
        for t in threads:
            t.start()
        if on_start is not None:
            on_start(run.stats)
        deadline = start_mono + cfg.duration
        give_up = deadline + 3 * cfg.timeout + CLOSE_MARGIN
        next_progress = start_mono + cfg.progress_interval
        with run.done:
            while run.stats.workers_done < len(threads):
                now = time.monotonic()
                if now >= deadline and not stop.is_set():
                    stop.set()
                if now >= next_progress:
                    say(run.stats.progress_line(now))
                    next_progress = now + cfg.progress_interval
                if now >= give_up:
                    break
                wake = min(next_progress, give_up if stop.is_set() else deadline)
                run.done.wait(max(0.0, min(wake - now, 0.5)))
            stuck = len(threads) - run.stats.workers_done
        stop.set()
        end_mono, end_wall = time.monotonic(), time.time()
        writer.end(EndRecord(end_mono, end_wall, writer.ops, stuck))
    stats = run.stats.snapshot()
    say(run.stats.progress_line(end_mono).replace("ops", "done: ops", 1))
    if stuck:
        say(f"error: {stuck} client(s) did not finish within {give_up - deadline:.0f} s")
    return RunResult(Path(out), header, stats, stuck, end_mono - start_mono)
