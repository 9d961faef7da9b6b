"""CLI of online license delivery (docs/vendor-guide.md, "Online license delivery").

Vendor side: `tmr vendor serve`, `tmr vendor ticket create|list`.
Customer side: `tmr license activate`, `tmr license send-receipt`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path
from typing import TypeAlias

from tmr.cli.licensing_cmds import _os_errors_as_usage
from tmr.cli.signals import stop_signals
from tmr.errors import UsageError
from tmr.isv import load_vendor, parse_expiry
from tmr.isv.portal import TicketKind, TicketStore, ticket_list_obj
from tmr.licensing.exchange import parse_receipts, parse_request, read_file, write_doc

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(sub: Subparsers, groups: dict[str, Subparsers]) -> None:
    vendor = groups["vendor"]
    p = vendor.add_parser("serve", help="run the activation service (HTTP/HTTPS, JSON API)")
    p.add_argument("--dir", type=Path, required=True, help="vendor directory")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="PORT 0: any free port")
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate (chain)")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key of the cert")
    p.set_defaults(handler=cmd_vendor_serve)

    p = vendor.add_parser("ticket", help="activation tickets for the online delivery")
    ts = p.add_subparsers(dest="ticket_command", metavar="ACTION")
    ts.required = True
    p = ts.add_parser("create", help="create a ticket, print its id")
    p.add_argument("--dir", type=Path, required=True, help="vendor directory")
    p.add_argument("--product-code", type=int, required=True)
    p.add_argument("--quantity", type=int, required=True, help="license quantity (LQ)")
    p.add_argument(
        "--update", action="store_true", help="the next TMR ID for the trio holding the set"
    )
    p.add_argument("--tmr-id", type=int, help="new license: its TMR ID (default: next free)")
    p.add_argument("--expires", help="redeemable until YYYY-MM-DD (through that day, UTC)")
    p.set_defaults(handler=cmd_ticket_create)
    p = ts.add_parser("list", help="the tickets and what they issued")
    p.add_argument("--dir", type=Path, required=True, help="vendor directory")
    p.set_defaults(handler=cmd_ticket_list)

    lic = groups["license"]
    p = lic.add_parser("activate", help="post a request to the vendor's service, get the update")
    p.add_argument("--ticket", required=True)
    p.add_argument("--vendor-url", required=True, metavar="URL")
    p.add_argument("--request", type=Path, required=True, metavar="REQ")
    p.add_argument("--out", type=Path, required=True, metavar="UPD")
    p.add_argument("--cafile", type=Path, help="CA certificate(s) to check the vendor's TLS cert")
    p.set_defaults(handler=cmd_license_activate)

    p = lic.add_parser("send-receipt", help="post the receipts file to the vendor's service")
    p.add_argument("--ticket", required=True)
    p.add_argument("--vendor-url", required=True, metavar="URL")
    p.add_argument("--cafile", type=Path)
    p.add_argument("receipts", type=Path, metavar="RCPT")
    p.set_defaults(handler=cmd_license_send_receipt)


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2), flush=True)


@_os_errors_as_usage
def cmd_vendor_serve(args: argparse.Namespace) -> int:
    import ssl

    from tmr.isv.portal_http import make_server, parse_listen, tls_context

    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("give --tls-cert and --tls-key together")
    vendor = load_vendor(args.dir)
    listen = parse_listen(args.listen)
    try:
        tls = None if args.tls_cert is None else tls_context(args.tls_cert, args.tls_key)
    except ssl.SSLError as exc:
        raise UsageError(f"TLS certificate or key: {exc}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = make_server(vendor, listen, tls)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    scheme = "http" if tls is None else "https"
    # one line, so a supervisor (or a test) can read where it listens (PORT 0: the free one)
    print(json.dumps({"listening": f"{scheme}://{host}:{port}", "firm_code": vendor.firm_code}))
    sys.stdout.flush()

    def stop(signum: int) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    with stop_signals(stop):
        try:
            server.serve_forever()
        finally:
            server.server_close()
    print("tmr vendor serve: stopped", file=sys.stderr)
    return 0


@_os_errors_as_usage
def cmd_ticket_create(args: argparse.Namespace) -> int:
    store = TicketStore(load_vendor(args.dir))
    ticket = store.create(
        product_code=args.product_code,
        quantity=args.quantity,
        kind=TicketKind.UPDATE if args.update else TicketKind.NEW,
        tmr_id=args.tmr_id,
        expires=None if args.expires is None else parse_expiry(args.expires),
    )
    print(ticket.ticket_id)
    print(json.dumps(ticket.summary()), file=sys.stderr)
    return 0


@_os_errors_as_usage
def cmd_ticket_list(args: argparse.Namespace) -> int:
    _print_json(ticket_list_obj(TicketStore(load_vendor(args.dir)).list()))
    return 0


@_os_errors_as_usage
def cmd_license_activate(args: argparse.Namespace) -> int:
    from tmr.licensing.portal_client import activate

    if args.out.is_dir() or not args.out.absolute().parent.is_dir():
        raise UsageError(f"--out {args.out}: give a file name in an existing directory")
    request = parse_request(read_file(args.request, "request"), str(args.request))
    update, answer = activate(args.vendor_url, args.ticket, request, cafile=args.cafile)
    write_doc(args.out, update.to_obj())
    _print_json(
        {
            "update": str(args.out),
            "replayed": bool(answer.get("replayed")),
            "firm_code": update.firm_code,
            "product_code": update.product_code,
            "tmr_id": update.tmr_id,
            "quantity": update.quantity,
            "set_id": update.set_id,
        }
    )
    return 0


@_os_errors_as_usage
def cmd_license_send_receipt(args: argparse.Namespace) -> int:
    from tmr.licensing.portal_client import send_receipt

    bundle = parse_receipts(read_file(args.receipts, "receipt file"), str(args.receipts))
    _print_json(send_receipt(args.vendor_url, args.ticket, bundle, cafile=args.cafile))
    return 0
