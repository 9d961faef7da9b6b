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
With `--pause P` (and N > 0), after the last stage the active server is stopped (SIGSTOP)
for P s while its clients go on, as a host paused by a VM migration would be, then resumed:
the server's CPU in each second of the `--settle` s after it (a backlog of retries shows as
seconds of high CPU; `extra_core_s`: the CPU of those seconds beyond the level before the
pause), the clients' heartbeats, retries, lost handles and errors from just before the pause
to the end of those seconds, and their round trips longer than 1 s over the whole run, as
one more JSON line.
With `--takeovers K`, after that, K takeovers as the growth section's (`Bench._takeover`:
kill -9 of the active server under 10 clients cycling, promote of the standby 0.72 s later,
the killed one restarted as the standby; the heartbeating clients fail over by themselves),
one JSON line each: promote -> active and kill -> first checkout, the heartbeating clients'
heartbeats, retries, lost handles and errors from just before the kill to a heartbeat period
after the takeover, the phases of the promote from the new server's log (prepare, adopted,
active, relative to the promote), and the CPU of every thread of the new server, the
backends and the heartbeat workers from the promote to active and over the second after it
(where a slow takeover's time went). A takeover that lost a handle copies the cluster's logs
and databases into `--keep DIR`. With `--cycle R`, after the takeovers one more stage on the
new active server (the same idle window and load runs as before them: what a takeover leaves
behind for the requests that follow it), after `--held-after H2` more handles taken on it
(the growth section grows after each takeover).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench import profile
from bench import run as bench_run
from bench.common import Json, cpu_seconds, percentile
from bench.failover_vip import parse_ts

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


def stage(name: str, fields: Json) -> None:
    """Print one stage's JSON line."""
    print(json.dumps({"stage": name, **fields}), flush=True)


def since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The heartbeat workers' counts from `before` to `after` (two `counts`)."""
    return {k: after.get(k, 0) - v for k, v in before.items()}


def counts(procs: list[subprocess.Popen[str]], timeout: float = 30.0) -> dict[str, int]:
    """The heartbeat workers' counts so far, summed (each asked with a ``count`` line,
    answered between two turns of the worker's loop: one worker took over 10 s once, a
    heartbeat period after a takeover, while its clients failed over)."""
    total: dict[str, int] = {}
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("count\n")
        proc.stdin.flush()
        got = bench_run.json_line(proc, timeout)
        if got is None:
            raise RuntimeError(f"heartbeat worker {proc.pid} did not answer 'count'")
        for k, v in got.items():
            total[k] = total.get(k, 0) + int(v)
    return total


def pause(cl: bench_run.Cluster, seconds: float, settle: float) -> Json:
    """Stop the active server for `seconds`, resume it, and sample its CPU each second for
    `settle` s: percent of one core per second, and the CPU over those seconds beyond its
    level before the pause, in core-seconds."""
    pid = cl.pid(cl.active())
    before = cpu_seconds(pid)
    time.sleep(2.0)
    level = (cpu_seconds(pid) - before) / 2.0 * 100.0
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    series: list[float] = []
    last = cpu_seconds(pid)
    for i in range(int(settle)):
        time.sleep(max(0.0, resumed + i + 1 - time.monotonic()))
        now = cpu_seconds(pid)
        series.append(round((now - last) * 100.0, 1))
        last = now
    return {
        "pause_s": seconds,
        "server_pct_before": round(level, 2),
        "server_pct_each_second_after": series,
        # What the pause cost beyond the work it delayed (the backlog is work the server
        # would have done anyway): the retries, reconnections and refusals it set off.
        "extra_core_s": round((sum(series) - level * len(series)) / 100.0, 2),
    }


class Sampler:
    """Every `step` s, the CPU seconds of each thread of the watched processes (a background
    thread, until `stop`): where a takeover's seconds go."""

    def __init__(self, pids: dict[str, int], step: float = 0.05) -> None:
        self.pids = pids
        self.step = step
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _take(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for who, pid in self.pids.items():
            try:
                per_thread = threads(pid)
            except OSError:  # the process is gone (a killed server): no more samples of it
                continue
            for name, secs in per_thread.items():
                out[f"{who}/{name}"] = secs
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self._take()))
            self._stop.wait(self.step)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """Percent of one core of each thread from the sample nearest `t0` to the one nearest
        `t1` (threads that used under 1 % left out)."""
        if not self.samples:
            return {}
        a = min(self.samples, key=lambda s: abs(s[0] - t0))
        b = min(self.samples, key=lambda s: abs(s[0] - t1))
        span_s = b[0] - a[0]
        if span_s <= 0:
            return {}
        out = {n: round((v - a[1].get(n, 0.0)) / span_s * 100.0, 1) for n, v in b[1].items()}
        return {n: v for n, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 1.0}


