"""`tmr backend run` as a real process on 127.0.0.1, driven like a TMR server would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from tmr.ctl import CtlError, ctl_request
from tmr.keys import NodeKeys, generate_keypair
from tmr.licensing import FingerprintDoc, make_fingerprint_doc
from tmr.protocol.codec import pack
from tmr.protocol.peer_api import decode_reply, encode_request
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
    Rejected,
    Snapshot,
    SnapshotEntry,
    Status,
)
from tmr.replication.types import Epoch, Grant, HandleRecord, Version

pytestmark = pytest.mark.integration

FIRM = 6_000_123
PRODUCT = 42
KEY = (FIRM, PRODUCT)
LQ = 3
E1 = Epoch(1, "tmr-a")
E0 = Epoch(0, "tmr-a")
START_TIMEOUT = 15.0
REPLY_TIMEOUT = 5.0


def run_tmr(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tmr", *args], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@dataclass(frozen=True)
class World:
    """Vendor, the backend's identity, two TMR server keys, an intruder, issued copies."""

    root: Path
    backend_key: Path
    machine_id: Path
    vendor_pub: Path
    servers: tuple[NodeKeys, NodeKeys]
    intruder: NodeKeys
    copy7: Path  # TMR ID 7, LQ 3, for this backend
    copy8: Path  # TMR ID 8, LQ 5, for this backend
    foreign7: Path  # TMR ID 7 for another backend


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world")
    run_tmr("vendor", "init", "--dir", str(root / "vendor"), "--firm-code", str(FIRM))
    run_tmr("keygen", "--out", str(root / "b1.key"))
    machine_id = root / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    doc_text = run_tmr(
        "backend",
        "fingerprint",
        "--key",
        str(root / "b1.key"),
        "--machine-id-file",
        str(machine_id),
    )
    docs = [FingerprintDoc.parse(doc_text)]
    for i in (2, 3):
        docs.append(make_fingerprint_doc(generate_keypair().public, f"machine-{i}"))
    for i, doc in enumerate(docs):
        (root / f"fp{i + 1}.json").write_text(doc.to_json())
    paths = {}
    for tmr_id, quantity in ((7, LQ), (8, 5)):
        out = root / f"issued{tmr_id}"
        issued = json.loads(
            run_tmr(
                "vendor", "issue", "--dir", str(root / "vendor"), "--product-code", str(PRODUCT),
                "--quantity", str(quantity), "--tmr-id", str(tmr_id),
                "--fingerprint", str(root / "fp1.json"), "--fingerprint", str(root / "fp2.json"),
                "--fingerprint", str(root / "fp3.json"), "--out", str(out),
            )
        )  # fmt: skip
        paths[tmr_id] = [Path(c["path"]) for c in issued["copies"]]
    servers = (generate_keypair(), generate_keypair())
    return World(
        root=root,
        backend_key=root / "b1.key",
        machine_id=machine_id,
        vendor_pub=root / "vendor" / "vendor.pub",
        servers=servers,
        intruder=generate_keypair(),
        copy7=paths[7][0],
        copy8=paths[8][0],
        foreign7=paths[7][1],
    )


def wait_for(what: str, check: Callable[[], Any], timeout: float = START_TIMEOUT) -> Any:
    """Poll `check` until it returns a truthy value (CtlError counts as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except CtlError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Backend:
    """One `tmr backend run` process and the files it uses."""

    def __init__(self, world: World, base: Path, ctl_dir: Path) -> None:
        self.world = world
        self.base = base
        self.license_dir = base / "licenses"
        self.license_dir.mkdir(parents=True)
        shutil.copy(world.copy7, self.license_dir)
        self.ctl_socket = ctl_dir / "b1.sock"
        self.config = base / "backend.toml"
        allowed = ", ".join(f'"{k.public}"' for k in world.servers)
        self.config.write_text(
            f"""
name = "b1"
key_file = "{world.backend_key}"
state_dir = "{base / "state"}"
license_dir = "{self.license_dir}"
vendor_keys = ["{world.vendor_pub}"]
allowed_servers = [{allowed}]
listen = "tcp://127.0.0.1:*"
machine_id_file = "{world.machine_id}"
ctl_socket = "{self.ctl_socket}"
log_level = "debug"
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        self.public_key = ""
        self.sockets: list[zmq.Socket[bytes]] = []
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.runs = 0

    @property
    def log_path(self) -> Path:
        return self.base / f"stderr.{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        with self.log_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tmr", "backend", "run", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        status = wait_for("the control socket", self._status_if_alive)
        self.endpoint = status["endpoint"]
        self.public_key = status["public_key"]
        assert self.endpoint.startswith("tcp://127.0.0.1:")

    def _status_if_alive(self) -> dict[str, Any] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"backend exited {self.proc.returncode}: {self.logs()}")
        if not self.ctl_socket.exists():
            return None
        return ctl_request(self.ctl_socket, "status", timeout=1.0)

    def ctl(self, cmd: str) -> dict[str, Any]:
        return ctl_request(self.ctl_socket, cmd, timeout=REPLY_TIMEOUT)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)

    def dealer(self, keys: NodeKeys) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_secretkey = keys.secret.encode()
        sock.curve_publickey = keys.public.encode()
        sock.curve_serverkey = self.public_key.encode()
        sock.connect(self.endpoint)
        self.sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        self.ctx.term()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def backend(world: World, tmp_path: Path) -> Iterator[Backend]:
    ctl_dir = Path(tempfile.mkdtemp(prefix="tmrb-"))  # unix socket paths must stay short
    b = Backend(world, tmp_path, ctl_dir)
    try:
        b.start()
        yield b
    finally:
        b.close()
        shutil.rmtree(ctl_dir, ignore_errors=True)


