from __future__ import annotations

import pytest

from tmr.cli.main import _join_key_values, main


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
