"""Attack: read the seat table (handle ids, client ids) and metrics from the network.

WebAdmin listened on 0.0.0.0 by default, without authentication: anyone who could reach port
22380 read `/api/status`, with every handle id and its client id. Now WebAdmin listens on
loopback unless configured otherwise; an address that is not loopback needs credentials (a
bearer token, whose SHA-256 is compared in constant time, basic auth or TLS client
certificates), or the server refuses to start; `/metrics` takes the same credentials; and a
reader without credentials (loopback only) sees no handle ids."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from zmq.utils import z85

from tmr.config import load_server_config
from tmr.errors import ConfigError
from tmr.web.server import WebAdmin, read_token

TOKEN = "Zq3v-0rG8yHkP2mW7xT5nB1cL9dF4sJ6aE0uQ"
BACKENDS = "".join(
    f'\n[[backends]]\nname = "backend-{i}"\nendpoint = "tcp://10.0.0.{i}:22360"\n'
    f'public_key = "{z85.encode(bytes([i]) * 32).decode()}"\n'
    for i in (1, 2, 3)
)


def server_toml(tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "server.toml"
    p.write_text(
        'name = "tmr-a"\nservice_key_file = "/s.key"\nnode_key_file = "/n.key"\n' + extra + BACKENDS
    )
    return p


def test_webadmin_listens_on_loopback_by_default(tmp_path: Path) -> None:
    assert load_server_config(server_toml(tmp_path, "")).web_listen == "127.0.0.1:22380"


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:22380", "10.0.0.11:22380", "[::]:22380", "tmr-a.example.com:22380"]
)
def test_a_public_address_without_credentials_is_refused(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match=r"not a loopback address.*web_auth_token_file"):
        load_server_config(server_toml(tmp_path, f'web_listen = "{listen}"\n'))
    with_token = f'web_listen = "{listen}"\nweb_auth_token_file = "/etc/tmr/web.token"\n'
    assert load_server_config(server_toml(tmp_path, with_token)).web_listen == listen


@pytest.mark.parametrize("listen", ["127.0.0.1:22380", "127.0.0.2:1", "[::1]:22380"])
def test_loopback_needs_no_credentials(tmp_path: Path, listen: str) -> None:
    assert load_server_config(server_toml(tmp_path, f'web_listen = "{listen}"\n')).web_listen


def test_webadmin_never_serves_anonymously_on_a_public_address() -> None:
    web = WebAdmin("0.0.0.0:0", CollectorRegistry())
    try:
        with pytest.raises(ConfigError, match="without authentication"):
            web.start()
    finally:
        web.stop()


def _snapshot() -> dict[str, Any]:
    row = {"handle": "h3-tmr-a-" + "ab" * 16, "client_id": "ws-7/12/x", "seats": 1}
    return {
        "server": "tmr-a",
        "role": "active",
        "licenses": [],
        "backends": [],
        "handles": {"total": 1, "shown": [row], "truncated": False},
    }


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    p = tmp_path / "web.token"
    p.write_text(TOKEN + "\n")
    p.chmod(0o600)
    return p


def _serve(web: WebAdmin) -> Iterator[WebAdmin]:
    web.start()
    web.publish(_snapshot())
    try:
        yield web
    finally:
        web.stop()


@pytest.fixture
def locked(token_file: Path) -> Iterator[WebAdmin]:
    yield from _serve(
        WebAdmin("127.0.0.1:0", CollectorRegistry(), token_sha256=read_token(token_file))
    )


@pytest.fixture
def anonymous() -> Iterator[WebAdmin]:
    yield from _serve(WebAdmin("127.0.0.1:0", CollectorRegistry()))


def get(web: WebAdmin, path: str, auth: str | None = None) -> tuple[int, bytes]:
    assert web._httpd is not None
    host, port = web._httpd.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": auth} if auth else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("path", ["/api/status", "/metrics", "/"])
def test_the_token_guards_status_metrics_and_the_page(locked: WebAdmin, path: str) -> None:
    assert get(locked, path)[0] == 401
    assert get(locked, path, "Bearer " + TOKEN[:-1] + "x")[0] == 401
    assert get(locked, path, basic("ops", "wrong-token-wrong-token"))[0] == 401
    assert get(locked, path, "Bearer " + TOKEN)[0] == 200
    assert get(locked, path, basic("anyone", TOKEN))[0] == 200  # browsers: token as password
    assert get(locked, "/healthz")[0] == 200  # probes: no details, no credentials


def test_only_an_authenticated_reader_sees_handle_ids(
    locked: WebAdmin, anonymous: WebAdmin
) -> None:
    handle = _snapshot()["handles"]["shown"][0]["handle"]
    status, body = get(anonymous, "/api/status")
    assert status == 200 and handle.encode() not in body
    (row,) = json.loads(body)["handles"]["shown"]
    assert row["handle"] is None and row["seats"] == 1
    status, body = get(locked, "/api/status", "Bearer " + TOKEN)
    assert status == 200 and json.loads(body)["handles"]["shown"][0]["handle"] == handle
    assert TOKEN.encode() not in body


@pytest.mark.parametrize("text", ["", "short", "has a space in it here", "x" * 5000])
def test_a_bad_token_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    p = tmp_path / "web.token"
    p.write_text(text)
    with pytest.raises(ConfigError, match="token"):
        read_token(p)
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(tmp_path / "missing.token")
