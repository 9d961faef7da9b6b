"""roles/keepalived/templates/tmr-health.sh.j2, rendered and run under POSIX sh.

A fake `tmr` answers `ctl status` with the JSON a real server prints (`Leader.status()` as
`tmr ctl` writes it) and records every other command; a fake `logger` records messages; a
fake `ip` shows the VIP on this host or not. The notify reader is alive while this test holds
the lock of notify.lock (flock(2), as the reader does; the script asks with flock(1)).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest

from tests.unit.replication.harness import Harness
from tmr.replication.types import LicenseInfo

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "roles/keepalived/templates/tmr-health.sh.j2"
STATE_DIR = "/run/tmr-keepalived"
KEY = (6000123, 42)
VIP = "192.0.2.10"

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs /bin/sh")


def server_statuses() -> dict[str, dict[str, Any]]:
    """Real status documents: sa active, sb a standby that hears sa, sc a lone standby."""
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote("sa")
    sb = h.add_server("sb")
    h.advance(1.0)
    lone = Harness({KEY: LicenseInfo(7, 5, True)})
    lone.advance(1.0)
    docs = {
        "active": h.leader.status(h.now),
        "standby_live": sb.status(h.now),
        "standby_alone": lone.leader.status(lone.now),
    }
    assert docs["standby_live"]["live_leader"] == "sa"
    assert docs["standby_alone"]["live_leader"] is None
    fenced = dict(docs["standby_alone"], role="fenced")
    docs["fenced"] = fenced
    old = dict(docs["standby_alone"])
    del old["live_leader"]  # a server from before the liveness guard
    docs["standby_old_server"] = old
    return {k: {"ok": True, **v} for k, v in docs.items()}


def render(tmp_path: Path) -> Path:
    text = jinja2.Template(TEMPLATE.read_text()).render(
        ansible_managed="test",
        keepalived_tmr_bin=str(tmp_path / "tmr"),
        keepalived_tmr_ctl_socket="/run/tmr/server.sock",
        keepalived_vip=VIP,
    )
    assert STATE_DIR in text
    script = tmp_path / "tmr-health.sh"
    script.write_text(text.replace(STATE_DIR, str(tmp_path)))
    fake_tmr = tmp_path / "tmr"
    fake_tmr.write_text(
        "#!/bin/sh\n"
        'echo "$*" >> "$FAKE_DIR/calls"\n'
        'case "$*" in\n'
        '  *" status") cat "$FAKE_DIR/status.json" ;;\n'
        '  *" health") exit "$(cat "$FAKE_DIR/health_rc")" ;;\n'
        "esac\n"
    )
    fake_logger = tmp_path / "bin" / "logger"
    fake_logger.parent.mkdir(exist_ok=True)
    fake_logger.write_text('#!/bin/sh\necho "$*" >> "$FAKE_DIR/log"\n')
    fake_ip = tmp_path / "bin" / "ip"
    fake_ip.write_text(
        "#!/bin/sh\n"
        f'[ "$*" = "-o addr show to {VIP}" ] || exit 1\n'
        '[ -e "$FAKE_DIR/ip_fails" ] && exit 2\n'
        '[ -e "$FAKE_DIR/vip_here" ] && echo "2: eth0    inet {VIP}/24 scope global eth0"\n'
        "exit 0\n"
    )
    for p in (fake_tmr, fake_logger, fake_ip):
        p.chmod(0o755)
    return script


def run(
    tmp_path: Path,
    vrrp: str,
    status: dict[str, Any] | None,
    health_rc: int = 0,
    yielding: str = "0",
    *,
    reader: bool = True,
    vip_here: bool = False,
    ip_fails: bool = False,
    flock_rc: int | None = None,
) -> tuple[int, list[str], str]:
    """Exit code, the `tmr` commands it ran, what it logged. `reader`: the notify reader
    holds its lock; `vip_here`: `ip` shows the VIP on this host; `ip_fails`: `ip` exits with an
    error (netlink, a hardened unit); `flock_rc`: a `flock` that
    exits with this code (it cannot open the file, say) in place of the real one. `status`
    None: `tmr ctl status` fails (the server does not answer)."""
    script = render(tmp_path)
    fake_flock = tmp_path / "bin" / "flock"
    if flock_rc is not None:
        fake_flock.write_text(f"#!/bin/sh\nexit {flock_rc}\n")
        fake_flock.chmod(0o755)
    elif fake_flock.exists():
        fake_flock.unlink()
    for name, present in (("vip_here", vip_here), ("ip_fails", ip_fails)):
        if present:
            (tmp_path / name).write_text("")
        else:
            (tmp_path / name).unlink(missing_ok=True)
    for name in ("calls", "log"):
        (tmp_path / name).write_text("")
    (tmp_path / "state").write_text(vrrp + "\n")
    (tmp_path / "yield").write_text(yielding + "\n")
    status_file = tmp_path / "status.json"
    if status is None:
        status_file.unlink(missing_ok=True)
    else:
        status_file.write_text(json.dumps(status, default=str) + "\n")
    (tmp_path / "health_rc").write_text(str(health_rc))
    env = {
        **os.environ,
        "FAKE_DIR": str(tmp_path),
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
    }
    lock = os.open(tmp_path / "notify.lock", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        if reader:
            fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(
            ["sh", str(script)], check=False, env=env, capture_output=True, timeout=30
        )
    finally:
        os.close(lock)
    calls = (tmp_path / "calls").read_text().splitlines()
    return proc.returncode, calls, (tmp_path / "log").read_text() + proc.stderr.decode()


STATUSES = server_statuses()


@pytest.mark.parametrize(
    ("doc", "rc", "promotes"),
    [
        ("active", 0, False),
        ("standby_live", 1, False),  # split brain: another server leads and is alive
        ("standby_alone", 0, True),  # came back as standby (crash, restart): promote
        ("standby_old_server", 0, True),  # an older server without live_leader: as before
        ("fenced", 1, False),
    ],
)
def test_vrrp_master(tmp_path: Path, doc: str, rc: int, promotes: bool) -> None:
    got, calls, log = run(tmp_path, "MASTER", STATUSES[doc])
    assert got == rc, log
    ctl = "ctl --socket /run/tmr/server.sock"
    assert calls == [f"{ctl} status"] + ([f"{ctl} promote"] if promotes else []), log
    if doc == "standby_live":
        assert "TMR server sa is alive as the leader" in log
    # only a split brain makes the host yield (keepalived FAULT through the track_file)
    assert (tmp_path / "yield").read_text().strip() == ("1" if doc == "standby_live" else "0")


@pytest.mark.parametrize(
    ("doc", "rc", "still_yielding"),
    [
        ("standby_live", 0, True),  # the other server still leads: stay in FAULT
        ("standby_alone", 0, False),  # that leader is gone: lift the yield, take part again
        ("fenced", 1, False),
    ],
)
def test_yielding_host(tmp_path: Path, doc: str, rc: int, still_yielding: bool) -> None:
    got, calls, log = run(tmp_path, "FAULT", STATUSES[doc], yielding="1")
    assert got == rc, log
    assert calls == ["ctl --socket /run/tmr/server.sock status"], log
    assert (tmp_path / "yield").read_text().strip() == ("1" if still_yielding else "0")
    if not still_yielding and doc == "standby_alone":
        assert "yield lifted" in log


@pytest.mark.parametrize("health_rc", [0, 1])
def test_not_master_only_asks_health(tmp_path: Path, health_rc: int) -> None:
    got, calls, _ = run(tmp_path, "BACKUP", STATUSES["standby_live"], health_rc)
    assert got == health_rc
    assert calls == ["ctl --socket /run/tmr/server.sock health"]


@pytest.mark.parametrize("stale", ["BACKUP", "FAULT", ""])
def test_without_the_notify_reader_the_vip_on_this_host_means_master(
    tmp_path: Path, stale: str
) -> None:
    """The reader was killed before this host became MASTER: the state file still says what
    it said then (or nothing), and nobody promoted. The VIP on this host stands for MASTER:
    the standby server is promoted, and the reader's absence is logged once."""
    got, calls, log = run(tmp_path, stale, STATUSES["standby_alone"], reader=False, vip_here=True)
    ctl = "ctl --socket /run/tmr/server.sock"
    assert got == 0, log
    assert calls == [f"{ctl} status", f"{ctl} promote"], log
    assert "notify reader is not running" in log and "(MASTER)" in log
    _, _, log = run(tmp_path, stale, STATUSES["active"], reader=False, vip_here=True)
    assert "notify reader is not running" not in log  # said once
    _, _, log = run(tmp_path, "MASTER", STATUSES["active"])
    assert "notify reader is running again" in log


