"""The benchmark's report (bench/run.py): targets with met true / false / not measured, the
table, the failover-on-the-VIP file read in either shape, and the load generator's file
descriptor budget. Synthetic results only: nothing is measured here."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from bench import run
from bench.common import LoadResult
from bench.loadgen import CLIENTS_PER_PROCESS_MAX, clients_per_process

Json = dict[str, Any]


def _level(rate: float, ratio: float | None = None) -> Json:
    out: Json = {"rate_per_s": rate, "p50_ms": 1.0, "p99_ms": 5.0}
    if ratio is not None:
        out["tmr_ratio"] = ratio
    return out


def _size(rate: float, per_handle: float, cost: float, promote: float) -> Json:
    return {
        "rate_per_s": rate,
        "p99_ms": 20.0,
        "heartbeat_clients": 10_000,
        "server_rss_mib": 100.0,
        "server_bytes_per_handle": per_handle,
        "backend_rss_mib": 50.0,
        "idle": {"server_cpu_pct": cost, "backends_cpu_pct": 0.0, "heartbeat_cost_pct": cost},
        "takeover": {"promote_s": promote, "kill_to_first_checkout_s": promote + 0.8},
    }


def results(good: bool) -> Json:
    """A full run whose every target is met (good) or missed."""
    k = 1.0 if good else 0.1
    return {
        "machine": {"nproc": 2, "cpu_model": "x", "memory_gib": 4, "disk": {}},
        "tmr": {
            "1": _level(700 * k),
            "10": _level(2000 * k),
            "100": {**_level(4000 * k), "cpu_us_per_cycle": {"tmr-a": 120.0}},
        },
        "single": {str(c): _level(5000, 0.8 if good else 0.4) for c in (1, 10, 100)},
        "etcd": {str(c): _level(1000, 2.0 if good else 0.5) for c in (1, 10, 100)},
        "failover": {"gap_s": 1.2 if good else 2.0, "lost": 0, "takeover_s": 0.1},
        "backend_kill": {"gap_s": 0.05, "errors": {} if good else {"TIMEOUT": 1}},
        "failover_vip": {
            "p50_s": 0.8 if good else 1.2,
            "max_s": 1.2 if good else 1.6,
            "kills": 10,
            "lost": 0,
            "duplicates": 0,
            "soak_s": 600.0,
            "false_failovers": 0 if good else 1,
        },
        "growth": {
            "heartbeat_period_s": 10.0,
            "sizes": {
                "0": _size(4000, math.nan, 0.0, 0.02),
                "100000": _size(
                    3800 if good else 2000,
                    900 if good else 4000,
                    5.0 if good else 20.0,
                    0.5 if good else 5.0,
                ),
            },
        },
        "products": {"products": 1000, "rate_per_s": 3900 if good else 50, "idle": {}},
    }


@pytest.mark.parametrize("good", [True, False])
def test_every_target_is_met_or_missed_on_a_full_run(good: bool) -> None:
    found = run.targets(results(good))
    assert {t.issue for t in found} == {6, 17}
    if good:
        assert all(t.met is True for t in found), [t for t in found if t.met is not True]
    else:
        assert all(t.met is False for t in found if t.issue == 17), found


def test_issue_17_targets_are_all_listed() -> None:
    names = [t.name for t in run.targets(results(True)) if t.issue == 17]
    assert names == [
        ">= 0.7x baseline (b) at 100 clients (median of paired ratios)",
        ">= 600 cycles/s at 1 client",
        "VIP failover: kill -> first checkout p50 < 1.0 s",
        "VIP failover: max < 1.5 s, no lost/duplicate seat",
        "no false failover in 10 min at full load",
        "100,000 held handles: >= 0.9x cycles/s of empty",
        "takeover with 100,000 held handles < 1 s",
        "server RSS <= 1 KiB per held handle (100,000)",
        "10,000 idle heartbeating clients < 10 % of a core",
        "1,000 products: >= 0.9x cycles/s of one",
    ]


def test_what_was_not_measured_is_none_not_a_miss() -> None:
    r = results(True)
    for key in ("etcd", "failover_vip", "products"):
        del r[key]
    del r["growth"]["sizes"]["100000"]  # --growth-max 10000
    r["growth"]["sizes"]["10000"] = _size(3900, 800, 1.0, 0.1)
    found = {t.name: t for t in run.targets(r)}
    unmeasured = {n for n, t in found.items() if t.met is None}
    assert unmeasured == {
        "faster than baseline (c) etcd",
        "VIP failover: kill -> first checkout p50 < 1.0 s",
        "VIP failover: max < 1.5 s, no lost/duplicate seat",
        "no false failover in 10 min at full load",
        "100,000 held handles: >= 0.9x cycles/s of empty",
        "takeover with 100,000 held handles < 1 s",
        "server RSS <= 1 KiB per held handle (100,000)",
        "10,000 idle heartbeating clients < 10 % of a core",
        "1,000 products: >= 0.9x cycles/s of one",
    }
    assert "largest size 10,000" in found["takeover with 100,000 held handles < 1 s"].value
    assert all(t.met is True for t in found.values() if t.met is not None)


def test_an_empty_result_has_every_target_unmeasured() -> None:
    assert all(t.met is None for t in run.targets({}))


def test_a_vip_failover_with_a_lost_seat_misses_even_when_fast() -> None:
    r = results(True)
    r["failover_vip"]["lost"] = 1
    found = {t.name: t for t in run.targets(r)}
    assert found["VIP failover: max < 1.5 s, no lost/duplicate seat"].met is False
    assert found["VIP failover: kill -> first checkout p50 < 1.0 s"].met is True


def test_a_soak_shorter_than_ten_minutes_does_not_meet_the_target() -> None:
    r = results(True)
    r["failover_vip"]["soak_s"] = 300.0
    found = {t.name: t for t in run.targets(r)}
    assert found["no false failover in 10 min at full load"].met is False


@pytest.mark.parametrize("good", [True, False])
def test_the_table_shows_every_target_with_its_mark(good: bool) -> None:
    r = results(good)
    text = run.table(r)
    for t in run.targets(r):
        assert t.name in text
    assert ("[MISS]" in text) is not good
    assert "[MET ]" in text
    assert "100,000" in text and "products" in text  # the growth rows


def test_the_table_marks_the_unmeasured_and_survives_missing_sections() -> None:
    text = run.table({"machine": {}})
    assert "[n/a ]" in text and "[MISS]" not in text and "[MET ]" not in text


def test_the_vip_file_is_read_in_the_lab_script_s_shape() -> None:
    doc = {
        "kills": [{"n": 1}, {"n": 2}],
        "summary": {"first_checkout": {"p50": 0.7, "max": 1.1, "n": 2}},
        "checker": {"ok": True, "counts": {"lost": 0, "duplicates": 0}},
        "soak": {"seconds": 601.2, "vrrp_transition_count": 0, "checker_ok": True},
    }
    vip = run.vip_summary(doc)
    assert vip == {
        "p50_s": 0.7,
        "max_s": 1.1,
        "kills": 2,
        "lost": 0,
        "duplicates": 0,
        "checker_ok": True,
        "soak_s": 601.2,
        "false_failovers": 0,
        "soak_checker_ok": True,
    }
    found = {t.name: t.met for t in run.targets({"failover_vip": vip})}
    assert found["VIP failover: kill -> first checkout p50 < 1.0 s"] is True
    assert found["no false failover in 10 min at full load"] is True


def test_the_vip_file_in_flat_keys_and_a_failed_checker() -> None:
    vip = run.vip_summary({"p50_s": 0.9, "max_s": 1.4, "kills": 10, "checker": {"ok": False}})
    assert vip["kills"] == 10 and vip["checker_ok"] is False
    found = {t.name: t.met for t in run.targets({"failover_vip": vip})}
    assert found["VIP failover: max < 1.5 s, no lost/duplicate seat"] is False
    assert found["no false failover in 10 min at full load"] is None  # no soak in the file


def test_the_written_json_is_standard_json() -> None:
    r = results(True)
    out = json.dumps(run._finite(r), allow_nan=False)
    assert json.loads(out)["growth"]["sizes"]["0"]["server_bytes_per_handle"] is None


@pytest.mark.parametrize(
    ("nofile", "per"),
    [
        (1024, 320),
        (10_000, 3_312),
        (20_000, 6_645),  # this machine: 10,000 clients in 2 processes of 5,000
        (1 << 20, CLIENTS_PER_PROCESS_MAX),
        (70, 2),
        (10, 1),
    ],
)
def test_a_worker_gets_as_many_clients_as_its_descriptors_allow(nofile: int, per: int) -> None:
    assert clients_per_process(nofile) == min(per, CLIENTS_PER_PROCESS_MAX)


def test_a_growth_section_that_failed_is_reported_not_missed() -> None:
    r = results(True)
    r["growth"] = {"sizes": {"0": _size(4000, math.nan, 0.0, 0.02)}, "error": "RuntimeError: x"}
    r["products"] = {"error": "ClusterError: did not serve"}
    found = {t.name: t for t in run.targets(r)}
    takeover = found["takeover with 100,000 held handles < 1 s"]
    assert takeover.met is None and "failed: RuntimeError: x" in takeover.value
    products = found["1,000 products: >= 0.9x cycles/s of one"]
    assert products.met is None and "ClusterError" in products.value
    text = run.table(r)
    assert "cost growth failed: RuntimeError: x" in text
    assert "1000 products: ClusterError: did not serve" in text


def test_a_takeover_that_did_not_finish_is_a_miss_that_says_so() -> None:
    r = results(True)
    tk = r["growth"]["sizes"]["100000"]["takeover"]
    tk.update(promote_s=None, kill_to_first_checkout_s=None, promote_error="tmr-a did not ...")
    found = {t.name: t for t in run.targets(r)}
    takeover = found["takeover with 100,000 held handles < 1 s"]
    assert takeover.met is False and takeover.value == "no takeover: tmr-a did not ..."


def _worker(**over: Any) -> Any:
    from bench.loadgen import Worker

    spec: Json = {
        "mode": "heartbeat",
        "endpoints": ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"],
        "server_key": "x" * 40,
        "firm": 1,
        "product": 2,
        "start_at": 0.0,
        "duration": 0.0,
        "clients": 3,
        **over,
    }
    return Worker(spec)


def test_a_simulated_client_keeps_its_key_pair_when_it_fails_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server knows a handle's owner by the client's key, as with the SDK's Client: a
    fail-over opens a new socket with the same key pair."""
    import zmq

    from bench import common, loadgen

    made: list[tuple[str, str]] = []
    real = common.curve_keypair  # what `loadgen` imported and calls by that name

    def keypair() -> tuple[str, str]:
        made.append(real())
        return made[-1]

    monkeypatch.setattr(loadgen, "curve_keypair", keypair)
    w = _worker(server_key=zmq.curve_keypair()[0].decode())
    try:
        assert len(made) == 3  # one per client
        c = w.clients[0]
        w._connect(c)
        old = c.sock
        w._connect(c)  # what a fail-over to the next endpoint does
        assert c.sock is not old and len(made) == 3 and c.keys == made[0]
    finally:
        for sock in list(w.by_sock):
            sock.close(linger=0)
        w.ctx.term()


