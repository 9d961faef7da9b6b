"""Verify the converged lab: services, hardening, keys, VIP, a checkout, backend isolation, the
vendor's portal on vendor-1 and its key nowhere else."""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    BACKEND_PORT,
    CLIENT_PORT,
    FIRM,
    PRODUCT,
    PY,
    QUANTITY,
    TMR,
    TMR_ID,
    address,
    group,
    host,
    hostvars,
    server_status,
    vip,
)

REPO = Path(__file__).resolve().parents[3]

SERVICES = {
    "tmr_backends": ["tmr-backend", "tmr-backend-firewall"],
    "tmr_servers": ["tmr-server", "keepalived"],
}


@pytest.mark.parametrize(
    ("name", "unit"),
    [(h, u) for g, units in SERVICES.items() for h in group(g) for u in units],
)
def test_service_enabled_and_active(name: str, unit: str) -> None:
    svc = host(name).service(unit)
    assert svc.is_enabled, f"{unit} not enabled on {name}"
    assert (
        svc.is_running or host(name).run(f"systemctl is-active {unit}").stdout.strip() == "active"
    )


@pytest.mark.parametrize(
    ("name", "unit"),
    [(h, "tmr-backend") for h in group("tmr_backends")]
    + [(h, "tmr-server") for h in group("tmr_servers")],
)
def test_unit_is_hardened_and_runs_as_tmr(name: str, unit: str) -> None:
    h = host(name)
    props = dict(
        line.split("=", 1)
        for line in h.check_output(
            f"systemctl show {unit} -p User -p NoNewPrivileges -p ProtectSystem"
            " -p Restart -p MainPID"
        ).splitlines()
    )
    assert props["User"] == "tmr"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["Restart"] == "on-failure"
    assert h.check_output(f"ps -o user= -p {props['MainPID']}").strip() == "tmr"
    # ProtectSystem=strict is really applied (the lab grants systemd what it needs for that)
    mounts = [
        m.split() for m in h.check_output(f"cat /proc/{props['MainPID']}/mountinfo").splitlines()
    ]
    root_opts = next(m[5] for m in mounts if m[4] == "/")
    assert root_opts.split(",")[0] == "ro", f"/ is {root_opts} for {unit}"


@pytest.mark.parametrize("name", group("tmr_servers") + group("tmr_backends") + group("tmr_admins"))
def test_node_key_is_private_to_tmr(name: str) -> None:
    key = host(name).file("/etc/tmr/node.key")
    assert key.user == "tmr" and key.mode == 0o600
    assert host(name).file("/etc/tmr/node.key.pub").mode == 0o644


def test_service_key_only_on_servers_and_identical() -> None:
    digests = {h: host(h).file("/etc/tmr/service.key").sha256sum for h in group("tmr_servers")}
    assert len(set(digests.values())) == 1, digests
    for h in group("tmr_servers"):
        f = host(h).file("/etc/tmr/service.key")
        assert f.user == "tmr" and f.mode == 0o600
    for h in group("tmr_backends") + group("tmr_clients") + group("tmr_admins"):
        assert not host(h).file("/etc/tmr/service.key").exists, f"service secret key on {h}"
    pubs = {
        h: host(h).file("/etc/tmr/service.key.pub").content_string.strip()
        for h in group("tmr_servers") + group("tmr_clients") + group("tmr_admins")
    }
    assert len(set(pubs.values())) == 1, pubs


def test_node_keys_differ() -> None:
    pubs = [
        host(h).file("/etc/tmr/node.key.pub").content_string.strip()
        for h in group("tmr_servers") + group("tmr_backends") + group("tmr_admins")
    ]
    assert len(set(pubs)) == len(pubs)


