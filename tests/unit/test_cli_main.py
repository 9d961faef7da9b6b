from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tmr import logs
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


@pytest.fixture
def log_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)  # restored (removed) afterwards
    yield
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    logs.configure("tmr", "info")


def test_log_format_flag_holds_for_the_command_and_the_processes_it_starts(
    log_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["--log-format", "json", "config", "check", "--kind", "server", "/nonexistent"])
    assert rc == 1
    assert os.environ[logs.FORMAT_ENV] == "json"
    logging.getLogger("tmr.client").warning("server %s silent", "tmr-a")
    rec = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert (rec["service"], rec["event"], rec["logger"], rec["msg"]) == (
        "tmr-config", "log", "tmr.client", "server tmr-a silent"
    )  # fmt: skip


def test_other_commands_write_library_records_as_text_by_default(
    log_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["config", "check", "--kind", "server", "/nonexistent"])
    logging.getLogger("tmr.workload").warning("slow reply")
    logging.getLogger("tmr.workload").info("below the CLI's level")
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.split(" ", 1)[1] == 'warning tmr-config log logger=tmr.workload msg="slow reply"'


def test_a_bad_log_format_in_the_environment_is_refused(
    log_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    assert main(["config", "check", "--kind", "server", "/nonexistent"]) == 2
    assert capsys.readouterr().err == (
        "tmr: error: TMR_LOG_FORMAT: log format must be one of json, text, not 'xml'\n"
    )


def test_tmr_ctl_loads_neither_the_configuration_nor_cryptography(tmp_path: Path) -> None:
    """keepalived's notify script runs `tmr ctl promote` on the failover path: the command
    imports only what talking to the control socket needs."""
    import subprocess
    import sys

    argv = ["ctl", "--socket", str(tmp_path / "none.sock"), "--timeout", "0.1", "health"]
    code = (
        "import sys\n"
        "from tmr.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m == 'tmr.config' or m.startswith('cryptography')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr
