"""Python's cyclic garbage collector in a long-running service: sized for a server's heap
while the service's loop runs, and paused for one bulk step.

**Sized** (`service_collector`, entered by `ServiceLoop.run`). CPython 3.11 (Debian 12's,
where the services run and where this was measured) collects its youngest generation every
700 net allocations of container objects (the default threshold; 2,000 from 3.13, and 3.14
collects the older generations incrementally: to be measured again there).
What survives a young collection is what is in flight at that moment: the messages of a
turn, the entries awaiting the backends. Two survivals put an object in the oldest
generation. A busy turn allocates more than 700 containers, and under 100 clients cycling
in-flight objects piled up in the oldest generation fast enough to start a full collection
every 3 s. A full collection walks every object the service keeps: at 90,000 held handles,
59-76 ms each time, a stall of the loop that clients see in their p99 (`bench.heartbeat_cost
--clients 0 --held 90000 --cycle 3` with `gc.callbacks` counting; docs/performance.md).
With `YOUNG_THRESHOLD` allocations between young collections, they ran about 50 times less
often (2,043 -> 41 in that run, generation 1 185 -> 3: far fewer in-flight objects promoted),
and no full collection ran. Nothing is exempt from collection: young collections still run
when the heap grows or cyclic garbage piles up, and the oldest generation is still
collected when what was promoted into it since its last collection exceeds a quarter of it
(CPython's own rule).
Cyclic garbage waits at most `YOUNG_THRESHOLD` allocations longer for a young collection.

**Paused** (`gc_paused`). A takeover at 100,000 held handles decodes a table of 100,000
records (about a million objects: lists, strings, records) and adopts it. None of them is
garbage, yet every few hundred new containers start a collection, and the older generations'
collections walk all of them again: measured in `bench.takeover_micro`, 35-45 % of a
takeover's time. Paused for that one step, the collector runs again afterwards as before
(reference counting frees everything else meanwhile, as always). Only steps bounded by one
message are paused: the loop never runs with the collector off between turns.

**Kept out of reach** (`bulk_step`, the server's bulk steps). What such a step builds is
long-lived: the adopted table of a takeover. Left to the collector, the first allocation
after the pause starts a young collection that walks all of it (48-188 ms at 100,000
handles, measured right after each takeover, while the requests that waited for it are being
served), and every later collection of the older generations walks it again (150-190 ms for
a whole heap of that size).
After the step everything alive is moved into CPython's permanent generation (`gc.freeze`),
which no collection walks, unless the step left the server neither taking over nor active
(a table that arrives after the takeover ended is not kept). Reference counting still frees
what is frozen: a released handle's record, or a whole table when a later term replaces it
(an adopted table holds no reference cycle: `tests/unit/serving/test_collector.py` replaces
one and finds it freed with no cyclic garbage). Cyclic garbage frozen while alive (the few
objects of the turn under way) is collected only after the thaw: when the server's term
ends (demoted, fenced, or a takeover given up), `thaw` gives everything frozen back to the
collector, which collects it as usual from then on.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

# A peer frame this large is a bulk step (a table, a snapshot): its decode and its handling
# run with the collector paused. Everyday frames (a few ops) are far below it.
BULK_FRAME = 256 * 1024

# Net allocations of container objects between two collections of the youngest generation
# while a service's loop runs (CPython's default: 700). The older generations keep their
# defaults (a collection of generation 1 every 10 young ones, of generation 2 by CPython's
# rule). Measured at this size (docs/performance.md): a young collection took 3.7 ms on
# average in the server (at most 7 ms) and about 7 ms in a backend (at most 14 ms), one of
# generation 1 about 17 ms (at most 22 ms), but seldom: 41 young ones in the server and 6 in
# each backend over a run that took 2,043 and 228 at 700.
YOUNG_THRESHOLD = 20_000


class _Sizing:
    """Who has the thresholds sized: they belong to the process, services to threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entered = 0
        self.saved: tuple[int, int, int] = (0, 0, 0)  # before the first block entered
        self.sized: tuple[int, int, int] = (0, 0, 0)  # as the last entry left them

    def enter(self) -> None:
        with self.lock:
            if self.entered == 0:
                self.saved = gc.get_threshold()
            self.entered += 1
            young, middle, old = gc.get_threshold()
            if 0 < young < YOUNG_THRESHOLD:  # 0: automatic collection is off, and stays so
                gc.set_threshold(YOUNG_THRESHOLD, middle, old)
            self.sized = gc.get_threshold()

    def leave(self) -> None:
        with self.lock:
            self.entered -= 1
            if self.entered == 0 and gc.get_threshold() == self.sized:
                gc.set_threshold(*self.saved)


_sizing = _Sizing()


@contextmanager
def service_collector() -> Iterator[None]:
    """Run the block with the youngest generation's threshold at `YOUNG_THRESHOLD` (if it
    was lower, and not 0), and put the thresholds back when it ends, also by an exception.
    The thresholds belong to the process: blocks that overlap (services run in threads of
    one process, as in tests) each size them on entry, and the last one to end puts back
    what was there before the first, unless the program set other thresholds meanwhile
    (then those stay). The services take SIGINT through the loop's self-pipe, so no
    KeyboardInterrupt comes between the entry's count and its ``try``."""
    _sizing.enter()
    try:
        yield
    finally:
        _sizing.leave()


@contextmanager
def gc_paused(when: bool = True, keep: Callable[[], bool] | None = None) -> Iterator[None]:
    """Run the block with the cyclic collector paused if `when` (and it was running): it is
    enabled again when the block ends, also by an exception. Nested pauses are one pause.
    With `keep`, once the block has run (not by an exception) and if `keep()` says what it
    built is kept, every object alive is frozen (`gc.freeze`) before the collector runs
    again: the first allocation after `gc.enable()` would start the young collection that
    walks everything the step built."""
    if not when or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
        if keep is not None and keep():
            gc.freeze()
            _freeze.on = True
    finally:
        gc.enable()


def bulk_step(
    when: bool = True, keep: Callable[[], bool] = lambda: True
) -> AbstractContextManager[None]:
    """`gc_paused` for one bulk step of the server if `when`, its result frozen if `keep()`
    says it is kept (the server is taking over or active): out of the collector's reach,
    still freed by reference counting. Freezing is process-wide: services run in threads of
    one process (tests) share it."""
    return gc_paused(when, keep)


class _Freeze:
    """Whether a `bulk_step` froze its result and no `thaw` has given it back (the process's,
    as freezing is). Kept here because CPython counts frozen objects one by one:
    `gc.get_freeze_count()` walks the whole permanent generation (7 ms at a million objects,
    everything alive at the freeze), and the server asks `frozen` for every request whose
    effects carry events (every checkout's): counted there, a server after a takeover at
    10,000 held handles served 300 checkouts a second instead of 3,000."""

    on = False


_freeze = _Freeze()


def frozen() -> bool:
    """Whether anything is frozen (a `bulk_step`'s result not given back yet by `thaw`):
    O(1), never a count of the frozen objects."""
    return _freeze.on


def thaw() -> None:
    """Give everything `bulk_step` froze back to the collector (`gc.unfreeze`: into the
    oldest generation), e.g. when the state it built is no longer the server's."""
    gc.unfreeze()
    _freeze.on = False