def test_a_heartbeat_worker_s_context_allows_thousands_of_sockets() -> None:
    import zmq

    w = _worker(clients=2_500)
    try:
        assert w.ctx.get(zmq.MAX_SOCKETS) >= 2 * 2_500
    finally:
        w.ctx.term()


def test_vip_only_reads_the_lab_figures_into_the_results_and_measures_nothing(
    tmp_path: Any,
) -> None:
    """`--vip-only`: the stored results get the VIP figures and their targets; nothing else
    of them changes, and a missing file leaves the VIP targets not measured."""
    out = tmp_path / "latest.json"
    out.write_text(json.dumps({"tmr": {"1": {"rate_per_s": 100.0}}}))
    assert run.main(["--vip-only", "--out", str(out)]) == 0
    before = json.loads(out.read_text())
    vip = [t for t in before["targets"] if "VIP" in t["target"]]
    assert vip and all(t["met"] is None for t in vip)
    (tmp_path / "failover-vip.json").write_text(
        json.dumps(
            {
                "kills": [{"first_checkout": 0.4}, {"first_checkout": 2.0}],
                "summary": {"first_checkout": {"n": 2, "p50": 0.4, "max": 2.0}},
                "checker": {"ok": True},
                "soak": {"seconds": 600, "vrrp_transition_count": 0, "checker_ok": True},
            }
        )
    )
    assert run.main(["--vip-only", "--out", str(out)]) == 0
    after = json.loads(out.read_text())
    assert after["tmr"] == before["tmr"]
    met = {t["target"]: t["met"] for t in after["targets"] if t["issue"] == 17}
    assert met["VIP failover: kill -> first checkout p50 < 1.0 s"] is True
    assert met["VIP failover: max < 1.5 s, no lost/duplicate seat"] is False
    assert met["no false failover in 10 min at full load"] is True


