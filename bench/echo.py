"""Baseline (a): a raw pyzmq ROUTER with CURVE that answers every request at once.

`python -m bench.echo --listen ENDPOINT --key-file FILE --seconds S`: no decoding, no state,
no disk. A request holding ``checkout`` gets a canned checkout reply, anything else a canned
release reply, both real replies of the client API with the sizes the TMR server sends, so
the round trips carry the same bytes as through the TMR server. Prints ``ready`` once bound;
exits after ``--seconds`` (or on SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from types import FrameType

import zmq

from bench.common import FIRM, PRODUCT
from tmr.keys import load_keypair
from tmr.protocol.client_api import OkReply, encode_reply
from tmr.zmqio import recv_frames, send_frames

MAX_DRAIN = 2000

# Same sizes as the TMR server's replies (handle ids look like "h3-tmr-a-123456").
CHECKOUT_REPLY = encode_reply(
    OkReply(
        "t-abcdef-w0-c0-100001",
        {
            "handle": "h1-tmr-a-100001",
            "firm": FIRM,
            "product": PRODUCT,
            "seats": 1,
            "lease": 3600.0,
            "tmr_id": 7,
        },
    )
)
RELEASE_REPLY = encode_reply(OkReply("t-abcdef-w0-c0-100002", {"released": True}))


def serve(listen: str, public: str, secret: str, seconds: float) -> int:
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode())
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.bind(listen)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    try:
        while not stopping and time.monotonic() < deadline:
            if not sock.poll(100):
                continue
            for _ in range(MAX_DRAIN):
                frames = recv_frames(sock)
                if frames is None:
                    break
                reply = CHECKOUT_REPLY if b"checkout" in frames[-1] else RELEASE_REPLY
                try:
                    send_frames(sock, [*frames[:-1], reply])
                except zmq.ZMQError:
                    pass
    finally:
        sock.close(linger=0)
        ctx.term()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--seconds", type=float, default=600.0)
    args = ap.parse_args()
    keys = load_keypair(Path(args.key_file))
    return serve(args.listen, keys.public, keys.secret, args.seconds)


if __name__ == "__main__":
    raise SystemExit(main())
