"""Drive a running podman lab from the controller: state, faults, the workload, the checker.

Used by the end-to-end molecule scenarios (molecule/failover, rolling_upgrade, license_update,
chaos). Every command goes to the lab's own containers (``podman exec`` / ``podman pause`` /
``podman kill``), never to another address. The lab is named by the environment molecule
sets from the scenario's molecule.yml: LAB_NAME, LAB_PREFIX, LAB_SUBNET (lab/lab.env).

Faults are recorded with their wall-clock time (``Lab.events``), so the workload checker can
report the time from each fault to the next successful operation.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tmr.errors import ErrorCode

T = TypeVar("T")

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY") or Path(__file__).resolve().parents[2])
# the Ansible collection (galaxy.yml) whose installed playbooks the scenarios run
COLLECTION = "tmr.license_server"
TMR = "/opt/tmr/venv/bin/tmr"
CTL_SOCKET = "/run/tmr/server.sock"
CLIENT_PORT = 22350
BACKEND_PORT = 22360
FIRM = 6000123
PRODUCT = 42
LICENSE_KEY = f"{FIRM}:{PRODUCT}"
SERVERS = ("tmr-a", "tmr-b")
BACKENDS = ("backend-1", "backend-2", "backend-3")
CLIENT = "client-1"
# the vendor's host (role tmr_vendor_portal): the vendor key and the portal's state live here only
VENDOR = "vendor-1"
VENDOR_DIR = "/var/lib/tmr-vendor"
VENDOR_USER = "tmr-vendor"
FAULT_TABLE = "tmr_fault"  # nft table the faults add (and heal removes) on a lab host
# the lab's Prometheus (role tmr_monitoring, inventory group tmr_monitoring), asked from inside
# its host so that the query never leaves the lab host
PROMETHEUS_HOST = CLIENT
PROMETHEUS_URL = "http://127.0.0.1:9090"
_HTTP_GET = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


class LabError(AssertionError):
    """The lab did not reach a state in time, or a lab command failed."""


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Event:
    label: str
    at: float  # UNIX time


@dataclass
class Lab:
    name: str = field(default_factory=lambda: os.environ.get("LAB_NAME", "tmr-lab"))
    prefix: str = field(default_factory=lambda: os.environ.get("LAB_PREFIX", ""))
    subnet: str = field(default_factory=lambda: os.environ.get("LAB_SUBNET", "10.89.47.0/24"))
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.net = self.subnet.split("/")[0].rsplit(".", 1)[0]
        self.vip = f"{self.net}.{os.environ.get('LAB_VIP_OCTET', '100')}"
        self.artifacts = REPO / "artifacts" / self.name
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.endpoint = f"tcp://{self.vip}:{CLIENT_PORT}"
        # Ansible's SSH control sockets of this lab's playbook runs: dropped whenever a host
        # dies, so the next playbook does not wait on a connection to the dead instance
        self.ssh_control_dir = Path(f"/tmp/tmr-ssh-{self.name}-{os.getpid()}")

    # ------------------------------------------------------------------ basics

    def container(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def podman(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        proc = subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise LabError(
                f"podman {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc.stdout

    def sh(
        self, host: str, cmd: str, *, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on a lab host (as root)."""
        try:
            proc = subprocess.run(
                ["podman", "exec", self.container(host), "sh", "-c", cmd],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            if check:
                raise LabError(f"{host}: {cmd!r} did not finish in {timeout} s") from exc
            return subprocess.CompletedProcess(cmd, 124, "", f"timeout after {timeout} s")
        if check and proc.returncode != 0:
            raise LabError(
                f"{host}: {cmd!r} exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def put(self, local: Path, host: str, remote: str) -> None:
        """Copy a controller file to a lab host (readable by every user there)."""
        self.podman("cp", str(local), f"{self.container(host)}:{remote}")
        self.sh(host, f"chmod 0644 {shlex.quote(remote)}")

    def get(self, host: str, remote: str, local: Path) -> Path:
        """Copy a file of a lab host to the controller."""
        self.podman("cp", f"{self.container(host)}:{remote}", str(local))
        return local

    def vendor(self, *args: str, timeout: float = 60) -> str:
        """`tmr vendor ARGS --dir VENDOR_DIR` on the vendor's host, as the portal's user."""
        cmd = ["runuser", "-u", VENDOR_USER, "--", TMR, "vendor", *args, "--dir", VENDOR_DIR]
        return self.sh(VENDOR, shlex.join(cmd), timeout=timeout).stdout

    def state(self, host: str) -> str:
        """podman state of a host: running, paused, exited, ..."""
        out = self.podman(
            "inspect", "--format", "{{.State.Status}}", self.container(host), check=False
        )
        return out.strip() or "absent"

    def forget_ssh(self) -> None:
        shutil.rmtree(self.ssh_control_dir, ignore_errors=True)

    def mark(self, label: str) -> float:
        now = time.time()
        self.events.append(Event(label, now))
        say(f"event: {label}")
        return now

    # ------------------------------------------------------------------ cluster state

    def status(self, server: str, timeout: float = 5) -> dict[str, Any] | None:
        """`tmr ctl status` of a TMR server, None when it does not answer."""
        if self.state(server) != "running":
            return None
        proc = self.sh(
            server, f"{TMR} ctl --socket {CTL_SOCKET} status", timeout=timeout, check=False
        )
        if proc.returncode != 0:
            return None
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def roles(self) -> dict[str, str]:
        out = {}
        for s in SERVERS:
            st = self.status(s)
            out[s] = str(st.get("role")) if st else "down"
        return out

    def vip_holders(self) -> list[str]:
        holders = []
        for s in SERVERS:
            if self.state(s) != "running":
                continue
            proc = self.sh(s, f"ip -4 -o addr show to {self.vip}", timeout=10, check=False)
            if proc.stdout.strip():
                holders.append(s)
        return holders

    def active(self) -> str | None:
        for s, role in self.roles().items():
            if role == "active":
                return s
        return None

    def backend_view(self, server: str) -> dict[str, dict[str, Any]]:
        """The active server's view of the backends: name -> {up, caught_up, tmr_id, ...}."""
        st = self.status(server) or {}
        view: dict[str, dict[str, Any]] = {}
        for b in st.get("backends", []):
            lic = (b.get("licenses") or {}).get(LICENSE_KEY) or {}
            view[str(b.get("name"))] = {
                "up": bool(b.get("up")),
                "caught_up": bool(b.get("caught_up", True)),
                "tmr_id": lic.get("tmr_id"),
                "quantity": lic.get("quantity"),
                "valid": lic.get("valid"),
            }
        return view

    def license_row(self, server: str) -> dict[str, Any] | None:
        st = self.status(server) or {}
        for lic in st.get("licenses", []):
            if f"{lic.get('firm')}:{lic.get('product')}" == LICENSE_KEY:
                return dict(lic)
        return None

    def wait_for(
        self,
        what: str,
        predicate: Callable[[], T | None],
        timeout: float,
        interval: float = 0.25,
        describe: Callable[[], object] | None = None,
    ) -> T:
        """Poll `predicate` until it returns a truthy value; LabError naming `what` if not."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                state = describe() if describe else self.snapshot()
                raise LabError(f"not reached in {timeout:g} s: {what}; lab state: {state}")
            time.sleep(interval)

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {"hosts": {}, "vip": self.vip_holders()}
        for s in SERVERS:
            st = self.status(s)
            snap["hosts"][s] = (
                {"role": st.get("role"), "backends": self.backend_view(s)} if st else self.state(s)
            )
        for b in BACKENDS:
            snap["hosts"][b] = self.state(b)
        return snap

    def healthy(self, servers: Iterable[str] = SERVERS) -> str | None:
        """The active server when the cluster is whole: exactly one active server, holding the
        VIP alone, the other standby, all three backends up and caught up with a valid copy."""
        servers = list(servers)
        roles = {s: (self.status(s) or {}).get("role", "down") for s in servers}
        active = [s for s, r in roles.items() if r == "active"]
        if len(active) != 1 or any(r != "standby" for s, r in roles.items() if s != active[0]):
            return None
        if self.vip_holders() != active:
            return None
        view = self.backend_view(active[0])
        if len(view) != 3 or not all(
            b["up"] and b["caught_up"] and b["valid"] for b in view.values()
        ):
            return None
        return active[0]

    def wait_healthy(self, timeout: float = 120) -> str:
        active = self.wait_for(
            "a whole cluster (1 active with the VIP, 1 standby, 3 backends)",
            self.healthy,
            timeout,
            interval=0.5,
        )
        return active

    # ------------------------------------------------------------------ Prometheus

    def prometheus(self, path: str, **params: str) -> Any:
        """The `data` of an answer of the lab Prometheus's HTTP API (GET `path`), None when it
        does not answer; LabError when it answers with an error."""
        url = PROMETHEUS_URL + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        cmd = f"python3 -c {shlex.quote(_HTTP_GET)} {shlex.quote(url)}"
        proc = self.sh(PROMETHEUS_HOST, cmd, timeout=15, check=False)
        if proc.returncode != 0:
            return None
        doc = json.loads(proc.stdout)
        if doc.get("status") != "success":
            raise LabError(f"Prometheus {path} {params}: {doc}")
        return doc["data"]

    def alerts(self, name: str) -> list[dict[str, Any]] | None:
        """The pending and firing alerts named `name` (/api/v1/alerts: labels, state, activeAt);
        None when Prometheus does not answer."""
        data = self.prometheus("/api/v1/alerts")
        if data is None:
            return None
        return [a for a in data["alerts"] if a["labels"].get("alertname") == name]

    def query(self, promql: str) -> dict[str, float] | None:
        """An instant query: instance (or the whole label set) -> value; None: no answer."""
        data = self.prometheus("/api/v1/query", query=promql)
        if data is None:
            return None
        return {
            str(r["metric"].get("instance", r["metric"])): float(r["value"][1])
            for r in data["result"]
        }

    # ------------------------------------------------------------------ faults

    def stop_unit(self, host: str, unit: str) -> float:
        t = self.mark(f"stop {unit} on {host}")
        self.sh(host, f"systemctl stop {unit}")
        return t

    def start_unit(self, host: str, unit: str) -> float:
        t = self.mark(f"start {unit} on {host}")
        self.sh(host, f"systemctl start {unit}")
        return t

    def kill_unit(self, host: str, unit: str) -> float:
        """kill -9 of a service's processes (systemd restarts it: Restart=on-failure)."""
        t = self.mark(f"kill -9 {unit} on {host}")
        self.sh(host, f"systemctl kill --signal=SIGKILL {unit}")
        return t

    def pause_host(self, host: str) -> float:
        self.podman("pause", self.container(host))
        return self.mark(f"pause host {host}")  # when the host is certainly frozen

    def unpause_host(self, host: str) -> float:
        t = self.mark(f"resume host {host}")
        self.podman("unpause", self.container(host))
        return t

    def kill_host(self, host: str) -> float:
        """Power failure: SIGKILL to the whole container (systemd, services, keepalived)."""
        self.podman("kill", self.container(host))
        self.forget_ssh()
        return self.mark(f"kill host {host}")  # when the host is certainly dead

    def stop_host(self, host: str) -> float:
        """Maintenance shutdown: systemd stops the services in order."""
        t = self.mark(f"shut down host {host}")
        self.podman("stop", "-t", "20", self.container(host), timeout=60)
        self.forget_ssh()
        return t

    def start_host(self, host: str, timeout: float = 90) -> float:
        t = self.mark(f"boot host {host}")
        self.podman("start", self.container(host))

        def booted() -> bool:
            st = self.sh(host, "systemctl is-system-running", check=False, timeout=10)
            return st.stdout.strip() in ("running", "degraded")

        self.wait_for(f"systemd up on {host}", booted, timeout, interval=0.5)
        return t

    def _nft(self, host: str, rules: str, label: str) -> float:
        t = self.mark(label)
        chains = "".join(
            f"  chain {hook} {{ type filter hook {hook} priority -50; policy accept;\n"
            f"{rules}\n  }}\n"
            for hook in ("input", "output")
        )
        script = f"table inet {FAULT_TABLE} {{\n{chains}}}\n"
        self.sh(
            host, f"nft delete table inet {FAULT_TABLE} 2>/dev/null; nft -f - <<'EOF'\n{script}EOF"
        )
        return t

    def cut_backend(self, backend: str) -> float:
        """The backend's firewall drops the TMR servers' traffic (both ways)."""
        rules = f"    tcp dport {BACKEND_PORT} drop\n    tcp sport {BACKEND_PORT} drop"
        return self._nft(backend, rules, f"firewall cuts {backend} off")

    def block_vrrp(self, server: str) -> float:
        """VRRP (IP protocol 112) dropped in and out: the keepalived pair cannot hear each other."""
        return self._nft(server, "    ip protocol 112 drop", f"VRRP blocked on {server}")

    def heal_net(self, host: str) -> float:
        t = self.mark(f"firewall fault removed on {host}")
        self.sh(host, f"nft delete table inet {FAULT_TABLE} 2>/dev/null || true")
        return t

    def heal_all(self) -> None:
        """Undo every fault: resume, boot, open firewalls, start units."""
        for h in (*SERVERS, *BACKENDS):
            state = self.state(h)
            if state == "paused":
                self.unpause_host(h)
            elif state != "running":
                self.start_host(h)
            self.sh(h, f"nft delete table inet {FAULT_TABLE} 2>/dev/null || true")
        for s in SERVERS:
            self.sh(s, "systemctl start tmr-server keepalived")
        for b in BACKENDS:
            self.sh(b, "systemctl start tmr-backend")

    # ------------------------------------------------------------------ clients

    def client_cmd(self, *args: str) -> list[str]:
        return [
            TMR,
            "client",
            "--endpoint",
            self.endpoint,
            "--server-key",
            "/etc/tmr/service.key.pub",
            *args,
        ]

    def probe_checkout(self, timeout: float = 20) -> tuple[str, str]:
        """One checkout (1 seat, released at once) from client-1 through the VIP.

        Returns (outcome, output): "ok", an error code the service answered (e.g.
        NO_LICENSE_AVAILABLE, QUORUM_LOST) or "unavailable" (no answer)."""
        cmd = shlex.join(
            self.client_cmd(
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
        proc = self.sh(CLIENT, cmd + " 2>&1", timeout=timeout, check=False)
        out = proc.stdout.strip()
        if proc.returncode == 0:
            return "ok", out
        for code in ErrorCode:
            if code.value in out:
                return code.value, out
        return "unavailable", out

    # ------------------------------------------------------------------ workload

    def start_workload(
        self,
        name: str,
        *,
        duration: float,
        clients: int = 20,
        seed: int = 1,
        extra: Iterable[str] = (),
    ) -> Workload:
        unit = f"tmr-workload-{name}"
        out = f"/var/tmp/{name}.jsonl"
        cmd = [
            "systemd-run",
            f"--unit={unit}",
            "--property=KillSignal=SIGINT",
            "--property=TimeoutStopSec=60",
            "--collect",
            TMR,
            "workload",
            "run",
            "--endpoint",
            self.endpoint,
            "--server-key",
            "/etc/tmr/service.key.pub",
            "--firm",
            str(FIRM),
            "--product",
            str(PRODUCT),
            "--clients",
            str(clients),
            "--duration",
            str(duration),
            "--seed",
            str(seed),
            "--out",
            out,
            "--progress",
            "10",
            *extra,
        ]
        self.sh(
            CLIENT,
            f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null; "
            f"rm -f {out}; {shlex.join(cmd)}",
        )
        say(
            f"workload {name}: {clients} clients for up to {duration:g} s, seed {seed} "
            f"(journalctl -u {unit} on {CLIENT})"
        )
        wl = Workload(self, name, unit, out, time.time())
        self.wait_for(f"workload {name} started", lambda: wl.ops() > 0, 60, interval=0.5)
        return wl

    def playbook(self, playbook: str, *extra: str, timeout: float = 900) -> str:
        """Run one of the collection's playbooks (e.g. "switchover.yml" runs
        tmr.license_server.switchover from the installed tarball, make collection-install)
        against this lab (molecule's inventory)."""
        inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
        if not inventory:
            raise LabError("MOLECULE_INVENTORY_FILE is not set: run the scenario through molecule")
        ansible = Path(sys.executable).parent / "ansible-playbook"
        fqcn = f"{COLLECTION}.{Path(playbook).stem}"
        cmd = [str(ansible), "-i", inventory, fqcn, *extra]
        say(f"ansible-playbook {fqcn} {' '.join(extra)}")
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.ssh_control_dir),
        }
        env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / "build" / "collections"))
        env.setdefault("TMR_REPO_DIR", str(REPO))
        env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
            cwd=REPO,
        )
        log = self.artifacts / f"playbook-{playbook.replace('/', '_')}-{int(time.time())}.log"
        log.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
            raise LabError(f"{playbook} failed (exit {proc.returncode}; log {log}):\n{tail}")
        recap = [ln for ln in proc.stdout.splitlines() if " : ok=" in ln]
        for ln in recap:
            say(f"  {ln.strip()}")
        return proc.stdout


