"""The copy file format: strict parsing, canonical encoding, tampering of every field."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lic_world import FIRM, NOW, PRODUCT, World

from tmr.licensing import LicenseCopy, LicenseError, LicenseReason, parse_copy, verify_copy
from tmr.licensing.model import (
    BODY_KEYS,
    MAX_COPY_BYTES,
    SIGNING_CONTEXT,
    assemble,
    body_fields,
    encode_body,
)

R = LicenseReason


def accept(world: World, data: bytes, node: int = 0) -> LicenseCopy:
    """What a backend does with a file: parse strictly, then verify for its fingerprint."""
    copy = parse_copy(data)
    verify_copy(copy, keyring=world.keyring, fingerprint=world.nodes[node].fingerprint, now=NOW)
    return copy


def reason(world: World, data: bytes, node: int = 0) -> LicenseReason:
    with pytest.raises(LicenseError) as info:
        accept(world, data, node)
    return info.value.reason


def split(data: bytes) -> tuple[bytes, bytes]:
    body, sig, _ = data.split(b"\n")
    return body, sig


def with_body(data: bytes, body: bytes) -> bytes:
    """Replace the body, keep the original signature line."""
    return body + b"\n" + split(data)[1] + b"\n"


def resign(world: World, body: bytes) -> bytes:
    """A body signed by the real vendor: isolates the parser's checks from the signature."""
    return assemble(body, world.vendor.sign(SIGNING_CONTEXT + body))


def test_issued_copy_parses_and_verifies(shared_world: World, sample_copy: bytes) -> None:
    copy = accept(shared_world, sample_copy)
    assert (copy.firm_code, copy.product_code, copy.tmr_id, copy.quantity) == (FIRM, PRODUCT, 7, 20)
    assert copy.features == {"edition": "pro", "seats.max": "50"}
    assert copy.expires == int(NOW) + 86_400 * 365
    assert copy.serial == shared_world.nodes[0].doc.serial
    assert list(json.loads(split(sample_copy)[0])) == list(BODY_KEYS)
    assert encode_body(copy.fields()) == copy.body
    assert assemble(copy.body, copy.signature) == sample_copy


def _flip_last_char_of_value(data: bytes, key: str) -> bytes:
    """Change one byte: the last character of the value of ``key`` (a digit, hex digit or
    letter), keeping the file well-formed so the change reaches the signature check."""
    body, sig = split(data)
    if key == "signature":
        pos = len(sig) - 1
        return body + b"\n" + sig[:pos] + (b"0" if sig[pos:] != b"0" else b"1") + b"\n"
    start = body.index(f'"{key}":'.encode()) + len(key) + 3
    end = start
    depth = 0
    while True:  # find the end of the value token
        ch = body[end : end + 1]
        if ch in b"{[":
            depth += 1
        elif ch in b"}]" and depth:
            depth -= 1
        elif ch in {b",", b"}"} and depth == 0:
            break
        end += 1
    pos = end - 1
    while body[pos : pos + 1] in b'"}]':
        pos -= 1
    old = body[pos : pos + 1]
    if old.isdigit():  # keep numbers in range: 9 -> 1, otherwise d -> d + 1
        new = b"1" if old in b"90" else bytes([old[0] + 1])
    elif old in b"abcdef":
        new = b"0"
    else:
        new = b"y" if old == b"x" else b"x"
    return with_body(data, body[:pos] + new + body[pos + 1 :])


FIELD_FLIP_REASONS = {
    "format": R.UNSUPPORTED_VERSION,
    "firm_code": R.UNKNOWN_FIRM,  # 6000123 -> 6000120: another firm's code
    "product_code": R.BAD_SIGNATURE,
    "tmr_id": R.BAD_SIGNATURE,
    "quantity": R.BAD_SIGNATURE,
    "expires": R.BAD_SIGNATURE,
    "features": R.BAD_SIGNATURE,
    "serial": R.BAD_SIGNATURE,
    "fingerprint": R.BAD_SIGNATURE,
    "backend_key": R.BAD_SIGNATURE,
    "set_id": R.BAD_SIGNATURE,
    "set_index": R.BAD_SIGNATURE,  # 1 -> 2: another place in the set
    "issued": R.BAD_SIGNATURE,
    "sealed_product_key": R.BAD_SIGNATURE,
    "signature": R.BAD_SIGNATURE,
}


