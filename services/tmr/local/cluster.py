"""`tmr local up|down|status`: a whole cluster of real processes on 127.0.0.1.

Three backends and two TMR servers run as background processes with the same entry points
as in a deployment (`tmr backend run`, `tmr server run`); only the configuration differs.
`DIR/cluster.json` tells clients and tests where everything is.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tmr.config import lease_error
from tmr.ctl import CtlError, ctl_request
from tmr.errors import TmrError
from tmr.isv import init_vendor, issue_set, load_vendor
from tmr.isv.profile import load_product
from tmr.keys import generate_keypair, load_keypair, write_keypair
from tmr.licensing import LicenseError, LicenseReason, make_fingerprint_doc, read_copy

FIRM = 6000123
PRODUCT = 42
BACKENDS = ("backend-1", "backend-2", "backend-3")
SERVERS = ("tmr-a", "tmr-b")
ADMIN = "admin"  # the demo administrator's client key (keys/admin.key)
START_TIMEOUT = 30.0
SERVE_TIMEOUT = 60.0  # `tmr local up` waits this long for the cluster to serve
PORT_RETRIES = 3  # new ports for a process whose port was taken before it could bind it
ADDRESS_IN_USE = ("Address already in use", "EADDRINUSE")
MAX_PRODUCTS = 10_000  # license sets `local_up` issues at most (one per product)


class ClusterError(TmrError):
    """The local cluster could not be started or found."""


def _drop_old_format_copies(license_dirs: list[Path]) -> bool:
    """Remove copies this build does not read (an older format, issued by an older build of
    this demo); True if there were any (the demo vendor then issues a new set)."""
    dropped = False
    for path in (p for d in license_dirs for p in sorted(d.glob("*.tmrlic"))):
        try:
            read_copy(path)
        except LicenseError as exc:
            if exc.reason == LicenseReason.UNSUPPORTED_VERSION:
                path.unlink()
                dropped = True
    return dropped


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ctl_path(root: Path, name: str) -> Path:
    """Unix socket paths are limited to ~100 bytes: fall back to a short /tmp path."""
    path = root / "run" / f"{name}.sock"
    if len(str(path)) < 100:
        return path
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path("/tmp") / f"tmr-{digest}" / f"{name}.sock"


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _ctl_ok(path: Path, cmd: str = "status") -> dict[str, Any] | None:
    try:
        reply = ctl_request(path, cmd, timeout=1.0)
    except CtlError:
        return None
    return reply if reply.get("ok", True) else None


def _ensure_keys(path: Path) -> str:
    if not path.exists():
        write_keypair(path, generate_keypair())
    return load_keypair(path).public


def local_up(
    root: Path,
    *,
    quantity: int = 20,
    products: int = 1,
    tmr_id: int = 7,
    lease: float = 30.0,
    base_port: int = 0,
    progress: bool = True,
    backend_timeout: float = 1.0,
    wait: bool = True,
    timeout: float = SERVE_TIMEOUT,
) -> dict[str, Any]:
    """Set up and start the cluster; return once it serves (`wait_serving`: the active
    server answers a real `list` on a client endpoint with every backend up, and its WebAdmin
    says so), or, with ``wait=False``, once the first server is promoted. A port that was
    taken between choosing it and binding it is replaced (new free port, process restarted;
    at most PORT_RETRIES times per process). ClusterError (and the cluster stopped) if it does
    not start or serve within ``timeout`` seconds.

    ``products`` license sets are issued (product codes PRODUCT, PRODUCT + 1, ..., each with
    LQ ``quantity``), as a site with many licensed products has them (the benchmark's growth
    section uses 1,000)."""
    if not 1 <= products <= MAX_PRODUCTS:
        raise ClusterError(f"products must be 1 to {MAX_PRODUCTS}, not {products}")
    why = lease_error(lease)  # the servers' config would refuse it
    if why is not None:
        raise ClusterError(f"the lease {why}")
    if not 0 < backend_timeout < math.inf:
        raise ClusterError(
            f"the backend timeout must be greater than 0 and finite, not {backend_timeout:g}"
        )
    root = root.resolve()
    say: Callable[[str], None] = (
        (lambda m: print(f"==> {m}", flush=True)) if progress else (lambda m: None)
    )
    cluster_file = root / "cluster.json"
    if cluster_file.exists():
        old = json.loads(cluster_file.read_text())
        if any(_alive(n["pid"]) for n in old.get("nodes", [])):
            raise ClusterError(
                f"a cluster is already running from {root}: tmr local down --dir {root}"
            )
    for sub in ("keys", "vendor", "logs", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    say("keys: service key pair, node keys of 2 TMR servers and 3 backends")
    service_pub = _ensure_keys(root / "keys" / "service.key")
    pubs = {name: _ensure_keys(root / "keys" / f"{name}.key") for name in (*SERVERS, *BACKENDS)}
    # The demo's administrator: the one client key the servers answer usage reports for
    # (server.toml admin_keys); `tmr report usage --cluster DIR` uses it.
    pubs[ADMIN] = _ensure_keys(root / "keys" / f"{ADMIN}.key")

    ports: dict[str, int] = {}
    for i, name in enumerate((*BACKENDS, *SERVERS, *(f"{n}-web" for n in SERVERS))):
        ports[name] = base_port + i if base_port else _free_port()

    vendor_dir = root / "vendor"
    if not (vendor_dir / "vendor.pub").exists():
        say(f"vendor: firm code {FIRM}")
        init_vendor(vendor_dir, FIRM, "Local demo vendor")
    vendor = load_vendor(vendor_dir)

    docs = []
    for name in BACKENDS:
        bdir = root / name
        (bdir / "licenses").mkdir(parents=True, exist_ok=True)
        mid = bdir / "machine-id"
        if not mid.exists():
            mid.write_text(hashlib.sha256(f"{root}/{name}".encode()).hexdigest()[:32] + "\n")
        docs.append(make_fingerprint_doc(pubs[name], mid.read_text().strip()))
    old_format = _drop_old_format_copies([root / name / "licenses" for name in BACKENDS])
    if not any(any((root / name / "licenses").glob("*.tmrlic")) for name in BACKENDS):
        by_fp = {d.fingerprint: name for d, name in zip(docs, BACKENDS, strict=True)}
        for code in range(PRODUCT, PRODUCT + products):
            set_id = tmr_id
            if old_format:  # copies of an older format: a new set, with the next TMR ID
                record = load_product(vendor, code)
                set_id = max(tmr_id, (record.last_tmr_id if record else 0) + 1)
            if code == PRODUCT:
                say(f"license set: firm {FIRM} product {code} LQ {quantity} TMR ID #{set_id}")
            elif code == PRODUCT + 1:
                say(f"  and {products - 1} more products ({code}-{PRODUCT + products - 1})")
            issued = issue_set(
                vendor,
                product_code=code,
                quantity=quantity,
                tmr_id=set_id,
                fingerprints=docs,
                out_dir=root / "vendor" / "issued",
            )
            for copy in issued.copies:
                dest = root / by_fp[copy.fingerprint] / "licenses" / copy.path.name
                dest.write_bytes(copy.path.read_bytes())

    nodes: list[dict[str, Any]] = []
    for role, names in (("backend", BACKENDS), ("server", SERVERS)):
        for name in names:
            (root / name).mkdir(exist_ok=True)
            node = {
                "name": name,
                "role": role,
                "public_key": pubs[name],
                "config": str(root / name / f"{role}.toml"),
                "ctl_socket": str(ctl_path(root, name)),
                "log": str(root / "logs" / f"{name}.log"),
            }
            nodes.append(node)
    # One policy file for both servers, as the tmr_server role installs it: edit it, then
    # `tmr ctl --socket DIR/run/tmr-X.sock reload` on each server (docs/operator-guide.md §8).
    policy = root / "policy.toml"
    if not policy.exists():
        policy.write_text("# no rules: every client may use every license\n")
    layout = _Layout(root, vendor_dir, pubs, ports, lease, backend_timeout)
    for node in nodes:
        layout.write_config(node)

    say("starting 3 backends and 2 TMR servers on 127.0.0.1")
    info: dict[str, Any] = {
        "cluster_file": str(cluster_file),
        "dir": str(root),
        "service_public_key": service_pub,
        "client_endpoints": [],
        "firm_code": FIRM,
        "product_code": PRODUCT,
        "vendor_dir": str(vendor_dir),
        "admin_client_key": str(root / "keys" / f"{ADMIN}.key"),
        "nodes": nodes,
    }
    try:
        for group in (nodes[: len(BACKENDS)], nodes[len(BACKENDS) :]):
            for node in group:
                _start_with_free_ports(node, layout, say, retry=not base_port)
            if group[0]["role"] == "backend":  # the servers' configs name the final ports
                for server in nodes[len(BACKENDS) :]:
                    layout.write_config(server)
        info["client_endpoints"] = [n["endpoint"] for n in nodes if n["role"] == "server"]
        cluster_file.write_text(json.dumps(info, indent=2) + "\n")
        first = nodes[len(BACKENDS)]
        say(f"promoting {first['name']}")
        ctl_request(Path(first["ctl_socket"]), "promote")
        wait_for(
            f"{first['name']} to become active (log: {first['log']})",
            lambda: (_ctl_ok(Path(first["ctl_socket"])) or {}).get("role") == "active",
            START_TIMEOUT,
        )
        if wait:
            wait_serving(info, first, timeout, say)
    except (ClusterError, CtlError):
        cluster_file.write_text(json.dumps(info, indent=2) + "\n")
        local_down(root)
        raise
    say(f"up: client endpoints {' '.join(info['client_endpoints'])}")
    say(f"WebAdmin: {' '.join(n['web_url'] for n in nodes if n['role'] == 'server')}")
    return info


class _Layout:
    """Writes a node's configuration file for the ports chosen so far."""

    def __init__(
        self,
        root: Path,
        vendor_dir: Path,
        pubs: dict[str, str],
        ports: dict[str, int],
        lease: float,
        backend_timeout: float,
    ) -> None:
        self.root = root
        self.vendor_dir = vendor_dir
        self.pubs = pubs
        self.ports = ports
        self.lease = lease
        self.backend_timeout = backend_timeout

    def port_names(self, node: dict[str, Any]) -> tuple[str, ...]:
        name = str(node["name"])
        return (name,) if node["role"] == "backend" else (name, f"{name}-web")

    def write_config(self, node: dict[str, Any]) -> None:
        root, name, ports, pubs = self.root, str(node["name"]), self.ports, self.pubs
        node["endpoint"] = f"tcp://127.0.0.1:{ports[name]}"
        if node["role"] == "backend":
            bdir = root / name
            text = (
                f'name = "{name}"\n'
                f'listen = "tcp://127.0.0.1:{ports[name]}"\n'
                f'key_file = "{root / "keys" / f"{name}.key"}"\n'
                f'state_dir = "{bdir / "state"}"\n'
                f'license_dir = "{bdir / "licenses"}"\n'
                f"vendor_keys = {_toml_list([str(self.vendor_dir / 'vendor.pub')])}\n"
                f"allowed_servers = {_toml_list([pubs[s] for s in SERVERS])}\n"
                f'machine_id_file = "{bdir / "machine-id"}"\n'
                f'ctl_socket = "{ctl_path(root, name)}"\n'
            )
        else:
            sdir = root / name
            backends_toml = "".join(
                f'\n[[backends]]\nname = "{n}"\nendpoint = "tcp://127.0.0.1:{ports[n]}"\n'
                f'public_key = "{pubs[n]}"\n'
                for n in BACKENDS
            )
            text = (
                f'name = "{name}"\n'
                f'client_listen = "tcp://127.0.0.1:{ports[name]}"\n'
                f'service_key_file = "{root / "keys" / "service.key"}"\n'
                f'node_key_file = "{root / "keys" / f"{name}.key"}"\n'
                f'ctl_socket = "{ctl_path(root, name)}"\n'
                f'state_dir = "{sdir / "state"}"\n'
                f"lease_seconds = {float(self.lease)}\n"
                f"backend_timeout = {float(self.backend_timeout)}\n"
                f'web_listen = "127.0.0.1:{ports[name + "-web"]}"\n'
                f"admin_keys = {_toml_list([pubs[ADMIN]])}\n"
                f'policy_file = "{root / "policy.toml"}"\n' + backends_toml
            )
            node["web_url"] = f"http://127.0.0.1:{ports[name + '-web']}/"
        Path(node["config"]).write_text(text)


