"""`make bench`: throughput, latency, failover and cost growth of TMR against baselines.

Everything runs in ONE process tree, on 127.0.0.1 only, in a temporary directory, and stops
by itself (every wait and every load run is bounded). In order:

1. a local cluster (`tmr.local.cluster`: 3 durable backends, 2 TMR servers), LQ 20,000;
2. baseline (a), a CURVE echo server (`bench.echo`), at 1, 10 and 100 clients;
3. baseline (b), a single-node license server on SQLite (`bench.single`), the same;
4. TMR through the active server, the same; then crypt calls;
5. cost growth: throughput and server memory with 1,000 and 10,000 held handles, and the
   takeover time with 10,000 handles (kill -9 of the active server, promote the standby);
6. failover with 20 clients: kill -9 of the active server + promote of the standby, then
   kill -9 of a backend; gaps, lost and duplicate seats;
7. the cluster goes down; baseline (c), a 3-member etcd cluster (`bench.etcd`), at 1, 10 and
   100 clients.

Prints a table and writes ``bench/results/latest.json``. ``--quick`` shortens every run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import platform
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from bench import profile
from bench.common import (
    FIRM,
    PRODUCT,
    REPO,
    Json,
    LoadResult,
    collect_workers,
    cpu_seconds,
    rss_mib,
    split_clients,
    start_worker,
)
from bench.etcd import EtcdCluster, ensure_etcd
from tmr.ctl import CtlError, ctl_request
from tmr.local.cluster import local_down, local_up, start_node

LEVELS = (1, 10, 100)
QUANTITY = 20_000
LEASE = 3600.0  # held handles must not expire during the run (no heartbeats are sent)
SETUP = 2.0  # seconds between starting the workers and the measurement window (warm-up)
# keepalived's detection time, which the failover measurements model before they promote:
# VRRP master-down interval = 3 x advert_int + skew, with advert_int 0.2 s and priority 100
# (the role's defaults): 3 x 0.2 + (256 - 100) / 256 x 0.2 = 0.72 s
VRRP_DETECT = 3 * 0.2 + (256 - 100) / 256 * 0.2


def log(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def workers_for(clients: int) -> int:
    return 1 if clients <= 10 else 2


# ---------------------------------------------------------------------- the machine


def machine_info(tmp: Path) -> Json:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    disk: Json = {}
    try:
        out = subprocess.run(
            ["df", "--output=source,fstype", str(tmp)],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
        source, fstype = out[-1].split()[:2]
        disk = {"device": source, "fstype": fstype}
        dev = Path(source).name
        rot = Path(f"/sys/block/{dev}/queue/rotational")
        if rot.exists():
            disk["rotational"] = rot.read_text().strip() == "1"
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        pass
    disk["fsync_ms"] = round(fsync_latency(tmp), 3)
    etcd = shutil.which("etcd")
    etcd_version = ""
    if etcd:
        try:
            etcd_version = subprocess.run(
                [etcd, "--version"], check=False, capture_output=True, text=True, timeout=10
            ).stdout.splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "disk": disk,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "etcd": etcd_version,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def fsync_latency(tmp: Path, count: int = 100) -> float:
    """Mean milliseconds of one small write + fsync in the benchmark's directory."""
    path = tmp / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        start = time.perf_counter()
        for _ in range(count):
            os.write(fd, b"x" * 128)
            os.fsync(fd)
        return (time.perf_counter() - start) * 1000.0 / count
    finally:
        os.close(fd)
        path.unlink()


# ---------------------------------------------------------------------- the local cluster


