"""The ZAP (RFC 27) handler of both services (design.md §7.1, §11): a REP socket on the
loop, bound before any CURVE socket of the context, answering every handshake itself.

One mechanism for the TMR server's client socket and the backend's peer socket: a CURVE
handshake succeeds if its key is in the allowlist (``allowed``; None admits every key, the
server without ``client_allowlist``), and the User-Id of the connection is the Z85 public key
(the owner of the handles it checks out, `tmr.zmqio.recv_frames_user`). Every refusal goes
through `tmr.zap_log.ZapDenials` (counted, logged once per key and minute).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import zmq
from zmq.utils import z85

from tmr.errors import ConfigError, TmrError
from tmr.licensing.curve import z85_key_bytes
from tmr.zap_log import ZapDenials

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
MAX_ZAP_BATCH = 1000  # handshakes answered per loop turn before the other sockets get a look


def z85_text(raw: bytes) -> str:
    """The Z85 text of a 32-byte key (hex of at most 64 bytes for anything else)."""
    if len(raw) != 32:
        return raw[:64].hex()
    return z85.encode(raw).decode("ascii")


def parse_allowlist(keys: Iterable[str], what: str) -> frozenset[str]:
    """The allowlist of a configuration, each key checked to be a Z85 CURVE public key
    (ConfigError if one is not) and kept as its Z85 text."""
    out = set()
    for i, text in enumerate(keys):
        try:
            out.add(z85_text(z85_key_bytes(text, f"{what}[{i}]")))
        except TmrError as exc:
            raise ConfigError(str(exc)) from None
    return frozenset(out)


def zap_reply(frames: Sequence[bytes], allowed: frozenset[str] | None) -> tuple[list[bytes], bool]:
    """The ZAP answer to one request: 200 only for CURVE with one key that ``allowed`` holds
    (any key if ``allowed`` is None), with the key's Z85 text as User-Id; 400 otherwise, 500
    for a request that is not ZAP 1.0."""
    if len(frames) < 6 or frames[0] != ZAP_VERSION:
        request_id = frames[1] if len(frames) > 1 else b""
        return [ZAP_VERSION, request_id, b"500", b"malformed ZAP request", b"", b""], False
    request_id, mechanism, credentials = frames[1], frames[5], frames[6:]
    if mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32:
        user = z85_text(credentials[0])
        if allowed is None or user in allowed:
            return [ZAP_VERSION, request_id, b"200", b"OK", user.encode("ascii"), b""], True
    return [ZAP_VERSION, request_id, b"400", b"key not allowed", b"", b""], False


class ZapHandler:
    """The ZAP socket of one context and its policy. `bind` it before binding a CURVE server
    socket in that context; the loop calls `serve` when the socket is readable."""

    def __init__(
        self, allowed: frozenset[str] | None, denials: ZapDenials, **log_fields: str
    ) -> None:
        self.allowed = allowed
        self.denials = denials
        self.log_fields = log_fields  # written with every refusal (e.g. socket="client")
        self.sock: zmq.Socket[bytes] | None = None

    def bind(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(ZAP_ENDPOINT)
        self.sock = sock
        return sock

    def serve(self, now: float = 0.0) -> None:
        """Answer the handshakes waiting (at most MAX_ZAP_BATCH)."""
        sock = self.sock
        assert sock is not None
        for _ in range(MAX_ZAP_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply, ok = zap_reply(frames, self.allowed)
            if not ok:
                self.denials.denied(
                    z85_text(frames[6]) if len(frames) > 6 else "",
                    address=frames[3].decode("ascii", "replace") if len(frames) > 3 else "",
                    mechanism=frames[5].decode("ascii", "replace") if len(frames) > 5 else "",
                    **self.log_fields,
                )
            sock.send_multipart(reply)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
