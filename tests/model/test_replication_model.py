"""The Promela model of the replication protocol (model/replication.pml), checked by spin.

`model/run.sh` generates and compiles spin's verifier and searches the model's states for a
violation of its assertions (committed seats within the effective LQ, one leader term per
epoch and one table per log version, no committed grant lost by a later leader), and, with
MODEL_CHECK=liveness, of the LTL property `live` under weak fairness. The seeded bugs below
must each be found: they show each check can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "model" / "run.sh"
SMALL_WITH_CRASH = "-DMAXC=1 -DMAXSEQ=1 -DNH=2 -DLOSSES=0 -DSCRASHES=1"
# The default safety bounds without commit notices and forgetting: a narrower environment in
# which the depth-first search reaches these bugs within a minute.
SMALL_QUIET = "-DMAXC=1 -DMAXSEQ=1 -DNH=2 -DLOSSES=0 -DSCRASHES=0 -DFORGETS=0 -DNO_NOTICE"
# Licenses with LQ 1 then 2: two grants already exceed license #1, so an over-LQ commit is
# within reach of two handles and two log entries.
LOW_LQ = "-DLQ_OLD=1 -DLQ_NEW=2 -DMAXC=1 -DMAXSEQ=2 -DNH=2 -DLOSSES=0 -DSCRASHES=0"
# A takeover during a license update (docs/design.md section 6): only backend 0 holds the new
# copy (LQ 1, the others LQ 0), server 0 leads, then server 1 takes over; the leader admits up
# to the new LQ (OVER_ADMIT), so only the acceptors' checks stand between a grant that one
# backend accepted and a commit above the effective LQ; no backend forgets its knowledge here.
TAKEOVER = (
    "-DLQ_OLD=0 -DLQ_NEW=1 -DMAXC=1 -DMAXSEQ=1 -DNH=1 -DLOSSES=0 -DSCRASHES=0 "
    "-DTAKEOVER_SCENARIO -DOVER_ADMIT -DFORGETS=0"
)

# An update under way (backends 0 and 1 hold the new copy, LQ 1; backend 2 the old, LQ 0):
# server 0 proposes a grant of the one seat, backend 2 refuses it, the leader may abort it
# (docs/design.md section 6); once it aborted and crashed, server 1 takes over. A full search;
# no commit notices (they double the states; no grant commits above backend 2's LQ here).
ABORT = (
    "-DLQ_OLD=0 -DLQ_NEW=1 -DMAXC=1 -DMAXSEQ=2 -DNH=1 -DLOSSES=0 -DSCRASHES=1 -DFORGETS=0 "
    "-DABORT_SCENARIO -DNO_NOTICE"
)
# The same update for liveness: server 0 alone leads, backend 1 stops for good while the grant
# is in flight; no commit notices (they add states and nothing to this scenario).
ABORT_LIVE = (
    "-DLQ_OLD=0 -DLQ_NEW=1 -DMAXC=1 -DMAXSEQ=2 -DNH=1 -DLOSSES=0 -DSCRASHES=0 -DSTEALS=0 "
    "-DFORGETS=0 -DSTOPS=1 -DABORT_SCENARIO -DNO_NOTICE"
)

# The takeover window (docs/design.md section 6): the update of ABORT (backends 0 and 1 on the
# new copy, LQ 1; backend 2 on the old, LQ 0) with commit notices; server 0 leads and grants
# the seat (an entry flagged notice: answered once two backends durably know its commit), and
# may crash at any point, e.g. after the commit and before any notice; then server 1 takes
# over and aborts the marked grants above every known commit among its promises.
WINDOW = (
    "-DLQ_OLD=0 -DLQ_NEW=1 -DMAXC=1 -DMAXSEQ=1 -DNH=1 -DLOSSES=0 -DSCRASHES=1 -DTAKEOVER_WINDOW"
)
# The same for liveness: backend 1 may stop for good once server 0 crashed (server 1 takes
# its epoch counter 2 from the promises, so MAXC=2).
WINDOW_LIVE = (
    "-DLQ_OLD=0 -DLQ_NEW=1 -DMAXC=2 -DMAXSEQ=1 -DNH=1 -DLOSSES=0 -DSCRASHES=1 -DSTEALS=0 "
    "-DSTOPS=1 -DTAKEOVER_WINDOW"
)

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        shutil.which("spin") is None, reason="spin is not installed (apt-get install spin)"
    ),
    pytest.mark.skipif(
        shutil.which("gcc") is None, reason="gcc is not installed (spin compiles its verifier)"
    ),
]


def _env(minutes: int, bounds: str, check: str, search: str, quick: bool) -> dict[str, str]:
    env = dict(os.environ, MODEL_MINUTES=str(minutes), MODEL_CHECK=check)
    env.pop("MODEL_SEARCH", None)
    env.pop("MODEL_OPT", None)
    if quick:
        env["MODEL_OPT"] = "-O0"
    if search:
        env["MODEL_SEARCH"] = search
    if bounds:
        env["MODEL_BOUNDS"] = bounds
    return env


def run_model(
    *defines: str,
    minutes: int,
    bounds: str = "",
    check: str = "safety",
    search: str = "",
    quick: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`quick`: a search that ends within a second or two; its verifier is compiled without
    optimisation (a second instead of five)."""
    env = _env(minutes, bounds, check, search, quick)
    return subprocess.run(
        [str(RUN), *defines],
        capture_output=True,
        text=True,
        env=env,
        timeout=minutes * 60 + 120,
        check=False,
    )


