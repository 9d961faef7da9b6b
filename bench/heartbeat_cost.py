"""Idle CPU of the server and the backends with N heartbeating clients and H held handles.

`python -m bench.heartbeat_cost [--clients N] [--period S] [--held H] [--window W]
[--cycle R [--cycle-clients C]]`: a fresh local cluster (`tmr local up`, the benchmark's long
lease), then, in order: the idle CPU of the active server and of the three backends over
`window` s with nothing connected; after a holder took H handles (no heartbeats); after N
clients with one handle each heartbeat every `period` s (the growth section's
`Bench._heartbeaters`). Prints one JSON line per stage
(percent of one core, and µs of CPU per heartbeat for the last). The same heartbeat rate
with fewer clients (N / period) isolates the cost per heartbeat from the cost per client.
With `--cycle R`, after each stage R load runs of C clients (100) cycling: cycles/s and the
latency of a checkout or release (at C = 1, what the server's idle hold costs a lone client
among heartbeating ones).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import profile
from bench import run as bench_run
from bench.common import Json, cpu_seconds, percentile

BACKENDS = ("backend-1", "backend-2", "backend-3")


def threads(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of `pid`, by thread name (summed over equal names)."""
    out: dict[str, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def idle(
    cl: bench_run.Cluster,
    window: float,
    extra: dict[str, int] | None = None,
    profile_to: Path | None = None,
) -> Json:
    active = cl.active()
    pids = {"server": cl.pid(active), **{b: cl.pid(b) for b in BACKENDS}, **(extra or {})}
    before = {n: cpu_seconds(p) for n, p in pids.items()}
    th0 = threads(pids["server"])
    spy = profile.start_record(pids["server"], window, profile_to) if profile_to else None
    t0 = time.monotonic()
    time.sleep(window)
    dt = time.monotonic() - t0
    used = {n: (cpu_seconds(p) - before[n]) / dt * 100.0 for n, p in pids.items()}
    th1 = threads(pids["server"])
    out: Json = {
        "server_pct": round(used["server"], 2),
        "server_threads_pct": {
            n: round((v - th0.get(n, 0.0)) / dt * 100.0, 2) for n, v in th1.items()
        },
        "backends_pct": round(sum(used[b] for b in BACKENDS), 2),
        "clients_pct": round(sum(v for n, v in used.items() if n.startswith("hb")), 2),
    }
    if spy is not None and profile_to is not None:
        spy.wait(timeout=window + 30)
        out["profile"] = profile.summarise(profile_to, top=25)
    return out


def cycles(bench: bench_run.Bench, cl: bench_run.Cluster, runs: int, clients: int = 100) -> Json:
    """`runs` load runs of `clients` clients cycling: cycles/s (median), the latency of a
    checkout or release (p50 and p99 over the runs) and CPU µs per cycle."""
    if not runs:
        return {}
    active = cl.active()
    endpoints, first = cl.endpoints_from(active)
    pids = {"server": cl.pid(active), **{b: cl.pid(b) for b in BACKENDS}}
    rates: list[float] = []
    cpu: list[Json] = []
    latencies: list[float] = []
    for _ in range(runs):
        result, info = bench.load(
            "hbc", endpoints, clients, first=first, cpu_pids=pids, key=cl.key, cluster=cl
        )
        rates.append(round(result.rate, 1))
        cpu.append(info["cpu_us_per_cycle"])
        latencies.extend(result.latencies_ms)
    latencies.sort()
    return {
        "cycle_clients": clients,
        "rates": rates,
        "rate_per_s": statistics.median(rates),
        "p50_ms": round(percentile(latencies, 50), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 2) if latencies else None,
        "cpu_us_per_cycle": cpu,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--period", type=float, default=bench_run.HEARTBEAT_PERIOD)
    ap.add_argument("--held", type=int, default=0)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--profile", type=Path, help="py-spy the server's heartbeat stage into")
    ap.add_argument(
        "--cycle",
        type=int,
        default=0,
        metavar="R",
        help="after each idle window, R runs of --cycle-clients clients cycling (cycles/s, "
        "median; latency p50, p99)",
    )
    ap.add_argument(
        "--cycle-clients", type=int, default=100, help="clients of each --cycle run (100)"
    )
    args = ap.parse_args()
    bench_run.HEARTBEAT_PERIOD = args.period
    with tempfile.TemporaryDirectory(prefix="tmr-hbcost-") as tmp:
        ns = argparse.Namespace(quick=False, duration=4.0, reps=1)
        bench = bench_run.Bench(ns, Path(tmp))
        cl = bench_run.Cluster(Path(tmp) / "c", quantity=bench_run.GROWTH_QUANTITY)
        hb: list[subprocess.Popen[str]] = []
        holder = None
        try:
            cl.wait_all_backends()
            time.sleep(2.0)
            base = idle(cl, args.window)
            print(
                json.dumps(
                    {"stage": "empty", **base, **cycles(bench, cl, args.cycle, args.cycle_clients)}
                ),
                flush=True,
            )
            endpoints, first = cl.endpoints_from(cl.active())
            if args.held:
                holder = bench._hold(cl, args.held, endpoints, first)
                time.sleep(3.0)
                m = idle(cl, args.window)
                print(
                    json.dumps(
                        {
                            "stage": f"held {args.held}",
                            **m,
                            **cycles(bench, cl, args.cycle, args.cycle_clients),
                        }
                    ),
                    flush=True,
                )
            if args.clients:
                hb, connected = bench._heartbeaters(cl, args.clients, endpoints, first)
                time.sleep(args.period + 2.0)
                extra = {f"hb{i}": p.pid for i, p in enumerate(hb)}
                m = idle(cl, args.window, extra, args.profile)
                rate = connected / args.period
                grown = (
                    m["server_pct"] + m["backends_pct"] - base["server_pct"] - base["backends_pct"]
                )
                m["us_per_heartbeat"] = round(grown / 100.0 * 1e6 / rate, 1) if rate else None
                m["server_us_per_heartbeat"] = (
                    round((m["server_pct"] - base["server_pct"]) / 100.0 * 1e6 / rate, 1)
                    if rate
                    else None
                )
                m.update(cycles(bench, cl, args.cycle, args.cycle_clients))
                print(
                    json.dumps({"stage": f"{connected} clients / {args.period} s", **m}), flush=True
                )
        finally:
            bench_run._stop_heartbeaters(hb)
            if holder is not None and holder.poll() is None:
                holder.kill()
                holder.wait(timeout=5)
            cl.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