def _start_with_free_ports(
    node: dict[str, Any], layout: _Layout, say: Callable[[str], None], *, retry: bool
) -> None:
    """Start a node and wait until it answers; if it exits because a port was taken since it
    was chosen, choose new ports and start it again (``retry``; at most PORT_RETRIES)."""
    for attempt in range(PORT_RETRIES + 1):
        log = Path(node["log"])
        offset = log.stat().st_size if log.exists() else 0
        start_node(node)
        try:
            wait_for(
                f"{node['name']} to answer on {node['ctl_socket']} (log: {node['log']})",
                functools.partial(_check_started, node),
                START_TIMEOUT,
            )
            return
        except ClusterError:
            with open(log, "rb") as fh:
                fh.seek(offset)
                output = fh.read().decode("utf-8", "replace")
            if not retry or attempt == PORT_RETRIES or not any(m in output for m in ADDRESS_IN_USE):
                raise
        taken = [layout.ports[p] for p in layout.port_names(node)]
        for p in layout.port_names(node):
            layout.ports[p] = _free_port()
        layout.write_config(node)
        say(f"{node['name']}: port {', '.join(map(str, taken))} was taken; retrying on new ports")


def serving_problems(info: dict[str, Any], server: dict[str, Any]) -> list[str]:
    """What keeps the cluster from serving (empty: it serves): ``server`` active with every
    backend up, a real `list` answered on the client endpoints, and its WebAdmin saying so."""
    status = _ctl_ok(Path(server["ctl_socket"]))
    if status is None:
        return [f"{server['name']} does not answer on its control socket"]
    problems = []
    if status.get("role") != "active":
        problems.append(f"{server['name']} is {status.get('role')}, not active")
    down = sorted(str(b["name"]) for b in status.get("backends", []) if not b.get("up"))
    if down:
        problems.append(f"backends not up: {', '.join(down)}")
    if problems:
        return problems
    from tmr.client import Client  # here: the SDK is needed only once the cluster runs

    try:
        with Client(info["client_endpoints"], info["service_public_key"], timeout=2.0) as c:
            licenses = c.list_licenses().licenses
    except TmrError as exc:
        return [f"list on {' '.join(info['client_endpoints'])}: {exc}"]
    if not any(lic.available for lic in licenses):
        problems.append("no license available yet")
    web = _web_status(str(server.get("web_url", "")))
    if web is not None and (web.get("role") != "active" or web.get("backends_up") != 3):
        problems.append(
            f"WebAdmin shows {web.get('role')} with {web.get('backends_up')} backends up"
        )
    return problems


