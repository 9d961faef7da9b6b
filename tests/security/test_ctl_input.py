"""Attack: malformed input on the control socket of tmr-server and tmr-backend.

Before the shared decoder (`tmr.ctl.decode_ctl` / `serve_ctl`) a 5,000-digit integer
(ValueError), deeply nested JSON (RecursionError) or a two-frame request (ZMQError) killed
tmr-server. Both services must answer every such request with a typed error reply and keep
serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from tests.integration.cluster_helpers import LocalCluster
from tmr.ctl import MAX_CTL_FRAME, CtlError, decode_ctl, encode_ctl
from tmr.local.cluster import _alive

MALFORMED: dict[str, list[bytes]] = {
    "huge_int": [b'{"cmd": "status", "x": ' + b"9" * 5000 + b"}"],
    "huge_int_top": [b"1" * 5000],
    "deep_list": [b"[" * 100_000 + b"]" * 100_000],
    "deep_object": [b'{"cmd": "status", "a": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001],
    "two_frames": [b'{"cmd": "status"}', b'{"cmd": "status"}'],
    "empty_frame": [b""],
    "oversized": [b'{"cmd": "status", "pad": "' + b"x" * (MAX_CTL_FRAME + 10) + b'"}'],
    "not_utf8": [b"\xff\xfe{"],
    "not_json": [b"{cmd: status"],
    "nan": [b'{"cmd": "status", "x": NaN}'],
    "not_object": [b'["status"]'],
    "cmd_not_string": [b'{"cmd": 7}'],
    "unknown_cmd": [b'{"cmd": "format-disk"}'],
}


def _raw(path: str, frames: list[bytes], timeout: float = 10.0) -> dict[str, Any]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{path}")
        sock.send_multipart(frames)
        assert sock.poll(int(timeout * 1000)), f"no answer to {frames[0][:40]!r}"
        reply = json.loads(sock.recv())
    finally:
        sock.close()
    assert isinstance(reply, dict)
    return reply


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("ctl") / "cluster", quantity=3)
    try:
        yield c
    finally:
        c.stop_all()


@pytest.mark.parametrize("node", ["tmr-a", "backend-1"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_ctl_input_gets_typed_error_and_service_lives(
    cluster: LocalCluster, node: str, case: str
) -> None:
    reply = _raw(cluster.nodes[node]["ctl_socket"], MALFORMED[case])
    assert reply["ok"] is False
    expected = "UNKNOWN_COMMAND" if case == "unknown_cmd" else "BAD_REQUEST"
    assert reply["code"] == expected, reply
    assert reply["error"]
    assert _alive(cluster.nodes[node]["pid"])
    assert cluster.ctl(node, "status")["ok"] is True


def test_server_promote_wrong_type_is_refused(cluster: LocalCluster) -> None:
    reply = _raw(cluster.nodes["tmr-b"]["ctl_socket"], [b'{"cmd": "promote", "force": "yes"}'])
    assert reply == {
        "ok": False,
        "code": "BAD_REQUEST",
        "error": "promote: 'force' must be true or false",
    }
    assert cluster.role("tmr-b") == "standby"


# ---------------------------------------------------------------- the decoder alone


@pytest.mark.parametrize("case", sorted(set(MALFORMED) - {"two_frames", "unknown_cmd"}))
def test_decoder_refuses_with_ctl_error_only(case: str) -> None:
    with pytest.raises(CtlError):
        decode_ctl(MALFORMED[case][0])


def test_decoder_accepts_ordinary_requests() -> None:
    assert decode_ctl(encode_ctl({"cmd": "promote", "force": True})) == {
        "cmd": "promote",
        "force": True,
    }
    assert decode_ctl(b'{"cmd": "x", "s": "[[[[[[[[[[[[[[[[[[[[\\"{{{{{{{{{{{{{{{"}')["cmd"] == "x"
    assert decode_ctl(b'{"cmd": "x", "n": -12345678901234567890}')["n"] == -12345678901234567890
