"""CLI of the offline license exchange (docs/vendor-guide.md, "Offline license delivery").

Customer side: `tmr backend fingerprint --signed`, `tmr license request`,
`tmr license install-update`, `tmr backend receipt`, `tmr license receipt`.
Vendor side: `tmr vendor issue --request`, `tmr vendor confirm`, `tmr vendor installed`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TypeAlias

from tmr.cli.licensing_cmds import _os_errors_as_usage
from tmr.errors import UsageError
from tmr.isv import load_vendor, parse_expiry, parse_features
from tmr.isv.offline import confirm_receipts, confirmed_sets, issue_from_request
from tmr.keys import load_keypair
from tmr.licensing import VendorKeyring, read_machine_id
from tmr.licensing.exchange import (
    ProvenDoc,
    bundle_receipts,
    bundle_request,
    install_update,
    make_receipt,
    parse_fingerprint_doc,
    parse_receipt_doc,
    parse_receipts,
    parse_request,
    parse_update,
    read_file,
    signed_fingerprint,
    write_doc,
)
from tmr.licensing.fingerprint import DEFAULT_MACHINE_ID_FILE
from tmr.licensing.keyring import VendorPublicKey

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(sub: Subparsers, groups: dict[str, Subparsers]) -> None:
    lic = groups["license"]
    p = lic.add_parser("request", help="bundle three signed fingerprints into a license request")
    p.add_argument(
        "--fingerprint",
        action="append",
        type=Path,
        required=True,
        metavar="FILE",
        help="signed fingerprint document of a backend, in set order (three times)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="REQ")
    p.set_defaults(handler=cmd_license_request)

    p = lic.add_parser("install-update", help="install this backend's copy from an update file")
    p.add_argument("--update", type=Path, required=True, metavar="UPD")
    p.add_argument("--key", type=Path, required=True, help="this backend's node key pair file")
    p.add_argument("--license-dir", type=Path, required=True)
    p.add_argument(
        "--vendor-key", type=Path, action="append", required=True, help="vendor.pub (repeatable)"
    )
    p.add_argument("--machine-id-file", type=Path, default=DEFAULT_MACHINE_ID_FILE)
    p.set_defaults(handler=cmd_license_install_update)

    p = lic.add_parser("receipt", help="bundle the three backends' receipts for the vendor")
    p.add_argument("--receipt", action="append", type=Path, required=True, metavar="FILE")
    p.add_argument("--out", type=Path, required=True, metavar="RCPT")
    p.set_defaults(handler=cmd_license_receipt)

    p = groups["backend"].add_parser("receipt", help="sign a receipt for the installed copy")
    p.add_argument("--key", type=Path, required=True, help="this backend's node key pair file")
    p.add_argument("--license-dir", type=Path, required=True)
    p.add_argument("--vendor-key", type=Path, required=True, help="the issuing vendor's .pub")
    p.add_argument("--product-code", type=int, required=True)
    p.add_argument("--machine-id-file", type=Path, default=DEFAULT_MACHINE_ID_FILE)
    p.add_argument("--out", type=Path, help="write the receipt here (default: print it)")
    p.set_defaults(handler=cmd_backend_receipt)

    vendor = groups["vendor"]
    p = vendor.add_parser("confirm", help="verify a customer's receipts, record the set installed")
    p.add_argument("--dir", type=Path, required=True, help="vendor directory")
    p.add_argument("receipts", type=Path, metavar="RCPT")
    p.set_defaults(handler=cmd_vendor_confirm)

    p = vendor.add_parser("installed", help="the sets recorded as installed (confirmed receipts)")
    p.add_argument("--dir", type=Path, required=True, help="vendor directory")
    p.set_defaults(handler=cmd_vendor_installed)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _output(doc: ProvenDoc, out: Path | None) -> None:
    if out is None:
        print(json.dumps(doc.to_obj(), indent=2))
    else:
        write_doc(out, doc.to_obj())


@_os_errors_as_usage
def cmd_backend_fingerprint_signed(args: argparse.Namespace) -> int:
    """`tmr backend fingerprint --signed` (registered with the unsigned form)."""
    if args.vendor_key is None:
        raise UsageError("--signed needs --vendor-key (the vendor.pub the request is meant for)")
    doc = signed_fingerprint(
        load_keypair(args.key),
        read_machine_id(args.machine_id_file),
        VendorPublicKey.load(args.vendor_key),
        serial=args.serial,
        container_serial=args.container_serial,
    )
    _output(doc, args.out)
    return 0


@_os_errors_as_usage
def cmd_license_request(args: argparse.Namespace) -> int:
    docs = [
        parse_fingerprint_doc(read_file(p, "signed fingerprint"), str(p)) for p in args.fingerprint
    ]
    request = bundle_request(docs)
    write_doc(args.out, request.to_obj())
    _print_json(
        {
            "request": str(args.out),
            "firm_code": request.firm_code,
            "container_serial": request.container_serial,
            "backends": [
                {"serial": d["serial"], "fingerprint": d["fingerprint"]} for d in request.backends
            ],
        }
    )
    return 0


@_os_errors_as_usage
def cmd_vendor_issue_request(args: argparse.Namespace) -> int:
    """`tmr vendor issue --request REQ ... --out UPD` (registered with `tmr vendor issue`)."""
    if args.out.is_dir() or not args.out.absolute().parent.is_dir():
        raise UsageError(f"--out {args.out}: give a file name in an existing directory")
    vendor = load_vendor(args.dir)
    request = parse_request(read_file(args.request, "request"), str(args.request))
    update = issue_from_request(
        vendor,
        request,
        product_code=args.product_code,
        quantity=args.quantity,
        tmr_id=args.tmr_id,
        expires=None if args.expires is None else parse_expiry(args.expires),
        features=parse_features(args.feature),
        new_trio=args.new_trio,
    )
    write_doc(args.out, update.to_obj())
    _print_json(
        {
            "update": str(args.out),
            "firm_code": update.firm_code,
            "product_code": update.product_code,
            "tmr_id": update.tmr_id,
            "quantity": update.quantity,
            "set_id": update.set_id,
            "copies": [
                {"set_index": c.copy.set_index, "serial": c.copy.serial, "file": c.file}
                for c in update.copies
            ],
        }
    )
    return 0


@_os_errors_as_usage
def cmd_license_install_update(args: argparse.Namespace) -> int:
    update = parse_update(read_file(args.update, "update file"), str(args.update))
    result = install_update(
        update,
        keyring=VendorKeyring.load(args.vendor_key),
        node=load_keypair(args.key),
        machine_id=read_machine_id(args.machine_id_file),
        license_dir=args.license_dir,
    )
    _print_json(result.summary())
    return 0


@_os_errors_as_usage
def cmd_backend_receipt(args: argparse.Namespace) -> int:
    vendor = VendorPublicKey.load(args.vendor_key)
    doc = make_receipt(
        load_keypair(args.key),
        read_machine_id(args.machine_id_file),
        vendor,
        license_dir=args.license_dir,
        product_code=args.product_code,
        keyring=VendorKeyring.of(vendor),
    )
    _output(doc, args.out)
    return 0


@_os_errors_as_usage
def cmd_license_receipt(args: argparse.Namespace) -> int:
    docs = [parse_receipt_doc(read_file(p, "receipt"), str(p)) for p in args.receipt]
    bundle = bundle_receipts(docs)
    write_doc(args.out, bundle.to_obj())
    _print_json(
        {
            "receipts": str(args.out),
            "product_code": bundle.product_code,
            "tmr_id": bundle.tmr_id,
            "set_id": bundle.set_id,
        }
    )
    return 0


@_os_errors_as_usage
def cmd_vendor_confirm(args: argparse.Namespace) -> int:
    vendor = load_vendor(args.dir)
    bundle = parse_receipts(read_file(args.receipts, "receipt file"), str(args.receipts))
    confirmation = confirm_receipts(vendor, bundle)
    _print_json(confirmation.summary())
    print(
        f"set {confirmation.set_id} (#{confirmation.tmr_id}) recorded as installed",
        file=sys.stderr,
    )
    return 0


@_os_errors_as_usage
def cmd_vendor_installed(args: argparse.Namespace) -> int:
    """The sets whose receipts were confirmed (`tmr vendor confirm` or the portal), oldest first."""
    _print_json(confirmed_sets(load_vendor(args.dir)))
    return 0
