"""`make bench`: throughput, latency, failover and cost growth of TMR against baselines.

Everything runs in ONE process tree, on 127.0.0.1 only, in a temporary directory, and stops
by itself (every wait and every load run is bounded). In order:

1. a local cluster (`tmr.local.cluster`: 3 durable backends, 2 TMR servers), LQ 20,000;
2. baseline (a), a CURVE echo server (`bench.echo`), baseline (b), a single-node license
   server on SQLite (`bench.single`), baseline (c), a 3-member etcd cluster (`bench.etcd`;
   over etcd's gRPC API with `bench.etcd_grpc` when `aetcd` is installed), and TMR through
   the active server, interleaved, at 1, 10 and 100 clients; then crypt calls;
3. failover with 20 clients: kill -9 of the active server + promote of the standby, then
   kill -9 of a backend; gaps, lost and duplicate seats; the cluster goes down;
4. cost growth (issue 17) on a fresh cluster: 0, 1,000, 10,000 and 100,000 held handles, of
   which 0, 100, 1,000 and 10,000 belong to clients that heartbeat every 10 s (one handle
   each, in processes of at most `loadgen.clients_per_process()` clients): idle CPU (the
   median of 3 heartbeat periods), throughput at 100 clients, memory per held handle,
   takeover (kill -9 of the active server, promote of the standby); ``--growth-max`` stops
   earlier;
5. a cluster with 1,000 licensed products: idle CPU, throughput, takeover
   (``--skip-products`` leaves it out).

Prints a table (with every target of issues 6 and 17, ``bench/results/failover-vip.json``
read for the failover on the VIP) and writes ``bench/results/latest.json``. ``--quick``
shortens every run and stops the growth at 10,000 handles.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import platform
import resource
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
from typing import Any, NamedTuple

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
    percentile,
    rss_mib,
    split_clients,
    start_worker,
)
from bench.etcd import EtcdCluster, ensure_etcd
from bench.loadgen import clients_per_process
from tmr.ctl import CtlError, ctl_request
from tmr.errors import TmrError
from tmr.local.cluster import local_down, local_up, start_node

LEVELS = (1, 10, 100)
QUANTITY = 20_000
LEASE = 3600.0  # held handles must not expire during the run (no heartbeats are sent)
SETUP = 2.0  # seconds between starting the workers and the measurement window (warm-up)
# keepalived's detection time, which the failover measurements model before they promote:
# VRRP master-down interval = 3 x advert_int + skew, with advert_int 0.2 s and priority 100
# (the role's defaults): 3 x 0.2 + (256 - 100) / 256 x 0.2 = 0.72 s
VRRP_DETECT = 3 * 0.2 + (256 - 100) / 256 * 0.2
# Cost growth (issue 17): a fresh cluster at sizes (held handles, how many of them belong to
# clients that heartbeat, one each), and a cluster with the license file of an EDA site.
GROWTH_PRODUCTS = 1_000
GROWTH_QUANTITY = 200_000  # the held handles and the load's
GROWTH_SIZES = ((0, 0), (1_000, 100), (10_000, 1_000), (100_000, 10_000))
GROWTH_MAX_QUICK = 10_000  # --quick (or --growth-max) leaves out the larger sizes
# Runs of each growth size paired with runs of the empty cluster (--growth-pairs). The ratio
# of one pair spread from 0.77 to 0.92 within a run at 100,000 held handles (this machine's
# load changes by the minute): the median of 5 pairs moves less than that of 3.
GROWTH_PAIRS = 5
# A holder keeps its handles until the growth section ends (it stops them) or this long: the
# section takes a few minutes, and every step after a holder's counts its handles.
HOLD_KEEP = 1800.0
# An idle SDK client heartbeats every lease / 3: at the default lease (30 s) every 10 s. The
# benchmark's own lease is long so that the holders need not heartbeat; the cost of one
# heartbeat does not depend on the lease.
HEARTBEAT_PERIOD = 10.0
# Heartbeat periods in a row over which `Bench._idle` reads the idle CPU (the median of them:
# one window's reading moved by 1-2 % of a core from one minute to the next).
IDLE_WINDOWS = 3
PAUSED_SETTLE = 3.0  # seconds after the heartbeating clients resume (their burst answered)
HEARTBEAT_ATTEMPT_TIMEOUT = 10.0
# The products section: pairs of runs (one product, GROWTH_PRODUCTS products) in alternating
# order, each cluster alone (the other stopped) and resumed this long before it is measured.
PRODUCT_PAIRS = 5
PAUSE_SETTLE = 1.0  # the heartbeating clients' (the SDK's grows to 2 s)


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

    def __init__(self, root: Path, quantity: int = QUANTITY, products: int = 1) -> None:
        self.root = root
        self.info = local_up(
            root, quantity=quantity, products=products, lease=LEASE, progress=False, timeout=120
        )
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

    def wait_all_backends(self, timeout: float = 60.0) -> None:
        """Until the active server hears all three backends."""
        everyone = {"backend-1", "backend-2", "backend-3"}
        wait_until("all backends up", lambda: self.backends_up(self.active()) == everyone, timeout)

    def handles(self, server: str) -> list[Json]:
        out: list[Json] = self.ctl(server, "handles", timeout=10.0).get("handles", [])
        return out

    def down(self) -> None:
        self._save()
        local_down(self.root)


def _memory_steps(steps: Json) -> Json:
    """The active server's RSS growth over the holder's step (handles over a few
    connections: bytes per held handle) and over the heartbeating clients' step (a connection
    and one handle each: bytes per connected client, its handle's share taken off)."""
    out: Json = {}
    per_handle: float | None = None
    if steps.get("held") and steps["held"][0] > 0:
        count, grown = steps["held"]
        per_handle = grown / count
        out["server_bytes_per_held_handle"] = round(per_handle)
    if steps.get("clients") and steps["clients"][0] > 0:
        count, grown = steps["clients"]
        out["server_bytes_per_client"] = round(grown / count - (per_handle or 0.0))
    out["memory_steps"] = steps
    return out


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------------- measurements


