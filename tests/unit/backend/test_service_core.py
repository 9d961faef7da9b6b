"""The backend service without sockets: licenses, expiry, commit failures, framing, ZAP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import zmq

from tmr.backend.service import (
    BackendService,
    error_reply,
    split_envelope,
)
from tmr.backend.store import StorageError
from tmr.config import BackendConfig
from tmr.ctl import CtlError, ctl_request
from tmr.errors import ConfigError
from tmr.isv import init_vendor, issue_set
from tmr.keys import generate_keypair, write_keypair
from tmr.licensing import make_fingerprint_doc
from tmr.licensing.curve import z85_key_bytes
from tmr.protocol import codec, peer_api
from tmr.protocol.codec import pack
from tmr.protocol.peer_api import (
    MAX_PEER_FRAME,
    BadFrame,
    decode_backend_frame,
    decode_reply,
    encode_request,
)
from tmr.replication.messages import (
    Accept,
    Accepted,
    AcceptEntry,
    Crypt,
    CryptResult,
    EntryStatus,
    PeerError,
    PeerReply,
    PeerRequest,
    Prepare,
    Probe,
    Promise,
    Snapshot,
    SnapshotEntry,
    Status,
    UsageQuery,
)
from tmr.replication.types import Epoch, Grant, HandleRecord
from tmr.serving.zap import zap_reply

FIRM = 6_000_123
PRODUCT = 42
KEY = (FIRM, PRODUCT)
NOW = 1_800_000_000.0
E1 = Epoch(1, "a")
E2 = Epoch(2, "a")


class FakeTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    config: BackendConfig
    clock: FakeTime
    root: Path


def make_setup(root: Path, *, expires: int | None, start: float) -> Setup:
    vendor = init_vendor(root / "vendor", FIRM, "Acme")
    keys = generate_keypair()
    write_keypair(root / "node.key", keys)
    (root / "machine-id").write_text("m-1\n")
    docs = [make_fingerprint_doc(keys.public, "m-1")]
    docs += [make_fingerprint_doc(generate_keypair().public, f"m-{i}") for i in (2, 3)]
    issued = issue_set(
        vendor,
        product_code=PRODUCT,
        quantity=3,
        tmr_id=7,
        fingerprints=docs,
        out_dir=root / "issued",
        expires=expires,
        now=NOW,
    )
    (root / "licenses").mkdir()
    issued.copies[0].path.rename(root / "licenses" / issued.copies[0].path.name)
    config = BackendConfig(
        name="b1",
        key_file=root / "node.key",
        state_dir=root / "state",
        license_dir=root / "licenses",
        vendor_keys=(root / "vendor" / "vendor.pub",),
        allowed_servers=(generate_keypair().public,),
        machine_id_file=root / "machine-id",
        ctl_socket=root / "ctl.sock",
    )
    return Setup(config, FakeTime(start), root)


@pytest.fixture
def expiring(tmp_path: Path) -> Setup:
    return make_setup(tmp_path, expires=int(NOW) + 1000, start=NOW + 10)


@pytest.fixture
def svc(expiring: Setup) -> Iterator[BackendService]:
    service = BackendService(expiring.config, time_source=expiring.clock)
    service.open()
    try:
        yield service
    finally:
        service.close()


def ask(service: BackendService, msg: PeerRequest) -> PeerReply:
    reply = service.handle_frame(encode_request(msg))
    assert reply is not None
    return decode_reply(reply)


def take_seats(service: BackendService, seq: int, name: str, seats: int = 1) -> Accepted:
    rec = HandleRecord(name, FIRM, PRODUCT, seats, "c1", f"r-{name}", NOW)
    reply = ask(service, Accept(seq, E1, (AcceptEntry(KEY, seq, (Grant(rec),)),)))
    assert isinstance(reply, Accepted)
    return reply


def catch_up(service: BackendService) -> None:
    assert isinstance(ask(service, Prepare(1, E1)), Promise)
    snap = ask(service, Snapshot(2, E1, (SnapshotEntry(KEY, 0, ()),)))
    assert isinstance(snap, Accepted) and snap.results[KEY].status is EntryStatus.OK


# ------------------------------------------------------------------ licenses


def test_open_loads_the_copy_and_records_its_tmr_id(svc: BackendService) -> None:
    assert svc.acceptor is not None and svc.store is not None
    lic = svc.acceptor.licenses[KEY]
    assert (lic.tmr_id, lic.quantity, lic.valid, lic.reason) == (7, 3, True, "")
    assert lic.expires == NOW + 1000
    assert svc.store.installed_tmr_ids() == {KEY: 7}
    status = svc.status()
    assert status["products"][0]["license"]["tmr_id"] == 7
    assert status["serial"].startswith("130-")


def test_a_copy_that_expires_while_running_becomes_invalid(
    svc: BackendService, expiring: Setup
) -> None:
    catch_up(svc)
    assert take_seats(svc, 1, "h1").results[KEY].status is EntryStatus.OK
    expiring.clock.now = NOW + 1001
    svc.check_licenses()
    assert svc.acceptor is not None
    lic = svc.acceptor.licenses[KEY]
    assert (lic.valid, lic.reason, lic.tmr_id) == (False, "expired", 7)
    refused = take_seats(svc, 2, "h2").results[KEY]
    assert refused.status is EntryStatus.REFUSED and "expired" in refused.reason


def test_a_clock_set_back_invalidates_expiring_copies(svc: BackendService, expiring: Setup) -> None:
    expiring.clock.now = NOW + 900
    svc.check_licenses()
    expiring.clock.now = NOW - 5000  # far behind the high-water mark
    svc.check_licenses()
    assert svc.acceptor is not None
    assert svc.acceptor.licenses[KEY].reason == "clock rollback"


def test_a_copy_expired_at_start_is_known_but_invalid(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, expires=int(NOW) + 1000, start=NOW + 5000)
    service = BackendService(setup.config, time_source=setup.clock)
    service.open()
    try:
        assert service.acceptor is not None
        lic = service.acceptor.licenses[KEY]
        assert (lic.tmr_id, lic.quantity, lic.valid, lic.reason) == (7, 3, False, "expired")
        assert [r["reason"] for r in service.status()["rejected"]] == ["EXPIRED"]
    finally:
        service.close()


def test_a_failed_reload_keeps_the_licenses(svc: BackendService, expiring: Setup) -> None:
    for path in expiring.config.license_dir.iterdir():
        path.unlink()
    expiring.config.license_dir.rmdir()
    result = svc.reload_licenses("test")
    assert result["ok"] is False and "does not exist" in result["error"]
    assert svc.acceptor is not None and svc.acceptor.licenses[KEY].valid


def test_a_bad_allowlist_key_is_refused(expiring: Setup) -> None:
    config = replace(expiring.config, allowed_servers=("not-a-key",))
    with pytest.raises(ConfigError, match=r"allowed_servers\[0\]"):
        BackendService(config).open()


def test_a_second_service_on_the_same_state_dir_is_refused(
    svc: BackendService, expiring: Setup
) -> None:
    with pytest.raises(StorageError, match="in use by another backend"):
        BackendService(expiring.config, time_source=expiring.clock).open()


# ------------------------------------------------------------------ peer requests


def test_a_failed_commit_sends_no_reply_and_changes_nothing(svc: BackendService) -> None:
    assert svc.store is not None and svc.acceptor is not None
    catch_up(svc)
    conn = svc.store._conn
    assert conn is not None
    conn.execute("PRAGMA query_only = 1")
    assert svc.handle_frame(encode_request(Prepare(3, E2))) is None
    rec = HandleRecord("h1", FIRM, PRODUCT, 1, "c1", "r", NOW)
    accept = Accept(4, E1, (AcceptEntry(KEY, 1, (Grant(rec),)),))
    assert svc.handle_frame(encode_request(accept)) is None
    assert svc.acceptor.state.promised == E1
    assert svc.acceptor.state.products[KEY].handles == {}
    assert svc.counters["storage_errors"] == 2
    conn.execute("PRAGMA query_only = 0")
    assert take_seats(svc, 1, "h1").results[KEY].status is EntryStatus.OK
    assert isinstance(ask(svc, Prepare(5, E2)), Promise)
    assert svc.store.load() == svc.acceptor.state


def test_malformed_frames_get_peer_errors(svc: BackendService) -> None:
    cases = [
        (b"", 0),
        (b"\xc1", 0),
        (pack({"t": "probe"}), 0),
        (pack({"t": "what", "mid": 9}), 9),
        (pack({"t": "prepare", "mid": 10}), 10),
        (b"\x00" * (MAX_PEER_FRAME + 1), 0),
    ]
    for frame, mid in cases:
        reply = svc.handle_frame(frame)
        assert reply is not None
        err = decode_reply(reply)
        assert isinstance(err, PeerError) and err.mid == mid
    assert svc.counters["bad_requests"] == len(cases)


def test_crypt_errors_become_bad_request(svc: BackendService) -> None:
    catch_up(svc)
    take_seats(svc, 1, "h1")
    bad = ask(svc, Crypt(3, E1, KEY, "h1", "c1", "rot13", b"x"))
    assert isinstance(bad, CryptResult) and not bad.ok and bad.error == "BAD_REQUEST"
    tampered = ask(svc, Crypt(4, E1, KEY, "h1", "c1", "decrypt", b"\x00" * 40))
    assert isinstance(tampered, CryptResult) and tampered.error == "BAD_REQUEST"
    mac = ask(svc, Crypt(5, E1, KEY, "h1", "c1", "hmac", b"x"))
    assert isinstance(mac, CryptResult) and mac.ok and len(mac.data) == 32


def test_control_commands(svc: BackendService) -> None:
    assert svc.ctl_server.handle({"cmd": "health"}, 0.0) == {"ok": True, "name": "b1"}
    assert svc.ctl_server.handle({"cmd": "reload"}, 0.0)["ok"] is True  # type: ignore[index]
    with pytest.raises(CtlError, match=r"unknown command 'promote' \(backends know status"):
        svc.ctl_server.handle({"cmd": "promote"}, 0.0)
    assert not svc.ctl_server.pending


# ------------------------------------------------------------------ framing and ZAP


def test_split_envelope() -> None:
    assert split_envelope([b"id", b"p"]) == ([b"id"], b"p")
    assert split_envelope([b"id", b"", b"p"]) == ([b"id", b""], b"p")
    assert split_envelope([b"id", b"a", b"b"]) == ([b"id"], None)
    assert split_envelope([b"id"]) == ([b"id"], None)
    assert split_envelope([b"id", b"", b"a", b"b"]) == ([b"id", b""], None)


def test_a_bad_frame_keeps_the_mid_of_its_one_decoding() -> None:
    assert decode_backend_frame(pack({"mid": 5})) == BadFrame(5, "missing message type")
    assert decode_backend_frame(pack({"t": "x", "mid": -1})).mid == 0
    assert decode_backend_frame(pack({"t": "x", "mid": "5"})).mid == 0
    assert isinstance(decode_backend_frame(b"junk"), BadFrame)
    assert isinstance(decode_reply(error_reply(3, "x" * 5000)), PeerError)


def test_zap_admits_only_allowed_curve_keys() -> None:
    allowed_key = generate_keypair().public
    allowed = frozenset({allowed_key})
    other = z85_key_bytes(generate_keypair().public)

    def request(mechanism: bytes, *creds: bytes) -> list[bytes]:
        return [b"1.0", b"rid", b"tmr-backend", b"127.0.0.1", b"", mechanism, *creds]

    reply, ok = zap_reply(request(b"CURVE", z85_key_bytes(allowed_key)), allowed)
    assert ok and reply[:3] == [b"1.0", b"rid", b"200"] and reply[4] == allowed_key.encode()
    for frames in (
        request(b"CURVE", other),
        request(b"PLAIN", b"user", b"pass"),
        request(b"NULL"),
        request(b"CURVE", z85_key_bytes(allowed_key), b"extra"),
    ):
        reply, ok = zap_reply(frames, allowed)
        assert not ok and reply[2] == b"400"
    reply, ok = zap_reply([b"2.0", b"rid"], allowed)
    assert not ok and reply[:3] == [b"1.0", b"rid", b"500"]
    reply, ok = zap_reply([], allowed)
    assert not ok and len(reply) == 6


# ------------------------------------------------------------------ the loop, in a thread


def test_run_serves_allowed_servers_and_stops_on_request(expiring: Setup) -> None:
    server = generate_keypair()
    config = replace(expiring.config, listen="tcp://127.0.0.1:*", allowed_servers=(server.public,))
    service = BackendService(config, time_source=expiring.clock)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not service.endpoint or not config.ctl_socket.exists():
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        assert ctl_request(config.ctl_socket, "status")["name"] == "b1"
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.curve_secretkey = server.secret.encode()
            sock.curve_publickey = server.public.encode()
            assert service.identity is not None
            sock.curve_serverkey = service.identity.keys.public.encode()
            sock.connect(service.endpoint)
            sock.send(encode_request(Probe(7)))
            assert sock.poll(5000)
            status = decode_reply(sock.recv())
            assert isinstance(status, Status) and status.mid == 7
            sock.close()
        finally:
            ctx.term()
    finally:
        service.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert not config.ctl_socket.exists()


def test_every_frame_is_decoded_once(svc: BackendService, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame that is not a request used to be decoded up to three times (as a request, as a
    usage query, then for its message id): one classifying decode now, whatever it holds."""
    calls: list[int] = []
    real_unpack = codec.unpack  # the function peer_api imports and decodes with

    def counting(frame: bytes, **kwargs: Any) -> dict[str, Any]:
        calls.append(len(frame))
        return real_unpack(frame, **kwargs)

    monkeypatch.setattr(peer_api, "unpack", counting)
    frames = [
        pack({"t": "what", "mid": 9}),  # unknown type
        pack({"t": "usage_query", "mid": 4, "since": 1.0}),  # a malformed usage query
        peer_api.encode_usage_query(UsageQuery(5, 0.0, 1.0, 10)),
        encode_request(Probe(6)),
        b"\xc1",
    ]
    replies = svc.handle_frames(frames)
    assert len(calls) == len(frames)
    bad = decode_reply(replies[0])  # type: ignore[arg-type]
    assert isinstance(bad, PeerError) and bad.mid == 9
    usage_error = decode_reply(replies[1])  # type: ignore[arg-type]
    assert isinstance(usage_error, PeerError) and usage_error.mid == 4
    assert "until" in usage_error.message
    assert isinstance(decode_reply(replies[3]), Status)  # type: ignore[arg-type]
    assert svc.counters["bad_requests"] == 3


