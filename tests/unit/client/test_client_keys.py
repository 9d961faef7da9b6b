"""CURVE key loading for clients: Z85 text, .pub files, JSON, ZeroMQ certificates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zmq.auth

from tmr.client import NodeKeys, load_public_key
from tmr.client.keys import key_bytes, valid_z85_key
from tmr.errors import ConfigError


def test_generate_and_from_secret() -> None:
    keys = NodeKeys.generate()
    assert valid_z85_key(keys.public) and valid_z85_key(keys.secret)
    assert NodeKeys.from_secret(keys.secret) == keys
    assert keys.secret not in repr(keys)
    with pytest.raises(ConfigError, match="does not belong"):
        NodeKeys(NodeKeys.generate().public, keys.secret)


@pytest.mark.parametrize(
    "text", ["", "short", "x" * 41, "é" * 40, "~" * 40, "\x00" * 40, "%%%%%" * 8]
)
def test_invalid_z85(text: str) -> None:
    assert not valid_z85_key(text)
    with pytest.raises(ConfigError):
        key_bytes(text)


def test_public_key_as_text_and_files(tmp_path: Path) -> None:
    keys = NodeKeys.generate()
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
    keys = NodeKeys.generate()
    bare = tmp_path / "client.key"
    bare.write_text(keys.secret)
    assert NodeKeys.load(bare) == keys
    doc = tmp_path / "client.json"
    doc.write_text(json.dumps({"public": keys.public, "secret": keys.secret}))
    assert NodeKeys.load(doc) == keys
    _, secret_file = zmq.auth.create_certificates(str(tmp_path), "client")
    public, secret = zmq.auth.load_certificate(secret_file)
    assert secret is not None
    assert NodeKeys.load(secret_file) == NodeKeys(public.decode(), secret.decode())


def test_bad_key_files(tmp_path: Path) -> None:
    keys = NodeKeys.generate()
    cases = {
        "missing": None,
        "empty": "",
        "junk": "hello world",
        "badjson": "{nope",
        "list": "[1, 2]",
        "badkey": json.dumps({"public": "abc"}),
        "nosecret": json.dumps({"public": keys.public}),
        "mismatch": json.dumps({"public": NodeKeys.generate().public, "secret": keys.secret}),
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
            NodeKeys.load(path)
        if name not in ("nosecret", "mismatch"):
            with pytest.raises(ConfigError):
                load_public_key(path)
    with pytest.raises(ConfigError, match="Z85"):
        load_public_key("A" * 39 + "~")