def side_by_side(
    searches: dict[str, tuple[list[str], dict[str, str]]], workers: int = 2
) -> dict[str, tuple[int, str]]:
    """Run model/run.sh searches two at a time (a core each on the 2-core CI machine):
    name -> (spin -D options, environment); returns name -> (exit status, output)."""

    def one(item: tuple[list[str], dict[str, str]]) -> tuple[int, str]:
        defines, env = item
        res = subprocess.run(
            [str(RUN), *defines],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        return res.returncode, res.stdout + res.stderr

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(searches, pool.map(one, searches.values()), strict=True))


@pytest.mark.timeout(1200)
def test_the_takeover_window_is_closed() -> None:
    """docs/design.md section 6: a leader crash after a grant committed during the update and
    before two backends knew it. Safety (P1-P4, a full search): a new leader never aborts an
    answered grant. LIVE (exhaustive): with backend 1 stopped for good, server 1 commits with
    backends 0 and 2. And the seeded bugs: a grant answered at its commit, a takeover that
    aborts grants known committed, knowledge forgotten by a restart (the former memory-only
    design): each breaks P4; without the takeover's abort LIVE fails."""
    safety = _env(3, WINDOW, "safety", "full", False)
    quick = _env(3, WINDOW, "safety", "", True)
    live = _env(6, WINDOW_LIVE, "liveness", "", False)  # about 50 s of CPU: margin for load
    results = side_by_side(
        {
            "live": ([], live),
            "safety": ([], safety),
            "BUG_ANSWER_AT_COMMIT": (["-DBUG_ANSWER_AT_COMMIT"], quick),
            "BUG_ABORT_KNOWN": (["-DBUG_ABORT_KNOWN"], quick),
            "FORGETS": (["-DFORGETS=1"], quick),
            "NO_TAKEOVER_ABORT": (
                ["-DNO_TAKEOVER_ABORT"],
                _env(3, WINDOW_LIVE, "liveness", "", True),
            ),
        }
    )
    for name in ("live", "safety"):
        code, out = results[name]
        assert code == 0 and "full search, complete;" in out, f"{name}: {out}"
    for name in ("BUG_ANSWER_AT_COMMIT", "BUG_ABORT_KNOWN", "FORGETS"):
        code, out = results[name]
        assert code == 1 and "assertion violated" in out, f"{name}: {out}"
    code, out = results["NO_TAKEOVER_ABORT"]
    assert code == 1 and "acceptance cycle" in out, out


