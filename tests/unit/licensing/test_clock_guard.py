"""The clock-rollback guard: durable high-water mark of the wall clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tmr.errors import ConfigError
from tmr.licensing import ClockGuard, LicenseError, LicenseReason


class FakeTime:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def guard(path: Path, clock: FakeTime, tolerance: float = 300.0) -> ClockGuard:
    return ClockGuard(path, tolerance=tolerance, time_source=clock)


def test_trusted_time_follows_the_clock_forward(tmp_path: Path) -> None:
    clock = FakeTime(1000.0)
    g = guard(tmp_path / "clock", clock)
    assert g.now() == 1000.0 and not g.rolled_back
    clock.t = 5000.0
    assert g.now() == 5000.0 and not g.rolled_back
    assert json.loads((tmp_path / "clock").read_text()) == {"highest_time": 5000.0}


def test_small_step_back_is_tolerated_but_time_never_goes_back(tmp_path: Path) -> None:
    clock = FakeTime(10_000.0)
    g = guard(tmp_path / "clock", clock)
    g.now()
    clock.t = 9_800.0  # 200 s back: NTP correction
    assert g.now() == 10_000.0
    assert not g.rolled_back
    g.check_expiry(10_001.0)


def test_rollback_survives_a_restart_and_refuses_only_expiring(tmp_path: Path) -> None:
    clock = FakeTime(1_000_000.0)
    guard(tmp_path / "clock", clock).now()
    clock.t = 1_000_000.0 - 86_400  # set back a day, then restart the backend
    g = guard(tmp_path / "clock", clock)
    assert g.now() == 1_000_000.0
    assert g.rolled_back
    g.check_expiry(None)  # non-expiring licenses keep working
    with pytest.raises(LicenseError) as info:
        g.check_expiry(2_000_000.0)
    assert info.value.reason == LicenseReason.CLOCK_ROLLBACK
    clock.t = 1_000_000.0  # clock fixed
    g.now()
    assert not g.rolled_back
    g.check_expiry(2_000_000.0)


def test_expiry_uses_the_trusted_time(tmp_path: Path) -> None:
    clock = FakeTime(5_000.0)
    g = guard(tmp_path / "clock", clock)
    g.now()
    clock.t = 4_900.0  # within tolerance: trusted time stays 5000
    with pytest.raises(LicenseError) as info:
        g.check_expiry(4_950.0)
    assert info.value.reason == LicenseReason.EXPIRED


def test_writes_are_bounded_by_persist_interval(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    clock = FakeTime(1_000.0)
    g = ClockGuard(path, tolerance=300, persist_interval=60, time_source=clock)
    g.now()
    clock.t = 1_030.0
    assert g.now() == 1_030.0
    assert json.loads(path.read_text())["highest_time"] == 1_000.0
    clock.t = 1_061.0
    g.now()
    assert json.loads(path.read_text())["highest_time"] == 1_061.0
    with pytest.raises(ValueError, match="persist_interval"):
        ClockGuard(path, tolerance=10, persist_interval=10)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "[]",
        '{"highest_time": "x"}',
        '{"x": 1}',
        '{"highest_time": -5}',
        '{"highest_time": NaN}',
    ],
)
def test_corrupt_state_is_a_config_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "clock").write_text(text)
    with pytest.raises(ConfigError, match="corrupt"):
        guard(tmp_path / "clock", FakeTime(1.0))


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.floats(0, 10_000_000, allow_nan=False), min_size=1, max_size=20))
def test_trusted_time_is_monotonic_and_flags_big_steps_back(
    tmp_path_factory: pytest.TempPathFactory, steps: list[float]
) -> None:
    path = tmp_path_factory.getbasetemp() / "clock-property"
    path.unlink(missing_ok=True)
    clock = FakeTime(steps[0])
    g = guard(path, clock)
    last, high = 0.0, 0.0
    for t in steps:
        clock.t = t
        now = g.now()
        high = max(high, t)
        assert now >= last and now == high
        assert g.rolled_back == (t < high - 300.0)
        last = now
    # after a restart the guard still knows (within the persist interval) the highest time
    assert guard(path, FakeTime(0.0)).high_water >= high - 60.0
