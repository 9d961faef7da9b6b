"""The leader enforces the site's policy (tmr.policy) at admission, against the replicated
handle table: POLICY_DENIED names the rule, changes nothing, and a new leader enforces the
same rules on the handles it adopts (docs/design.md §7.6)."""

from __future__ import annotations

import tomllib

from tests.unit.replication.harness import Harness
from tmr.errors import ErrorCode
from tmr.policy import Policy, parse_policy
from tmr.protocol.results import CheckoutResult
from tmr.replication.leader import ClientReply, Leader
from tmr.replication.types import LicenseInfo

KEY = (6000123, 42)
LIC = "6000123:42"


def rules(text: str) -> Policy:
    return parse_policy(tomllib.loads(text), "policy.toml")


def active(policy: Policy, seats: int = 10) -> Harness:
    h = Harness({KEY: LicenseInfo(7, seats, True)})
    h.leader.policy = policy
    h.promote()
    return h


def checkout(
    h: Harness,
    rid: str,
    user: str,
    seats: int = 1,
    *,
    host: str = "ws",
    server: str = "sa",
    owner: str | None = None,
) -> ClientReply:
    leader: Leader = h.leaders[server]
    before = len(h.replies_of.get(server, []))
    fx = leader.checkout(
        "tok",
        rid,
        f"client-{user}",
        KEY[0],
        KEY[1],
        seats,
        h.now,
        owner=owner or f"key-of-{user}",
        user=user,
        host=host,
    )
    h.run(fx, server)
    h.advance(0.2)
    new = h.replies_of[server][before:]
    assert len(new) == 1, new
    return new[0]


def held(h: Harness, server: str = "sa") -> int:
    return sum(row["seats"] for row in h.leaders[server].handles_view(h.now))


def test_exclude_and_include_refuse_with_the_rule_and_change_nothing() -> None:
    h = active(
        rules(
            f'[licenses."{LIC}"]\ninclude = ["user:alice", "user:bob"]\nexclude = ["host:kiosk"]\n'
        )
    )
    assert checkout(h, "r1", "alice").ok
    carol = checkout(h, "r2", "carol")
    assert carol.error == ErrorCode.POLICY_DENIED
    assert "include user:alice, user:bob" in (carol.message or "")
    kiosk = checkout(h, "r3", "bob", host="kiosk")
    assert kiosk.error == ErrorCode.POLICY_DENIED and "exclude host:kiosk" in (kiosk.message or "")
    assert held(h) == 1
    assert h.leader.policy_denials == {KEY: 2}
    denied = [e for e in h.events if e["event"] == "policy_denied"]
    assert [e["rule"] for e in denied] == ["include user:alice, user:bob", "exclude host:kiosk"]
    assert denied[0]["user"] == "carol"


def test_max_counts_the_users_handles_in_the_table() -> None:
    h = active(rules(f'[licenses."{LIC}"]\nmax = [{{ seats = 2, for = "user:bob" }}]\n'))
    assert checkout(h, "r1", "bob").ok
    assert checkout(h, "r2", "bob").ok
    third = checkout(h, "r3", "bob")
    assert third.error == ErrorCode.POLICY_DENIED and "max 2 for user:bob" in (third.message or "")
    assert checkout(h, "r4", "alice", 5).ok
    assert held(h) == 7


def test_reserve_keeps_seats_for_its_users() -> None:
    h = active(
        rules(f'[licenses."{LIC}"]\nreserve = [{{ seats = 3, for = "user:alice" }}]\n'), seats=5
    )
    assert checkout(h, "r1", "bob", 2).ok
    refused = checkout(h, "r2", "bob", 1)
    assert refused.error == ErrorCode.POLICY_DENIED
    assert "reserve 3 for user:alice" in (refused.message or "")
    assert checkout(h, "r3", "alice", 3).ok
    # all 5 in use: the seat count answers, not the policy
    assert checkout(h, "r4", "alice", 1).error == ErrorCode.NO_LICENSE_AVAILABLE


