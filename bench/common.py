"""Small helpers shared by the benchmark's parts: statistics, process memory, worker specs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

FIRM = 6000123
PRODUCT = 42
REPO = Path(__file__).resolve().parent.parent

Json = dict[str, Any]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, nearest rank; NaN if empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (NaN if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (NaN if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def curve_keypair() -> tuple[str, str]:
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


@dataclass
class LoadResult:
    """Merged result of the load workers of one measurement."""

    clients: int
    duration: float
    cycles: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    lost: int = 0
    unfinished: int = 0
    ok_times: list[float] = field(default_factory=list)
    handles: list[str] = field(default_factory=list)
    not_released: list[list[Any]] = field(default_factory=list)
    workers: list[Json] = field(default_factory=list)

    @property
    def loadgen_cpu_s(self) -> float | None:
        """CPU the load workers used in the measurement window (None: not known)."""
        used = [w.get("window_cpu_s") for w in self.workers]
        return None if not used or None in used else float(sum(u for u in used if u))

    @property
    def rate(self) -> float:
        return self.cycles / self.duration if self.duration > 0 else math.nan

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)

    def summary(self) -> Json:
        lat = sorted(self.latencies_ms)
        return {
            "clients": self.clients,
            "duration_s": round(self.duration, 3),
            "cycles": self.cycles,
            "rate_per_s": round(self.rate, 1),
            "p50_ms": round(percentile(lat, 50), 3),
            "p99_ms": round(percentile(lat, 99), 3),
            "max_ms": round(lat[-1], 3) if lat else math.nan,
            "errors": dict(self.errors),
            "retries": self.retries,
            "lost": self.lost + len(self.not_released),
            "unfinished": self.unfinished,
        }


def split_clients(clients: int, workers: int) -> list[int]:
    """Spread `clients` over at most `workers` processes as evenly as possible."""
    workers = max(1, min(workers, clients))
    base, extra = divmod(clients, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def start_worker(module: str, spec: Json, python: str | None = None) -> subprocess.Popen[str]:
    """Start `python -m module` (this interpreter, or `python`) with `spec` as JSON on its
    standard input; it imports `bench` and `tmr` from this checkout."""
    proc = subprocess.Popen(
        [python or sys.executable, "-m", module],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'services'}"},
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec) + "\n")
    proc.stdin.flush()
    return proc


def finish_worker(proc: subprocess.Popen[str], timeout: float) -> Json:
    """Wait (bounded) for a worker and return the JSON object of its last output line."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"load worker {proc.pid} did not finish within {timeout:g} s") from None
    lines = [line for line in out.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"load worker {proc.pid} failed (exit {proc.returncode})")
    result: Json = json.loads(lines[-1])
    return result


def merge(results: list[Json], clients: int, duration: float) -> LoadResult:
    out = LoadResult(clients, duration)
    for r in results:
        out.cycles += int(r["cycles"])
        out.latencies_ms.extend(r["lat_ms"])
        for code, n in r["errors"].items():
            out.errors[code] = out.errors.get(code, 0) + int(n)
        out.retries += int(r["retries"])
        out.lost += int(r.get("lost", 0))
        out.unfinished += int(r["unfinished"])
        out.ok_times.extend(r.get("ok_times", []))
        out.handles.extend(r.get("handles", []))
        out.not_released.extend(r.get("not_released", []))
        out.workers.append(
            {k: v for k, v in r.items() if k in ("worker", "cpu_s", "window_cpu_s", "cycles")}
        )
    return out


def run_workers(
    module: str, specs: list[Json], clients: int, duration: float, timeout: float
) -> LoadResult:
    """Start one worker per spec, wait for all (bounded), merge their results."""
    procs = [start_worker(module, spec) for spec in specs]
    return collect_workers(procs, clients, duration, timeout)


def collect_workers(
    procs: list[subprocess.Popen[str]], clients: int, duration: float, timeout: float
) -> LoadResult:
    """Wait for started workers (bounded; stragglers are killed) and merge their results."""
    deadline = time.monotonic() + timeout
    results = []
    try:
        for proc in procs:
            results.append(finish_worker(proc, max(1.0, deadline - time.monotonic())))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    return merge(results, clients, duration)
