"""Floating-license policies: who may check out what, and how much (docs/design.md §7.6).

A policy file (`policy.toml`, the `policy_file` key of the server's configuration) is what a
FlexNet options file or RLM's ISV options are: per license, `include` / `exclude` lists,
`max` N seats for a user, host, group or key name, and `reserve` N seats for one. It is
parsed and checked here in full before a server uses it (`load_policy`, also run by
`tmr config check --kind policy`), so a bad file is refused with the line of the problem
and the policy in force does not change.

Rules are evaluated by the leader at admission against the replicated handle table (each
handle carries the client's user, host and owning CURVE key), so a rule holds across a
failover exactly as the seat count does, provided both servers enforce the same file: each
reports `Policy.digest`, a hash of the parsed rules (comments and layout do not change it).

Identity: `key:NAME` selectors match the CURVE public key of the client's connection, the
one identity a client cannot fake (names are given in the file's `[keys]` table). `user:`
and `host:` match what the client says it is; they are as strong as FlexNet's USER and HOST
(any client can claim any name). Use key rules where a rule must hold against a hostile
client, user and host rules for everyday order.

File format::

    [keys]                        # names for client CURVE public keys (Z85)
    cad-team = ["rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"]

    [groups]                      # a group is a list of user:, host: and key: selectors
    designers = ["user:alice", "user:bob", "key:cad-team"]

    [licenses."1000:42"]          # firm code : product code
    include = ["group:designers", "user:carol"]   # only these (absent or empty: everyone)
    exclude = ["host:kiosk-1"]                     # never these (checked first)
    max = [{ seats = 3, for = "user:bob" }]        # at most 3 seats held by bob in all
    reserve = [{ seats = 2, for = "group:designers" }]  # 2 seats kept free for designers
"""

from __future__ import annotations

import enum
import hashlib
import json
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tmr.errors import ConfigError

MAX_SEATS = 1_000_000
MAX_NAME = 256
MAX_ENTRIES = 10_000  # selectors in one list, groups, keys, licenses
DIGEST_CHARS = 16


class PolicyError(ConfigError):
    """A policy file that cannot be read or breaks a rule of its format."""


class Kind(enum.StrEnum):
    """What a selector names."""

    USER = "user"
    HOST = "host"
    KEY = "key"
    GROUP = "group"


@dataclass(frozen=True, order=True)
class Selector:
    """`kind:name`, e.g. `user:alice`, `group:designers`."""

    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}"


@dataclass(frozen=True)
class Subject:
    """Who asks: what the client says (`user`, `host`) and the key it proved (`key`, Z85)."""

    user: str
    host: str
    key: str


