"""The local cluster of real processes: reliability table, seats, failover, catch-up."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.integration.cluster_helpers import LocalCluster, eventually, wait_for
from tmr.client import Client, Handle
from tmr.errors import NoLicenseAvailable, QuorumLost
from tmr.keys import NodeKeys, generate_keypair

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRM, PRODUCT = 6000123, 42


def test_lq_seats_granted_then_refused(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        handles = [c.checkout(FIRM, PRODUCT) for _ in range(3)]
        with pytest.raises(NoLicenseAvailable):
            c.checkout(FIRM, PRODUCT)
        handles[0].release()
        handles.append(c.checkout(FIRM, PRODUCT))  # the released seat is free again
        lic = c.list_licenses().licenses[0]
        assert (lic.quantity, lic.in_use, lic.tmr_id) == (3, 3, 7)

        def all_three() -> None:
            assert c.list_licenses().licenses[0].status == "1:#7 2:#7 3:#7"

        eventually("all three backends to show #7", all_three)


def _access(cluster: LocalCluster) -> str:
    try:
        with cluster.client(timeout=6.0) as c:
            h = c.checkout(FIRM, PRODUCT)
            h.release()
        return "ok"
    except QuorumLost:
        return "QUORUM_LOST"


def test_reliability_table(cluster: LocalCluster) -> None:
    """The 9 rows of the reliability table (000_f7962cf163683535.txt), produced for real."""
    a, b = "tmr-a", "tmr-b"
    rows: list[tuple[str, str]] = []

    def row(name: str, expect: str, active: str, up: set[str]) -> None:
        cluster.wait_backends(active, up)
        got = eventually(f"client access in row {name!r}", lambda: _expect(expect), 20)
        rows.append((name, got))

    def _expect(expect: str) -> str:
        got = _access(cluster)
        assert got == expect, f"expected {expect}, got {got}"
        return got

    all3 = {"backend-1", "backend-2", "backend-3"}
    row("normal operation (A active)", "ok", a, all3)
    cluster.demote(a)
    cluster.promote(b)
    row("normal operation (B active)", "ok", b, all3)
    cluster.demote(b)
    cluster.promote(a)
    cluster.kill(b)
    row("TMR server B failure", "ok", a, all3)
    cluster.start(b)
    cluster.kill(a)
    cluster.promote(b)
    row("TMR server A failure", "ok", b, all3)
    cluster.start(a)
    cluster.demote(b)
    cluster.promote(a)
    for i in (1, 2, 3):
        cluster.kill(f"backend-{i}")
        row(f"backend {i} failure", "ok", a, all3 - {f"backend-{i}"})
        cluster.start(f"backend-{i}")
        cluster.wait_backends(a, all3)
    cluster.kill(a)
    cluster.kill("backend-2")
    cluster.promote(b)
    row("failure (1): A, backend 2", "ok", b, {"backend-1", "backend-3"})
    cluster.kill("backend-3")
    cluster.wait_backends(b, {"backend-1"})
    rows.append(("failure (2): A, backends 2 and 3", _access(cluster)))
    assert rows[-1][1] == "QUORUM_LOST"
    print("\n".join(f"{name:<40} {got}" for name, got in rows))


def test_seats_and_leases_survive_failover(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        h1 = c.checkout(FIRM, PRODUCT)
        h2 = c.checkout(FIRM, PRODUCT, seats=2)
        cluster.kill("tmr-a")
        cluster.promote("tmr-b")
        lic = eventually("list after failover", lambda: c.list_licenses().licenses[0])
        assert lic.in_use == 3
        with pytest.raises(NoLicenseAvailable):
            c.checkout(FIRM, PRODUCT)
        status = cluster.ctl("tmr-b", "handles")["handles"]
        assert {x["handle"] for x in status} == {h1.id, h2.id}
        h2.release()
        h3 = c.checkout(FIRM, PRODUCT)
        assert not h1.lost and h3.held


def test_killed_backend_catches_up_and_votes_again(cluster: LocalCluster) -> None:
    a = "tmr-a"
    all3 = {"backend-1", "backend-2", "backend-3"}
    with cluster.client() as c:
        cluster.kill("backend-3")
        cluster.wait_backends(a, all3 - {"backend-3"})
        held = [c.checkout(FIRM, PRODUCT) for _ in range(2)]
        cluster.start("backend-3")
        cluster.wait_backends(a, all3)

        def synced() -> bool:
            view = cluster.backend_view(a)
            seqs = {n: b["synced"].get(f"{FIRM}:{PRODUCT}") for n, b in view.items()}
            return seqs["backend-3"] is not None and seqs["backend-3"] == seqs["backend-1"]

        wait_for("backend-3 to catch up", synced, 15)
        cluster.kill("backend-1")
        cluster.wait_backends(a, all3 - {"backend-1"})
        # Only backend-2 and the caught-up backend-3 are left: they must carry the quorum.
        h = c.checkout(FIRM, PRODUCT)
        with pytest.raises(NoLicenseAvailable):
            c.checkout(FIRM, PRODUCT)
        for x in [*held, h]:
            x.release()


def test_client_key_cannot_talk_to_a_backend(cluster: LocalCluster) -> None:
    from tmr.protocol.peer_api import encode_request
    from tmr.replication.messages import Probe

    keys = generate_keypair()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.CURVE_SERVERKEY, cluster.nodes["backend-1"]["public_key"].encode())
    s.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode())
    s.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode())
    s.connect(cluster.endpoint("backend-1"))
    try:
        s.send(encode_request(Probe(1)))
        assert s.poll(2000) == 0, "a backend answered a key that is not a TMR server's"
    finally:
        s.close()
        ctx.term()


def _raw_client(
    cluster: LocalCluster, endpoint: str, keys: NodeKeys | None = None
) -> tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes]]:
    keys = keys or generate_keypair()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.CURVE_SERVERKEY, cluster.info["service_public_key"].encode())
    s.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode())
    s.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode())
    s.connect(endpoint)
    return ctx, s


def test_retried_checkout_takes_one_seat_across_failover(cluster: LocalCluster) -> None:
    from tmr.protocol.client_api import (
        CheckoutRequest,
        CheckoutResult,
        OkReply,
        decode_reply,
        encode_request,
    )

    req = encode_request(CheckoutRequest("retry-1", "raw-client", FIRM, PRODUCT, 2))
    keys = generate_keypair()  # a handle belongs to the client's key: the retry uses the same
    ctx, a = _raw_client(cluster, cluster.endpoint("tmr-a"), keys)
    try:
        a.send_multipart([b"", req])  # the reply is never read: as if it was lost
        a.send_multipart([b"", req])  # a retry to the same server, while the first may be in flight
        assert a.poll(5000)
        first = decode_reply(a.recv_multipart()[-1], op="checkout")
        assert isinstance(first, OkReply)
        cluster.kill("tmr-a")
        cluster.promote("tmr-b")
        ctx2, b = _raw_client(cluster, cluster.endpoint("tmr-b"), keys)
        try:
            b.send_multipart([b"", req])  # the retry after failover, same request id
            assert b.poll(5000)
            again = decode_reply(b.recv_multipart()[-1], op="checkout")
        finally:
            b.close()
            ctx2.term()
        assert isinstance(again, OkReply)
        assert isinstance(again.result, CheckoutResult) and isinstance(first.result, CheckoutResult)
        assert again.result.handle == first.result.handle
        with cluster.client() as c:
            assert c.list_licenses().licenses[0].in_use == 2
    finally:
        a.close()
        ctx.term()


def test_split_brain_costs_a_moment_never_a_seat(cluster: LocalCluster) -> None:
    """Both servers leading at once: only one can commit; seats stay exact. A keepalived
    promote yields to a live leader (next test), so the second leader is forced here."""
    with cluster.client() as c:
        held = [c.checkout(FIRM, PRODUCT) for _ in range(2)]
        cluster.ctl("tmr-b", "promote", force=True)  # tmr-a is still active

        def settled() -> bool:
            roles = {cluster.role("tmr-a"), cluster.role("tmr-b")}
            return roles == {"active", "fenced"}

        wait_for("one server active and the other fenced", settled, 15)
        fenced = "tmr-a" if cluster.role("tmr-a") == "fenced" else "tmr-b"
        health = cluster.ctl(fenced, "health")
        assert health["ok"] is False  # keepalived's track_script takes its VIP away
        h = eventually("a checkout after the split brain", lambda: c.checkout(FIRM, PRODUCT))
        with pytest.raises(NoLicenseAvailable):
            c.checkout(FIRM, PRODUCT)
        for x in [*held, h]:
            x.release()
        # keepalived then demotes the fenced server; it is healthy (standby) again.
        cluster.demote(fenced)
        assert cluster.ctl(fenced, "health")["ok"] is True


def test_crypt_calls_are_balanced_over_backends_with_one_product_key(
    cluster: LocalCluster,
) -> None:
    with cluster.client() as c, c.checkout(FIRM, PRODUCT) as h:
        backends = set()
        macs = set()
        for i in range(6):
            r = h.crypt_result("hmac", b"challenge")
            backends.add(r.backend)
            macs.add(r.data)
            sealed = h.crypt_result("encrypt", f"secret {i}".encode())
            opened = h.crypt_result("decrypt", sealed.data)
            assert opened.data == f"secret {i}".encode()
            backends.update((sealed.backend, opened.backend))
        assert len(backends) >= 2  # load-balanced like the source documents describe
        assert len(macs) == 1  # every backend holds the same product key
        cluster.kill("backend-1")
        cluster.wait_backends("tmr-a", {"backend-2", "backend-3"})
        assert h.crypt("hmac", b"challenge") in macs


def _events(cluster: LocalCluster, name: str, event: str) -> list[dict[str, Any]]:
    out = []
    for line in Path(cluster.nodes[name]["log"]).read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == event:
            out.append(rec)
    return out


def test_a_checkout_during_the_takeover_waits_for_its_end(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that reaches the promoted server while it takes over (one endpoint, as
    through the VIP) is served once that server is active: the server keeps the request
    (`takeover_hold_ms`) instead of answering NOT_ACTIVE, which would cost the client a
    back-off. The takeover is held up by stopping two backends (SIGSTOP) until the request
    is seen waiting; tmr-b runs with a 2 s hold and the client with a 3 s attempt timeout,
    so that a loaded machine does not turn the wait into NOT_ACTIVE or a resend."""
    a, b = "tmr-a", "tmr-b"
    config = Path(cluster.nodes[b]["config"])
    config.write_text("takeover_hold_ms = 2000\n" + config.read_text())  # a top-level key
    cluster.kill(b)
    cluster.start(b)
    all3 = {"backend-1", "backend-2", "backend-3"}
    cluster.wait_backends(b, all3)
    caplog.set_level(logging.DEBUG, logger="tmr.client")
    cluster.kill(a)
    stopped = [cluster.nodes[n]["pid"] for n in ("backend-1", "backend-2")]
    got: dict[str, Handle | BaseException] = {}
    key = cluster.info["service_public_key"]
    with Client([cluster.endpoint(b)], key, timeout=15.0, attempt_timeout=3.0) as c:

        def checkout() -> None:
            try:
                got["handle"] = c.checkout(FIRM, PRODUCT)
            except BaseException as exc:  # reported by the assertion below
                got["handle"] = exc

        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert cluster.ctl(b, "promote")["role"] == "takeover"
            worker = threading.Thread(target=checkout)
            worker.start()
            wait_for(
                f"{b} to keep the checkout", lambda: cluster.ctl(b, "status")["parked"] > 0, 10
            )
            assert cluster.role(b) == "takeover" and "handle" not in got
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        worker.join(20)
        handle = got.get("handle")
        assert isinstance(handle, Handle), handle
        assert cluster.role(b) == "active"
        handle.release()
    assert not [r for r in caplog.records if "NOT_ACTIVE" in r.getMessage()]
    wait_for(
        f"{b}'s log to say parked_answered",
        lambda: _events(cluster, b, "parked_answered") != [],
        10,
    )
    (answered,) = _events(cluster, b, "parked_answered")
    assert answered["role"] == "active" and answered["requests"] == 1


