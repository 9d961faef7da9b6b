"""Usage audit: the backends' usage and denial records, `tmr report usage|denials`.

- `records`: a backend answers `UsageQuery` and `DenialQuery` from its SQLite tables
  (read-only);
- `denials`: the TMR server's refusals (who, what, why), buffered for the backends and kept
  recent in memory; and its older per-server counts (`DenialLog`);
- `summary`: per-license peak seats, seat-hours and denials, and the denial breakdown by
  license, user, host and code, over a window (pure);
- `worker`: the TMR server's background thread that queries the backends and summarises.
"""