def _log_events(path: Path, names: set[str], since_wall: float) -> list[tuple[float, Json]]:
    """The JSON log records of `path` whose event is in `names`, from `since_wall` (wall
    time) on, with their wall time."""
    out: list[tuple[float, Json]] = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") not in names:
            continue
        ts = parse_ts(str(rec["ts"]))
        if ts >= since_wall:
            out.append((ts, rec))
    return out


def takeovers(
    bench: bench_run.Bench,
    cl: bench_run.Cluster,
    held: int,
    rounds: int,
    extra: dict[str, int],
    settle: float,
    keep: Path | None = None,
    workers: list[subprocess.Popen[str]] | None = None,
) -> list[Json]:
    """`rounds` takeovers as the growth section's (`Bench._takeover`: kill -9 of the active
    server under 10 clients cycling, promote VRRP_DETECT s later, the killed one restarted
    as the standby), each with the phases of the promote from the new server's log and the
    CPU of every thread of it, the backends and `extra` (the heartbeating clients) from the
    promote to `active`, and over the first second after it; `settle` s between rounds. A
    round that lost a handle copies the cluster's directory (logs, databases) into `keep`.
    With the heartbeat `workers`, each round also counts their heartbeats, retries, lost
    handles and errors from just before the kill to the end of its `settle` s."""
    out: list[Json] = []
    for i in range(rounds):
        standby = cl.standby()
        pids = {"standby": cl.pid(standby), **{b: cl.pid(b) for b in BACKENDS}, **extra}
        sampler = Sampler(pids)
        marks: Json = {}
        before = counts(workers) if workers else {}
        wall0 = time.time()
        try:
            row = bench._takeover(cl, held, marks=marks)
        finally:
            sampler.stop()
        kill = float(marks["kill"])
        promote_at = kill + bench_run.VRRP_DETECT
        events = _log_events(
            Path(cl.nodes[standby]["log"]),
            {"promote", "prepare", "adopted", "active", "parked_answered"},
            wall0,
        )
        # Wall -> monotonic through the promote event (the first one logged).
        phases: Json = {}
        if events and events[0][1].get("event") == "promote":
            w0 = events[0][0]
            for ts, rec in events:
                name = str(rec["event"])
                if name != "parked_answered" and name not in phases:
                    phases[name] = round(ts - w0, 3)
            phases["parked_answered"] = sum(
                1 for _, r in events if r.get("event") == "parked_answered"
            )
        end = promote_at + float(row.get("promote_s") or 0.0)
        out.append(
            {
                "round": i + 1,
                **{k: row[k] for k in ("promote_s", "kill_to_first_checkout_s", "lost", "errors")},
                "phases_s": phases,
                "cpu_pct_during_promote": sampler.between(promote_at, end),
                "cpu_pct_first_second_after": sampler.between(end, end + 1.0),
            }
        )
        if row.get("lost_handles"):
            out[-1]["lost_handles"] = row["lost_handles"]
            if keep is not None:
                # The cluster's logs and databases as they are, for a look afterwards.
                dest = keep / f"takeover-{i + 1}"
                shutil.copytree(cl.root, dest, ignore=shutil.ignore_patterns("*.sock"))
                out[-1]["kept"] = str(dest)
        time.sleep(settle)
        if workers:
            out[-1]["clients"] = since(before, counts(workers))
        stage("takeover", out[-1])
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
    ap.add_argument(
        "--pause",
        type=float,
        default=0.0,
        metavar="P",
        help="after the heartbeat stage, stop the active server for P s (SIGSTOP) and resume it",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="seconds of the server's CPU sampled after --pause resumes it (30)",
    )
    ap.add_argument(
        "--takeovers",
        type=int,
        default=0,
        metavar="K",
        help="after the heartbeat stage (and --pause), K takeovers as the growth section's, "
        "each with its phases and every thread's CPU (0-20)",
    )
    ap.add_argument(
        "--held-after",
        type=int,
        default=0,
        metavar="H2",
        help="after the takeovers, H2 more handles taken on the new active server before the "
        "stage after them (with --cycle)",
    )
    ap.add_argument(
        "--keep",
        type=Path,
        help="a takeover that loses a handle copies the cluster's logs and databases here",
    )
    args = ap.parse_args()
    if not 0 <= args.takeovers <= 20:
        ap.error("--takeovers is 0-20")
    if args.held_after and not (args.takeovers and args.cycle):
        ap.error("--held-after needs --takeovers and --cycle (the stage after the takeovers)")
    if not 0 <= args.pause <= 120 or not 1 <= args.settle <= 300:
        ap.error("--pause is 0-120 s, --settle 1-300 s")
    bench_run.HEARTBEAT_PERIOD = args.period
    with tempfile.TemporaryDirectory(prefix="tmr-hbcost-") as tmp:
        ns = argparse.Namespace(quick=False, duration=4.0, reps=1)
        bench = bench_run.Bench(ns, Path(tmp))
        cl = bench_run.Cluster(Path(tmp) / "c", quantity=bench_run.GROWTH_QUANTITY)
        hb: list[subprocess.Popen[str]] = []
        holder = more = None
        try:
            cl.wait_all_backends()
            time.sleep(2.0)
            base = idle(cl, args.window)
            stage("empty", {**base, **cycles(bench, cl, args.cycle, args.cycle_clients)})
            endpoints, first = cl.endpoints_from(cl.active())
            if args.held:
                holder = bench._hold(cl, args.held, endpoints, first)
                time.sleep(3.0)
                m = idle(cl, args.window)
                stage(
                    f"held {args.held}", {**m, **cycles(bench, cl, args.cycle, args.cycle_clients)}
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
                stage(f"{connected} clients / {args.period} s", m)
                if args.pause:
                    before = counts(hb)
                    paused = pause(cl, args.pause, args.settle)
                    after = counts(hb)
                    workers, hb = bench_run._stop_heartbeaters(hb), []
                    lat = sorted(x for w in workers for x in w.get("hb_ms", []))
                    # From just before the pause to the end of --settle; the round trips
                    # over the whole run (the connections' ramp has a few over 1 s).
                    paused["clients"] = {
                        **since(before, after),
                        "round_trips_over_1s": sum(1 for x in lat if x > 1000.0),
                        "round_trip_max_ms": lat[-1] if lat else None,
                    }
                    stage("pause", paused)
            if args.takeovers:
                extra = {f"hb{i}": p.pid for i, p in enumerate(hb)}
                takeovers(
                    bench, cl, args.held, args.takeovers, extra, args.period + 2.0, args.keep, hb
                )
                if args.cycle:
                    if args.held_after:
                        later = cl.endpoints_from(cl.active())
                        more = bench._hold(cl, args.held_after, *later)
                        time.sleep(3.0)
                    m = idle(cl, args.window, extra)
                    m.update(cycles(bench, cl, args.cycle, args.cycle_clients))
                    stage("after takeovers", m)
        finally:
            bench_run._stop_heartbeaters(hb)
            for proc in (holder, more):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=5)
            cl.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
