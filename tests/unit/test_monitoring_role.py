"""The tmr_monitoring role's files: prometheus.yml as the role renders it passes
``promtool check config`` (with the shipped rules loaded), keeps hostile values intact, and the
role installs the one shipped rules file (monitoring/prometheus/tmr-alerts.yml), no copy.

Rendered with jinja2 as Ansible does (trim_blocks; ``to_json`` is ``json.dumps``).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from tests.unit.test_monitoring import RULES, _promtool

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "tmr_monitoring"
CONFIG_TEMPLATE = ROLE / "templates" / "prometheus.yml.j2"
ARGS_TEMPLATE = ROLE / "templates" / "prometheus.default.j2"

HOSTILE = [
    'quote " inside',
    "back\\slash and \\u0041 literally",
    "new\nline and\ttab, controls \x01\x1b and DEL \x7f",
    "beyond the BMP \U0001f600, accents é, CJK 中",
    'x"\nrule_files: ["/etc/passwd"]',  # would add a key to a raw template
    "{a: [b]} # - &anchor *alias",
]


def _to_json(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, **kwargs)


def render(template: Path, variables: dict[str, Any]) -> str:
    env = jinja2.Environment(
        trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    env.filters["to_json"] = _to_json
    return env.from_string(template.read_text()).render(ansible_managed="test", **variables)


def defaults() -> dict[str, Any]:
    doc = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def role_vars(tmp_path: Path, **override: Any) -> dict[str, Any]:
    token = tmp_path / "tmr-web.token"
    token.write_text("x" * 43 + "\n")
    rules = tmp_path / "tmr-alerts.yml"
    rules.write_text(RULES.read_text())
    v = defaults()
    v.update(
        tmr_monitoring_tmr_token_file=str(token),
        tmr_monitoring_rules_file=str(rules),
        groups={"tmr_servers": ["tmr-a", "tmr-b"]},
        hostvars={
            "tmr-a": {"tmr_common_address": "10.89.49.21", "ansible_host": "10.89.49.21"},
            "tmr-b": {"ansible_host": "10.89.49.22"},
        },
    )
    v.update(override)
    return v


def promtool_check_config(text: str, tmp_path: Path) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    out = subprocess.run(
        [_promtool(), "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_the_role_installs_the_one_shipped_rules_file() -> None:
    src = defaults()["tmr_monitoring_rules_src"]
    resolved = (Path(src.replace("{{ role_path }}", str(ROLE)))).resolve()
    assert resolved == RULES.resolve()
    copies = [p for p in ROLE.rglob("*") if p.is_file() and p.read_bytes() == RULES.read_bytes()]
    assert copies == [], "a copy of the rules inside the role"
    assert "monitoring" not in yaml.safe_load((REPO / "galaxy.yml").read_text())["build_ignore"]


def test_the_production_config_passes_promtool(tmp_path: Path) -> None:
    text = render(CONFIG_TEMPLATE, role_vars(tmp_path))
    promtool_check_config(text, tmp_path)
    doc = yaml.safe_load(text)
    assert doc["global"] == {"scrape_interval": "15s", "evaluation_interval": "15s"}
    assert doc["rule_files"] == [str(tmp_path / "tmr-alerts.yml")]
    tmr = doc["scrape_configs"][0]
    assert tmr["job_name"] == "tmr"  # the rules' up{job="tmr"}
    assert tmr["authorization"]["credentials_file"] == str(tmp_path / "tmr-web.token")
    assert [(c["targets"], c["labels"]["instance"]) for c in tmr["static_configs"]] == [
        (["10.89.49.21:22380"], "tmr-a"),
        (["10.89.49.22:22380"], "tmr-b"),  # no tmr_common_address: ansible_host
    ]


def test_the_lab_config_passes_promtool(tmp_path: Path) -> None:
    lab = yaml.safe_load((REPO / "inventory/lab/group_vars/tmr_monitoring.yml").read_text())
    v = role_vars(tmp_path, **lab)
    text = render(CONFIG_TEMPLATE, v)
    promtool_check_config(text, tmp_path)
    assert yaml.safe_load(text)["global"]["scrape_interval"] == "2s"


def test_a_timeout_longer_than_the_interval_is_refused_by_promtool(tmp_path: Path) -> None:
    """The validate step is real: promtool refuses what Prometheus would refuse."""
    v = role_vars(tmp_path, tmr_monitoring_scrape_interval="2s", tmr_monitoring_scrape_timeout="5s")
    with pytest.raises(AssertionError, match="scrape timeout"):
        promtool_check_config(render(CONFIG_TEMPLATE, v), tmp_path)


def test_https_no_auth_and_ipv6(tmp_path: Path) -> None:
    v = role_vars(
        tmp_path,
        tmr_monitoring_tmr_scheme="https",
        tmr_monitoring_tmr_ca_file=str(tmp_path / "tmr-web.token"),  # any existing file
        tmr_monitoring_tmr_auth="none",
        hostvars={"tmr-a": {"tmr_common_address": "2001:db8::21"}, "tmr-b": {}},
    )
    text = render(CONFIG_TEMPLATE, v)
    promtool_check_config(text, tmp_path)
    tmr = yaml.safe_load(text)["scrape_configs"][0]
    assert tmr["scheme"] == "https" and "authorization" not in tmr
    assert tmr["static_configs"][0]["targets"] == ["[2001:db8::21]:22380"]
    assert tmr["static_configs"][1]["targets"] == ["tmr-b:22380"]  # neither: the host name


@pytest.mark.parametrize("value", HOSTILE)
def test_prometheus_yml_keeps_hostile_values(value: str, tmp_path: Path) -> None:
    v = role_vars(
        tmp_path,
        groups={"tmr_servers": [value, "tmr-b"]},
        hostvars={value: {"tmr_common_address": "192.0.2.21"}, "tmr-b": {}},
    )
    text = render(CONFIG_TEMPLATE, v)
    doc = yaml.safe_load(text)
    assert set(doc) == {"global", "rule_files", "scrape_configs"}
    assert doc["rule_files"] == [str(tmp_path / "tmr-alerts.yml")]
    assert doc["scrape_configs"][0]["static_configs"][0]["labels"] == {"instance": value}
    promtool_check_config(text, tmp_path)


def test_the_command_line_is_one_quoted_value() -> None:
    v = defaults()
    v["tmr_monitoring_extra_args"] = ["--web.enable-lifecycle", "--query.timeout=30s"]
    text = render(ARGS_TEMPLATE, v)
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1 and lines[0].startswith("ARGS=")
    # systemd unquotes the EnvironmentFile value; ExecStart's unquoted $ARGS splits it at spaces
    (value,) = shlex.split(lines[0].removeprefix("ARGS="))
    assert value.split() == [
        "--config.file=/etc/prometheus/prometheus.yml",
        "--storage.tsdb.retention.time=15d",
        "--web.listen-address=0.0.0.0:9090",
        "--web.enable-lifecycle",
        "--query.timeout=30s",
    ]


def test_the_argument_specs_name_every_default_with_its_value() -> None:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    d = defaults()
    assert set(options) == set(d)
    for name, spec in options.items():
        assert spec.get("default") == d[name], name
        if "choices" in spec:
            assert d[name] in spec["choices"], name
