"""The backend's acceptance checks, the vendor keyring and the sealed product key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from lic_world import FIRM, NOW, World, make_nodes

from tmr.errors import ConfigError
from tmr.isv import init_vendor, issue_set
from tmr.isv.profile import load_product
from tmr.licensing import (
    LicenseCopy,
    LicenseError,
    LicenseReason,
    VendorKeyring,
    VendorPublicKey,
    fingerprint_of,
    open_product_key,
    parse_copy,
    verify_copy,
)
from tmr.licensing.curve import z85_key_bytes
from tmr.licensing.model import SIGNING_CONTEXT, assemble, body_fields, encode_body

R = LicenseReason


def copies(world: World, tmr_id: int = 7, **kwargs: object) -> list[LicenseCopy]:
    return [parse_copy(d) for d in world.copies(world.issue(tmr_id, **kwargs))]  # type: ignore[arg-type]


def refused(copy: LicenseCopy, world: World, node: int = 0, **kwargs: object) -> LicenseReason:
    args: dict[str, object] = {"keyring": world.keyring, "now": NOW}
    args.update(kwargs)
    with pytest.raises(LicenseError) as info:
        verify_copy(copy, fingerprint=world.nodes[node].fingerprint, **args)  # type: ignore[arg-type]
    return info.value.reason


def test_each_copy_is_accepted_only_by_its_own_backend(world: World) -> None:
    for i, copy in enumerate(copies(world)):
        for j, node in enumerate(world.nodes):
            if i == j:
                verify_copy(copy, keyring=world.keyring, fingerprint=node.fingerprint, now=NOW)
            else:
                assert refused(copy, world, j) == R.WRONG_FINGERPRINT


def test_set_shares_everything_but_the_binding(world: World) -> None:
    a, b, c = copies(world, features={"edition": "pro"})
    common = {(x.firm_code, x.product_code, x.tmr_id, x.quantity, x.set_id) for x in (a, b, c)}
    assert len(common) == 1
    assert len({x.fingerprint for x in (a, b, c)}) == 3
    assert len({x.sealed_product_key for x in (a, b, c)}) == 3


def test_same_machine_id_other_key_is_another_backend(world: World) -> None:
    """A container copied to another host keeps its key but not its machine-id, and a backend
    re-keyed on the same host gets another fingerprint: both no longer match."""
    copy = copies(world)[0]
    node = world.nodes[0]
    moved = fingerprint_of(node.keys.public, "another-host-machine-id")
    rekeyed = fingerprint_of(make_nodes(1)[0].keys.public, node.machine_id)
    for fp in (moved, rekeyed):
        with pytest.raises(LicenseError) as info:
            verify_copy(copy, keyring=world.keyring, fingerprint=fp, now=NOW)
        assert info.value.reason == R.WRONG_FINGERPRINT


def test_unknown_firm_and_foreign_vendor_key(world: World, tmp_path: Path) -> None:
    copy = copies(world)[0]
    other_firm = init_vendor(tmp_path / "other", 6_000_999)
    assert refused(copy, world, keyring=VendorKeyring.of(other_firm.public)) == R.UNKNOWN_FIRM
    # an impostor claiming the same firm code with its own key
    impostor = init_vendor(tmp_path / "impostor", FIRM)
    assert refused(copy, world, keyring=VendorKeyring.of(impostor.public)) == R.BAD_SIGNATURE
    forged = impostor.sign(copy.signed_message)
    forged_copy = parse_copy(assemble(copy.body, forged))
    assert refused(forged_copy, world) == R.BAD_SIGNATURE


def test_signature_covers_the_domain_prefix(world: World) -> None:
    """A vendor signature over the bare body (say, made for another purpose) is refused."""
    copy = copies(world)[0]
    bare = parse_copy(assemble(copy.body, world.vendor.sign(copy.body)))
    assert refused(bare, world) == R.BAD_SIGNATURE
    assert copy.signed_message == SIGNING_CONTEXT + copy.body


def test_keyring_holds_several_keys_per_firm(world: World, tmp_path: Path) -> None:
    rotated = init_vendor(tmp_path / "rotated", FIRM)
    both = VendorKeyring.of(rotated.public, world.vendor.public)
    verify_copy(copies(world)[0], keyring=both, fingerprint=world.nodes[0].fingerprint, now=NOW)
    assert both.firm_codes() == {FIRM}


def test_expiry(world: World) -> None:
    expires = int(NOW) + 3600
    copy = copies(world, expires=expires)[0]
    fp = world.nodes[0].fingerprint
    verify_copy(copy, keyring=world.keyring, fingerprint=fp, now=expires - 1)
    assert refused(copy, world, now=expires) == R.EXPIRED
    assert refused(copy, world, now=expires + 10**6) == R.EXPIRED


def test_clock_rollback_refuses_only_expiring_copies(world: World) -> None:
    expiring = copies(world, 7, expires=int(NOW) + 3600)[0]
    permanent = copies(world, 8)[0]
    assert refused(expiring, world, clock_rolled_back=True) == R.CLOCK_ROLLBACK
    verify_copy(
        permanent,
        keyring=world.keyring,
        fingerprint=world.nodes[0].fingerprint,
        now=NOW,
        clock_rolled_back=True,
    )


@pytest.mark.parametrize(("installed", "ok"), [(None, True), (6, True), (7, True), (8, False)])
def test_tmr_id_rollback(world: World, installed: int | None, ok: bool) -> None:
    copy = copies(world, 7)[0]
    if ok:
        verify_copy(
            copy,
            keyring=world.keyring,
            fingerprint=world.nodes[0].fingerprint,
            now=NOW,
            installed_tmr_id=installed,
        )
    else:
        assert refused(copy, world, installed_tmr_id=installed) == R.ROLLBACK


def test_keyring_load_from_files(world: World, tmp_path: Path) -> None:
    pub = world.vendor.directory / "vendor.pub"
    ring = VendorKeyring.load([pub, pub])
    assert ring.firm_codes() == {FIRM}
    assert VendorPublicKey.load(pub) == world.vendor.public
    bad = tmp_path / "bad.pub"
    for text in (
        "nope",
        "[]",
        '{"firm_code": 6000123, "name": "x"}',
        '{"firm_code": 5000000, "name": "x", "public_key": "' + "00" * 32 + '"}',
        '{"firm_code": true, "name": "x", "public_key": "' + "00" * 32 + '"}',
        '{"firm_code": 6000123, "name": "x", "public_key": "' + "0" * 63 + '"}',
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=str(bad)):
            VendorKeyring.load([bad])
    bad.write_bytes(b"{" * 5000)
    with pytest.raises(ConfigError, match="larger than"):
        VendorKeyring.load([bad])
    with pytest.raises(ConfigError, match="cannot read"):
        VendorKeyring.load([tmp_path / "missing.pub"])


def test_product_key_opens_only_on_its_backend(world: World) -> None:
    product_key = None
    for i, copy in enumerate(copies(world)):
        key = open_product_key(copy, world.nodes[i].keys.secret)
        assert product_key in (None, key)
        product_key = key
        other = world.nodes[(i + 1) % 3].keys.secret
        with pytest.raises(LicenseError) as info:
            open_product_key(copy, other)
        assert info.value.reason == R.SEALED_KEY
    record = load_product(world.vendor, copies(world, 8)[0].product_code)
    assert record is not None and record.product_key == product_key


def test_product_key_is_kept_across_updates(world: World) -> None:
    old = copies(world, 7)[1]
    new = copies(world, 8, quantity=30)[1]
    secret = world.nodes[1].keys.secret
    assert open_product_key(old, secret) == open_product_key(new, secret)


def _signed_copy(world: World, copy: LicenseCopy, **changes: object) -> LicenseCopy:
    """``copy`` with some fields changed, properly signed by the vendor."""
    fields: dict[str, object] = {
        "firm_code": copy.firm_code,
        "product_code": copy.product_code,
        "tmr_id": copy.tmr_id,
        "quantity": copy.quantity,
        "expires": copy.expires,
        "features": copy.features,
        "serial": copy.serial,
        "fingerprint": copy.fingerprint,
        "backend_key": copy.backend_key,
        "set_id": copy.set_id,
        "set_index": copy.set_index,
        "issued": copy.issued,
        "sealed_product_key": copy.sealed_product_key,
    }
    fields.update(changes)
    body = encode_body(body_fields(**fields))  # type: ignore[arg-type]
    return parse_copy(assemble(body, world.vendor.sign(SIGNING_CONTEXT + body)))


def test_sealed_key_is_bound_to_firm_product_and_fingerprint(world: World) -> None:
    """A sealed key moved into another product's copy (even one the vendor signed) does not
    open: the AES-GCM associated data names firm, product and fingerprint."""
    a, b = copies(world, 7)[0], copies(world, 1, product_code=2)[0]
    secret = world.nodes[0].keys.secret
    assert open_product_key(_signed_copy(world, a), secret) == open_product_key(a, secret)
    moved = _signed_copy(world, b, sealed_product_key=a.sealed_product_key)
    with pytest.raises(LicenseError) as info:
        open_product_key(moved, secret)
    assert info.value.reason == R.SEALED_KEY


def test_tampered_sealed_key_does_not_open(world: World) -> None:
    copy = copies(world)[0]
    secret = world.nodes[0].keys.secret
    for pos in (0, 31, 32, 43, 44, 91):  # ephemeral key, nonce, ciphertext, tag
        sealed = bytearray(copy.sealed_product_key)
        sealed[pos] ^= 0x01
        fake = dataclasses.replace(copy, sealed_product_key=bytes(sealed))
        with pytest.raises(LicenseError) as info:
            open_product_key(fake, secret)
        assert info.value.reason == R.SEALED_KEY


def test_issue_set_api(world: World) -> None:
    issued = issue_set(
        world.vendor,
        product_code=5,
        quantity=3,
        tmr_id=1,
        fingerprints=[n.doc for n in world.nodes],
        out_dir=world.out,
        now=NOW,
    )
    assert [c.serial for c in issued.copies] == [n.doc.serial for n in world.nodes]
    assert issued.summary()["copies"][0]["path"] == str(issued.copies[0].path)


def test_copy_names_the_backend_key_it_is_bound_to(world: World) -> None:
    """A copy signed for another node's CURVE key (fingerprint right: a forged fingerprint
    document) is refused by a backend that knows its own key; its own key passes."""
    a = copies(world)[0]
    own = z85_key_bytes(world.nodes[0].keys.public).hex()
    other = z85_key_bytes(world.nodes[1].keys.public).hex()
    assert a.backend_key == own
    verify_copy(a, keyring=world.keyring, fingerprint=a.fingerprint, now=NOW, backend_key=own)
    assert refused(a, world, backend_key=other) == R.WRONG_BACKEND_KEY
    forged = _signed_copy(world, a, backend_key=other)  # the vendor signed what it was given
    assert refused(forged, world, backend_key=own) == R.WRONG_BACKEND_KEY
