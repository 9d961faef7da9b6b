"""keepalived's VRRP state changes as `promote` / `demote`, from one resident process.

keepalived writes one line per state change of a VRRP instance into its notify FIFO
(``vrrp_notify_fifo``), e.g. ``INSTANCE "TMR" MASTER 100``, and starts the reader of that
FIFO once, when it starts (``vrrp_notify_fifo_script``, given the FIFO's path as its last
argument). `tmr server vrrp-notify` is that reader: it maps MASTER to ``promote`` and
BACKUP, FAULT, STOP and DELETED to ``demote`` on the TMR server's control socket, with no
process started per transition (a `tmr ctl` process costs 0.1 s on an idle host and up to
0.9 s on a loaded one; issue 17, docs/performance.md "Failover on the VIP").

- The lines are handled in the order keepalived wrote them (notify scripts, one process each,
  can overtake one another); when several are waiting, the newest state of the instance wins.
- Each state is written to the state file (``/run/tmr-keepalived/state``, read by the
  health script) before its command is sent.
- A command that fails (tmr-server restarting: no socket, no answer) is sent again every
  `retry_interval` seconds until it is answered, a newer state replaces it, or
  `retry_seconds` have passed. A promote that the server accepts but that must wait (another
  server still looks alive) is answered at once: the server waits by itself
  (`tmr.replication.leader`).
- Nothing in a line or an answer ends the reader (keepalived does not start it again; a dead
  reader would leave the state file and the VIP's server behind): such errors are logged and
  the command counts as failed.
- While it runs it holds an exclusive `flock` on the lock file (``--lock-file``,
  ``/run/tmr-keepalived/notify.lock``), which the kernel drops when the process ends however
  it ends (kill -9 included): the health script takes the lock to learn that the reader is
  gone, and then reads the VRRP state from the VIP instead of the stale state file, so a host
  that becomes MASTER without a reader still promotes its server (`tmr-health.sh`).
- keepalived sends SIGTERM when it reloads or stops, then (stop) writes STOP and closes the
  FIFO: the reader goes on reading until the FIFO is closed or `STOP_GRACE` seconds have
  passed after the signal, and then ends, a command still being retried included (after a
  reload keepalived announces the states again to the new reader; after a stop the unit's
  `ExecStopPost` demotes): two readers never send at the same time.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from tmr.ctl import CtlError, ctl_request
from tmr.errors import TmrError

# the states keepalived writes for a VRRP instance, and the server's command for each
ACTIONS = {
    "MASTER": "promote",
    "BACKUP": "demote",
    "FAULT": "demote",
    "STOP": "demote",
    "DELETED": "demote",  # the instance left the configuration at a reload
}
KINDS = ("INSTANCE", "GROUP")
STOP_GRACE = 0.5  # seconds to keep reading after keepalived's SIGTERM
IDLE_WAKE = 1.0  # seconds: an idle reader wakes this often to notice a SIGTERM
MAX_LINE = 4096  # bytes: a longer line is not keepalived's
LOCK_WAIT = 2 * STOP_GRACE  # seconds a new reader waits for the old one's lock (a reload)
LOCK_POLL = 0.02  # seconds between two tries of the lock


class NotifyLineError(TmrError):
    """A FIFO line that is not a keepalived VRRP notification."""


@dataclass(frozen=True)
class Transition:
    """One line of keepalived's notify FIFO."""

    kind: str  # INSTANCE or GROUP
    name: str  # the vrrp_instance / vrrp_sync_group name
    state: str  # MASTER, BACKUP, FAULT, STOP, DELETED
    priority: int | None

    @property
    def action(self) -> str:
        """The control command for this state: ``promote`` or ``demote``."""
        return ACTIONS[self.state]


def parse_line(line: str) -> Transition | None:
    """A line of the FIFO as a `Transition`; None for a notification that is not about a
    VRRP instance or group (keepalived's checker writes ``VS`` / ``RS`` lines to the same
    kind of FIFO). Raises `NotifyLineError` for anything else."""
    text = line.strip()
    if not text:
        raise NotifyLineError("empty line")
    kind, _, rest = text.partition(" ")
    if kind in ("VS", "RS"):
        return None
    if kind not in KINDS:
        raise NotifyLineError(f"not a VRRP notification: {text[:80]!r}")
    rest = rest.strip()
    if not rest.startswith('"'):
        raise NotifyLineError(f"no quoted name: {text[:80]!r}")
    end = rest.find('"', 1)
    if end < 2:
        raise NotifyLineError(f"no quoted name: {text[:80]!r}")
    name = rest[1:end]
    fields = rest[end + 1 :].split()
    if not fields or fields[0] not in ACTIONS:
        raise NotifyLineError(f"unknown state in {text[:80]!r}")
    priority: int | None = None
    if len(fields) > 1:
        if not fields[1].isdigit() or len(fields[1]) > 3:
            raise NotifyLineError(f"bad priority in {text[:80]!r}")
        priority = int(fields[1])
    return Transition(kind, name, fields[0], priority)


