from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import zmq

from tmr.cli.main import _join_key_values, main
from tmr.ctl import bind_ctl, decode_ctl, encode_ctl


def test_key_values_beginning_with_a_dash_are_kept_as_values() -> None:
    argv = ["client", "--server-key", "-abc", "--json", "list"]
    assert _join_key_values(argv) == ["client", "--server-key=-abc", "--json", "list"]
    assert _join_key_values(["--server-key"]) == ["--server-key"]


def test_a_dash_key_reaches_the_client_not_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    key = "-" + "a" * 39  # a Z85 key may begin with "-"
    rc = main(
        [
            "client",
            "--server-key",
            key,
            "--endpoint",
            "tcp://127.0.0.1:9",
            "--timeout",
            "0.2",
            "list",
        ]
    )
    err = capsys.readouterr().err
    assert rc != 2, err  # 2 would be argparse refusing the command line
    assert "expected one argument" not in err


def test_ctl_promote_force_reaches_the_control_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tmr ctl promote --force` sends {"cmd": "promote", "force": true}; plain promote no
    force; --force with another command is refused before anything is sent."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = bind_ctl(ctx, tmp_path / "server.sock")
    seen: list[dict[str, Any]] = []

    def serve(n: int) -> None:
        for _ in range(n):
            req = decode_ctl(sock.recv())
            seen.append(req)
            sock.send(encode_ctl({"ok": True, "role": "takeover"}))

    t = threading.Thread(target=serve, args=(2,))
    t.start()
    try:
        path = str(tmp_path / "server.sock")
        assert main(["ctl", "--socket", path, "promote", "--force"]) == 0
        assert main(["ctl", "--socket", path, "promote"]) == 0
        assert main(["ctl", "--socket", path, "--force", "status"]) == 2
        assert "--force only goes with promote" in capsys.readouterr().err
    finally:
        t.join(10)
        sock.close(linger=0)
        ctx.term()
    assert seen == [{"cmd": "promote", "force": True}, {"cmd": "promote"}]
