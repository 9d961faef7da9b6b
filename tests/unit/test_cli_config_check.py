"""`tmr config check --kind server|backend FILE`: the services' own loader, exit codes 0/1/2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zmq

from tmr.cli import main
from tmr.cli.config_cmds import CheckExit, ConfigKind, check

KEYS = [zmq.curve_keypair()[0].decode() for _ in range(3)]


def server_toml(backends: int = 3) -> str:
    lines = [
        'name = "tmr-a"',
        'service_key_file = "/etc/tmr/service.key"',
        'node_key_file = "/etc/tmr/node.key"',
    ]
    for i in range(backends):
        lines += [
            "",
            "[[backends]]",
            f'name = "backend-{i}"',
            f'endpoint = "tcp://192.0.2.{10 + i}:22360"',
            f'public_key = "{KEYS[i]}"',
        ]
    return "\n".join(lines) + "\n"


BACKEND_TOML = (
    'name = "backend-1"\nkey_file = "/etc/tmr/node.key"\nstate_dir = "/var/lib/tmr/backend"\n'
    'license_dir = "/var/lib/tmr/licenses"\nvendor_keys = []\n'
    f'allowed_servers = ["{KEYS[0]}"]\n'
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.toml"
    path.write_text(text)
    return path


def test_valid_server_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, server_toml())
    assert main.main(["config", "check", "--kind", "server", str(path)]) == CheckExit.VALID
    assert capsys.readouterr().out == f"{path}: valid server configuration\n"


def test_valid_backend_file(tmp_path: Path) -> None:
    path = write(tmp_path, BACKEND_TOML)
    assert main.main(["config", "check", "--kind", "backend", str(path)]) == 0


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        # valid TOML that the service refuses: the schema, not only the syntax, is checked
        ("server", server_toml(backends=2), "'backends' must list exactly 3 backends, not 2"),
        ("server", 'lease_seconds = "30"\n' + server_toml(), "key 'lease_seconds' must be"),
        ("server", "unknown = 1\n" + server_toml(), "unknown key 'unknown'"),
        ("backend", BACKEND_TOML.replace('name = "backend-1"\n', ""), "missing required key"),
        ("backend", BACKEND_TOML + 'log_level = "loud"\n', "key 'log_level' must be one of"),
        # a server file is not a backend file
        ("backend", server_toml(), "unknown key"),
        ("server", 'name = "x\n', "not valid TOML"),
    ],
)
def test_invalid_file_exit_1_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    assert main.main(["config", "check", "--kind", kind, str(path)]) == CheckExit.INVALID
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"tmr: error: {path}: ")
    assert message in lines[0]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.toml"
    assert main.main(["config", "check", "--kind", "server", str(path)]) == 1
    assert "no such configuration file" in capsys.readouterr().err


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, BACKEND_TOML)
    assert main.main(["config", "check", "--kind", "backend", "--json", str(good)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"ok": True, "kind": "backend", "file": str(good), "error": None}
    bad = tmp_path / "bad.toml"
    bad.write_text(server_toml(backends=1))
    assert main.main(["config", "check", "--kind", "server", "--json", str(bad)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert doc["kind"] == "server"
    assert "exactly 3 backends" in doc["error"]


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "check", "/etc/tmr/server.toml"],  # --kind is required
        ["config", "check", "--kind", "client", "/etc/tmr/server.toml"],
        ["config", "check", "--kind", "server"],  # no file
    ],
)
def test_wrong_command_line_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main.main(argv)
    assert exc.value.code == CheckExit.USAGE


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main.main(["config", "check", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--kind {server,backend,policy}" in text
    assert "Exit codes: 0 valid, 1 invalid, 2 wrong command line." in text


def test_check_function(tmp_path: Path) -> None:
    result = check(ConfigKind.SERVER, write(tmp_path, server_toml()))
    assert result.ok
    assert result.error is None


def test_policy_files_are_checked_with_the_policy_loader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, '[licenses."1000:42"]\nexclude = ["user:x"]\n')
    assert main.main(["config", "check", "--kind", "policy", str(good)]) == CheckExit.VALID
    assert "valid policy configuration" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[licenses."1000:42"]\nexclude = ["group:nobody"]\n')
    assert main.main(["config", "check", "--kind", "policy", str(bad)]) == CheckExit.INVALID
    assert "no group 'nobody'" in capsys.readouterr().err
