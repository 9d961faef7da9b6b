"""Baseline (c) over etcd's native gRPC API: the load worker of `bench.etcd` with `aetcd`.

`python -m bench.etcd_grpc` takes the same JSON spec as `python -m bench.etcd` and runs the
same semaphore (one lease per client; a checkout is ONE transaction ``if
create_revision(slot) == 0 then put(slot, lease)`` on a random slot, a release ONE delete),
but through `aetcd` (https://github.com/martyanov/aetcd, a maintained asyncio fork of
python-etcd3: gRPC over HTTP/2 with protobuf, as etcd's own Go clients talk). The clients of
a worker share one gRPC channel per member (HTTP/2 multiplexes their calls), members taken
in turn, as the JSON worker spreads its connections. It needs ``aetcd`` (the ``bench`` extra
of pyproject.toml) in the interpreter that runs it: ``TMR_BENCH_ETCD_PYTHON`` names one (e.g.
a virtualenv of its own), else the benchmark's. Plaintext, like the JSON gateway worker
(docs/performance.md says what that means for the comparison with CURVE).
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time
from typing import Any

import aetcd  # type: ignore[import-not-found, unused-ignore]

from bench.common import Json

REQUEST_TIMEOUT = 5.0
MAX_SLOT_TRIES = 50


class GrpcWorker:
    def __init__(self, spec: Json) -> None:
        self.spec = spec
        self.urls: list[str] = list(spec["endpoints"])
        self.quantity = int(spec["quantity"])
        self.prefix = f"sem/{spec['firm']}/{spec['product']}/"
        self.start_at = float(spec["start_at"])
        self.stop_at = self.start_at + float(spec["duration"])
        self.hard_deadline = self.stop_at + float(spec.get("drain", 15.0))
        self.cycles = 0
        self.lat_ms: list[float] = []
        self.errors: dict[str, int] = {}
        self.retries = 0
        self.lost = 0
        self.unfinished = 0
        self.window_cpu: list[float] = []
        self.rng = random.Random()
        self.channels: dict[str, Any] = {}

    async def _channel(self, url: str) -> Any:
        if url not in self.channels:
            host, port = url.removeprefix("http://").split(":")
            client = aetcd.Client(host=host, port=int(port), timeout=REQUEST_TIMEOUT)
            self.channels[url] = client
            await asyncio.wait_for(client.connect(), REQUEST_TIMEOUT)
        return self.channels[url]

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def client(self, index: int) -> None:
        first = int(self.spec.get("worker", 0)) * 1000 + index
        try:
            client = await self._channel(self.urls[first % len(self.urls)])
            lease = await asyncio.wait_for(client.lease(3600), REQUEST_TIMEOUT)
            while True:
                now = time.monotonic()
                if now >= self.stop_at or now >= self.hard_deadline:
                    return
                start = now
                slot = await self._checkout(client, lease.id)
                if slot is None:
                    continue
                deleted = await asyncio.wait_for(client.delete(slot), REQUEST_TIMEOUT)
                if deleted is None:
                    self.lost += 1
                end = time.monotonic()
                if self.start_at <= end <= self.stop_at:
                    self.cycles += 1
                    self.lat_ms.append(round((end - start) * 1000.0, 3))
        except (TimeoutError, OSError, aetcd.ClientError) as exc:
            self._error(type(exc).__name__)
            self.unfinished += 1

    async def _checkout(self, client: Any, lease_id: int) -> bytes | None:
        tx = client.transactions
        for _ in range(MAX_SLOT_TRIES):
            slot = f"{self.prefix}{self.rng.randrange(self.quantity):06d}".encode()
            ok, _ = await asyncio.wait_for(
                client.transaction(
                    compare=[tx.create(slot) == 0],
                    success=[tx.put(slot, b"1", lease=lease_id)],
                    failure=[],
                ),
                REQUEST_TIMEOUT,
            )
            if ok:
                return slot
            self.retries += 1
        self._error("NO_FREE_SLOT")
        return None

    async def _mark_window(self) -> None:
        for at in (self.start_at, self.stop_at):
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            self.window_cpu.append(time.process_time())

    async def run(self) -> Json:
        marks = asyncio.create_task(self._mark_window())
        await asyncio.gather(*(self.client(i) for i in range(int(self.spec["clients"]))))
        await marks
        for client in self.channels.values():
            await client.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "worker": self.spec.get("worker", 0),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "window_cpu_s": round(self.window_cpu[1] - self.window_cpu[0], 4),
            "clients": int(self.spec["clients"]),
            "cycles": self.cycles,
            "lat_ms": self.lat_ms,
            "errors": self.errors,
            "retries": self.retries,
            "lost": self.lost,
            "unfinished": self.unfinished,
        }


def main() -> int:
    spec: dict[str, Any] = json.loads(sys.stdin.readline())
    result = asyncio.run(GrpcWorker(spec).run())
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
