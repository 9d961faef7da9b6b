"""Handle ids and the index of the handles a leader knows in its term.

See docs/design.md §4 (checkout identity) and §7.1 (handles owned by keys). A handle id
carries the epoch that granted it, `h<counter>-<server>-<random>` (`handle_id`), so a
deposed server can tell a newer leader's handle (`granted_after`). `HandleIndex` maps each
handle to its product and each (owner, client id, request id) to its handle, so a retried
checkout gets the same handle, and remembers the requests of released handles (bounded),
so a retry after the release is not granted again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from tmr.replication.types import Epoch, HandleRecord, ProductKey

RECENT_RELEASED = 100_000  # (owner, client id, request id) of released handles remembered per term

Request = tuple[str, str, str]  # (owner, client id, request id)


def handle_id(epoch: Epoch, random_part: str) -> str:
    """A new handle id. Random, not a counter: it cannot be guessed (and is useless to
    another key)."""
    return f"h{epoch.counter}-{epoch.server}-{random_part}"


def granted_after(handle: str, epoch: Epoch) -> bool:
    """Whether `handle` was granted in an epoch newer than `epoch` (False: not, or not a
    handle id at all)."""
    if not handle.startswith("h"):
        return False
    counter, _, rest = handle[1:].partition("-")
    server, _, _n = rest.rpartition("-")
    if not counter.isdigit() or not server:
        return False
    return Epoch(int(counter), server) > epoch


class HandleIndex:
    def __init__(self) -> None:
        self._key: dict[str, ProductKey] = {}
        self._by_request: dict[Request, str] = {}
        self._released: OrderedDict[Request, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._key)

    def add(self, handle: str, key: ProductKey, request: Request) -> None:
        self._key[handle] = key
        self._by_request[request] = handle

    def adopt(self, key: ProductKey, table: Iterable[HandleRecord]) -> None:
        """`add` for every handle of a table adopted at takeover."""
        for r in table:
            self._key[r.handle] = key
            self._by_request[(r.owner, r.client_id, r.request_id)] = r.handle

    def key_of(self, handle: str) -> ProductKey | None:
        return self._key.get(handle)

    def by_request(self, request: Request) -> str | None:
        return self._by_request.get(request)

    def was_released(self, request: Request) -> bool:
        """A handle granted for `request` was released since (in this term)."""
        return request in self._released

    def released(self, request: Request) -> None:
        """The handle of `request` is being released (it stays known until `forget`)."""
        self._by_request.pop(request, None)
        self._released[request] = None
        if len(self._released) > RECENT_RELEASED:
            self._released.popitem(last=False)

    def abort(self, handle: str, request: Request) -> None:
        """Its grant was aborted before any answer (`productlog.abort_grants`): forgotten, and
        a retry of `request` is a fresh admission."""
        self._key.pop(handle, None)
        if self._by_request.get(request) == handle:
            del self._by_request[request]

    def forget(self, handle: str) -> None:
        """Its release committed."""
        del self._key[handle]