def test_exactly_one_vip_holder_and_it_is_active() -> None:
    holders = [
        h
        for h in group("tmr_servers")
        if host(h).run(f"ip -4 -o addr show to {vip()}").stdout.strip()
    ]
    assert len(holders) == 1, f"VIP {vip()} held by {holders}"
    roles = {h: server_status(h)["role"] for h in group("tmr_servers")}
    assert roles[holders[0]] == "active", roles
    assert [r for h, r in roles.items() if h != holders[0]] == ["standby"], roles


def test_active_server_sees_three_backends_with_the_license() -> None:
    active = next(h for h in group("tmr_servers") if server_status(h)["role"] == "active")
    st = server_status(active)
    key = f"{FIRM}:{PRODUCT}"
    assert len(st["backends"]) == 3
    for b in st["backends"]:
        assert b["up"], b
        assert b["licenses"][key]["tmr_id"] == TMR_ID and b["licenses"][key]["valid"], b


def test_keepalived_config_is_valid_and_unicast() -> None:
    for h in group("tmr_servers"):
        cfg = host(h).file("/etc/keepalived/keepalived.conf").content_string
        assert "state BACKUP" in cfg and "version 3" in cfg and "unicast_peer" in cfg
        assert "enable_script_security" in cfg and "track_script" in cfg
        assert (
            host(h).run("/usr/local/sbin/keepalived-config-test /etc/keepalived/keepalived.conf").rc
            == 0
        )


@pytest.mark.parametrize(
    ("name", "kind"),
    [(h, "backend") for h in group("tmr_backends")] + [(h, "server") for h in group("tmr_servers")],
)
def test_installed_config_passes_the_services_own_check(name: str, kind: str) -> None:
    """The roles validate with `tmr config check`; the installed file passes it too."""
    out = host(name).run(f"{TMR} config check --kind {kind} --json /etc/tmr/{kind}.toml")
    assert out.rc == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["ok"] is True


@pytest.mark.parametrize("name", group("tmr_servers"))
def test_the_policy_file_is_installed_checked_and_in_force(name: str) -> None:
    """tmr_server_policy_file: the same rules on both servers, as each one reports them."""
    out = host(name).run(f"{TMR} config check --kind policy --json /etc/tmr/policy.toml")
    assert out.rc == 0, out.stdout + out.stderr
    expected = (REPO / "lab" / "policy.toml").read_text()
    assert host(name).file("/etc/tmr/policy.toml").content_string == expected
    policy = server_status(name)["policy"]
    assert policy["licenses"] == 1 and policy["mismatch"] == [], policy


def test_the_policy_is_enforced_through_the_vip(client) -> None:  # type: ignore[no-untyped-def]
    digests = {server_status(s)["policy"]["digest"] for s in group("tmr_servers")}
    assert len(digests) == 1, digests
    args = ("checkout", "--firm", str(FIRM), "--product", str(PRODUCT), "--hold", "0")
    r = client.run(_client_cmd("--user", "lab-excluded", *args))
    assert r.rc != 0 and "POLICY_DENIED" in r.stderr, r.stdout + r.stderr
    assert "exclude user:lab-excluded" in r.stderr
    ok = client.run(_client_cmd("--user", "lab-allowed", *args))
    assert ok.rc == 0, ok.stderr


def _pins() -> dict[str, str]:
    """name -> version pinned in requirements/wheelhouse.txt (the hash-checked dependencies)."""
    pins = {}
    for line in (REPO / "requirements" / "wheelhouse.txt").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name, _, version = line.split()[0].partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


@pytest.mark.parametrize("name", group("tmr_backends")[:1] + group("tmr_servers")[:1])
def test_installed_dependencies_are_the_pinned_versions(name: str) -> None:
    pins = _pins()
    assert {"pyzmq", "msgpack", "cryptography", "prometheus-client"} <= set(pins)
    out = host(name).check_output(f"{PY} -m pip list --format json --disable-pip-version-check")
    installed = {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(out)}
    for dist, version in pins.items():
        assert installed.get(dist) == version, (dist, version, installed.get(dist))