def idle_cpu(readings: list[tuple[float, dict[str, float]]], active: str) -> Json:
    """The idle CPU of `Bench._idle` from its `readings` (the time, and each process's CPU
    seconds so far, at the start and after each window): per window, the active server's,
    the three backends' and the heartbeat workers' (``hb*``) percent of one core, and the
    median of the windows of each."""
    windows: list[list[float]] = []
    for (t0, before), (t1, after) in itertools.pairwise(readings):
        span = t1 - t0
        used = {n: after[n] - before[n] for n in before}
        windows.append(
            [
                round(100.0 * used[active] / span, 2),
                round(100.0 * sum(used[f"backend-{i}"] for i in (1, 2, 3)) / span, 2),
                round(100.0 * sum(v for n, v in used.items() if n.startswith("hb")) / span, 2),
            ]
        )
    if not windows:
        raise ValueError("idle_cpu needs a reading at the start and after each window")
    server, backends, clients = (statistics.median(w[i] for w in windows) for i in range(3))
    return {
        "window_s": round((readings[-1][0] - readings[0][0]) / len(windows), 2),
        "server_cpu_pct": round(server, 2),
        "backends_cpu_pct": round(backends, 2),
        # the server and the backends together (what the heartbeat target counts)
        "cluster_cpu_pct": round(statistics.median(w[0] + w[1] for w in windows), 2),
        "heartbeat_clients_cpu_pct": round(clients, 2),
        # each window: server, backends, heartbeat clients (percent of one core)
        "windows": windows,
    }


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.duration = 2.0 if args.quick else float(args.duration)
        self.reps = 1 if args.quick else int(args.reps)
        self.results: Json = {}
        self.servers: list[subprocess.Popen[str]] = []
        self.cluster: Cluster | None = None
        self.growth_cluster: Cluster | None = None
        # The cluster the growth or products section compares with (one product, nothing held)
        self.baseline_cluster: Cluster | None = None
        self.growth_reps = args.growth_pairs or (1 if args.quick else GROWTH_PAIRS)
        self.idle_windows = 1 if args.quick else IDLE_WINDOWS
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
        key: str | None = None,
        cluster: Cluster | None = None,
        python: str | None = None,
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
                "server_key": key or self.key,
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
                writes.append(self._writes(rounds_of, cluster))

        procs = [start_worker(module, spec, python) for spec in specs]
        try:
            sample_cpu()
            if during is not None:
                during(start_at)
            time.sleep(max(0.0, start_at + duration - time.monotonic()))
            cpu_used = {
                name: cpu_seconds(pid) - cpu_before[name] for name, pid in (cpu_pids or {}).items()
            }
            if rounds_of is not None:
                writes.append(self._writes(rounds_of, cluster))
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

    def _load_active(self, what: str, cl: Cluster) -> tuple[LoadResult, Json]:
        """100 clients cycling on `cl`, starting at its active server: with the CPU per cycle
        of that server and the backends, and backend-2's replication rounds."""
        active = cl.active()
        endpoints, first = cl.endpoints_from(active)
        return self.load(
            what,
            endpoints,
            LEVELS[-1],
            first=first,
            cpu_pids=self._cpu_pids(active, cl),
            rounds_of="backend-2",
            key=cl.key,
            cluster=cl,
        )

    def _writes(self, backend: str, cluster: Cluster | None = None) -> int:
        """How many writes (replication rounds) a backend has committed so far."""
        cl = cluster or self.cluster
        assert cl is not None
        try:
            return int(cl.ctl(backend, "status")["counters"]["writes"])
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
        only = set(self.args.only or SECTIONS)
        first = [s for s in SECTIONS[:4] if s in only]
        if first:
            log("local cluster: 3 backends + 2 TMR servers on 127.0.0.1")
            self.cluster = Cluster(self.tmp / "cluster")
            for name in first:
                getattr(self, f"section_{name}")()
            log("local cluster down")
            self.cluster.down()
            self.cluster = None
        # A failure in a growth section is reported in the results, not fatal: the sections
        # before it are worth writing.
        if self.args.growth_max >= 0 and "growth" in only:
            self._guarded("growth", self.section_growth)
        if not self.args.skip_products and "products" in only:
            self._guarded("products", self.section_products)
        return self.results

    def _guarded(self, name: str, section: Callable[[], None]) -> None:
        try:
            section()
        except (TmrError, RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
            log(f"{name}: failed: {type(exc).__name__}: {exc}")
            self.results.setdefault(name, {})["error"] = f"{type(exc).__name__}: {exc}"

    def _cpu_pids(self, active: str, cluster: Cluster | None = None) -> dict[str, int]:
        cl = cluster or self.cluster
        assert cl is not None
        names = [active, "backend-1", "backend-2", "backend-3"]
        return {n: cl.pid(n) for n in names}

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

        grpc_python = etcd_grpc_python() if etcd_urls is not None else None
        if etcd_urls is not None:
            api = "gRPC (aetcd)" if grpc_python else "v3 JSON gateway (no aetcd: see --help)"
            log(f"baseline (c): etcd's {api}")

        def etcd(clients: int) -> tuple[LoadResult, Json]:
            assert etcd_urls is not None and self.etcd is not None
            pids = {f"etcd-{i}": p for i, p in enumerate(self.etcd.pids())}
            return self.load(
                "etcd",
                etcd_urls,
                clients,
                module="bench.etcd_grpc" if grpc_python else "bench.etcd",
                extra={"quantity": QUANTITY},
                cpu_pids=pids,
                python=grpc_python,
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
        if "etcd" in self.results:
            self.results["etcd"]["api"] = "grpc" if grpc_python else "json-gateway"
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

    def _hold(
        self, cl: Cluster, count: int, endpoints: list[str], first: int
    ) -> subprocess.Popen[str]:
        """A holder process that checks out `count` handles (100 clients) and keeps them
        until the section ends (it kills the holders) or HOLD_KEEP seconds."""
        wait = 120.0 + count / 500.0  # 100,000 handles: under 60 s at 2,000 checkouts/s
        spec = {
            "mode": "hold",
            "hold": count,
            "endpoints": endpoints,
            "server_key": cl.key,
            "firm": FIRM,
            "product": PRODUCT,
            "start_at": time.monotonic(),
            "duration": 0.0,
            "drain": wait,  # how long it may take to check them out
            "keep": HOLD_KEEP,  # then it keeps them: every later step counts them
            "clients": 100,
            "worker": 0,
            "first_endpoint": first,
            "run": self._tag("hold"),
            "attempt_timeout": 2.0,
        }
        proc = start_worker("bench.loadgen", spec)
        held = _ready_line(proc, wait + 10.0)
        if held != count:
            proc.kill()
            proc.wait(timeout=5)
            raise RuntimeError(f"the holder took {held} handles, not {count}")
        return proc

    def _heartbeaters(
        self, cl: Cluster, count: int, endpoints: list[str], first: int
    ) -> tuple[list[subprocess.Popen[str]], int]:
        """`count` clients with one handle each that heartbeat every HEARTBEAT_PERIOD s, in
        processes of at most `clients_per_process()` clients (the file descriptor limit).
        Returns the processes and how many clients got their handle in time (the others
        keep trying; the results say how many there were)."""
        per = clients_per_process()
        procs: list[subprocess.Popen[str]] = []
        # Checkouts spread over up to a minute, and a long attempt timeout: thousands of
        # clients that time out and fail over at once would measure retries, not heartbeats.
        # (Their connections, a CURVE handshake and a ZAP request each, all start when the
        # workers do: the storm of a mass reconnect, which the server rides out on its own
        # I/O thread for clients, bench/connect_storm.py.)
        ramp = min(60.0, count / 250.0)
        deadline = time.monotonic() + ramp + 180.0
        for i, n in enumerate(split_clients(count, math.ceil(count / per))):
            spec = {
                "mode": "heartbeat",
                "period": HEARTBEAT_PERIOD,
                "ramp": ramp,
                "endpoints": endpoints,
                "server_key": cl.key,
                "firm": FIRM,
                "product": PRODUCT,
                "start_at": time.monotonic(),
                "duration": 0.0,
                "drain": 3600.0,  # they heartbeat until told to stop
                "clients": n,
                "worker": i,
                "first_endpoint": first,
                "run": self._tag("hb"),
                "attempt_timeout": HEARTBEAT_ATTEMPT_TIMEOUT,
            }
            procs.append(start_worker("bench.loadgen", spec))
        connected = 0
        for proc in procs:
            held = _ready_line(proc, max(1.0, deadline - time.monotonic()))
            connected += held or 0
        if connected < count:
            log(f"    only {connected} of {count} clients have their handle; going on")
        return procs, connected

    def _idle(self, cl: Cluster, active: str, hb: list[subprocess.Popen[str]]) -> Json:
        """CPU of the server, the backends and the heartbeating clients' processes with no
        other load, over `idle_windows` heartbeat periods in a row: percent of one core, the
        median of the windows (`idle_cpu`)."""
        names = {n: cl.pid(n) for n in (active, "backend-1", "backend-2", "backend-3")}
        pids = {**names, **{f"hb{i}": p.pid for i, p in enumerate(hb)}}
        readings = [(time.monotonic(), {n: cpu_seconds(pid) for n, pid in pids.items()})]
        for _ in range(self.idle_windows):
            time.sleep(HEARTBEAT_PERIOD)
            readings.append((time.monotonic(), {n: cpu_seconds(pid) for n, pid in pids.items()}))
        return idle_cpu(readings, active)

    def _takeover(
        self, cl: Cluster, held: int, promote_timeout: float = 20.0, marks: Json | None = None
    ) -> Json:
        """kill -9 of the active server under a light load (10 clients), promote of the
        standby VRRP_DETECT s later: promote -> active, kill -> first checkout, and the
        standby's memory for the handles it adopted. `marks`, if given, receives the
        monotonic time of the kill (``kill``)."""
        active = cl.active()
        standby = cl.standby()
        endpoints, first = cl.endpoints_from(active)
        marks = {} if marks is None else marks
        rss_before = rss_mib(cl.pid(standby))

        def kill_and_promote(start_at: float) -> None:
            time.sleep(max(0.0, start_at + 1.0 - time.monotonic()))
            marks["kill"] = cl.kill(active)
            time.sleep(max(0.0, marks["kill"] + VRRP_DETECT - time.monotonic()))  # VRRP timer
            try:
                marks["promote_s"] = cl.promote(standby, timeout=promote_timeout)
            except RuntimeError as exc:
                marks["promote_error"] = str(exc)

        result, _ = self.load(
            "tk",
            endpoints,
            10,
            first=first,
            duration=8.0,
            record=True,
            during=kill_and_promote,
            key=cl.key,
        )
        out = self._outage(result, marks["kill"], failover=True, cluster=cl)
        # Nothing can succeed between the kill and the promote (0.72 s later) but replies the
        # dead server had already sent: the first checkout after the promote is the one a
        # client waited for (None: none within the window).
        promoted = marks["kill"] + VRRP_DETECT
        later = [t for t in result.ok_times if t > promoted]
        first_after = min(later) - marks["kill"] if later else math.nan
        adopted: Any = None
        rss_after = math.nan
        if "promote_s" in marks:
            adopted = cl.ctl(standby, "status", timeout=10.0).get("handles")
            rss_after = rss_mib(cl.pid(standby))
        cl.start(active)
        row: Json = {
            "handles": held,
            "promote_s": round(marks.get("promote_s", math.nan), 3),
            "kill_to_first_checkout_s": round(first_after, 4),
            "gap_s": out["gap_s"],
            "adopted_handles": adopted,
            "standby_rss_mib": [round(rss_before, 1), round(rss_after, 1)],
            "lost": out["lost"],
            "duplicates": len(result.handles) - len(set(result.handles)),
            "errors": out["errors"],
        }
        if "promote_error" in marks:
            row["promote_error"] = marks["promote_error"]
        if out["lost"]:
            row["lost_handles"] = out["lost_handles"]
        if adopted:
            row["adopted_bytes_per_handle"] = round((rss_after - rss_before) * 2**20 / adopted)
        return row

    def _size(
        self,
        cl: Cluster,
        hb: list[subprocess.Popen[str]],
        clients: int,
        reps: int,
        empty: Cluster | None = None,
    ) -> Json:
        """One point of the growth sections: idle CPU (`_idle`), throughput
        at 100 clients (median of `reps`), memory. With `empty` (a cluster with nothing held,
        kept stopped), each run is paired with a run of `empty` in alternating order, each
        cluster alone: ``rate_vs_empty`` is the median of the pairs' ratios. With heartbeating
        clients (`hb`), each pair also gets a run of this cluster with them stopped, next to
        the empty cluster's run (growth, empty, stopped; then stopped, empty, growth):
        ``rate_hb_paused_vs_empty`` is the median of those ratios."""
        active = cl.active()
        endpoints, first = cl.endpoints_from(active)
        idle = self._idle(cl, active, hb)
        runs: list[tuple[LoadResult, Json]] = []
        empties: list[tuple[float, float]] = []
        paused: list[float] = []

        def grown() -> None:
            runs.append(self._load_active("grow", cl))

        def beside_empty() -> None:
            if empty is not None:
                empties.append(self._empty_rate(cl, hb, empty))

        def stopped() -> None:
            # The same load with the heartbeating clients stopped (SIGSTOP; the benchmark's
            # lease outlasts it): what the held handles and connections cost apart from the
            # heartbeats, which take CPU from the same two cores (the server's, and the load
            # generator's heartbeat processes').
            if hb:
                paused.append(self._paused_rate(cl, hb, active, endpoints, first))

        pair = (grown, beside_empty, stopped)
        for i in range(reps):
            for run_one in pair if i % 2 == 0 else pair[::-1]:
                run_one()
        agg = _aggregate(runs, runs)
        agg.pop("tmr_ratio", None)
        if empties:
            ratios = [r.rate / e for (r, _), (e, _) in zip(runs, empties, strict=True) if e]
            agg["empty_rates"] = [e for e, _ in empties]
            agg["rate_vs_empty"] = round(statistics.median(ratios), 3) if ratios else math.nan
            # the growth cluster (its heartbeating clients stopped) beside the empty runs
            agg["growth_cpu_pct_beside_empty"] = round(statistics.median(c for _, c in empties), 1)
        if paused:
            agg["hb_paused_rates"] = paused
            agg["rate_hb_paused_per_s"] = round(statistics.median(paused), 1)
            ratios = [r / e for r, (e, _) in zip(paused, empties, strict=False) if e]
            if ratios:
                agg["rate_hb_paused_vs_empty"] = round(statistics.median(ratios), 3)
        st = cl.ctl(active, "status", timeout=10.0)
        backend_rss = max(rss_mib(cl.pid(n)) for n in ("backend-1", "backend-2", "backend-3"))
        return {
            **agg,
            "heartbeat_clients": clients,
            "server_handles": st.get("handles"),
            "server_rss_mib": round(rss_mib(cl.pid(active)), 1),
            "backend_rss_mib": round(backend_rss, 1),
            "idle": idle,
        }

    def _paused_rate(
        self,
        cl: Cluster,
        hb: list[subprocess.Popen[str]],
        active: str,
        endpoints: list[str],
        first: int,
    ) -> float:
        """Cycles/s of one run at 100 clients while the heartbeating clients' processes are
        stopped."""
        for proc in hb:
            proc.send_signal(signal.SIGSTOP)
        try:
            rate = self.load(
                "grow-paused",
                endpoints,
                LEVELS[-1],
                first=first,
                cpu_pids=self._cpu_pids(active, cl),
                key=cl.key,
                cluster=cl,
            )[0].rate
        finally:
            for proc in hb:
                proc.send_signal(signal.SIGCONT)
        # Every client's heartbeat came due while stopped: they go out at once (no lease is
        # near its end: LEASE); the burst is answered before the next measurement.
        time.sleep(PAUSED_SETTLE)
        return round(rate, 1)

    def _empty_rate(
        self, cl: Cluster, hb: list[subprocess.Popen[str]], empty: Cluster
    ) -> tuple[float, float]:
        """One run of the empty cluster at 100 clients, the growth cluster's heartbeating
        clients stopped meanwhile (SIGSTOP, as `_paused_rate`; the benchmark's lease outlasts
        it) and their heartbeats that came due answered before this returns. The growth
        cluster itself keeps running: stopped with 10,000 connected clients, it met them with
        a storm of retries when it resumed (throughput fell to a tenth in the next runs).
        Returns the rate and the growth cluster's CPU meanwhile (its server and backends, %
        of a core), which the empty cluster's run shared the cores with."""
        for proc in hb:
            proc.send_signal(signal.SIGSTOP)
        pids = self._cpu_pids(cl.active(), cl)
        try:
            _pause(empty, stop=False)
            empty.wait_all_backends()
            time.sleep(PAUSE_SETTLE)
            active = empty.active()
            endpoints, first = empty.endpoints_from(active)
            before = sum(cpu_seconds(pid) for pid in pids.values())
            t0 = time.monotonic()
            rate = self.load(
                "grow-empty", endpoints, LEVELS[-1], first=first, key=empty.key, cluster=empty
            )[0].rate
            beside = 100.0 * (sum(cpu_seconds(pid) for pid in pids.values()) - before)
            beside /= time.monotonic() - t0
        finally:
            _pause(empty, stop=True)
            for proc in hb:
                proc.send_signal(signal.SIGCONT)
        time.sleep(PAUSED_SETTLE if hb else 0.0)
        return rate, beside

    def section_growth(self) -> None:
        """Cost growth in held handles and heartbeating clients, on a fresh cluster (one
        product): at each size the idle CPU (`_idle`: the median of heartbeat periods),
        throughput at 100 clients, memory per held handle and the takeover time."""
        sizes = [s for s in GROWTH_SIZES if s[0] <= self.args.growth_max]
        log(
            "cost growth: a fresh cluster, sizes "
            + ", ".join(f"{h} held handles ({c} of clients that heartbeat)" for h, c in sizes)
        )
        cl = Cluster(self.tmp / "growth", quantity=GROWTH_QUANTITY)
        self.growth_cluster = cl
        # Each size's runs are paired with runs of a cluster that holds nothing, up beside it
        # and stopped (SIGSTOP) except while it is measured (`_empty_rate`): the ratio to
        # empty is then the median of ratios of runs a few seconds apart, not against size 0
        # alone, measured minutes earlier.
        empty = Cluster(self.tmp / "growth-empty", quantity=GROWTH_QUANTITY)
        self.baseline_cluster = empty
        out: Json = {
            "heartbeat_period_s": HEARTBEAT_PERIOD,
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "clients_per_process": clients_per_process(),
            "sizes": {},
        }
        holders: list[subprocess.Popen[str]] = []
        hb: list[subprocess.Popen[str]] = []
        base: Json = {}
        held = clients = 0  # handles of the holders; heartbeating clients (one handle each)
        last_takeover = -math.inf
        try:
            empty.wait_all_backends()
            _pause(empty, stop=True)
            cl.wait_all_backends()
            for target, hb_target in sizes:
                active = cl.active()
                endpoints, first = cl.endpoints_from(active)
                # The active server's memory around each step (no takeover in between): what
                # a connected client costs and what a held handle costs, apart.
                steps: Json = {}
                rss_before = rss_mib(cl.pid(active))
                if hb_target > clients:
                    log(f"  {hb_target - clients} more clients that heartbeat")
                    t0 = time.monotonic()
                    started, connected = self._heartbeaters(
                        cl, hb_target - clients, endpoints, first
                    )
                    hb += started
                    clients += connected
                    log(f"    connected and holding in {time.monotonic() - t0:.1f} s")
                    rss_after = rss_mib(cl.pid(active))
                    steps["clients"] = [connected, round((rss_after - rss_before) * 2**20)]
                    rss_before = rss_after
                need = target - hb_target - held
                if need > 0:
                    log(f"  {need} more held handles (no heartbeats: the lease is long)")
                    t0 = time.monotonic()
                    holders.append(self._hold(cl, need, endpoints, first))
                    held += need
                    log(f"    checked out in {time.monotonic() - t0:.1f} s")
                    grown = round((rss_mib(cl.pid(active)) - rss_before) * 2**20)
                    steps["held"] = [need, grown]
                # Heartbeating clients moved by the last takeover are back to a steady state.
                time.sleep(max(1.0, last_takeover + HEARTBEAT_PERIOD + 4.0 - time.monotonic()))
                row = self._size(cl, hb, clients, self.growth_reps, empty)
                row["held_handles"] = target
                idle = row["idle"]
                if target == 0:
                    base = row
                    base_cpu = idle["cluster_cpu_pct"]
                cost = idle["cluster_cpu_pct"] - base_cpu
                idle["heartbeat_cost_pct"] = round(cost, 2)
                if len(idle.get("windows", ())) > 1:
                    idle["heartbeat_cost_windows"] = [
                        round(server + backends - base_cpu, 2)
                        for server, backends, _ in idle["windows"]
                    ]
                if clients:
                    idle["heartbeat_us_per_client_s"] = round(cost / 100.0 * 1e6 / clients, 2)
                handles = int(row.get("server_handles") or target)
                if target:
                    for what in ("server", "backend"):
                        grown = row[f"{what}_rss_mib"] - base[f"{what}_rss_mib"]
                        row[f"{what}_bytes_per_handle"] = round(grown * 2**20 / handles)
                    row["rate_vs_first_empty"] = round(row["rate_per_s"] / base["rate_per_s"], 3)
                    row.update(_memory_steps(steps))
                log(
                    f"  {target} held, {clients} heartbeating: {row['rate_per_s']:.1f} cycles/s "
                    f"p99 {row['p99_ms']:.2f} ms; RSS server {row['server_rss_mib']} MiB, "
                    f"backend {row['backend_rss_mib']} MiB; idle: server "
                    f"{idle['server_cpu_pct']} %, backends {idle['backends_cpu_pct']} % of a core"
                )
                row["takeover"] = tk = self._takeover(cl, target, promote_timeout=60.0)
                last_takeover = time.monotonic()
                log(
                    f"  takeover: promote -> active {tk['promote_s'] * 1000:.0f} ms, kill -> "
                    f"first checkout {tk['kill_to_first_checkout_s'] * 1000:.0f} ms, adopted "
                    f"{tk['adopted_handles']} handles"
                    + (
                        f" ({tk['adopted_bytes_per_handle']} bytes each)"
                        if "adopted_bytes_per_handle" in tk
                        else ""
                    )
                )
                out["sizes"][str(target)] = row
        finally:
            hb_results = _stop_heartbeaters(hb)
            for proc in holders:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=5)
            self.growth_cluster = self.baseline_cluster = None
            cl.down()
            _pause(empty, stop=False)
            empty.down()
        if hb_results:
            lat = sorted(x for r in hb_results for x in r.get("hb_ms", []))
            out["heartbeats"] = {
                "answered": sum(int(r.get("heartbeats", 0)) for r in hb_results),
                "p50_ms": round(percentile(lat, 50), 3),
                "p99_ms": round(percentile(lat, 99), 3),
                "lost_handles": sum(int(r.get("hb_lost", 0)) for r in hb_results),
                "retries": sum(int(r.get("retries", 0)) for r in hb_results),
                "errors": {
                    k: sum(int(r.get("errors", {}).get(k, 0)) for r in hb_results)
                    for k in sorted({k for r in hb_results for k in r.get("errors", {})})
                },
            }
        self.results["growth"] = out

    def section_products(self) -> None:
        """Cost growth in licensed products: a cluster with GROWTH_PRODUCTS products (the
        license file of an EDA site) and one with a single product, up side by side and
        measured in turn, the other one stopped (SIGSTOP) so that neither's idle work falls
        in the other's window: idle CPU of each, throughput at 100 clients on one product in
        PRODUCT_PAIRS pairs (the order alternating; the target reads the median of the pairs'
        ratios), memory, and a takeover of the large one. Bounded: the takeover waits at
        most 60 s."""
        log(f"cost growth: a cluster with {GROWTH_PRODUCTS} products and one with 1, in turn")
        t0 = time.monotonic()
        many = Cluster(self.tmp / "products", quantity=QUANTITY, products=GROWTH_PRODUCTS)
        self.growth_cluster = many
        up = time.monotonic() - t0
        one: Cluster | None = None
        try:
            one = Cluster(self.tmp / "products-1", quantity=QUANTITY, products=1)
            self.baseline_cluster = one
            for cl in (many, one):
                cl.wait_all_backends()
            pairs = 1 if self.args.quick else PRODUCT_PAIRS
            idle: dict[str, Json] = {}
            runs: dict[str, list[tuple[LoadResult, Json]]] = {"one": [], "many": []}
            order = [("one", one), ("many", many)]
            for i in range(pairs):
                for name, cl in order if i % 2 == 0 else order[::-1]:
                    _alone(cl, [c for _, c in order if c is not cl])
                    active = cl.active()
                    if name not in idle:
                        idle[name] = self._idle(cl, active, [])
                    runs[name].append(self._load_active(f"products-{name}", cl))
            _alone(many, [one])
            row = _aggregate(runs["many"], runs["many"])
            row.pop("tmr_ratio", None)
            rates = [[r[0].rate, m[0].rate] for r, m in zip(runs["one"], runs["many"], strict=True)]
            row["one_rate_per_s"] = round(statistics.median(x for x, _ in rates), 1)
            row["pairs"] = rates
            row["rate_vs_one"] = round(statistics.median(m / o for o, m in rates if o), 3)
            row["one_cpu_us_per_cycle"] = _aggregate(runs["one"], runs["one"])["cpu_us_per_cycle"]
            active = many.active()
            row["server_rss_mib"] = round(rss_mib(many.pid(active)), 1)
            row["backend_rss_mib"] = round(
                max(rss_mib(many.pid(n)) for n in ("backend-1", "backend-2", "backend-3")), 1
            )
            row["idle"], row["one_idle"] = idle["many"], idle["one"]
            row["products"] = GROWTH_PRODUCTS
            row["up_s"] = round(up, 1)
            log(
                f"  up in {up:.0f} s; {row['rate_per_s']:.1f} cycles/s p99 {row['p99_ms']:.2f} ms "
                f"against {row['one_rate_per_s']:.1f} with 1 product: {row['rate_vs_one']:.2f}x "
                f"(median of {len(rates)} pairs); idle: server "
                f"{idle['many']['server_cpu_pct']} % ({idle['one']['server_cpu_pct']} % with 1), "
                f"backends {idle['many']['backends_cpu_pct']} % of a core"
            )
            row["takeover"] = tk = self._takeover(many, 0, promote_timeout=60.0)
            log(
                f"  takeover: promote -> active {tk['promote_s'] * 1000:.0f} ms, kill -> "
                f"first checkout {tk['kill_to_first_checkout_s'] * 1000:.0f} ms"
            )
        finally:
            self.growth_cluster = self.baseline_cluster = None
            for left in (one, many):
                if left is not None:
                    _pause(left, stop=False)
                    left.down()
        self.results["products"] = row

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

    def _outage(
        self, result: LoadResult, kill: float, failover: bool, cluster: Cluster | None = None
    ) -> Json:
        """Gaps around a kill, and the releases answered "not released", sorted out.

        Around a server fail-over a release that some server committed but whose answer did
        not reach the client in time (the old server died, or the new one stalled for
        longer than the attempt timeout, as right after adopting a large table) is retried
        and finds the handle gone: legitimate, if a backend's usage record shows the
        release. Any other "not released" (one sent once, or one no backend recorded) is a
        seat the service lost.
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
        for handle, _first_sent, sends in result.not_released:
            if failover and sends > 1:
                maybe.append(str(handle))
            else:
                lost.append(str(handle))
        confirmed = self._released_in_usage(maybe, cluster)
        lost.extend(h for h in maybe if h not in confirmed)
        return {
            "gap_s": round(gap, 4),
            "first_ok_after_kill_s": round(first, 4),
            "max_pause_before_kill_s": round(max(before, default=math.nan), 4),
            "checkouts": len(times),
            "errors": dict(result.errors),
            "lost": len(lost) + result.lost,
            "lost_handles": lost[:20],
            # (The key's name is older than its meaning: releases answered "not released"
            # to a retry whose earlier attempt a backend's usage record shows released.)
            "released_before_failover": len(confirmed),
            "unfinished": result.unfinished,
            "retries": result.retries,
        }

    def _released_in_usage(self, handles: list[str], cluster: Cluster | None = None) -> set[str]:
        """The handles a backend's usage record shows as released (read-only look)."""
        cl = cluster or self.cluster
        if not handles or cl is None:
            return set()
        found: set[str] = set()
        for name in ("backend-1", "backend-2", "backend-3"):
            db = cl.root / name / "state" / "backend.sqlite3"
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
        for cl in (self.growth_cluster, self.baseline_cluster):
            if cl is None:
                continue
            try:
                _pause(cl, stop=False)
                cl.down()
            except Exception as exc:  # best effort at the end
                log(f"growth cluster down failed: {exc}")
        if self.etcd is not None:
            self.etcd.stop()
        if self.cluster is not None:
            try:
                self.cluster.down()
            except Exception as exc:  # best effort at the end
                log(f"cluster down failed: {exc}")


def _pause(cl: Cluster, *, stop: bool) -> None:
    """SIGSTOP (or SIGCONT) every process of a local cluster."""
    for name in cl.nodes:
        try:
            os.kill(cl.pid(name), signal.SIGSTOP if stop else signal.SIGCONT)
        except ProcessLookupError:
            continue


def _alone(cl: Cluster, others: list[Cluster]) -> None:
    """Run `cl` alone: the `others` stopped, `cl` resumed and serving again (its server has
    heard all three backends since it resumed), then PAUSE_SETTLE s."""
    for other in others:
        _pause(other, stop=True)
    _pause(cl, stop=False)
    cl.wait_all_backends()
    time.sleep(PAUSE_SETTLE)


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


def etcd_grpc_python() -> str | None:
    """The interpreter that has `aetcd` for baseline (c) over gRPC: TMR_BENCH_ETCD_PYTHON,
    else this one; None if neither imports it (then the JSON gateway worker is used)."""
    for python in (os.environ.get("TMR_BENCH_ETCD_PYTHON"), sys.executable):
        if not python:
            continue
        try:
            probe = subprocess.run(
                [python, "-c", "import aetcd"], check=False, capture_output=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return python
    return None


def json_line(proc: subprocess.Popen[str], timeout: float) -> Json | None:
    """The next line a worker prints, decoded (None: none came within `timeout` s)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line.strip():
        return None
    out: Json = json.loads(line)
    return out


def _ready_line(proc: subprocess.Popen[str], timeout: float) -> int | None:
    """The ``held`` count of a holder's or heartbeat worker's first line (None: none came
    within `timeout` s)."""
    first = json_line(proc, timeout)
    held = first.get("held") if first is not None else None
    return None if held is None else int(held)


def _stop_heartbeaters(procs: list[subprocess.Popen[str]]) -> list[Json]:
    """Tell heartbeat workers to stop; their results (bounded wait; stragglers killed)."""
    out: list[Json] = []
    for proc in procs:
        if proc.poll() is None and proc.stdin is not None:
            try:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
            except OSError:
                pass
    for proc in procs:
        try:
            text, _ = proc.communicate(timeout=60)
            lines = [line for line in text.splitlines() if line.strip()]
            if lines:
                out.append(json.loads(lines[-1]))
        except (subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.wait(timeout=5)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- the report


class Target(NamedTuple):
    """One target of docs/performance.md: met is None when it was not measured."""

    issue: int
    name: str
    met: bool | None
    value: str


def _num(x: Any) -> float:
    """A number out of the results (NaN for a missing or null one)."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def vip_summary(doc: Json) -> Json:
    """The failover-on-the-VIP figures (``bench/results/failover-vip.json``, written by
    `make bench-lab`) in one shape: p50 and max seconds from a kill to the first successful
    checkout, kills, lost and duplicate seats, and the soak (false failovers). Keys missing
    from the file are missing here."""
    out: Json = {}
    fc = doc.get("summary", {}).get("first_checkout", {})
    for key, alt in (("p50_s", "p50"), ("max_s", "max")):
        value = doc.get(key, fc.get(alt))
        if value is not None:
            out[key] = _num(value)
    kills = doc.get("kills")
    if isinstance(kills, list):
        out["kills"] = len(kills)
    elif isinstance(kills, int):
        out["kills"] = kills
    checker = doc.get("checker", {})
    counts = checker.get("counts") or {}
    violations = checker.get("violations")
    for key, invariant in (("lost", "I7"), ("duplicates", "I8")):
        if key in doc:
            out[key] = doc[key]
        elif key in counts:
            out[key] = counts[key]
        elif isinstance(violations, list):  # the checker's: I7 a lost grant, I8 a duplicate
            out[key] = sum(
                1 for v in violations if isinstance(v, dict) and v.get("invariant") == invariant
            )
    if "ok" in checker:
        out["checker_ok"] = bool(checker["ok"])
    soak = doc.get("soak")
    if isinstance(soak, dict):
        out["soak_s"] = _num(soak.get("seconds"))
        out["false_failovers"] = soak.get("vrrp_transition_count")
        if "checker_ok" in soak:
            out["soak_checker_ok"] = bool(soak["checker_ok"])
    return out


def with_targets(results: Json, vip_file: Path) -> None:
    """Add the failover-on-the-VIP figures of ``vip_file`` (when it exists and reads) and the
    `targets` list with their met flags to ``results``."""
    if vip_file.exists():
        try:
            results["failover_vip"] = vip_summary(json.loads(vip_file.read_text()))
        except (OSError, ValueError) as exc:
            log(f"{vip_file}: not read ({exc})")
    results["targets"] = [
        {"issue": t.issue, "target": t.name, "met": t.met, "value": t.value}
        for t in targets(results)
    ]


def _vip_targets(vip: Json | None) -> list[Target]:
    if not vip or "p50_s" not in vip:
        what = "not measured (no bench/results/failover-vip.json: make bench-lab)"
        out = [
            Target(17, "VIP failover: kill -> first checkout p50 < 1.0 s", None, what),
            Target(17, "VIP failover: max < 1.5 s, no lost/duplicate seat", None, what),
        ]
    else:
        p50, top = _num(vip.get("p50_s")), _num(vip.get("max_s"))
        kills = vip.get("kills", "?")
        lost, dup = vip.get("lost"), vip.get("duplicates")
        clean = not lost and not dup and vip.get("checker_ok", True) is not False
        out = [
            Target(
                17,
                "VIP failover: kill -> first checkout p50 < 1.0 s",
                p50 < 1.0,
                f"{p50:.3f} s over {kills} kills",
            ),
            Target(
                17,
                "VIP failover: max < 1.5 s, no lost/duplicate seat",
                top < 1.5 and clean,
                f"{top:.3f} s; lost {lost if lost is not None else '?'}, duplicates "
                f"{dup if dup is not None else '?'}",
            ),
        ]
    soak = (vip or {}).get("soak_s")
    if soak is None or not math.isfinite(_num(soak)):
        out.append(Target(17, "no false failover in 10 min at full load", None, "not measured"))
    else:
        false = vip.get("false_failovers") if vip else None
        met = None if false is None else (false == 0 and soak >= 600)
        if met and vip and vip.get("soak_checker_ok") is False:
            met = False
        out.append(
            Target(
                17,
                "no false failover in 10 min at full load",
                met,
                f"{false} VRRP transitions in {soak:.0f} s",
            )
        )
    return out


def _growth_targets(r: Json) -> list[Target]:
    g = r.get("growth", {})
    sizes = g.get("sizes", {})
    top, clients = GROWTH_SIZES[-1]
    row = sizes.get(str(top))
    empty = sizes.get("0", {})
    out: list[Target] = []
    if row is None:
        largest = max((int(k) for k in sizes), default=None)
        what = "not measured" + (f" (largest size {largest:,})" if largest is not None else "")
        if g.get("error"):
            what += f"; failed: {g['error']}"
        names = (
            f"{top:,} held handles: >= 0.9x cycles/s of empty",
            f"takeover with {top:,} held handles < 1 s",
            f"server RSS <= 1 KiB per held handle ({top:,})",
            f"{clients:,} idle heartbeating clients < 10 % of a core",
        )
        out.extend(Target(17, n, None, what) for n in names)
    else:
        if "empty_rates" in row:  # paired with runs of an empty cluster at this size
            ratio = _num(row.get("rate_vs_empty"))
            versus = statistics.median(row["empty_rates"])
            how = f", the median of {len(row['empty_rates'])} pairs"
        else:  # a run before the pairing: against size 0, measured minutes earlier
            versus = _num(empty.get("rate_per_s"))
            ratio = _num(row.get("rate_per_s")) / versus
            how = ""
        out.append(
            Target(
                17,
                f"{top:,} held handles: >= 0.9x cycles/s of empty",
                ratio >= 0.9,
                f"{ratio:.2f}x{how} ({_num(row.get('rate_per_s')):.0f} vs {versus:.0f}/s"
                + (
                    f"; with the {clients:,} heartbeating clients stopped "
                    f"{_num(row.get('rate_hb_paused_vs_empty')):.2f}x)"
                    if "rate_hb_paused_vs_empty" in row
                    else ")"
                ),
            )
        )
        tk = row.get("takeover", {})
        promote = _num(tk.get("promote_s"))
        first = _num(tk.get("kill_to_first_checkout_s"))
        value = f"promote -> active {promote:.3f} s (kill -> first checkout {first:.3f} s)"
        if tk.get("promote_error"):
            value = f"no takeover: {tk['promote_error']}"
        out.append(Target(17, f"takeover with {top:,} held handles < 1 s", promote < 1.0, value))
        overall = _num(row.get("server_bytes_per_handle"))
        if "server_bytes_per_held_handle" in row:
            # the holder's step alone: handles over a few connections
            per = _num(row["server_bytes_per_held_handle"])
            steps = row.get("memory_steps", {})
            value = (
                f"{per:.0f} bytes per held handle ({steps.get('held', ['?'])[0]:,} held by the "
                f"holder); a connected client {_num(row.get('server_bytes_per_client')):.0f} "
                f"bytes; all growth over all handles {overall:.0f}"
            )
        else:
            per, value = overall, f"{overall:.0f} bytes (connections included)"
        out.append(Target(17, f"server RSS <= 1 KiB per held handle ({top:,})", per <= 1024, value))
        cost = _num(row.get("idle", {}).get("heartbeat_cost_pct"))
        each = row.get("idle", {}).get("heartbeat_cost_windows")
        how = ""
        if each:
            how = f"; the median of {len(each)} windows: {', '.join(f'{c:.1f}' for c in each)}"
        out.append(
            Target(
                17,
                f"{clients:,} idle heartbeating clients < 10 % of a core",
                cost < 10.0,
                f"{cost:.1f} % (server + backends over the empty cluster{how})",
            )
        )
    pr = r.get("products")
    if pr is None or "rate_per_s" not in pr:
        what = f"failed: {pr['error']}" if pr and pr.get("error") else "not measured"
        out.append(Target(17, f"{GROWTH_PRODUCTS:,} products: >= 0.9x cycles/s of one", None, what))
    elif "rate_vs_one" in pr:  # paired with a one-product cluster in the same section
        ratio = _num(pr["rate_vs_one"])
        out.append(
            Target(
                17,
                f"{GROWTH_PRODUCTS:,} products: >= 0.9x cycles/s of one",
                ratio >= 0.9,
                f"{ratio:.2f}x, the median of {len(pr.get('pairs', []))} pairs "
                f"({_num(pr.get('rate_per_s')):.0f} vs {_num(pr.get('one_rate_per_s')):.0f}/s)",
            )
        )
    else:  # results of a run before the pairing: against the growth section's empty cluster
        one = _num(
            empty.get("rate_per_s", r.get("tmr", {}).get(str(LEVELS[-1]), {}).get("rate_per_s"))
        )
        ratio = _num(pr.get("rate_per_s")) / one
        out.append(
            Target(
                17,
                f"{GROWTH_PRODUCTS:,} products: >= 0.9x cycles/s of one",
                ratio >= 0.9,
                f"{ratio:.2f}x ({_num(pr.get('rate_per_s')):.0f} vs {one:.0f}/s)",
            )
        )
    return out


def targets(r: Json) -> list[Target]:
    """Every target of docs/performance.md: issue 6's and issue 17's (met None: not measured)."""
    top = str(LEVELS[-1])
    out: list[Target] = []
    tmr = r.get("tmr", {})
    ours = _num(tmr.get(top, {}).get("rate_per_s"))
    one = _num(tmr.get("1", {}).get("rate_per_s"))
    measured = "tmr" in r
    out.append(
        Target(
            6,
            f"{top} clients >= 5x 1 client",
            ours >= 5 * one if measured else None,
            f"{ours / one:.1f}x" if measured else "not measured",
        )
    )
    out.append(
        Target(
            6,
            f">= 2,000 cycles/s at {top} clients",
            ours >= 2000 if measured else None,
            f"{ours:.0f}/s",
        )
    )
    single = _num(r.get("single", {}).get(top, {}).get("tmr_ratio"))
    have_single = "single" in r
    out.append(
        Target(
            6,
            ">= 0.5x baseline (b) single node",
            single >= 0.5 if have_single else None,
            f"{single:.2f}x",
        )
    )
    if "etcd" in r:
        etcd = _num(r["etcd"].get(top, {}).get("tmr_ratio"))
        out.append(Target(6, "faster than baseline (c) etcd", etcd > 1.0, f"{etcd:.2f}x"))
    else:
        out.append(Target(6, "faster than baseline (c) etcd", None, "not measured"))
    if "failover" in r:
        fo = r["failover"]
        clean = not (fo.get("lost") or fo.get("leftover_seats") or fo.get("duplicate_handles"))
        gap = _num(fo.get("gap_s"))
        out.append(
            Target(
                6,
                "failover (modelled VRRP) gap < 1.5 s, no lost/duplicate seat",
                gap < 1.5 and clean,
                f"{gap:.3f} s",
            )
        )
    else:
        out.append(Target(6, "failover (modelled VRRP) gap < 1.5 s", None, "not measured"))
    if "backend_kill" in r:
        bk = r["backend_kill"]
        gap = _num(bk.get("gap_s"))
        out.append(
            Target(
                6,
                "backend kill: no gap (< 250 ms), no error",
                gap < 0.25 and not bk.get("errors"),
                f"{gap * 1000:.0f} ms (before the kill "
                f"{_num(bk.get('max_pause_before_kill_s')) * 1000:.0f} ms)",
            )
        )
    else:
        out.append(Target(6, "backend kill: no gap (< 250 ms), no error", None, "not measured"))
    out.append(
        Target(
            17,
            f">= 0.7x baseline (b) at {top} clients (median of paired ratios)",
            single >= 0.7 if have_single else None,
            f"{single:.2f}x" if have_single else "not measured",
        )
    )
    out.append(
        Target(
            17,
            ">= 600 cycles/s at 1 client",
            one >= 600 if measured else None,
            f"{one:.0f}/s" if measured else "not measured",
        )
    )
    out.extend(_vip_targets(r.get("failover_vip")))
    out.extend(_growth_targets(r))
    return out


def _mark(met: bool | None) -> str:
    return "n/a " if met is None else ("MET " if met else "MISS")


def _f(x: Any, spec: str, width: int) -> str:
    """A number formatted, or '-' for a missing one, right-aligned in `width`."""
    value = _num(x)
    return f"{'-' if not math.isfinite(value) else format(value, spec):>{width}}"


def growth_table(r: Json) -> list[str]:
    lines: list[str] = []
    add = lines.append
    g = r.get("growth")
    if g and g.get("error"):
        add(f"cost growth failed: {g['error']}")
    if g:
        add(
            f"cost growth (fresh cluster, 1 product; heartbeats every "
            f"{g.get('heartbeat_period_s', '?')} s; load: 100 clients cycling)"
        )
        add(
            f"{'held':>7} {'hb clients':>10} {'cycles/s':>9} {'x empty':>7} {'p99 ms':>8} "
            f"{'srv MiB':>8} {'B/handle':>8} {'be MiB':>7} {'be B/h':>7} {'idle srv%':>9} "
            f"{'hb us/cl/s':>10} {'promote s':>9} {'kill->co s':>10}"
        )
        for key, row in sorted(g.get("sizes", {}).items(), key=lambda kv: int(kv[0])):
            idle = row.get("idle", {})
            tk = row.get("takeover", {})
            add(
                f"{int(key):>7,} {row.get('heartbeat_clients', 0):>10,} "
                f"{_f(row.get('rate_per_s'), '.0f', 9)} {_f(row.get('rate_vs_empty'), '.2f', 7)} "
                f"{_f(row.get('p99_ms'), '.1f', 8)} {_f(row.get('server_rss_mib'), '.1f', 8)} "
                f"{_f(row.get('server_bytes_per_handle'), '.0f', 8)} "
                f"{_f(row.get('backend_rss_mib'), '.1f', 7)} "
                f"{_f(row.get('backend_bytes_per_handle'), '.0f', 7)} "
                f"{_f(idle.get('server_cpu_pct'), '.1f', 9)} "
                f"{_f(idle.get('heartbeat_us_per_client_s'), '.1f', 10)} "
                f"{_f(tk.get('promote_s'), '.3f', 9)} "
                f"{_f(tk.get('kill_to_first_checkout_s'), '.3f', 10)}"
            )
        for key, row in sorted(g.get("sizes", {}).items(), key=lambda kv: int(kv[0])):
            if "server_bytes_per_held_handle" in row or "server_bytes_per_client" in row:
                per_handle = _f(row.get("server_bytes_per_held_handle"), ".0f", 0)
                per_client = _f(row.get("server_bytes_per_client"), ".0f", 0)
                add(
                    f"{int(key):>7,}: the active server's RSS per held handle (the holder's "
                    f"step) {per_handle} bytes, per connected heartbeating client {per_client} "
                    "bytes"
                )
        for key, row in sorted(g.get("sizes", {}).items(), key=lambda kv: int(kv[0])):
            if "empty_rates" in row:
                add(
                    f"{int(key):>7,}: paired with the empty cluster (each alone, in turn; "
                    f"cycles/s, this size / empty): "
                    + ", ".join(
                        f"{rate:.0f} / {e:.0f}"
                        for rate, e in zip(row.get("rates", []), row["empty_rates"], strict=False)
                    )
                    + f"; the growth cluster beside the empty runs "
                    f"{_f(row.get('growth_cpu_pct_beside_empty'), '.1f', 0)} % of a core"
                )
        for key, row in sorted(g.get("sizes", {}).items(), key=lambda kv: int(kv[0])):
            if "rate_hb_paused_per_s" in row:
                pairs = ""
                if "hb_paused_rates" in row and "empty_rates" in row:
                    pairs = " (the median of the pairs with the empty cluster's runs: " + (
                        ", ".join(
                            f"{rate:.0f} / {e:.0f}"
                            for rate, e in zip(
                                row["hb_paused_rates"], row["empty_rates"], strict=False
                            )
                        )
                        + ")"
                    )
                add(
                    f"{int(key):>7,}: with the heartbeating clients stopped "
                    f"{_f(row.get('rate_hb_paused_per_s'), '.0f', 0)} cycles/s, "
                    f"{_f(row.get('rate_hb_paused_vs_empty'), '.2f', 0)}x empty{pairs}"
                )
        hb = g.get("heartbeats")
        if hb:
            add(
                f"heartbeats: {hb.get('answered')} answered, p50 {hb.get('p50_ms')} ms, p99 "
                f"{hb.get('p99_ms')} ms, handles lost {hb.get('lost_handles')}, retries "
                f"{hb.get('retries')}, errors {hb.get('errors') or 0}"
            )
    pr = r.get("products")
    if pr and "rate_per_s" not in pr:
        add(f"{GROWTH_PRODUCTS} products: {pr.get('error', 'not measured')}")
    elif pr:
        idle = pr.get("idle", {})
        tk = pr.get("takeover", {})
        add(
            f"{pr.get('products', '?')} products (no handles): up in {pr.get('up_s')} s, "
            f"{_f(pr.get('rate_per_s'), '.0f', 0)} cycles/s at 100 clients, p99 "
            f"{_f(pr.get('p99_ms'), '.1f', 0)} ms; idle: server "
            f"{_f(idle.get('server_cpu_pct'), '.1f', 0)} %, backends "
            f"{_f(idle.get('backends_cpu_pct'), '.1f', 0)} % of a core; takeover: promote "
            f"{_f(tk.get('promote_s'), '.3f', 0)} s, kill -> first checkout "
            f"{_f(tk.get('kill_to_first_checkout_s'), '.3f', 0)} s"
        )
        if "pairs" in pr:
            one_idle = pr.get("one_idle", {})
            add(
                "  paired with 1 product (each alone, in turn): "
                + ", ".join(f"{o:.0f} / {m:.0f}" for o, m in pr["pairs"])
                + f" cycles/s (1 / {pr.get('products', '?')}); the median ratio "
                f"{_f(pr.get('rate_vs_one'), '.2f', 0)}x; idle with 1 product: server "
                f"{_f(one_idle.get('server_cpu_pct'), '.1f', 0)} %, backends "
                f"{_f(one_idle.get('backends_cpu_pct'), '.1f', 0)} % of a core"
            )
    return lines


def _api(r: Json) -> str:
    api = r.get("etcd", {}).get("api")
    return {"grpc": " (gRPC)", "json-gateway": " (JSON gw)"}.get(api, "") if api else ""


def table(r: Json) -> str:
    lines: list[str] = []
    add = lines.append
    m = r.get("machine", {})
    disk = m.get("disk", {})
    add(
        f"machine: {m.get('nproc')} cores, {m.get('cpu_model')}, {m.get('memory_gib')} GiB, disk "
        f"{disk.get('device', '?')} {disk.get('fstype', '')} "
        f"(fsync {disk.get('fsync_ms')} ms), load at start "
        f"{' '.join(m.get('loadavg_at_start', []))}"
    )
    for again in r.get("remeasured", []):
        load = " ".join(again.get("loadavg_at_start") or [])
        add(
            f"measured again: {', '.join(again.get('sections', []))} (started "
            f"{again.get('started')}, load at start {load})"
        )
    add("")
    if "tmr" in r:
        add(
            "checkout+release cycles (one sample = checkout + release, 2 round trips); "
            "cycles/s: median of the repetitions; TMR/x: median ratio of side-by-side runs"
        )
        add(
            f"{'system':<44} {'clients':>7} {'cycles/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'TMR/x':>7}"
        )
        rows = [
            ("TMR (2 servers, 3 durable backends)", "tmr"),
            ("(a) raw pyzmq CURVE echo, same sizes", "echo"),
            ("(b) single node: SQLite, no replication", "single"),
            (f"(c) etcd 3 members, lease semaphore{_api(r)}", "etcd"),
        ]
        for label, key in rows:
            if key not in r:
                add(f"{label:<44} {'-':>7} (not measured)")
                continue
            for clients in LEVELS:
                s = r[key].get(str(clients), {})
                ratio = "" if key == "tmr" else f"{_num(s.get('tmr_ratio')):.2f}x"
                add(
                    f"{label if clients == LEVELS[0] else '':<44} {clients:>7} "
                    f"{_f(s.get('rate_per_s'), '.1f', 9)} {_f(s.get('p50_ms'), '.2f', 8)} "
                    f"{_f(s.get('p99_ms'), '.2f', 8)} {ratio:>7}"
                )
        for key, label in (("tmr", "TMR"), ("single", "(b)"), ("etcd", "(c)")):
            t = r.get(key, {}).get(str(LEVELS[-1]), {})
            extra = (
                f"{t.get('rounds_per_s')} replication rounds/s, {t.get('ops_per_round')} ops "
                "per round; "
                if key == "tmr"
                else ""
            )
            if t.get("cpu_us_per_cycle"):
                add(
                    f"{label} at {LEVELS[-1]} clients: {extra}CPU us per cycle: "
                    + ", ".join(f"{k} {_num(v):.0f}" for k, v in t["cpu_us_per_cycle"].items())
                )
    if "crypt" in r:
        c = r["crypt"]
        add("")
        add(
            f"crypt (hmac, 64 bytes), 10 clients: {_num(c.get('rate_per_s')):.1f} calls/s, "
            f"p50 {_num(c.get('p50_ms')):.2f} ms"
        )
    if "failover" in r:
        fo = r["failover"]
        add("")
        add(
            f"failover (20 clients, kill -9 active + promote): "
            f"{_num(fo.get('gap_s')) * 1000:.0f} ms without a successful checkout (server "
            f"takeover {_num(fo.get('takeover_s')) * 1000:.0f} ms); lost {fo.get('lost')}, "
            f"leftover {fo.get('leftover_seats')}, duplicates {fo.get('duplicate_handles')}, "
            f"retried releases found released by an earlier attempt "
            f"{fo.get('released_before_failover')}"
        )
    if "backend_kill" in r:
        bk = r["backend_kill"]
        add(
            f"backend kill (20 clients): {_num(bk.get('gap_s')) * 1000:.0f} ms without a "
            f"successful checkout (before the kill "
            f"{_num(bk.get('max_pause_before_kill_s')) * 1000:.0f} ms), p99 "
            f"{_num(bk.get('p99_ms')):.1f} ms, errors {bk.get('errors') or 0}"
        )
    vip = r.get("failover_vip")
    if vip:
        add(
            f"failover on the VIP (bench/results/failover-vip.json): p50 {vip.get('p50_s')} s, "
            f"max {vip.get('max_s')} s over {vip.get('kills')} kills"
        )
    grown = growth_table(r)
    if grown:
        add("")
        lines.extend(grown)
    add("")
    add("targets (issue 6, issue 17)")
    for t in targets(r):
        add(f"  [{_mark(t.met)}] {t.issue:>2} {t.name:<64} {t.value}")
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


SECTIONS = ("compare", "crypt", "failover", "backend_kill", "growth", "products")
LATEST = REPO / "bench" / "results" / "latest.json"
PARTIAL_OUT = Path(tempfile.gettempdir()) / "tmr-bench-partial.json"


def merged(earlier: Json, again: Json, sections: list[str]) -> Json:
    """`earlier` with what `again` measured in its place; `remeasured` lists each merge."""
    out = dict(earlier)
    run_keys = ("started", "elapsed_s", "quick", "machine", "targets", "remeasured")
    for key, value in again.items():
        if key not in run_keys:
            out[key] = value
    note = {
        "sections": sections,
        "started": again.get("started"),
        "elapsed_s": again.get("elapsed_s"),
        "quick": again.get("quick"),
        "loadavg_at_start": again.get("machine", {}).get("loadavg_at_start"),
    }
    out["remeasured"] = [*earlier.get("remeasured", []), note]
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _sections(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(unknown) or '(none)'}; choose from {', '.join(SECTIONS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="TMR benchmark (issue 6, docs/performance.md)")
    ap.add_argument("--quick", action="store_true", help="2 s per measurement, 1 repetition")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each comparison run")
    ap.add_argument("--skip-etcd", action="store_true", help="leave out baseline (c)")
    ap.add_argument(
        "--skip-products",
        action="store_true",
        help=f"leave out the cluster with {GROWTH_PRODUCTS} products",
    )
    ap.add_argument(
        "--growth-max",
        type=int,
        default=None,
        help=f"largest held-handle count of the growth section (default "
        f"{GROWTH_SIZES[-1][0]}, with --quick {GROWTH_MAX_QUICK}; -1 leaves the section out)",
    )
    ap.add_argument(
        "--growth-pairs",
        type=_positive_int,
        default=None,
        help=f"runs of each growth size paired with runs of the empty cluster (default "
        f"{GROWTH_PAIRS}, with --quick 1), each pair with a third run of the size with its "
        "heartbeating clients stopped: the ratios to empty are the medians of the pairs'",
    )
    ap.add_argument(
        "--only",
        type=_sections,
        default=None,
        metavar="SECTION[,SECTION]",
        help=f"run only these sections (of {', '.join(SECTIONS)}); the results then go to "
        f"{PARTIAL_OUT} unless --out says otherwise, and the targets of the sections left out "
        "show as not measured",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="with --only: measure those sections again and put them into --out (default "
        f"{LATEST}) in place of the ones there, noting when; the targets are recomputed",
    )
    ap.add_argument("--profile", action="store_true", help="py-spy the server at 100 clients")
    ap.add_argument("--out", type=Path, default=None, help=f"results file (default {LATEST})")
    ap.add_argument("--show", action="store_true", help="print the table of --out and stop")
    ap.add_argument(
        "--vip-only",
        action="store_true",
        help="measure nothing: read bench/results/failover-vip.json (make bench-lab) into --out, "
        "recompute the targets, print the table",
    )
    args = ap.parse_args(argv)
    if args.merge and not args.only:
        ap.error("--merge needs --only (the sections to measure again)")
    if args.out is None:
        partial = args.only and not (args.show or args.vip_only or args.merge)
        args.out = PARTIAL_OUT if partial else LATEST
    earlier: Json | None = None
    if args.merge:
        try:
            earlier = json.loads(args.out.read_text())
        except (OSError, ValueError) as exc:
            ap.error(f"--merge: cannot read {args.out}: {exc}")
    if args.growth_max is None:
        args.growth_max = GROWTH_MAX_QUICK if args.quick else GROWTH_SIZES[-1][0]
    if args.show:
        print(table(json.loads(args.out.read_text())))
        return 0
    if args.vip_only:
        results = json.loads(args.out.read_text())
        with_targets(results, args.out.parent / "failover-vip.json")
        args.out.write_text(json.dumps(_finite(results), indent=2, default=str) + "\n")
        print(table(results))
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
    if earlier is not None:
        results = merged(earlier, results, args.only)
    with_targets(results, args.out.parent / "failover-vip.json")
    args.out.write_text(json.dumps(_finite(results), indent=2, default=str) + "\n")
    print()
    print(table(results))
    print(f"\nwritten {args.out} in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
