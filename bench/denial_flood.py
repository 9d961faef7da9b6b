"""Checkouts while a flood of refused checkouts runs (issue 18, denials).

`python -m bench.denial_flood [--seconds S] [--flooders N]` on a loopback cluster (`tmr local
up`: two servers, three backends, LQ 3): one client holds two seats; a measuring client does
checkout + release of the third seat in a loop for S seconds (idle), then for S seconds again
while N processes each ask for two seats in a loop (every one refused NO_LICENSE_AVAILABLE).
It prints the measuring client's cycles/s, p50 and p99 in both phases and the refusals per
second, and, where the build records refusals (`tmr admin denials`), how many the server
recorded, dropped and the backends kept. Run it with the PYTHONPATH of the build to measure
(the cluster's processes inherit it), e.g. the main checkout's and this one's, interleaved.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.cluster_helpers import LocalCluster
from tmr.ctl import CtlError
from tmr.errors import NoLicenseAvailable

FIRM, PRODUCT = 6000123, 42


def _flood(info: dict[str, Any], until: float, out: Any) -> None:
    from tmr.client import Client

    n = 0
    with Client(info["client_endpoints"], info["service_public_key"], timeout=10.0) as c:
        while time.time() < until:
            try:
                h = c.checkout(FIRM, PRODUCT, seats=2)
                h.release()
            except NoLicenseAvailable:
                n += 1
    out.put(n)


def _measure(cluster: LocalCluster, seconds: float) -> tuple[float, float, float]:
    lat: list[float] = []
    with cluster.client(user="measure") as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            h = c.checkout(FIRM, PRODUCT)
            h.release()
            lat.append(time.perf_counter() - t0)
    q = statistics.quantiles(lat, n=100)
    return len(lat) / seconds, q[49] * 1000, q[98] * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--flooders", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(Path(tmp) / "c", quantity=3)
        try:
            with cluster.client(user="holder") as holder:
                holder.checkout(FIRM, PRODUCT, seats=2)
                idle = _measure(cluster, args.seconds)
                ctx = multiprocessing.get_context("spawn")
                out = ctx.Queue()
                until = time.time() + args.seconds + 2.0
                procs = [
                    ctx.Process(target=_flood, args=(cluster.info, until, out))
                    for _ in range(args.flooders)
                ]
                for p in procs:
                    p.start()
                time.sleep(2.0)  # the flooders connect
                loaded = _measure(cluster, args.seconds)
                refused = sum(out.get(timeout=60) for _ in procs)
                for p in procs:
                    p.join()
                time.sleep(2.0)  # the last flush
                try:
                    rec = cluster.ctl("tmr-a", "denials")
                    if not rec.get("ok"):
                        raise CtlError(str(rec.get("error")))
                    kept = [
                        cluster.ctl(b, "status")["counters"].get("denials_recorded")
                        for b in ("backend-1", "backend-2", "backend-3")
                    ]
                    extra = (
                        f"recorded {rec['recorded']}, dropped {rec['dropped']}, "
                        f"pending {rec['pending']}; rows kept by the backends {kept}"
                    )
                except CtlError:
                    extra = "this build does not record refusals"
        finally:
            cluster.stop_all()
    print(f"idle:   {idle[0]:7.1f} cycles/s  p50 {idle[1]:6.2f} ms  p99 {idle[2]:6.2f} ms")
    print(
        f"flood:  {loaded[0]:7.1f} cycles/s  p50 {loaded[1]:6.2f} ms  p99 {loaded[2]:6.2f} ms"
        f"  ({refused / (args.seconds + 2.0):.0f} refusals/s from {args.flooders} processes)"
    )
    print(f"p99 ratio {loaded[2] / idle[2]:.2f}; {extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
