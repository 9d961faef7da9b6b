"""The offline exchange on a running cluster: #7 to #8 from the vendor's update file, one
backend at a time, through the rows of the seed's update table, then receipts confirmed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cluster_helpers import LocalCluster, eventually
from tmr.isv import load_vendor
from tmr.isv.offline import confirm_receipts, confirmed_sets, issue_from_request
from tmr.keys import load_keypair
from tmr.licensing import VendorKeyring
from tmr.licensing.exchange import (
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
from tmr.local.cluster import BACKENDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRM, PRODUCT = 6000123, 42

# The seed's table ("Installing an Update"): the virtual container after each backend's update.
UPDATE_TABLE = [
    ("1:(#8) 2:#7 3:#7", 3),
    ("1:#8 2:#8 3:(#7)", 5),
    ("1:#8 2:#8 3:#8", 5),
]


def test_offline_update_follows_the_update_table_and_is_confirmed(cluster: LocalCluster) -> None:
    root = Path(cluster.info["dir"])
    vendor = load_vendor(Path(cluster.info["vendor_dir"]))
    keyring = VendorKeyring.of(vendor.public)
    backends = [
        (
            name,
            load_keypair(root / "keys" / f"{name}.key"),
            (root / name / "machine-id").read_text().strip(),
            root / name / "licenses",
        )
        for name in BACKENDS
    ]
    # customer: the request; vendor: the update file (both only as bytes between the parties)
    request = bundle_request(
        [signed_fingerprint(k, mid, vendor.public) for _, k, mid, _ in backends]
    )
    request = parse_request(canonical(request.to_obj()))
    update = issue_from_request(vendor, request, product_code=PRODUCT, quantity=5, tmr_id=8)
    update = parse_update(canonical(update.to_obj()))

    receipts = []
    with cluster.client() as client:
        for (name, keys, mid, lic_dir), (status, quantity) in zip(
            backends, UPDATE_TABLE, strict=True
        ):
            result = install_update(
                update, keyring=keyring, node=keys, machine_id=mid, license_dir=lic_dir
            )
            assert result.changed and result.copy.tmr_id == 8
            cluster.ctl(name, "reload")

            def row(status: str = status, quantity: int = quantity) -> None:
                lic = client.list_licenses().licenses[0]
                assert (lic.status, lic.quantity) == (status, quantity)

            eventually(f"{name} updated: {status}", row, timeout=30)
            for old in result.removable:
                old.unlink()
            receipts.append(make_receipt(
                keys, mid, vendor.public, license_dir=lic_dir, product_code=PRODUCT,
                keyring=keyring,
            ))  # fmt: skip

    bundle = parse_receipts(canonical(bundle_receipts(receipts).to_obj()))
    done = confirm_receipts(vendor, bundle)
    assert (done.tmr_id, done.set_id) == (8, update.set_id)
    assert [r["tmr_id"] for r in confirmed_sets(vendor)] == [8]