def test_a_heartbeat_worker_polls_only_the_clients_waiting_for_a_reply() -> None:
    """A poll costs every socket it watches: a heartbeat worker's thousands of clients wait
    for their next heartbeat nearly all the time and must not be polled meanwhile."""
    import time

    import zmq

    w = _worker(server_key=zmq.curve_keypair()[0].decode(), firm=6_000_001, ramp=5.0, period=10.0)
    try:
        for c in w.clients:
            w._connect(c)
        now = time.monotonic()
        for c in w.clients:
            w._begin(c, now)  # the checkouts spread over the ramp: none sent yet
        assert w.watched == set() and w.poller.sockets == []
        c = w.clients[0]
        w._send(c, now)  # its checkout goes out
        assert w.watched == {c.sock} and len(w.poller.sockets) == 1
        c.handle = "h1-x"
        w._heartbeat(c, now, w.period)  # answered: the next heartbeat waits a period
        assert w.watched == set() and w.poller.sockets == []
        w._send(c, now)
        w._failover(c, now)  # no answer: the same request on a new socket, watched
        assert w.watched == {c.sock} and len(w.poller.sockets) == 1
        w._failover(c, now, pause=1.0)  # NOT_ACTIVE: resent after a pause, not watched
        assert w.watched == set() and w.poller.sockets == []
    finally:
        for sock in list(w.by_sock):
            sock.close(linger=0)
        w.ctx.term()


