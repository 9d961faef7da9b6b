"""Prometheus metrics of the TMR server (`prometheus_client`, one registry per server).

Two kinds:

- event metrics (counters, histograms) fed by the poll loop as it applies the leader's
  effects (`ServerMetrics.on_effects`, `on_reply`, `on_denial`): checkouts, releases,
  expiries, client errors by code, replication round latency and group-commit batch size;
- state gauges computed at scrape time from the latest published snapshot
  (`SnapshotCollector`): role, epoch, backends up, quorum margin, seats and LQ per license.

Event counts are kept as plain integers while the loop applies effects and added to the
prometheus counters once per loop turn (`ServerMetrics.flush`, called by the server's loop):
each prometheus increment takes a lock, and there are several events per checkout. A scrape
sees the counts of the last finished turn.

Round latency is measured per message id: from the moment an ACCEPT (or SNAPSHOT) is sent
to a backend until that backend's ACCEPTED for the same id arrives. Nothing here decides
anything; it only watches.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tmr.expiry import ExpiryState
from tmr.licensing.effective import CopyProblem
from tmr.replication.leader import Effects
from tmr.replication.messages import Accept, Accepted, PeerReply, Snapshot
from tmr.replication.types import CopyReason

ROLES = ("standby", "takeover", "active", "fenced")
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
INFLIGHT_MAX_AGE = 30.0  # forget sends whose answer never came (the leader timed them out)

_EVENT_COUNTERS = {
    "handle_granted": "checkouts",
    "handle_released": "releases",
    "handle_expired": "expiries",
}


class CopyRefusal(enum.StrEnum):
    """Why an up backend's copy of a license is refused (tmr_license_copies_refused's reason)."""

    BELOW_FLOOR = "BELOW_FLOOR"  # older than the trio's replicated TMR ID floor
    EXPIRED = "EXPIRED"  # expired at the trio's trusted time, whatever the backend's clock says
    CLOCK_ROLLBACK = "CLOCK_ROLLBACK"  # the backend's clock guard saw its clock set back
    CHECK_FAILED = "CHECK_FAILED"  # the backend's own license check refused a replicated entry


def refusal_reason(text: str) -> CopyRefusal:
    """The class of a refusal text: the leader's ("below floor: holds #7, the trio's floor is
    #8", "expired: ...") or the backend's own (any other text: its license check failed)."""
    if text.startswith(CopyReason.BELOW_FLOOR):
        return CopyRefusal.BELOW_FLOOR
    if text.startswith(CopyReason.EXPIRED):
        return CopyRefusal.EXPIRED
    if text.startswith(CopyReason.CLOCK_ROLLBACK):
        return CopyRefusal.CLOCK_ROLLBACK
    return CopyRefusal.CHECK_FAILED


def refused_copies(snap: Mapping[str, Any]) -> dict[str, dict[CopyRefusal, int]]:
    """Per license ("firm:product"), the number of up backends whose copy is refused, by
    reason: refusals the leader reports for a backend (its floors, or the backend's refusal of
    a replicated entry), and copies an up backend itself reports as not valid because they are
    below its floor or its clock went back. A backend counts once per license and reason;
    a copy that merely expired for everyone is not a refusal (the license is unavailable)."""
    seen: dict[str, set[tuple[int, CopyRefusal]]] = {}
    for b in snap["backends"]:
        if not b.get("up"):
            continue
        for key, text in (b.get("refused") or {}).items():
            seen.setdefault(str(key), set()).add((int(b["index"]), refusal_reason(str(text))))
    for lic in snap["licenses"]:
        for b in lic.get("backends", []):
            reason = str(b.get("reason") or "")
            if (
                b.get("up")
                and not b.get("valid")
                and reason
                in (
                    CopyReason.BELOW_FLOOR,
                    CopyReason.CLOCK_ROLLBACK,
                )
            ):
                seen.setdefault(str(lic["key"]), set()).add(
                    (int(b["index"]), refusal_reason(reason))
                )
    out: dict[str, dict[CopyRefusal, int]] = {}
    for key, pairs in seen.items():
        counts = out.setdefault(key, {})
        for _, why in pairs:
            counts[why] = counts.get(why, 0) + 1
    return out


def _license_labels(text: Any) -> tuple[str, str]:
    firm, _, product = str(text).partition(":")
    return firm, product


