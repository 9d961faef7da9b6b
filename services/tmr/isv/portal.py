"""The vendor's activation service (online delivery): tickets, activations, receipts.

The rules (docs/vendor-guide.md, "Online license delivery"), on top of the offline exchange
(`tmr.isv.offline`), which does the issuing and the receipt checks:

- a ticket (random, unguessable id) allows one set of one product with one quantity; it is
  NEW (the product's first set) or UPDATE (the next TMR ID for the trio holding the current
  set);
- the first activation binds the ticket to the request's trio (the three backend keys) and
  issues the set; the same ticket with the same trio gets the same stored update file again
  (an idempotent retry), with another trio it is refused (`TICKET_BOUND_ELSEWHERE`: that
  would be a second license);
- an unknown or expired ticket, an UPDATE ticket for a product without a current set, or one
  from another trio than the one holding it, is refused and nothing is issued;
- receipts for the ticket's set are checked as by `tmr vendor confirm` and mark the set
  installed.

State: ``portal.sqlite`` in the vendor directory (tickets and their bindings with the stored
update file). The issued sets stay in ``issued/`` and the confirmations in
``installations.sqlite``, as for the offline flow.

An activation reserves its TMR ID for the trio in ``portal.sqlite`` (committed) before it
issues, and binds the ticket after: if the service stops in between, the retry of the same
ticket by the same trio takes the set issued at the reserved ID (rebuilding its update file
if need be) instead of issuing another one, so no TMR ID is skipped and a new-license ticket
does not end up refused as ``ALREADY_LICENSED`` by its own set. An activation refused while
issuing (``WRONG_TRIO``, ...) drops its reservation.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tmr.errors import TmrError
from tmr.isv.offline import (
    check_request,
    confirm_receipts,
    issue_from_request,
    last_issued,
    recover_issued,
)
from tmr.isv.profile import VendorProfile, load_product
from tmr.licensing.curve import z85_key_bytes
from tmr.licensing.exchange import (
    ExchangeError,
    ExchangeReason,
    LicenseRequest,
    LicenseUpdate,
    ReceiptBundle,
    canonical,
    parse_update,
)
from tmr.licensing.model import UINT32_MAX

PORTAL_DB = "portal.sqlite"
TICKET_PREFIX = "tkt-"
TICKET_RE = re.compile(r"tkt-[A-Za-z0-9_-]{32}")


class TicketKind(enum.StrEnum):
    NEW = "new"  # the product's first set
    UPDATE = "update"  # the next TMR ID for the trio that holds the current set


class BindingState(enum.StrEnum):
    ISSUED = "issued"
    INSTALLED = "installed"  # the receipts were confirmed


class PortalReason(enum.StrEnum):
    BAD_TICKET = "BAD_TICKET"  # not a ticket id at all
    UNKNOWN_TICKET = "UNKNOWN_TICKET"
    TICKET_EXPIRED = "TICKET_EXPIRED"
    TICKET_BOUND_ELSEWHERE = "TICKET_BOUND_ELSEWHERE"  # used by another trio
    NO_CURRENT_SET = "NO_CURRENT_SET"  # an update ticket, but the product has no set yet
    ALREADY_LICENSED = "ALREADY_LICENSED"  # a new-license ticket for a product with a set
    NOT_ACTIVATED = "NOT_ACTIVATED"  # receipts for a ticket that issued nothing yet
    OTHER_SET = "OTHER_SET"  # receipts for another set than the ticket's


class PortalError(TmrError):
    """A ticket operation was refused; nothing was issued or recorded."""

    def __init__(self, reason: PortalReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Ticket:
    ticket_id: str
    kind: TicketKind
    product_code: int
    quantity: int
    tmr_id: int | None  # NEW: the first TMR ID (default: the next one of the product)
    expires: int | None  # the ticket can be redeemed until then (unix time)
    created: int
    trio: str | None  # the bound backends' keys (hex, sorted, comma separated)
    set_id: str | None
    bound_tmr_id: int | None
    state: BindingState | None

    def summary(self) -> dict[str, Any]:
        return {
            "ticket": self.ticket_id,
            "kind": self.kind.value,
            "product_code": self.product_code,
            "quantity": self.quantity,
            "tmr_id": self.bound_tmr_id if self.bound_tmr_id is not None else self.tmr_id,
            "expires": self.expires,
            "created": self.created,
            "bound": self.trio is not None,
            "set_id": self.set_id,
            "state": None if self.state is None else self.state.value,
        }


@dataclass(frozen=True)
class Activation:
    ticket: str
    update: LicenseUpdate
    replayed: bool  # True: the stored set of an earlier activation

    def to_obj(self) -> dict[str, Any]:
        return {
            "ticket": self.ticket,
            "replayed": self.replayed,
            "tmr_id": self.update.tmr_id,
            "set_id": self.update.set_id,
            "update": self.update.to_obj(),
        }


_COLUMNS = (
    "ticket_id, kind, product_code, quantity, tmr_id, expires, created,"
    " trio, set_id, bound_tmr_id, state"
)


def trio_of(request: LicenseRequest) -> str:
    return ",".join(sorted(z85_key_bytes(doc.public_key).hex() for doc in request.backends))


def check_ticket_id(ticket_id: str) -> None:
    if not TICKET_RE.fullmatch(ticket_id):
        raise PortalError(PortalReason.BAD_TICKET, "a ticket id looks like tkt-<32 characters>")


class TicketStore:
    """Tickets and activations of one vendor directory (thread-safe; one writer at a time)."""

    def __init__(self, vendor: VendorProfile) -> None:
        self.vendor = vendor
        self.path = vendor.directory / PORTAL_DB
        self._lock = threading.Lock()
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS tickets (ticket_id TEXT PRIMARY KEY,"
                " kind TEXT NOT NULL, product_code INTEGER NOT NULL, quantity INTEGER NOT NULL,"
                " tmr_id INTEGER,"
                " expires INTEGER, created INTEGER NOT NULL, trio TEXT, set_id TEXT,"
                " bound_tmr_id INTEGER, state TEXT, update_doc BLOB)"
            )
            have = {row[1] for row in db.execute("PRAGMA table_info(tickets)")}
            for column in ("pending_trio TEXT", "pending_tmr_id INTEGER"):
                if column.split()[0] not in have:  # a portal.sqlite of an earlier version
                    db.execute(f"ALTER TABLE tickets ADD COLUMN {column}")
        self.path.chmod(0o600)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._unlocked_transaction() as db:
            yield db

    @contextmanager
    def _unlocked_transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; the caller holds ``self._lock``."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _ticket(row: tuple[Any, ...]) -> Ticket:
        return Ticket(
            ticket_id=row[0],
            kind=TicketKind(row[1]),
            product_code=row[2],
            quantity=row[3],
            tmr_id=row[4],
            expires=row[5],
            created=row[6],
            trio=row[7],
            set_id=row[8],
            bound_tmr_id=row[9],
            state=None if row[10] is None else BindingState(row[10]),
        )

    def create(
        self,
        *,
        product_code: int,
        quantity: int,
        kind: TicketKind = TicketKind.NEW,
        tmr_id: int | None = None,
        expires: int | None = None,
        now: float | None = None,
    ) -> Ticket:
        from tmr.errors import UsageError

        if not 0 <= product_code <= UINT32_MAX:
            raise UsageError("product code must be a uint32")
        if not 1 <= quantity <= UINT32_MAX:
            raise UsageError("quantity must be at least 1")
        if tmr_id is not None and (kind is TicketKind.UPDATE or not 1 <= tmr_id <= UINT32_MAX):
            raise UsageError("--tmr-id is for a new-license ticket, at least 1")
        created = int(time.time() if now is None else now)
        if expires is not None and expires <= created:
            raise UsageError("the ticket's expiry is in the past")
        ticket_id = TICKET_PREFIX + secrets.token_urlsafe(24)
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO tickets ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL,"
                " NULL)",
                (ticket_id, kind.value, product_code, quantity, tmr_id, expires, created),
            )
        return self.get(ticket_id)

    def get(self, ticket_id: str) -> Ticket:
        check_ticket_id(ticket_id)
        with self._db() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM tickets WHERE ticket_id = ?", (ticket_id,)
            ).fetchone()
        if row is None:
            raise PortalError(PortalReason.UNKNOWN_TICKET, "this vendor has no such ticket")
        return self._ticket(row)

    def list(self) -> list[Ticket]:
        with self._db() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM tickets ORDER BY created, ticket_id")
            return [self._ticket(r) for r in rows.fetchall()]

    def activate(
        self, ticket_id: str, request: LicenseRequest, *, now: float | None = None
    ) -> Activation:
        """The update file for ``request`` under ``ticket_id`` (issued once, then replayed).

        Three steps, each committed: reserve the TMR ID for the trio, issue (or take the set
        an interrupted activation of this ticket and trio issued at that ID), bind."""
        check_ticket_id(ticket_id)
        check_request(self.vendor, request)  # proofs first: a made-up trio binds nothing
        trio = trio_of(request)
        stamp = time.time() if now is None else now
        with self._lock:
            with self._unlocked_transaction() as db:
                row = db.execute(
                    f"SELECT {_COLUMNS}, update_doc, pending_trio, pending_tmr_id FROM tickets"
                    " WHERE ticket_id = ?",
                    (ticket_id,),
                ).fetchone()
                if row is None:
                    raise PortalError(PortalReason.UNKNOWN_TICKET, "this vendor has no such ticket")
                ticket = self._ticket(row[:-3])
                stored, pending_trio, pending_tmr_id = row[-3], row[-2], row[-1]
                if ticket.trio is not None:
                    if ticket.trio != trio:
                        raise PortalError(
                            PortalReason.TICKET_BOUND_ELSEWHERE,
                            f"the ticket was used by other backends (set {ticket.set_id}, "
                            f"#{ticket.bound_tmr_id}); a second trio needs its own license",
                        )
                    update = parse_update(bytes(stored), "stored update")
                    return Activation(ticket=ticket_id, update=update, replayed=True)
                if pending_trio is not None and pending_trio != trio:
                    raise PortalError(
                        PortalReason.TICKET_BOUND_ELSEWHERE,
                        f"other backends are activating this ticket (#{pending_tmr_id}); "
                        "a second trio needs its own license",
                    )
                recovering = pending_trio is not None
                if recovering:
                    tmr_id = int(pending_tmr_id)
                else:
                    if ticket.expires is not None and stamp >= ticket.expires:
                        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ticket.expires))
                        raise PortalError(
                            PortalReason.TICKET_EXPIRED, f"the ticket expired at {when}"
                        )
                    tmr_id = self._next_tmr_id(ticket)
                    db.execute(
                        "UPDATE tickets SET pending_trio = ?, pending_tmr_id = ?"
                        " WHERE ticket_id = ?",
                        (trio, tmr_id, ticket_id),
                    )
            try:
                update = self._issue(ticket, request, trio, tmr_id, recovering, now)
            except TmrError:
                # refused while issuing (WRONG_TRIO, OLDER_TMR_ID, ...): nothing was issued,
                # the ticket stays unbound
                with self._unlocked_transaction() as db:
                    db.execute(
                        "UPDATE tickets SET pending_trio = NULL, pending_tmr_id = NULL"
                        " WHERE ticket_id = ?",
                        (ticket_id,),
                    )
                raise
            with self._unlocked_transaction() as db:
                db.execute(
                    "UPDATE tickets SET trio = ?, set_id = ?, bound_tmr_id = ?, state = ?,"
                    " update_doc = ?, pending_trio = NULL, pending_tmr_id = NULL"
                    " WHERE ticket_id = ?",
                    (
                        trio,
                        update.set_id,
                        update.tmr_id,
                        BindingState.ISSUED.value,
                        canonical(update.to_obj()),
                        ticket_id,
                    ),
                )
        return Activation(ticket=ticket_id, update=update, replayed=False)

    def _next_tmr_id(self, ticket: Ticket) -> int:
        """The TMR ID an activation of ``ticket`` issues (refusals before anything is issued)."""
        record = load_product(self.vendor, ticket.product_code)
        last = 0 if record is None else record.last_tmr_id
        current = last_issued(self.vendor, ticket.product_code)
        if ticket.kind is TicketKind.UPDATE:
            if current is None:
                raise PortalError(
                    PortalReason.NO_CURRENT_SET,
                    f"an update ticket needs a current set of product {ticket.product_code}; "
                    "there is none (activate a new-license ticket first)",
                )
            return last + 1
        if current is not None:
            raise PortalError(
                PortalReason.ALREADY_LICENSED,
                f"product {ticket.product_code} already has a set (#{current.tmr_id}); "
                "a new-license ticket cannot issue a second one (use an update ticket)",
            )
        return ticket.tmr_id if ticket.tmr_id is not None else last + 1

    def _issue(
        self,
        ticket: Ticket,
        request: LicenseRequest,
        trio: str,
        tmr_id: int,
        recovering: bool,
        now: float | None,
    ) -> LicenseUpdate:
        if recovering:
            # an earlier activation of this ticket by this trio reserved tmr_id and stopped:
            # its set, if it got as far as recording it (and it is this trio's, this quantity)
            found = recover_issued(self.vendor, ticket.product_code, tmr_id)
            if (
                found is not None
                and found.quantity == ticket.quantity
                and ",".join(sorted(c.copy.backend_key for c in found.copies)) == trio
            ):
                return found
        # issue_from_request refuses an update from other backends (WRONG_TRIO) and a TMR ID
        # not above the last one issued (OLDER_TMR_ID)
        return issue_from_request(
            self.vendor,
            request,
            product_code=ticket.product_code,
            quantity=ticket.quantity,
            tmr_id=tmr_id,
            now=now,
        )

    def receipts(
        self, ticket_id: str, bundle: ReceiptBundle, *, now: float | None = None
    ) -> dict[str, Any]:
        """Confirm the receipts of the ticket's set (as `tmr vendor confirm`), mark it installed.

        A retry after the set was confirmed through this ticket answers the same again."""
        ticket = self.get(ticket_id)
        if ticket.set_id is None:
            raise PortalError(PortalReason.NOT_ACTIVATED, "the ticket has issued no set yet")
        if bundle.set_id != ticket.set_id:
            raise PortalError(
                PortalReason.OTHER_SET,
                f"the receipts are for set {bundle.set_id}, the ticket issued {ticket.set_id}",
            )
        try:
            summary = confirm_receipts(self.vendor, bundle, now=now).summary()
            summary["already_confirmed"] = False
        except ExchangeError as exc:
            if exc.reason is not ExchangeReason.ALREADY_CONFIRMED:
                raise
            if ticket.state is not BindingState.INSTALLED:
                raise
            summary = {
                "confirmed": True,
                "already_confirmed": True,
                "product_code": ticket.product_code,
                "tmr_id": ticket.bound_tmr_id,
                "set_id": ticket.set_id,
            }
        with self._transaction() as db:
            db.execute(
                "UPDATE tickets SET state = ? WHERE ticket_id = ?",
                (BindingState.INSTALLED.value, ticket_id),
            )
        summary["ticket"] = ticket_id
        return summary


def ticket_list_obj(tickets: list[Ticket]) -> list[dict[str, Any]]:
    return [t.summary() for t in tickets]


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("ascii")
