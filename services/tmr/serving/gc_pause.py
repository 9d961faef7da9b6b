"""Pausing Python's cyclic garbage collector for one bulk step of a service's loop.

A takeover at 100,000 held handles decodes a table of 100,000 records (about a million
objects: lists, strings, records) and adopts it. None of them is garbage, yet every few
hundred new containers start a collection, and the older generations' collections walk all
of them again: measured in `bench.takeover_micro`, 35-45 % of a takeover's time. Paused for
that one step, the collector runs again afterwards as before (reference counting frees
everything else meanwhile, as always). Only steps bounded by one message are paused: the
loop never runs with the collector off between turns.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# A peer frame this large is a bulk step (a table, a snapshot): its decode and its handling
# run with the collector paused. Everyday frames (a few ops) are far below it.
BULK_FRAME = 256 * 1024


@contextmanager
def gc_paused(when: bool = True) -> Iterator[None]:
    """Run the block with the cyclic collector paused if `when` (and it was running): it is
    enabled again when the block ends, also by an exception. Nested pauses are one pause."""
    if not when or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
