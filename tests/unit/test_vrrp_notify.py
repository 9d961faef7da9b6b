"""tmr.vrrp_notify: keepalived's notify FIFO read by one resident process (issue 17)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tmr.ctl import CtlError
from tmr.vrrp_notify import (
    IDLE_WAKE,
    STOP_GRACE,
    NotifyLineError,
    NotifyReader,
    Transition,
    parse_line,
)

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "services"


# ------------------------------------------------------------------ parse_line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('INSTANCE "TMR" MASTER 100', Transition("INSTANCE", "TMR", "MASTER", 100)),
        ('INSTANCE "TMR" BACKUP 90\n', Transition("INSTANCE", "TMR", "BACKUP", 90)),
        ('INSTANCE "TMR" FAULT 0', Transition("INSTANCE", "TMR", "FAULT", 0)),
        ('INSTANCE "TMR" STOP', Transition("INSTANCE", "TMR", "STOP", None)),
        ('INSTANCE "TMR" DELETED 100', Transition("INSTANCE", "TMR", "DELETED", 100)),
        ('GROUP "G 1" MASTER 0', Transition("GROUP", "G 1", "MASTER", 0)),
    ],
)
def test_parse_line(line: str, expected: Transition) -> None:
    assert parse_line(line) == expected


def test_actions() -> None:
    master = parse_line('INSTANCE "TMR" MASTER 100')
    assert master is not None and master.action == "promote"
    for state in ("BACKUP", "FAULT", "STOP", "DELETED"):
        t = parse_line(f'INSTANCE "TMR" {state} 100')
        assert t is not None and t.action == "demote"


def test_checker_lines_are_not_for_us() -> None:
    assert parse_line("VS [10.0.0.1]:tcp:80 UP") is None
    assert parse_line("RS [10.0.0.2]:tcp:80 [10.0.0.1]:tcp:80 DOWN") is None


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "hello",
        "INSTANCE TMR MASTER 100",  # the name is quoted
        'INSTANCE "TMR MASTER 100',
        'INSTANCE "" MASTER 100',
        'INSTANCE "TMR" MASTERS 100',
        'INSTANCE "TMR"',
        'INSTANCE "TMR" MASTER -1',
        'INSTANCE "TMR" MASTER 99999',
        'INSTANCE "TMR" MASTER x',
    ],
)
def test_bad_lines_are_a_typed_error(line: str) -> None:
    with pytest.raises(NotifyLineError):
        parse_line(line)


# ------------------------------------------------------------------ the reader, on a pipe


class FakeServer:
    """The control socket: answers or fails each command as told, records them."""

    def __init__(self, failures: int = 0, fail_forever: bool = False) -> None:
        self.calls: list[tuple[str, float]] = []
        self.failures = failures
        self.fail_forever = fail_forever

    def __call__(self, path: Path, cmd: str, *, timeout: float = 5.0) -> dict[str, Any]:
        self.calls.append((cmd, time.monotonic()))
        if self.fail_forever or self.failures > 0:
            self.failures -= 1
            raise CtlError(f"{path}: no control socket (is the service running?)")
        return {"ok": True, "role": "takeover" if cmd == "promote" else "standby"}

    @property
    def commands(self) -> list[str]:
        return [c for c, _ in self.calls]


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def reader(fd: int, server: FakeServer, tmp_path: Path, **kw: Any) -> NotifyReader:
    logs: list[str] = []
    rd = NotifyReader(
        fd,
        tmp_path / "server.sock",
        instance="TMR",
        state_file=tmp_path / "state",
        request=server,
        log=logs.append,
        **kw,
    )
    rd.logs = logs  # type: ignore[attr-defined]
    return rd


def run_in_thread(rd: NotifyReader) -> threading.Thread:
    t = threading.Thread(target=rd.run, daemon=True)
    t.start()
    return t


def wait_until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_master_promotes_at_once_and_records_the_state(
    pipe: tuple[int, int], tmp_path: Path
) -> None:
    r, w = pipe
    server = FakeServer()
    rd = reader(r, server, tmp_path)
    t = run_in_thread(rd)
    os.write(w, b'INSTANCE "TMR" BACKUP 100\n')
    wait_until(lambda: server.commands == ["demote"])
    assert (tmp_path / "state").read_text() == "BACKUP\n"
    sent = time.monotonic()
    os.write(w, b'INSTANCE "TMR" MASTER 100\n')
    wait_until(lambda: server.commands == ["demote", "promote"])
    # no sleep, no process in between: the command follows the line (bounded loosely here)
    assert server.calls[-1][1] - sent < 0.5
    assert (tmp_path / "state").read_text() == "MASTER\n"
    os.close(w)  # keepalived closes the FIFO: the reader ends
    t.join(5)
    assert not t.is_alive()
    assert [(tr.state, ok) for tr, ok in rd.handled] == [("BACKUP", True), ("MASTER", True)]


def test_a_failed_command_is_sent_again_soon(pipe: tuple[int, int], tmp_path: Path) -> None:
    r, w = pipe
    server = FakeServer(failures=3)
    rd = reader(r, server, tmp_path, retry_interval=0.02, retry_seconds=5)
    t = run_in_thread(rd)
    os.write(w, b'INSTANCE "TMR" MASTER 100\n')
    wait_until(lambda: len(rd.handled) == 1)
    assert server.commands == ["promote"] * 4
    times = [at for _, at in server.calls]
    # retried at the short interval, not after a 0.5 s sleep
    assert times[-1] - times[0] < 0.45
    assert rd.handled[0][1] is True
    assert "after 4 attempts" in rd.logs[-1]  # type: ignore[attr-defined]
    os.close(w)
    t.join(5)


def test_retries_are_bounded(pipe: tuple[int, int], tmp_path: Path) -> None:
    r, w = pipe
    server = FakeServer(fail_forever=True)
    rd = reader(r, server, tmp_path, retry_interval=0.02, retry_seconds=0.2)
    t = run_in_thread(rd)
    os.write(w, b'INSTANCE "TMR" MASTER 100\n')
    wait_until(lambda: len(rd.handled) == 1)
    assert rd.handled[0][1] is False
    n = len(server.calls)
    assert 2 <= n <= 30
    assert "FAILED" in rd.logs[-1]  # type: ignore[attr-defined]
    time.sleep(0.1)  # nothing more is sent once it gave up
    assert len(server.calls) == n
    os.close(w)
    t.join(5)


def test_a_newer_state_replaces_a_command_being_retried(
    pipe: tuple[int, int], tmp_path: Path
) -> None:
    r, w = pipe
    server = FakeServer(fail_forever=True)
    rd = reader(r, server, tmp_path, retry_interval=0.02, retry_seconds=30)
    t = run_in_thread(rd)
    os.write(w, b'INSTANCE "TMR" MASTER 100\n')
    wait_until(lambda: len(server.calls) >= 2)
    server.fail_forever = False
    os.write(w, b'INSTANCE "TMR" BACKUP 100\n')
    wait_until(lambda: len(rd.handled) == 2)
    assert [(tr.state, ok) for tr, ok in rd.handled] == [("MASTER", False), ("BACKUP", True)]
    assert server.commands[-1] == "demote"
    assert (tmp_path / "state").read_text() == "BACKUP\n"
    os.close(w)
    t.join(5)


def test_lines_together_the_newest_state_wins(pipe: tuple[int, int], tmp_path: Path) -> None:
    r, w = pipe
    server = FakeServer()
    rd = reader(r, server, tmp_path)
    os.write(
        w,
        b'INSTANCE "TMR" MASTER 100\nINSTANCE "OTHER" MASTER 100\nnonsense\n'
        b'INSTANCE "TMR" BACKUP 100\nINSTANCE "OTHER" BACKUP 100\nVS x UP\nINSTANCE "TMR" FA',
    )
    t = run_in_thread(rd)
    wait_until(lambda: len(rd.handled) == 1)
    assert server.commands == ["demote"]
    assert "ignored" in " ".join(rd.logs)  # type: ignore[attr-defined]
    os.write(w, b"ULT 0\n")  # the rest of a line split across two reads
    wait_until(lambda: len(rd.handled) == 2)
    assert rd.handled[1][0] == Transition("INSTANCE", "TMR", "FAULT", 0)
    os.close(w)
    t.join(5)


def test_after_sigterm_it_reads_on_briefly_then_ends(pipe: tuple[int, int], tmp_path: Path) -> None:
    r, w = pipe
    server = FakeServer()
    rd = reader(r, server, tmp_path)
    t = run_in_thread(rd)
    rd.stop()
    os.write(w, b'INSTANCE "TMR" STOP 0\n')  # keepalived writes STOP after its SIGTERM
    wait_until(lambda: server.commands == ["demote"])
    t.join(STOP_GRACE + 5)  # the FIFO stays open: the grace ends it
    assert not t.is_alive()


def test_bad_settings_are_refused(pipe: tuple[int, int], tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        NotifyReader(pipe[0], tmp_path / "s", retry_interval=0)
    with pytest.raises(ValueError):
        NotifyReader(pipe[0], tmp_path / "s", retry_seconds=-1)


# ------------------------------------------------------------------ the command, on a FIFO


def test_tmr_server_vrrp_notify_on_a_real_fifo(tmp_path: Path) -> None:
    """As keepalived runs it: a FIFO whose writer opens after the reader started, a real
    control socket (ZeroMQ REP on ipc), SIGTERM and then the FIFO closed."""
    fifo = tmp_path / "notify.fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "server.sock"
    lock_file = tmp_path / "notify.lock"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind(f"ipc://{sock_path}")
    env = dict(os.environ, PYTHONPATH=str(SERVICES))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tmr",
            "server",
            "vrrp-notify",
            "--socket",
            str(sock_path),
            "--instance",
            "TMR",
            "--state-file",
            str(tmp_path / "state"),
            "--lock-file",
            str(lock_file),
            str(fifo),
        ],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        w = os.open(fifo, os.O_WRONLY)  # waits for the reader, as keepalived's open does not
        try:
            os.write(w, b'INSTANCE "TMR" MASTER 100\n')
            assert rep.poll(10_000), "no command on the control socket"
            assert json.loads(rep.recv()) == {"cmd": "promote"}
            rep.send(json.dumps({"ok": True, "role": "takeover"}).encode())
            assert not _lock_free(lock_file), "the reader runs without holding its lock"
            proc.send_signal(signal.SIGTERM)
            os.write(w, b'INSTANCE "TMR" STOP 0\n')
            assert rep.poll(10_000), "no demote after the SIGTERM"
            assert json.loads(rep.recv()) == {"cmd": "demote"}
            rep.send(json.dumps({"ok": True, "role": "standby"}).encode())
        finally:
            os.close(w)
        assert proc.wait(10) == 0
        assert (tmp_path / "state").read_text() == "STOP\n"
        assert _lock_free(lock_file)  # the health script now learns the reader is gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        rep.close()


def test_the_cli_refuses_a_bad_retry_interval(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(SERVICES))
    out = subprocess.run(
        [sys.executable, "-m", "tmr", "server", "vrrp-notify", "--retry-interval", "0", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "must be above 0" in out.stderr


def test_an_unexpected_error_is_a_failed_attempt_not_the_end_of_the_reader(
    pipe: tuple[int, int], tmp_path: Path
) -> None:
    r, w = pipe
    calls: list[str] = []

    def flaky(path: Path, cmd: str, *, timeout: float = 5.0) -> Any:
        calls.append(cmd)
        if len(calls) == 1:
            raise RuntimeError("a bug below the control socket")
        if len(calls) == 2:
            return ["not", "an", "object"]
        return {"ok": True, "role": "takeover"}

    rd = NotifyReader(r, tmp_path / "s", request=flaky, log=lambda _m: None, retry_interval=0.01)
    t = run_in_thread(rd)
    os.write(w, b'INSTANCE "TMR" MASTER 100\n')
    wait_until(lambda: len(rd.handled) == 1)
    assert calls == ["promote"] * 3
    assert rd.handled[0][1] is True
    os.close(w)
    t.join(5)
    assert not t.is_alive()


def test_after_sigterm_a_command_being_retried_does_not_outlive_the_grace(
    pipe: tuple[int, int], tmp_path: Path
) -> None:
    r, w = pipe
    server = FakeServer(fail_forever=True)  # tmr-server restarting: no control socket
    rd = reader(r, server, tmp_path, retry_interval=0.02, retry_seconds=30)
    t = run_in_thread(rd)
    os.write(w, b'INSTANCE "TMR" BACKUP 100\n')
    wait_until(lambda: len(server.calls) >= 2)
    rd.stop()  # keepalived reloads: a new reader takes over the FIFO
    t.join(STOP_GRACE + 2)
    alive = t.is_alive()
    os.close(w)  # end the reader either way
    t.join(5)
    assert not alive
    assert not rd.handled or rd.handled[-1][1] is False  # given up, never answered


def _lock_free(path: Path) -> bool:
    """Whether `path`'s lock can be had (as the health script asks, flock(1) -n)."""
    out = subprocess.run(["flock", "-n", str(path), "true"], check=False, timeout=10)
    return out.returncode == 0