def _web_status(url: str) -> dict[str, Any] | None:
    """/api/status of a WebAdmin (None: no WebAdmin; a problem reads as an empty status)."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url + "api/status", timeout=2.0) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def wait_serving(
    info: dict[str, Any],
    server: dict[str, Any],
    timeout: float,
    say: Callable[[str], None],
    *,
    problems_of: Callable[[dict[str, Any], dict[str, Any]], list[str]] = serving_problems,
    interval: float = 0.1,
) -> None:
    """Wait until ``problems_of`` finds nothing; say each new state; ClusterError naming
    what is still missing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    said: list[str] | None = None
    while True:
        problems = problems_of(info, server)
        if not problems:
            say(f"serving: {server['name']} active, 3 backends up, list answered")
            return
        if problems != said:
            say(f"waiting for the cluster to serve: {'; '.join(problems)}")
            said = problems
        if time.monotonic() > deadline:
            raise ClusterError(
                f"the cluster does not serve after {timeout:g}s: {'; '.join(problems)} "
                f"(logs in {Path(info['dir']) / 'logs'})"
            )
        time.sleep(interval)


def start_node(node: dict[str, Any]) -> int:
    """Start one node's process in the background (also used by tests to restart one)."""
    verb = "backend" if node["role"] == "backend" else "server"
    log = open(node["log"], "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tmr", verb, "run", "--config", node["config"]],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    finally:
        log.close()
    node["pid"] = proc.pid
    return proc.pid


def _check_started(node: dict[str, Any]) -> bool:
    if not _alive(node["pid"]):
        tail = Path(node["log"]).read_text(errors="replace").strip().splitlines()[-5:]
        raise ClusterError(f"{node['name']} exited at start:\n" + "\n".join(tail))
    return _ctl_ok(Path(node["ctl_socket"])) is not None


def local_down(root: Path, timeout: float = 10.0) -> int:
    cluster_file = root.resolve() / "cluster.json"
    if not cluster_file.exists():
        raise ClusterError(f"{cluster_file}: no cluster here")
    info = json.loads(cluster_file.read_text())
    pids = [n["pid"] for n in info["nodes"] if n.get("pid") and _alive(n["pid"])]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _reap()
    return len(pids)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def local_status(root: Path) -> dict[str, Any]:
    cluster_file = root.resolve() / "cluster.json"
    if not cluster_file.exists():
        raise ClusterError(f"{cluster_file}: no cluster here")
    info: dict[str, Any] = json.loads(cluster_file.read_text())
    for n in info["nodes"]:
        n["alive"] = _alive(n["pid"])
    return info
