"""The WebAdmin HTTP server: a `ThreadingHTTPServer` in a background thread.

Routes (GET, read-only, but one POST):

- ``/``: the page (``app.js`` and ``app.css`` beside it) refreshing itself from the API;
- ``/api/status``: the latest status snapshot as JSON;
- ``/metrics``: Prometheus text format;
- ``/healthz``: ``200 ok`` while the poll loop publishes and the server is not fenced,
  else ``503`` (no authentication, no details: for load balancers and probes);
- ``POST /api/release`` (``{"handle": "..."}``, header ``X-TMR-Request: release``): an
  administrator frees a handle (`tmr admin release`), only for an authenticated reader (never
  on a WebAdmin without credentials). The custom header makes a cross-site request need a CORS
  preflight, which is never granted: no CSRF through a browser's stored basic credentials. The
  poll loop takes the request (`take_releases`) and answers it once committed
  (`answer_release`); the handler thread waits for that answer.

Credentials guard every route but ``/healthz``: a bearer token (``Authorization: Bearer``, or
as the password of HTTP basic auth, any user name, for browsers; only its SHA-256 is kept and
compared in constant time), HTTP basic auth of one user (the password read from a file at
start), and TLS client certificates when a client CA is configured. WebAdmin without any of
them listens on a loopback address only (`WebAdmin.start` refuses anything else), and then
lists no handle ids: only an authenticated reader sees them. The handlers never touch the
leader: they read what the poll loop published.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import itertools
import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from tmr.config import parse_listen
from tmr.errors import ConfigError
from tmr.web.metrics import VipCollector
from tmr.web.page import APP_CSS, APP_JS, INDEX_HTML

STALE_AFTER = 5.0  # seconds without a published snapshot before the page says so
HANDLES_INTEREST = 10.0  # the loop lists handles while the page was looked at this recently
VIP_CACHE = 1.0
MAX_PASSWORD = 4096
MIN_TOKEN = 16  # characters of a bearer token (the role generates 43: 256 bits, base64url)
# The classic text exposition format that `generate_latest` writes, understood by every
# Prometheus version (newer prometheus_client versions label it 1.0.0).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RELEASE_HEADER = "X-TMR-Request"  # must be "release" on POST /api/release (CSRF guard)
MAX_RELEASE_BODY = 1024
MAX_RELEASE_HANDLE = 256
RELEASE_WAIT = 10.0  # seconds a release request waits for the poll loop's answer
MAX_RELEASES_QUEUED = 16

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def read_password(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the WebAdmin password file {path}: {exc}") from None
    password = text.rstrip("\r\n")
    if not password or len(password) > MAX_PASSWORD:
        raise ConfigError(f"WebAdmin password file {path} is empty or too long")
    return password


def read_token(path: Path) -> bytes:
    """The SHA-256 of the bearer token in ``path`` (the token itself is not kept)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the WebAdmin token file {path}: {exc}") from None
    token = text.strip()
    if not MIN_TOKEN <= len(token) <= MAX_PASSWORD or not all(33 <= ord(c) < 127 for c in token):
        raise ConfigError(
            f"WebAdmin token file {path} must hold one token of {MIN_TOKEN} to {MAX_PASSWORD} "
            "printable ASCII characters without spaces"
        )
    return hashlib.sha256(token.encode()).digest()


def is_loopback(host: str) -> bool:
    """Is ``host`` (an address, or "localhost") reachable from this machine only?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def tls_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(client_ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"WebAdmin TLS: {exc}") from None
    return ctx


def _ipv4_local(addr: str) -> bool | None:
    """Is the IPv4 address assigned to this host? (Linux: /proc/net/fib_trie)"""
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return None
    for i, line in enumerate(lines[:-1]):
        if line.strip() == f"|-- {addr}" and "/32 host LOCAL" in lines[i + 1]:
            return True
    return False


def _ipv6_local(addr: str) -> bool | None:
    try:
        packed = socket.inet_pton(socket.AF_INET6, addr).hex()
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except (OSError, ValueError):
        return None
    return any(line.split()[0] == packed for line in lines if line.strip())


def vip_held(vip: str) -> bool:
    """True if the virtual IP is on an interface of this host (keepalived put it here)."""
    local = _ipv6_local(vip) if ":" in vip else _ipv4_local(vip)
    if local is not None:
        return local
    family = socket.AF_INET6 if ":" in vip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((vip, 0))
        except OSError:
            return False
    return True


@dataclass
class ReleaseRequest:
    """An administrator's release asked on WebAdmin, for the poll loop."""

    id: int
    handle: str
    by: str  # who asked: "web:<basic-auth user>", "web:token" or "web:cert:<subject CN>"
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    web: WebAdmin