def test_lost_and_duplicate_seats_are_read_from_the_checker_s_violations() -> None:
    doc = {
        "summary": {"first_checkout": {"p50": 0.5, "max": 0.6, "n": 12}},
        "checker": {"ok": True, "violations": [], "counts": {"checkout": {"ok": 5}}},
    }
    vip = run.vip_summary(doc)
    assert (vip["lost"], vip["duplicates"]) == (0, 0)
    target = next(t for t in run.targets({"failover_vip": vip}) if "max < 1.5 s" in t.name)
    assert target.met is True and "lost 0, duplicates 0" in target.value
    doc["checker"] = {"ok": False, "violations": [{"invariant": "I8"}, {"invariant": "I1"}]}
    vip = run.vip_summary(doc)
    assert (vip["lost"], vip["duplicates"]) == (0, 1)
    target = next(t for t in run.targets({"failover_vip": vip}) if "max < 1.5 s" in t.name)
    assert target.met is False


def test_memory_per_held_handle_and_per_client_are_measured_apart() -> None:
    steps = {"clients": [9000, 9000 * 40_000 + 9000 * 900], "held": [81_000, 81_000 * 900]}
    out = run._memory_steps(steps)
    assert out["server_bytes_per_held_handle"] == 900
    assert out["server_bytes_per_client"] == 40_000
    r = results(True)
    row = r["growth"]["sizes"]["100000"]
    row.update(out)
    row["server_bytes_per_handle"] = 4_500  # the whole growth over the handles
    target = next(t for t in run.targets(r) if t.name.startswith("server RSS"))
    assert target.met is True and "900 bytes per held handle" in target.value
    row.update(run._memory_steps({"held": [81_000, 81_000 * 1_500]}))
    target = next(t for t in run.targets(r) if t.name.startswith("server RSS"))
    assert target.met is False