@dataclass
class Workload:
    lab: Lab
    name: str
    unit: str
    remote: str
    started: float

    def ops(self) -> int:
        proc = self.lab.sh(CLIENT, f"test -f {self.remote} && wc -l < {self.remote}", check=False)
        try:
            return max(0, int(proc.stdout.strip() or "0") - 1)
        except ValueError:
            return 0

    def recent(self, since: float, tail: int = 4000) -> list[dict[str, Any]]:
        """Operations that ended at or after `since` (UNIX), from the history's last lines."""
        proc = self.lab.sh(CLIENT, f"tail -n {tail} {self.remote}", check=False)
        ops = []
        for line in proc.stdout.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line being written
            if rec.get("type") == "op" and (rec.get("end_wall") or 0) >= since:
                ops.append(rec)
        return ops

    def granted_since(self, since: float) -> int:
        return sum(
            1 for r in self.recent(since) if r.get("op") == "checkout" and r.get("outcome") == "ok"
        )

    def wait_granted(self, since: float, n: int = 3, timeout: float = 60) -> int:
        """Wait until `n` checkouts were granted after `since`."""

        def enough() -> int:
            k = self.granted_since(since)
            return k if k >= n else 0

        return self.lab.wait_for(
            f"{n} checkouts granted to the workload after the fault",
            enough,
            timeout,
            interval=0.5,
        )

    def running(self) -> bool:
        proc = self.lab.sh(CLIENT, f"systemctl is-active {self.unit}", check=False)
        return proc.stdout.strip() in ("active", "activating", "deactivating")

    def stop(self, timeout: float = 90) -> Path:
        """Stop the clients (SIGINT: they finish their operation and write the end record),
        wait for the history, and copy it to the artifacts directory."""
        if self.running():
            self.lab.sh(CLIENT, f"systemctl kill --signal=SIGINT {self.unit}", check=False)
        return self.wait(timeout)

    def wait(self, timeout: float) -> Path:
        self.lab.wait_for(
            f"workload {self.name} finished", lambda: not self.running(), timeout, interval=0.5
        )
        local = self.lab.artifacts / f"{self.name}.jsonl"
        self.lab.podman("cp", f"{self.lab.container(CLIENT)}:{self.remote}", str(local))
        say(f"workload {self.name}: history {local} ({sum(1 for _ in local.open())} lines)")
        return local

    def handles(self) -> Path:
        """The active server's handle table now (for the checker's I7)."""
        active = self.lab.wait_for("an active server for the handle table", self.lab.active, 60)
        remote = f"/var/tmp/{self.name}.handles.json"
        self.lab.sh(
            active, f"{TMR} workload handles --socket {CTL_SOCKET} --out {remote}", timeout=30
        )
        local = self.lab.artifacts / f"{self.name}.handles.json"
        self.lab.podman("cp", f"{self.lab.container(active)}:{remote}", str(local))
        return local


