"""Idle CPU of a local cluster by number of licensed products (issue 17): the active server,
the standby and the three backends, in percent of one core, over a window with no client.
What it measures is the probe exchange (each server probes each backend 10 times a second)
and anything else a loop turn does per product.

    PYTHONPATH=$PWD/services .venv/bin/python -m bench.idle_products --products 1,1000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import cpu_seconds
from bench.run import Cluster, wait_until


def idle(products: int, window: float, settle: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tmr-idle-") as tmp:
        cl = Cluster(Path(tmp) / "c", products=products)
        try:
            cl.wait_all_backends()
            time.sleep(settle)
            roles: dict[str, str] = {}

            def some_active() -> bool:
                roles.update({n: cl.role(n) for n in cl.servers})
                return "active" in roles.values()

            wait_until("an active server", some_active, 30)
            active = next(n for n, r in roles.items() if r == "active")
            standby = next(n for n in cl.servers if n != active)
            names = {"active": active, "standby": standby}
            names.update({f"backend-{i}": f"backend-{i}" for i in (1, 2, 3)})
            pids = {k: cl.pid(n) for k, n in names.items()}
            before = {k: cpu_seconds(p) for k, p in pids.items()}
            t0 = time.monotonic()
            time.sleep(window)
            span = time.monotonic() - t0
            used = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
        finally:
            cl.down()
    out = {f"{k}_cpu_pct": round(100.0 * v / span, 2) for k, v in used.items()}
    out["backends_cpu_pct"] = round(sum(out[f"backend-{i}_cpu_pct"] for i in (1, 2, 3)), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", default="1,1000", help="comma-separated product counts")
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds waited after start")
    args = ap.parse_args()
    for n in (int(x) for x in args.products.split(",")):
        print(json.dumps({"products": n, **idle(n, args.window, args.settle)}), flush=True)


if __name__ == "__main__":
    main()