Request = Callable[..., dict[str, Any]]
Logger = Callable[[str], None]


@dataclass
class _Pending:
    transition: Transition
    deadline: float  # monotonic: give the command up after this
    attempts: int = 0
    last_error: str = ""


class NotifyReader:
    """Reads the FIFO (an open file descriptor) and sends the commands; see the module."""

    def __init__(
        self,
        fd: int,
        socket: Path,
        *,
        instance: str | None = None,
        state_file: Path | None = None,
        retry_seconds: float = 15.0,
        retry_interval: float = 0.05,
        ctl_timeout: float = 2.0,
        request: Request = ctl_request,
        log: Logger = print,
        clock: Callable[[], float] = time.monotonic,
        on_wake: Callable[[], object] | None = None,
    ) -> None:
        if not (retry_seconds >= 0 and retry_interval > 0 and ctl_timeout > 0):
            raise ValueError("retry_seconds >= 0, retry_interval > 0 and ctl_timeout > 0")
        self._fd = fd
        self._socket = socket
        self._instance = instance
        self._state_file = state_file
        self._retry_seconds = retry_seconds
        self._retry_interval = retry_interval
        self._ctl_timeout = ctl_timeout
        self._request = request
        self._log = log
        self._clock = clock
        self._on_wake = on_wake  # run at least every IDLE_WAKE s (the lock: `ReaderLock.take`)
        self._buf = b""
        self._pending: _Pending | None = None
        self._stop_at: float | None = None  # set by `stop()` (SIGTERM)
        self.handled: list[tuple[Transition, bool]] = []  # (transition, answered ok)

    def stop(self) -> None:
        """keepalived's SIGTERM: read on for `STOP_GRACE` seconds (a STOP may follow)."""
        if self._stop_at is None:
            self._stop_at = self._clock() + STOP_GRACE

    def run(self) -> int:
        """Until the FIFO is closed (keepalived exited or reloads) or the grace after
        `stop()` is over. Returns 0."""
        while True:
            if self._on_wake is not None:
                self._on_wake()
            now = self._clock()
            if self._stop_at is not None and now >= self._stop_at:
                # Past the grace nothing of ours may still be sent: at a reload keepalived's
                # new reader has the current state (keepalived announces it again), at a stop
                # the unit's ExecStopPost demotes; an old command landing later would undo it.
                if self._pending is not None:
                    self._give_up(self._pending, "stopped (SIGTERM), the grace is over")
                return 0
            if self._pending is not None:
                self._attempt(now)
            if self._pending is not None:
                wait = self._retry_interval
            elif self._stop_at is not None:
                wait = max(0.0, self._stop_at - now)
            else:
                wait = IDLE_WAKE
            if not self._wait_readable(wait):
                continue
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                continue
            if not chunk:
                if self._pending is not None:
                    self._give_up(self._pending, "keepalived closed the FIFO")
                return 0
            self._feed(chunk)

    # -- internals

    def _wait_readable(self, timeout: float) -> bool:
        readable, _, _ = select.select([self._fd], [], [], timeout)
        return bool(readable)

    def _feed(self, chunk: bytes) -> None:
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > MAX_LINE:
            self._log(f"notify FIFO: dropping {len(self._buf)} bytes without a line end")
            self._buf = b""
        latest: Transition | None = None
        for raw in lines:
            if not raw.strip():
                continue
            try:
                t = parse_line(raw.decode("utf-8", "replace"))
            except NotifyLineError as exc:
                self._log(f"notify FIFO: ignored: {exc}")
                continue
            if t is None or t.kind != "INSTANCE":
                continue
            if self._instance is not None and t.name != self._instance:
                continue
            latest = t
        if latest is None:
            return
        if self._pending is not None:
            self._give_up(self._pending, f"replaced by VRRP {latest.state}")
        self._write_state(latest.state)
        self._pending = _Pending(latest, self._clock() + self._retry_seconds)

    def _write_state(self, state: str) -> None:
        if self._state_file is None:
            return
        tmp = self._state_file.with_name(self._state_file.name + ".tmp")
        try:
            tmp.write_text(state + "\n")
            os.replace(tmp, self._state_file)
        except OSError as exc:
            self._log(f"VRRP {state}: cannot write {self._state_file}: {exc}")

    def _attempt(self, now: float) -> None:
        p = self._pending
        assert p is not None
        if p.attempts and now >= p.deadline:
            self._give_up(p, f"no answer within {self._retry_seconds:g} s: {p.last_error}")
            return
        p.attempts += 1
        action = p.transition.action
        try:
            reply = self._request(self._socket, action, timeout=self._ctl_timeout)
        except CtlError as exc:
            p.last_error = str(exc)
            return
        except Exception as exc:  # keepalived does not start a dead reader again
            p.last_error = f"{type(exc).__name__}: {exc}"
            return
        if not isinstance(reply, dict):
            p.last_error = f"not a JSON object: {reply!r:.80}"
            return
        if not reply.get("ok"):
            p.last_error = str(reply.get("error") or reply)
            return
        tries = f" after {p.attempts} attempts" if p.attempts > 1 else ""
        self._log(
            f"VRRP {p.transition.state}: tmr ctl {action} ok{tries}: role {reply.get('role')}"
        )
        self.handled.append((p.transition, True))
        self._pending = None

    def _give_up(self, p: _Pending, why: str) -> None:
        self._log(f"VRRP {p.transition.state}: tmr ctl {p.transition.action} FAILED: {why}")
        self.handled.append((p.transition, False))
        self._pending = None