@pytest.mark.parametrize("key", list(FIELD_FLIP_REASONS))
def test_one_byte_flipped_in_each_field(shared_world: World, sample_copy: bytes, key: str) -> None:
    tampered = _flip_last_char_of_value(sample_copy, key)
    assert sum(a != b for a, b in zip(tampered, sample_copy, strict=True)) == 1
    assert reason(shared_world, tampered) == FIELD_FLIP_REASONS[key]


def test_every_field_is_covered() -> None:
    assert set(FIELD_FLIP_REASONS) == {*BODY_KEYS, "signature"}


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_refused(
    shared_world: World, sample_copy: bytes, data: st.DataObject
) -> None:
    pos = data.draw(st.integers(0, len(sample_copy) - 1), label="pos")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != sample_copy[pos]), label="byte")
    tampered = sample_copy[:pos] + bytes([new]) + sample_copy[pos + 1 :]
    assert reason(shared_world, tampered) in {
        R.MALFORMED,
        R.UNSUPPORTED_VERSION,
        R.UNKNOWN_FIRM,
        R.BAD_SIGNATURE,
    }


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash_the_parser(blob: bytes) -> None:
    with pytest.raises(LicenseError) as info:
        parse_copy(blob)
    assert info.value.reason in {R.MALFORMED, R.UNSUPPORTED_VERSION}


def test_every_truncation_is_malformed(sample_copy: bytes) -> None:
    for cut in range(len(sample_copy)):
        with pytest.raises(LicenseError) as info:
            parse_copy(sample_copy[:cut])
        assert info.value.reason == R.MALFORMED, cut


def test_truncated_and_padded_signatures(shared_world: World, sample_copy: bytes) -> None:
    body, sig = split(sample_copy)
    for bad_sig in (sig[:-2], sig + b"00", sig.upper(), b" " + sig[1:], sig[:-1] + b"g"):
        with pytest.raises(LicenseError, match="signature") as info:
            parse_copy(body + b"\n" + bad_sig + b"\n")
        assert info.value.reason == R.MALFORMED


def test_signature_transplanted_from_another_copy(world: World) -> None:
    one, two, _ = world.copies(world.issue(7))
    transplanted = split(one)[0] + b"\n" + split(two)[1] + b"\n"
    assert reason(world, transplanted) == R.BAD_SIGNATURE
    # and the signature of an older version of the same copy does not fit the newer one
    newer = world.copies(world.issue(8, quantity=30))[0]
    assert reason(world, split(newer)[0] + b"\n" + split(one)[1] + b"\n") == R.BAD_SIGNATURE


def test_duplicate_keys_are_refused_even_when_signed(world: World) -> None:
    body = split(world.copies(world.issue(7))[0])[0]
    # a second "quantity" after the first: a lax parser would read 2000
    dup = body.replace(b'"quantity":20,', b'"quantity":20,"quantity":2000,')
    for data in (with_body(world.copies(world.issue(8))[0], dup), resign(world, dup)):
        with pytest.raises(LicenseError, match="duplicate key") as info:
            parse_copy(data)
        assert info.value.reason == R.MALFORMED
    nested = body.replace(b'"features":{}', b'"features":{"a":"1","a":"2"}')
    with pytest.raises(LicenseError, match="duplicate key"):
        parse_copy(resign(world, nested))


def _fields(data: bytes, **changes: object) -> dict[str, object]:
    fields = parse_copy(data).fields()
    fields.update(changes)
    return fields


