"""Workload tools of the end-to-end tests: a load generator, its history, and a checker.

    tmr workload run --cluster DIR --clients 20 --duration 60 --out history.jsonl
    tmr workload handles --cluster DIR --out handles.json      # right after the run
    tmr workload check history.jsonl --lq 20 --handles handles.json

See `tmr.workload.history` (file formats), `tmr.workload.generator` and
`tmr.workload.checker` (the invariants I1, I7, I8 of docs/design.md §8).
"""
