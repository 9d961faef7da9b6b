"""The one exception of the wire format.

`ProtocolError` is raised for every frame or message that does not follow the client
protocol: undecodable msgpack, oversized frames, wrong types, out-of-range values, unknown
operations, missing or extra keys. It is a `tmr.errors.BadRequest`, so the server can answer
it with ``error=BAD_REQUEST`` and its `message`, echoing `rid` when it could be read.
"""

from __future__ import annotations

from tmr.errors import BadRequest, ErrorCode


class ProtocolError(BadRequest):
    """A malformed, oversized or wrongly typed message (error code ``BAD_REQUEST``).

    Attributes:
        code: always `ErrorCode.BAD_REQUEST`.
        message: a short human-readable reason, safe to send back to the peer.
        rid: the request id of the offending message if it could be read and is valid,
            else ``None`` (the server then answers with ``rid=""``).
    """

    code = ErrorCode.BAD_REQUEST

    def __init__(self, message: str, *, rid: str | None = None) -> None:
        super().__init__(message)
        self.rid = rid

    def __repr__(self) -> str:
        return f"ProtocolError({self.message!r}, rid={self.rid!r})"
