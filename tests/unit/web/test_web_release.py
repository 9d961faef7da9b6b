"""WebAdmin's release button (POST /api/release): only for an authenticated administrator,
guarded against cross-site requests, answered with what the poll loop answers."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tmr.web.server import WebAdmin, read_password

HEADERS = {"X-TMR-Request": "release", "Content-Type": "application/json"}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebAdmin]:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    w = WebAdmin("127.0.0.1:0", CollectorRegistry(), auth=("ops", read_password(pw)))
    w.start()
    w.publish({"server": "tmr-a", "role": "active", "licenses": [], "backends": []})
    try:
        yield w
    finally:
        w.stop()


def post(web: WebAdmin, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    assert web._httpd is not None
    host, port = web._httpd.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=15)
    try:
        conn.request("POST", "/api/release", body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data.startswith(b"{") else {})
    finally:
        conn.close()


def poll_loop(web: WebAdmin, answer: dict[str, Any], seen: list[Any]) -> threading.Thread:
    """Stand-in for the server's poll loop: take one release, answer it."""

    def run() -> None:
        for _ in range(500):
            got = web.take_releases()
            if got:
                seen.extend(got)
                web.answer_release(got[0].id, answer)
                return
            threading.Event().wait(0.01)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_an_authenticated_admin_releases_through_the_poll_loop(web: WebAdmin) -> None:
    doc = web.status_document()
    assert doc is not None and doc["can_release"] is True
    seen: list[Any] = []
    answer = {"ok": True, "released": True, "handle": "h1-a-x", "seats": 1}
    t = poll_loop(web, answer, seen)
    code, body = post(web, b'{"handle": "h1-a-x"}', {**HEADERS, **basic("ops", "s3cret")})
    t.join(5)
    assert code == 200 and body == answer
    (req,) = seen
    assert req.handle == "h1-a-x" and req.by == "web:ops"


def test_an_unknown_handle_is_a_conflict_with_the_servers_error(web: WebAdmin) -> None:
    seen: list[Any] = []
    answer = {"ok": False, "code": "UNKNOWN_HANDLE", "error": "no client holds handle 'x'"}
    t = poll_loop(web, answer, seen)
    code, body = post(web, b'{"handle": "x"}', {**HEADERS, **basic("ops", "s3cret")})
    t.join(5)
    assert code == 409 and body["code"] == "UNKNOWN_HANDLE"


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        (b'{"handle": "h"}', HEADERS, 401),  # no credentials
        (b'{"handle": "h"}', {**HEADERS, **basic("ops", "wrong")}, 401),
        (b'{"handle": "h"}', {**basic("ops", "s3cret")}, 403),  # no CSRF header: cross-site form
        (b'{"handle": "h"}', {**basic("ops", "s3cret"), "X-TMR-Request": "x"}, 403),
        (b"not json", {**HEADERS, **basic("ops", "s3cret")}, 400),
        (b'{"handle": 5}', {**HEADERS, **basic("ops", "s3cret")}, 400),
        (b'{"handle": "a\\nb"}', {**HEADERS, **basic("ops", "s3cret")}, 400),
        (b'{"handle": "' + b"h" * 300 + b'"}', {**HEADERS, **basic("ops", "s3cret")}, 400),
        (b"{" + b" " * 2000 + b"}", {**HEADERS, **basic("ops", "s3cret")}, 400),
    ],
)
def test_refused_requests_queue_nothing(
    web: WebAdmin, body: bytes, headers: dict[str, str], code: int
) -> None:
    assert post(web, body, headers)[0] == code
    assert web.take_releases() == []


def test_no_release_button_without_credentials() -> None:
    w = WebAdmin("127.0.0.1:0", CollectorRegistry())
    w.publish({"server": "tmr-a", "role": "active", "licenses": [], "backends": []})
    doc = w.status_document()
    assert doc is not None and doc["can_release"] is False
