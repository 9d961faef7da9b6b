"""Baseline (c): a 3-member etcd cluster on 127.0.0.1 used as a seat semaphore with leases.

`EtcdCluster` starts three members of Debian's ``etcd`` (package ``etcd-server``) with data
directories under a temporary directory, on free loopback ports, and stops them.

The load worker (`python -m bench.etcd`, a JSON spec on standard input like
`bench.loadgen`) runs many clients in one asyncio loop, each with its own keep-alive HTTP/1.1
connection to one member's v3 JSON gateway (members taken in turn). Each client grants
itself one lease before the measurement. The semaphore has ``quantity`` slot keys
``sem/<firm>/<product>/<slot>``: a checkout is ONE transaction ``if create_revision(slot)
== 0 then put(slot, lease)`` on a random slot (a taken slot: another random slot), a release
is ONE ``deleterange`` of the slot. That is the cheapest correct etcd semaphore (no counter
key that every client contends on, one raft commit per operation), so the comparison is
against etcd at its best. A sample is one checkout + release cycle, as for the TMR server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import Json

MEMBERS = 3
REQUEST_TIMEOUT = 5.0
MAX_SLOT_TRIES = 50


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def etcd_binary() -> str | None:
    return shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)


def ensure_etcd() -> str:
    """The etcd binary; installs Debian's etcd-server with apt-get when it is missing."""
    found = etcd_binary()
    if found:
        return found
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    print("==> etcd not found: apt-get install etcd-server", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "etcd-server"], check=True, env=env, timeout=600
    )
    found = etcd_binary()
    if not found:
        raise RuntimeError("etcd-server was installed but no etcd binary was found")
    return found


class EtcdCluster:
    """Three etcd members on 127.0.0.1 (started by `start`, stopped by `stop`)."""

    def __init__(self, root: Path, binary: str) -> None:
        self.root = root
        self.binary = binary
        self.client_urls: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, timeout: float = 30.0) -> None:
        peers = [_free_port() for _ in range(MEMBERS)]
        clients = [_free_port() for _ in range(MEMBERS)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{peers[i]}" for i in range(MEMBERS))
        self.client_urls = [f"http://127.0.0.1:{p}" for p in clients]
        for i in range(MEMBERS):
            data = self.root / f"m{i}"
            data.mkdir(parents=True, exist_ok=True)
            log = open(self.root / f"m{i}.log", "wb")  # noqa: SIM115 - handed to the child
            try:
                proc = subprocess.Popen(
                    [
                        self.binary,
                        "--name",
                        f"m{i}",
                        "--data-dir",
                        str(data),
                        "--listen-client-urls",
                        self.client_urls[i],
                        "--advertise-client-urls",
                        self.client_urls[i],
                        "--listen-peer-urls",
                        f"http://127.0.0.1:{peers[i]}",
                        "--initial-advertise-peer-urls",
                        f"http://127.0.0.1:{peers[i]}",
                        "--initial-cluster",
                        initial,
                        "--initial-cluster-token",
                        "tmr-bench",
                        "--initial-cluster-state",
                        "new",
                        "--logger",
                        "zap",
                        "--log-level",
                        "warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            finally:
                log.close()
            self.procs.append(proc)
        deadline = time.monotonic() + timeout
        while True:
            if all(self._ready(url) for url in self.client_urls):
                return
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"etcd member exited at start (logs in {self.root})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become ready within {timeout:g} s")
            time.sleep(0.2)

    @staticmethod
    def _ready(url: str) -> bool:
        try:
            reply = post(url, "/v3/kv/put", {"key": _b64("bench/ready"), "value": _b64("1")})
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return "header" in reply

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def post(url: str, path: str, body: Json, timeout: float = 2.0) -> Json:
    """One request to the v3 JSON gateway (used for set-up, not for the measurement)."""
    req = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        out: Json = json.loads(resp.read())
    return out


# ---------------------------------------------------------------------- the load worker


class _Conn:
    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host = host
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def call(self, path: str, body: Json) -> Json:
        assert self.reader is not None and self.writer is not None
        data = json.dumps(body, separators=(",", ":")).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = -1
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value.strip())
            elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            payload = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                payload += chunk[:-2]
        else:
            payload = await self.reader.readexactly(max(0, length))
        if status != b"200":
            raise RuntimeError(f"etcd answered HTTP {status.decode()}: {payload[:200]!r}")
        out: Json = json.loads(payload)
        return out

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class EtcdWorker:
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
        self.rng = random.Random()

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def client(self, index: int) -> None:
        first = int(self.spec.get("worker", 0)) * 1000 + index
        conn = _Conn(self.urls[first % len(self.urls)])
        try:
            await asyncio.wait_for(conn.open(), REQUEST_TIMEOUT)
            lease = await asyncio.wait_for(
                conn.call("/v3/lease/grant", {"TTL": 3600}), REQUEST_TIMEOUT
            )
            lease_id = lease["ID"]
            while True:
                now = time.monotonic()
                if now >= self.stop_at or now >= self.hard_deadline:
                    return
                start = now
                slot = await self._checkout(conn, lease_id)
                if slot is None:
                    continue
                reply = await asyncio.wait_for(
                    conn.call("/v3/kv/deleterange", {"key": slot}), REQUEST_TIMEOUT
                )
                if reply.get("deleted") != "1":
                    self.lost += 1
                end = time.monotonic()
                if self.start_at <= end <= self.stop_at:
                    self.cycles += 1
                    self.lat_ms.append(round((end - start) * 1000.0, 3))
        except (TimeoutError, OSError, RuntimeError, asyncio.IncompleteReadError) as exc:
            self._error(type(exc).__name__)
            self.unfinished += 1
        finally:
            conn.close()

    async def _checkout(self, conn: _Conn, lease_id: str) -> str | None:
        for _ in range(MAX_SLOT_TRIES):
            slot = _b64(f"{self.prefix}{self.rng.randrange(self.quantity):06d}")
            body = {
                "compare": [{"key": slot, "target": "CREATE", "create_revision": "0"}],
                "success": [{"request_put": {"key": slot, "value": "MQ==", "lease": lease_id}}],
            }
            reply = await asyncio.wait_for(conn.call("/v3/kv/txn", body), REQUEST_TIMEOUT)
            if reply.get("succeeded"):
                return slot
            self.retries += 1
        self._error("NO_FREE_SLOT")
        return None

    async def run(self) -> Json:
        await asyncio.gather(*(self.client(i) for i in range(int(self.spec["clients"]))))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "worker": self.spec.get("worker", 0),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
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
    result = asyncio.run(EtcdWorker(spec).run())
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
