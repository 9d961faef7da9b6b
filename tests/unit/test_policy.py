"""Policy rules (tmr.policy): parsing with typed errors, and every rule's evaluation."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tmr.keys import generate_keypair
from tmr.policy import (
    EMPTY,
    Kind,
    Policy,
    PolicyError,
    Selector,
    Subject,
    load_policy,
    parse_policy,
)

KEY_A = generate_keypair().public
KEY_B = generate_keypair().public
LIC = (1000, 42)


@dataclass(frozen=True)
class H:
    seats: int
    user: str = ""
    host: str = ""
    owner: str = ""


def policy(text: str) -> Policy:
    return parse_policy(tomllib.loads(text), "test.toml")


ALICE = Subject(user="alice", host="ws-1", key=KEY_B)
BOB = Subject(user="bob", host="ws-2", key=KEY_B)
CAROL = Subject(user="carol", host="kiosk-1", key=KEY_A)


def test_empty_policy_allows_everything() -> None:
    assert EMPTY.check(LIC, ALICE, 5, [H(3)], 10) is None
    assert EMPTY.digest == policy("").digest


def test_a_license_without_rules_is_not_restricted() -> None:
    p = policy('[licenses."1000:43"]\nexclude = ["user:alice"]\n')
    assert p.check(LIC, ALICE, 1, [], 10) is None


def test_exclude_refuses_and_names_the_rule() -> None:
    p = policy('[licenses."1000:42"]\nexclude = ["host:kiosk-1"]\n')
    d = p.check(LIC, CAROL, 1, [], 10)
    assert d is not None and d.rule == "exclude host:kiosk-1"
    assert "1000:42" in d.message
    assert p.check(LIC, ALICE, 1, [], 10) is None


def test_include_lets_only_the_listed_clients_in() -> None:
    p = policy(
        '[groups]\ncad = ["user:alice"]\n'
        '[licenses."1000:42"]\ninclude = ["group:cad", "user:bob"]\n'
    )
    assert p.check(LIC, ALICE, 1, [], 10) is None
    assert p.check(LIC, BOB, 1, [], 10) is None
    d = p.check(LIC, CAROL, 1, [], 10)
    assert d is not None and d.rule == "include group:cad, user:bob"


def test_exclude_wins_over_include() -> None:
    p = policy('[licenses."1000:42"]\ninclude = ["user:alice"]\nexclude = ["host:ws-1"]\n')
    d = p.check(LIC, ALICE, 1, [], 10)
    assert d is not None and d.rule == "exclude host:ws-1"


def test_max_for_a_user_counts_that_users_held_seats() -> None:
    p = policy('[licenses."1000:42"]\nmax = [{ seats = 3, for = "user:bob" }]\n')
    held = [H(2, user="bob"), H(5, user="alice")]
    assert p.check(LIC, BOB, 1, held, 100) is None
    d = p.check(LIC, BOB, 2, held, 100)
    assert d is not None and d.rule == "max 3 for user:bob"
    assert "holds 2 of at most 3" in d.message
    assert p.check(LIC, ALICE, 10, held, 100) is None  # the rule is bob's only


def test_max_for_a_group_is_the_groups_total() -> None:
    p = policy(
        '[groups]\ncad = ["user:alice", "user:bob"]\n'
        '[licenses."1000:42"]\nmax = [{ seats = 3, for = "group:cad" }]\n'
    )
    held = [H(1, user="bob"), H(2, user="alice")]
    d = p.check(LIC, ALICE, 1, held, 100)
    assert d is not None and d.rule == "max 3 for group:cad"
    assert p.check(LIC, CAROL, 1, held, 100) is None


def test_reserve_keeps_seats_free_for_its_group_only() -> None:
    p = policy('[licenses."1000:42"]\nreserve = [{ seats = 2, for = "user:alice" }]\n')
    held = [H(7, user="bob")]
    # 7 of 10 in use, 2 kept for alice: bob may take 1 more, not 2
    assert p.check(LIC, BOB, 1, held, 10) is None
    d = p.check(LIC, BOB, 2, held, 10)
    assert d is not None and d.rule == "reserve 2 for user:alice"
    assert "2 reserved for others" in d.message
    # alice may use the reserved seats and the free one
    assert p.check(LIC, ALICE, 3, held, 10) is None


def test_seats_held_by_the_reserved_client_use_up_the_reservation() -> None:
    p = policy('[licenses."1000:42"]\nreserve = [{ seats = 2, for = "user:alice" }]\n')
    held = [H(7, user="bob"), H(2, user="alice")]
    assert p.check(LIC, BOB, 1, held, 10) is None  # alice holds her 2: nothing kept back


def test_reserve_leaves_the_seat_count_to_the_caller() -> None:
    # More than the license has: NO_LICENSE_AVAILABLE is the caller's answer, not POLICY_DENIED
    p = policy('[licenses."1000:42"]\nreserve = [{ seats = 2, for = "user:alice" }]\n')
    assert p.check(LIC, BOB, 4, [H(7, user="bob")], 10) is None


def test_key_rules_match_the_proved_key_not_the_claimed_name() -> None:
    p = policy(
        f'[keys]\ncad-team = ["{KEY_A}"]\n[licenses."1000:42"]\ninclude = ["key:cad-team"]\n'
    )
    assert p.check(LIC, CAROL, 1, [], 10) is None  # carol's connection proved KEY_A
    # a client that claims carol's user and host but has another key is not let in
    liar = Subject(user="carol", host="kiosk-1", key=KEY_B)
    assert p.check(LIC, liar, 1, [], 10) is not None


def test_max_for_a_key_counts_handles_owned_by_that_key() -> None:
    p = policy(
        f'[keys]\nk = "{KEY_A}"\n[licenses."1000:42"]\nmax = [{{ seats = 1, for = "key:k" }}]\n'
    )
    held = [H(1, user="someone-else", owner=KEY_A)]
    d = p.check(LIC, CAROL, 1, held, 10)
    assert d is not None and d.rule == "max 1 for key:k"


def test_digest_depends_on_the_rules_not_the_layout() -> None:
    a = policy('[licenses."1000:42"]\nexclude = ["user:x"] # comment\n')
    b = policy('# a comment\n\n[licenses."1000:42"]\n  exclude = [ "user:x" ]\n')
    c = policy('[licenses."1000:42"]\nexclude = ["user:y"]\n')
    assert a.digest == b.digest != c.digest
    assert len(a.digest) == 16
    assert a.summary()["licenses"] == 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[other]\n", "unknown key 'other'"),
        ('[licenses."1000:42"]\nallow = []\n', "unknown key 'allow'"),
        ('[licenses."1000:42"]\nexclude = ["person:x"]\n', "unknown selector kind 'person'"),
        ('[licenses."1000:42"]\nexclude = ["alice"]\n', "not a selector KIND:NAME"),
        ('[licenses."1000:42"]\nexclude = "user:a"\n', "must be a list"),
        ('[licenses."1000:42"]\nexclude = ["group:none"]\n', "no group 'none'"),
        ('[licenses."1000:42"]\nexclude = ["key:none"]\n', "no key name 'none'"),
        ('[licenses."1000:42"]\nexclude = ["user:"]\n', "must be 1 to 256"),
        ('[groups]\na = ["user:x"]\nb = ["group:a"]\n', "cannot contain a group"),
        ('[keys]\nk = "not-a-key"\n', "not a Z85 CURVE public key"),
        ('[licenses."42"]\n', 'named "FIRM:PRODUCT"'),
        ('[licenses."a:b"]\n', 'named "FIRM:PRODUCT"'),
        ('[licenses."1000:42"]\n[licenses."1000:042"]\n', "given twice"),
        ('[licenses."1000:42"]\nmax = [{ seats = -1, for = "user:a" }]\n', "0 to 1000000"),
        ('[licenses."1000:42"]\nmax = [{ seats = true, for = "user:a" }]\n', "0 to 1000000"),
        ('[licenses."1000:42"]\nmax = [{ seats = 1 }]\n', 'needs for = "KIND:NAME"'),
        ('[licenses."1000:42"]\nmax = [{ seats = 1, for = "user:a", x = 1 }]\n', "unknown key 'x'"),
        ('[licenses."1000:42"]\nreserve = [3]\n', "must be { seats = N"),
        ("groups = 3\n", "[groups] must be a table"),
    ],
)
def test_bad_policies_are_refused_with_the_place(text: str, needle: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy(text)
    assert needle in str(err.value)
    assert str(err.value).startswith("test.toml: ")


def test_load_policy_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[licenses\n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(bad)
    bad.write_bytes(b'[licenses."1000:42"]\nexclude = ["user:\xff"]\n')  # not UTF-8
    with pytest.raises(PolicyError, match=r"not UTF-8 text \(byte 38\)"):
        load_policy(bad)
    good = tmp_path / "policy.toml"
    good.write_text('[licenses."1000:42"]\nexclude = ["user:x"]\n')
    p = load_policy(good)
    assert p.source == str(good)
    assert p.licenses[LIC].exclude == (Selector(Kind.USER, "x"),)