def run_reader(
    fifo: Path,
    socket: Path,
    *,
    instance: str | None,
    state_file: Path | None,
    retry_seconds: float,
    retry_interval: float,
    log: Logger,
    lock_file: Path | None = None,
) -> int:
    """Open the FIFO keepalived made and read it until keepalived closes it (the
    `vrrp_notify_fifo_script` process), holding `lock_file`'s lock meanwhile."""
    # Read-only, so that the reader sees the end of the FIFO when keepalived closes it. The
    # open waits for keepalived to open its end (it starts this process first); a FIFO opened
    # with O_NONBLOCK before that would read as ended at once.
    try:
        fd = os.open(fifo, os.O_RDONLY)
    except OSError as exc:
        raise TmrError(f"{fifo}: cannot open the notify FIFO: {exc}") from None
    os.set_blocking(fd, False)
    lock = ReaderLock(lock_file, log) if lock_file is not None else None
    if lock is not None:
        lock.wait(LOCK_WAIT)
    reader = NotifyReader(
        fd,
        socket,
        instance=instance,
        state_file=state_file,
        retry_seconds=retry_seconds,
        retry_interval=retry_interval,
        log=log,
        on_wake=lock.take if lock is not None else None,
    )

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        reader.stop()

    signal.signal(signal.SIGTERM, on_term)
    log(f"reading keepalived's notify FIFO {fifo}")
    try:
        return reader.run()
    finally:
        os.close(fd)
        if lock is not None:
            lock.close()  # the lock goes with it


class ReaderLock:
    """The lock a running reader holds on `path` for its lifetime (its descriptor is never
    inherited; the kernel drops the lock with the process, kill -9 included). At a keepalived
    reload the old reader holds it through its grace (`STOP_GRACE`), or longer while a command
    to a slow tmr-server is under way (`ctl_timeout`): a new reader waits `wait` s for it
    (keepalived's lines wait in the FIFO meanwhile), then reads on and takes it as soon as it is
    free (`take`, on each of its wakes). A file that cannot be opened is logged, not fatal: the
    reader still does its work; the health script then goes by the VIP."""

    def __init__(self, path: Path, log: Logger) -> None:
        self._path = path
        self._log = log
        self.held = False
        self._waited = False
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            log(f"cannot open the lock file {path}: {exc} (the health script goes by the VIP)")

    def take(self) -> bool:
        """Take the lock if it is free (never waits); whether this reader holds it."""
        if self.held or self._fd is None:
            return self.held
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._log(f"cannot lock {self._path}: {exc} (the health script goes by the VIP)")
            os.close(self._fd)
            self._fd = None
            return False
        self.held = True
        if self._waited:
            self._log(f"took the lock {self._path}: the previous reader has ended")
        return True

    def wait(self, seconds: float) -> bool:
        """`take`, trying for up to `seconds`; whether this reader holds the lock."""
        give_up = time.monotonic() + seconds
        while not self.take():
            if self._fd is None:
                return False
            if time.monotonic() >= give_up:
                self._waited = True
                self._log(
                    f"{self._path} is still locked after {seconds:g} s (the previous reader is "
                    "ending): reading on, taking it once free"
                )
                return False
            time.sleep(LOCK_POLL)
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.held = False
