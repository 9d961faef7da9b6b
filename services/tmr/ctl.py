"""The local control socket of a service: JSON over a ZeroMQ REQ/REP pair on a unix socket.

keepalived runs `tmr ctl --socket PATH promote|demote|health`; operators run `status`.
"""

from __future__ import annotations

import enum
import json
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from tmr.errors import TmrError

MAX_CTL_FRAME = 64 * 1024  # a control request is a few hundred bytes
MAX_CTL_DEPTH = 8  # nesting of arrays and objects in one request
MAX_CTL_INT_DIGITS = 20  # longer integers are refused before Python converts them
_SOCKET_MAX_MSG = 1024 * 1024  # larger messages are dropped by ZeroMQ (memory bound)


class CtlErrorCode(enum.StrEnum):
    """The ``code`` of a control socket's error reply."""

    BAD_REQUEST = "BAD_REQUEST"  # not one frame, too large, not JSON, too deep, wrong type
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    INTERNAL = "INTERNAL"  # a bug in the service; it keeps running


class CtlError(TmrError):
    """The control socket is missing, not answering, or answered nonsense; or (in a
    service) a control request that cannot be served, with the code of the reply."""

    def __init__(self, message: str = "", code: CtlErrorCode = CtlErrorCode.BAD_REQUEST) -> None:
        super().__init__(message)
        self.ctl_code = code


@dataclass(frozen=True)
class CtlPeer:
    """The local process on the other end of a control request, from the kernel
    (SO_PEERCRED, which ZeroMQ reports in a message's Peer-Address as ``...:uid:gid:pid``)."""

    uid: int
    gid: int
    pid: int

    @property
    def user(self) -> str:
        """The OS user name of ``uid`` (``uid:N`` if it has no name)."""
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid:{self.uid}"


def ctl_peer(peer_address: str | None) -> CtlPeer | None:
    """The `CtlPeer` of an IPC message's Peer-Address property (None: not available)."""
    if not peer_address:
        return None
    parts = peer_address.rsplit(":", 3)
    if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
        return None
    uid, gid, pid = (int(p) for p in parts[1:])
    return CtlPeer(uid, gid, pid)


def _frame_peer(frame: zmq.Frame) -> CtlPeer | None:
    try:
        address = frame.get("Peer-Address")
        return ctl_peer(address if isinstance(address, str) else None)
    except (zmq.ZMQError, AttributeError, TypeError, ValueError):
        return None


def ctl_error_reply(exc: CtlError) -> dict[str, Any]:
    return {"ok": False, "code": exc.ctl_code.value, "error": str(exc)}


def bind_ctl(ctx: zmq.Context[zmq.Socket[bytes]], path: Path) -> zmq.Socket[bytes]:
    """Bind a REP socket on `path` (parent created; socket file 0660)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()  # a stale socket of a previous run
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, _SOCKET_MAX_MSG)
    old = os.umask(0o117)
    try:
        sock.bind(f"ipc://{path}")
    finally:
        os.umask(old)
    return sock


def _check_depth(text: str) -> None:
    """Refuse JSON nested deeper than MAX_CTL_DEPTH (the decoder would recurse on it)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_CTL_DEPTH:
                raise CtlError(f"control request nested deeper than {MAX_CTL_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_CTL_INT_DIGITS:
        raise CtlError(f"integer longer than {MAX_CTL_INT_DIGITS} digits")
    return int(text)


def _parse_constant(text: str) -> Any:
    raise CtlError(f"{text} is not allowed in a control request")


def decode_ctl(frame: bytes) -> dict[str, Any]:
    """One control request frame -> the request object, or CtlError (BAD_REQUEST).

    Bounded before anything is parsed: size, nesting depth, integer length; NaN and
    Infinity are refused. Never raises anything but CtlError."""
    if len(frame) > MAX_CTL_FRAME:
        raise CtlError(f"control request larger than {MAX_CTL_FRAME} bytes")
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        raise CtlError("control request is not UTF-8") from None
    _check_depth(text)
    try:
        req = json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except CtlError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise CtlError(f"control request is not JSON: {str(exc)[:200]}") from None
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        raise CtlError('control request must be {"cmd": "..."}')
    return req


def serve_ctl(
    sock: zmq.Socket[bytes],
    handler: Callable[[dict[str, Any]], dict[str, Any] | None],
    on_internal_error: Callable[[Exception], None] | None = None,
    *,
    on_peer: Callable[[CtlPeer | None], None] | None = None,
) -> bool:
    """Serve one queued request on a bound control socket (False if none was queued).

    Every request gets exactly one reply: the handler's, or a typed error
    ``{"ok": false, "code": ..., "error": ...}`` for a request of more than one frame, a
    malformed one (`decode_ctl`), a CtlError the handler raises (unknown command, wrong
    argument types) or any other exception (INTERNAL, passed to ``on_internal_error``).
    A handler that returns None answers later itself (a REP socket takes no request until
    then). ``on_peer``, if given, is told who sent the request (`CtlPeer`, None if the kernel
    did not say) before the handler runs."""
    try:
        parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return False
    try:
        if on_peer is not None:
            on_peer(_frame_peer(parts[0]) if parts else None)
        if len(parts) != 1:
            raise CtlError(f"control request must be one frame, not {len(parts)}")
        reply = handler(decode_ctl(parts[0].bytes))
        if reply is None:
            return True  # the handler answers later (`sock.send`), before the next request
    except CtlError as exc:
        reply = ctl_error_reply(exc)
    except Exception as exc:  # never leave the REP socket without an answer
        if on_internal_error is not None:
            on_internal_error(exc)
        reply = ctl_error_reply(CtlError(f"internal error: {exc!r}"[:300], CtlErrorCode.INTERNAL))
    try:
        payload = encode_ctl(reply)
    except (TypeError, ValueError) as exc:
        payload = encode_ctl(
            ctl_error_reply(CtlError(f"reply not encodable: {exc}", CtlErrorCode.INTERNAL))
        )
    sock.send(payload)
    return True


def encode_ctl(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, default=str).encode()


def ctl_request(path: Path, cmd: str, *, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Send one command to a control socket and return its JSON answer."""
    if not path.exists():
        raise CtlError(f"{path}: no control socket (is the service running?)")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{path}")
        sock.send(encode_ctl({"cmd": cmd, **args}))
        if not sock.poll(int(timeout * 1000)):
            raise CtlError(f"{path}: no answer within {timeout:g}s")
        reply = json.loads(sock.recv().decode())
    except zmq.ZMQError as exc:
        raise CtlError(f"{path}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CtlError(f"{path}: answer is not JSON") from None
    finally:
        sock.close()
    if not isinstance(reply, dict):
        raise CtlError(f"{path}: answer is not a JSON object")
    return reply
