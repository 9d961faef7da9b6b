"""WebAdmin, /api/status and /metrics of the TMR server.

The server's poll loop owns the `Leader`; it publishes a status snapshot (`snapshot`) every
``web_publish_interval`` seconds and feeds the counters and histograms (`metrics`) as it
applies effects. The HTTP server (`server`) runs in a background thread and only ever reads
the latest published snapshot. `runtime.WebRuntime` ties these together for the service.
"""
