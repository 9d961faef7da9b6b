"""Crypto calls with a product key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmr.licensing import LicenseError, LicenseReason, crypt
from tmr.licensing.crypt import MAX_CRYPT_DATA

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


@given(st.binary(max_size=4096))
def test_encrypt_decrypt_round_trip(data: bytes) -> None:
    ct = crypt(KEY, "encrypt", data)
    assert len(ct) == 12 + len(data) + 16
    assert crypt(KEY, "decrypt", ct) == data


def test_encryption_uses_a_fresh_nonce() -> None:
    assert crypt(KEY, "encrypt", b"same") != crypt(KEY, "encrypt", b"same")


def test_hmac_is_deterministic_and_keyed() -> None:
    mac = crypt(KEY, "hmac", b"data")
    assert len(mac) == 32
    assert mac == crypt(KEY, "hmac", b"data")
    assert mac != crypt(OTHER, "hmac", b"data")
    assert mac != crypt(KEY, "hmac", b"datb")


def refused(key: bytes, op: str, data: bytes, match: str) -> None:
    with pytest.raises(LicenseError, match=match) as info:
        crypt(key, op, data)
    assert info.value.reason == LicenseReason.CRYPT


@given(st.binary(min_size=1, max_size=64), st.data())
def test_tampered_ciphertext_is_refused(data: bytes, draw: st.DataObject) -> None:
    ct = bytearray(crypt(KEY, "encrypt", data))
    pos = draw.draw(st.integers(0, len(ct) - 1))
    ct[pos] ^= draw.draw(st.integers(1, 255))
    refused(KEY, "decrypt", bytes(ct), "tampered")


def test_bad_inputs() -> None:
    refused(OTHER, "decrypt", crypt(KEY, "encrypt", b"x"), "another key")
    refused(KEY, "decrypt", b"short", "shorter than nonce and tag")
    refused(KEY, "sign", b"x", "unknown operation 'sign'")
    refused(KEY[:16], "encrypt", b"x", "32 bytes")
    refused(KEY, "encrypt", bytes(MAX_CRYPT_DATA + 1), "limit")