def test_without_the_notify_reader_a_stale_master_without_the_vip_does_not_promote(
    tmp_path: Path,
) -> None:
    """The reader died while MASTER and the VIP has left this host since: the state file
    says MASTER, but the host is not; the standby server is not promoted."""
    got, calls, log = run(tmp_path, "MASTER", STATUSES["standby_alone"], reader=False)
    ctl = "ctl --socket /run/tmr/server.sock"
    assert got == 0, log
    assert calls == [f"{ctl} status", f"{ctl} health"], log
    assert "(BACKUP)" in log
    assert "demote" not in log


@pytest.mark.parametrize("role", ["active", "takeover", "fenced"])
@pytest.mark.parametrize("stale", ["MASTER", "BACKUP", "FAULT", ""])
def test_without_the_notify_reader_a_server_left_leading_without_the_vip_is_demoted(
    tmp_path: Path, role: str, stale: str
) -> None:
    """The reader is gone and the VIP left this host (it turned BACKUP or FAULT): nothing
    read that transition, so the server here is still active (or taking over, or already
    fenced by the other server's promote). Left so, it fails `health` once fenced and keeps
    the host in FAULT: the VIP could not come back if the other host failed. It is demoted,
    as the reader would have done, and `health` decides the exit code."""
    status = dict(STATUSES["active"], role=role)
    ctl = "ctl --socket /run/tmr/server.sock"
    got, calls, log = run(tmp_path, stale, status, reader=False)
    assert got == 0, log
    assert calls == [f"{ctl} status", f"{ctl} demote", f"{ctl} health"], log
    assert f"VRRP BACKUP (no VIP on this host) but tmr-server is {role}: tmr ctl demote" in log
    # the demote does not decide the check: health does (a server that did not demote fails)
    got, _, _ = run(tmp_path, stale, status, health_rc=1, reader=False)
    assert got == 1


