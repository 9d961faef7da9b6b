"""Strict msgpack framing: one msgpack map per ZeroMQ message frame.

`pack` turns a plain Python structure into one frame; `unpack` turns one frame back into a
``dict[str, Any]`` and refuses anything that is not exactly one well-formed msgpack map:

* frames larger than ``max_size`` bytes (checked before any decoding work);
* truncated input, trailing bytes after the map, invalid UTF-8 in strings;
* a top level that is not a map;
* map keys that are not strings (at every nesting level), duplicate keys in a map;
* extension types, including the msgpack timestamp type (-1);
* nesting deeper than msgpack's own stack limit.

Strings decode to `str`, binary to `bytes`, arrays to `list`. Every failure raises
`ProtocolError` (code ``BAD_REQUEST``); nothing else escapes `unpack`.
"""

from __future__ import annotations

from typing import Any

import msgpack

from tmr.protocol.errors import ProtocolError

__all__ = ["pack", "unpack", "unpack_flat"]


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"extension type {code} is not allowed")


def _check_value(value: object) -> None:
    if isinstance(value, msgpack.Timestamp | msgpack.ExtType):
        raise ValueError("extension types are not allowed")


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if not isinstance(key, str):
            raise ValueError(f"map keys must be strings, not {type(key).__name__}")
        if key in out:
            raise ValueError(f"duplicate map key {_short(key)}")
        _check_value(value)
        out[key] = value
    return out


def _list_hook(items: list[Any]) -> list[Any]:
    for value in items:
        _check_value(value)
    return items


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pack(obj: Any) -> bytes:
    """Encode `obj` (maps with str keys, lists/tuples, str, bytes, int, float, bool, None).

    Raises `ProtocolError` if `obj` holds something msgpack cannot encode.
    """
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode message: {exc}") from exc
    return data


def unpack(
    frame: bytes | bytearray | memoryview, *, max_size: int, typed_arrays: bool = False
) -> dict[str, Any]:
    """Decode one frame holding exactly one msgpack map with string keys.

    Raises `ProtocolError` for anything else (see the module docstring).

    `typed_arrays`: the caller checks the exact type of every value it takes out of an array
    (the peer API does: `type(v) is int`, ...), so arrays are not walked here for extension
    values (a timestamp in an array then fails the caller's check with its own
    `ProtocolError`). Maps are still checked everywhere. Walking every array in Python costs
    about a third of a backend's CPU on large ACCEPTs.
    """
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise ProtocolError(f"frame must be bytes, not {type(frame).__name__}")
    size = len(frame)
    if size > max_size:
        raise ProtocolError(f"frame too large: {size} bytes (max {max_size})")
    if size == 0:
        raise ProtocolError("empty frame")
    try:
        obj = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
            object_pairs_hook=_pairs_hook,
            list_hook=None if typed_arrays else _list_hook,
        )
    except msgpack.ExtraData:
        raise ProtocolError("trailing bytes after the message") from None
    except msgpack.StackError:
        raise ProtocolError("message nested too deeply") from None
    except UnicodeDecodeError:
        raise ProtocolError("invalid UTF-8 in a string") from None
    except Exception as exc:  # msgpack raises ValueError, TypeError, its own errors...
        reason = str(exc) or type(exc).__name__
        raise ProtocolError(f"malformed msgpack: {_short(reason, 120)}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"message must be a map, not {_wire_type(obj)}")
    return obj


_SCALARS: frozenset[type] = frozenset({str, int, float, bool, bytes, type(None)})


def _map_size(frame: bytes | bytearray | memoryview) -> int:
    """The entry count in the header of a top-level msgpack map (-1: not a map header)."""
    first = frame[0]
    if 0x80 <= first <= 0x8F:
        return first & 0x0F
    if first == 0xDE and len(frame) >= 3:
        return int.from_bytes(frame[1:3], "big")
    if first == 0xDF and len(frame) >= 5:
        return int.from_bytes(frame[1:5], "big")
    return -1


def unpack_flat(frame: bytes | bytearray | memoryview, *, max_size: int) -> dict[str, Any]:
    """`unpack` for frames that usually hold one map of scalars (a client request): the same
    result and the same errors, faster. The map is decoded by msgpack alone and accepted if it
    visibly meets every rule of `unpack` (string keys, no duplicate, scalar values only);
    anything else, valid or not, goes through `unpack` itself."""
    if isinstance(frame, bytes | bytearray | memoryview) and 0 < len(frame) <= max_size:
        try:
            obj = msgpack.unpackb(
                frame, raw=False, strict_map_key=True, use_list=True, ext_hook=_reject_ext
            )
        except Exception:  # the strict path below says exactly what is wrong
            obj = None
        if (
            type(obj) is dict
            and len(obj) == _map_size(frame)  # a duplicate key would make it shorter
            and all(type(k) is str for k in obj)
            and all(type(v) in _SCALARS for v in obj.values())
        ):
            return obj
    return unpack(frame, max_size=max_size)


def _wire_type(obj: object) -> str:
    match obj:
        case None:
            return "nil"
        case bool():
            return "bool"
        case int():
            return "int"
        case float():
            return "float"
        case str():
            return "str"
        case bytes():
            return "bin"
        case list():
            return "array"
        case _:
            return type(obj).__name__