def recv(sock: zmq.Socket[bytes], timeout: float = REPLY_TIMEOUT) -> list[bytes] | None:
    if not sock.poll(int(timeout * 1000)):
        return None
    return sock.recv_multipart()


def call(sock: zmq.Socket[bytes], msg: PeerRequest) -> PeerReply:
    sock.send(encode_request(msg))
    frames = recv(sock)
    assert frames is not None, f"no reply to {msg}"
    assert len(frames) == 1
    return decode_reply(frames[0])


def handle(name: str, seats: int) -> HandleRecord:
    return HandleRecord(name, FIRM, PRODUCT, seats, "client-1", f"rid-{name}", time.time())


def probe(sock: zmq.Socket[bytes], mid: int = 1) -> Status:
    reply = call(sock, Probe(mid))
    assert isinstance(reply, Status), reply
    assert reply.mid == mid
    return reply


# ------------------------------------------------------------------ tests


def test_replication_round_trip_is_durable_across_kill9(world: World, backend: Backend) -> None:
    leader = backend.dealer(world.servers[0])
    status = probe(leader)
    assert status.name == "b1"
    lic = status.licenses[KEY]
    assert (lic.tmr_id, lic.quantity, lic.valid) == (7, LQ, True)
    assert not status.caught_up

    promise = call(leader, Prepare(2, E1))
    assert isinstance(promise, Promise) and promise.epoch == E1 and not promise.caught_up

    snap = call(leader, Snapshot(3, E1, (SnapshotEntry(KEY, 0, ()),)))
    assert isinstance(snap, Accepted) and snap.results[KEY].status is EntryStatus.OK

    grant = Accept(4, E1, (AcceptEntry(KEY, 1, (Grant(handle("h1", 2)),)),))
    acked = call(leader, grant)
    assert isinstance(acked, Accepted)
    assert acked.results[KEY].status is EntryStatus.OK and acked.results[KEY].seq == 1

    sealed = call(leader, Crypt(5, E1, KEY, "h1", "client-1", "encrypt", b"secret"))
    assert isinstance(sealed, CryptResult) and sealed.ok
    opened = call(leader, Crypt(6, E1, KEY, "h1", "client-1", "decrypt", sealed.data))
    assert isinstance(opened, CryptResult) and opened.ok and opened.data == b"secret"

    backend.kill9()
    backend.start()
    leader = backend.dealer(world.servers[1])  # the other TMR server is allowed as well
    status = probe(leader, mid=7)
    assert status.promised == E1 and status.caught_up
    assert status.versions[KEY] == Version(E1, 1)
    assert status.seats[KEY] == 2

    too_many = Accept(8, E1, (AcceptEntry(KEY, 2, (Grant(handle("h2", 2)),)),))
    refused = call(leader, too_many)
    assert isinstance(refused, Accepted)
    assert refused.results[KEY].status is EntryStatus.REFUSED
    assert "LQ" in refused.results[KEY].reason
    fits = Accept(9, E1, (AcceptEntry(KEY, 2, (Grant(handle("h3", 1)),)),))
    ok = call(leader, fits)
    assert isinstance(ok, Accepted) and ok.results[KEY].status is EntryStatus.OK
    assert probe(leader, mid=10).seats[KEY] == LQ

    stale = call(leader, Prepare(11, E0))
    assert isinstance(stale, Rejected) and stale.promised == E1

    status_json = backend.ctl("status")
    product = status_json["products"][0]
    assert (product["firm"], product["product"], product["seats"]) == (FIRM, PRODUCT, LQ)
    assert product["license"]["tmr_id"] == 7
    assert status_json["promised"]["counter"] == 1 and status_json["caught_up"] is True
    events = {e["event"] for e in backend.events()}
    assert {"start", "license_loaded"} <= events
    assert backend.terminate() == 0


