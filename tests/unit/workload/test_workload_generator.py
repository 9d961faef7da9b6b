"""The load generator against the SDK tests' fake TMR server (real sockets, loopback)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_tmr_server import DROP, FakeServer

from tmr.cli.main import main
from tmr.client import Client, NodeKeys
from tmr.local.cluster import wait_for
from tmr.protocol.client_api import CheckoutRequest, Request
from tmr.workload.checker import CheckOptions, check
from tmr.workload.generator import RunResult, WorkloadConfig, run_workload
from tmr.workload.history import HandlesSnapshot, ServerHandle, read_history

MakeServer = Callable[..., FakeServer]


def _cfg(server: FakeServer, keys: NodeKeys, **kw: object) -> WorkloadConfig:
    base: dict[str, object] = {
        "clients": 4,
        "duration": 1.0,
        "seed": 5,
        "seats_max": 2,
        "hold_max": 0.2,
        "think_max": 0.05,
        "timeout": 2.0,
        "attempt_timeout": 0.3,
        "progress_interval": 0.4,
    }
    base.update(kw)
    return WorkloadConfig([server.endpoint], keys.public, **base)  # type: ignore[arg-type]


def _run(cfg: WorkloadConfig, out: Path, lines: list[str] | None = None) -> RunResult:
    said = lines if lines is not None else []
    return run_workload(cfg, out, say=said.append)


def test_run_records_every_operation_and_checks_clean(
    make_server: MakeServer, service_keys: NodeKeys, tmp_path: Path
) -> None:
    server = make_server(quantity=3)
    lines: list[str] = []
    t0 = time.monotonic()
    result = _run(_cfg(server, service_keys), tmp_path / "h.jsonl", lines)
    assert time.monotonic() - t0 < 4.0
    assert result.exit_code == 0 and result.stuck == 0
    assert "seed 5 (repeat with --seed 5)" in lines[0]
    assert any(line.startswith("[") for line in lines[1:-1])  # progress lines
    assert "done:" in lines[-1]

    hist = read_history(tmp_path / "h.jsonl")
    assert hist.end is not None and hist.end.ops == len(hist.ops) and not hist.warnings
    h = hist.header
    assert (h.firm, h.product, h.clients, h.seed) == (6000123, 42, 4, 5)  # from the listing
    assert h.license is not None and h.license["quantity"] == 3
    ok = [r for r in hist.ops if r.op == "checkout" and r.ok]
    assert ok, "no checkout succeeded"
    assert all(r.handle and r.rid and r.lease == 30.0 for r in ok)
    assert all(r.lease_end_mono is not None and r.lease_end_mono >= r.start_mono + 30 for r in ok)
    releases = [r for r in hist.ops if r.op == "release"]
    assert sorted(r.handle or "" for r in releases) == sorted(r.handle or "" for r in ok)
    assert all(r.ok for r in releases)
    assert len([r for r in hist.ops if r.op == "heartbeat" and r.ok]) == len(ok)
    assert server.in_use == 0  # everything given back
    # Operations of one client never overlap and are numbered in order.
    for cid in {r.client for r in hist.ops}:
        mine = [r for r in hist.ops if r.client == cid]
        assert [r.n for r in mine] == list(range(1, len(mine) + 1))
        assert all(a.end_mono <= b.start_mono for a, b in itertools.pairwise(mine))

    report = check(hist, CheckOptions(lq=3))
    assert report.ok, report.summary()
    assert 1 <= report.max_held <= 3


def test_seeded_choices(make_server: MakeServer, service_keys: NodeKeys, tmp_path: Path) -> None:
    server = make_server(quantity=100)
    cfg = _cfg(server, service_keys, seed=1234, seats_max=9, duration=0.3, client_prefix="s")
    _run(cfg, tmp_path / "h.jsonl")
    hist = read_history(tmp_path / "h.jsonl")
    for i in range(cfg.clients):
        first = next(r for r in hist.ops if r.client == f"s-{i:03d}")
        assert first.seats == random.Random(f"1234:{i}").randint(1, 9)


def test_abandon_at_end_leaves_the_handles_for_the_table(
    make_server: MakeServer, service_keys: NodeKeys, tmp_path: Path
) -> None:
    server = make_server(quantity=3)
    _run(_cfg(server, service_keys, at_end="abandon", hold_max=2.0), tmp_path / "h.jsonl")
    hist = read_history(tmp_path / "h.jsonl")
    abandoned = {r.handle for r in hist.ops if r.op == "abandon"}
    assert abandoned and abandoned == set(server.handles)
    now = time.time()
    table = HandlesSnapshot(
        [ServerHandle(k, s.cid, s.seats) for k, s in server.handles.items()], now, now
    )
    report = check(hist, CheckOptions(lq=3, handles=table, clock_skew=0.05))
    assert report.ok, report.summary()
    assert report.handles is not None and report.handles["checked_present"] == len(abandoned)
    # A table that lost one of them is a lost acknowledged grant.
    table.handles.pop()
    report = check(hist, CheckOptions(lq=3, handles=table, clock_skew=0.05))
    assert [v.invariant for v in report.violations] == ["I7"]


def test_a_handle_the_server_forgets_is_recorded_and_caught(
    make_server: MakeServer, service_keys: NodeKeys, tmp_path: Path
) -> None:
    # Lease 3 s: the SDK heartbeats every second; the loss shows at the next heartbeat,
    # background or explicit (at the end of the hold, cut by the end of the run).
    server = make_server(quantity=3, lease=3.0)
    cfg = _cfg(server, service_keys, clients=1, hold_max=3.0, duration=1.5, seed=3)
    done: list[RunResult] = []
    t = threading.Thread(target=lambda: done.append(_run(cfg, tmp_path / "h.jsonl")))
    t.start()
    try:
        server.wait_for(lambda: bool(server.handles), timeout=5)
        with server._cond:
            victim = next(iter(server.handles))
        server.forget(victim)
    finally:
        t.join(10)
    assert done and done[0].exit_code == 0
    hist = read_history(tmp_path / "h.jsonl")
    evidence = [
        r
        for r in hist.ops
        if r.handle == victim and (r.op == "lost" or r.outcome == "UNKNOWN_HANDLE")
    ]
    assert evidence, [r.op for r in hist.ops]
    report = check(hist, CheckOptions(lq=3))
    assert [v.invariant for v in report.violations] == ["I7"], report.summary()
    assert report.violations[0].details["handle"] == victim


def test_unanswered_checkouts_are_unknown(
    make_server: MakeServer, service_keys: NodeKeys, tmp_path: Path
) -> None:
    def drop_checkouts(req: Request, server: FakeServer) -> object:
        return DROP if isinstance(req, CheckoutRequest) else None

    server = make_server(hook=drop_checkouts)
    cfg = _cfg(server, service_keys, clients=2, duration=0.5, timeout=0.4)
    result = _run(cfg, tmp_path / "h.jsonl")
    assert result.exit_code == 0
    hist = read_history(tmp_path / "h.jsonl")
    assert hist.ops and {(r.op, r.outcome) for r in hist.ops} == {("checkout", "unknown")}
    assert all(r.message and "TIMEOUT" not in r.outcome for r in hist.ops)
    assert check(hist, CheckOptions(lq=3)).ok


def test_run_cli(
    make_server: MakeServer,
    service_keys: NodeKeys,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = make_server(quantity=2)
    out = tmp_path / "h.jsonl"
    # `=`: a Z85 key may start with "-".
    args = ["workload", "run", "-e", server.endpoint, f"--server-key={service_keys.public}"]
    args += ["--clients", "2", "--duration", "0.4", "--seed", "9", "--hold-max", "0.1"]
    assert main([*args, "--out", str(out), "--progress", "0.2"]) == 0
    assert "seed 9" in capsys.readouterr().out
    assert main(["workload", "check", str(out), "--lq", "2", "-q"]) == 0
    assert capsys.readouterr().out.startswith("result: OK")
    # Bad arguments are usage errors, not crashes.
    assert main([*args, "--clients", "0", "--out", str(out)]) == 1
    assert "--clients" in capsys.readouterr().err
    assert main(["workload", "handles", "--socket", str(tmp_path / "none.sock")]) == 1
    assert "no active TMR server" in capsys.readouterr().err


def test_sdk_hooks_the_generator_relies_on(make_server: MakeServer, service_keys: NodeKeys) -> None:
    """Handle.request_id, .last_renewal_sent (first send of the last renewal) and .abandon()."""
    server = make_server(lease=0.3)  # background heartbeats every 0.1 s
    client = Client([server.endpoint], service_keys.public, timeout=2.0)
    try:
        before = time.monotonic()
        handle = client.checkout(6000123, 42)
        after = time.monotonic()
        assert handle.request_id == server.seen("checkout")[-1].rid
        assert before <= handle.last_renewal_sent <= handle.last_renewal <= after
        wait_for("a background heartbeat", lambda: handle.last_renewal_sent > after, 5)
        assert handle.last_renewal_sent <= handle.last_renewal
        handle.abandon()
        beats = server.handles[handle.id].heartbeats
        # No more heartbeats after abandon (one may have been in flight).
        time_limit = time.monotonic() + 0.5
        while time.monotonic() < time_limit:
            assert server.handles[handle.id].heartbeats <= beats + 1
            time.sleep(0.05)
    finally:
        client.close()
    assert handle.id in server.handles  # close() did not release an abandoned handle
    assert handle.held and not handle.released
