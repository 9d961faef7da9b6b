from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from zmq.utils import z85

from tmr.client.client import HEARTBEAT_MIN_INTERVAL
from tmr.config import (
    MIN_LEASE_SECONDS,
    RELOADABLE_SERVER_KEYS,
    ServerConfig,
    load_backend_config,
    load_server_config,
    reload_changes,
)
from tmr.errors import ConfigError

BACKEND = """
name = "backend-1"
key_file = "/etc/tmr/node.key"
state_dir = "/var/lib/tmr/backend"
license_dir = "/var/lib/tmr/licenses"
vendor_keys = ["/etc/tmr/vendors/6000123.pub"]
allowed_servers = ["a", "b"]
"""

KEYS = {i: z85.encode(bytes([i]) * 32).decode("ascii") for i in (1, 2, 3)}
SERVER = """
name = "tmr-a"
service_key_file = "/etc/tmr/service.key"
node_key_file = "/etc/tmr/node.key"
lease_seconds = 10
""" + "".join(
    f'\n[[backends]]\nname = "backend-{i}"\nendpoint = "tcp://10.0.0.{i}:22360"\n'
    f'public_key = "{KEYS[i]}"\n'
    for i in (1, 2, 3)
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_backend_defaults(tmp_path: Path) -> None:
    cfg = load_backend_config(write(tmp_path, BACKEND))
    assert cfg.listen == "tcp://0.0.0.0:22360"
    assert cfg.allowed_servers == ("a", "b")


def test_backend_retentions(tmp_path: Path) -> None:
    cfg = load_backend_config(write(tmp_path, BACKEND))
    assert (cfg.usage_retention, cfg.denial_retention) == (100_000, 100_000)
    cfg = load_backend_config(write(tmp_path, BACKEND + "denial_retention = 0\n"))
    assert cfg.denial_retention == 0


def test_server_config(tmp_path: Path) -> None:
    cfg = load_server_config(write(tmp_path, SERVER))
    assert cfg.lease_seconds == 10.0 and len(cfg.backends) == 3
    assert cfg.client_listen == "tcp://0.0.0.0:22350"
    assert cfg.leader_live_window == 0.6 > cfg.probe_interval


def test_server_expiry_warning_days(tmp_path: Path) -> None:
    assert load_server_config(write(tmp_path, SERVER)).expiry_warning_days == 30.0
    text = SERVER.replace("lease_seconds = 10", "expiry_warning_days = 14")
    assert load_server_config(write(tmp_path, text)).expiry_warning_days == 14.0
    text = SERVER.replace("lease_seconds = 10", "expiry_warning_days = 0")
    assert load_server_config(write(tmp_path, text)).expiry_warning_days == 0.0


def test_server_usage_query_timeout(tmp_path: Path) -> None:
    assert load_server_config(write(tmp_path, SERVER)).usage_query_timeout == 5.0
    for text, want in (("usage_query_timeout = 30", 30.0), ("usage_query_timeout = 0.5", 0.5)):
        cfg = load_server_config(write(tmp_path, SERVER.replace("lease_seconds = 10", text)))
        assert cfg.usage_query_timeout == want
    for bad in ("0", "301", "-1", '"5"', "true"):
        text = SERVER.replace("lease_seconds = 10", f"usage_query_timeout = {bad}")
        with pytest.raises(ConfigError, match="usage_query_timeout"):
            load_server_config(write(tmp_path, text))


def test_server_idle_hold_ms(tmp_path: Path) -> None:
    assert load_server_config(write(tmp_path, SERVER)).idle_hold_ms == 16.0
    for text, want in (("idle_hold_ms = 0", 0.0), ("idle_hold_ms = 2.5", 2.5)):
        cfg = load_server_config(write(tmp_path, SERVER.replace("lease_seconds = 10", text)))
        assert cfg.idle_hold_ms == want


def test_server_takeover_hold_ms(tmp_path: Path) -> None:
    assert load_server_config(write(tmp_path, SERVER)).takeover_hold_ms == 300.0
    for text, want in (("takeover_hold_ms = 0", 0.0), ("takeover_hold_ms = 2000", 2000.0)):
        cfg = load_server_config(write(tmp_path, SERVER.replace("lease_seconds = 10", text)))
        assert cfg.takeover_hold_ms == want


def test_server_shortest_lease(tmp_path: Path) -> None:
    # Three of the SDK's shortest heartbeat intervals: the shortest lease accepted is kept.
    assert pytest.approx(MIN_LEASE_SECONDS) == 3 * HEARTBEAT_MIN_INTERVAL
    text = SERVER.replace("lease_seconds = 10", f"lease_seconds = {MIN_LEASE_SECONDS}")
    assert load_server_config(write(tmp_path, text)).lease_seconds == MIN_LEASE_SECONDS


def test_server_leader_live_window(tmp_path: Path) -> None:
    text = SERVER.replace("lease_seconds = 10", "probe_interval = 0.5\nleader_live_window = 1.5")
    cfg = load_server_config(write(tmp_path, text))
    assert (cfg.probe_interval, cfg.leader_live_window) == (0.5, 1.5)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (BACKEND + 'colour = "red"\n', "unknown key 'colour'"),
        (BACKEND.replace('name = "backend-1"\n', ""), "missing required key 'name'"),
        (BACKEND.replace('["a", "b"]', '"a"'), "allowed_servers"),
        (BACKEND + 'log_level = "loud"\n', "log_level"),
        (BACKEND + "denial_retention = -1\n", "'denial_retention' must be 0 or more"),
        (BACKEND + 'denial_retention = "all"\n', "denial_retention"),
        ("name = ", "not valid TOML"),
    ],
)
def test_backend_errors_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_backend_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (SERVER.replace("lease_seconds = 10", "lease_seconds = -1"), "lease_seconds"),
        (SERVER.replace("lease_seconds = 10", 'lease_seconds = "x"'), "lease_seconds"),
        (
            SERVER.replace("lease_seconds = 10", "lease_seconds = 0.1"),
            "'lease_seconds' must be at least 0.15 .*, not 0.1",
        ),
        (SERVER.replace("lease_seconds = 10", "lease_seconds = nan"), "finite.*not nan"),
        (SERVER.replace("lease_seconds = 10", "lease_seconds = inf"), "finite.*not inf"),
        (
            SERVER.replace("lease_seconds = 10", "backend_timeout = nan"),
            "'backend_timeout' .*not nan",
        ),
        (
            SERVER.replace("lease_seconds = 10", "probe_interval = inf"),
            "'probe_interval' .*, not inf",
        ),
        (SERVER.split("[[backends]]")[0], "missing required key 'backends'"),
        (SERVER + '\n[[backends]]\nname = "x"\nendpoint = "e"\npublic_key = "k"\n', "exactly 3"),
        (SERVER.replace(KEYS[2], "k"), r"backends\[1\].public_key is not a Z85"),
        (SERVER.replace(KEYS[3], KEYS[1]), "backend public keys must be distinct"),
        (SERVER.replace("lease_seconds = 10", "leader_live_window = 0"), "leader_live_window"),
        (SERVER.replace("lease_seconds = 10", 'leader_live_window = "1"'), "leader_live_window"),
        (
            SERVER.replace("lease_seconds = 10", "leader_live_window = 0.2"),
            "'leader_live_window' .* greater than 'probe_interval'",
        ),
        (SERVER.replace("lease_seconds = 10", "expiry_warning_days = -1"), "expiry_warning_days"),
        (SERVER.replace("lease_seconds = 10", "expiry_warning_days = 4000"), "0 to 3650"),
        (SERVER.replace("lease_seconds = 10", 'expiry_warning_days = "30"'), "expiry_warning"),
        (
            SERVER.replace("lease_seconds = 10", "idle_hold_ms = -1"),
            "'idle_hold_ms' must be 0 to 50",
        ),
        (
            SERVER.replace("lease_seconds = 10", "idle_hold_ms = 51"),
            "'idle_hold_ms' must be 0 to 50",
        ),
        (SERVER.replace("lease_seconds = 10", 'idle_hold_ms = "8"'), "idle_hold_ms"),
        (
            SERVER.replace("lease_seconds = 10", "takeover_hold_ms = -1"),
            "'takeover_hold_ms' must be 0 to 2000",
        ),
        (
            SERVER.replace("lease_seconds = 10", "takeover_hold_ms = 2001"),
            "'takeover_hold_ms' must be 0 to 2000",
        ),
        (SERVER.replace("lease_seconds = 10", "takeover_hold_ms = true"), "takeover_hold_ms"),
        (
            SERVER.replace("lease_seconds = 10", "probe_interval = 1.0"),
            "'leader_live_window' .* greater than 'probe_interval'",
        ),
    ],
)
def test_server_errors_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_server_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_server_config(tmp_path / "nope.toml")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """Not a UnicodeDecodeError out of tomllib: a server's SIGHUP reload must not stop it."""
    path = tmp_path / "c.toml"
    path.write_bytes(b'name = "tmr-\xff"\n' + SERVER.encode())
    with pytest.raises(ConfigError, match=r"c.toml: not UTF-8 text \(byte 12\)"):
        load_server_config(path)
    path.write_bytes(b'name = "backend-\xfe"\n' + BACKEND.encode())
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_backend_config(path)


