"""What the TMR server's poll loop calls to run WebAdmin, metrics and usage reports.

`ServerService` owns one `WebRuntime`. The hooks are cheap and never block:

- `on_effects(fx)` / `on_backend_reply(name, msg)` / `on_checkout(...)`: metrics and the
  denial record; `end_turn()` once per loop turn adds the turn's counts to the metrics;
- `publish_due(now, headline)` then `publish(status, handles, now)`: a new snapshot for the
  web thread: every `web_publish_interval` while someone looks at the page or the API
  (`wants_handles()`, which also asks for the handles), else every `IDLE_PUBLISH_INTERVAL`,
  and at once when the headline (role, epoch, backends up) changed. The loop hands over
  what it read; the web thread's first reader builds the document (`WebAdmin.publish`);
- `submit_usage(...)`: queue a usage report for the worker thread; the loop polls
  `wake_socket` and sends what `take_usage_replies()` returns.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import zmq

from tmr.config import ServerConfig
from tmr.errors import ErrorCode
from tmr.keys import NodeKeys
from tmr.logs import log
from tmr.protocol.client_api import UsageRequest
from tmr.replication.leader import Effects
from tmr.replication.messages import PeerReply
from tmr.report.denials import FILE_NAME, DenialLog
from tmr.report.worker import CTL_TOKEN, MAX_WINDOW, UsageJob, UsageWorker
from tmr.web.metrics import ServerMetrics
from tmr.web.server import ReleaseRequest, WebAdmin, read_password, read_token, tls_context
from tmr.web.snapshot import build_snapshot

DAY = 86400.0
# Seconds between snapshots while nobody looked at the page or the API (`/metrics` and
# `/healthz` read the latest one; the page calls a snapshot stale after 5 s). A status walks
# every product of every backend: with 1,000 products, twice a second cost an idle server
# about a tenth of a core (docs/performance.md).
IDLE_PUBLISH_INTERVAL = 2.0


class WebRuntime:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.denials = DenialLog(cfg.state_dir / FILE_NAME, cfg.denial_retention_days * DAY)
        self.denials.load()
        self.denials_since_start: dict[str, int] = {}
        self.web: WebAdmin | None = None
        self.metrics = ServerMetrics(self._snapshot)
        self.worker: UsageWorker | None = None
        self.web_address: tuple[str, int] | None = None
        self._last_publish = float("-inf")
        self._headline: object = None
        # (rid, asked on the control socket) of a report queued or running -> its token
        self._usage_pending: dict[tuple[str, bool], Any] = {}

    def _snapshot(self) -> dict[str, Any] | None:
        return self.web.snapshot() if self.web is not None else None

    # ---------------------------------------------------------------- lifecycle

    def open(self, ctx: zmq.Context[zmq.Socket[bytes]], node_keys: NodeKeys) -> None:
        """Start the usage worker and, when ``web_listen`` is set, the web thread."""
        cfg = self.cfg
        self.worker = UsageWorker(
            ctx,
            cfg.name,
            cfg.backends,
            node_keys,
            self.denials,
            timeout=cfg.usage_query_timeout,
            row_limit=cfg.usage_max_rows,
        )
        self.worker.start()
        if cfg.web_listen is None:
            return
        auth = None
        if cfg.web_auth_user and cfg.web_auth_password_file:
            auth = (cfg.web_auth_user, read_password(cfg.web_auth_password_file))
        token = read_token(cfg.web_auth_token_file) if cfg.web_auth_token_file else None
        tls = None
        if cfg.web_tls_cert_file and cfg.web_tls_key_file:
            tls = tls_context(
                cfg.web_tls_cert_file, cfg.web_tls_key_file, cfg.web_tls_client_ca_file
            )
        self.web = WebAdmin(
            cfg.web_listen,
            self.metrics.registry,
            auth=auth,
            token_sha256=token,
            tls=tls,
            client_certificates=tls is not None and cfg.web_tls_client_ca_file is not None,
            vip=cfg.vip,
        )
        self.web_address = self.web.start()
        log(
            "web_start",
            listen=f"{self.web_address[0]}:{self.web_address[1]}",
            tls=tls is not None,
            client_certificates=cfg.web_tls_client_ca_file is not None,
            basic_auth=auth is not None,
            token_auth=token is not None,  # never the token itself
        )

    @property
    def wake_socket(self) -> zmq.Socket[bytes] | None:
        return self.worker.wake_socket if self.worker is not None else None

    def close(self) -> None:
        if self.web is not None:
            self.web.stop()
            self.web = None
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    # ---------------------------------------------------------------- hooks

    # Metrics are served by the web thread only: without it they are not kept at all.

    def on_effects(self, fx: Effects) -> None:
        if self.web is not None:
            self.metrics.on_effects(fx)

    def end_turn(self) -> None:
        """Once per loop turn: the turn's event counts into the metrics (`ServerMetrics.flush`)."""
        if self.web is not None:
            self.metrics.flush()

    def on_backend_reply(self, backend: str, msg: PeerReply) -> None:
        if self.web is not None:
            self.metrics.on_reply(backend, msg)

    def on_checkout(self, firm: int, product: int, rid: str, fx: Effects) -> None:
        """Count a NO_LICENSE_AVAILABLE answer to this checkout as a denial (POLICY_DENIED
        answers have a metric of their own)."""
        for r in fx.replies:
            if r.rid == rid and r.error == ErrorCode.POLICY_DENIED:
                self.metrics.on_policy_denial(firm, product)
            if r.rid == rid and r.error == ErrorCode.NO_LICENSE_AVAILABLE:
                self.denials.record((firm, product), time.time())
                self.metrics.on_denial(firm, product)
                key = f"{firm}:{product}"
                self.denials_since_start[key] = self.denials_since_start.get(key, 0) + 1

    # ---------------------------------------------------------------- snapshots

    def publish_due(self, now: float, headline: object = None) -> bool:
        """Is a new snapshot due? `headline`: what must show at once when it changes (the
        server passes its role, epoch and which backends are up); a True answer expects the
        caller to publish now."""
        if self.web is None:
            return False
        interval = self.cfg.web_publish_interval
        if not self.web.wants_handles():
            interval = max(interval, IDLE_PUBLISH_INTERVAL)
        if headline == self._headline and now < self._last_publish + interval:
            return False
        self._headline = headline
        return True

    def wants_handles(self) -> bool:
        return self.web is not None and self.web.wants_handles()

    def publish(
        self,
        status: Mapping[str, Any],
        handles: Sequence[Mapping[str, Any]] | None,
        now: float,
        queue: Sequence[Mapping[str, Any]] | None = None,
        denials: Sequence[Mapping[str, Any]] | None = None,
        denial_records: Mapping[str, int] | None = None,
    ) -> None:
        """`queue`: the queued checkouts (`Leader.queue_view`), listed like `handles`;
        `denials`: this server's recent refusals (`DenialRecorder.recent_view`)."""
        if self.web is None:
            return
        self._last_publish = now
        # Built by the first reader (`WebAdmin.snapshot`), from views the loop made for it
        # alone: nothing it is built from changes after this call.
        build = functools.partial(
            build_snapshot,
            status,
            now_wall=time.time(),
            lease=self.cfg.lease_seconds,
            handles=handles,
            max_handles=self.cfg.web_max_handles,
            queue=queue,
            peer_url=self.cfg.web_peer_url,
            denials=dict(self.denials_since_start),
            recent_denials=denials,
            denial_records=denial_records,
        )
        self.web.publish(build)
        self.metrics.prune()

    # ---------------------------------------------------------------- releases

    def take_releases(self) -> list[ReleaseRequest]:
        """Releases an administrator asked on WebAdmin (`ServerService` runs them)."""
        return self.web.take_releases() if self.web is not None else []

    def answer_release(self, request_id: int, answer: dict[str, Any]) -> None:
        if self.web is not None:
            self.web.answer_release(request_id, answer)

    # ---------------------------------------------------------------- usage reports

    def submit_usage(
        self,
        token: Any,
        req: UsageRequest,
        status: Mapping[str, Any],
        denial_backends: frozenset[str] = frozenset(),
    ) -> str | None:
        """Queue a report; an error message if it cannot be (None when queued).
        ``denial_backends``: the backends that keep denial records (read if up)."""
        if self.worker is None:
            return "usage reports are not available on this server"
        key = (req.rid, token == CTL_TOKEN)
        if key in self._usage_pending:
            # A retry of a report in progress (the SDK retries every attempt_timeout, maybe
            # on a new connection): its answer goes to the latest one.
            self._usage_pending[key] = token
            return None
        if req.until - req.since > MAX_WINDOW:
            return f"the window is longer than {MAX_WINDOW / DAY:g} days: ask for a shorter one"
        up = tuple(str(b["name"]) for b in status.get("backends", []) if b.get("up"))
        down = tuple(str(b["name"]) for b in status.get("backends", []) if not b.get("up"))
        quantities = {
            (int(lic["firm"]), int(lic["product"])): int(lic.get("quantity") or 0)
            for lic in status.get("licenses", [])
        }
        keep = tuple(name for name in up if name in denial_backends)
        job = UsageJob(token, req.rid, req.since, req.until, up, quantities, down, keep)
        if not self.worker.submit(job):
            return "too many usage reports in progress; retry later"
        self._usage_pending[key] = token
        return None

    def take_usage_replies(self) -> list[tuple[Any, bytes]]:
        if self.worker is None:
            return []
        return [
            (self._usage_pending.pop((rid, token == CTL_TOKEN), token), payload)
            for token, rid, payload in self.worker.take()
        ]
