"""CURVE node key pairs (tmr.keys) and backend fingerprints."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import zmq

from tmr.errors import ConfigError
from tmr.keys import (
    CurveKeyError,
    NodeKeys,
    generate_keypair,
    load_keypair,
    load_public_key,
    write_keypair,
)
from tmr.licensing import fingerprint_of, make_fingerprint_doc, serial_from_fingerprint
from tmr.licensing.fingerprint import FingerprintDoc, read_machine_id


def test_generate_write_load(tmp_path: Path) -> None:
    keys = generate_keypair()
    assert zmq.curve_public(keys.secret.encode()).decode() == keys.public
    path = tmp_path / "node.key"
    write_keypair(path, keys)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"public": keys.public, "secret": keys.secret}
    assert (tmp_path / "node.key.pub").read_text() == keys.public + "\n"
    assert load_keypair(path) == keys
    assert keys.secret not in repr(keys)


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first, second = generate_keypair(), generate_keypair()
    write_keypair(path, first)
    with pytest.raises(CurveKeyError, match="already exists"):
        write_keypair(path, second)
    assert load_keypair(path) == first
    (tmp_path / "other.key.pub").write_text("x")  # a stray .pub alone also blocks
    with pytest.raises(CurveKeyError, match=r"other\.key\.pub already exists"):
        write_keypair(tmp_path / "other.key", second)
    write_keypair(path, second, force=True)
    assert load_keypair(path) == second
    assert load_public_key(tmp_path / "node.key.pub") == second.public


def test_refuses_mismatched_pair(tmp_path: Path) -> None:
    a, b = generate_keypair(), generate_keypair()
    with pytest.raises(CurveKeyError, match="does not belong"):
        write_keypair(tmp_path / "k", NodeKeys(public=a.public, secret=b.secret))
    (tmp_path / "k").write_text(json.dumps({"public": a.public, "secret": b.secret}))
    with pytest.raises(CurveKeyError, match="does not belong"):
        load_keypair(tmp_path / "k")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "not a key pair file"),
        (b"not json", "not a key pair file"),
        (b'{"public": "x"}', "not a key pair file"),
        (b'{"public": "x", "secret": "y", "z": 1}', "not a key pair file"),
        (b'{"public": "' + b"#" * 40 + b'", "secret": "' + b"#" * 40 + b'"}', "valid Z85"),
        (b'{"public": "abc", "secret": "abc"}', "40-character Z85"),
        (b'{"public": 1, "secret": 2}', "40-character Z85"),
        (b"\xff\xfe", "not ASCII"),
        (b"{" * 5000, "larger than"),
    ],
)
def test_bad_key_files(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(CurveKeyError, match=match):
        load_keypair(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(CurveKeyError, match="cannot read key file"):
        load_keypair(tmp_path / "nope")
    with pytest.raises(CurveKeyError, match="cannot read key file"):
        load_public_key(tmp_path / "nope")


def test_load_public_key_forms(tmp_path: Path) -> None:
    keys = generate_keypair()
    path = tmp_path / "node.key"
    write_keypair(path, keys)
    assert load_public_key(keys.public) == keys.public
    assert load_public_key(path) == keys.public
    assert load_public_key(str(path) + ".pub") == keys.public
    (tmp_path / "bad.pub").write_text("short\n")
    with pytest.raises(CurveKeyError, match="40-character"):
        load_public_key(tmp_path / "bad.pub")


def test_a_public_key_file_whose_key_begins_with_a_brace(tmp_path: Path) -> None:
    """'{' is a Z85 character: about one key in 85 begins with it, and its .pub file is
    the key, not a key pair file in JSON."""
    keys = next(k for k in (generate_keypair() for _ in range(20_000)) if k.public[0] == "{")
    path = tmp_path / "node.key"
    write_keypair(path, keys)
    assert load_public_key(str(path) + ".pub") == keys.public
    assert load_public_key(path) == keys.public


def test_fingerprint_binds_key_and_machine_id() -> None:
    a, b = generate_keypair(), generate_keypair()
    fp = fingerprint_of(a.public, "0123456789abcdef0123456789abcdef")
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fp == fingerprint_of(a.public, "0123456789abcdef0123456789abcdef\n")  # file form
    assert fp != fingerprint_of(a.public, "0123456789abcdef0123456789abcdee")
    assert fp != fingerprint_of(b.public, "0123456789abcdef0123456789abcdef")
    with pytest.raises(ConfigError):
        fingerprint_of(a.public, "  \n")


def test_serial_and_document(tmp_path: Path) -> None:
    keys = generate_keypair()
    doc = make_fingerprint_doc(keys.public, "m")
    assert doc.serial == serial_from_fingerprint(doc.fingerprint)
    assert doc.serial.startswith("130-") and len(doc.serial) == 11
    assert FingerprintDoc.parse(doc.to_json()) == doc
    assert make_fingerprint_doc(keys.public, "m", "130-0000042").serial == "130-0000042"
    with pytest.raises(Exception, match="130-NNNNNNN"):
        make_fingerprint_doc(keys.public, "m", "131-0000042")
    mid = tmp_path / "machine-id"
    mid.write_text("abc\n")
    assert read_machine_id(mid) == "abc"
    mid.write_text("\n")
    with pytest.raises(ConfigError, match="does not hold a machine-id"):
        read_machine_id(mid)
    with pytest.raises(ConfigError, match="cannot read machine-id"):
        read_machine_id(tmp_path / "none")