class Cluster:
    """The local cluster of `tmr local up`, with kill / restart / promote for the benchmark."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.info = local_up(root, quantity=QUANTITY, lease=LEASE, progress=False)
        self.nodes: dict[str, Json] = {n["name"]: n for n in self.info["nodes"]}
        self.key: str = self.info["service_public_key"]
        self.endpoints: list[str] = list(self.info["client_endpoints"])
        self.servers = [n for n in self.nodes if self.nodes[n]["role"] == "server"]

    def _save(self) -> None:
        self.info["nodes"] = list(self.nodes.values())
        (self.root / "cluster.json").write_text(json.dumps(self.info, indent=2) + "\n")

    def pid(self, name: str) -> int:
        return int(self.nodes[name]["pid"])

    def ctl(self, name: str, cmd: str, timeout: float = 3.0) -> Json:
        return ctl_request(Path(self.nodes[name]["ctl_socket"]), cmd, timeout=timeout)

    def role(self, name: str) -> str:
        try:
            return str(self.ctl(name, "status", timeout=1.0).get("role"))
        except CtlError:
            return "down"

    def active(self) -> str:
        for name in self.servers:
            if self.role(name) == "active":
                return name
        raise RuntimeError("no TMR server is active")

    def standby(self) -> str:
        active = self.active()
        return next(n for n in self.servers if n != active)

    def endpoints_from(self, name: str) -> tuple[list[str], int]:
        """All client endpoints and the index of `name`'s (clients start there)."""
        return self.endpoints, self.endpoints.index(self.nodes[name]["endpoint"])

    def kill(self, name: str) -> float:
        """kill -9; returns the monotonic time of the kill."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        t = time.monotonic()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            wait_until(f"{name} to die", lambda: not Path(f"/proc/{pid}").exists(), 10)
        return t

    def start(self, name: str) -> None:
        start_node(self.nodes[name])
        self._save()
        wait_until(f"{name} to answer its control socket", lambda: self.role(name) != "down", 30)

    def promote(self, name: str, timeout: float = 20.0) -> float:
        """ctl promote, then poll status until active; returns seconds from promote to active."""
        t0 = time.monotonic()
        self.ctl(name, "promote")
        deadline = t0 + timeout
        while True:
            if self.role(name) == "active":
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become active within {timeout:g} s")
            time.sleep(0.005)

    def backends_up(self, server: str) -> set[str]:
        st = self.ctl(server, "status")
        return {b["name"] for b in st.get("backends", []) if b.get("up")}

    def handles(self, server: str) -> list[Json]:
        out: list[Json] = self.ctl(server, "handles", timeout=10.0).get("handles", [])
        return out

    def down(self) -> None:
        self._save()
        local_down(self.root)


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------------- measurements


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.duration = 2.0 if args.quick else float(args.duration)
        self.reps = 1 if args.quick else int(args.reps)
        self.results: Json = {}
        self.servers: list[subprocess.Popen[str]] = []
        self.cluster: Cluster | None = None
        self.etcd: EtcdCluster | None = None
        self.run_no = 0

    # -- helpers

    def _tag(self, what: str) -> str:
        self.run_no += 1
        return f"{what}{self.run_no}"

    def load(
        self,
        what: str,
        endpoints: list[str],
        clients: int,
        *,
        proto: str = "tmr",
        mode: str = "cycle",
        first: int = 0,
        duration: float | None = None,
        record: bool = False,
        module: str = "bench.loadgen",
        extra: Json | None = None,
        cpu_pids: dict[str, int] | None = None,
        during: Callable[[float], None] | None = None,
        rounds_of: str | None = None,
    ) -> tuple[LoadResult, Json]:
        """One measurement: workers, a window of `duration` s after SETUP s of warm-up.

        `during(start_at)` runs in this process while the workers run (e.g. a kill).
        Returns the merged result and the CPU seconds per cycle of `cpu_pids`; with
        `rounds_of` (a backend) also the replication rounds it committed per second in the
        window and the client ops per round (group commit at work).
        """
        duration = self.duration if duration is None else duration
        start_at = time.monotonic() + SETUP
        tag = self._tag(what)
        specs = [
            {
                "mode": mode,
                "proto": proto,
                "endpoints": endpoints,
                "server_key": self.key,
                "firm": FIRM,
                "product": PRODUCT,
                "start_at": start_at,
                "duration": duration,
                "drain": 15.0,
                "clients": n,
                "worker": i,
                "first_endpoint": first,
                "run": tag,
                "record": record,
                **(extra or {}),
            }
            for i, n in enumerate(split_clients(clients, workers_for(clients)))
        ]
        cpu_before: dict[str, float] = {}
        writes: list[int] = []

        def sample_cpu() -> None:
            time.sleep(max(0.0, start_at - time.monotonic()))
            for name, pid in (cpu_pids or {}).items():
                cpu_before[name] = cpu_seconds(pid)
            if rounds_of is not None:
                writes.append(self._writes(rounds_of))

        procs = [start_worker(module, spec) for spec in specs]
        try:
            sample_cpu()
            if during is not None:
                during(start_at)
            time.sleep(max(0.0, start_at + duration - time.monotonic()))
            cpu_used = {
                name: cpu_seconds(pid) - cpu_before[name] for name, pid in (cpu_pids or {}).items()
            }
            if rounds_of is not None:
                writes.append(self._writes(rounds_of))
        finally:
            result = collect_workers(procs, clients, duration, timeout=duration + 60)
        if result.loadgen_cpu_s is not None:
            cpu_used["load generator"] = result.loadgen_cpu_s
        cpu_per_cycle = {
            name: round(used / result.cycles * 1e6, 1) if result.cycles else math.nan
            for name, used in cpu_used.items()
        }
        info: Json = {"cpu_us_per_cycle": cpu_per_cycle}
        if len(writes) == 2:
            rounds = writes[1] - writes[0]
            info["rounds_per_s"] = round(rounds / duration, 1)
            info["ops_per_round"] = round(2 * result.cycles / rounds, 1) if rounds else math.nan
        return result, info

    def _writes(self, backend: str) -> int:
        """How many writes (replication rounds) a backend has committed so far."""
        assert self.cluster is not None
        try:
            return int(self.cluster.ctl(backend, "status")["counters"]["writes"])
        except (CtlError, KeyError, TypeError, ValueError):
            return -1

    @property
    def key(self) -> str:
        assert self.cluster is not None
        return self.cluster.key

    def _server(self, argv: list[str]) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.servers.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        if not ready or proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{argv[0]} did not start")

    def stop_servers(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.servers.clear()

    # -- sections

    def run(self) -> Json:
        self.results["machine"] = m = machine_info(self.tmp)
        log(f"machine: {m['nproc']} cores, {m['cpu_model']}, load {m['loadavg_at_start']}")
        log("local cluster: 3 backends + 2 TMR servers on 127.0.0.1")
        self.cluster = Cluster(self.tmp / "cluster")
        self.section_compare()
        self.section_crypt()
        self.section_growth()
        self.section_failover()
        self.section_backend_kill()
        log("local cluster down")
        self.cluster.down()
        return self.results

    def _cpu_pids(self, active: str) -> dict[str, int]:
        assert self.cluster is not None
        names = [active, "backend-1", "backend-2", "backend-3"]
        return {n: self.cluster.pid(n) for n in names}

    def _start_etcd(self) -> list[str] | None:
        """The etcd members' client URLs, or None when etcd cannot be had."""
        if self.args.skip_etcd:
            log("baseline (c): skipped (--skip-etcd)")
            return None
        try:
            binary = ensure_etcd()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log(f"baseline (c): etcd is not available ({exc}); not measured")
            return None
        self.etcd = EtcdCluster(self.tmp / "etcd", binary)
        self.etcd.start()
        return self.etcd.client_urls

    def section_compare(self) -> None:
        """TMR and the three baselines at 1, 10 and 100 clients, interleaved.

        All four systems are up at once (idle ones cost next to nothing) and are measured in
        turn, `reps` times per level with the order rotated, so that a change in the load of
        the machine hits them alike; rates are medians, ratios the medians of the ratios of
        adjacent runs.
        """
        assert self.cluster is not None
        cl = self.cluster
        key_file = str(self.tmp / "cluster" / "keys" / "service.key")
        echo_ep = f"tcp://127.0.0.1:{_free_port()}"
        single_ep = f"tcp://127.0.0.1:{_free_port()}"
        log("baseline (a): CURVE echo server; baseline (b): single-node SQLite server")
        self._server(["bench.echo", "--listen", echo_ep, "--key-file", key_file])
        self._server(
            [
                "bench.single",
                "--listen",
                single_ep,
                "--key-file",
                key_file,
                "--db",
                str(self.tmp / "single" / "single.sqlite3"),
                "--quantity",
                str(QUANTITY),
            ]
        )
        single_pid = self.servers[-1].pid
        log("baseline (c): 3-member etcd cluster as a seat semaphore")
        etcd_urls = self._start_etcd()
        active = cl.active()
        endpoints, first = cl.endpoints_from(active)
        everyone = {"backend-1", "backend-2", "backend-3"}
        wait_until("all backends up", lambda: cl.backends_up(active) == everyone, 30)
        profiles: list[tuple[str, subprocess.Popen[bytes], Path]] = []

        def start_profile(start_at: float) -> None:
            if not self.args.profile or profiles:
                return
            time.sleep(max(0.0, start_at - time.monotonic()))
            for name in (active, "backend-1"):
                path = self.args.out.parent / f"profile-{name}.txt"
                profiles.append(
                    (name, profile.start_record(cl.pid(name), self.duration, path), path)
                )

        def tmr(clients: int) -> tuple[LoadResult, Json]:
            return self.load(
                "tmr",
                endpoints,
                clients,
                first=first,
                cpu_pids=self._cpu_pids(active),
                rounds_of="backend-2",
                during=start_profile if clients == LEVELS[-1] else None,
            )

        def etcd(clients: int) -> tuple[LoadResult, Json]:
            assert etcd_urls is not None and self.etcd is not None
            pids = {f"etcd-{i}": p for i, p in enumerate(self.etcd.pids())}
            return self.load(
                "etcd",
                etcd_urls,
                clients,
                module="bench.etcd",
                extra={"quantity": QUANTITY},
                cpu_pids=pids,
            )

        systems: dict[str, Callable[[int], tuple[LoadResult, Json]]] = {
            "tmr": tmr,
            "echo": lambda n: self.load("echo", [echo_ep], n, proto="echo"),
            "single": lambda n: self.load(
                "single", [single_ep], n, cpu_pids={"single": single_pid}
            ),
        }
        if etcd_urls is not None:
            systems["etcd"] = etcd
        names = list(systems)
        runs: dict[str, dict[int, list[tuple[LoadResult, Json]]]] = {
            n: {c: [] for c in LEVELS} for n in names
        }
        try:
            for clients in LEVELS:
                for rep in range(self.reps):
                    shift = rep % len(names)
                    for name in names[shift:] + names[:shift]:
                        result, extra = systems[name](clients)
                        runs[name][clients].append((result, extra))
                        log(
                            f"{name:<6} {clients:>3} clients: {result.rate:>8.1f} cycles/s  "
                            f"p50 {result.p(50):6.2f} ms  p99 {result.p(99):6.2f} ms"
                            + (f"  errors {result.errors}" if result.errors else "")
                        )
        finally:
            self.stop_servers()
            if self.etcd is not None:
                self.etcd.stop()
                self.etcd = None
        for name in names:
            out: Json = {}
            for clients in LEVELS:
                out[str(clients)] = _aggregate(runs[name][clients], runs["tmr"][clients])
            self.results[name] = out
        self.results["tmr"]["server_rss_mib"] = round(rss_mib(cl.pid(active)), 1)
        if profiles:
            summaries: Json = {}
            for name, proc, path in profiles:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
                summaries[name] = profile.summarise(path)
            self.results["profile"] = summaries

    def section_crypt(self) -> None:
        assert self.cluster is not None
        active = self.cluster.active()
        endpoints, first = self.cluster.endpoints_from(active)
        log("crypt: hmac of 64 bytes through the active server, 10 clients")
        result, extra = self.load(
            "crypt", endpoints, 10, mode="crypt", first=first, cpu_pids=self._cpu_pids(active)
        )
        self.results["crypt"] = {**result.summary(), **extra}
        log(f"crypt     10 clients: {result.rate:>8.1f} calls/s  p50 {result.p(50):.2f} ms")

    def _hold(self, count: int, endpoints: list[str], first: int) -> subprocess.Popen[str]:
        spec = {
            "mode": "hold",
            "hold": count,
            "endpoints": endpoints,
            "server_key": self.key,
            "firm": FIRM,
            "product": PRODUCT,
            "start_at": time.monotonic(),
            "duration": 0.0,
            "drain": 120.0,
            "clients": 100,
            "worker": 0,
            "first_endpoint": first,
            "run": self._tag("hold"),
            "attempt_timeout": 0.5,
        }
        proc = start_worker("bench.loadgen", spec)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120.0)
        line = proc.stdout.readline() if ready else ""
        held = json.loads(line).get("held") if line.strip() else None
        if held != count:
            proc.kill()
            raise RuntimeError(f"the holder took {held} handles, not {count}")
        return proc

    def section_growth(self) -> None:
        assert self.cluster is not None
        cl = self.cluster
        active = cl.active()
        endpoints, first = cl.endpoints_from(active)
        out: Json = {"0": {"server_rss_mib": self.results["tmr"]["server_rss_mib"]}}
        holders: list[subprocess.Popen[str]] = []
        try:
            held = 0
            for target in (1_000, 10_000):
                log(f"cost growth: holding {target} handles")
                holders.append(self._hold(target - held, endpoints, first))
                held = target
                result, extra = self.load(
                    "grow",
                    endpoints,
                    LEVELS[-1],
                    first=first,
                    cpu_pids=self._cpu_pids(active),
                    rounds_of="backend-2",
                )
                st = cl.ctl(active, "status")
                out[str(target)] = {
                    **result.summary(),
                    **extra,
                    "handles": st.get("handles"),
                    "server_rss_mib": round(rss_mib(cl.pid(active)), 1),
                }
                log(
                    f"  {target} held: {result.rate:.1f} cycles/s at {LEVELS[-1]} clients, "
                    f"p50 {result.p(50):.2f} ms, "
                    f"server RSS {out[str(target)]['server_rss_mib']} MiB"
                )
            standby = cl.standby()
            log(
                f"takeover with {held} handles: kill -9 {active}, promote {standby} "
                f"{VRRP_DETECT:.2f} s later (as keepalived would)"
            )
            killed = cl.kill(active)
            time.sleep(max(0.0, killed + VRRP_DETECT - time.monotonic()))  # the VRRP timer
            takeover = cl.promote(standby)
            st = cl.ctl(standby, "status")
            out["takeover"] = {
                "handles": held,
                "seconds": round(takeover, 3),
                "adopted_handles": st.get("handles"),
                "server_rss_mib": round(rss_mib(cl.pid(standby)), 1),
            }
            log(
                f"  {standby} active after {takeover * 1000:.0f} ms "
                f"with {st.get('handles')} handles"
            )
            cl.start(active)
        finally:
            for proc in holders:
                _release_holder(proc)
        self.results["growth"] = out

    def section_failover(self) -> None:
        assert self.cluster is not None
        cl = self.cluster
        active = cl.active()
        standby = cl.standby()
        endpoints, first = cl.endpoints_from(active)
        duration = max(6.0, self.duration + 3.0)
        log(
            f"failover: 20 clients, kill -9 {active} and promote {standby} "
            f"{VRRP_DETECT:.2f} s later (keepalived's detection time)"
        )
        marks: Json = {}

        def kill_and_promote(start_at: float) -> None:
            time.sleep(max(0.0, start_at + 2.0 - time.monotonic()))
            marks["kill"] = cl.kill(active)
            time.sleep(max(0.0, marks["kill"] + VRRP_DETECT - time.monotonic()))  # VRRP timer
            marks["takeover_s"] = cl.promote(standby)

        result, _ = self.load(
            "fo",
            endpoints,
            20,
            first=first,
            duration=duration,
            record=True,
            during=kill_and_promote,
        )
        out = self._outage(result, marks["kill"], failover=True)
        out["takeover_s"] = round(marks["takeover_s"], 3)
        leftover = [h for h in cl.handles(standby) if str(h["client_id"]).startswith("bench-fo")]
        out["leftover_seats"] = len(leftover)
        out["duplicate_handles"] = len(result.handles) - len(set(result.handles))
        self.results["failover"] = out
        log(
            f"  gap {out['gap_s'] * 1000:.0f} ms without a successful checkout "
            f"(server takeover {out['takeover_s'] * 1000:.0f} ms); lost {out['lost']}, "
            f"leftover {out['leftover_seats']}, duplicates {out['duplicate_handles']}"
        )
        cl.start(active)

    def section_backend_kill(self) -> None:
        assert self.cluster is not None
        cl = self.cluster
        active = cl.active()
        endpoints, first = cl.endpoints_from(active)
        duration = max(6.0, self.duration + 3.0)
        log("backend failure: 20 clients, kill -9 backend-1")
        marks: Json = {}

        def kill_backend(start_at: float) -> None:
            time.sleep(max(0.0, start_at + 2.0 - time.monotonic()))
            marks["kill"] = cl.kill("backend-1")

        result, _ = self.load(
            "bk",
            endpoints,
            20,
            first=first,
            duration=duration,
            record=True,
            during=kill_backend,
        )
        out = self._outage(result, marks["kill"], failover=False)
        out["p99_ms"] = round(result.p(99), 3)
        out["max_ms"] = round(max(result.latencies_ms, default=math.nan), 3)
        leftover = [h for h in cl.handles(active) if str(h["client_id"]).startswith("bench-bk")]
        out["leftover_seats"] = len(leftover)
        out["duplicate_handles"] = len(result.handles) - len(set(result.handles))
        self.results["backend_kill"] = out
        log(
            f"  gap {out['gap_s'] * 1000:.1f} ms without a successful checkout (before the "
            f"kill {out['max_pause_before_kill_s'] * 1000:.1f} ms); errors {out['errors']}"
        )
        cl.start("backend-1")
        wait_until("backend-1 to be up again", lambda: "backend-1" in cl.backends_up(active), 30)

    def _outage(self, result: LoadResult, kill: float, failover: bool) -> Json:
        """Gaps around a kill, and the releases answered "not released", sorted out.

        After a server fail-over a release the old server committed, whose answer was lost,
        is retried and finds the handle gone: legitimate, if a backend's usage record shows
        the release. Any other "not released" is a seat the service lost.
        """
        times = sorted(result.ok_times)
        after = [t for t in times if t > kill]
        first = (after[0] - kill) if after else math.inf
        # The client-visible gap: the longest time without any successful checkout (of all
        # clients together) from 1 s before the kill on. Replies already on their way when
        # the server died still arrive just after the kill, so "the first success after the
        # kill" alone would understate it.
        pauses = [b - a for a, b in itertools.pairwise(times) if b >= kill - 1.0]
        gap = max(pauses, default=math.inf) if after else math.inf
        before = [b - a for a, b in itertools.pairwise(times) if kill - 2.0 <= b < kill]
        lost: list[str] = []
        maybe: list[str] = []
        for handle, first_sent, sends in result.not_released:
            if failover and sends > 1 and first_sent < kill:
                maybe.append(str(handle))
            else:
                lost.append(str(handle))
        confirmed = self._released_in_usage(maybe)
        lost.extend(h for h in maybe if h not in confirmed)
        return {
            "gap_s": round(gap, 4),
            "first_ok_after_kill_s": round(first, 4),
            "max_pause_before_kill_s": round(max(before, default=math.nan), 4),
            "checkouts": len(times),
            "errors": dict(result.errors),
            "lost": len(lost) + result.lost,
            "lost_handles": lost[:20],
            "released_before_failover": len(confirmed),
            "unfinished": result.unfinished,
            "retries": result.retries,
        }

    def _released_in_usage(self, handles: list[str]) -> set[str]:
        """The handles a backend's usage record shows as released (read-only look)."""
        if not handles or self.cluster is None:
            return set()
        found: set[str] = set()
        for name in ("backend-1", "backend-2", "backend-3"):
            db = self.cluster.root / name / "state" / "backend.sqlite3"
            try:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
            except sqlite3.Error:
                continue
            try:
                for i in range(0, len(handles), 500):
                    chunk = handles[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = conn.execute(
                        "SELECT handle FROM usage WHERE event = 'released' "
                        f"AND handle IN ({marks})",
                        chunk,
                    )
                    found.update(str(r[0]) for r in rows)
            except sqlite3.Error:
                pass
            finally:
                conn.close()
        return found

    def cleanup(self) -> None:
        self.stop_servers()
        if self.etcd is not None:
            self.etcd.stop()
        if self.cluster is not None:
            try:
                self.cluster.down()
            except Exception as exc:  # best effort at the end
                log(f"cluster down failed: {exc}")


def _aggregate(runs: list[tuple[LoadResult, Json]], ours: list[tuple[LoadResult, Json]]) -> Json:
    """Repeated runs of one system at one level: median rate, pooled latencies, and the
    median of TMR's rate over this one's in the runs taken side by side."""
    pooled = LoadResult(runs[0][0].clients, sum(r.duration for r, _ in runs))
    for r, _ in runs:
        pooled.cycles += r.cycles
        pooled.latencies_ms.extend(r.latencies_ms)
        for code, n in r.errors.items():
            pooled.errors[code] = pooled.errors.get(code, 0) + n
        pooled.retries += r.retries
        pooled.lost += r.lost + len(r.not_released)
        pooled.unfinished += r.unfinished
    rates = [r.rate for r, _ in runs]
    middle = sorted(range(len(runs)), key=lambda i: rates[i])[len(runs) // 2]
    out: Json = {
        **pooled.summary(),
        **runs[middle][1],
        "rate_per_s": round(statistics.median(rates), 1),
        "rates": [round(x, 1) for x in rates],
    }
    ratios = [o.rate / r.rate for (o, _), (r, _) in zip(ours, runs, strict=False) if r.rate > 0]
    if ratios:
        out["tmr_ratio"] = round(statistics.median(ratios), 3)
    return out


def _release_holder(proc: subprocess.Popen[str]) -> None:
    """Tell a holder to release its handles and wait (bounded) for it."""
    if proc.poll() is not None:
        return
    try:
        assert proc.stdin is not None
        proc.stdin.write("release\n")
        proc.stdin.flush()
        proc.communicate(timeout=150)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait(timeout=5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- the report


def targets(r: Json) -> list[tuple[str, bool | None, str]]:
    """(target, met?, the numbers) for every target of docs/performance.md and issue 6."""
    top = str(LEVELS[-1])
    out: list[tuple[str, bool | None, str]] = []
    tmr = r.get("tmr", {})
    ours = tmr.get(top, {}).get("rate_per_s", math.nan)
    one = tmr.get("1", {}).get("rate_per_s", math.nan)
    out.append((f"{top} clients >= 5x 1 client", ours >= 5 * one, f"{ours / one:.1f}x"))
    out.append((f">= 2,000 cycles/s at {top} clients", ours >= 2000, f"{ours:.0f}/s"))
    single = r.get("single", {}).get(top, {}).get("tmr_ratio", math.nan)
    out.append((">= 0.5x baseline (b) single node", single >= 0.5, f"{single:.2f}x"))
    if "etcd" in r:
        etcd = r["etcd"].get(top, {}).get("tmr_ratio", math.nan)
        out.append(("faster than baseline (c) etcd", etcd > 1.0, f"{etcd:.2f}x"))
    else:
        out.append(("faster than baseline (c) etcd", None, "not measured"))
    fo = r.get("failover", {})
    clean = not (fo.get("lost") or fo.get("leftover_seats") or fo.get("duplicate_handles"))
    out.append(
        (
            "failover gap < 1.5 s, no lost/duplicate seat",
            fo.get("gap_s", math.inf) < 1.5 and clean,
            f"{fo.get('gap_s', math.nan):.3f} s",
        )
    )
    bk = r.get("backend_kill", {})
    out.append(
        (
            "backend kill: no gap (< 250 ms), no error",
            bk.get("gap_s", math.inf) < 0.25 and not bk.get("errors"),
            f"{bk.get('gap_s', math.nan) * 1000:.0f} ms "
            f"(before the kill {bk.get('max_pause_before_kill_s', math.nan) * 1000:.0f} ms)",
        )
    )
    tk = r.get("growth", {}).get("takeover", {})
    out.append(
        (
            "takeover with 10,000 handles < 1 s",
            tk.get("seconds", math.inf) < 1.0,
            f"{tk.get('seconds', math.nan):.3f} s",
        )
    )
    return out


def table(r: Json) -> str:
    lines: list[str] = []
    add = lines.append
    m = r["machine"]
    add(
        f"machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, disk "
        f"{m['disk'].get('device', '?')} {m['disk'].get('fstype', '')} "
        f"(fsync {m['disk'].get('fsync_ms')} ms), load at start {' '.join(m['loadavg_at_start'])}"
    )
    add("")
    add(
        "checkout+release cycles (one sample = checkout + release, 2 round trips); cycles/s: "
        "median of the repetitions; TMR/x: median ratio of side-by-side runs"
    )
    add(f"{'system':<44} {'clients':>7} {'cycles/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'TMR/x':>7}")
    rows = [
        ("TMR (2 servers, 3 durable backends)", "tmr"),
        ("(a) raw pyzmq CURVE echo, same sizes", "echo"),
        ("(b) single node: SQLite, no replication", "single"),
        ("(c) etcd 3 members, lease semaphore", "etcd"),
    ]
    for label, key in rows:
        if key not in r:
            add(f"{label:<44} {'-':>7} (not measured)")
            continue
        for clients in LEVELS:
            s = r[key][str(clients)]
            ratio = "" if key == "tmr" else f"{s.get('tmr_ratio', math.nan):.2f}x"
            add(
                f"{label if clients == LEVELS[0] else '':<44} {clients:>7} "
                f"{s['rate_per_s']:>9.1f} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {ratio:>7}"
            )
    t = r["tmr"][str(LEVELS[-1])]
    add(
        f"TMR at {LEVELS[-1]} clients: {t.get('rounds_per_s')} replication rounds/s, "
        f"{t.get('ops_per_round')} ops per round; CPU us per cycle: "
        + ", ".join(f"{k} {v:.0f}" for k, v in t["cpu_us_per_cycle"].items())
    )
    b = r.get("single", {}).get(str(LEVELS[-1]), {})
    if b.get("cpu_us_per_cycle"):
        add(
            f"(b) at {LEVELS[-1]} clients: CPU us per cycle: "
            + ", ".join(f"{k} {v:.0f}" for k, v in b["cpu_us_per_cycle"].items())
        )
    add("")
    c = r["crypt"]
    add(
        f"crypt (hmac, 64 bytes), 10 clients: {c['rate_per_s']:.1f} calls/s, "
        f"p50 {c['p50_ms']:.2f} ms"
    )
    g = r["growth"]
    add("")
    add(f"{'held handles':<14} {'cycles/s @100':>14} {'p50 ms':>8} {'server RSS MiB':>15}")
    add(
        f"{0:<14} {r['tmr'][str(LEVELS[-1])]['rate_per_s']:>14.1f} "
        f"{r['tmr'][str(LEVELS[-1])]['p50_ms']:>8.2f} {g['0']['server_rss_mib']:>15}"
    )
    for n in ("1000", "10000"):
        add(
            f"{n:<14} {g[n]['rate_per_s']:>14.1f} {g[n]['p50_ms']:>8.2f} "
            f"{g[n]['server_rss_mib']:>15}"
        )
    tk = g["takeover"]
    add(f"takeover with {tk['handles']} handles: {tk['seconds'] * 1000:.0f} ms (promote -> active)")
    fo = r["failover"]
    add("")
    add(
        f"failover (20 clients, kill -9 active + promote): {fo['gap_s'] * 1000:.0f} ms "
        f"without a successful checkout (server takeover {fo['takeover_s'] * 1000:.0f} ms); "
        f"lost {fo['lost']}, leftover {fo['leftover_seats']}, duplicates "
        f"{fo['duplicate_handles']}, releases confirmed before the kill "
        f"{fo['released_before_failover']}"
    )
    bk = r["backend_kill"]
    add(
        f"backend kill (20 clients): {bk['gap_s'] * 1000:.0f} ms without a successful "
        f"checkout (before the kill {bk['max_pause_before_kill_s'] * 1000:.0f} ms), "
        f"p99 {bk['p99_ms']:.1f} ms, "
        f"errors {bk['errors'] or 0}"
    )
    add("")
    add("targets")
    for name, met, value in targets(r):
        mark = "n/a " if met is None else ("MET " if met else "MISS")
        add(f"  [{mark}] {name:<46} {value}")
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """NaN and infinity become null, so the JSON file is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="TMR benchmark (issue 6, docs/performance.md)")
    ap.add_argument("--quick", action="store_true", help="2 s per measurement, 1 repetition")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each comparison run")
    ap.add_argument("--skip-etcd", action="store_true", help="leave out baseline (c)")
    ap.add_argument("--profile", action="store_true", help="py-spy the server at 100 clients")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    ap.add_argument("--show", action="store_true", help="print the table of --out and stop")
    args = ap.parse_args(argv)
    if args.show:
        print(table(json.loads(args.out.read_text())))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    tmp = Path(tempfile.mkdtemp(prefix="tmr-bench-"))
    bench = Bench(args, tmp)
    try:
        results = bench.run()
    finally:
        bench.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    results["started"] = started_at
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["quick"] = bool(args.quick)
    results["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    results["targets"] = [
        {"target": name, "met": met, "value": value} for name, met, value in targets(results)
    ]
    args.out.write_text(json.dumps(_finite(results), indent=2, default=str) + "\n")
    print()
    print(table(results))
    print(f"\nwritten {args.out} in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
