"""The ISV tool's library side: vendor directory, issuing and its refusals."""

from __future__ import annotations

import dataclasses
import datetime as dt
import stat
from pathlib import Path

import pytest
from lic_world import FIRM, NOW, PRODUCT, World, make_nodes

from tmr.errors import UsageError
from tmr.isv import init_vendor, issue_set, load_vendor, parse_expiry, parse_features
from tmr.isv.profile import load_product
from tmr.licensing import VendorPublicKey, parse_copy
from tmr.licensing.curve import z85_key_bytes
from tmr.licensing.model import FORMAT_VERSION


def test_init_writes_private_key_0600_and_public_key(tmp_path: Path) -> None:
    vendor = init_vendor(tmp_path / "v", FIRM, "Acme")
    key = tmp_path / "v" / "vendor.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert VendorPublicKey.load(tmp_path / "v" / "vendor.pub") == vendor.public
    assert vendor.public.name == "Acme"
    assert load_vendor(tmp_path / "v").public == vendor.public


def test_init_refuses_to_replace_a_key_without_force(tmp_path: Path) -> None:
    first = init_vendor(tmp_path, FIRM)
    with pytest.raises(UsageError, match="already exists"):
        init_vendor(tmp_path, FIRM)
    assert load_vendor(tmp_path).public == first.public
    second = init_vendor(tmp_path, FIRM, force=True)
    assert second.public.public_key != first.public.public_key
    assert load_vendor(tmp_path).public == second.public


@pytest.mark.parametrize("firm", [5_999_999, 7_000_000, 0])
def test_init_refuses_bad_firm_code(tmp_path: Path, firm: int) -> None:
    with pytest.raises(UsageError, match="firm code"):
        init_vendor(tmp_path, firm)


def test_load_vendor_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="run `tmr vendor init`"):
        load_vendor(tmp_path)
    init_vendor(tmp_path / "a", FIRM)
    init_vendor(tmp_path / "b", FIRM)
    (tmp_path / "a" / "vendor.pub").write_bytes((tmp_path / "b" / "vendor.pub").read_bytes())
    with pytest.raises(UsageError, match="does not match"):
        load_vendor(tmp_path / "a")
    (tmp_path / "a" / "vendor.key").write_text("junk")
    with pytest.raises(UsageError, match="not an unencrypted PEM"):
        load_vendor(tmp_path / "a")


def test_issue_writes_three_named_copies(world: World) -> None:
    issued = world.issue(7, quantity=20)
    names = [c.path.name for c in issued.copies]
    assert names == [f"{FIRM}-{PRODUCT}-7-{n.doc.serial}.tmrlic" for n in world.nodes]
    for c, node in zip(issued.copies, world.nodes, strict=True):
        copy = parse_copy(c.path.read_bytes())
        assert (copy.fingerprint, copy.serial) == (node.fingerprint, node.doc.serial)
        assert copy.set_id == issued.set_id
        assert copy.issued == int(NOW)
    record = load_product(world.vendor, PRODUCT)
    assert record is not None and record.last_tmr_id == 7
    path = world.vendor.directory / "products" / f"{PRODUCT}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("tmr_id", [7, 6, 1])
def test_issue_refuses_tmr_id_not_higher(world: World, tmr_id: int) -> None:
    world.issue(7)
    with pytest.raises(UsageError, match=r"not higher than #7.*needs #8"):
        world.issue(tmr_id)
    world.issue(8)
    world.issue(1, product_code=PRODUCT + 1)  # other products have their own chain


def test_refused_issue_changes_nothing(world: World) -> None:
    world.issue(7)
    before = sorted(world.out.iterdir())
    with pytest.raises(UsageError):
        world.issue(7)
    assert sorted(world.out.iterdir()) == before


