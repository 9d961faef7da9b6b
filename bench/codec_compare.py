"""Codec cost: the hand-validated decoders of `tmr.protocol` against msgspec Structs.

``python -m bench.codec_compare [--reps N] [--batch-ms MS]``: per message, the time to decode
(and to encode) one frame with the current code and with the msgspec schema of
`bench.codec_msgspec`, in microseconds, and their ratio. Both sides decode the same frames (made
by the current encoders); before timing, each side's output is checked to decode on the other
side to the same message, so both speak the same wire.

The machine may be shared: the two variants are timed side by side, alternating, in batches of
about ``--batch-ms`` (short, so that most run without being preempted) with the garbage
collector off; a figure is the median over ``--reps`` batches and the ratio the median of the
per-batch ratios (msgspec / current; below 1 msgspec is faster). Under load the absolute times
move between runs far more than the ratios. The run stops after about 50 s, whatever
``--reps`` says.

The ACCEPT is encoded without the current encoder's per-entry cache of encoded ops (msgspec
has none): the cost for the first of the three backends an entry goes to.

msgspec is an optional experiment, not a dependency: without it this says so and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import ModuleType

from tmr.protocol import client_api as cur
from tmr.protocol import peer_api
from tmr.replication.messages import Accept, AcceptEntry
from tmr.replication.types import Epoch, Grant, HandleRecord, Release, ReleaseReason

FIRM = 6000123
PRODUCT = 42
DEADLINE_S = 50.0
Call = Callable[[], object]


@dataclass(frozen=True)
class Case:
    """One message: its frame, and the four calls to time."""

    name: str
    frame: bytes
    cur_decode: Call
    new_decode: Call
    cur_encode: Call
    new_encode: Call


@dataclass(frozen=True)
class Timing:
    cur_us: float
    new_us: float
    ratio: float


def _accept(n_ops: int) -> Accept:
    ops: list[Grant | Release] = []
    for i in range(n_ops):
        if i % 2 == 0:
            rec = HandleRecord(
                f"h7-tmr-a-{i:032x}", FIRM, PRODUCT, 1, f"host-{i}/4711", f"r-{i}",
                1.7e9 + i, "K" * 40,
            )  # fmt: skip
            ops.append(Grant(rec))
        else:
            ops.append(Release(f"h7-tmr-a-{i - 1:032x}", ReleaseReason.RELEASE, 1.7e9 + i))
    return Accept(123456, Epoch(7, "tmr-a"), (AcceptEntry((FIRM, PRODUCT), 9001, tuple(ops)),))


def _encode_accept_cold(msg: Accept) -> bytes:
    """The current encoder without its per-entry cache of encoded ops (msgspec has none): the
    cost of the first of the three backends an entry goes to."""
    peer_api._OPS_CACHE.clear()
    return peer_api.encode_request(msg)


def build_cases(ms: ModuleType) -> list[Case]:
    """The messages measured, each checked to cross-decode between the two codecs."""
    rid, cid, handle = "c0ffee-17", "build-host-03/4711", "h7-tmr-a-" + "5f" * 16
    data = bytes(range(256))
    cases: list[Case] = []

    requests: list[tuple[str, cur.Request, object]] = [
        (
            "checkout request",
            cur.CheckoutRequest(rid, cid, FIRM, PRODUCT, 1),
            ms.CheckoutRequest(v=1, rid=rid, cid=cid, firm=FIRM, product=PRODUCT, seats=1),
        ),
        (
            "heartbeat request",
            cur.HeartbeatRequest(rid, cid, handle),
            ms.HeartbeatRequest(v=1, rid=rid, cid=cid, handle=handle),
        ),
        (
            "release request",
            cur.ReleaseRequest(rid, cid, handle),
            ms.ReleaseRequest(v=1, rid=rid, cid=cid, handle=handle),
        ),
        (
            "crypt request (256 B)",
            cur.CryptRequest(rid, cid, handle, "hmac", data),
            ms.CryptRequest(v=1, rid=rid, cid=cid, handle=handle, operation="hmac", data=data),
        ),
    ]
    for name, old_req, new_req in requests:
        frame = cur.encode_request(old_req)
        new_frame = ms.ENCODER.encode(new_req)
        if ms.decode_request(frame) != new_req or cur.decode_request(new_frame) != old_req:
            raise SystemExit(f"{name}: the two codecs disagree")
        cases.append(
            Case(
                name,
                frame,
                partial(cur.decode_request, frame),
                partial(ms.decode_request, frame),
                partial(cur.encode_request, old_req),
                partial(ms.ENCODER.encode, new_req),
            )
        )

    results: list[tuple[str, str, cur.Result, object]] = [
        (
            "checkout reply",
            "checkout",
            cur.CheckoutResult(handle, FIRM, PRODUCT, 1, 30.0, 8),
            ms.CheckoutResult(
                handle=handle, firm=FIRM, product=PRODUCT, seats=1, lease=30.0, tmr_id=8
            ),
        ),
        ("heartbeat reply", "heartbeat", cur.HeartbeatResult(30.0), ms.HeartbeatResult(30.0)),
        ("release reply", "release", cur.ReleaseResult(True), ms.ReleaseResult(True)),
        (
            "crypt reply (256 B)",
            "crypt",
            cur.CryptResult(data, "backend-2"),
            ms.CryptResult(data, "backend-2"),
        ),
    ]
    for name, op, old_res, new_res in results:
        old_reply = cur.OkReply(rid, old_res)
        new_reply = ms.Reply(v=1, rid=rid, ok=True, result=new_res)
        frame = cur.encode_reply(old_reply)
        new_frame = ms.ENCODER.encode(new_reply)
        if (
            ms.decode_reply(frame, op) != new_reply
            or cur.decode_reply(new_frame, op=op) != old_reply
        ):
            raise SystemExit(f"{name}: the two codecs disagree")
        cases.append(
            Case(
                name,
                frame,
                partial(cur.decode_reply, frame, op=op),
                partial(ms.decode_reply, frame, op),
                partial(cur.encode_reply, old_reply),
                partial(ms.ENCODER.encode, new_reply),
            )
        )

    accept = _accept(32)
    frame = peer_api.encode_request(accept)
    new_accept = ms.decode_peer_request(frame)
    if peer_api.decode_request(ms.ENCODER.encode(new_accept)) != accept:
        raise SystemExit("peer ACCEPT: the two codecs disagree")
    cases.append(
        Case(
            "peer ACCEPT, 32 ops",
            frame,
            partial(peer_api.decode_request, frame),
            partial(ms.decode_peer_request, frame),
            partial(_encode_accept_cold, accept),
            partial(ms.ENCODER.encode, new_accept),
        )
    )
    return cases


def _batch(fn: Call, n: int) -> float:
    """Seconds per call over `n` calls, the garbage collector off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n
    finally:
        if enabled:
            gc.enable()


