"""Baseline (b): a minimal single-node license server, what a non-HA server would cost.

`python -m bench.single --listen ENDPOINT --key-file FILE --db PATH --quantity N`: one
process, one ROUTER (CURVE, the client API's wire format), one `tmr.backend.store.SqliteStore`
(WAL, ``synchronous=FULL``) and no replication and no TMR server in front. Requests that
arrive together are decoded, checked against the quantity, and committed in ONE durable
transaction (group commit, like the real backends); only then are they answered. Checkout,
release and heartbeat are served (the benchmark needs no more); a retried checkout with the
same request id gets the same handle.
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from bench.common import FIRM, PRODUCT
from tmr.backend.store import SqliteStore
from tmr.keys import load_keypair
from tmr.protocol.client_api import (
    CheckoutRequest,
    ErrorReply,
    HeartbeatRequest,
    OkReply,
    ReleaseRequest,
    Reply,
    decode_request,
    encode_reply,
)
from tmr.protocol.errors import ProtocolError
from tmr.replication.acceptor import ProductWrite, Write
from tmr.replication.types import Epoch, Grant, HandleRecord, Op, Release, ReleaseReason, Version
from tmr.zmqio import recv_frames, send_frames

MAX_BATCH = 2000
EPOCH = Epoch(1, "single")


class SingleServer:
    def __init__(self, db: Path, quantity: int, lease: float) -> None:
        self.store = SqliteStore(db)
        self.quantity = quantity
        self.lease = lease
        self.key = (FIRM, PRODUCT)
        self.handles: dict[str, HandleRecord] = {}
        self.by_request: dict[tuple[str, str], str] = {}
        self.seats = 0
        self.seq = 0
        self.next_id = 0

    def batch(self, requests: list[tuple[list[bytes], bytes]]) -> list[tuple[list[bytes], Reply]]:
        """Serve one batch: decide, commit once, answer (the answers are sent by the caller)."""
        ops: list[Op] = []
        replies: list[tuple[list[bytes], Reply]] = []
        for envelope, payload in requests:
            try:
                req = decode_request(payload)
            except ProtocolError as exc:
                replies.append((envelope, ErrorReply.from_exception(exc)))
                continue
            replies.append((envelope, self._serve(req, ops)))
        if ops:
            self.seq += 1
            write = Write(products=(ProductWrite(self.key, Version(EPOCH, self.seq), tuple(ops)),))
            self.store.commit(write)  # raises (and the process stops) on a storage error
        return replies

    def _serve(self, req: Any, ops: list[Op]) -> Reply:
        if isinstance(req, CheckoutRequest):
            known = self.by_request.get((req.cid, req.rid))
            if known is not None:
                return OkReply(req.rid, self._grant(self.handles[known]))
            if (req.firm, req.product) != self.key:
                return ErrorReply(req.rid, "UNKNOWN_LICENSE", "no such license")
            if self.seats + req.seats > self.quantity:
                return ErrorReply(req.rid, "NO_LICENSE_AVAILABLE", "all seats in use")
            self.next_id += 1
            handle = f"h1-single-{self.next_id}"
            rec = HandleRecord(
                handle, req.firm, req.product, req.seats, req.cid, req.rid, time.time()
            )
            self.handles[handle] = rec
            self.by_request[(req.cid, req.rid)] = handle
            self.seats += req.seats
            ops.append(Grant(rec))
            return OkReply(req.rid, self._grant(rec))
        if isinstance(req, ReleaseRequest):
            held = self.handles.get(req.handle)
            if held is None or held.client_id != req.cid:
                return OkReply(req.rid, {"released": False})
            del self.handles[req.handle]
            self.by_request.pop((held.client_id, held.request_id), None)
            self.seats -= held.seats
            ops.append(Release(req.handle, ReleaseReason.RELEASE, time.time()))
            return OkReply(req.rid, {"released": True})
        if isinstance(req, HeartbeatRequest):
            if req.handle not in self.handles:
                return ErrorReply(req.rid, "UNKNOWN_HANDLE", "no such handle")
            return OkReply(req.rid, {"lease": self.lease})
        return ErrorReply(req.rid, "BAD_REQUEST", f"{req.op} is not served by this baseline")

    def _grant(self, rec: HandleRecord) -> dict[str, Any]:
        return {
            "handle": rec.handle,
            "firm": rec.firm,
            "product": rec.product,
            "seats": rec.seats,
            "lease": self.lease,
            "tmr_id": 7,
        }


def serve(args: argparse.Namespace) -> int:
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    keys = load_keypair(Path(args.key_file))
    server = SingleServer(Path(args.db), args.quantity, args.lease)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode())
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.MAXMSGSIZE, 256 * 1024)
    sock.bind(args.listen)
    print("ready", flush=True)
    deadline = time.monotonic() + args.seconds
    try:
        while not stopping and time.monotonic() < deadline:
            if not sock.poll(100):
                continue
            batch: list[tuple[list[bytes], bytes]] = []
            for _ in range(MAX_BATCH):
                frames = recv_frames(sock)
                if frames is None:
                    break
                batch.append((frames[:-1], frames[-1]))
            for envelope, reply in server.batch(batch):
                try:
                    send_frames(sock, [*envelope, encode_reply(reply)])
                except zmq.ZMQError:
                    pass
    finally:
        sock.close(linger=0)
        ctx.term()
        server.store.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--quantity", type=int, default=20_000)
    ap.add_argument("--lease", type=float, default=3600.0)
    ap.add_argument("--seconds", type=float, default=600.0)
    return serve(ap.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
