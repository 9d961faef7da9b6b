"""The status snapshot served by WebAdmin and /api/status (pure functions, no I/O).

Built in the poll loop from `ServerService.status` (the leader's view) and, when someone
looks at the page, the handle table; then handed to the web thread as an immutable-by-
convention dict. Nothing secret goes in: no keys, no paths, no request ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tmr import __version__
from tmr.expiry import ExpiryState
from tmr.licensing.effective import QUORUM


def parse_epoch(text: str | None) -> tuple[int, str] | None:
    """``"3/server-a"`` -> (3, "server-a"); ``"0"`` or None -> None."""
    if not text:
        return None
    counter, _, server = text.partition("/")
    if not counter.isdigit() or int(counter) == 0:
        return None
    return int(counter), server


def active_hint(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """Who leads, as far as this server can tell.

    The active server is this one when its role is active; otherwise the server of the
    highest epoch the reachable backends promised (the last server that took over)."""
    if status.get("role") == "active" and status.get("epoch"):
        counter, server = status["epoch"]
        return {"server": server, "epoch": f"{counter}/{server}", "this": True, "source": "self"}
    best: tuple[int, str] | None = None
    for b in status.get("backends", []):
        if not b.get("up"):
            continue
        e = parse_epoch(b.get("promised"))
        if e is not None and (best is None or e > best):
            best = e
    if best is None:
        return None
    return {
        "server": best[1],
        "epoch": f"{best[0]}/{best[1]}",
        "this": best[1] == status.get("server"),
        "source": "highest epoch promised by the reachable backends",
    }


def _license_backends(
    key: str, eff_id: int | None, backends: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """Per backend: its copy of license ``key`` in the documents' notation; and the number
    of up backends holding a valid copy that counts (``!#ID``: valid but not counted, with
    the server's reason, e.g. CLONED_COPY)."""
    out = []
    holders = 0
    for i, b in enumerate(backends, start=1):
        lic = (b.get("licenses") or {}).get(key)
        up = bool(b.get("up"))
        entry: dict[str, Any] = {"index": i, "name": b.get("name"), "up": up}
        if lic is None:
            entry.update(tmr_id=None, quantity=None, valid=False, reason="no copy", text="-")
        else:
            valid = bool(lic.get("valid"))
            entry.update(
                tmr_id=lic.get("tmr_id"),
                quantity=lic.get("quantity"),
                valid=valid,
                reason=lic.get("reason") or "",
            )
            problem = lic.get("problem")
            if not up or not valid:
                entry["text"] = "-"
            elif problem:
                entry.update(text=f"!#{lic.get('tmr_id')}", reason=str(problem), problem=problem)
            elif lic.get("tmr_id") == eff_id:
                entry["text"] = f"#{lic.get('tmr_id')}"
            else:
                entry["text"] = f"(#{lic.get('tmr_id')})"
            if up and valid and not problem:
                holders += 1
        if not up:
            entry["reason"] = "backend down"
        out.append(entry)
    return out, holders


def license_level(lic: Mapping[str, Any], holders: int) -> tuple[str, str]:
    """(level, message): ``ok``, ``warning`` (one more failure stops it, or all seats in
    use) or ``error`` (not available)."""
    reason = lic.get("reason")
    if reason:
        # a copy not counted: cloned, or reported by a backend with another key
        what = f"a backend's copy is not counted ({reason}): check the backends' keys and copies"
        if not lic.get("available"):
            return "error", f"not available: {what}"
        return "warning", what
    if not lic.get("available"):
        if holders >= QUORUM:
            return "error", "not available: the copies are not valid (expired?)"
        return (
            "error",
            f"only {holders} backend(s) hold this license: checkouts are refused (QUORUM_LOST)",
        )
    if holders == QUORUM:
        return "warning", "only 2 backends hold this license: one more failure stops it"
    quantity, in_use = lic.get("quantity") or 0, lic.get("in_use")
    if in_use is not None and quantity and in_use >= quantity:
        return "warning", f"all {quantity} seats are in use: new checkouts are refused"
    if lic.get("expiry") == ExpiryState.WARNING:
        return "warning", f"expires in {float(lic.get('days_left') or 0):.1f} days: renew it"
    return "ok", f"held by {holders} backends"


def client_host(client_id: str) -> str:
    """The host part of an SDK client id (``host/pid/random``), else the whole id."""
    host, sep, _ = client_id.partition("/")
    return host if sep else client_id


def handles_section(
    handles: Sequence[Mapping[str, Any]] | None, lease: float, limit: int
) -> dict[str, Any]:
    if handles is None:
        return {"total": None, "shown": [], "truncated": False}
    rows = sorted(handles, key=lambda h: (h.get("granted_at") or 0.0, h.get("handle", "")))
    shown = []
    for h in rows[:limit]:
        left = float(h.get("lease_left") or 0.0)
        shown.append(
            {
                "handle": h.get("handle"),
                "firm": h.get("firm"),
                "product": h.get("product"),
                "seats": h.get("seats"),
                "client_id": h.get("client_id"),
                # what the client said of itself (informational); older clients: from its id
                "user": h.get("user") or "",
                "host": h.get("host") or client_host(str(h.get("client_id", ""))),
                "pid": h.get("pid") or None,
                "since": h.get("granted_at"),
                "heartbeat_ago": round(max(0.0, lease - left), 1),
                "lease_left": round(left, 1),
                "committed": h.get("committed", True),
            }
        )
    return {"total": len(rows), "shown": shown, "truncated": len(rows) > limit}


def queue_section(queue: Sequence[Mapping[str, Any]] | None, limit: int) -> dict[str, Any]:
    """The queued checkouts (`Leader.queue_view`) per license in order, at most `limit`."""
    if queue is None:
        return {"total": None, "shown": [], "truncated": False}
    rows = sorted(queue, key=lambda q: (q.get("firm", 0), q.get("product", 0), q["position"]))
    shown = [
        {
            "firm": q.get("firm"),
            "product": q.get("product"),
            "position": q.get("position"),
            "seats": q.get("seats"),
            "client_id": q.get("client_id"),
            "user": q.get("user") or "",
            "host": q.get("host") or client_host(str(q.get("client_id", ""))),
            "pid": q.get("pid") or None,
            "since": q.get("since"),
            "hold_left": round(float(q.get("hold_left") or 0.0), 1),
        }
        for q in rows[:limit]
    ]
    return {"total": len(rows), "shown": shown, "truncated": len(rows) > limit}


def denials_section(denials: Sequence[Mapping[str, Any]] | None, limit: int) -> dict[str, Any]:
    """This server's recent refusals, newest first, at most `limit`."""
    if denials is None:
        return {"total": None, "shown": [], "truncated": False}
    keys = ("at", "firm", "product", "seats", "user", "host", "pid", "code", "owner", "rule")
    shown = [{k: d.get(k) for k in keys} for d in denials[:limit]]
    return {"total": len(denials), "shown": shown, "truncated": len(denials) > limit}


def build_snapshot(
    status: Mapping[str, Any],
    *,
    now_wall: float,
    lease: float,
    handles: Sequence[Mapping[str, Any]] | None = None,
    max_handles: int = 1000,
    queue: Sequence[Mapping[str, Any]] | None = None,
    peer_url: str | None = None,
    denials: Mapping[str, int] | None = None,
    recent_denials: Sequence[Mapping[str, Any]] | None = None,
    denial_records: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The /api/status document from the leader's status (see `ServerService.status`).
    ``recent_denials``: this server's newest refusals (`DenialRecorder.recent_view`)."""
    queued = status.get("queued") or {}
    backends = list(status.get("backends", []))
    role = status.get("role", "standby")
    active = role == "active"
    epoch = status.get("epoch")
    licenses = []
    for lic in status.get("licenses", []):
        key = f"{lic['firm']}:{lic['product']}"
        per_backend, holders = _license_backends(key, lic.get("tmr_id"), backends)
        entry = {
            "firm": lic["firm"],
            "product": lic["product"],
            "key": key,
            "tmr_id": lic.get("tmr_id"),
            "quantity": lic.get("quantity", 0),
            "in_use": lic.get("in_use", 0) if active else None,
            "available": bool(lic.get("available")),
            "status": lic.get("status", ""),
            "reason": lic.get("reason"),
            "expires": lic.get("expires"),
            "days_left": lic.get("days_left"),
            "expiry": lic.get("expiry", "none"),
            "features": dict(lic.get("features") or {}),
            "holders": holders,
            "quorum_margin": holders - QUORUM,
            "denials": (denials or {}).get(key, 0),
            "queued": int((queued.get(key) or (0, 0))[0]),
            "queued_seats": int((queued.get(key) or (0, 0))[1]),
            "backends": per_backend,
        }
        entry["level"], entry["message"] = license_level(entry, holders)
        licenses.append(entry)
    up = sum(1 for b in backends if b.get("up"))
    margins = [lic["quorum_margin"] for lic in licenses]
    return {
        "version": __version__,
        "generated_at": now_wall,
        "server": status.get("server"),
        "role": role,
        "healthy": role != "fenced",
        "epoch": f"{epoch[0]}/{epoch[1]}" if epoch else None,
        "epoch_counter": epoch[0] if epoch else 0,
        "fenced_by": status.get("fenced_by"),
        "serial": status.get("serial"),
        "policy": dict(status.get("policy") or {}),
        "uptime": status.get("uptime"),
        "active": active_hint(status),
        "peer_url": peer_url,
        "backends": [
            {
                "index": i,
                "name": b.get("name"),
                "up": bool(b.get("up")),
                "caught_up": bool(b.get("caught_up")),
                "promised": b.get("promised"),
                "licenses": len(b.get("licenses") or {}),
                "refused": dict(b.get("refused") or {}),
            }
            for i, b in enumerate(backends, start=1)
        ],
        "backends_up": up,
        "quorum_margin": min(margins) if margins else up - QUORUM,
        "licenses": licenses,
        "handles": handles_section(handles, lease, max_handles),
        "handle_count": status.get("handles", 0),
        "queue": queue_section(queue, max_handles),
        "denials_recent": denials_section(recent_denials, max_handles),
        "denial_records": dict(denial_records or {}),
        "ops_committed": status.get("ops_committed", 0),
    }
