"""The local control socket of a service: JSON over a ZeroMQ REQ/REP pair on a unix socket.

keepalived runs `tmr ctl --socket PATH promote|demote|health`; operators run `status`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import zmq

from tmr.errors import TmrError


class CtlError(TmrError):
    """The control socket is missing, not answering, or answered nonsense."""


def bind_ctl(ctx: zmq.Context[zmq.Socket[bytes]], path: Path) -> zmq.Socket[bytes]:
    """Bind a REP socket on `path` (parent created; socket file 0660)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()  # a stale socket of a previous run
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    old = os.umask(0o117)
    try:
        sock.bind(f"ipc://{path}")
    finally:
        os.umask(old)
    return sock


def decode_ctl(frame: bytes) -> dict[str, Any]:
    try:
        req = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CtlError(f"control request is not JSON: {exc}") from None
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        raise CtlError('control request must be {"cmd": "..."}')
    return req


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