def _through_the_vip(command: tuple[str, ...], *args: str) -> str:
    """A tmr command line (``command``: its words, e.g. ("client",)) that reaches the service
    through the VIP with the pinned service key."""
    vip_args = (
        "--endpoint",
        f"tcp://{vip()}:{CLIENT_PORT}",
        "--server-key",
        "/etc/tmr/service.key.pub",
    )
    return " ".join([TMR, *command, *vip_args, *args])


def _client_cmd(*args: str) -> str:
    return _through_the_vip(("client",), *args)


def test_virtual_container_through_the_vip(client) -> None:  # type: ignore[no-untyped-def]
    out = client.check_output(_client_cmd("--json", "list"))
    doc = json.loads(out)
    lic = next(x for x in doc["licenses"] if x["firm"] == FIRM and x["product"] == PRODUCT)
    assert lic["tmr_id"] == TMR_ID and lic["quantity"] == QUANTITY and lic["available"], lic


def test_checkout_through_the_vip(client) -> None:  # type: ignore[no-untyped-def]
    r = client.run(
        _client_cmd(
            "checkout",
            "--firm",
            str(FIRM),
            "--product",
            str(PRODUCT),
            "--seats",
            "1",
            "--hold",
            "0",
        )
    )
    assert r.rc == 0, r.stderr
    assert "checked out 1 seat" in r.stdout and "released" in r.stdout, r.stdout


def _report_cmd(*args: str) -> str:
    return _through_the_vip(("report", "usage"), "--from", "1d", "--json", "--timeout", "60", *args)


def _demo_license_usage(doc: dict[str, Any]) -> dict[str, Any]:
    """The demo license's line of a usage report, read from all three backends."""
    assert len(doc["sources"]) == 3 and doc["unavailable"] == [], doc
    return next(x for x in doc["licenses"] if x["firm"] == FIRM and x["product"] == PRODUCT)


def _admin() -> Any:
    """The lab's admin host (tmr_admins): site.yml gave it a node key, which tmr_server admits
    for reports (tmr_server_admin_group)."""
    return host(group("tmr_admins")[0])


def _checkout_as_admin() -> None:
    """One checkout (released at once) for the report to count."""
    args = ("checkout", "--firm", str(FIRM), "--product", str(PRODUCT), "--hold", "0")
    r = _admin().run(_client_cmd("--client-key", "/etc/tmr/node.key", *args))
    assert r.rc == 0, r.stdout + r.stderr


def test_usage_report_through_the_vip_with_the_admin_hosts_node_key() -> None:
    """The report is made in the active server's low-priority helper process, under the
    hardened unit, from the three backends' usage records."""
    _checkout_as_admin()
    admin = _admin()
    r = admin.run(_report_cmd("--client-key", "/etc/tmr/node.key"))
    assert r.rc == 0, r.stdout + r.stderr
    usage = _demo_license_usage(json.loads(r.stdout))
    assert usage["checkouts"] >= 1, usage
    admin_pub = admin.file("/etc/tmr/node.key.pub").content_string.strip()
    # the listed keys first (side_effect.yml lists one), then the admin hosts' node keys
    keys = [*_side_effect_admin_key(), admin_pub]
    for name in group("tmr_servers"):
        config = host(name).file("/etc/tmr/server.toml").content_string
        assert f"admin_keys = {json.dumps(keys)}" in config, config


SIDE_EFFECT_KEY = "/root/tmr-side-effect/admin.key"


def _side_effect_admin_key() -> list[str]:
    """The public key side_effect.yml made on the admin host and listed in
    tmr_server_admin_keys, while the servers' server.toml lists it ([] when that step did not
    run, e.g. `molecule converge` then `molecule verify`; side_effect.yml asserts it is
    listed)."""
    pub = _admin().file(SIDE_EFFECT_KEY + ".pub")
    if not pub.exists:
        return []
    key = pub.content_string.strip()
    configs = [host(h).file("/etc/tmr/server.toml").content_string for h in group("tmr_servers")]
    return [key] if all(json.dumps(key) in c for c in configs) else []


