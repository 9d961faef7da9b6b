"""A storm of client connections against a fresh local cluster: whether the active server
still hears its backends (docs/performance.md, "A storm of client connections").

`python -m bench.connect_storm [--clients N] [--runs R] [--settle S]`: for each run a fresh
local cluster (`tmr local up`); N clients that heartbeat every 10 s (the growth section's
`Bench._heartbeaters`: every client connects at once, a CURVE handshake and a ZAP request
each, then checks out one handle, the checkouts spread over N / 250 s), S seconds more, then
the heartbeaters stop. Prints one JSON line per run: how many clients got their handle, in
how long, the `backend_down` events the servers logged meanwhile (every backend is up the
whole time, so each one is false) and the errors the clients were answered (`QUORUM_LOST`
when two backends were thought down). The code measured is what `tmr` resolves to:
``PYTHONPATH=other/services`` measures another tree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import run as bench_run
from bench.common import Json

BACKENDS = {"backend-1", "backend-2", "backend-3"}


def _backend_downs(root: Path) -> list[Json]:
    """The `backend_down` events in the servers' logs under `root`."""
    out: list[Json] = []
    for f in sorted(root.rglob("tmr-*.log")):
        for line in f.read_text().splitlines():
            if '"backend_down"' in line:
                event = json.loads(line)
                out.append(
                    {
                        "server": f.stem,
                        "at": event.get("ts", "")[11:23],
                        "backend": event.get("backend"),
                        "reason": event.get("reason"),
                    }
                )
    return out


def storm(clients: int, settle: float) -> Json:
    """One run on a fresh cluster (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="tmr-storm-") as tmp:
        ns = argparse.Namespace(quick=False, duration=4.0, reps=1)
        bench = bench_run.Bench(ns, Path(tmp))
        cl = bench_run.Cluster(Path(tmp) / "c", quantity=bench_run.GROWTH_QUANTITY)
        hb: list[subprocess.Popen[str]] = []
        try:
            bench_run.wait_until(
                "all backends up", lambda: cl.backends_up(cl.active()) == BACKENDS, 60
            )
            endpoints, first = cl.endpoints_from(cl.active())
            t0 = time.monotonic()
            hb, connected = bench._heartbeaters(cl, clients, endpoints, first)
            took = time.monotonic() - t0
            time.sleep(settle)
        finally:
            results = bench_run._stop_heartbeaters(hb)
            downs = _backend_downs(Path(tmp) / "c")
            cl.down()
    errors: dict[str, int] = {}
    for r in results:
        for code, n in r.get("errors", {}).items():
            errors[code] = errors.get(code, 0) + int(n)
    return {
        "clients": clients,
        "with_handle": connected,
        "seconds": round(took, 1),
        "backend_down": len(downs),
        "downs": downs[:12],
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=9000, help="clients that connect (9000)")
    ap.add_argument("--runs", type=int, default=3, help="fresh clusters, one after another (3)")
    ap.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds more once every client has its handle (5)",
    )
    args = ap.parse_args(argv)
    if args.clients < 1 or args.runs < 1 or args.settle < 0:
        ap.error("--clients and --runs must be at least 1, --settle not negative")
    for i in range(args.runs):
        print(json.dumps({"run": i + 1, **storm(args.clients, args.settle)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
