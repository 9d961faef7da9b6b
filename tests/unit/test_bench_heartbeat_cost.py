"""`bench.heartbeat_cost`'s arguments: refused before any cluster starts."""

from __future__ import annotations

import pytest

from bench import heartbeat_cost

NEEDS = "--held-after needs --takeovers and --cycle"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--held-after", "1000"], NEEDS),
        (
            ["--held-after", "1000", "--takeovers", "1"],
            NEEDS,
        ),
        (["--held-after", "1000", "--cycle", "1"], NEEDS),
        (["--takeovers", "21"], "--takeovers is 0-20"),
        (["--pause", "121"], "--pause is 0-120 s"),
    ],
)
def test_bad_arguments_are_refused_before_a_cluster_starts(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_cluster(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cluster was started")

    monkeypatch.setattr("bench.run.Cluster", no_cluster)
    monkeypatch.setattr("sys.argv", ["heartbeat_cost", *argv])
    with pytest.raises(SystemExit) as exc:
        heartbeat_cost.main()
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
