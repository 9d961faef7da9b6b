"""Online delivery end to end on 127.0.0.1: `tmr vendor serve` as its own process, a ticket,
the customer's request (the offline commands), `tmr license activate`, install, receipts
posted with `tmr license send-receipt`; bad bodies get 4xx and the service keeps serving."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tmr.isv import load_vendor
from tmr.isv.offline import confirmed_sets

pytestmark = [pytest.mark.integration]
SERVICES = Path(__file__).resolve().parents[2] / "services"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{SERVICES}{os.pathsep}{env.get('PYTHONPATH', '')}"
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(name, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    return env


def tmr(cwd: Path, *argv: str, rc: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tmr", *argv],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == rc, (argv, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc


@dataclass
class Service:
    proc: subprocess.Popen[str]
    url: str

    def alive(self) -> bool:
        return self.proc.poll() is None


def _start(cwd: Path, *extra: str) -> Service:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tmr", "vendor", "serve", "--dir", "v", "--listen",
         "127.0.0.1:0", *extra],
        cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)  # the address line, once listening
    assert ready, "tmr vendor serve printed no address within 60 s"
    line = proc.stdout.readline()
    assert line, f"tmr vendor serve exited: {proc.wait(10)}"
    return Service(proc, json.loads(line)["listening"])


def _stop(svc: Service) -> None:
    if svc.alive():
        svc.proc.send_signal(signal.SIGTERM)
        try:
            svc.proc.wait(15)
        except subprocess.TimeoutExpired:
            svc.proc.kill()
            svc.proc.wait(5)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """A vendor directory and three backends' request (made with the offline commands)."""
    tmr(tmp_path, "vendor", "init", "--dir", "v", "--firm-code", "6000123")
    for i in (1, 2, 3):
        _backend_request(tmp_path, f"b{i}", i)
    fps = [a for i in (1, 2, 3) for a in ("--fingerprint", f"b{i}/fp.json")]
    tmr(tmp_path, "license", "request", *fps, "--out", "req.json")
    return tmp_path


def _backend_request(root: Path, name: str, i: int) -> None:
    (root / name / "lic").mkdir(parents=True)
    (root / name / "mid").write_text(f"{i:032x}\n")
    tmr(root, "keygen", "--out", f"{name}/node.key")
    tmr(
        root, "backend", "fingerprint", *_backend(name), "--signed", "--vendor-key",
        "v/vendor.pub", "--container-serial", "131-0000042", "--out", f"{name}/fp.json",
    )  # fmt: skip


def _backend(name: str) -> list[str]:
    return ["--key", f"{name}/node.key", "--machine-id-file", f"{name}/mid"]


@pytest.fixture
def service(world: Path) -> Iterator[Service]:
    svc = _start(world)
    try:
        yield svc
    finally:
        _stop(svc)