class WebAdmin:
    """The HTTP side: serves what `publish` was last given."""

    def __init__(
        self,
        listen: str,
        registry: CollectorRegistry,
        *,
        auth: tuple[str, str] | None = None,
        token_sha256: bytes | None = None,
        tls: ssl.SSLContext | None = None,
        client_certificates: bool = False,
        vip: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`auth`: basic-auth user and password; `token_sha256`: SHA-256 of the bearer token;
        `client_certificates`: `tls` requires a certificate of the client CA. With none of
        them every reader is anonymous: loopback only, and no handle ids."""
        self.host, self.port = parse_listen(listen)
        self.registry = registry
        self.auth = auth
        self.token_sha256 = token_sha256
        self.tls = tls
        self.open_access = auth is None and token_sha256 is None and not client_certificates
        self.vip = vip
        self.clock = clock
        self._snapshot: dict[str, Any] | None = None
        # A published snapshot not built yet: its builder and the time it was published.
        self._pending: tuple[Callable[[], dict[str, Any]], float] | None = None
        self._lock = threading.Lock()
        self._last_interest = float("-inf")
        self._vip_cache: tuple[float, bool] = (float("-inf"), False)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._releases: queue.Queue[ReleaseRequest] = queue.Queue(MAX_RELEASES_QUEUED)
        self._waiting: dict[int, ReleaseRequest] = {}
        self._release_ids = itertools.count(1)
        if vip:
            registry.register(VipCollector(self._vip_held))

    # ---------------------------------------------------------------- poll-loop side

    def publish(self, snapshot: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        """Hand over a new snapshot (the web thread never mutates it), or a function that
        builds it from what the poll loop read: the first reader then builds it, in its own
        thread, and nobody does while nobody reads (at 1,000 licenses a build costs about as
        much as the leader's status view it comes from)."""
        at = self.clock()
        with self._lock:
            if callable(snapshot):
                self._pending = (snapshot, at)
            else:
                snapshot["published_at"] = at
                self._snapshot, self._pending = snapshot, None

    def snapshot(self) -> dict[str, Any] | None:
        with self._lock:
            pending = self._pending
            if pending is None:
                return self._snapshot
        build, at = pending
        snap = build()  # not under the lock: the poll loop's next publish does not wait
        snap["published_at"] = at
        with self._lock:
            if self._pending is pending:
                self._snapshot, self._pending = snap, None
        return snap

    def take_releases(self) -> list[ReleaseRequest]:
        """The releases asked since the last call (poll-loop side)."""
        out = []
        while True:
            try:
                out.append(self._releases.get_nowait())
            except queue.Empty:
                return out

    def answer_release(self, request_id: int, answer: dict[str, Any]) -> None:
        """The poll loop's answer to a release (the waiting handler returns it)."""
        with self._lock:
            req = self._waiting.pop(request_id, None)
        if req is not None:
            req.answer = answer
            req.done.set()

    def request_release(self, handle: str, by: str) -> tuple[int, dict[str, Any]]:
        """Web-thread side: queue a release and wait for its answer: (HTTP code, body)."""
        req = ReleaseRequest(next(self._release_ids), handle, by)
        with self._lock:
            self._waiting[req.id] = req
        try:
            self._releases.put_nowait(req)
        except queue.Full:
            with self._lock:
                self._waiting.pop(req.id, None)
            return 503, {"ok": False, "code": "BUSY", "error": "too many releases queued"}
        if not req.done.wait(RELEASE_WAIT):
            with self._lock:
                self._waiting.pop(req.id, None)
            return 504, {"ok": False, "code": "TIMEOUT", "error": "no answer from the server"}
        return (200 if req.answer.get("ok") else 409), req.answer

    def wants_handles(self) -> bool:
        """Did someone look at the page or the API recently (worth listing handles)?"""
        return self.clock() - self._last_interest < HANDLES_INTEREST

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> tuple[str, int]:
        """Bind and serve in a daemon thread; returns the bound (host, port)."""
        if self.open_access and not is_loopback(self.host):
            raise ConfigError(
                f"WebAdmin would listen on {self.host} without authentication: set "
                "web_auth_token_file (or web_auth_user and web_auth_password_file), or listen "
                "on a loopback address (127.0.0.1)"
            )
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_cls = type("_BoundServer", (_Server,), {"address_family": family})
        try:
            httpd = server_cls((self.host, self.port), _Handler)
        except OSError as exc:
            raise ConfigError(f"WebAdmin cannot listen on {self.host}:{self.port}: {exc}") from None
        if self.tls is not None:
            httpd.socket = self.tls.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        httpd.web = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="tmr-web", daemon=True
        )
        self._thread.start()
        host, port = httpd.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ---------------------------------------------------------------- content

    def status_document(self) -> dict[str, Any] | None:
        snap = self.snapshot()
        if snap is None:
            return None
        age = max(0.0, self.clock() - snap["published_at"])
        doc = {k: v for k, v in snap.items() if k != "published_at"}
        if self.open_access:
            # Anonymous readers (any local user) see the seats, not the handle ids.
            handles = dict(doc.get("handles") or {})
            handles["shown"] = [{**h, "handle": None} for h in handles.get("shown", [])]
            handles["ids_hidden"] = True
            doc["handles"] = handles
        doc["can_release"] = not self.open_access  # an authenticated reader may release
        doc["status_age"] = round(age, 3)
        doc["stale"] = age > STALE_AFTER
        doc["vip"] = {"address": self.vip, "held": self._vip_held()} if self.vip else None
        return doc

    def _vip_held(self) -> bool:
        assert self.vip is not None
        at, held = self._vip_cache
        now = self.clock()
        if now - at > VIP_CACHE:
            held = vip_held(self.vip)
            self._vip_cache = (now, held)
        return held

    def healthy(self) -> bool:
        doc = self.status_document()
        return doc is not None and not doc["stale"] and doc["role"] != "fenced"

    def authorized(self, header: str | None) -> bool:
        """May this request see the routes behind authentication? (Client certificates
        were checked in the TLS handshake already.)"""
        if self.auth is None and self.token_sha256 is None:
            return True
        if not header or len(header) > 2 * MAX_PASSWORD:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return self._token_ok(value.strip())
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        ok = self._token_ok(password)  # the token as a password: any user name (browsers)
        if self.auth is not None:
            ok_user = hmac.compare_digest(user.encode(), self.auth[0].encode())
            ok_pass = hmac.compare_digest(password.encode(), self.auth[1].encode())
            ok = (ok_user and ok_pass) or ok
        return ok

    def who(self, header: str | None, peer_cert: dict[str, Any] | None) -> str:
        """The name of an authorized reader, for the log: the basic-auth user (when it is the
        configured one), ``token``, or the client certificate's subject CN."""
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() == "basic" and self.auth is not None:
            try:
                user = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                user = ""
            if hmac.compare_digest(user.encode(), self.auth[0].encode()):
                return f"web:{self.auth[0]}"
        if header:
            return "web:token"
        for rdn in (peer_cert or {}).get("subject", ()):
            for key, val in rdn:
                if key == "commonName":
                    return f"web:cert:{str(val)[:64]}"
        return "web"

    def _token_ok(self, token: str) -> bool:
        if self.token_sha256 is None:
            return False
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        return hmac.compare_digest(digest, self.token_sha256)

    def interest(self) -> None:
        self._last_interest = self.clock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "tmr-webadmin"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 15  # a client that stalls loses its thread after this

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log on stderr (the service logs JSON only)

    def do_GET(self) -> None:
        web = self.server.web
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            ok = web.healthy()
            self._send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain")
            return
        if not self._authorized(self.headers.get("Authorization")):
            return
        if path in ("/", "/index.html"):
            web.interest()
            self._send(200, INDEX_HTML.encode(), "text/html; charset=utf-8")
        elif path == "/app.js":
            self._send(200, APP_JS.encode(), "text/javascript; charset=utf-8")
        elif path == "/app.css":
            self._send(200, APP_CSS.encode(), "text/css; charset=utf-8")
        elif path == "/api/status":
            web.interest()
            doc = web.status_document()
            if doc is None:
                self._send(503, b'{"error": "starting"}\n', "application/json")
            else:
                body = json.dumps(doc, default=str, separators=(",", ":")).encode()
                self._send(200, body, "application/json")
        elif path == "/metrics":
            self._send(200, generate_latest(web.registry), METRICS_CONTENT_TYPE)
        else:
            self._send(404, b"not found\n", "text/plain")

    def _authorized(self, header: str | None) -> bool:
        """Whether the request may go on; if not, it was answered 401."""
        if self.server.web.authorized(header):
            return True
        self._send(
            401,
            b"authentication required\n",
            "text/plain",
            {"WWW-Authenticate": 'Basic realm="TMR WebAdmin", charset="UTF-8"'},
        )
        return False

    def do_POST(self) -> None:
        web = self.server.web
        path = self.path.split("?", 1)[0]
        header = self.headers.get("Authorization")
        if not self._authorized(header):
            return
        if path != "/api/release":
            self._send(404, b"not found\n", "text/plain")
            return
        if web.open_access:
            self._json(403, {"ok": False, "code": "FORBIDDEN", "error": "WebAdmin has no "
                             "credentials configured: release with tmr admin release"})  # fmt: skip
            return
        if self.headers.get(RELEASE_HEADER) != "release":
            self._json(
                403, {"ok": False, "code": "FORBIDDEN", "error": f"{RELEASE_HEADER} missing"}
            )
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_RELEASE_BODY:
            self.close_connection = True
            self._json(400, {"ok": False, "code": "BAD_REQUEST", "error": "bad Content-Length"})
            return
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError):
            body = None
        handle = body.get("handle") if isinstance(body, dict) else None
        if (
            not isinstance(handle, str)
            or not 0 < len(handle) <= MAX_RELEASE_HANDLE
            or not handle.isprintable()
        ):
            self._json(
                400, {"ok": False, "code": "BAD_REQUEST", "error": 'expected {"handle": "..."}'}
            )
            return
        cert = None
        if isinstance(self.connection, ssl.SSLSocket):
            cert = self.connection.getpeercert()
        code, answer = web.request_release(handle, web.who(header, cert))
        self._json(code, answer)

    def _json(self, code: int, doc: dict[str, Any]) -> None:
        self._send(code, json.dumps(doc, default=str).encode(), "application/json")

    def _send(
        self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
