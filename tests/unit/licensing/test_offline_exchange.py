"""The offline license exchange: request -> update -> install -> receipts -> confirm.

Every bad file (truncated, tampered, for another trio, for an older TMR ID, duplicated) is
refused with a typed `ExchangeError` (or `LicenseError`) and nothing is installed or recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from lic_world import FIRM, NOW, PRODUCT, Node, World, make_nodes

from tmr.isv import init_vendor
from tmr.isv.offline import confirm_receipts, confirmed_sets, issue_from_request
from tmr.isv.profile import load_product
from tmr.keys import generate_keypair
from tmr.licensing.attest import (
    check_tag,
    ed25519_private_to_x25519,
    ed25519_public_to_x25519,
    make_tag,
)
from tmr.licensing.curve import z85_key_bytes
from tmr.licensing.exchange import (
    ExchangeError,
    ExchangeReason,
    LicenseRequest,
    LicenseUpdate,
    ReceiptBundle,
    bundle_receipts,
    bundle_request,
    canonical,
    install_update,
    make_receipt,
    parse_receipts,
    parse_request,
    parse_update,
    signed_fingerprint,
)
from tmr.licensing.model import LicenseError, LicenseReason


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, indent=2).encode("ascii")


@dataclass
class Trio:
    world: World
    dirs: list[Path]

    @property
    def nodes(self) -> list[Node]:
        return self.world.nodes

    def request(self, nodes: list[Node] | None = None) -> LicenseRequest:
        docs = [
            signed_fingerprint(
                n.keys,
                n.machine_id,
                self.world.vendor.public,
                container_serial="131-0000042",
                now=NOW,
            )
            for n in (nodes or self.nodes)
        ]
        return bundle_request(docs)

    def issue(self, tmr_id: int, request: LicenseRequest | None = None, **kw: Any) -> LicenseUpdate:
        return issue_from_request(
            self.world.vendor,
            request or self.request(),
            product_code=PRODUCT,
            quantity=kw.pop("quantity", 30),
            tmr_id=tmr_id,
            now=NOW,
            **kw,
        )

    def install(self, i: int, update: LicenseUpdate) -> Any:
        node = self.nodes[i]
        return install_update(
            update,
            keyring=self.world.keyring,
            node=node.keys,
            machine_id=node.machine_id,
            license_dir=self.dirs[i],
            now=NOW,
        )

    def receipts(self) -> ReceiptBundle:
        return bundle_receipts(
            [
                make_receipt(
                    n.keys,
                    n.machine_id,
                    self.world.vendor.public,
                    license_dir=d,
                    product_code=PRODUCT,
                    keyring=self.world.keyring,
                    now=NOW + 60,
                )
                for n, d in zip(self.nodes, self.dirs, strict=True)
            ]
        )

    def installed(self) -> list[list[str]]:
        return [sorted(p.name for p in d.iterdir()) for d in self.dirs]


@pytest.fixture
def trio(world: World, tmp_path: Path) -> Trio:
    dirs = []
    for i in range(3):
        d = tmp_path / f"lic{i + 1}"
        d.mkdir()
        dirs.append(d)
    return Trio(world, dirs)


def _reason(exc: pytest.ExceptionInfo[ExchangeError], reason: ExchangeReason) -> None:
    assert exc.value.reason is reason, str(exc.value)
    assert str(exc.value).startswith(reason.value)


# --- the proof construction -------------------------------------------------------------------


def test_vendor_key_conversion_matches_both_ways() -> None:
    for _ in range(5):
        vendor = Ed25519PrivateKey.generate()
        x_priv = ed25519_private_to_x25519(vendor)
        assert x_priv.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw
        ) == ed25519_public_to_x25519(_raw(vendor))


def test_tag_verifies_only_for_the_same_key_body_and_vendor() -> None:
    vendor, other_vendor = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    node, other_node = generate_keypair(), generate_keypair()
    tag = make_tag(node.secret, _raw(vendor), "k", b"body")
    pub = z85_key_bytes(node.public)
    assert check_tag(vendor, pub, "k", b"body", tag)
    assert not check_tag(vendor, pub, "k", b"bodY", tag)
    assert not check_tag(vendor, pub, "other-kind", b"body", tag)
    assert not check_tag(vendor, z85_key_bytes(other_node.public), "k", b"body", tag)
    assert not check_tag(other_vendor, pub, "k", b"body", tag)
    assert not check_tag(vendor, bytes(32), "k", b"body", tag)  # low-order point: refused


# --- the whole flow ---------------------------------------------------------------------------


def test_request_issue_install_receipt_confirm(trio: Trio) -> None:
    request = parse_request(_dump(trio.request().to_obj()))
    assert request.container_serial == "131-0000042"
    update = trio.issue(7, request)
    update = parse_update(_dump(update.to_obj()))  # what travels is the file
    for i in range(3):
        result = trio.install(i, update)
        assert result.changed and result.copy.set_index == i + 1
        assert result.copy.fingerprint == trio.nodes[i].fingerprint
    assert trio.install(0, update).changed is False  # re-running changes nothing
    bundle = parse_receipts(_dump(trio.receipts().to_obj()))
    done = confirm_receipts(trio.world.vendor, bundle, now=NOW + 120)
    assert (done.tmr_id, done.set_id) == (7, update.set_id)
    assert confirmed_sets(trio.world.vendor) == [
        {
            "set_id": update.set_id,
            "firm_code": FIRM,
            "product_code": PRODUCT,
            "tmr_id": 7,
            "confirmed_at": int(NOW + 120),
        }
    ]


def test_update_to_next_tmr_id_reports_older_copies(trio: Trio) -> None:
    first = trio.issue(7)
    for i in range(3):
        trio.install(i, first)
    second = trio.issue(8)
    result = trio.install(0, second)
    assert [p.name for p in result.removable] == [first.copies[0].file]
    assert trio.installed()[0] == sorted([first.copies[0].file, second.copies[0].file])


# --- request refusals -------------------------------------------------------------------------


def _nothing_issued(trio: Trio) -> None:
    assert load_product(trio.world.vendor, PRODUCT) is None
    assert not (trio.world.vendor.directory / "issued").exists()


def test_truncated_request_is_refused(trio: Trio) -> None:
    data = _dump(trio.request().to_obj())
    with pytest.raises(ExchangeError) as exc:
        parse_request(data[: len(data) // 2])
    _reason(exc, ExchangeReason.MALFORMED)


def test_tampered_fingerprint_in_request_is_refused(trio: Trio) -> None:
    obj = trio.request().to_obj()
    obj["backends"][1]["body"]["fingerprint"] = "ab" * 32
    request = parse_request(_dump(obj))
    with pytest.raises(ExchangeError) as exc:
        trio.issue(7, request)
    _reason(exc, ExchangeReason.BAD_PROOF)
    _nothing_issued(trio)


def test_made_up_trio_is_refused(trio: Trio) -> None:
    """Fingerprint documents naming keys whose secret the requester does not hold."""
    obj = trio.request().to_obj()
    strangers = make_nodes(3)
    for doc, stranger in zip(obj["backends"], strangers, strict=True):
        doc["body"]["public_key"] = stranger.keys.public  # someone else's key, our proofs
    with pytest.raises(ExchangeError) as exc:
        trio.issue(7, parse_request(_dump(obj)))
    _reason(exc, ExchangeReason.BAD_PROOF)
    _nothing_issued(trio)


def test_request_with_a_repeated_backend_is_refused(trio: Trio) -> None:
    obj = trio.request().to_obj()
    obj["backends"][2] = obj["backends"][0]
    with pytest.raises(ExchangeError) as exc:
        parse_request(_dump(obj))
    _reason(exc, ExchangeReason.DUPLICATE)


def test_request_for_another_vendor_is_refused(trio: Trio, tmp_path: Path) -> None:
    other = init_vendor(tmp_path / "other", FIRM, "Other key, same firm")
    docs = [signed_fingerprint(n.keys, n.machine_id, other.public, now=NOW) for n in trio.nodes]
    with pytest.raises(ExchangeError) as exc:
        trio.issue(7, bundle_request(docs))
    _reason(exc, ExchangeReason.WRONG_VENDOR)
    _nothing_issued(trio)


def test_request_for_an_older_tmr_id_is_refused(trio: Trio) -> None:
    trio.issue(7)
    with pytest.raises(ExchangeError) as exc:
        trio.issue(7)
    _reason(exc, ExchangeReason.OLDER_TMR_ID)
    record = load_product(trio.world.vendor, PRODUCT)
    assert record is not None and record.last_tmr_id == 7


def test_update_for_another_trio_needs_new_trio(trio: Trio) -> None:
    trio.issue(7)
    others = [trio.nodes[0], trio.nodes[1], make_nodes(1)[0]]
    with pytest.raises(ExchangeError) as exc:
        trio.issue(8, trio.request(others))
    _reason(exc, ExchangeReason.WRONG_TRIO)
    record = load_product(trio.world.vendor, PRODUCT)
    assert record is not None and record.last_tmr_id == 7
    assert trio.issue(8, trio.request(others), new_trio=True).tmr_id == 8


def test_request_given_as_update_names_the_kind(trio: Trio) -> None:
    with pytest.raises(ExchangeError) as exc:
        parse_update(_dump(trio.request().to_obj()))
    _reason(exc, ExchangeReason.WRONG_KIND)


# --- update refusals: nothing is installed ----------------------------------------------------


def test_truncated_update_is_refused(trio: Trio) -> None:
    data = _dump(trio.issue(7).to_obj())
    with pytest.raises(ExchangeError) as exc:
        parse_update(data[:-40])
    _reason(exc, ExchangeReason.MALFORMED)


def _tamper_copy(obj: dict[str, Any], index: int, key: str, value: Any) -> None:
    """Change a field in copy ``index`` and in the update's own summary of it."""
    item = obj["copies"][index]
    body, sig = item["copy"].split("\n")[:2]
    fields = json.loads(body)
    fields[key] = value
    item["copy"] = canonical_body(fields) + "\n" + sig + "\n"
    if key in obj:
        for other in obj["copies"]:
            if other is not item:
                b, s = other["copy"].split("\n")[:2]
                f = json.loads(b)
                f[key] = value
                other["copy"] = canonical_body(f) + "\n" + s + "\n"
        obj[key] = value


