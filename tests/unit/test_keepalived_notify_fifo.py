"""The keepalived role's notify FIFO: keepalived.conf.j2 and tmr-notify-fifo.sh.j2 rendered,
the script run under POSIX sh with a fake `tmr`, and its arguments parsed by the real CLI."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest

from tmr.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "roles/keepalived/templates"
DEFAULTS = REPO / "roles/keepalived/defaults/main.yml"


def render(name: str, **variables: Any) -> str:
    env = jinja2.Environment(
        trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    return env.from_string((TEMPLATES / name).read_text()).render(
        ansible_managed="test", **variables
    )


def conf() -> str:
    peers = {
        "tmr-a": {"tmr_common_address": "10.0.0.21"},
        "tmr-b": {"tmr_common_address": "10.0.0.22"},
    }
    return render(
        "keepalived.conf.j2",
        inventory_hostname="tmr-a",
        keepalived_script_user="tmr",
        keepalived_garp_master_refresh=5,
        keepalived_track_health=True,
        keepalived_health_interval=2,
        keepalived_health_timeout=5,
        keepalived_health_fall=3,
        keepalived_health_rise=2,
        keepalived_interface="eth0",
        keepalived_virtual_router_id=47,
        keepalived_priority=100,
        keepalived_advert_int=0.1,
        keepalived_nopreempt=True,
        keepalived_peer_group="tmr_servers",
        keepalived_peer="tmr-b",
        keepalived_vip="10.0.0.100",
        keepalived_vip_prefix=24,
        tmr_common_address="10.0.0.21",
        groups={"tmr_servers": ["tmr-a", "tmr-b"]},
        hostvars=peers,
    )


def test_keepalived_conf_hands_state_changes_to_the_fifo_reader() -> None:
    text = conf()
    assert "  vrrp_notify_fifo /run/tmr-keepalived/notify.fifo\n" in text
    assert "  vrrp_notify_fifo_script /etc/keepalived/tmr-notify-fifo.sh\n" in text
    # no process per transition any more
    assert not re.search(r"^\s*notify(_master|_backup|_fault|_stop)?\s", text, re.M)
    # the reader filters on the instance name the configuration gives
    assert re.search(r"^vrrp_instance TMR \{", text, re.M)
    assert "--instance TMR " in render(
        "tmr-notify-fifo.sh.j2",
        keepalived_tmr_bin="/opt/tmr/venv/bin/tmr",
        keepalived_tmr_ctl_socket="/run/tmr/server.sock",
        keepalived_notify_retry_seconds=15,
        keepalived_notify_retry_interval=0.05,
    )


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs /bin/sh")
def test_the_fifo_script_execs_a_command_the_cli_accepts(tmp_path: Path) -> None:
    fake = tmp_path / "tmr"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$0.args"\n')
    fake.chmod(0o755)
    script = tmp_path / "tmr-notify-fifo.sh"
    script.write_text(
        render(
            "tmr-notify-fifo.sh.j2",
            keepalived_tmr_bin=str(fake),
            keepalived_tmr_ctl_socket="/run/tmr/server.sock",
            keepalived_notify_retry_seconds=15,
            keepalived_notify_retry_interval=0.05,
        )
    )
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    # keepalived runs the script with the FIFO's path as its only argument
    subprocess.run(["sh", str(script), "/run/tmr-keepalived/notify.fifo"], check=True, timeout=30)
    argv = (tmp_path / "tmr.args").read_text().splitlines()
    assert argv == shlex.split(
        "server vrrp-notify --socket /run/tmr/server.sock --instance TMR "
        "--state-file /run/tmr-keepalived/state --lock-file /run/tmr-keepalived/notify.lock "
        "--retry-seconds 15 --retry-interval 0.05 /run/tmr-keepalived/notify.fifo"
    )
    args = build_parser().parse_args(argv)
    assert args.handler.__name__ == "_vrrp_notify"
    assert (args.fifo, args.instance, args.retry_interval, args.lock_file) == (
        "/run/tmr-keepalived/notify.fifo",
        "TMR",
        0.05,
        "/run/tmr-keepalived/notify.lock",
    )
    # the state file and the lock are the ones tmr-health.sh reads
    health = (TEMPLATES / "tmr-health.sh.j2").read_text()
    assert "dir=/run/tmr-keepalived\n" in health and '"$dir/state"' in health
    assert '"$dir/notify.lock"' in health


def test_the_role_defaults_set_the_retry_the_reader_expects() -> None:
    text = DEFAULTS.read_text()
    assert re.search(r"^keepalived_notify_retry_interval: 0\.05$", text, re.M)
    assert re.search(r"^keepalived_notify_retry_seconds: 15$", text, re.M)
