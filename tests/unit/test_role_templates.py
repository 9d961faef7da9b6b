"""The roles' TOML templates (server.toml.j2, backend.toml.j2) rendered with hostile values.

Every string a template writes goes through ``to_json``: a quote, a backslash, a newline, a
control character, DEL, a character outside the BMP, TOML syntax or a literal ``\\u0041`` in
a value must come back unchanged from tomllib and from the service's own config loader,
never break the file or smuggle in a key. Rendered with jinja2 as Ansible does (trim_blocks;
``to_json`` is ``json.dumps`` with the filter's keyword arguments).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from tmr.config import BackendConfig, ServerConfig, load_backend_config, load_server_config
from tmr.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SERVER_TEMPLATE = REPO / "roles/tmr_server/templates/server.toml.j2"
BACKEND_TEMPLATE = REPO / "roles/tmr_backend/templates/backend.toml.j2"

HOSTILE = [
    'quote " inside',
    "back\\slash and \\u0041 literally",
    "new\nline\r\nand\ttab",
    "controls \x00\x01\x08\x0b\x0c\x1b\x1f and DEL \x7f",
    "beyond the BMP \U0001f600, accents é, CJK 中",
    "\"\"\" triple ''' quotes",
    'x"\nlog_level = "debug',  # would add (or override) a key in a raw template
    "] = [[backends]] {",
]


# real Z85 CURVE public keys (the loader checks them); Z85 has TOML syntax too: [ ] { } = #,
# and Jinja's: the first three hold `{%`, `{{` and `{#`, which Ansible would take for a template
# in a value that is not marked `!unsafe` (`Unsafe` below; the facts tmr_common gathers are
# never templated). Fixed: a random key holds one of them about once in 60.
KEYS = [
    "Ra]8Hb}#}K{%!FS!*2I]/=Av#aiLKw7ETIsnJ-LG",
    "g*[3LarCm@{{W($XTv}LD)$GZUJp@]jL0Gnp5rDQ",
    "c.NSG@]>TX{#?]jP5=3MU)Y{arY*j2z<9Ip+GfVi",
    "rPRF=m+<3NX59q.dQ2L&ClW?FHl8Ee/1E?z8%LC!",
    "+/I:o+]Zvryt&8JT@oa%o/6u&bX>a*FW8/Sk0ePd",
]


class Unsafe(str):
    """A value written with YAML's `!unsafe` tag for ansible-playbook: data, never a template
    (as the operator guide tells to write keys in an inventory)."""


# yaml.safe_dump writes an `Unsafe` with the tag (only this module's class is concerned)
yaml.SafeDumper.add_representer(
    Unsafe, lambda dumper, data: dumper.represent_scalar("!unsafe", str(data))
)


def _unsafe(value: Any) -> Any:
    """``value`` with every string in it `Unsafe`."""
    if isinstance(value, str):
        return Unsafe(value)
    if isinstance(value, list):
        return [_unsafe(v) for v in value]
    if isinstance(value, dict):
        return {k: _unsafe(v) for k, v in value.items()}
    return value


def _to_json(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, **kwargs)


def _difference(a: list[Any], b: list[Any]) -> list[Any]:
    return [x for x in a if x not in b]


def _extract(item: Any, container: Any) -> Any:
    return container[item]


def render(template: Path, variables: dict[str, Any]) -> str:
    env = jinja2.Environment(
        trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    env.filters["to_json"] = _to_json
    env.filters["difference"] = _difference
    env.filters["extract"] = _extract
    return env.from_string(template.read_text()).render(ansible_managed="test", **variables)


def server_vars(value: str) -> dict[str, Any]:
    backends = ["b1", "b2", "b3"]
    hostvars: dict[str, Any] = {
        b: {
            "tmr_backend_name": f"{value} {i}",
            "tmr_common_address": "192.0.2.1" + str(i),
            "tmr_common_pubkey": KEYS[i],
        }
        for i, b in enumerate(backends)
    }
    hostvars["peer"] = {"tmr_common_address": "192.0.2.22"}
    return {
        "inventory_hostname": "me",
        "groups": {"tmr_servers": ["me", "peer"], "tmr_backends": backends},
        "hostvars": hostvars,
        "tmr_server_group": "tmr_servers",
        "tmr_server_backend_group": "tmr_backends",
        "tmr_server_backend_port": 22360,
        "tmr_server_name": value,
        "tmr_server_client_listen": f"tcp://{value}:22350",
        "tmr_server_config_dir": f"/etc/{value}",
        "tmr_server_ctl_socket": f"/run/{value}.sock",
        "tmr_server_state_dir": f"/var/lib/{value}",
        "tmr_server_lease_seconds": 30,
        "tmr_server_backend_timeout": 1.0,
        "tmr_server_probe_interval": 0.1,
        "tmr_server_leader_live_window": 0.35,
        "tmr_server_expiry_warning_days": 30,
        "tmr_server_idle_hold_ms": 8,
        "tmr_server_takeover_hold_ms": 300,
        "tmr_server_web_listen": "127.0.0.1:22380",
        "tmr_server_web_token_file": f"/etc/{value}/web.token",
        "tmr_server_web_tls_cert_file": f"/etc/{value}/web.crt",
        "tmr_server_web_tls_key_file": f"/etc/{value}/web.key",
        "tmr_server_vip": value,
        "tmr_server_web_peer_url": f"http://{value}/",
        "tmr_server_log_level": "info",
        "tmr_server_client_allowlist": [],
        "tmr_server_admin_keys": [],
        "tmr_server_admin_group": "tmr_admins",
        "tmr_server_usage_max_rows": 200000,
        "tmr_server_usage_query_timeout": 5.0,
    }


def backend_vars(value: str) -> dict[str, Any]:
    return {
        "groups": {"tmr_servers": ["s1", "s2"]},
        "hostvars": {"s1": {"tmr_common_pubkey": KEYS[3]}, "s2": {"tmr_common_pubkey": KEYS[4]}},
        "tmr_backend_server_group": "tmr_servers",
        "tmr_backend_name": value,
        "tmr_backend_listen": f"tcp://{value}:22360",
        "tmr_backend_config_dir": f"/etc/{value}",
        "tmr_backend_state_dir": f"/var/lib/{value}/state",
        "tmr_backend_license_dir": f"/var/lib/{value}/licenses",
        "tmr_backend_vendor_keys": [{"firm_code": 6000123}, {"firm_code": value}],
        "tmr_backend_machine_id_file": f"/etc/{value}-id",
        "tmr_backend_serial": value,
        "tmr_backend_ctl_socket": f"/run/{value}.sock",
        "tmr_backend_log_level": "info",
        "tmr_backend_usage_retention": 100000,
        "tmr_backend_denial_retention": 100000,
    }


@pytest.mark.parametrize("value", HOSTILE)
def test_server_toml_keeps_hostile_values(value: str, tmp_path: Path) -> None:
    text = render(SERVER_TEMPLATE, server_vars(value))
    data = tomllib.loads(text)
    assert data["name"] == value
    assert data["client_listen"] == f"tcp://{value}:22350"
    assert data["service_key_file"] == f"/etc/{value}/service.key"
    assert data["ctl_socket"] == f"/run/{value}.sock"
    assert data["vip"] == value
    assert data["web_peer_url"] == f"http://{value}/"
    assert data["web_auth_token_file"] == f"/etc/{value}/web.token"
    assert data["web_tls_cert_file"] == f"/etc/{value}/web.crt"
    assert data["log_level"] == "info"
    assert [b["name"] for b in data["backends"]] == [f"{value} {i}" for i in range(3)]
    assert [b["public_key"] for b in data["backends"]] == KEYS[:3]
    # and the service itself reads the same values from the file
    path = tmp_path / "server.toml"
    path.write_text(text, encoding="utf-8")
    config = load_server_config(path)
    assert config.name == value
    assert config.state_dir == Path(f"/var/lib/{value}")
    assert config.expiry_warning_days == 30.0
    assert config.idle_hold_ms == 8.0
    assert config.takeover_hold_ms == 300.0
    # the failover timers of the role (docs/performance.md "Failover on the VIP")
    assert (config.probe_interval, config.leader_live_window) == (0.1, 0.35)


@pytest.mark.parametrize("value", HOSTILE)
def test_backend_toml_keeps_hostile_values(value: str, tmp_path: Path) -> None:
    text = render(BACKEND_TEMPLATE, backend_vars(value))
    data = tomllib.loads(text)
    assert data["name"] == value
    assert data["listen"] == f"tcp://{value}:22360"
    assert data["key_file"] == f"/etc/{value}/node.key"
    assert data["vendor_keys"] == [
        f"/etc/{value}/vendors/6000123.pub",
        f"/etc/{value}/vendors/{value}.pub",
    ]
    assert data["allowed_servers"] == KEYS[3:]
    assert data["serial"] == value
    assert data["log_level"] == "info"
    path = tmp_path / "backend.toml"
    path.write_text(text, encoding="utf-8")
    config = load_backend_config(path)
    assert config.name == value
    assert config.allowed_servers == tuple(KEYS[3:])
    assert (config.usage_retention, config.denial_retention) == (100000, 100000)


@pytest.mark.parametrize(("usage", "denials"), [(0, 0), (2500, 1), ("7", "0")])
def test_the_backend_role_sets_the_usage_and_denial_records_sizes(
    usage: int | str, denials: int | str, tmp_path: Path
) -> None:
    variables = {
        **backend_vars("b1"),
        "tmr_backend_usage_retention": usage,
        "tmr_backend_denial_retention": denials,
    }
    path = tmp_path / "backend.toml"
    path.write_text(render(BACKEND_TEMPLATE, variables), encoding="utf-8")
    config = load_backend_config(path)
    assert (config.usage_retention, config.denial_retention) == (int(usage), int(denials))


def test_the_backend_role_defaults_keep_the_services_defaults() -> None:
    """The role's defaults for the records' sizes are the service's own (docs/configuration.md)."""
    defaults = yaml.safe_load((REPO / "roles/tmr_backend/defaults/main.yml").read_text())
    specs = yaml.safe_load((REPO / "roles/tmr_backend/meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    for name, field in (
        ("tmr_backend_usage_retention", "usage_retention"),
        ("tmr_backend_denial_retention", "denial_retention"),
    ):
        default = BackendConfig.__dataclass_fields__[field].default
        assert defaults[name] == options[name]["default"] == default, name
        assert options[name]["type"] == "int", name


def test_the_role_protects_webadmin_on_every_address(tmp_path: Path) -> None:
    """The role's WebAdmin listens on all addresses (the VIP): the server accepts that only
    with credentials, and the role always writes the token file (and TLS when given)."""
    variables = {
        **server_vars("tmr-a"),
        "tmr_server_web_listen": "0.0.0.0:22380",
        "tmr_server_web_tls_cert_file": "",
        "tmr_server_web_tls_key_file": "",
        "tmr_server_web_peer_url": "",
    }
    text = render(SERVER_TEMPLATE, variables)
    path = tmp_path / "server.toml"
    path.write_text(text, encoding="utf-8")
    config = load_server_config(path)
    assert config.web_listen == "0.0.0.0:22380"
    assert config.web_auth_token_file == Path("/etc/tmr-a/web.token")
    assert config.web_tls_cert_file is None
    assert config.web_peer_url == "http://192.0.2.22:22380/"
    unprotected = "\n".join(x for x in text.splitlines() if "web_auth_token_file" not in x)
    path.write_text(unprotected, encoding="utf-8")
    with pytest.raises(ConfigError, match="not a loopback address"):
        load_server_config(path)
    off = render(SERVER_TEMPLATE, {**variables, "tmr_server_web_listen": ""})
    assert "web_auth_token_file" not in off


def test_plain_values_render_as_before() -> None:
    """The ordinary case: the lab's values give the file the services have always read."""
    text = render(SERVER_TEMPLATE, server_vars("tmr-a"))
    assert 'name = "tmr-a"\n' in text
    assert 'endpoint = "tcp://192.0.2.10:22360"\n' in text
    assert "lease_seconds = 30\n" in text
    assert "probe_interval = 0.1\nleader_live_window = 0.35\n" in text
    assert "expiry_warning_days = 30.0\nidle_hold_ms = 8.0\ntakeover_hold_ms = 300.0\n" in text
    assert text.startswith("# test\nname = ")
    text = render(BACKEND_TEMPLATE, backend_vars("backend-1"))
    assert 'vendor_keys = ["/etc/backend-1/vendors/6000123.pub", ' in text


# ---------------------------------------------------------------- client keys through the role


@pytest.mark.parametrize("admin_hosts", [False, True])
def test_the_server_role_writes_the_client_allowlist_and_admin_keys(
    admin_hosts: bool, tmp_path: Path
) -> None:
    """The report keys are the listed ones and the node keys of the admin group's hosts (each
    once); a client allowlist admits them too, and an empty one stays empty (any client)."""
    # Z85 is case-sensitive: a key that differs from another only in case is another key
    other_case = KEYS[3].swapcase()
    variables = {
        **server_vars("tmr-a"),
        "tmr_server_admin_keys": [KEYS[2], KEYS[3], other_case],
        "tmr_server_usage_max_rows": "5000",
        "tmr_server_usage_query_timeout": 30,
    }
    admins: tuple[str, ...] = (KEYS[2], KEYS[3], other_case)
    if admin_hosts:
        variables["groups"] = {**variables["groups"], "tmr_admins": ["admin-1", "admin-2"]}
        variables["hostvars"] = {
            **variables["hostvars"],
            "admin-1": {"tmr_common_pubkey": KEYS[4]},
            "admin-2": {"tmr_common_pubkey": KEYS[3]},  # also listed: once
        }
        admins = (KEYS[2], KEYS[3], other_case, KEYS[4])
    path = tmp_path / "server.toml"
    for allow, admitted in (([], ()), (KEYS[:3], (*KEYS[:3], *admins[1:]))):
        path.write_text(
            render(SERVER_TEMPLATE, {**variables, "tmr_server_client_allowlist": allow}),
            encoding="utf-8",
        )
        config = load_server_config(path)
        assert config.admin_keys == admins
        assert config.client_allowlist == admitted
        assert (config.usage_max_rows, config.usage_query_timeout) == (5000, 30.0)


def test_the_server_role_defaults_keep_the_services_defaults(tmp_path: Path) -> None:
    """The role's defaults for what it writes of reports and client keys are the service's own
    (docs/configuration.md), and its argument specs type them."""
    defaults = yaml.safe_load((REPO / "roles/tmr_server/defaults/main.yml").read_text())
    specs = yaml.safe_load((REPO / "roles/tmr_server/meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    fields = {
        "tmr_server_client_allowlist": ("client_allowlist", "list"),
        "tmr_server_admin_keys": ("admin_keys", "list"),
        "tmr_server_usage_max_rows": ("usage_max_rows", "int"),
        "tmr_server_usage_query_timeout": ("usage_query_timeout", "float"),
    }
    variables = server_vars("tmr-a")
    for name, (field, kind) in fields.items():
        default = ServerConfig.__dataclass_fields__[field].default
        assert defaults[name] == options[name]["default"], name
        assert (tuple(defaults[name]) if kind == "list" else defaults[name]) == default, name
        assert options[name]["type"] == kind, name
        variables[name] = defaults[name]
    path = tmp_path / "server.toml"
    path.write_text(render(SERVER_TEMPLATE, variables), encoding="utf-8")
    config = load_server_config(path)
    for name, (field, _) in fields.items():
        assert getattr(config, field) == ServerConfig.__dataclass_fields__[field].default, name


def _ansible_playbook(
    tmp_path: Path,
    play: dict[str, Any],
    variables: dict[str, Any],
    inventory: dict[str, Any] | None = None,
    *,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run one play with ansible-playbook beside this Python, on localhost only (connection
    local: no other host is touched); ``inventory`` adds hosts that only lend their vars;
    ``check``: in check mode."""
    ansible = Path(sys.executable).parent / "ansible-playbook"
    if not ansible.exists():
        pytest.skip("ansible-playbook is not installed beside this Python (make venv)")
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{**play, "vars": variables}]))
    hosts = tmp_path / "hosts.yml"
    inv = inventory or {"all": {}}
    inv = {"all": {**inv["all"], "hosts": {"localhost": {"ansible_connection": "local"}}}}
    hosts.write_text(yaml.safe_dump(inv))
    config = tmp_path / "ansible.cfg"  # not the repository's (its collections path, callbacks)
    config.write_text("[defaults]\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }
    return subprocess.run(
        [str(ansible), "-i", str(hosts), str(playbook), *(["--check"] if check else [])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )


def _preflight_task(named: str) -> dict[str, Any]:
    """The tmr_server preflight's task whose name contains ``named``."""
    tasks = yaml.safe_load((REPO / "roles/tmr_server/tasks/preflight.yml").read_text())
    (task,) = [t for t in tasks if named in t["name"]]
    return dict(task)  # with its vars


@pytest.mark.parametrize(
    ("allowlist", "admin", "bad"),
    [
        ([], [], None),
        (KEYS[:2], [KEYS[1]], None),
        # Z85's own punctuation, TOML syntax among it: still a key
        (["0aZ.-:+=^!/*?&<>()[]{}@%$#" + "x" * 14], [], None),
        (KEYS[:1], [KEYS[0][:-1]], KEYS[0][:-1]),  # one character short
        ([KEYS[0] + "x"], [], KEYS[0] + "x"),
        ([], ["not-a-key"], "not-a-key"),
        ([], [KEYS[0][:-1] + " "], KEYS[0][:-1] + " "),  # not a Z85 character
        ([], [KEYS[0][:-1] + "\\"], KEYS[0][:-1] + "\\"),
        ([KEYS[0] + "\n"], [], KEYS[0]),  # a trailing newline (`$` alone would let it pass)
    ],
)
def test_the_server_role_preflight_refuses_what_is_not_a_key(
    allowlist: list[str], admin: list[str], bad: str | None, tmp_path: Path
) -> None:
    """The preflight's key check, run by ansible-playbook on localhost (no host is touched):
    it names what is not a Z85 key before anything changes; real keys pass."""
    run = _ansible_playbook(
        tmp_path,
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [_preflight_task("admin keys")],
        },
        {
            "tmr_server_client_allowlist": _unsafe(allowlist),
            "tmr_server_admin_keys": _unsafe(admin),
        },
    )
    if bad is None:
        assert run.returncode == 0, run.stdout + run.stderr
    else:
        assert run.returncode != 0
        assert "Z85 CURVE public keys" in run.stdout
        assert bad.rstrip("\\ ") in run.stdout, run.stdout  # named (escaped as JSON in YAML)


@pytest.mark.parametrize(
    ("pubkeys", "keyless"),
    [
        ({"admin-1": KEYS[0], "admin-2": KEYS[1]}, []),
        ({"admin-1": KEYS[0], "admin-2": ""}, ["admin-2"]),
        ({"admin-1": KEYS[0]}, ["admin-2"]),  # tmr_common did not run on it (--limit)
        (None, []),  # no such group in the inventory
    ],
)
def test_the_server_role_preflight_names_admin_hosts_without_a_key(
    pubkeys: dict[str, str] | None, keyless: list[str], tmp_path: Path
) -> None:
    """The preflight's admin-host check, run by ansible-playbook on localhost: an admin host
    whose node key was not gathered in this run stops the role before anything changes, and
    only that host is named."""
    task = _preflight_task("admin hosts")
    inventory: dict[str, Any] = {"all": {}}
    if pubkeys is not None:
        admins = {
            h: ({"tmr_common_pubkey": Unsafe(pubkeys[h])} if h in pubkeys else {})
            for h in ("admin-1", "admin-2")
        }
        inventory = {"all": {"children": {"tmr_admins": {"hosts": admins}}}}
    run = _ansible_playbook(
        tmp_path,
        {"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [task]},
        {"tmr_server_admin_group": "tmr_admins"},
        inventory,
    )
    if not keyless:
        assert run.returncode == 0, run.stdout + run.stderr
    else:
        assert run.returncode != 0
        assert f"none gathered for {', '.join(keyless)} " in run.stdout.replace("\n", " "), (
            run.stdout
        )
        assert "admin-1" not in run.stdout.split("none gathered for")[1].split("(")[0]


def _server_handlers(tmp_path: Path, answer: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The tmr_server role's handlers, in their order, with `tmr` a script that prints
    ``answer`` as `tmr ctl reload` would (exit 1 if it is not ok; None: fails as it does
    without a control socket), and the restart a message (no service is touched)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    tmr = venv / "bin" / "tmr"
    count = f"echo called >> {tmp_path / 'calls'}\n"  # each call, a line
    if answer is None:
        refused = "echo 'tmr ctl: cannot connect to the socket' >&2\nexit 1\n"
        tmr.write_text(f"#!/bin/sh\n{count}{refused}")
    else:
        code = 0 if answer["ok"] else 1
        reply = f"cat <<'JSON'\n{json.dumps(answer)}\nJSON\nexit {code}\n"
        tmr.write_text(f"#!/bin/sh\n{count}{reply}")
    tmr.chmod(0o755)
    handlers = yaml.safe_load((REPO / "roles/tmr_server/handlers/main.yml").read_text())
    out = []
    for handler in handlers:
        h = dict(handler)
        if "ansible.builtin.systemd_service" in h:
            del h["ansible.builtin.systemd_service"]
            h["ansible.builtin.debug"] = {"msg": "RESTARTED tmr-server"}
        if h["name"] == "Reload tmr-server":
            h["delay"] = 0  # the failing script: no need to wait between its tries
        out.append(h)
    assert out[0]["name"] == "Reload tmr-server"
    return out


def _run_server_handlers(
    tmp_path: Path,
    answer: dict[str, Any] | None,
    notify: list[str],
    *,
    check: bool = False,
    **variables: Any,
) -> subprocess.CompletedProcess[str]:
    """A play on localhost whose one task changes and notifies ``notify``, with the role's
    handlers (`_server_handlers`, the reload answering ``answer``) and ``variables``."""
    return _ansible_playbook(
        tmp_path,
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Change the configuration",
                    "ansible.builtin.debug": {"msg": "changed"},
                    "changed_when": True,
                    "notify": notify,
                }
            ],
            "handlers": _server_handlers(tmp_path, answer),
        },
        {
            "tmr_server_venv": str(tmp_path / "venv"),
            "tmr_server_ctl_socket": "/nonexistent/server.sock",
            "tmr_server_service_state": "started",
            **variables,
        },
        check=check,
    )


OLD_SERVER = {"ok": True, "policy": {"digest": "x"}}  # before server.toml was reloaded


def _reload_answer(restart_needed: list[str]) -> dict[str, Any]:
    config = {"applied": ["admin_keys"], "restart_needed": restart_needed}
    return {**OLD_SERVER, "config": config}


@pytest.mark.parametrize(
    ("answer", "notify", "check", "restarts", "why"),
    [
        # only the allowlist or the admin keys changed
        (_reload_answer([]), ["Reload tmr-server"], False, 0, None),
        (_reload_answer(["lease_seconds"]), ["Reload tmr-server"], False, 1, "lease_seconds"),
        (OLD_SERVER, ["Reload tmr-server"], False, 1, "(keys not named by this server version)"),
        # no control socket (the server down, or its socket moved): the restart applies all
        (None, ["Reload tmr-server"], False, 1, "(the reload failed: tmr ctl: cannot connect"),
        (None, ["Reload tmr-server", "Restart tmr-server"], False, 1, "(the reload failed"),
        # an older server refuses a key the installed version writes: the restart runs that
        (
            {"ok": False, "code": "BAD_REQUEST", "error": "server.toml: unknown key 'x'"},
            ["Reload tmr-server"],
            False,
            1,
            "(the reload failed: server.toml: unknown key 'x')",
        ),
        # the unit changed as well: one restart
        (_reload_answer([]), ["Reload tmr-server", "Restart tmr-server"], False, 1, None),
        (_reload_answer(["backends"]), ["Reload tmr-server", "Restart tmr-server"], False, 1, None),
        # check mode makes no reload: the restart is announced
        (_reload_answer([]), ["Reload tmr-server"], True, 1, "(check mode"),
    ],
)
def test_the_server_role_restarts_only_for_what_a_reload_cannot_change(
    answer: dict[str, Any] | None,
    notify: list[str],
    check: bool,
    restarts: int,
    why: str | None,
    tmp_path: Path,
) -> None:
    """The handlers run by ansible-playbook on localhost: server.toml's change is reloaded,
    and the server restarts once, only if the reload's answer names a key it cannot take or
    the reload could not be made."""
    run = _run_server_handlers(tmp_path, answer, notify, check=check)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "RUNNING HANDLER [Reload tmr-server]" in run.stdout
    assert run.stdout.count('"msg": "RESTARTED tmr-server"') == restarts, run.stdout
    if why is not None:
        assert f"tmr-server restarts for: {why}" in run.stdout, run.stdout
    # tried again only while no server answers (5 retries); an answer, a refusal too, is final
    calls = tmp_path / "calls"
    made = calls.read_text().count("called") if calls.exists() else 0
    assert made == (0 if check else 6 if answer is None else 1)


def test_the_server_role_neither_reloads_nor_restarts_a_server_this_run_started(
    tmp_path: Path,
) -> None:
    """A server started in this run read both files at start: no reload, no restart (the
    `tmr` script would fail: were it run, the restart would follow)."""
    run = _run_server_handlers(
        tmp_path, None, ["Reload tmr-server"], tmr_server_started={"changed": True}
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "RESTARTED tmr-server" not in run.stdout and "restarts for" not in run.stdout
    assert "changed=1" in run.stdout  # the configuration task only
