"""The WebAdmin HTTP server: routes, read-only, auth, TLS with client certificates."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry, Counter

from tmr.errors import ConfigError
from tmr.web.server import SECURITY_HEADERS, WebAdmin, read_password, tls_context, vip_held


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def snapshot(role: str = "active") -> dict[str, Any]:
    return {"server": "tmr-a", "role": role, "licenses": [], "backends": []}


@pytest.fixture
def clock() -> Clock:
    return Clock()


def start(web: WebAdmin) -> tuple[str, int]:
    return web.start()


@pytest.fixture
def web(clock: Clock) -> Iterator[WebAdmin]:
    reg = CollectorRegistry()
    Counter("tmr_test_events", "test counter", registry=reg).inc(3)
    w = WebAdmin("127.0.0.1:0", reg, clock=clock)
    start(w)
    try:
        yield w
    finally:
        w.stop()


def get(
    web: WebAdmin, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    assert web._httpd is not None
    host, port = web._httpd.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def test_status_before_and_after_publish(web: WebAdmin, clock: Clock) -> None:
    code, _, body = get(web, "/api/status")
    assert code == 503 and b"starting" in body
    web.publish(snapshot())
    clock.t += 1.5
    code, headers, body = get(web, "/api/status")
    assert code == 200 and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["server"] == "tmr-a" and doc["stale"] is False and doc["status_age"] == 1.5
    assert doc["vip"] is None and "published_at" not in doc
    for k, v in SECURITY_HEADERS.items():
        assert headers[k] == v


def test_page_assets_metrics_and_404(web: WebAdmin) -> None:
    code, headers, body = get(web, "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script src="app.js">' in body and b'<table id="licenses">' in body
    code, headers, body = get(web, "/app.js")
    assert code == 200 and b"textContent" in body and b"innerHTML" not in body
    code, headers, _ = get(web, "/app.css")
    assert code == 200 and headers["Content-Type"].startswith("text/css")
    code, headers, body = get(web, "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"tmr_test_events_total 3.0" in body
    assert get(web, "/nope")[0] == 404
    assert get(web, "/../etc/passwd")[0] == 404


def test_read_only(web: WebAdmin) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        assert get(web, "/api/status", method=method)[0] == 501
    assert get(web, "/api/status", method="POST")[0] == 404  # only /api/release takes POST
    # Without credentials WebAdmin never releases anything (tmr admin release does).
    code, _, body = get(web, "/api/release", {"X-TMR-Request": "release"}, method="POST")
    assert code == 403 and b"FORBIDDEN" in body
    assert web.take_releases() == []


def test_handles_are_listed_only_while_someone_looks(web: WebAdmin, clock: Clock) -> None:
    assert not web.wants_handles()
    get(web, "/api/status")
    assert web.wants_handles()
    clock.t += 11
    assert not web.wants_handles()
    get(web, "/metrics")  # a Prometheus scrape does not need the handle table
    assert not web.wants_handles()


def test_healthz(web: WebAdmin, clock: Clock) -> None:
    assert get(web, "/healthz")[0] == 503
    web.publish(snapshot())
    assert get(web, "/healthz")[0] == 200
    clock.t += 6  # the poll loop stopped publishing
    assert get(web, "/healthz")[0] == 503
    assert json.loads(get(web, "/api/status")[2])["stale"] is True
    web.publish(snapshot("fenced"))
    assert get(web, "/healthz")[0] == 503


def test_vip(clock: Clock) -> None:
    w = WebAdmin("127.0.0.1:0", CollectorRegistry(), vip="127.0.0.1", clock=clock)
    w.start()
    try:
        w.publish(snapshot())
        assert json.loads(get(w, "/api/status")[2])["vip"] == {"address": "127.0.0.1", "held": True}
    finally:
        w.stop()
    assert vip_held("127.0.0.1") and not vip_held("192.0.2.77")


def _vip_metric(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("tmr_vip_held")


def test_vip_metric(clock: Clock) -> None:
    """tmr_vip_held: keepalived's VRRP outcome on this host, for Prometheus."""
    held = WebAdmin("127.0.0.1:0", CollectorRegistry(), vip="127.0.0.1", clock=clock)
    assert _vip_metric(held.registry) == 1.0
    other = WebAdmin("127.0.0.1:0", CollectorRegistry(), vip="192.0.2.77", clock=clock)
    assert _vip_metric(other.registry) == 0.0
    none = WebAdmin("127.0.0.1:0", CollectorRegistry(), clock=clock)
    assert _vip_metric(none.registry) is None  # no vip in server.toml: no series


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_basic_auth(tmp_path: Path, clock: Clock) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret:with colon\n")
    w = WebAdmin("127.0.0.1:0", CollectorRegistry(), auth=("ops", read_password(pw)), clock=clock)
    w.start()
    try:
        w.publish(snapshot())
        for path in ("/", "/api/status", "/metrics", "/app.js"):
            code, headers, body = get(w, path)
            assert code == 401 and "Basic" in headers["WWW-Authenticate"]
            assert b"s3cret" not in body
        assert get(w, "/", basic("ops", "wrong"))[0] == 401
        assert get(w, "/", basic("root", "s3cret:with colon"))[0] == 401
        assert get(w, "/", {"Authorization": "Basic !!!"})[0] == 401
        assert get(w, "/api/status", basic("ops", "s3cret:with colon"))[0] == 200
        assert get(w, "/healthz")[0] == 200  # probes need no credentials
    finally:
        w.stop()


def test_password_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_password(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_password(tmp_path / "empty")


def test_bind_failure_is_a_config_error(web: WebAdmin) -> None:
    assert web._httpd is not None
    port = web._httpd.server_address[1]
    other = WebAdmin(f"127.0.0.1:{port}", CollectorRegistry())
    with pytest.raises(ConfigError, match="cannot listen"):
        other.start()


# ---------------------------------------------------------------- TLS


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, Any] | None, ca: bool
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer else (name, key)
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_tls_with_client_certificates(tmp_path: Path, clock: Clock) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("tmr test CA", ca_key, None, True)
    _write(tmp_path / "ca", ca, ca_key)
    for name in ("server", "client"):
        k = ec.generate_private_key(ec.SECP256R1())
        _write(tmp_path / name, _cert(name, k, (ca.subject, ca_key), False), k)
    ctx = tls_context(tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.crt")
    w = WebAdmin("127.0.0.1:0", CollectorRegistry(), tls=ctx, clock=clock)
    host, port = w.start()
    try:
        w.publish(snapshot())
        client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        client.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
        conn = http.client.HTTPSConnection(host, port, context=client, timeout=5)
        conn.request("GET", "/api/status")
        assert conn.getresponse().status == 200
        conn.close()
        anonymous = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        conn = http.client.HTTPSConnection(host, port, context=anonymous, timeout=5)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            conn.request("GET", "/api/status")
            conn.getresponse()
        conn.close()
    finally:
        w.stop()
    with pytest.raises(ConfigError, match="TLS"):
        tls_context(tmp_path / "missing.crt", tmp_path / "server.key", None)