def test_a_killed_reader_leaves_its_lock_free(tmp_path: Path) -> None:
    """kill -9 (keepalived does not start the reader again): the kernel drops the lock, so
    the health script sees the reader gone and goes by the VIP."""
    fifo = tmp_path / "notify.fifo"
    os.mkfifo(fifo)
    lock_file = tmp_path / "notify.lock"
    env = dict(os.environ, PYTHONPATH=str(SERVICES))
    argv = [sys.executable, "-m", "tmr", "server", "vrrp-notify", "--socket"]
    argv += [str(tmp_path / "none.sock"), "--lock-file", str(lock_file), str(fifo)]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    try:
        w = os.open(fifo, os.O_WRONLY)  # the reader has the FIFO open, the lock next
        try:
            deadline = time.monotonic() + 20
            while _lock_free(lock_file):
                assert time.monotonic() < deadline, "the reader never took its lock"
                assert proc.poll() is None
                time.sleep(0.02)
            proc.kill()
            proc.wait(10)
            assert _lock_free(lock_file)
        finally:
            os.close(w)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_new_reader_takes_the_old_ones_lock_once_it_is_free(tmp_path: Path) -> None:
    """At a reload the old reader holds the lock through its grace, or longer while a command
    to a slow tmr-server is under way: the new one waits briefly, reads on, and takes the lock
    on a later wake once the old one has ended (the health script then sees a reader again)."""
    from tmr.vrrp_notify import ReaderLock

    lock_file = tmp_path / "notify.lock"
    logs: list[str] = []
    held = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.flock(held, fcntl.LOCK_EX)
    lock = ReaderLock(lock_file, logs.append)
    try:
        assert lock.wait(0.1) is False and "still locked" in logs[-1]
        assert lock.take() is False
        os.close(held)  # the old reader ends
        assert lock.take() is True and "took the lock" in logs[-1]
        assert not _lock_free(lock_file)
    finally:
        lock.close()
    assert _lock_free(lock_file)
    broken = ReaderLock(tmp_path / "no" / "such.lock", logs.append)
    assert "cannot open the lock file" in logs[-1]
    assert broken.wait(0.1) is False and broken.take() is False


def test_the_reader_tries_the_lock_on_each_wake(pipe: tuple[int, int], tmp_path: Path) -> None:
    r, w = pipe
    wakes: list[float] = []
    rd = reader(r, FakeServer(), tmp_path, on_wake=lambda: wakes.append(time.monotonic()))
    t = run_in_thread(rd)
    wait_until(lambda: len(wakes) >= 2, timeout=IDLE_WAKE * 3 + 5)  # idle: every IDLE_WAKE s
    os.close(w)
    t.join(5)
    assert not t.is_alive()