def test_an_admin_key_added_in_service_is_in_force_without_a_restart() -> None:
    """side_effect.yml listed a new key in tmr_server_admin_keys on the running cluster and
    asserted that no tmr-server restarted: the key answers reports only if the role's reload
    put it in force in the running servers."""
    if not _side_effect_admin_key():
        pytest.skip("side_effect.yml did not run (molecule test -s default runs it)")
    _checkout_as_admin()
    r = _admin().run(_report_cmd("--client-key", SIDE_EFFECT_KEY))
    assert r.rc == 0, r.stdout + r.stderr
    assert _demo_license_usage(json.loads(r.stdout))["checkouts"] >= 1


def test_usage_report_for_another_key_is_refused() -> None:
    r = _admin().run(_report_cmd())  # a fresh key of its own
    assert r.rc != 0 and "UNAUTHORIZED" in r.stderr, r.stdout + r.stderr


def test_usage_report_on_the_active_servers_control_socket() -> None:
    _checkout_as_admin()
    active = next(h for h in group("tmr_servers") if server_status(h)["role"] == "active")
    cmd = f"{TMR} report usage --ctl /run/tmr/server.sock --from 1d --json --timeout 60"
    r = host(active).run(cmd)
    assert r.rc == 0, r.stdout + r.stderr
    assert _demo_license_usage(json.loads(r.stdout))["checkouts"] >= 1


_TCP_PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error", e)
"""


def _run_py(h, code: str, *args: str) -> str:  # type: ignore[no-untyped-def]
    """Run a Python snippet on a lab host with the tmr virtualenv's interpreter."""
    h.check_output("mkdir -p /tmp/tmr-verify")
    h.run("cat > /tmp/tmr-verify/probe.py <<'PROBE_EOF'\n" + code + "\nPROBE_EOF")
    return str(
        h.check_output(" ".join([PY, "/tmp/tmr-verify/probe.py", *(f"'{a}'" for a in args)]))
    ).strip()


def _tcp_connect(h, ip: str, port: int) -> str:  # type: ignore[no-untyped-def]
    return _run_py(h, _TCP_PROBE, ip, str(port))


@pytest.mark.parametrize("backend", group("tmr_backends"))
def test_backend_port_closed_to_the_client(client, backend: str) -> None:  # type: ignore[no-untyped-def]
    assert _tcp_connect(client, address(backend), BACKEND_PORT) != "open"


@pytest.mark.parametrize("backend", group("tmr_backends"))
def test_backend_port_open_to_the_servers(backend: str) -> None:
    for s in group("tmr_servers"):
        assert _tcp_connect(host(s), address(backend), BACKEND_PORT) == "open"


# A CURVE client on a TMR server host (past the firewall): with a random key the backend's ZAP
# handler refuses the handshake; with that server's node key it succeeds (the control case).
_ZMQ_PROBE = """
import json, sys, zmq
from zmq.utils.monitor import recv_monitor_message
backend_pub, endpoint, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "node":
    k = json.load(open("/etc/tmr/node.key"))
    pub, sec = k["public"].encode(), k["secret"].encode()
else:
    pub, sec = zmq.curve_keypair()
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.curve_publickey, s.curve_secretkey, s.curve_serverkey = pub, sec, backend_pub.encode()
s.linger = 0
mon = s.get_monitor_socket()
s.connect(endpoint)
poller = zmq.Poller()
poller.register(mon, zmq.POLLIN)
result = "timeout"
import time
deadline = time.monotonic() + 5
while time.monotonic() < deadline and result == "timeout":
    if poller.poll(200):
        ev = recv_monitor_message(mon)["event"]
        if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            result = "succeeded"
        elif ev in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            result = "failed"
print(result)
"""


