"""Access modes at admission (docs/design.md §7.6): station_share handles of one station
(owner key, user, host) count once, an exclusive handle takes the whole license and only an
empty one; the backends count the same, and a new leader enforces the modes on the handles it
adopts exactly as the seat count."""

from __future__ import annotations

import tomllib

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
from tmr.policy import Policy, parse_policy
from tmr.protocol.results import CheckoutResult, QueuedResult
from tmr.replication.leader import ClientReply, Leader
from tmr.replication.types import AccessMode, LicenseInfo, seat_count

KEY = (6000123, 42)
LIC = "6000123:42"
SHARE = AccessMode.STATION_SHARE
EXCL = AccessMode.EXCLUSIVE


def active(quantity: int = 4, policy: Policy | None = None) -> Harness:
    h = Harness({KEY: LicenseInfo(7, quantity, True)})
    if policy is not None:
        h.leader.policy = policy
    h.promote()
    return h


def checkout(
    h: Harness,
    rid: str,
    seats: int = 1,
    mode: AccessMode = AccessMode.USER_LIMIT,
    *,
    key: str = "K1",
    user: str = "alice",
    host: str = "ws-1",
    wait: float | None = None,
    server: str = "sa",
) -> ClientReply:
    leader: Leader = h.leaders[server]
    before = len(h.replies_of.get(server, []))
    fx = leader.checkout(
        "tok", rid, f"c-{rid}", KEY[0], KEY[1], seats, h.now,
        owner=key, user=user, host=host, wait=wait, mode=mode,
    )  # fmt: skip
    h.run(fx, server)
    h.advance(0.2)
    new = h.replies_of[server][before:]
    assert len(new) == 1, new
    return new[0]


def granted(reply: ClientReply) -> CheckoutResult:
    assert isinstance(reply.result, CheckoutResult), reply
    return reply.result


def release(h: Harness, rid: str, handle: str) -> None:
    h.run(h.leader.release("tok", f"rel-{rid}", f"c-{rid}", handle, h.now, owner="K1"))
    h.advance(0.2)


def backend_seats(h: Harness) -> list[int]:
    out = []
    for acc in h.acceptors.values():
        log = acc.state.products[KEY]
        assert log.seats() == seat_count(log.handles.values())
        out.append(log.seats())
    return out


def in_use(h: Harness, server: str = "sa") -> int:
    return next(e.in_use for e in h.leaders[server].licenses_view() if e.firm == KEY[0])


def test_station_share_handles_of_one_station_count_once_as_the_largest() -> None:
    h = active(quantity=3)
    granted(checkout(h, "a1", 2, SHARE))
    granted(checkout(h, "a2", 1, SHARE))
    granted(checkout(h, "a3", 2, SHARE))
    assert in_use(h) == 2 and backend_seats(h) == [2, 2, 2]
    # Another host, another user, or the same user and host under another key: another station
    assert checkout(h, "b1", 2, SHARE, host="ws-2").error == ErrorCode.NO_LICENSE_AVAILABLE
    granted(checkout(h, "b2", 1, SHARE, key="K2"))  # same user and host claimed, another key
    assert in_use(h) == 3
    assert checkout(h, "b3", 1, SHARE, key="K3").error == ErrorCode.NO_LICENSE_AVAILABLE
    # A share larger than its station's largest adds only the difference
    assert checkout(h, "a4", 3, SHARE).error == ErrorCode.NO_LICENSE_AVAILABLE


def test_a_user_limit_checkout_never_shares() -> None:
    h = active(quantity=2)
    granted(checkout(h, "a1", 1, SHARE))
    granted(checkout(h, "a2", 1))
    assert checkout(h, "a3", 1).error == ErrorCode.NO_LICENSE_AVAILABLE
    granted(checkout(h, "a4", 1, SHARE))  # shares with a1
    assert in_use(h) == 2 and backend_seats(h) == [2, 2, 2]


def test_releasing_the_largest_share_lowers_the_count_to_the_next() -> None:
    h = active(quantity=4)
    big = granted(checkout(h, "a1", 3, SHARE)).handle
    granted(checkout(h, "a2", 1, SHARE))
    assert in_use(h) == 3
    release(h, "a1", big)
    assert in_use(h) == 1 and backend_seats(h) == [1, 1, 1]


