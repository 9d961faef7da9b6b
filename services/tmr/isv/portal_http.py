"""`tmr vendor serve`: the activation service over HTTP(S) with a JSON API.

    GET  /v1/health                              -> {"ok": true, "firm_code": ...}
    POST /v1/activate {"ticket": T, "request": <request file>}  -> {"update": <update file>, ...}
    POST /v1/receipts {"ticket": T, "receipt": <receipts file>} -> {"confirmed": true, ...}

Every error is ``{"error": {"code": CODE, "message": TEXT}}`` with a 4xx/5xx status; the
client never sees a traceback. Bodies are bounded (`MAX_BODY`), must declare their length
and be JSON; a slow or broken client only costs its own thread (socket timeout).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tmr.errors import TmrError
from tmr.isv.portal import PortalError, PortalReason, TicketStore
from tmr.isv.profile import VendorProfile
from tmr.licensing.exchange import (
    MAX_EXCHANGE_BYTES,
    ExchangeError,
    ExchangeReason,
    canonical,
    parse_receipts,
    parse_request,
)

log = logging.getLogger("tmr.vendor.serve")

MAX_BODY = MAX_EXCHANGE_BYTES + 64 * 1024
SOCKET_TIMEOUT = 30.0

_STATUS: dict[str, HTTPStatus] = {
    PortalReason.BAD_TICKET: HTTPStatus.BAD_REQUEST,
    PortalReason.UNKNOWN_TICKET: HTTPStatus.NOT_FOUND,
    PortalReason.TICKET_EXPIRED: HTTPStatus.GONE,
    PortalReason.TICKET_BOUND_ELSEWHERE: HTTPStatus.CONFLICT,
    PortalReason.NO_CURRENT_SET: HTTPStatus.CONFLICT,
    PortalReason.ALREADY_LICENSED: HTTPStatus.CONFLICT,
    PortalReason.NOT_ACTIVATED: HTTPStatus.CONFLICT,
    PortalReason.OTHER_SET: HTTPStatus.CONFLICT,
    ExchangeReason.MALFORMED: HTTPStatus.BAD_REQUEST,
    ExchangeReason.UNSUPPORTED_VERSION: HTTPStatus.BAD_REQUEST,
    ExchangeReason.WRONG_KIND: HTTPStatus.BAD_REQUEST,
    ExchangeReason.WRONG_TRIO: HTTPStatus.CONFLICT,
    ExchangeReason.OLDER_TMR_ID: HTTPStatus.CONFLICT,
    ExchangeReason.ALREADY_CONFIRMED: HTTPStatus.CONFLICT,
}


class ApiProblem(Exception):
    """An HTTP-level refusal (bad method, size, content) with its code."""

    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise ApiProblem(
            HTTPStatus.BAD_REQUEST, "BAD_BODY", f"field {name!r} missing or not a {kind.__name__}"
        )
    return value


class PortalService:
    """The API without HTTP: method, path and body in, status and JSON out."""

    def __init__(self, vendor: VendorProfile) -> None:
        self.vendor = vendor
        self.store = TicketStore(vendor)

    def handle(self, method: str, path: str, body: bytes | None) -> tuple[HTTPStatus, Any]:
        try:
            return HTTPStatus.OK, self._route(method, path, body)
        except ApiProblem as exc:
            return exc.status, _error(exc.code, str(exc))
        except PortalError as exc:
            return _STATUS.get(exc.reason, HTTPStatus.CONFLICT), _error(exc.reason, str(exc))
        except ExchangeError as exc:
            status = _STATUS.get(exc.reason, HTTPStatus.UNPROCESSABLE_ENTITY)
            return status, _error(exc.reason, str(exc))
        except TmrError as exc:  # e.g. a UsageError of issuing: the vendor's side
            log.error("%s %s refused: %s", method, path, exc)
            return HTTPStatus.UNPROCESSABLE_ENTITY, _error("REFUSED", str(exc))

    def _route(self, method: str, path: str, body: bytes | None) -> Any:
        routes = {"/v1/health": "GET", "/v1/activate": "POST", "/v1/receipts": "POST"}
        if path not in routes:
            raise ApiProblem(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no endpoint {path[:100]!r}")
        if method != routes[path]:
            raise ApiProblem(
                HTTPStatus.METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", f"{path} takes {routes[path]}"
            )
        if path == "/v1/health":
            return {"ok": True, "firm_code": self.vendor.firm_code}
        obj = _json_body(body)
        ticket = _field(obj, "ticket", str)
        if path == "/v1/activate":
            request = parse_request(canonical(_field(obj, "request", dict)), "request")
            activation = self.store.activate(ticket, request)
            log.info(
                "ticket %s...: %s set %s #%d",
                ticket[:8],
                "replayed" if activation.replayed else "issued",
                activation.update.set_id,
                activation.update.tmr_id,
            )
            return activation.to_obj()
        bundle = parse_receipts(canonical(_field(obj, "receipt", dict)), "receipt file")
        summary = self.store.receipts(ticket, bundle)
        log.info("ticket %s...: set %s confirmed installed", ticket[:8], bundle.set_id)
        return summary


def _error(code: str, message: str) -> dict[str, Any]:
    prefix = f"{code}: "
    return {"error": {"code": code, "message": message.removeprefix(prefix)}}


def _json_body(body: bytes | None) -> dict[str, Any]:
    if body is None:
        raise ApiProblem(HTTPStatus.BAD_REQUEST, "BAD_BODY", "a JSON body is required")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise ApiProblem(HTTPStatus.BAD_REQUEST, "BAD_BODY", "the body is not JSON") from None
    if not isinstance(obj, dict):
        raise ApiProblem(HTTPStatus.BAD_REQUEST, "BAD_BODY", "the body is not a JSON object")
    return obj


class _Handler(BaseHTTPRequestHandler):
    server: PortalHTTPServer
    timeout = SOCKET_TIMEOUT
    server_version = "tmr-vendor"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _answer(self, status: HTTPStatus, obj: Any) -> None:
        data = (json.dumps(obj, indent=2) + "\n").encode("ascii")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            raise ApiProblem(
                HTTPStatus.LENGTH_REQUIRED, "LENGTH_REQUIRED", "send Content-Length, not chunks"
            )
        text = self.headers.get("Content-Length")
        if text is None:
            if self.command == "POST":
                raise ApiProblem(
                    HTTPStatus.LENGTH_REQUIRED, "LENGTH_REQUIRED", "Content-Length is required"
                )
            return None
        if not text.isdigit():
            raise ApiProblem(HTTPStatus.BAD_REQUEST, "BAD_BODY", "bad Content-Length")
        length = int(text)
        if length > MAX_BODY:
            raise ApiProblem(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "TOO_LARGE",
                f"the body may have at most {MAX_BODY} bytes",
            )
        data = self.rfile.read(length)
        if len(data) != length:
            raise ApiProblem(HTTPStatus.BAD_REQUEST, "BAD_BODY", "the body is shorter than sent")
        return data

    def _serve(self) -> None:
        try:
            body = self._read_body()
            ctype = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
            if body is not None and ctype != "application/json":
                raise ApiProblem(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "BAD_CONTENT_TYPE", "send application/json"
                )
            status, obj = self.server.service.handle(self.command, self.path.split("?")[0], body)
        except ApiProblem as exc:
            status, obj = exc.status, _error(exc.code, str(exc))
        except (OSError, ssl.SSLError):
            raise  # the connection broke: nobody to answer
        except Exception:  # never a traceback to the client; the log has it
            log.exception("%s %s failed", self.command, self.path[:100])
            status, obj = HTTPStatus.INTERNAL_SERVER_ERROR, _error("INTERNAL", "internal error")
        self._answer(status, obj)

    do_GET = _serve  # noqa: N815 (the stdlib's names)
    do_POST = _serve  # noqa: N815 (the stdlib's names)
    do_PUT = _serve  # noqa: N815 (the stdlib's names)
    do_DELETE = _serve  # noqa: N815 (the stdlib's names)
    do_PATCH = _serve  # noqa: N815 (the stdlib's names)


class PortalHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], service: PortalService, tls: ssl.SSLContext | None
    ) -> None:
        self.service = service
        self.tls = tls
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:  # handshake in the request's thread, not the accept loop
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("connection from %s failed", client_address, exc_info=log.isEnabledFor(10))


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        from tmr.errors import UsageError

        raise UsageError(f"--listen {text!r}: give HOST:PORT (PORT 0: any free port)")
    return host.strip("[]"), int(port)


def make_server(
    vendor: VendorProfile, listen: tuple[str, int], tls: ssl.SSLContext | None = None
) -> PortalHTTPServer:
    return PortalHTTPServer(listen, PortalService(vendor), tls)


def serve_in_thread(server: PortalHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="vendor-serve", daemon=True)
    thread.start()
    return thread