def test_reload_changes_sort_the_changed_keys(tmp_path: Path) -> None:
    """What `tmr ctl reload` puts in force, and what it names as needing a restart."""
    running = load_server_config(write(tmp_path, SERVER))
    assert reload_changes(running, running) == ([], [])
    keys = f'admin_keys = ["{KEYS[1]}", "{KEYS[2]}"]\nclient_allowlist = ["{KEYS[3]}"]\n'
    new = load_server_config(write(tmp_path, keys + 'policy_file = "/etc/tmr/p.toml"\n' + SERVER))
    assert reload_changes(running, new) == (["client_allowlist", "admin_keys", "policy_file"], [])
    # the same keys in another order are the same list
    swapped = keys.replace(f'"{KEYS[1]}", "{KEYS[2]}"', f'"{KEYS[2]}", "{KEYS[1]}"')
    again = load_server_config(
        write(tmp_path, swapped + 'policy_file = "/etc/tmr/p.toml"\n' + SERVER)
    )
    assert reload_changes(new, again) == ([], [])
    other = SERVER.replace("lease_seconds = 10", "lease_seconds = 20").replace(
        "10.0.0.3", "10.0.0.9"
    )
    changed = load_server_config(write(tmp_path, keys + 'log_level = "debug"\n' + other))
    assert reload_changes(running, changed) == (
        ["client_allowlist", "admin_keys"],
        ["backends", "lease_seconds", "log_level"],
    )
    assert set(RELOADABLE_SERVER_KEYS) <= {f.name for f in fields(ServerConfig)}
