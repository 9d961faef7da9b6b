"""roles/keepalived/templates/tmr-health.sh.j2, rendered and run under POSIX sh.

A fake `tmr` answers `ctl status` with the JSON a real server prints (`Leader.status()` as
`tmr ctl` writes it) and records every other command; a fake `logger` records messages.
"""

from __future__ import annotations

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
    fake_logger.parent.mkdir()
    fake_logger.write_text('#!/bin/sh\necho "$*" >> "$FAKE_DIR/log"\n')
    for p in (fake_tmr, fake_logger):
        p.chmod(0o755)
    return script


def run(
    tmp_path: Path, vrrp: str, status: dict[str, Any], health_rc: int = 0, yielding: str = "0"
) -> tuple[int, list[str], str]:
    """Exit code, the `tmr` commands it ran, what it logged."""
    script = render(tmp_path)
    for name in ("calls", "log"):
        (tmp_path / name).write_text("")
    (tmp_path / "state").write_text(vrrp + "\n")
    (tmp_path / "yield").write_text(yielding + "\n")
    (tmp_path / "status.json").write_text(json.dumps(status, default=str) + "\n")
    (tmp_path / "health_rc").write_text(str(health_rc))
    env = {
        **os.environ,
        "FAKE_DIR": str(tmp_path),
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        ["sh", str(script)], check=False, env=env, capture_output=True, timeout=30
    )
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