def test_without_the_notify_reader_a_server_that_does_not_answer_fails_the_check(
    tmp_path: Path,
) -> None:
    """`tmr ctl status` fails (the server does not answer): nothing is demoted, and the check
    fails (as `health` would)."""
    got, calls, log = run(tmp_path, "BACKUP", None, reader=False)
    assert got == 1, log
    assert calls == ["ctl --socket /run/tmr/server.sock status"], log


@pytest.mark.parametrize("doc", ["active", "standby_alone"])
def test_without_the_notify_reader_an_ip_that_fails_neither_demotes_nor_promotes(
    tmp_path: Path, doc: str
) -> None:
    """`ip` failing says nothing about the VIP: a leading server is not demoted (it may hold
    the VIP), a standby not promoted; `health` decides."""
    for stale in ("MASTER", "BACKUP"):
        got, calls, log = run(tmp_path, stale, STATUSES[doc], reader=False, ip_fails=True)
        assert got == 0, log
        assert calls == ["ctl --socket /run/tmr/server.sock health"], log
        assert "demote" not in log and "promote" not in log


def test_a_lock_it_cannot_ask_counts_as_no_reader_for_the_demote_too(tmp_path: Path) -> None:
    """flock(1) that cannot tell (66): the VIP decides, as for the promote."""
    ctl = "ctl --socket /run/tmr/server.sock"
    got, calls, log = run(tmp_path, "BACKUP", STATUSES["active"], flock_rc=66)
    assert got == 0, log
    assert calls == [f"{ctl} status", f"{ctl} demote", f"{ctl} health"], log


def test_a_yielding_host_without_the_notify_reader_is_not_demoted_by_the_yield_check(
    tmp_path: Path,
) -> None:
    """The yield check (a keepalived split brain) comes first and only lifts the yield; the
    next check goes by the VIP."""
    got, calls, log = run(tmp_path, "FAULT", STATUSES["active"], yielding="1", reader=False)
    assert got == 0, log
    assert calls == ["ctl --socket /run/tmr/server.sock status"], log
    assert "yield lifted" in log and "demote" not in log


@pytest.mark.parametrize("doc", ["active", "fenced"])
def test_with_the_notify_reader_a_backup_host_only_asks_health(tmp_path: Path, doc: str) -> None:
    """While the reader runs it demotes on BACKUP; the health script leaves that to it."""
    got, calls, _ = run(tmp_path, "BACKUP", STATUSES[doc], health_rc=1)
    assert got == 1
    assert calls == ["ctl --socket /run/tmr/server.sock health"]


def test_with_the_notify_reader_the_state_file_decides(tmp_path: Path) -> None:
    """While the reader runs, its state file is the VRRP state (the VIP can lag it)."""
    got, calls, _ = run(tmp_path, "BACKUP", STATUSES["standby_alone"], vip_here=True)
    assert got == 0
    assert calls == ["ctl --socket /run/tmr/server.sock health"]


@pytest.mark.parametrize("rc", [66, 127])
def test_a_lock_it_cannot_ask_counts_as_no_reader(tmp_path: Path, rc: int) -> None:
    """flock(1) that cannot open the lock file (66) or is missing (127) cannot tell whether
    the reader runs: the VIP decides, as without a reader; only the conflict code (75) means
    a reader holds the lock."""
    got, calls, log = run(tmp_path, "BACKUP", STATUSES["standby_alone"], vip_here=True, flock_rc=rc)
    ctl = "ctl --socket /run/tmr/server.sock"
    assert got == 0, log
    assert calls == [f"{ctl} status", f"{ctl} promote"], log
    got, calls, _ = run(tmp_path, "BACKUP", STATUSES["standby_alone"], vip_here=True, flock_rc=75)
    assert calls == [f"{ctl} health"]