# ------------------------------------------------------------------ bulk steps


def test_a_promise_is_encoded_and_a_bulk_frame_decoded_with_the_collector_paused(
    svc: BackendService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A takeover's promise carries whole tables, a catch-up snapshot can too: their
    encoding and decoding create an object per field of every handle, none of them garbage
    (`tmr.serving.collector`). Everyday frames run with the collector as it is."""
    import gc

    from tmr.serving.collector import BULK_FRAME

    seen: list[tuple[str, bool]] = []
    encode, decode = peer_api.encode_reply, peer_api.decode_backend_frame

    def encoding(msg: Any) -> bytes:
        seen.append((f"encode {type(msg).__name__}", gc.isenabled()))
        return encode(msg)

    def decoding(frame: bytes) -> Any:
        seen.append((f"decode {len(frame) >= BULK_FRAME}", gc.isenabled()))
        return decode(frame)

    # `peer_api` is the module tmr.backend.service encodes and decodes with
    monkeypatch.setattr(peer_api, "encode_reply", encoding)
    monkeypatch.setattr(peer_api, "decode_backend_frame", decoding)
    assert isinstance(ask(svc, Prepare(1, E1)), Promise)
    assert seen == [("decode False", True), ("encode Promise", False)]
    seen.clear()
    bulk = encode_request(Snapshot(2, E1, (SnapshotEntry(KEY, 0, ()),))) + b"\x00" * BULK_FRAME
    svc.handle_frame(bulk)  # refused as a bad frame (trailing bytes): decoded all the same
    assert seen[0] == ("decode True", False)
    seen.clear()
    assert isinstance(ask(svc, Snapshot(3, E1, (SnapshotEntry(KEY, 0, ()),))), Accepted)
    assert seen == [("decode False", True), ("encode Accepted", True)]
    assert gc.isenabled()