class ServerMetrics:
    """The registry and the event metrics; `collector` adds the snapshot gauges."""

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any] | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.clock = clock
        r = self.registry
        labels = ["firm", "product"]
        self.checkouts = Counter(
            "tmr_checkouts", "Seats checkouts granted (handles), by license", labels, registry=r
        )
        self.releases = Counter(
            "tmr_releases", "Handles released by their clients, by license", labels, registry=r
        )
        self.expiries = Counter(
            "tmr_expiries", "Handles expired (lease not renewed), by license", labels, registry=r
        )
        self.denials = Counter(
            "tmr_denials",
            "Checkouts refused with NO_LICENSE_AVAILABLE (all seats in use), by license",
            labels,
            registry=r,
        )
        self.policy_denials = Counter(
            "tmr_policy_denials",
            "Checkouts refused with POLICY_DENIED (a rule of the policy file), by license",
            labels,
            registry=r,
        )
        self.errors = Counter(
            "tmr_client_errors", "Error replies to clients, by error code", ["code"], registry=r
        )
        self.handshakes_denied = Counter(
            "tmr_handshakes_denied",
            "CURVE handshakes refused by ZAP (key not allowed), by socket",
            ["socket"],
            registry=r,
        )
        self.round_latency = Histogram(
            "tmr_replication_round_seconds",
            "Replication round latency: ACCEPT (kind accept), SNAPSHOT (snapshot) or commit "
            "notice (notice, an ACCEPT without entries) sent to a backend until its ACCEPTED",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_ops = Histogram(
            "tmr_replication_batch_ops",
            "Ops per ACCEPT sent to a backend (group commit batch size)",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._inflight: dict[tuple[str, int], tuple[float, str]] = {}
        self._children: dict[tuple[str, str], Any] = {}
        self._rounds: dict[str, Any] = {}  # round_latency's child per kind of round
        # Counts of this loop turn, not yet added to the counters (`flush`).
        self._events: dict[tuple[str, str], int] = {}
        self._errors: dict[str, int] = {}
        r.register(SnapshotCollector(snapshot, clock))

    # ---------------------------------------------------------------- poll-loop hooks

    def on_effects(self, fx: Effects) -> None:
        if fx.events:
            events = self._events
            for ev in fx.events:
                name = _EVENT_COUNTERS.get(ev.get("event", ""))
                if name is not None:
                    key = (name, str(ev.get("license")))
                    events[key] = events.get(key, 0) + 1
        for reply in fx.replies:
            if reply.error is not None:
                code = reply.error.value
                self._errors[code] = self._errors.get(code, 0) + 1
        if fx.send:
            now = self.clock()
            for backend, msg in fx.send:
                if isinstance(msg, Accept) and msg.entries:
                    self.batch_ops.observe(sum(len(e.ops) for e in msg.entries))
                    self._inflight[(backend, msg.mid)] = (now, "accept")
                elif isinstance(msg, Accept):  # a commit notice: no ops, not a batch
                    self._inflight[(backend, msg.mid)] = (now, "notice")
                elif isinstance(msg, Snapshot):
                    self._inflight[(backend, msg.mid)] = (now, "snapshot")

    def flush(self) -> None:
        """Add the counts gathered since the last flush to the prometheus counters (once per
        loop turn: one locked increment per label set, not one per event)."""
        if self._events:
            events, self._events = self._events, {}
            for (name, license_text), n in events.items():
                self._child(name, license_text).inc(n)
        if self._errors:
            errors, self._errors = self._errors, {}
            for code, n in errors.items():
                self.errors.labels(code).inc(n)

    def _child(self, name: str, license_text: str) -> Any:
        """The labelled counter child, cached: `labels()` is costly on the hot path."""
        key = (name, license_text)
        child = self._children.get(key)
        if child is None:
            counter: Counter = getattr(self, name)
            child = self._children[key] = counter.labels(*_license_labels(license_text))
        return child

    def on_reply(self, backend: str, msg: PeerReply) -> None:
        sent = self._inflight.pop((backend, msg.mid), None)
        if sent is not None and isinstance(msg, Accepted):
            kind = sent[1]
            child = self._rounds.get(kind)
            if child is None:  # `labels()` is costly: one child per kind, kept
                child = self._rounds[kind] = self.round_latency.labels(kind)
            child.observe(max(0.0, self.clock() - sent[0]))

    def on_handshake_denied(self, socket: str) -> None:
        """A refused CURVE handshake (called by the loop's ZAP handler, `tmr.serving.zap`)."""
        self.handshakes_denied.labels(socket).inc()

    def on_denial(self, firm: int, product: int) -> None:
        self.denials.labels(str(firm), str(product)).inc()

    def on_policy_denial(self, firm: int, product: int) -> None:
        self.policy_denials.labels(str(firm), str(product)).inc()

    def prune(self) -> None:
        """Forget sends that were never answered (call now and then)."""
        floor = self.clock() - INFLIGHT_MAX_AGE
        for k in [k for k, (t, _) in self._inflight.items() if t < floor]:
            del self._inflight[k]


class SnapshotCollector(Collector):
    """Gauges from the latest snapshot, computed when Prometheus scrapes."""

    def __init__(
        self, snapshot: Callable[[], dict[str, Any] | None], clock: Callable[[], float]
    ) -> None:
        self.snapshot = snapshot
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: its families depend on the licenses present

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        if snap is None:
            return
        age = GaugeMetricFamily(
            "tmr_status_age_seconds",
            "Seconds since the server's poll loop last published its status (a stuck loop "
            "shows here)",
        )
        age.add_metric([], max(0.0, self.clock() - snap["published_at"]))
        yield age
        info = GaugeMetricFamily(
            "tmr_server_info", "This TMR server", labels=["server", "serial", "version"]
        )
        info.add_metric([str(snap["server"]), str(snap["serial"]), str(snap["version"])], 1)
        yield info
        policy = snap.get("policy") or {}
        pinfo = GaugeMetricFamily(
            "tmr_policy_info",
            "The policy this server enforces: the digest of its rules (compare both servers)",
            labels=["digest"],
        )
        pinfo.add_metric([str(policy.get("digest", ""))], 1)
        yield pinfo
        yield _gauge(
            "tmr_policy_mismatch",
            "1 while another TMR server enforces a policy with another digest (a failover "
            "would change the rules)",
            1 if policy.get("mismatch") else 0,
        )
        role = GaugeMetricFamily(
            "tmr_role", "1 for this server's current role (standby|takeover|active|fenced)",
            labels=["role"],
        )  # fmt: skip
        for name in ROLES:
            role.add_metric([name], 1.0 if snap["role"] == name else 0.0)
        yield role
        yield _gauge("tmr_epoch", "Counter of this server's epoch (0: none)", snap["epoch_counter"])
        yield _gauge("tmr_backends_up", "Backends this server can reach", snap["backends_up"])
        up = GaugeMetricFamily("tmr_backend_up", "1 if the backend answers", labels=["backend"])
        for b in snap["backends"]:
            up.add_metric([str(b["name"])], 1.0 if b["up"] else 0.0)
        yield up
        yield _gauge(
            "tmr_quorum_margin",
            "Smallest over the licenses of (up backends holding it - 2): 0 means one more "
            "backend failure stops a license",
            snap["quorum_margin"],
        )
        yield _gauge("tmr_handles", "Handles held (active server)", snap["handle_count"])
        ops = CounterMetricFamily("tmr_ops_committed", "Ops committed by a majority")
        ops.add_metric([], snap["ops_committed"])
        yield ops
        records = snap.get("denial_records") or {}
        if records:
            rec = CounterMetricFamily(
                "tmr_denial_records",
                "Refused checkouts this server recorded (every code of tmr admin denials), by "
                "what became of them: sent to the backends' denial records, or dropped (the "
                "buffer was full)",
                labels=["outcome"],
            )
            rec.add_metric(["recorded"], records.get("recorded", 0))
            rec.add_metric(["dropped"], records.get("dropped", 0))
            yield rec
            yield _gauge(
                "tmr_denial_records_pending",
                "Refusals buffered, not yet sent to a backend (sent four times a second)",
                records.get("pending", 0),
            )
        yield from _license_families(snap)


class VipCollector(Collector):
    """tmr_vip_held: whether the virtual IP is on this host, i.e. keepalived's VRRP decision
    as the host carries it out (the VRRP master adds the address). Registered by WebAdmin when
    server.toml names the vip."""

    def __init__(self, held: Callable[[], bool]) -> None:
        self.held = held

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield _gauge(
            "tmr_vip_held",
            "1 while the virtual IP is on this host (keepalived's VRRP master holds it)",
            1.0 if self.held() else 0.0,
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], float(value))
    return g


def _license_families(snap: dict[str, Any]) -> Iterator[Metric]:
    labels = ["firm", "product"]
    fams = {
        "in_use": GaugeMetricFamily(
            "tmr_license_seats_in_use", "Seats in use (active server)", labels=labels
        ),
        "quantity": GaugeMetricFamily(
            "tmr_license_quantity", "Effective license quantity (LQ)", labels=labels
        ),
        "available": GaugeMetricFamily(
            "tmr_license_available", "1 if at least 2 up backends hold the license", labels=labels
        ),
        "holders": GaugeMetricFamily(
            "tmr_license_holders", "Up backends holding a valid copy", labels=labels
        ),
        "quorum_margin": GaugeMetricFamily(
            "tmr_license_quorum_margin", "Up backends holding a valid copy, minus 2", labels=labels
        ),
        "tmr_id": GaugeMetricFamily(
            "tmr_license_tmr_id", "Effective TMR ID (0: none)", labels=labels
        ),
        "expires": GaugeMetricFamily(
            "tmr_license_expiry_timestamp_seconds",
            "Expiry of the license (UNIX time)",
            labels=labels,
        ),
        "days_left": GaugeMetricFamily(
            "tmr_license_days_left",
            "Days until the license expires (negative: expired; absent: no expiry date)",
            labels=labels,
        ),
        "expiry_warning": GaugeMetricFamily(
            "tmr_license_expiry_warning",
            "1 while the license expires within expiry_warning_days (server.toml) or has expired",
            labels=labels,
        ),
        "not_counted": GaugeMetricFamily(
            "tmr_license_copies_not_counted",
            "Valid copies of up backends not counted toward the 2 of 3, by reason "
            "(CLONED_COPY: the same copy, index, fingerprint or key twice; WRONG_BACKEND_KEY; "
            "UNBOUND_COPY: names no set)",
            labels=[*labels, "reason"],
        ),
        "queued": GaugeMetricFamily(
            "tmr_license_queue_length",
            "Checkouts waiting in the license's queue (client wait=; active server, this term)",
            labels=labels,
        ),
        "queued_seats": GaugeMetricFamily(
            "tmr_license_queue_seats",
            "Seats the queued checkouts of the license ask for (active server, this term)",
            labels=labels,
        ),
        "refused": GaugeMetricFamily(
            "tmr_license_copies_refused",
            "Up backends whose copy of the license is refused, by reason (BELOW_FLOOR: older "
            "than the trio's TMR ID floor; EXPIRED at the trusted time; CLOCK_ROLLBACK; "
            "CHECK_FAILED: the backend's license check refused a replicated entry)",
            labels=[*labels, "reason"],
        ),
    }
    refused = refused_copies(snap)
    for lic in snap["licenses"]:
        key = [str(lic["firm"]), str(lic["product"])]
        if lic["in_use"] is not None:
            fams["in_use"].add_metric(key, lic["in_use"])
        fams["quantity"].add_metric(key, lic["quantity"])
        fams["queued"].add_metric(key, lic.get("queued", 0))
        fams["queued_seats"].add_metric(key, lic.get("queued_seats", 0))
        fams["available"].add_metric(key, 1.0 if lic["available"] else 0.0)
        fams["holders"].add_metric(key, lic["holders"])
        fams["quorum_margin"].add_metric(key, lic["quorum_margin"])
        fams["tmr_id"].add_metric(key, lic["tmr_id"] or 0)
        if lic["expires"] is not None:
            fams["expires"].add_metric(key, lic["expires"])
        if lic.get("days_left") is not None:
            fams["days_left"].add_metric(key, lic["days_left"])
        warn = lic.get("expiry") in (ExpiryState.WARNING, ExpiryState.EXPIRED)
        fams["expiry_warning"].add_metric(key, 1.0 if warn else 0.0)
        problems = [b.get("problem") for b in lic.get("backends", [])]
        for reason in CopyProblem:
            fams["not_counted"].add_metric([*key, reason.value], problems.count(reason.value))
        counts = refused.pop(str(lic["key"]), {})
        for why in CopyRefusal:
            fams["refused"].add_metric([*key, why.value], counts.get(why, 0))
    for text, counts in sorted(refused.items()):  # refused copies of a license not listed
        for why in CopyRefusal:
            fams["refused"].add_metric([*_license_labels(text), why.value], counts.get(why, 0))
    yield from fams.values()
