"""Days left and the expiry warning state (status, tmr client list, WebAdmin, /metrics)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tmr.cli.client_cmds import format_list
from tmr.expiry import DAY, ExpiryState, days_left, expiry_state, with_expiry
from tmr.protocol.client_api import LicenseEntry, ListResult
from tmr.web.metrics import ServerMetrics
from tmr.web.snapshot import build_snapshot

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("expires", "warn", "state"),
    [
        (None, 30, ExpiryState.NONE),
        (NOW + 31 * DAY, 30, ExpiryState.OK),
        (NOW + 30 * DAY, 30, ExpiryState.WARNING),
        (NOW + 60, 30, ExpiryState.WARNING),
        (NOW, 30, ExpiryState.EXPIRED),
        (NOW - DAY, 30, ExpiryState.EXPIRED),
        (NOW + 10 * DAY, 7, ExpiryState.OK),
        (NOW + 10 * DAY, 0, ExpiryState.OK),  # 0: never warn
        (NOW - 1, 0, ExpiryState.EXPIRED),
    ],
)
def test_expiry_state(expires: float | None, warn: float, state: ExpiryState) -> None:
    assert expiry_state(expires, NOW, warn) == state


def test_days_left_and_annotation() -> None:
    assert days_left(None, NOW) is None
    assert days_left(NOW + 1.5 * DAY, NOW) == 1.5
    assert days_left(NOW - DAY, NOW) == -1.0
    lics: list[dict[str, float | None]] = [
        {"firm": 1, "product": 2, "expires": NOW + 12.345 * DAY},
        {"expires": None},
    ]
    out = with_expiry(lics, NOW, 30)
    assert out[0]["days_left"] == 12.35 and out[0]["expiry"] == "warning"
    assert out[1]["days_left"] is None and out[1]["expiry"] == "none"
    assert "days_left" not in lics[0]  # copies, the leader's view is not changed


def _status(expires: float | None, warn: float = 30.0) -> dict[str, Any]:
    backends = [
        {
            "name": f"b{i}",
            "up": True,
            "promised": "3/tmr-a",
            "licenses": {"6000123:42": {"tmr_id": 8, "quantity": 20, "valid": True}},
        }
        for i in (1, 2, 3)
    ]
    lic = {
        "firm": 6000123,
        "product": 42,
        "tmr_id": 8,
        "quantity": 20,
        "in_use": 1,
        "available": True,
        "status": "1:#8 2:#8 3:#8",
        "expires": expires,
        "features": {},
    }
    return {
        "server": "tmr-a",
        "role": "active",
        "epoch": [3, "tmr-a"],
        "serial": "131-0000001",
        "backends": backends,
        "handles": 1,
        "ops_committed": 1,
        "licenses": with_expiry([lic], NOW, warn),
    }


def _samples(snap: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    snap["published_at"] = 0.0
    m = ServerMetrics(lambda: snap, lambda: 0.0)
    out = {}
    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


LIC = (("firm", "6000123"), ("product", "42"))


def test_webadmin_and_metrics_warn_within_the_threshold() -> None:
    snap = build_snapshot(_status(NOW + 10 * DAY), now_wall=NOW, lease=30.0)
    (lic,) = snap["licenses"]
    assert lic["expiry"] == "warning" and lic["days_left"] == 10.0
    assert lic["level"] == "warning" and "expires in 10.0 days" in lic["message"]
    s = _samples(snap)
    assert s[("tmr_license_days_left", LIC)] == 10.0
    assert s[("tmr_license_expiry_warning", LIC)] == 1.0


def test_no_warning_far_from_expiry_or_without_one() -> None:
    snap = build_snapshot(_status(NOW + 100 * DAY), now_wall=NOW, lease=30.0)
    assert snap["licenses"][0]["level"] == "ok"
    s = _samples(snap)
    assert s[("tmr_license_days_left", LIC)] == 100.0
    assert s[("tmr_license_expiry_warning", LIC)] == 0.0
    snap = build_snapshot(_status(None), now_wall=NOW, lease=30.0)
    s = _samples(snap)
    assert ("tmr_license_days_left", LIC) not in s  # perpetual: no such sample
    assert s[("tmr_license_expiry_warning", LIC)] == 0.0


def test_client_list_shows_days_left_and_the_warning() -> None:
    def entry(product: int, extra: dict[str, Any]) -> LicenseEntry:
        return LicenseEntry(6000123, product, 8, 20, 1, True, "1:#8", NOW, {}, extra)

    result = ListResult(
        "131-0000001",
        "tmr-a",
        (
            entry(1, {"days_left": 12.7, "expiry": "warning"}),
            entry(2, {"days_left": 200.0, "expiry": "ok"}),
            entry(3, {"days_left": -1.0, "expiry": "expired"}),
            entry(4, {}),  # an older server: no days left sent
        ),
    )
    lines = format_list(result).splitlines()
    assert "DAYS LEFT" in lines[1]
    assert lines[2].endswith("12 WARNING")
    assert lines[3].endswith(" 200")
    assert lines[4].endswith("EXPIRED")
    assert lines[5].endswith(" -")


WARN = 'tmr_license_expiry_warning{{instance="{}",firm="6000123",product="{}"}}'


def test_the_documented_alert_rule_is_valid_and_fires(tmp_path: Path) -> None:
    """The example rule of docs/operator-guide.md: promtool checks it and unit-tests it."""
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian package 'prometheus'); CI installs it")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md").read_text()
    block = next(
        b for b in re.findall(r"```yaml\n(.*?)```", guide, re.S) if "TmrLicenseExpiryWarning" in b
    )
    rules = tmp_path / "rules.yml"
    rules.write_text(block)
    subprocess.run([tool, "check", "rules", str(rules)], check=True, capture_output=True)
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'tmr_role{instance="a",role="active"}', "values": "1x120"},
                    {"series": 'tmr_role{instance="b",role="active"}', "values": "0x120"},
                    {
                        "series": WARN.format("a", 42),
                        "values": "1x120",
                    },
                    {
                        "series": 'tmr_license_days_left{instance="a",firm="6000123",product="42"}',
                        "values": "12x120",
                    },
                    {
                        "series": WARN.format("a", 43),
                        "values": "0x120",
                    },
                    {  # the standby's stale view raises nothing
                        "series": WARN.format("b", 44),
                        "values": "1x120",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": "TmrLicenseExpiryWarning", "exp_alerts": []},
                    {
                        "eval_time": "90m",
                        "alertname": "TmrLicenseExpiryWarning",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "firm": "6000123",
                                    "product": "42",
                                },
                                "exp_annotations": {
                                    "summary": "License 6000123:42 expires soon",
                                    "description": "12 days left: order the next license set "
                                    "(vendor's guide).",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    tests = tmp_path / "rules.test.yml"
    tests.write_text(yaml.safe_dump(test))
    cmd = [tool, "test", "rules", str(tests)]
    run = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