@pytest.mark.parametrize("what", ["fingerprint", "public_key", "serial"])
def test_issue_refuses_non_distinct_backends(world: World, what: str) -> None:
    docs = [n.doc for n in world.nodes]
    docs[2] = dataclasses.replace(docs[2], **{what: getattr(docs[0], what)})
    with pytest.raises(UsageError, match=f"a {what} repeats"):
        issue_set(
            world.vendor,
            product_code=PRODUCT,
            quantity=1,
            tmr_id=1,
            fingerprints=docs,
            out_dir=world.out,
            now=NOW,
        )
    assert load_product(world.vendor, PRODUCT) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fingerprints": 2}, "needs 3 fingerprints"),
        ({"fingerprints": 4}, "needs 3 fingerprints"),
        ({"quantity": 0}, "quantity"),
        ({"tmr_id": 0}, "TMR ID"),
        ({"product_code": 2**32}, "uint32"),
        ({"expires": int(NOW) - 1}, "in the past"),
    ],
)
def test_issue_refuses_bad_arguments(world: World, kwargs: dict[str, int], match: str) -> None:
    args: dict[str, object] = {"product_code": PRODUCT, "quantity": 1, "tmr_id": 1}
    n = kwargs.pop("fingerprints", 3)
    args.update(kwargs)
    nodes = world.nodes + make_nodes(1)
    with pytest.raises(UsageError, match=match):
        issue_set(
            world.vendor,
            fingerprints=[x.doc for x in nodes[:n]],
            out_dir=world.out,
            now=NOW,
            **args,  # type: ignore[arg-type]
        )


def test_parse_expiry() -> None:
    end_of_2030 = dt.datetime(2031, 1, 1, tzinfo=dt.UTC).timestamp()
    assert parse_expiry("2030-12-31") == end_of_2030  # valid through that day
    assert parse_expiry("2030-12-31T12:00:00Z") == end_of_2030 - 12 * 3600
    assert parse_expiry("2030-12-31T12:00:00") == end_of_2030 - 12 * 3600  # naive means UTC
    assert parse_expiry("2030-12-31T12:00:00+02:00") == end_of_2030 - 14 * 3600
    for bad in ("2030-13-01", "31.12.2030", "tomorrow", "", "9999-12-31"):
        with pytest.raises(UsageError, match="not a YYYY-MM-DD or ISO-8601"):
            parse_expiry(bad)


def test_parse_features() -> None:
    assert parse_features(["edition=pro", "note=a=b", "empty="]) == {
        "edition": "pro",
        "note": "a=b",
        "empty": "",
    }
    for bad, match in [
        (["novalue"], "NAME=VALUE"),
        (["bad key=x"], "NAME=VALUE"),
        (["=x"], "NAME=VALUE"),
        (["k=\u00e9"], "printable ASCII"),
        (["k=1", "k=2"], "given twice"),
        ([f"k{i}=v" for i in range(65)], "at most 64"),
    ]:
        with pytest.raises(UsageError, match=match):
            parse_features(bad)


def test_each_copy_names_its_set_index_and_backend_key(world: World) -> None:
    """The three copies of a set share the set id, have indices 1, 2, 3 (the order of the
    fingerprints) and each names, under the signature, its backend's CURVE public key."""
    issued = world.issue(7)
    parsed = [parse_copy(c.path.read_bytes()) for c in issued.copies]
    assert {p.set_id for p in parsed} == {issued.set_id} and len(issued.set_id) == 32
    assert [p.set_index for p in parsed] == [1, 2, 3]
    assert [p.backend_key for p in parsed] == [
        z85_key_bytes(n.keys.public).hex() for n in world.nodes
    ]
    summary = issued.summary()
    assert summary["format"] == FORMAT_VERSION == 2
    assert [(c["set_index"], c["public_key"]) for c in summary["copies"]] == [
        (i, n.keys.public) for i, n in enumerate(world.nodes, start=1)
    ]
    assert world.issue(8).set_id != issued.set_id  # every issue is a new set
