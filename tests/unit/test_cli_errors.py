"""`tmr` prints one line per error; errors the service answered name their code."""

from __future__ import annotations

import pytest

from tmr.cli import client_cmds, main
from tmr.errors import NoLicenseAvailable, QuorumLost, TmrError


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            NoLicenseAvailable("20 of 20 seats of 6000123:42 in use, 1 requested"),
            "tmr: error: NO_LICENSE_AVAILABLE: 20 of 20 seats of 6000123:42 in use, 1 requested",
        ),
        (QuorumLost(""), "tmr: error: QUORUM_LOST"),
        (TmrError("plain failure"), "tmr: error: plain failure"),
    ],
)
def test_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: TmrError, line: str
) -> None:
    def fail(_args: object) -> int:
        raise exc

    monkeypatch.setattr(client_cmds, "cmd_list", fail)
    rc = main.main(["client", "--endpoint", "tcp://127.0.0.1:1", "--server-key", "x" * 40, "list"])
    assert rc == 1
    assert capsys.readouterr().err.strip() == line