def canonical_body(fields: dict[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True)


def test_tampered_update_is_refused_and_nothing_installed(trio: Trio) -> None:
    obj = trio.issue(7).to_obj()
    _tamper_copy(obj, 2, "quantity", 3000)  # more seats, consistently, on every copy
    update = parse_update(_dump(obj))
    for i in range(3):  # the whole file is refused, even by backends whose copy is intact
        with pytest.raises(ExchangeError) as exc:
            trio.install(i, update)
        _reason(exc, ExchangeReason.BAD_SIGNATURE)
    assert trio.installed() == [[], [], []]


def test_update_summary_that_differs_from_its_copies_is_refused(trio: Trio) -> None:
    obj = trio.issue(7).to_obj()
    obj["quantity"] = 3000
    with pytest.raises(ExchangeError) as exc:
        parse_update(_dump(obj))
    _reason(exc, ExchangeReason.INCONSISTENT)


def test_update_for_another_trio_is_refused(trio: Trio, tmp_path: Path) -> None:
    update = trio.issue(7)
    stranger = make_nodes(1)[0]
    with pytest.raises(ExchangeError) as exc:
        install_update(
            update,
            keyring=trio.world.keyring,
            node=stranger.keys,
            machine_id=stranger.machine_id,
            license_dir=trio.dirs[0],
            now=NOW,
        )
    _reason(exc, ExchangeReason.WRONG_TRIO)
    assert trio.installed() == [[], [], []]


def test_update_on_a_copied_container_is_refused(trio: Trio) -> None:
    """The right key on another machine (other machine-id): the fingerprint does not match."""
    update = trio.issue(7)
    node = trio.nodes[0]
    with pytest.raises(LicenseError) as exc:
        install_update(
            update,
            keyring=trio.world.keyring,
            node=node.keys,
            machine_id="f" * 32,
            license_dir=trio.dirs[0],
            now=NOW,
        )
    assert exc.value.reason is LicenseReason.WRONG_FINGERPRINT
    assert trio.installed() == [[], [], []]


def test_update_older_than_installed_is_refused(trio: Trio) -> None:
    old, new = trio.issue(7), trio.issue(8)
    trio.install(0, new)
    with pytest.raises(ExchangeError) as exc:
        trio.install(0, old)
    _reason(exc, ExchangeReason.OLDER_TMR_ID)
    assert trio.installed()[0] == [new.copies[0].file]


def test_update_with_a_repeated_copy_is_refused(trio: Trio) -> None:
    obj = trio.issue(7).to_obj()
    obj["copies"][1] = obj["copies"][0]
    with pytest.raises(ExchangeError) as exc:
        parse_update(_dump(obj))
    _reason(exc, ExchangeReason.INCONSISTENT)  # copy 2 holds set index 1


def test_update_does_not_depend_on_paths_of_the_issuing_machine(trio: Trio, tmp_path: Path) -> None:
    update = trio.issue(7)
    moved = tmp_path / "elsewhere" / "upd.json"
    moved.parent.mkdir()
    moved.write_bytes(_dump(update.to_obj()))
    for path in trio.world.out.rglob("*"):  # the issuing machine's files are gone
        if path.is_file():
            path.unlink()
    assert str(trio.world.vendor.directory) not in moved.read_text()
    assert trio.install(1, parse_update(moved.read_bytes())).changed


# --- receipt refusals: nothing is recorded ----------------------------------------------------


def _installed_trio(trio: Trio, tmr_id: int = 7) -> LicenseUpdate:
    update = trio.issue(tmr_id)
    for i in range(3):
        trio.install(i, update)
    return update


def test_truncated_receipts_are_refused(trio: Trio) -> None:
    _installed_trio(trio)
    data = _dump(trio.receipts().to_obj())
    with pytest.raises(ExchangeError) as exc:
        parse_receipts(data[:100])
    _reason(exc, ExchangeReason.MALFORMED)


def test_tampered_receipt_is_refused_and_nothing_recorded(trio: Trio) -> None:
    _installed_trio(trio)
    obj = trio.receipts().to_obj()
    obj["receipts"][0]["body"]["installed_at"] += 1
    with pytest.raises(ExchangeError) as exc:
        confirm_receipts(trio.world.vendor, parse_receipts(_dump(obj)))
    _reason(exc, ExchangeReason.BAD_PROOF)
    assert confirmed_sets(trio.world.vendor) == []


def test_receipt_from_another_backend_is_refused(trio: Trio) -> None:
    """A backend outside the trio claims copy 3 (it signs its own receipt for it)."""
    _installed_trio(trio)
    obj = trio.receipts().to_obj()
    stranger = make_nodes(1)[0]
    body = dict(obj["receipts"][2]["body"])
    body["public_key"] = stranger.keys.public
    proof = make_tag(
        stranger.keys.secret, trio.world.vendor.public.public_key, body["kind"], canonical(body)
    )
    obj["receipts"][2] = {"body": body, "proof": proof.hex()}
    with pytest.raises(ExchangeError) as exc:
        confirm_receipts(trio.world.vendor, parse_receipts(_dump(obj)))
    _reason(exc, ExchangeReason.WRONG_TRIO)
    assert confirmed_sets(trio.world.vendor) == []


def test_receipts_for_an_older_tmr_id_are_refused(trio: Trio) -> None:
    _installed_trio(trio, 7)
    old = trio.receipts()
    _installed_trio(trio, 8)
    confirm_receipts(trio.world.vendor, trio.receipts())
    with pytest.raises(ExchangeError) as exc:
        confirm_receipts(trio.world.vendor, old)
    _reason(exc, ExchangeReason.OLDER_TMR_ID)
    assert [r["tmr_id"] for r in confirmed_sets(trio.world.vendor)] == [8]


def test_duplicate_confirmation_is_refused(trio: Trio) -> None:
    _installed_trio(trio)
    bundle = trio.receipts()
    confirm_receipts(trio.world.vendor, bundle, now=NOW + 1)
    with pytest.raises(ExchangeError) as exc:
        confirm_receipts(trio.world.vendor, bundle, now=NOW + 2)
    _reason(exc, ExchangeReason.ALREADY_CONFIRMED)
    assert [r["confirmed_at"] for r in confirmed_sets(trio.world.vendor)] == [int(NOW + 1)]


def test_receipts_with_a_repeated_backend_are_refused(trio: Trio) -> None:
    _installed_trio(trio)
    obj = trio.receipts().to_obj()
    obj["receipts"][1] = obj["receipts"][0]
    with pytest.raises(ExchangeError) as exc:
        parse_receipts(_dump(obj))
    _reason(exc, ExchangeReason.DUPLICATE)


def test_receipts_for_a_set_never_issued_are_refused(trio: Trio) -> None:
    _installed_trio(trio)
    obj = trio.receipts().to_obj()
    for item in obj["receipts"]:  # a set id the vendor never issued
        item["body"]["set_id"] = "00" * 16
    with pytest.raises(ExchangeError) as exc:
        confirm_receipts(trio.world.vendor, parse_receipts(_dump(obj)))
    _reason(exc, ExchangeReason.UNKNOWN_SET)
    assert confirmed_sets(trio.world.vendor) == []


def test_receipt_without_an_installed_copy_is_refused(trio: Trio) -> None:
    node = trio.nodes[0]
    with pytest.raises(ExchangeError) as exc:
        make_receipt(
            node.keys,
            node.machine_id,
            trio.world.vendor.public,
            license_dir=trio.dirs[0],
            product_code=PRODUCT,
            keyring=trio.world.keyring,
        )
    _reason(exc, ExchangeReason.NOT_INSTALLED)


def test_canonical_body_is_what_the_proof_covers(trio: Trio) -> None:
    doc = trio.request().backends[0]
    assert doc.signed_body == canonical(doc.body)
    assert json.loads(doc.signed_body) == dict(doc.body)


def test_every_truncation_and_byte_flip_gets_a_typed_error(trio: Trio) -> None:
    """No prefix of a file and no single changed byte gets past the checks untyped."""
    update = _installed_trio(trio)
    files = {
        "request": (_dump(trio.request().to_obj()), parse_request),
        "update": (_dump(update.to_obj()), parse_update),
        "receipts": (_dump(trio.receipts().to_obj()), parse_receipts),
    }
    for name, (data, parse) in files.items():
        for cut in range(0, len(data) - 1, 7):
            with pytest.raises(ExchangeError):
                parse(data[:cut])
        for pos in range(0, len(data), 11):
            flipped = data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]
            try:
                parsed = parse(flipped)
            except ExchangeError:
                continue
            # parsed: the change is in a field the later checks cover (proof or signature)
            if name == "update":
                with pytest.raises((ExchangeError, LicenseError)):
                    assert isinstance(parsed, LicenseUpdate)
                    trio.install(0, parsed)
            elif name == "request":
                assert isinstance(parsed, LicenseRequest)
                with pytest.raises(ExchangeError):
                    trio.issue(9, parsed)
            else:
                assert isinstance(parsed, ReceiptBundle)
                with pytest.raises(ExchangeError):
                    confirm_receipts(trio.world.vendor, parsed)
    assert confirmed_sets(trio.world.vendor) == []