def _calls_per_batch(fn: Call, batch_s: float) -> int:
    """Calls that take about `batch_s` (the fastest of three tries: a try the scheduler
    interrupted would make the batches too short)."""
    n = 1
    while True:
        took = min(_batch(fn, n) for _ in range(3)) * n
        if took >= batch_s / 4 or n >= 1 << 22:
            return max(1, int(n * batch_s / max(took, 1e-9)))
        n *= 4


def side_by_side(old: Call, new: Call, reps: int, batch_s: float, stop_at: float) -> Timing:
    """Medians of `reps` alternating batches of each, and the median per-batch ratio."""
    n_old = _calls_per_batch(old, batch_s)
    n_new = _calls_per_batch(new, batch_s)
    olds: list[float] = []
    news: list[float] = []
    for i in range(reps):
        if i % 2 == 0:
            olds.append(_batch(old, n_old))
            news.append(_batch(new, n_new))
        else:
            news.append(_batch(new, n_new))
            olds.append(_batch(old, n_old))
        if time.monotonic() > stop_at and i >= 2:
            break
    ratios = [b / a for a, b in zip(olds, news, strict=True)]
    return Timing(
        statistics.median(olds) * 1e6, statistics.median(news) * 1e6, statistics.median(ratios)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.codec_compare", description=__doc__)
    parser.add_argument("--reps", type=int, default=101, help="batches per figure (default 101)")
    parser.add_argument("--batch-ms", type=float, default=1.0, help="one batch (default 1 ms)")
    args = parser.parse_args(argv)
    try:
        from bench import codec_msgspec
    except ImportError as exc:
        if exc.name != "msgspec":
            raise
        print("msgspec is not installed: this optional experiment measures nothing.")
        print("To run it: .venv/bin/pip install msgspec (not a dependency of the project).")
        return 0

    stop_at = time.monotonic() + DEADLINE_S
    cases = build_cases(codec_msgspec)
    version = importlib.metadata.version("msgspec")
    print(
        f"msgspec {version}, Python {sys.version.split()[0]}; medians of up to "
        f"{args.reps} alternating batches of ~{args.batch_ms:g} ms; ratio = msgspec/current"
    )
    top = f"{'':<30}{'decode, us per message':^28}{'encode, us per message':^28}"
    head = (
        f"{'message':<24}{'bytes':>6}{'current':>12}{'msgspec':>9}{'ratio':>7}"
        f"{'current':>12}{'msgspec':>9}{'ratio':>7}"
    )
    print(top.rstrip())
    print(head)
    print("-" * len(head))
    batch_s = args.batch_ms / 1000
    for case in cases:
        dec = side_by_side(case.cur_decode, case.new_decode, args.reps, batch_s, stop_at)
        enc = side_by_side(case.cur_encode, case.new_encode, args.reps, batch_s, stop_at)
        print(
            f"{case.name:<24}{len(case.frame):>6}{dec.cur_us:>12.2f}{dec.new_us:>9.2f}"
            f"{dec.ratio:>7.2f}{enc.cur_us:>12.2f}{enc.new_us:>9.2f}{enc.ratio:>7.2f}"
        )
    if time.monotonic() > stop_at:
        print(f"(stopped early at the {DEADLINE_S:g} s limit: fewer batches per figure)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