def test_exclusive_takes_every_seat_and_only_an_empty_license() -> None:
    h = active(quantity=4)
    first = granted(checkout(h, "a1", 1))
    refused = checkout(h, "x1", 1, EXCL, key="K2")
    assert refused.error == ErrorCode.NO_LICENSE_AVAILABLE
    assert "exclusive access" in (refused.message or "")
    release(h, "a1", first.handle)
    excl = granted(checkout(h, "x2", 1, EXCL, key="K2"))
    assert excl.seats == 4 and in_use(h) == 4 and backend_seats(h) == [4, 4, 4]
    for mode in AccessMode:
        other = checkout(h, f"o-{mode.value}", 1, mode, key="K3")
        assert other.error == ErrorCode.NO_LICENSE_AVAILABLE
        assert "held exclusively" in (other.message or "")
    # Even a station share of the exclusive holder's own station is refused
    assert checkout(h, "x3", 1, SHARE, key="K2").error == ErrorCode.NO_LICENSE_AVAILABLE
    view = [r for r in h.leader.handles_view(h.now) if r["handle"] == excl.handle]
    assert view[0]["mode"] == "exclusive"


def test_a_queued_exclusive_checkout_at_the_head_is_not_overtaken() -> None:
    """Exclusive and the queue: a queued exclusive checkout holds the whole LQ for the queue
    (seats ahead), so later checkouts do not overtake it; it is granted once the license is
    empty."""
    h = active(quantity=2)
    a = granted(checkout(h, "a1", 1))
    queued = checkout(h, "x1", 1, EXCL, key="K2", wait=60.0)
    assert isinstance(queued.result, QueuedResult) and queued.result.position == 1
    late = checkout(h, "b1", 1, key="K3")
    assert late.error == ErrorCode.NO_LICENSE_AVAILABLE
    assert "held for queued" in (late.message or "")
    release(h, "a1", a.handle)
    assert granted(checkout(h, "x1", 1, EXCL, key="K2", wait=60.0)).seats == 2


def test_exclusive_counts_as_the_whole_lq_for_max_and_reserve() -> None:
    policy = parse_policy(
        tomllib.loads(
            f'[licenses."{LIC}"]\nmax = [{{ seats = 2, for = "user:bob" }}]\n'
            f'reserve = [{{ seats = 1, for = "user:carol" }}]\n'
        ),
        "policy.toml",
    )
    h = active(quantity=4, policy=policy)
    bob = checkout(h, "b1", 1, EXCL, key="K2", user="bob")
    assert bob.error == ErrorCode.POLICY_DENIED and "max 2" in (bob.message or "")
    dave = checkout(h, "d1", 1, EXCL, key="K4", user="dave")
    assert dave.error == ErrorCode.POLICY_DENIED and "reserve 1" in (dave.message or "")
    assert granted(checkout(h, "c1", 1, EXCL, key="K3", user="carol")).seats == 4


def test_max_counts_a_station_once() -> None:
    policy = parse_policy(
        tomllib.loads(f'[licenses."{LIC}"]\nmax = [{{ seats = 1, for = "user:alice" }}]\n'),
        "policy.toml",
    )
    h = active(quantity=4, policy=policy)
    granted(checkout(h, "a1", 1, SHARE))
    granted(checkout(h, "a2", 1, SHARE))  # the same station: still one seat
    assert checkout(h, "a3", 1).error == ErrorCode.POLICY_DENIED


def test_a_new_leader_counts_the_modes_of_the_handles_it_adopts() -> None:
    h = active(quantity=3)
    granted(checkout(h, "a1", 2, SHARE))
    granted(checkout(h, "a2", 2, SHARE))
    h.add_server("sb")
    h.stopped.add("sa")
    h.promote("sb", force=True, settle=2.5)
    assert in_use(h, "sb") == 2
    granted(checkout(h, "a3", 1, SHARE, server="sb"))  # shares the adopted station
    assert checkout(h, "b1", 2, server="sb").error == ErrorCode.NO_LICENSE_AVAILABLE
    assert granted(checkout(h, "b2", 1, server="sb")).seats == 1
    modes = {r["mode"] for r in h.leaders["sb"].handles_view(h.now)}
    assert modes == {"station_share", "user_limit"}


def test_an_adopted_exclusive_handle_still_refuses_everything() -> None:
    h = active(quantity=3)
    granted(checkout(h, "x1", 1, EXCL))
    h.add_server("sb")
    h.stopped.add("sa")
    h.promote("sb", force=True, settle=2.5)
    refused = checkout(h, "b1", 1, key="K2", server="sb")
    assert refused.error == ErrorCode.NO_LICENSE_AVAILABLE
    assert "held exclusively" in (refused.message or "")