class Holder(Protocol):
    """A held handle as policies see it (a `tmr.replication.types.HandleRecord`)."""

    @property
    def seats(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def owner(self) -> str: ...


H = TypeVar("H", bound=Holder)


@dataclass(frozen=True)
class Limit:
    """One `max` or `reserve` rule: `seats` for the clients `target` matches."""

    seats: int
    target: Selector


@dataclass(frozen=True)
class LicenseRules:
    include: tuple[Selector, ...] = ()
    exclude: tuple[Selector, ...] = ()
    max: tuple[Limit, ...] = ()
    reserve: tuple[Limit, ...] = ()


@dataclass(frozen=True)
class Denial:
    """Why a checkout is refused: `rule` is the rule's text as the file has it."""

    rule: str
    message: str


@dataclass(frozen=True)
class Policy:
    """A parsed, checked policy. `Policy()` is the empty policy: everything allowed."""

    keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    groups: Mapping[str, tuple[Selector, ...]] = field(default_factory=dict)
    licenses: Mapping[tuple[int, int], LicenseRules] = field(default_factory=dict)
    source: str = ""  # the file it came from ("" for the empty policy)

    @property
    def digest(self) -> str:
        """A hash of the rules (not of the file's text): equal rules, equal digest."""
        canon = {
            "keys": {n: sorted(v) for n, v in sorted(self.keys.items())},
            "groups": {n: [str(s) for s in v] for n, v in sorted(self.groups.items())},
            "licenses": {
                f"{k[0]}:{k[1]}": {
                    "include": [str(s) for s in r.include],
                    "exclude": [str(s) for s in r.exclude],
                    "max": [[m.seats, str(m.target)] for m in r.max],
                    "reserve": [[m.seats, str(m.target)] for m in r.reserve],
                }
                for k, r in sorted(self.licenses.items())
            },
        }
        blob = json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:DIGEST_CHARS]

    def summary(self) -> dict[str, Any]:
        """What status and WebAdmin show of the policy in force."""
        return {
            "file": self.source,
            "digest": self.digest,
            "licenses": len(self.licenses),
            "groups": len(self.groups),
            "keys": len(self.keys),
        }

    # ------------------------------------------------------------------ evaluation

    def matches(self, sel: Selector, who: Subject) -> bool:
        if sel.kind is Kind.USER:
            return who.user == sel.name
        if sel.kind is Kind.HOST:
            return who.host == sel.name
        if sel.kind is Kind.KEY:
            return who.key in self.keys.get(sel.name, frozenset())
        return any(self.matches(member, who) for member in self.groups.get(sel.name, ()))

    def check(
        self,
        key: tuple[int, int],
        who: Subject,
        seats: int,
        held: Iterable[H],
        quantity: int,
        count: Callable[[list[H]], int] | None = None,
    ) -> Denial | None:
        """The first rule that refuses `seats` more seats of `key` to `who`, or None.

        `held`: the handles of `key` held now (granted and pending); `quantity`: the
        license's effective LQ. The seat count itself (more than `quantity`) is the caller's
        check (NO_LICENSE_AVAILABLE); this says only what the rules add to it. `count`: how
        a list of handles counts in seats (the access modes' `seat_count`; default: the sum
        of their seats), used for what a selector's holders and all holders hold; `seats` is
        then what the checkout adds to that count (for a station_share checkout what it adds
        to its station, which a selector matches as a whole since the station's handles
        share their user, host and key).
        """
        rules = self.licenses.get(key)
        if rules is None:
            return None
        lic = f"{key[0]}:{key[1]}"
        for sel in rules.exclude:
            if self.matches(sel, who):
                return Denial(
                    f"exclude {sel}", f"license {lic}: excluded by the policy (exclude {sel})"
                )
        if rules.include and not any(self.matches(s, who) for s in rules.include):
            listed = ", ".join(str(s) for s in rules.include)
            return Denial(
                f"include {listed}",
                f"license {lic}: not in the policy's include list (include {listed})",
            )
        holders = [(h, Subject(user=h.user, host=h.host, key=h.owner)) for h in held]

        def counted(hs: list[H]) -> int:
            return count(hs) if count is not None else sum(h.seats for h in hs)

        for lim in rules.max:
            if not self.matches(lim.target, who):
                continue
            mine = counted([h for h, s in holders if self.matches(lim.target, s)])
            if mine + seats > lim.seats:
                return Denial(
                    f"max {lim.seats} for {lim.target}",
                    f"license {lic}: {lim.target} holds {mine} of at most {lim.seats} seats, "
                    f"{seats} requested (max {lim.seats} for {lim.target})",
                )
        used = counted([h for h, _ in holders])
        kept = 0  # seats reserved for others and not taken by them
        kept_by: list[str] = []
        for lim in rules.reserve:
            if self.matches(lim.target, who):
                continue
            taken = counted([h for h, s in holders if self.matches(lim.target, s)])
            if taken < lim.seats:
                kept += lim.seats - taken
                kept_by.append(f"reserve {lim.seats} for {lim.target}")
        if kept and used + seats + kept > quantity and used + seats <= quantity:
            rule = "; ".join(kept_by)
            return Denial(
                rule,
                f"license {lic}: {used} of {quantity} seats in use and {kept} reserved for "
                f"others, {seats} requested ({rule})",
            )
        return None


EMPTY = Policy()

# ---------------------------------------------------------------------- parsing


