"""`backends.leadership_confirmed` (read for every client request) counts the backends that
confirmed the epoch since a time: the same answer as the QUORUM-th newest confirmation time
of all backends being that recent (the formula it replaced, which sorted them each time)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tmr.licensing.effective import QUORUM
from tmr.replication.backends import Backend, leadership_confirmed

TIMES = st.one_of(st.just(float("-inf")), st.floats(-10.0, 10.0, allow_nan=False))


@given(st.lists(TIMES, min_size=0, max_size=5), st.floats(-10.0, 10.0, allow_nan=False))
def test_the_count_agrees_with_the_quorum_th_newest_confirmation(
    times: list[float], since: float
) -> None:
    backends = [Backend(f"b{i}", i, confirmed_at=t) for i, t in enumerate(times)]
    newest = sorted(times, reverse=True)
    expected = len(newest) >= QUORUM and newest[QUORUM - 1] >= since
    assert leadership_confirmed(backends, since) is expected


def test_exactly_at_since_counts_and_one_short_does_not() -> None:
    b = [Backend(f"b{i}", i) for i in range(3)]
    b[0].confirmed_at, b[1].confirmed_at = 5.0, 4.0
    assert leadership_confirmed(b, 4.0)
    assert not leadership_confirmed(b, 4.5)