def test_sections_measured_again_replace_theirs_and_are_noted() -> None:
    earlier = results(False)
    earlier["started"] = "2026-12-05T11:07:31+00:00"
    again = {
        "machine": {"loadavg_at_start": ["0.5", "0.4", "0.3"]},
        "growth": results(True)["growth"],
        "started": "2026-12-05T11:40:00+00:00",
        "elapsed_s": 400.0,
        "quick": False,
    }
    out = run.merged(earlier, again, ["growth"])
    assert out["growth"] == again["growth"] and out["tmr"] == earlier["tmr"]
    assert out["started"] == earlier["started"] and out["machine"] == earlier["machine"]
    assert out["remeasured"][0]["sections"] == ["growth"]
    assert "measured again: growth (started 2026-12-05T11:40:00+00:00" in run.table(out)


def test_merge_needs_the_sections_to_measure() -> None:
    with pytest.raises(SystemExit):
        run.main(["--merge"])


def test_the_products_target_reads_the_median_of_the_pairs() -> None:
    """A products section measured in pairs (one product, 1,000, each alone) is judged by the
    median of the pairs' ratios, not against the growth section's empty cluster (measured
    minutes earlier): here 0.96x although 2,900/s is 0.72x of that cluster's 4,000/s."""
    r = results(True)
    r["products"] = {
        "products": 1000,
        "rate_per_s": 2900,
        "one_rate_per_s": 3000,
        "pairs": [[3000, 2880], [3100, 2900], [2950, 2950]],
        "rate_vs_one": 0.96,
        "idle": {"server_cpu_pct": 2.0, "backends_cpu_pct": 1.0},
        "one_idle": {"server_cpu_pct": 1.0, "backends_cpu_pct": 1.0},
    }
    found = {t.name: t for t in run.targets(r)}
    products = found["1,000 products: >= 0.9x cycles/s of one"]
    assert products.met is True and "0.96x, the median of 3 pairs" in products.value
    r["products"]["rate_vs_one"] = 0.85
    found = {t.name: t for t in run.targets(r)}
    assert found["1,000 products: >= 0.9x cycles/s of one"].met is False
    text = "\n".join(run.growth_table(r))
    assert "3000 / 2880, 3100 / 2900, 2950 / 2950 cycles/s (1 / 1000)" in text


def test_the_growth_target_reads_the_pairs_with_the_empty_cluster() -> None:
    """A size measured in pairs with an empty cluster is judged by the median of the pairs'
    ratios, not against size 0: here size 0 read 4,000/s, the empty cluster beside the
    100,000 step 2,800-3,000/s (the machine slower by then)."""
    r = results(True)
    row = r["growth"]["sizes"]["100000"]
    row.update(
        rate_per_s=2700,
        rates=[2700, 2600, 2800],
        empty_rates=[2900, 2800, 3000],
        rate_vs_empty=0.93,
    )
    found = {t.name: t for t in run.targets(r)}
    target = found["100,000 held handles: >= 0.9x cycles/s of empty"]
    assert target.met is True and "0.93x, the median of 3 pairs (2700 vs 2900/s" in target.value
    text = "\n".join(run.growth_table(r))
    assert "100,000: paired with the empty cluster" in text and "2600 / 2800" in text
    row["rate_vs_empty"] = 0.85
    found = {t.name: t for t in run.targets(r)}
    assert found["100,000 held handles: >= 0.9x cycles/s of empty"].met is False


