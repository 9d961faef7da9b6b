"""tmr.protocol: the wire format of the client API.

* `tmr.protocol.codec`: strict msgpack framing (`pack`, `unpack`).
* `tmr.protocol.client_api`: request and reply schemas, `decode_request`, `encode_reply`
  (server side), `encode_request`, `decode_reply` (client side).
* `ProtocolError`: every malformed message (code ``BAD_REQUEST``).
"""

from tmr.protocol.errors import ProtocolError

__all__ = ["ProtocolError"]