def _zmq_probe(server: str, backend: str, mode: str) -> str:
    backend_pub = host(backend).file("/etc/tmr/node.key.pub").content_string.strip()
    return _run_py(
        host(server), _ZMQ_PROBE, backend_pub, f"tcp://{address(backend)}:{BACKEND_PORT}", mode
    )


@pytest.mark.parametrize("backend", group("tmr_backends"))
def test_client_key_cannot_connect_to_a_backend(backend: str) -> None:
    server = group("tmr_servers")[0]
    assert _zmq_probe(server, backend, "random") in ("failed", "timeout")
    assert _zmq_probe(server, backend, "node") == "succeeded"


def _vip_holder() -> str:
    holders = [
        h
        for h in group("tmr_servers")
        if host(h).run(f"ip -4 -o addr show to {vip()}").stdout.strip()
    ]
    assert len(holders) == 1, holders
    return holders[0]


def _wait(predicate, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def test_switchover_keeps_a_held_seat(client) -> None:  # type: ignore[no-untyped-def]
    """Last test (it moves the VIP): a client holds a seat across a planned switchover."""
    client.check_output("mkdir -p /tmp/tmr-verify && rm -f /tmp/tmr-verify/hold.rc")
    hold = _client_cmd("checkout", "--firm", str(FIRM), "--product", str(PRODUCT), "--hold", "15")
    client.check_output(
        f"nohup sh -c '{hold} > /tmp/tmr-verify/hold.out 2>&1; echo $? > /tmp/tmr-verify/hold.rc'"
        " > /dev/null 2>&1 &"
    )
    _wait(
        lambda: "checked out" in client.run("cat /tmp/tmr-verify/hold.out").stdout, 20, "checkout"
    )
    old = _vip_holder()
    new = next(h for h in group("tmr_servers") if h != old)
    host(old).check_output("systemctl stop keepalived")
    _wait(lambda: _vip_holder() == new and server_status(new)["role"] == "active", 20, "new active")
    host(old).check_output("systemctl start keepalived")
    _wait(lambda: server_status(old)["role"] == "standby", 30, "old server standby")
    _wait(lambda: client.file("/tmp/tmr-verify/hold.rc").exists, 40, "the client to finish")
    rc = client.file("/tmp/tmr-verify/hold.rc").content_string.strip()
    out = client.file("/tmp/tmr-verify/hold.out").content_string
    assert rc == "0", out
    assert "released" in out, out
    assert _vip_holder() == new


def _web_get(client, path: str, token: str | None) -> str:  # type: ignore[no-untyped-def]
    """GET ``path`` from WebAdmin on the VIP, from the client host; "HTTP <code>" on an error."""
    headers = f"{{'Authorization': 'Bearer {token}'}}" if token else "{}"
    return str(
        client.check_output(
            f'{PY} -c "import urllib.request,urllib.error,sys\n'
            f"req = urllib.request.Request('http://{vip()}:22380{path}', headers={headers})\n"
            "try: sys.stdout.write(urllib.request.urlopen(req, timeout=10).read().decode())\n"
            "except urllib.error.HTTPError as e: sys.stdout.write(f'HTTP {e.code}')\""
        )
    )


def test_webadmin_token_only_on_servers_mode_0600_and_identical() -> None:
    tokens = set()
    for h in group("tmr_servers"):
        f = host(h).file("/etc/tmr/web.token")
        assert f.exists and f.mode == 0o600 and f.user == "tmr", h
        tokens.add(f.content_string.strip())
    assert len(tokens) == 1 and len(tokens.pop()) >= 32


def test_webadmin_status_through_the_vip(client) -> None:  # type: ignore[no-untyped-def]
    """WebAdmin answers on the VIP with the token only: the active server, every license
    available, no secrets."""
    token = host(group("tmr_servers")[0]).file("/etc/tmr/web.token").content_string.strip()
    for path in ("/api/status", "/metrics"):
        assert _web_get(client, path, None) == "HTTP 401", path
    assert "tmr_backends_up" in _web_get(client, "/metrics", token)
    out = _web_get(client, "/api/status", token)
    assert token not in out
    doc = json.loads(out)
    assert doc["role"] == "active", doc["role"]
    assert doc["vip"]["held"] is True
    lic = next(x for x in doc["licenses"] if x["firm"] == FIRM and x["product"] == PRODUCT)
    assert lic["available"] and lic["tmr_id"] == TMR_ID
    assert "secret" not in out.lower()


# --------------------------------------------------------------- Prometheus (tmr_monitoring)

_PROM_GET = (
    "import sys, urllib.parse, urllib.request; "
    "url = 'http://127.0.0.1:9090' + sys.argv[1] + '?' + urllib.parse.urlencode(dict("
    "a.split('=', 1) for a in sys.argv[2:])); "
    "sys.stdout.write(urllib.request.urlopen(url, timeout=10).read().decode())"
)


def _prometheus(h, path: str, **params: str):  # type: ignore[no-untyped-def]
    """The `data` of a Prometheus HTTP API answer, asked on the monitoring host itself."""
    args = " ".join(f"'{k}={v}'" for k, v in params.items())
    doc = json.loads(h.check_output(f'python3 -c "{_PROM_GET}" {path} {args}'))
    assert doc["status"] == "success", doc
    return doc["data"]


def _scraped(h) -> dict[str, str]:  # type: ignore[no-untyped-def]
    result = _prometheus(h, "/api/v1/query", query='up{job="tmr"}')["result"]
    return {r["metric"]["instance"]: r["value"][1] for r in result}


@pytest.mark.parametrize("name", group("tmr_monitoring"))
def test_prometheus_scrapes_both_servers_with_the_shipped_rules(name: str) -> None:
    h = host(name)
    svc = h.service("prometheus")
    assert svc.is_enabled and svc.is_running
    token = h.file("/etc/prometheus/tmr-web.token")
    assert (token.user, token.group, token.mode) == ("root", "prometheus", 0o640)
    server_token = host(group("tmr_servers")[0]).file("/etc/tmr/web.token").content_string
    assert token.content_string == server_token
    rules = REPO / "monitoring" / "prometheus" / "tmr-alerts.yml"
    assert h.file("/etc/prometheus/tmr-alerts.yml").content_string == rules.read_text()
    want = {s: "1" for s in group("tmr_servers")}
    _wait(lambda: _scraped(h) == want, 60, f"Prometheus scraping {sorted(want)}")
    loaded = _prometheus(h, "/api/v1/rules", type="alert")["groups"]
    assert {r["name"] for g in loaded for r in g["rules"]} >= {"TmrBackendDown", "TmrServerDown"}
    assert all(r["health"] == "ok" for g in loaded for r in g["rules"])


@pytest.mark.parametrize("name", sorted(set(group("lab_hosts")) - set(group("tmr_monitoring"))))
def test_prometheus_runs_only_on_the_monitoring_host(name: str) -> None:
    svc = host(name).service("prometheus")
    assert not svc.is_enabled and not svc.is_running


# --- the vendor's side: vendor-1 runs the portal; its private key is on vendor-1 only ----------
VENDOR_DIR = "/var/lib/tmr-vendor"
CUSTOMER_GROUPS = ("tmr_servers", "tmr_backends", "tmr_clients")
# where a key copied to a host would be (the image's own files under /usr are not searched)
SEARCHED = "/etc /var /opt /root /home /srv /tmp /usr/local"


def customer_hosts() -> list[str]:
    return sorted({h for g in CUSTOMER_GROUPS for h in group(g)})


def vendor_secret() -> str:
    """The base64 body of vendor-1's PEM private key (unique to this key)."""
    pem = host(group("tmr_vendors")[0]).file(f"{VENDOR_DIR}/vendor.key").content_string
    body = "".join(ln for ln in pem.splitlines() if ln and not ln.startswith("-----"))
    assert len(body) > 40, "vendor.key is not a PEM private key"
    return body


def test_vendor_portal_runs_hardened_with_its_key() -> None:
    h = host(group("tmr_vendors")[0])
    svc = h.service("tmr-vendor-portal")
    assert svc.is_enabled and svc.is_running
    props = dict(
        line.split("=", 1)
        for line in h.check_output(
            "systemctl show tmr-vendor-portal"
            " -p User -p NoNewPrivileges -p ProtectSystem -p MainPID"
        ).splitlines()
    )
    assert (props["User"], props["NoNewPrivileges"], props["ProtectSystem"]) == (
        "tmr-vendor",
        "yes",
        "strict",
    )
    assert h.check_output(f"ps -o user= -p {props['MainPID']}").strip() == "tmr-vendor"
    key = h.file(f"{VENDOR_DIR}/vendor.key")
    assert key.user == "tmr-vendor" and key.mode == 0o600
    assert h.file(VENDOR_DIR).mode == 0o700
    # the API answers on the lab network, where the customers' controller reaches it
    url = f"http://{address(group('tmr_vendors')[0])}:22390/v1/health"
    health = json.loads(h.check_output(f"{PY} -c {shlex.quote(_GET)} {url}"))
    assert health == {"ok": True, "firm_code": FIRM}, health


_GET = (
    "import sys, urllib.request;"
    " print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


@pytest.mark.parametrize("name", customer_hosts())
def test_no_vendor_private_key_on_customer_hosts(name: str) -> None:
    secret = vendor_secret()
    h = host(name)
    assert h.run(f"find {SEARCHED} -xdev -name vendor.key 2>/dev/null").stdout.strip() == ""
    found = h.run(f"grep -rlF {shlex.quote(secret)} {SEARCHED} 2>/dev/null")
    assert found.rc == 1 and not found.stdout.strip(), f"vendor key on {name}: {found.stdout}"
    # the trusted key is the public one, the same as vendor-1's
    if name in group("tmr_backends"):
        pub = json.loads(h.file(f"/etc/tmr/vendors/{FIRM}.pub").content_string)
        vendor_pub = json.loads(
            host(group("tmr_vendors")[0]).file(f"{VENDOR_DIR}/vendor.pub").content_string
        )
        assert pub == vendor_pub


def test_no_vendor_private_key_in_the_customer_inventory_or_build() -> None:
    secret = vendor_secret()
    for name in customer_hosts():
        dumped = json.dumps(hostvars(name), default=str)
        assert secret not in dumped and "PRIVATE KEY" not in dumped, f"hostvars of {name}"
    lab_build = REPO / "build" / os.environ.get("LAB_NAME", "tmr-lab")
    keys = [p for p in lab_build.rglob("*") if p.is_file() and secret in p.read_text("latin-1")]
    assert not keys and not list(lab_build.rglob("vendor.key")), keys


def test_the_demo_license_came_online_and_vendor_1_recorded_it() -> None:
    h = host(group("tmr_vendors")[0])
    run = f"runuser -u tmr-vendor -- {TMR} vendor"
    tickets = json.loads(h.check_output(f"{run} ticket list --dir {VENDOR_DIR}"))
    assert [(t["kind"], t["tmr_id"], t["quantity"], t["state"]) for t in tickets] == [
        ("new", TMR_ID, QUANTITY, "installed")
    ], tickets
    installed = json.loads(h.check_output(f"{run} installed --dir {VENDOR_DIR}"))
    assert [(r["product_code"], r["tmr_id"], r["set_id"]) for r in installed] == [
        (PRODUCT, TMR_ID, tickets[0]["set_id"])
    ]