def _raw(svc: Service, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes as they are; the status and JSON of the answer."""
    host, port = svc.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, json.loads(resp.read())


def _post(
    svc: Service, path: str, body: bytes, ctype: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return _raw(svc, head.encode() + body)


def _ticket(root: Path, *extra: str) -> str:
    out = tmr(root, "vendor", "ticket", "create", "--dir", "v", "--product-code", "42", *extra)
    return out.stdout.strip()


def test_activate_retry_refuse_other_trio_and_confirm(world: Path, service: Service) -> None:
    url = service.url
    ticket = _ticket(world, "--quantity", "20", "--tmr-id", "7")
    activate = ["license", "activate", "--ticket", ticket, "--vendor-url", url]
    out = json.loads(tmr(world, *activate, "--request", "req.json", "--out", "upd.json").stdout)
    assert (out["tmr_id"], out["quantity"], out["replayed"]) == (7, 20, False)
    first = (world / "upd.json").read_text()
    # a retry (e.g. the answer was lost): the same set, nothing new issued
    out = json.loads(tmr(world, *activate, "--request", "req.json", "--out", "upd2.json").stdout)
    assert out["replayed"] and (world / "upd2.json").read_text() == first

    # a second trio with the same ticket: refused, nothing written
    for i in (4, 5, 6):
        _backend_request(world, f"b{i}", i)
    fps = [a for i in (4, 5, 6) for a in ("--fingerprint", f"b{i}/fp.json")]
    tmr(world, "license", "request", *fps, "--out", "req2.json")
    err = tmr(world, *activate, "--request", "req2.json", "--out", "x.json", rc=1).stderr
    assert "TICKET_BOUND_ELSEWHERE" in err and "HTTP 409" in err
    assert not (world / "x.json").exists()

    # install with the existing offline command, receipts back online
    for i in (1, 2, 3):
        tmr(
            world, "license", "install-update", "--update", "upd.json", *_backend(f"b{i}"),
            "--license-dir", f"b{i}/lic", "--vendor-key", "v/vendor.pub",
        )  # fmt: skip
        tmr(
            world, "backend", "receipt", *_backend(f"b{i}"), "--license-dir", f"b{i}/lic",
            "--vendor-key", "v/vendor.pub", "--product-code", "42", "--out", f"b{i}/r.json",
        )  # fmt: skip
    rcpts = [a for i in (1, 2, 3) for a in ("--receipt", f"b{i}/r.json")]
    tmr(world, "license", "receipt", *rcpts, "--out", "rcpt.json")
    send = ["license", "send-receipt", "--ticket", ticket, "--vendor-url", url, "rcpt.json"]
    done = json.loads(tmr(world, *send).stdout)
    assert done["confirmed"] and done["tmr_id"] == 7 and not done["already_confirmed"]
    assert json.loads(tmr(world, *send).stdout)["already_confirmed"]  # a retry
    vendor = load_vendor(world / "v")
    assert [r["tmr_id"] for r in confirmed_sets(vendor)] == [7]
    listed = json.loads(tmr(world, "vendor", "ticket", "list", "--dir", "v").stdout)
    assert [(t["ticket"], t["state"], t["tmr_id"]) for t in listed] == [(ticket, "installed", 7)]

    # the update: #8 with 30 seats, for the trio that holds #7 only
    upd_ticket = _ticket(world, "--quantity", "30", "--update")
    act8 = ["license", "activate", "--ticket", upd_ticket, "--vendor-url", url]
    err = tmr(world, *act8, "--request", "req2.json", "--out", "x.json", rc=1).stderr
    assert "WRONG_TRIO" in err
    out = json.loads(tmr(world, *act8, "--request", "req.json", "--out", "upd8.json").stdout)
    assert (out["tmr_id"], out["quantity"]) == (8, 30)
    assert service.alive()


def test_unknown_and_expired_tickets_issue_nothing(world: Path, service: Service) -> None:
    base = ["license", "activate", "--vendor-url", service.url, "--request", "req.json"]
    err = tmr(world, *base, "--ticket", "tkt-" + "a" * 32, "--out", "u.json", rc=1).stderr
    assert "UNKNOWN_TICKET" in err
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).strftime("%Y-%m-%d")
    err = tmr(world, "vendor", "ticket", "create", "--dir", "v", "--product-code", "42",
              "--quantity", "5", "--expires", past, rc=1).stderr  # fmt: skip
    assert "in the past" in err
    deadline = int(time.time()) + 2
    soon = dt.datetime.fromtimestamp(deadline, dt.UTC).isoformat()
    ticket = _ticket(world, "--quantity", "5", "--expires", soon)
    while time.time() <= deadline + 0.1:  # wait until the ticket's expiry has passed
        time.sleep(0.1)
    err = tmr(world, *base, "--ticket", ticket, "--out", "u.json", rc=1).stderr
    assert "TICKET_EXPIRED" in err and "HTTP 410" in err
    assert not (world / "u.json").exists() and not (world / "v" / "issued").exists()


def test_bad_bodies_get_4xx_and_the_service_keeps_serving(world: Path, service: Service) -> None:
    assert _post(service, "/v1/activate", b"{")[0] == 400
    assert _post(service, "/v1/activate", b'{"ticket": 1}')[0] == 400
    assert _post(service, "/v1/activate", b"\x00\xff" * 100)[0] == 400
    status, obj = _post(service, "/v1/activate", b"{}", "text/plain")
    assert (status, obj["error"]["code"]) == (415, "BAD_CONTENT_TYPE")
    too_big = b"POST /v1/activate HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
    status, obj = _raw(service, too_big)
    assert (status, obj["error"]["code"]) == (413, "TOO_LARGE")
    status, obj = _raw(service, b"POST /v1/activate HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, obj["error"]["code"]) == (411, "LENGTH_REQUIRED")
    status, obj = _raw(service, b"GET /v1/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404
    # a body shorter than announced: the server waits for the rest, not forever for everyone
    with socket.create_connection(("127.0.0.1", int(service.url.rsplit(":", 1)[1]))) as s:
        s.sendall(b"POST /v1/activate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert _get_health(service)["ok"]  # another client is served meanwhile
    assert service.alive() and _get_health(service)["ok"]


def _get_health(svc: Service) -> dict[str, Any]:
    status, obj = _raw(svc, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200
    return obj


def _self_signed(root: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = root / "tls.crt", root / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_with_a_self_signed_certificate(world: Path) -> None:
    cert, key = _self_signed(world)
    svc = _start(world, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert svc.url.startswith("https://127.0.0.1:")
        ticket = _ticket(world, "--quantity", "20")
        args = ["license", "activate", "--ticket", ticket, "--vendor-url", svc.url,
                "--request", "req.json", "--out", "upd.json"]  # fmt: skip
        err = tmr(world, *args, rc=1).stderr  # not trusted without the CA file
        assert "CONNECTION" in err and "CERTIFICATE_VERIFY_FAILED" in err
        # a client that never completes the handshake does not block the others
        with socket.create_connection(("127.0.0.1", int(svc.url.rsplit(":", 1)[1]))):
            out = json.loads(tmr(world, *args, "--cafile", str(cert)).stdout)
        assert out["tmr_id"] == 1 and (world / "upd.json").is_file()
        http_url = svc.url.replace("https://", "http://")
        err = tmr(world, *args[:5], http_url, *args[6:], rc=1).stderr
        assert "CONNECTION" in err  # plain HTTP to a TLS port: a clear error, no traceback
        assert svc.alive()
    finally:
        _stop(svc)


def test_connection_refused_is_a_clear_error(world: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        err = tmr(
            world, "license", "activate", "--ticket", "tkt-" + "a" * 32, "--vendor-url",
            f"http://127.0.0.1:{port}", "--request", "req.json", "--out", "u.json", rc=1,
        ).stderr  # fmt: skip
    assert "CONNECTION: cannot reach" in err and not (world / "u.json").exists()