def check(
    history: Path,
    *,
    lq: int | None = None,
    schedule: list[dict[str, Any]] | None = None,
    handles: Path | None = None,
    events: Iterable[Event] = (),
    fail_on: str = "",
    gap: float = 0.5,
    margin: float | None = None,
) -> dict[str, Any]:
    """`tmr workload check` on the controller; prints its summary, returns the JSON report."""
    tmr = Path(sys.executable).parent / "tmr"
    cmd = [str(tmr), "workload", "check", str(history), "--gap", str(gap)]
    if lq is not None:
        cmd += ["--lq", str(lq)]
    if schedule:
        sched = history.with_suffix(".lq-schedule.json")
        sched.write_text(json.dumps(schedule))
        cmd += ["--lq-schedule", str(sched)]
    if margin is not None:
        cmd += ["--schedule-margin", f"{margin:.3f}"]
    if handles is not None:
        cmd += ["--handles", str(handles)]
    for ev in events:
        cmd += ["--event", f"{ev.label}@{ev.at:.3f}"]
    if fail_on:
        cmd += ["--fail-on", fail_on]
    report = history.with_suffix(".check.json")
    cmd += ["--out", str(report)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    print(proc.stdout, flush=True)
    if proc.returncode not in (0, 1):
        raise LabError(f"tmr workload check failed (exit {proc.returncode}): {proc.stderr}")
    doc: dict[str, Any] = json.loads(report.read_text())
    doc["exit_code"] = proc.returncode
    return doc


def ops_between(history: Path, start: float, end: float) -> dict[str, dict[str, int]]:
    """Outcome counts per operation kind for operations that ended in [start, end] (UNIX)."""
    counts: dict[str, dict[str, int]] = {}
    with history.open() as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("type") != "op":
                continue
            t = rec.get("end_wall")
            if t is None or not (start <= t <= end):
                continue
            kind = counts.setdefault(str(rec.get("op")), {})
            outcome = str(rec.get("outcome"))
            kind[outcome] = kind.get(outcome, 0) + 1
    return counts
