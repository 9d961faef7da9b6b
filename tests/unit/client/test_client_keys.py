"""CURVE key loading for clients: Z85 text, .pub files, JSON, ZeroMQ certificates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zmq.auth

from tmr.client import NodeKeys, generate_keypair, load_client_keys, load_public_key
from tmr.client.keys import check_key_pair, key_bytes, valid_z85_key
from tmr.errors import ConfigError


def test_key_pairs() -> None:
    keys = generate_keypair()
    assert valid_z85_key(keys.public) and valid_z85_key(keys.secret)
    assert check_key_pair(keys) == (keys.public.encode(), keys.secret.encode())
    with pytest.raises(ConfigError, match="does not belong"):
        check_key_pair(NodeKeys(generate_keypair().public, keys.secret))
    with pytest.raises(ConfigError, match="Z85"):
        check_key_pair(NodeKeys("x", keys.secret))


@pytest.mark.parametrize(
    "text", ["", "short", "x" * 41, "é" * 40, "~" * 40, "\x00" * 40, "%%%%%" * 8]
)
def test_invalid_z85(text: str) -> None:
    assert not valid_z85_key(text)
    with pytest.raises(ConfigError):
        key_bytes(text)


def test_public_key_as_text_and_files(tmp_path: Path) -> None:
    keys = generate_keypair()
    assert load_public_key(keys.public) == keys.public
    bare = tmp_path / "service.pub"
    bare.write_text(keys.public + "\n")
    assert load_public_key(bare) == keys.public
    assert load_public_key(str(bare)) == keys.public
    doc = tmp_path / "cluster.json"
    doc.write_text(json.dumps({"service_public_key": keys.public, "client_endpoints": []}))
    assert load_public_key(doc) == keys.public
    pair = tmp_path / "pair.json"
    pair.write_text(json.dumps({"public_key": keys.public, "secret_key": keys.secret}))
    assert load_public_key(pair) == keys.public
    public_file, secret_file = zmq.auth.create_certificates(str(tmp_path), "svc")
    expected = zmq.auth.load_certificate(public_file)[0].decode()
    assert load_public_key(public_file) == expected
    assert load_public_key(secret_file) == expected


def test_node_keys_from_files(tmp_path: Path) -> None:
    keys = generate_keypair()
    bare = tmp_path / "client.key"
    bare.write_text(keys.secret)
    assert load_client_keys(bare) == keys
    doc = tmp_path / "client.json"
    doc.write_text(json.dumps({"public": keys.public, "secret": keys.secret}))
    assert load_client_keys(doc) == keys
    _, secret_file = zmq.auth.create_certificates(str(tmp_path), "client")
    public, secret = zmq.auth.load_certificate(secret_file)
    assert secret is not None
    assert load_client_keys(secret_file) == NodeKeys(public.decode(), secret.decode())


def test_bad_key_files(tmp_path: Path) -> None:
    keys = generate_keypair()
    cases = {
        "missing": None,
        "empty": "",
        "junk": "hello world",
        "badjson": "{nope",
        "list": "[1, 2]",
        "badkey": json.dumps({"public": "abc"}),
        "nosecret": json.dumps({"public": keys.public}),
        "mismatch": json.dumps({"public": generate_keypair().public, "secret": keys.secret}),
        "binary": b"\xff\xfe\x00",
        "big": "x" * 70000,
    }
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        with pytest.raises(ConfigError):
            load_client_keys(path)
        if name not in ("nosecret", "mismatch"):
            with pytest.raises(ConfigError):
                load_public_key(path)
    with pytest.raises(ConfigError, match="Z85"):
        load_public_key("A" * 39 + "~")
