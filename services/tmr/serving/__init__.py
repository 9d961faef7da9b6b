"""What both services run on (design.md §2): the poll loop with its timers, signals and
clean shutdown (`loop`), the control-socket commands as a registry of classes (`commands`),
and the one ZAP handler that admits CURVE keys (`zap`). The TMR server and the backend bring
their sockets, their commands and their allowlist; the runtime does the rest the same way
for both.
"""