def _outage_bench(tmp_path: Any, released: list[str]) -> tuple[run.Bench, Any]:
    """A Bench and a stand-in cluster whose backend-1 recorded `released` as released."""
    import argparse
    import sqlite3
    from types import SimpleNamespace

    state = tmp_path / "c" / "backend-1" / "state"
    state.mkdir(parents=True)
    conn = sqlite3.connect(state / "backend.sqlite3")
    conn.execute("CREATE TABLE usage (event TEXT, handle TEXT)")
    conn.executemany("INSERT INTO usage VALUES ('released', ?)", [(h,) for h in released])
    conn.commit()
    conn.close()
    bench = run.Bench(
        argparse.Namespace(quick=True, duration=1.0, reps=1, growth_pairs=None), tmp_path
    )
    return bench, SimpleNamespace(root=tmp_path / "c")


def test_a_release_retried_after_the_kill_and_recorded_is_not_lost(tmp_path: Any) -> None:
    """A release first sent after the kill can be committed by the new server and its answer
    miss the attempt timeout (a stall right after a large takeover): retried, it finds the
    handle gone. The usage record decides, as for a release sent before the kill."""
    bench, cluster = _outage_bench(tmp_path, ["h-after", "h-before"])
    result = LoadResult(10, 8.0, ok_times=[99.0, 101.5])
    result.not_released = [["h-after", 100.4, 2], ["h-before", 99.9, 2]]
    out = bench._outage(result, 100.0, failover=True, cluster=cluster)
    assert out["lost"] == 0
    assert out["released_before_failover"] == 2


def test_a_release_not_recorded_or_sent_once_is_lost(tmp_path: Any) -> None:
    bench, cluster = _outage_bench(tmp_path, ["h-once"])
    result = LoadResult(10, 8.0, ok_times=[99.0, 101.5])
    # Sent once: nobody can have released it before; retried but recorded nowhere: lost.
    result.not_released = [["h-once", 100.4, 1], ["h-nowhere", 100.4, 3]]
    out = bench._outage(result, 100.0, failover=True, cluster=cluster)
    assert out["lost"] == 2
    assert sorted(out["lost_handles"]) == ["h-nowhere", "h-once"]


def test_the_idle_cpu_is_the_median_of_its_windows() -> None:
    """`Bench._idle` reads the CPU over several heartbeat periods: each window's percent of
    a core, and the median of each figure (one window with a spike does not decide it)."""
    names = ("tmr-a", "backend-1", "backend-2", "backend-3", "hb0", "hb1")
    per_window = [  # CPU seconds each process (in `names` order) used in each 10 s window
        (0.9, 0.03, 0.03, 0.04, 0.5, 0.6),
        (1.6, 0.05, 0.05, 0.05, 0.7, 0.7),
        (1.0, 0.04, 0.03, 0.03, 0.5, 0.5),
    ]
    cpu = dict.fromkeys(names, 100.0)
    readings = [(1000.0, dict(cpu))]
    for i, used in enumerate(per_window):
        cpu = {n: cpu[n] + u for n, u in zip(names, used, strict=True)}
        readings.append((1000.0 + 10.0 * (i + 1), dict(cpu)))
    idle = run.idle_cpu(readings, "tmr-a")
    assert idle["windows"] == [[9.0, 1.0, 11.0], [16.0, 1.5, 14.0], [10.0, 1.0, 10.0]]
    assert idle["server_cpu_pct"] == 10.0 and idle["backends_cpu_pct"] == 1.0
    assert idle["cluster_cpu_pct"] == 11.0  # the median of 10.0, 17.5, 11.0
    assert idle["heartbeat_clients_cpu_pct"] == 11.0
    assert idle["window_s"] == 10.0
    with pytest.raises(ValueError, match="a reading at the start"):
        run.idle_cpu(readings[:1], "tmr-a")