def test_a_retried_checkout_is_answered_from_its_grant_after_a_reload() -> None:
    h = active(rules(""))
    first = checkout(h, "r1", "bob")
    assert first.ok and isinstance(first.result, CheckoutResult)
    h.leader.policy = rules(f'[licenses."{LIC}"]\nexclude = ["user:bob"]\n')
    again = checkout(h, "r1", "bob")
    assert again.ok and isinstance(again.result, CheckoutResult)
    assert again.result.handle == first.result.handle
    assert checkout(h, "r2", "bob").error == ErrorCode.POLICY_DENIED


def test_availability_errors_stand_before_the_policy() -> None:
    h = active(rules(f'[licenses."{LIC}"]\nexclude = ["user:carol"]\n'))
    for b in ("b1", "b2"):
        h.down.add(b)
    h.advance(2.5)
    assert checkout(h, "r1", "carol").error == ErrorCode.QUORUM_LOST


def test_a_new_leader_enforces_the_rules_on_the_handles_it_adopts() -> None:
    policy = rules(f'[licenses."{LIC}"]\nmax = [{{ seats = 2, for = "user:bob" }}]\n')
    h = active(policy)
    assert checkout(h, "r1", "bob").ok
    assert checkout(h, "r2", "bob").ok
    sb = h.add_server("sb")
    sb.policy = policy
    h.stopped.add("sa")
    h.promote("sb", force=True, settle=2.5)
    assert held(h, "sb") == 2
    refused = checkout(h, "r3", "bob", server="sb")
    assert refused.error == ErrorCode.POLICY_DENIED
    assert checkout(h, "r4", "alice", server="sb").ok


def test_the_status_reports_the_policy_in_force() -> None:
    policy = rules(f'[licenses."{LIC}"]\nexclude = ["user:x"]\n')
    h = active(policy)
    status = h.leader.status(h.now)
    assert status["policy"]["digest"] == policy.digest
    assert status["policy"]["licenses"] == 1


def test_each_server_sees_the_others_policy_digest_through_the_backends() -> None:
    """Probes carry the sender's digest, backends report the latest per server: a standby
    with another policy shows the mismatch, and a promote with it warns."""
    ruled = rules(f'[licenses."{LIC}"]\nexclude = ["user:x"]\n')
    h = active(ruled)
    sb = h.add_server("sb")  # no rules: another digest
    h.advance(1.0)  # both probe the backends
    assert h.acceptors["b1"].policies == {"sa": ruled.digest, "sb": sb.policy.digest}
    assert h.leader.policy_mismatch() == ["sb"]
    status = h.leader.status(h.now)["policy"]
    assert status["peers"] == {"sb": sb.policy.digest} and status["mismatch"] == ["sb"]
    assert any(
        e["event"] == "policy_mismatch" and e["level"] == "warning" and e["ours"] == ruled.digest
        for e in h.events
    )
    # the standby installs the same file: no mismatch left on either side
    sb.policy = ruled
    h.advance(1.0)
    assert h.leader.policy_mismatch() == [] and sb.policy_mismatch() == []
    # a promote while the digests differ is logged as a warning at the promote
    sb.policy = rules("")
    h.advance(1.0)
    h.events.clear()
    h.stopped.add("sa")
    h.run(sb.promote(h.now, force=True), "sb")
    assert [e["role"] for e in h.events if e["event"] == "policy_mismatch"] == ["promote"]


def test_a_backend_keeps_the_digests_of_a_few_servers_only() -> None:
    from tmr.replication.acceptor import MAX_POLICIES
    from tmr.replication.messages import Probe

    h = active(rules(""))
    acc = h.acceptors["b1"]
    for i in range(MAX_POLICIES + 3):
        acc.handle(Probe(100 + i, None, f"s{i}", "d"), h.now)
    assert len(acc.policies) == MAX_POLICIES
    assert f"s{MAX_POLICIES + 2}" in acc.policies and "s0" not in acc.policies
