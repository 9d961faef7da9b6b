"""Configuration keys of WebAdmin, metrics and the usage record."""

from __future__ import annotations

from pathlib import Path

import pytest
from zmq.utils import z85

from tmr.config import load_backend_config, load_server_config, parse_listen
from tmr.errors import ConfigError

TOP = """
name = "tmr-a"
service_key_file = "/etc/tmr/service.key"
node_key_file = "/etc/tmr/node.key"
"""
BACKENDS = "".join(
    f'\n[[backends]]\nname = "backend-{i}"\nendpoint = "tcp://10.0.0.{i}:22360"\n'
    f'public_key = "{z85.encode(bytes([i]) * 32).decode()}"\n'
    for i in (1, 2, 3)
)


def server(tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "server.toml"
    p.write_text(TOP + extra + BACKENDS)
    return p


def test_defaults(tmp_path: Path) -> None:
    cfg = load_server_config(server(tmp_path, ""))
    assert cfg.web_listen == "127.0.0.1:22380"  # loopback: other addresses need credentials
    assert cfg.web_auth_user is None and cfg.web_tls_cert_file is None
    assert cfg.web_publish_interval == 0.5 and cfg.web_max_handles == 1000
    assert cfg.vip is None and cfg.denial_retention_days == 90.0


def test_all_keys(tmp_path: Path) -> None:
    cfg = load_server_config(
        server(
            tmp_path,
            'web_listen = "[::1]:8080"\nweb_auth_user = "ops"\n'
            'web_auth_password_file = "/etc/tmr/web.pw"\nweb_tls_cert_file = "/c.pem"\n'
            'web_tls_key_file = "/k.pem"\nweb_tls_client_ca_file = "/ca.pem"\n'
            "web_publish_interval = 1\nweb_max_handles = 0\n"
            'web_peer_url = "http://10.0.0.12:22380/"\nvip = "10.0.0.100"\n'
            "denial_retention_days = 30\n",
        )
    )
    assert cfg.web_listen == "[::1]:8080" and parse_listen(cfg.web_listen) == ("::1", 8080)
    assert cfg.web_auth_password_file == Path("/etc/tmr/web.pw")
    assert cfg.web_tls_client_ca_file == Path("/ca.pem")
    assert cfg.web_publish_interval == 1.0 and cfg.web_max_handles == 0
    assert cfg.vip == "10.0.0.100" and cfg.denial_retention_days == 30.0


def test_web_off(tmp_path: Path) -> None:
    assert load_server_config(server(tmp_path, 'web_listen = ""\n')).web_listen is None


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ('web_listen = "22380"\n', "web_listen"),
        ('web_listen = "host:99999"\n', "web_listen"),
        ('web_listen = "::1:80"\n', "brackets"),
        ('web_auth_user = "ops"\n', "together"),
        ('web_auth_password_file = "/pw"\n', "together"),
        ('web_tls_cert_file = "/c.pem"\n', "go together"),
        ('web_tls_client_ca_file = "/ca.pem"\n', "needs"),
        ("web_publish_interval = 0\n", "greater than 0"),
        ("web_max_handles = -1\n", "0 or more"),
        ("web_max_handles = true\n", "boolean"),
        ("denial_retention_days = 'x'\n", "number"),
    ],
)
def test_refused(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_server_config(server(tmp_path, extra))


def test_backend_usage_retention(tmp_path: Path) -> None:
    base = (
        'name = "b1"\nkey_file = "/k"\nstate_dir = "/s"\nlicense_dir = "/l"\n'
        'vendor_keys = ["/v"]\nallowed_servers = ["a"]\n'
    )
    p = tmp_path / "b.toml"
    p.write_text(base)
    assert load_backend_config(p).usage_retention == 100_000
    p.write_text(base + "usage_retention = 500\n")
    assert load_backend_config(p).usage_retention == 500
    p.write_text(base + "usage_retention = -1\n")
    with pytest.raises(ConfigError, match="0 or more"):
        load_backend_config(p)