@pytest.mark.timeout(420)
def test_model_has_no_violation() -> None:
    """The two one-minute bitstate searches, side by side (each on a core of its own on the
    2-core CI machine): the default bounds (about 11 million states) and a takeover during a
    license update (about 14 million states) in which the leader admits up to the new LQ,
    so only the acceptors' checks and commit knowledge keep P1 (the scenario in which
    BUG_ADOPT_AS_COMMITTED and BUG_KNOW_ON_ACCEPT below break it)."""
    searches = {"default bounds": "", "takeover mid-update": TAKEOVER}
    procs = {
        name: subprocess.Popen(
            [str(RUN)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(1, bounds, "safety", "", False),
        )
        for name, bounds in searches.items()
    }
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"{name}: {out}{err}"
            assert "MODEL OK" in out, f"{name}: {out}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# Seeded bugs the safety search must find, with the bounds it finds each in.
SEEDED_BUGS = {
    "BUG_ACCEPT_BELOW_PROMISE": SMALL_QUIET,  # the acceptor applies an ACCEPT below its promise
    "BUG_COMMIT_ONE_ACK": SMALL_QUIET,  # the leader commits with one acknowledgement
    # A counter is forgotten only by a crash: this one needs a crash in the bounds.
    "BUG_VOLATILE_COUNTER": SMALL_WITH_CRASH,  # a restarted server reuses an epoch counter
    "BUG_NO_LQ_CHECK": LOW_LQ,  # the acceptor skips its LQ check, the leader admits too much
    "BUG_ADOPT_AS_COMMITTED": TAKEOVER,  # a new leader flags any adopted table committed
    "BUG_KNOW_ON_ACCEPT": TAKEOVER,  # a backend takes what it accepts for committed
    "BUG_ABORT_ANSWERED": ABORT,  # the leader aborts a grant it already committed and answered
    "BUG_ANSWER_ABORTED": ABORT,  # the leader answers the grant it aborts
}


@pytest.mark.timeout(600)
def test_every_seeded_bug_is_found() -> None:
    """Each seeded bug breaks an assertion; the searches run two at a time (a core each)."""
    # The searches that end within a second: compiled quickly.
    quick = {"BUG_VOLATILE_COUNTER", "BUG_NO_LQ_CHECK", "BUG_ABORT_ANSWERED", "BUG_ANSWER_ABORTED"}
    results = side_by_side(
        {
            bug: ([f"-D{bug}"], _env(3, bounds, "safety", "", bug in quick))
            for bug, bounds in SEEDED_BUGS.items()
        }
    )
    for bug, (code, out) in results.items():
        assert code == 1 and "MODEL ERROR" in out and "assertion violated" in out, f"{bug}: {out}"


@pytest.mark.timeout(420)
def test_liveness_holds_and_the_search_is_exhaustive() -> None:
    # <>[] (some server ACTIVE in the newest epoch with all it proposed committed), under weak
    # fairness; a full search (states stored whole, -DCOLLAPSE) that must finish in time.
    res = run_model(minutes=3, check="liveness")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "MODEL OK" in res.stdout
    assert "full search, complete;" in res.stdout, res.stdout
    assert "Search not completed" not in res.stdout


@pytest.mark.timeout(420)
def test_seeded_liveness_bug_is_found() -> None:
    # Backends that refuse every snapshot: a leader becomes ACTIVE (two answers) but its
    # seq 0 never commits, so no server is ever done: an acceptance cycle under fairness.
    res = run_model("-DBUG_REFUSE_SNAPSHOT", minutes=3, check="liveness")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "MODEL ERROR" in res.stdout
    assert "acceptance cycle" in res.stdout


@pytest.mark.timeout(420)
def test_aborting_a_refused_grant_is_safe_and_the_search_is_exhaustive() -> None:
    # P1-P4 with the abort, its snapshot at the next seq, late acknowledgements of the aborted
    # entry, and a takeover after it: every state of the scenario.
    res = run_model(minutes=2, bounds=ABORT, search="full")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "full search, complete;" in res.stdout, res.stdout


@pytest.mark.timeout(420)
def test_the_log_progresses_after_a_backend_stops_mid_update() -> None:
    # LIVE with backend 1 stopping while a grant above backend 2's LQ is in flight: only the
    # abort lets the leader commit again with backends 0 and 2 (exhaustive).
    res = run_model(minutes=3, bounds=ABORT_LIVE, check="liveness")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "full search, complete;" in res.stdout, res.stdout


@pytest.mark.timeout(420)
def test_without_the_abort_the_log_is_stuck_after_a_backend_stops_mid_update() -> None:
    # docs/design.md section 6's former limit: without the abort nothing commits again.
    res = run_model("-DNO_ABORT", minutes=3, bounds=ABORT_LIVE, check="liveness", quick=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "acceptance cycle" in res.stdout
