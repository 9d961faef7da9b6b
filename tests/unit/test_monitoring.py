"""The shipped monitoring files: Prometheus alert rules (checked and unit-tested by promtool)
and the Grafana dashboard (valid JSON, every query names a metric the server exports)."""

from __future__ import annotations

import json
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

from tmr.web.metrics import ServerMetrics
from tmr.web.snapshot import build_snapshot

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "monitoring" / "prometheus"
RULES = PROM / "tmr-alerts.yml"
RULE_TESTS = PROM / "tmr-alerts.test.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "tmr-dashboard.json"

# PromQL names that are not metrics: functions, keywords, and the label names we use.
METRIC = re.compile(r"\btmr_[a-z0-9_]+\b")


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian package 'prometheus'); CI installs it")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return tool


def _exported_names() -> set[str]:
    """Every sample name the server's /metrics can show, from the real collectors."""
    status: dict[str, Any] = {
        "server": "tmr-a",
        "role": "active",
        "epoch": [3, "tmr-a"],
        "fenced_by": None,
        "live_leader": None,
        "serial": "131-0000001",
        "backends": [
            {
                "name": f"b{i}",
                "up": True,
                "promised": "3/tmr-a",
                "caught_up": True,
                "licenses": {"6000123:42": {"tmr_id": 7, "quantity": 20, "valid": True}},
                "synced": {"6000123:42": 1},
                "refused": {},
            }
            for i in (1, 2, 3)
        ],
        "handles": 0,
        "ops_committed": 0,
        "licenses": [
            {
                "firm": 6000123,
                "product": 42,
                "tmr_id": 7,
                "quantity": 20,
                "in_use": 3,
                "available": True,
                "status": "1:#7 2:#7 3:#7",
                "expires": 2e9,
                "features": {},
            }
        ],
    }
    snap = build_snapshot(status, now_wall=1.7e9, lease=30.0)
    snap["published_at"] = 0.0
    metrics = ServerMetrics(lambda: snap, lambda: 1.0)
    names: set[str] = set()
    text = generate_latest(metrics.registry).decode()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        if fam.type == "counter":
            names.update({fam.name + "_total", fam.name + "_created"})
        elif fam.type == "histogram":
            names.update(fam.name + s for s in ("_bucket", "_sum", "_count", "_created"))
        names.update(s.name for s in fam.samples)
    return names


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_checks_the_rules() -> None:
    out = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    out = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROM,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {r["alert"] for r in _rules()}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"


def test_alert_rules_name_only_exported_metrics() -> None:
    exported = _exported_names()
    for rule in _rules():
        unknown = set(METRIC.findall(rule["expr"])) - exported
        assert not unknown, f"{rule['alert']} uses unknown metrics {sorted(unknown)}"


def test_dashboard_is_valid_and_queries_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exported = _exported_names()
    panels = dash["panels"]
    assert panels, "the dashboard has no panels"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        assert panel.get("title"), panel
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no query"
        for target in targets:
            names = set(METRIC.findall(target["expr"]))
            assert names, f"panel {panel['title']!r}: a query names no tmr metric"
            unknown = names - exported
            assert not unknown, f"panel {panel['title']!r}: unknown metrics {sorted(unknown)}"