def test_the_heartbeat_target_shows_its_windows() -> None:
    r = results(good=True)
    top = r["growth"]["sizes"][str(run.GROWTH_SIZES[-1][0])]
    top["idle"]["heartbeat_cost_windows"] = [8.0, 9.5, 7.0]
    (t,) = [t for t in run.targets(r) if "heartbeating clients" in t.name]
    assert "the median of 3 windows: 8.0, 9.5, 7.0" in t.value


def test_the_runs_with_heartbeats_stopped_are_paired_with_the_empty_cluster_s(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Bench._size` runs each empty-cluster run between a run of the grown cluster and one
    with its heartbeating clients stopped (growth, empty, stopped; then stopped, empty,
    growth), and judges the stopped runs by the median of those pairs' ratios."""
    import argparse
    from types import SimpleNamespace

    order: list[str] = []
    rates = {"growth": iter([2000.0, 1800.0, 2200.0]), "empty": iter([3000.0, 2000.0, 2900.0])}
    stopped = iter([2700.0, 1900.0, 2610.0])

    def load_active(what: str, cl: Any) -> tuple[LoadResult, Json]:
        order.append("growth")
        return LoadResult(100, 1.0, cycles=int(next(rates["growth"]))), {}

    def empty_rate(cl: Any, hb: Any, empty: Any) -> tuple[float, float]:
        order.append("empty")
        return next(rates["empty"]), 2.0

    def paused_rate(cl: Any, hb: Any, active: str, endpoints: Any, first: int) -> float:
        order.append("stopped")
        return next(stopped)

    bench = run.Bench(
        argparse.Namespace(quick=True, duration=1.0, reps=3, growth_pairs=None), tmp_path
    )
    monkeypatch.setattr(bench, "_idle", lambda cl, active, hb: {})
    monkeypatch.setattr(bench, "_load_active", load_active)
    monkeypatch.setattr(bench, "_empty_rate", empty_rate)
    monkeypatch.setattr(bench, "_paused_rate", paused_rate)
    monkeypatch.setattr(run, "rss_mib", lambda pid: 100.0)
    cl = SimpleNamespace(
        active=lambda: "tmr-a",
        endpoints_from=lambda name: (["tcp://127.0.0.1:1"], 0),
        ctl=lambda name, what, timeout: {"handles": 100},
        pid=lambda name: 1,
    )
    row = bench._size(cl, [object()], 10, 3, empty=cl)  # type: ignore[arg-type, list-item]
    pair = ["growth", "empty", "stopped"]
    assert order == pair + pair[::-1] + pair
    assert row["empty_rates"] == [3000.0, 2000.0, 2900.0]
    assert row["hb_paused_rates"] == [2700.0, 1900.0, 2610.0]
    assert row["rate_vs_empty"] == 0.759  # the median of 0.667, 0.9, 0.759
    assert row["rate_hb_paused_vs_empty"] == 0.9  # the median of 0.9, 0.95, 0.9
    assert row["rate_hb_paused_per_s"] == 2610.0
    text = "\n".join(run.growth_table({"growth": {"sizes": {"100000": row}}}))
    assert (
        "(the median of the pairs with the empty cluster's runs: 2700 / 3000, 1900 / 2000" in text
    )


def test_growth_pairs_is_a_count_of_one_or_more(capsys: pytest.CaptureFixture[str]) -> None:
    assert run._positive_int("7") == 7
    for bad, why in (
        ("0", "must be 1 or more, not 0"),
        ("-2", "must be 1 or more, not -2"),
        ("x", "not a whole number: 'x'"),
        ("2.5", "not a whole number: '2.5'"),
    ):
        with pytest.raises(SystemExit):
            run.main(["--growth-pairs", bad, "--show"])
        assert why in capsys.readouterr().err, bad
