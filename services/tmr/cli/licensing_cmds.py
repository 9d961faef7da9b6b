"""CLI: `tmr vendor init|issue`, `tmr keygen`, `tmr backend fingerprint`,
`tmr license verify|inspect`."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from tmr.errors import TmrError, UsageError
from tmr.isv import init_vendor, issue_set, load_vendor, parse_expiry, parse_features
from tmr.keys import generate_keypair, load_keypair, load_public_key, public_key_path, write_keypair
from tmr.licensing import (
    FingerprintDoc,
    LicenseError,
    VendorKeyring,
    make_fingerprint_doc,
    open_product_key,
    read_copy,
    read_machine_id,
    verify_copy,
)
from tmr.licensing.container import node_backend_key
from tmr.licensing.curve import z85_key_bytes
from tmr.licensing.fingerprint import DEFAULT_MACHINE_ID_FILE, FINGERPRINT_RE

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler = Callable[[argparse.Namespace], int]


def register(sub: Subparsers, groups: dict[str, Subparsers]) -> None:
    vendor = sub.add_parser("vendor", help="ISV tool: vendor keys, issue TMR license sets")
    vs = vendor.add_subparsers(dest="vendor_command", metavar="ACTION")
    vs.required = True

    p = vs.add_parser("init", help="create the vendor key pair and profile in DIR")
    p.add_argument("--dir", type=Path, required=True, help="vendor directory (keep it safe)")
    p.add_argument("--firm-code", type=int, required=True, help="6000000-6999999")
    p.add_argument("--name", help="vendor name shown in vendor.pub")
    p.add_argument("--force", action="store_true", help="replace an existing vendor key")
    p.set_defaults(handler=cmd_vendor_init)

    p = vs.add_parser("issue", help="issue a TMR license set (3 copies) or an update of one")
    p.add_argument("--dir", type=Path, required=True, help="vendor directory")
    p.add_argument("--product-code", type=int, required=True)
    p.add_argument("--quantity", type=int, required=True, help="license quantity (LQ)")
    p.add_argument("--tmr-id", type=int, required=True, help="higher than the last one issued")
    p.add_argument("--expires", help="YYYY-MM-DD (valid through that day, UTC) or ISO-8601")
    p.add_argument("--feature", action="append", default=[], metavar="K=V")
    p.add_argument(
        "--fingerprint",
        action="append",
        type=Path,
        metavar="FILE",
        help="fingerprint document of a backend (give it three times)",
    )
    p.add_argument(
        "--request", type=Path, metavar="REQ", help="a customer's license request instead"
    )
    p.add_argument(
        "--new-trio", action="store_true", help="with --request: the trio replaces the last one"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="directory for the copies (--request: UPD file)"
    )
    p.set_defaults(handler=cmd_vendor_issue)
    groups["vendor"] = vs  # tmr.cli.exchange_cmds adds `vendor confirm`

    p = sub.add_parser(
        "keygen",
        help="create a CURVE node key pair (FILE, FILE.pub)",
        description="Create a CURVE key pair: FILE (mode 0600: the secret, keep it on this "
        "host) and FILE.pub (the Z85 public key, 40 characters: what server.toml's "
        "client_allowlist and admin_keys, or a backend's allowed_servers, list). Prints both "
        "paths and the public key as JSON.",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="the key file (its directory must exist)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    p.set_defaults(handler=cmd_keygen)

    p = groups["backend"].add_parser("fingerprint", help="print this backend's fingerprint")
    p.add_argument("--key", type=Path, required=True, help="node key pair file (or its .pub)")
    p.add_argument("--serial", help="container serial 130-NNNNNNN (default: from fingerprint)")
    p.add_argument("--machine-id-file", type=Path, default=DEFAULT_MACHINE_ID_FILE)
    p.add_argument("--signed", action="store_true", help="with the proof for a license request")
    p.add_argument("--vendor-key", type=Path, help="--signed: the vendor.pub it is meant for")
    p.add_argument("--container-serial", help="--signed: virtual container serial 131-NNNNNNN")
    p.add_argument("--out", type=Path, help="--signed: write the document here")
    p.set_defaults(handler=cmd_backend_fingerprint)

    p = groups["license"].add_parser("verify", help="verify license copies for one backend")
    p.add_argument(
        "--vendor-key", type=Path, action="append", required=True, help="vendor.pub (repeatable)"
    )
    p.add_argument("--fingerprint", required=True, help="fingerprint document or fingerprint")
    p.add_argument("--key", type=Path, help="also open the product key with this node key pair")
    p.add_argument("--installed-tmr-id", type=int, help="refuse copies below this TMR ID")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE")
    p.set_defaults(handler=cmd_license_verify)

    p = groups["license"].add_parser("inspect", help="show a license copy (not verified)")
    p.add_argument("file", type=Path, metavar="FILE")
    p.set_defaults(handler=cmd_license_inspect)


def _os_errors_as_usage(handler: Handler) -> Handler:
    """File system errors (no such directory, permission denied, ...) become one-line errors."""

    @functools.wraps(handler)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise UsageError(f"{where}{exc.strerror or exc}") from None

    return wrapper


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


@_os_errors_as_usage
def cmd_vendor_init(args: argparse.Namespace) -> int:
    profile = init_vendor(args.dir, args.firm_code, args.name, force=args.force)
    _print_json(
        {
            "firm_code": profile.firm_code,
            "name": profile.public.name,
            "public_key": profile.public.public_key.hex(),
            "vendor_pub": str((args.dir / "vendor.pub").absolute()),
        }
    )
    return 0


@_os_errors_as_usage
def cmd_vendor_issue(args: argparse.Namespace) -> int:
    if args.request is not None:
        from tmr.cli.exchange_cmds import cmd_vendor_issue_request

        if args.fingerprint:
            raise UsageError("give either --request or --fingerprint, not both")
        return cmd_vendor_issue_request(args)
    if not args.fingerprint or args.new_trio:
        raise UsageError("give --request REQ, or --fingerprint three times (without --new-trio)")
    vendor = load_vendor(args.dir)
    issued = issue_set(
        vendor,
        product_code=args.product_code,
        quantity=args.quantity,
        tmr_id=args.tmr_id,
        fingerprints=[FingerprintDoc.load(path) for path in args.fingerprint],
        out_dir=args.out,
        expires=None if args.expires is None else parse_expiry(args.expires),
        features=parse_features(args.feature),
    )
    _print_json(issued.summary())
    return 0


@_os_errors_as_usage
def cmd_keygen(args: argparse.Namespace) -> int:
    keys = generate_keypair()
    write_keypair(args.out, keys, force=args.force)
    _print_json(
        {
            "public_key": keys.public,
            "key_file": str(args.out),
            "public_file": str(public_key_path(args.out)),
        }
    )
    return 0


@_os_errors_as_usage
def cmd_backend_fingerprint(args: argparse.Namespace) -> int:
    if args.signed:
        from tmr.cli.exchange_cmds import cmd_backend_fingerprint_signed

        return cmd_backend_fingerprint_signed(args)
    doc = make_fingerprint_doc(
        load_public_key(args.key), read_machine_id(args.machine_id_file), args.serial
    )
    print(doc.to_json())
    return 0


def _when(unix: int | None) -> str:
    if unix is None:
        return "never"
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat().replace("+00:00", "Z")


@_os_errors_as_usage
def cmd_license_verify(args: argparse.Namespace) -> int:
    keyring = VendorKeyring.load(args.vendor_key)
    backend_key = None  # hex of the backend's CURVE public key, when known
    if FINGERPRINT_RE.fullmatch(args.fingerprint):
        fingerprint = args.fingerprint
    else:
        doc = FingerprintDoc.load(Path(args.fingerprint))
        fingerprint, backend_key = doc.fingerprint, z85_key_bytes(doc.public_key).hex()
    node_secret = None if args.key is None else load_keypair(args.key).secret
    if node_secret is not None:
        backend_key = node_backend_key(node_secret)
    failures = 0
    for path in args.files:
        try:
            copy = read_copy(path)
            verify_copy(
                copy,
                keyring=keyring,
                fingerprint=fingerprint,
                now=time.time(),
                installed_tmr_id=args.installed_tmr_id,
                backend_key=backend_key,
            )
            if node_secret is not None:
                open_product_key(copy, node_secret)
        except TmrError as exc:
            print(f"tmr: error: {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        print(
            f"OK {path}: firm {copy.firm_code} product {copy.product_code} #{copy.tmr_id} "
            f"LQ {copy.quantity} serial {copy.serial} set {copy.set_id} index {copy.set_index} "
            f"expires {_when(copy.expires)}" + ("" if node_secret is None else " product-key opens")
        )
    return 1 if failures else 0


@_os_errors_as_usage
def cmd_license_inspect(args: argparse.Namespace) -> int:
    try:
        copy = read_copy(args.file)
    except LicenseError as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    doc = copy.fields()
    del doc["sealed_product_key"]
    doc["issued_at"] = _when(copy.issued)
    doc["expires_at"] = _when(copy.expires)
    doc["signature"] = "not checked (use `tmr license verify`)"
    _print_json(doc)
    return 0
