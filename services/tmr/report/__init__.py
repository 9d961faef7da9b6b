"""Usage audit: the backends' usage record, denial counts, `tmr report usage`.

- `records`: a backend answers `UsageQuery` from its SQLite usage table (read-only);
- `denials`: the TMR server's record of refused checkouts (NO_LICENSE_AVAILABLE);
- `summary`: per-license peak seats, seat-hours and denials over a window (pure);
- `worker`: the TMR server's background thread that queries the backends and summarises.
"""