def test_a_key_outside_the_allowlist_gets_no_answer(world: World, backend: Backend) -> None:
    intruder = backend.dealer(world.intruder)
    intruder.send(encode_request(Probe(1)))
    assert recv(intruder, timeout=1.5) is None
    probe(backend.dealer(world.servers[0]))  # still serving the allowed servers
    assert backend.terminate() == 0
    assert any(e["event"] == "peer_denied" for e in backend.events())


def test_malformed_frames_get_a_peer_error_and_the_service_keeps_serving(
    world: World, backend: Backend
) -> None:
    leader = backend.dealer(world.servers[0])
    cases: list[tuple[list[bytes], int]] = [
        ([b"\xc1garbage"], 0),
        ([pack({"t": "nonsense", "mid": 17})], 17),
        ([pack({"t": "prepare", "mid": 18, "epoch": ["x", 1]})], 18),
        ([pack({"t": "accept", "mid": 19, "epoch": [1, "s"], "entries": [[[1, 2], 0, []]]})], 19),
        ([b"two", b"payloads"], 0),
        ([b""], 0),
    ]
    for frames, mid in cases:
        leader.send_multipart(frames)
        reply = recv(leader)
        assert reply is not None, frames
        err = decode_reply(reply[-1])
        assert isinstance(err, PeerError) and err.mid == mid, (frames, err)
    leader.send_multipart([b"", encode_request(Probe(20))])  # a REQ-style empty delimiter
    reply = recv(leader)
    assert reply is not None and reply[0] == b""
    assert isinstance(decode_reply(reply[1]), Status)
    assert probe(leader, mid=21).licenses[KEY].tmr_id == 7
    assert backend.ctl("status")["counters"]["bad_requests"] == len(cases)


def test_sighup_and_ctl_reload_reverify_the_container(world: World, backend: Backend) -> None:
    assert backend.proc is not None
    leader = backend.dealer(world.servers[0])
    shutil.copy(world.copy8, backend.license_dir)
    backend.proc.send_signal(signal.SIGHUP)

    def reloaded() -> bool:
        lic = backend.ctl("status")["products"][0]["license"]
        return bool(lic["tmr_id"] == 8)

    wait_for("the #8 copy after SIGHUP", reloaded)
    lic = probe(leader).licenses[KEY]
    assert (lic.tmr_id, lic.quantity, lic.valid) == (8, 5, True)
    superseded = backend.ctl("status")["rejected"]
    assert [r["reason"] for r in superseded] == ["SUPERSEDED"]

    # A copy for another backend is refused; dropping back to #7 is a rollback.
    (backend.license_dir / world.copy8.name).unlink()
    shutil.copy(world.foreign7, backend.license_dir)
    reply = backend.ctl("reload")
    assert reply["ok"] is True
    reasons = sorted(r["reason"] for r in reply["rejected"])
    assert reasons == ["ROLLBACK", "WRONG_FINGERPRINT"]
    # The #7 copy is shown, not valid: below the highest TMR ID installed.
    (shown,) = reply["licenses"]
    assert (shown["tmr_id"], shown["valid"], shown["reason"]) == (7, False, "below floor")
    lic = probe(leader, mid=2).licenses[KEY]
    assert (lic.tmr_id, lic.valid) == (7, False)
    backend.terminate()
    events = [e["event"] for e in backend.events()]
    assert events.count("license_changed") >= 2
    # The change came from the SIGHUP reload (its trigger in the log), not from a later one.
    by_sighup = [e for e in backend.events() if e.get("trigger") == "SIGHUP"]
    assert [e["event"] for e in by_sighup] == ["license_changed"]


def test_sigterm_stops_cleanly(backend: Backend) -> None:
    assert stat.S_IMODE(backend.ctl_socket.stat().st_mode) == 0o660
    assert backend.terminate() == 0
    events = backend.events()
    assert events[-1]["event"] == "stop" and events[-1]["reason"] == "SIGTERM"
    assert not backend.ctl_socket.exists()
    for e in backend.events():
        assert {"ts", "level", "service", "event"} <= set(e)


def test_start_failures_are_one_line_errors(world: World, backend: Backend) -> None:
    # A second process on the same state directory is refused.
    second = subprocess.run(
        [sys.executable, "-m", "tmr", "backend", "run", "--config", str(backend.config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert "in use by another backend" in second.stderr
    assert backend.ctl("health")["ok"] is True  # the first one is unharmed

    bad = backend.base / "bad.toml"
    bad.write_text(
        backend.config.read_text().replace(str(backend.license_dir), "/nonexistent/licenses")
    )
    backend.terminate()
    failed = subprocess.run(
        [sys.executable, "-m", "tmr", "backend", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert failed.returncode == 1
    assert "tmr: error:" in failed.stderr and "/nonexistent/licenses" in failed.stderr
    assert not os.path.exists(backend.ctl_socket)