def test_promote_yields_to_a_live_leader_unless_forced(cluster: LocalCluster) -> None:
    """keepalived split brain: the standby's host became VRRP master too and promotes it.
    tmr-a is alive and serving, so tmr-b gives the promote up: tmr-a is not fenced and
    clients keep working. `promote --force` (the operator override) still fences it."""
    a, b = "tmr-a", "tmr-b"
    with cluster.client() as c:
        held = c.checkout(FIRM, PRODUCT)
        epoch = cluster.ctl(a, "status")["epoch"]
        term = f"{epoch[0]}/{epoch[1]}"
        wait_for(
            f"{b} to hear {a} as the live leader",
            lambda: cluster.ctl(b, "status").get("live_leader") == a,
            15,
        )
        assert cluster.ctl(b, "promote")["role"] == "takeover"
        wait_for(f"{b} to give the promote up", lambda: cluster.role(b) == "standby", 20)
        wait_for(
            f"{b}'s log to say promote_yielded",
            lambda: _events(cluster, b, "promote_yielded") != [],
            10,
        )
        (yielded,) = _events(cluster, b, "promote_yielded")
        assert yielded["active"] == a
        assert _events(cluster, b, "prepare") == []  # it never prepared: no epoch of its own
        status_a = cluster.ctl(a, "status")
        assert status_a["role"] == "active" and status_a["epoch"] == epoch
        assert {x["promised"] for x in status_a["backends"]} == {term}  # nobody fenced it
        assert _events(cluster, a, "fenced") == []
        # Clients never noticed: the held seat is still good, a new checkout is served.
        held.heartbeat()
        h = c.checkout(FIRM, PRODUCT, seats=2)
        with pytest.raises(NoLicenseAvailable):
            c.checkout(FIRM, PRODUCT)
        h.release()

        # The operator override takes over at once and fences the live leader.
        assert cluster.ctl(b, "promote", force=True)["ok"] is True
        wait_for(
            f"{b} active and {a} fenced",
            lambda: (cluster.role(a), cluster.role(b)) == ("fenced", "active"),
            15,
        )
        assert cluster.ctl(a, "health")["ok"] is False
        h = eventually("a checkout from the forced leader", lambda: c.checkout(FIRM, PRODUCT))
        assert {x["handle"] for x in cluster.ctl(b, "handles")["handles"]} == {held.id, h.id}
        for x in (held, h):
            x.release()