def test_non_canonical_encodings_are_refused(world: World) -> None:
    fields = _fields(world.copies(world.issue(7))[0], features={"b": "2", "a": "p"})
    canonical = encode_body(body_fields_from(fields))
    variants = [
        json.dumps(fields, separators=(", ", ": ")).encode(),  # whitespace
        json.dumps(dict(reversed(list(fields.items()))), separators=(",", ":")).encode(),  # order
        canonical.replace(b'{"a":"p","b":"2"}', b'{"b":"2","a":"p"}'),  # unsorted features
        canonical.replace(b'"a":"p"', b'"a":"\\u0070"'),  # needless escape
        canonical.replace(b'"quantity":20', b'"quantity":2e1'),  # float notation
        canonical.replace(b'"quantity":20', b'"quantity":20.0'),
        canonical.replace(b'"quantity":20', b'"quantity":true'),
        canonical + b" ",
    ]
    parse_copy(resign(world, canonical))  # the canonical encoding itself is accepted
    for body in variants:
        assert body != canonical
        with pytest.raises(LicenseError) as info:
            parse_copy(resign(world, body))
        assert info.value.reason == R.MALFORMED, body


def body_fields_from(fields: dict[str, object]) -> dict[str, object]:
    """Fields in canonical order with features sorted (what the vendor tool writes)."""
    out = {k: fields[k] for k in BODY_KEYS}
    out["features"] = dict(sorted(fields["features"].items()))  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"firm_code": 5_999_999}, "firm_code"),
        ({"firm_code": 7_000_000}, "firm_code"),
        ({"product_code": 2**32}, "product_code"),
        ({"product_code": -1}, "product_code"),
        ({"tmr_id": 0}, "tmr_id"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": "20"}, "quantity"),
        ({"serial": "131-1234567"}, "serial"),
        ({"serial": "130-123456"}, "serial"),
        ({"fingerprint": "AB" * 32}, "fingerprint"),
        ({"set_id": "00" * 15}, "set_id"),
        ({"set_index": 0}, "set_index"),
        ({"set_index": 4}, "set_index"),
        ({"set_index": True}, "set_index"),
        ({"backend_key": "00" * 31}, "backend_key"),
        ({"backend_key": "AB" * 32}, "backend_key"),
        ({"sealed_product_key": "00" * 91}, "sealed_product_key"),
        ({"features": {"bad key": "x"}}, "feature name"),
        ({"features": {"k": "\n"}}, "feature 'k'"),
        ({"features": {"k": 1}}, "feature 'k'"),
        ({"features": {f"k{i}": "v" for i in range(65)}}, "features"),
        ({"features": []}, "features"),
        ({"expires": 1_000}, "expires"),  # not after issued
        ({"format": "1"}, "format"),
    ],
)
def test_field_values_are_checked(world: World, change: dict[str, object], match: str) -> None:
    fields = _fields(world.copies(world.issue(7))[0], **change)
    body = json.dumps(fields, separators=(",", ":")).encode()
    with pytest.raises(LicenseError, match=match) as info:
        parse_copy(resign(world, body))
    assert info.value.reason == R.MALFORMED


def test_missing_and_unknown_fields(world: World) -> None:
    data = world.copies(world.issue(7))[0]
    fields = _fields(data)
    del fields["issued"]
    with pytest.raises(LicenseError, match=r"missing \['issued'\]"):
        parse_copy(resign(world, json.dumps(fields, separators=(",", ":")).encode()))
    fields = _fields(data, extra=1)
    with pytest.raises(LicenseError, match=r"unknown \['extra'\]"):
        parse_copy(resign(world, json.dumps(fields, separators=(",", ":")).encode()))


def test_unknown_format_version_even_when_signed(world: World) -> None:
    body = json.dumps({"format": 3, "anything": "new"}, separators=(",", ":")).encode()
    with pytest.raises(LicenseError) as info:
        parse_copy(resign(world, body))
    assert info.value.reason == R.UNSUPPORTED_VERSION