def load_policy(path: Path) -> Policy:
    """Read and check a policy file; raises `PolicyError` naming the problem."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise PolicyError(f"{path}: no such policy file") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_policy(raw, str(path))


def parse_policy(raw: Mapping[str, Any], source: str = "policy") -> Policy:
    """Check a decoded policy table; every problem is a `PolicyError` naming the place."""
    _only(source, "the file", raw, {"keys", "groups", "licenses"})
    keys = _parse_keys(source, raw.get("keys", {}))
    groups_raw = _table(source, "[groups]", raw.get("groups", {}))
    groups: dict[str, tuple[Selector, ...]] = {}
    for name, members in groups_raw.items():
        _name(source, "a group name", name)
        sels = _selectors(source, f"groups.{name}", members, keys, None)
        groups[name] = sels
    licenses: dict[tuple[int, int], LicenseRules] = {}
    for lic, body in _table(source, "[licenses]", raw.get("licenses", {})).items():
        lkey = _license_key(source, lic)
        where = f'licenses."{lic}"'
        table = _table(source, where, body)
        _only(source, where, table, {"include", "exclude", "max", "reserve"})
        rules = LicenseRules(
            include=_selectors(source, f"{where}.include", table.get("include", []), keys, groups),
            exclude=_selectors(source, f"{where}.exclude", table.get("exclude", []), keys, groups),
            max=_limits(source, f"{where}.max", table.get("max", []), keys, groups),
            reserve=_limits(source, f"{where}.reserve", table.get("reserve", []), keys, groups),
        )
        if lkey in licenses:
            raise PolicyError(f"{source}: license {lkey[0]}:{lkey[1]} is given twice")
        reserved = sum(r.seats for r in rules.reserve)
        if reserved > MAX_SEATS:
            raise PolicyError(f"{source}: {where}.reserve: more than {MAX_SEATS} seats reserved")
        licenses[lkey] = rules
    return Policy(keys=keys, groups=groups, licenses=licenses, source=source)


def _only(source: str, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise PolicyError(
            f"{source}: unknown key {extra[0]!r} in {where} (allowed: {', '.join(sorted(allowed))})"
        )


def _table(source: str, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{source}: {where} must be a table")
    if len(value) > MAX_ENTRIES:
        raise PolicyError(f"{source}: {where} has more than {MAX_ENTRIES} entries")
    return value


def _name(source: str, what: str, name: str) -> None:
    if not name or len(name) > MAX_NAME or not name.isprintable() or name != name.strip():
        raise PolicyError(
            f"{source}: {what} {name[:MAX_NAME]!r} must be 1 to {MAX_NAME} printable "
            "characters without leading or trailing blanks"
        )


def _parse_keys(source: str, value: Any) -> dict[str, frozenset[str]]:
    from tmr.licensing.curve import z85_key_bytes  # here: tmr.licensing imports much

    out: dict[str, frozenset[str]] = {}
    for name, given in _table(source, "[keys]", value).items():
        _name(source, "a key name", name)
        keys = [given] if isinstance(given, str) else given
        if not isinstance(keys, list) or not keys:
            raise PolicyError(f"{source}: keys.{name} must be a Z85 public key or a list of them")
        for k in keys:
            try:
                z85_key_bytes(k)
            except Exception:
                raise PolicyError(
                    f"{source}: keys.{name}: {str(k)[:60]!r} is not a Z85 CURVE public key"
                ) from None
        out[name] = frozenset(keys)
    return out


def _selectors(
    source: str,
    where: str,
    value: Any,
    keys: Mapping[str, frozenset[str]],
    groups: Mapping[str, tuple[Selector, ...]] | None,
) -> tuple[Selector, ...]:
    if not isinstance(value, list):
        raise PolicyError(f'{source}: {where} must be a list of selectors like "user:alice"')
    if len(value) > MAX_ENTRIES:
        raise PolicyError(f"{source}: {where} has more than {MAX_ENTRIES} entries")
    return tuple(_selector(source, where, v, keys, groups) for v in value)


def _selector(
    source: str,
    where: str,
    value: Any,
    keys: Mapping[str, frozenset[str]],
    groups: Mapping[str, tuple[Selector, ...]] | None,
) -> Selector:
    """`groups` None: inside a group definition, where groups may not be named."""
    kinds = ", ".join(k.value for k in Kind if groups is not None or k is not Kind.GROUP)
    if not isinstance(value, str) or ":" not in value:
        raise PolicyError(
            f"{source}: {where}: {str(value)[:60]!r} is not a selector KIND:NAME ({kinds})"
        )
    kind_s, name = value.split(":", 1)
    try:
        kind = Kind(kind_s)
    except ValueError:
        raise PolicyError(
            f"{source}: {where}: unknown selector kind {kind_s[:20]!r} in {value[:60]!r} "
            f"(one of: {kinds})"
        ) from None
    _name(source, f"{where}: the name in", name)
    if kind is Kind.GROUP:
        if groups is None:
            raise PolicyError(f"{source}: {where}: a group cannot contain a group ({value})")
        if name not in groups:
            raise PolicyError(f"{source}: {where}: no group {name!r} in [groups]")
    if kind is Kind.KEY and name not in keys:
        raise PolicyError(f"{source}: {where}: no key name {name!r} in [keys]")
    return Selector(kind, name)


def _limits(
    source: str,
    where: str,
    value: Any,
    keys: Mapping[str, frozenset[str]],
    groups: Mapping[str, tuple[Selector, ...]],
) -> tuple[Limit, ...]:
    if not isinstance(value, list):
        raise PolicyError(f'{source}: {where} must be a list of {{ seats = N, for = "user:NAME" }}')
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise PolicyError(f'{source}: {at} must be {{ seats = N, for = "user:NAME" }}')
        _only(source, at, item, {"seats", "for"})
        seats = item.get("seats")
        if isinstance(seats, bool) or not isinstance(seats, int) or not 0 <= seats <= MAX_SEATS:
            raise PolicyError(f"{source}: {at}.seats must be an integer 0 to {MAX_SEATS}")
        if "for" not in item:
            raise PolicyError(f'{source}: {at} needs for = "KIND:NAME"')
        out.append(Limit(seats, _selector(source, f"{at}.for", item["for"], keys, groups)))
    return tuple(out)


def _license_key(source: str, text: str) -> tuple[int, int]:
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        firm, product = int(parts[0]), int(parts[1])
    except ValueError:
        raise PolicyError(
            f'{source}: [licenses."{text[:40]}"]: a license is named "FIRM:PRODUCT" '
            '(two integers, e.g. "1000:42")'
        ) from None
    if not (0 <= firm < 2**32 and 0 <= product < 2**32):
        raise PolicyError(f'{source}: [licenses."{text}"]: codes must be 0 to 4294967295')
    return firm, product
