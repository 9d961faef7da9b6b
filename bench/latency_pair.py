"""Paired before/after measurement of the serving path's cost (issue 17): two local clusters
up at once, one running the services of ``--old`` and one those of ``--new`` (each a
``services`` directory), loaded in turn by the same load generator (checkout+release cycles)
at each client count, the order of old and new alternating per repetition.

Per run it prints cycles/s, p50, and the CPU microseconds per cycle of the active server and
of each backend (from /proc), and per client count the medians and the new/old ratios of the
pairs. ``--profile DIR`` also runs py-spy on the new cluster's active server and backend-1
in every new run (collapsed stacks in DIR, summarised by `bench.profile`).

    PYTHONPATH=$PWD/services .venv/bin/python -m bench.latency_pair \\
        --old /work/main/services --new $PWD/services --clients 1,100 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import profile
from bench.common import (
    FIRM,
    PRODUCT,
    Json,
    collect_workers,
    cpu_seconds,
    split_clients,
    start_worker,
)
from tmr.local.cluster import local_down, local_up

SETUP = 2.0
KEYS = ("rate", "p50_ms", "server_us", "backend_us", "server_cs", "backend_cs")


def _up(root: Path, services: str) -> Json:
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = services
    try:
        info: Json = local_up(root, quantity=20_000, lease=3600.0, progress=False, timeout=120)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    return info


def _active(info: Json) -> Json:
    from tmr.ctl import CtlError, ctl_request

    for node in info["nodes"]:
        if node["role"] == "server":
            try:
                st = ctl_request(Path(node["ctl_socket"]), "status", timeout=2.0)
            except CtlError:
                continue
            if st.get("role") == "active":
                return dict(node)
    raise RuntimeError("no active server")


def switches(pid: int) -> int:
    """Context switches (voluntary and not) of all of a process's threads so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
                total += int(line.split()[1])
    return total


def measure(info: Json, clients: int, duration: float, prof: Path | None) -> Json:
    server = _active(info)
    backends = [n for n in info["nodes"] if n["role"] == "backend"]
    pids = {"server": int(server["pid"])} | {b["name"]: int(b["pid"]) for b in backends}
    start_at = time.monotonic() + SETUP
    workers = 1 if clients <= 10 else 2
    specs = [
        {
            "mode": "cycle",
            "proto": "tmr",
            "endpoints": list(info["client_endpoints"]),
            "server_key": info["service_public_key"],
            "firm": FIRM,
            "product": PRODUCT,
            "start_at": start_at,
            "duration": duration,
            "drain": 15.0,
            "clients": n,
            "worker": i,
            "first_endpoint": list(info["client_endpoints"]).index(server["endpoint"]),
            "run": f"p{time.monotonic_ns()}",
            "record": False,
        }
        for i, n in enumerate(split_clients(clients, workers))
    ]
    procs = [start_worker("bench.loadgen", spec) for spec in specs]
    spies = []
    try:
        time.sleep(max(0.0, start_at - time.monotonic()))
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        cs_before = {k: switches(p) for k, p in pids.items()}
        if prof is not None:
            tag = f"{clients}c-{time.strftime('%H%M%S')}"
            spies = [
                profile.start_record(pids["server"], duration, prof / f"server-{tag}.txt"),
                profile.start_record(pids["backend-1"], duration, prof / f"backend-{tag}.txt"),
            ]
        time.sleep(max(0.0, start_at + duration - time.monotonic()))
        used = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
        cs = {k: switches(p) - cs_before[k] for k, p in pids.items()}
    finally:
        result = collect_workers(procs, clients, duration, timeout=duration + 60)
        for spy in spies:
            spy.wait(timeout=30)
    s = result.summary()
    cyc = max(1, result.cycles)
    out: Json = {
        "rate": s["rate_per_s"],
        "p50_ms": s["p50_ms"],
        "server_us": round(used["server"] / cyc * 1e6, 1),
        "backend_us": round(statistics.mean(used[b["name"]] / cyc * 1e6 for b in backends), 1),
        "server_cs": round(cs["server"] / cyc, 1),
        "backend_cs": round(statistics.mean(cs[b["name"]] / cyc for b in backends), 1),
        "errors": s["errors"],
        "retries": s["retries"],
        "lost": s["lost"],
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--clients", default="1,100")
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--only-new", action="store_true", help="measure the new cluster only")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tmr-pair-"))
    kinds = ["new"] if args.only_new else ["old", "new"]
    clusters: dict[str, Json] = {}
    runs: dict[tuple[int, str], list[Json]] = {}
    try:
        for kind in kinds:
            clusters[kind] = _up(tmp / kind, getattr(args, kind))
        for rep in range(args.reps):
            for clients in levels:
                order = kinds if rep % 2 == 0 else kinds[::-1]
                for kind in order:
                    prof = args.profile if kind == "new" else None
                    r = measure(clusters[kind], clients, args.duration, prof)
                    runs.setdefault((clients, kind), []).append(r)
                    print(f"rep {rep} {clients:>3} clients {kind}: {json.dumps(r)}", flush=True)
    finally:
        for kind in clusters:
            local_down(tmp / kind)
    summary: Json = {}
    for clients in levels:
        row: Json = {}
        for kind in kinds:
            rs = runs.get((clients, kind), [])
            row[kind] = {k: statistics.median(r[k] for r in rs) for k in KEYS}
        if "old" in row:
            pairs = list(zip(runs[(clients, "old")], runs[(clients, "new")], strict=True))
            row["new/old"] = {
                k: round(statistics.median(n[k] / o[k] for o, n in pairs if o[k]), 2) for k in KEYS
            }
        summary[str(clients)] = row
    print(json.dumps(summary, indent=1))
    if args.profile:
        for f in sorted(args.profile.glob("*.txt")):
            print(f.name, json.dumps(profile.summarise(f, top=25), indent=0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