def test_format_1_copy_is_refused_with_the_reissue_path(world: World) -> None:
    """A copy of format 1 (no set index, no backend key), even properly signed, is refused
    as UNSUPPORTED_VERSION with a message naming the way out: the vendor re-issues."""
    fields = _fields(world.copies(world.issue(7))[0], format=1)
    del fields["set_index"], fields["backend_key"]
    with pytest.raises(LicenseError, match=r"no set index and no backend key.*re-issue") as info:
        parse_copy(resign(world, json.dumps(fields, separators=(",", ":")).encode()))
    assert info.value.reason == R.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"{}\n" + b"0" * 128 + b"\n",
        b"[]\n" + b"0" * 128 + b"\n",
        b"[" * 50_000 + b"\n" + b"0" * 128 + b"\n",  # deep nesting, within the size limit
        b"\xff\xfe{}\n" + b"0" * 128 + b"\n",
        b'{"format":NaN}\n' + b"0" * 128 + b"\n",
    ],
)
def test_garbage_is_malformed(data: bytes) -> None:
    with pytest.raises(LicenseError) as info:
        parse_copy(data)
    assert info.value.reason == R.MALFORMED


def test_line_structure(sample_copy: bytes) -> None:
    body, sig = split(sample_copy)
    for data in (
        body + b"\r\n" + sig + b"\r\n",  # CRLF
        body + b"\n" + sig,  # no final newline
        body + b"\n" + sig + b"\n\n",  # trailing blank line
        body + b"\n\n" + sig + b"\n",
    ):
        with pytest.raises(LicenseError) as info:
            parse_copy(data)
        assert info.value.reason == R.MALFORMED


def test_huge_file_is_refused_before_parsing(sample_copy: bytes) -> None:
    body, sig = split(sample_copy)
    padded = body[:-1] + b"," + b'"x":"' + b"a" * MAX_COPY_BYTES + b'"}' + b"\n" + sig + b"\n"
    with pytest.raises(LicenseError, match="limit is 65536") as info:
        parse_copy(padded)
    assert info.value.reason == R.MALFORMED
    with pytest.raises(LicenseError, match="limit is 65536"):
        parse_copy(b"x" * 100 * MAX_COPY_BYTES)


feature_names = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
feature_values = st.from_regex(r"[\x20-\x7e]{0,40}", fullmatch=True)


@st.composite
def body_field_sets(draw: st.DrawFn) -> dict[str, object]:
    issued = draw(st.integers(0, 2**39))
    lifetime = draw(st.none() | st.integers(1, 2**39))
    return body_fields(
        firm_code=draw(st.integers(6_000_000, 6_999_999)),
        product_code=draw(st.integers(0, 2**32 - 1)),
        tmr_id=draw(st.integers(1, 2**32 - 1)),
        quantity=draw(st.integers(1, 2**32 - 1)),
        expires=None if lifetime is None else issued + lifetime,
        features=draw(st.dictionaries(feature_names, feature_values, max_size=8)),
        serial=f"130-{draw(st.integers(0, 9_999_999)):07d}",
        fingerprint=draw(st.binary(min_size=32, max_size=32)).hex(),
        backend_key=draw(st.binary(min_size=32, max_size=32)).hex(),
        set_id=draw(st.binary(min_size=16, max_size=16)).hex(),
        set_index=draw(st.integers(1, 3)),
        issued=issued,
        sealed_product_key=draw(st.binary(min_size=92, max_size=92)),
    )


@settings(max_examples=150, deadline=None)
@given(fields=body_field_sets(), sig=st.binary(min_size=64, max_size=64))
def test_encode_parse_round_trip(fields: dict[str, object], sig: bytes) -> None:
    data = assemble(encode_body(fields), sig)
    copy = parse_copy(data)
    assert copy.fields() == fields
    assert copy.signature == sig
    assert assemble(encode_body(copy.fields()), copy.signature) == data
