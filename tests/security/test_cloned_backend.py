"""Attack: one backend cloned three times serves the whole license.

Copying backend-1's node key, machine-id file and its license copy onto three new hosts and
pointing a new TMR server at them gave ``1:#8 2:#8 3:#8`` and all 30 seats, while the real
cluster kept serving its own 30: nothing checked that the three holders were three
*different* copies of one set.

Defence: every copy names, under the vendor's signature, its set, its index in the set and
the CURVE key of its backend. The server counts each (set, index), fingerprint and key once,
and only from the backend whose authenticated key the copy is bound to; a copy that does not
count shows as ``!#ID`` with the reason (CLONED_COPY, WRONG_BACKEND_KEY). A server.toml naming
one key for two backends is refused outright.

The tests run the real pipeline from the vendor's files to the leader's decision: copies
issued by `tmr vendor issue`'s library, loaded and verified by the backend's loader
(`load_license_view`, with the node key and machine-id of each host), reported by acceptors
to a leader that grants seats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from zmq.utils import z85

from tmr.backend.licenses import load_license_view
from tmr.cli.client_cmds import format_list
from tmr.config import load_server_config
from tmr.errors import ConfigError, ErrorCode
from tmr.isv import IssuedSet, init_vendor, issue_set
from tmr.keys import NodeKeys, generate_keypair
from tmr.licensing import ClockGuard, VendorKeyring, fingerprint_of, make_fingerprint_doc
from tmr.licensing.curve import z85_key_bytes
from tmr.protocol.client_api import LicenseEntry, ListResult
from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.leader import ClientReply, Effects, Leader, LeaderConfig
from tmr.replication.types import ZERO_EPOCH, LicenseInfo
from tmr.web.metrics import ServerMetrics
from tmr.web.snapshot import build_snapshot

FIRM, PRODUCT = 6_000_123, 42
KEY = (FIRM, PRODUCT)
NAMES = ("backend-1", "backend-2", "backend-3")


@dataclass(frozen=True)
class Host:
    """A backend host: its node key pair and machine-id."""

    keys: NodeKeys
    machine_id: str

    @property
    def key_hex(self) -> str:
        return z85_key_bytes(self.keys.public).hex()


@pytest.fixture(scope="module")
def vendor_set(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[VendorKeyring, list[Host], IssuedSet]:
    """The vendor's set #8 (LQ 30) for the real trio."""
    root = tmp_path_factory.mktemp("vendor")
    vendor = init_vendor(root / "vendor", FIRM, "Acme")
    hosts = [Host(generate_keypair(), f"{i:032x}") for i in (1, 2, 3)]
    docs = [make_fingerprint_doc(h.keys.public, h.machine_id) for h in hosts]
    issued = issue_set(
        vendor, product_code=PRODUCT, quantity=30, tmr_id=8, fingerprints=docs, out_dir=root / "out"
    )
    return VendorKeyring.of(vendor.public), hosts, issued


def report(tmp: Path, keyring: VendorKeyring, host: Host, copy_file: Path) -> LicenseInfo:
    """What a backend on ``host`` with ``copy_file`` in its license directory reports."""
    lic_dir = tmp / f"host-{len(list(tmp.glob('host-*')))}"
    lic_dir.mkdir()
    (lic_dir / copy_file.name).write_bytes(copy_file.read_bytes())
    clock = ClockGuard(tmp / f"clock-{lic_dir.name}.json")
    view = load_license_view(
        lic_dir,
        keyring=keyring,
        fingerprint=fingerprint_of(host.keys.public, host.machine_id),
        node_secret=host.keys.secret,
        clock=clock,
        installed_tmr_ids={},
    )
    assert not view.rejected, view.rejected
    return view.infos(clock)[KEY]


class Trio:
    """A TMR server (leader) and three backends (acceptors) in one process, loss-free."""

    def __init__(self, reports: Sequence[LicenseInfo | None], backend_keys: Sequence[str]) -> None:
        self.now = 0.0
        self.acceptors = {
            n: Acceptor(n, AcceptorState(ZERO_EPOCH, False), {KEY: lic} if lic else {})
            for n, lic in zip(NAMES, reports, strict=True)
        }
        cfg = LeaderConfig("tmr-x", NAMES, backend_keys=tuple(backend_keys))
        self.leader = Leader(cfg, wall_clock=lambda: self.now)
        self.replies: list[ClientReply] = []
        self.run(self.leader.promote(self.now))
        self.advance(1.5)

    def run(self, fx: Effects) -> None:
        queue = [fx]
        while queue:
            out = queue.pop(0)
            self.replies.extend(out.replies)
            for name, msg in out.send:
                acc = self.acceptors[name]
                step = acc.handle(msg, self.now)
                acc.committed(step)
                queue.append(self.leader.on_reply(name, step.reply, self.now))

    def advance(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.1)):
            self.now += 0.1
            self.run(self.leader.tick(self.now))

    def checkout(self, seats: int) -> ClientReply:
        before = len(self.replies)
        owner = z85.encode(b"\x07" * 32).decode()  # the client's CURVE key owns the handle
        self.run(
            self.leader.checkout("tok", "r1", "c1", FIRM, PRODUCT, seats, self.now, owner=owner)
        )
        self.advance(0.3)
        (reply,) = self.replies[before:]
        return reply

    def license(self) -> LicenseEntry:
        (lic,) = self.leader.licenses_view()
        return lic


def test_the_real_trio_serves_its_set(tmp_path: Path, vendor_set: Any) -> None:
    keyring, hosts, issued = vendor_set
    reports = [
        report(tmp_path, keyring, h, c.path) for h, c in zip(hosts, issued.copies, strict=True)
    ]
    trio = Trio(reports, [h.key_hex for h in hosts])
    assert trio.checkout(30).ok
    lic = trio.license()
    assert (lic.available, lic.status, lic.reason) == (True, "1:#8 2:#8 3:#8", None)


def test_one_backend_cloned_onto_three_hosts_gets_no_quorum(
    tmp_path: Path, vendor_set: Any
) -> None:
    """backend-1's node key, machine-id and copy on three hosts; the new server names that
    key for all three. Each clone loads the copy (it is genuinely backend-1's), but the
    server counts it once: no quorum, no seat, reason CLONED_COPY on the license."""
    keyring, hosts, issued = vendor_set
    clone = hosts[0]
    reports = [report(tmp_path, keyring, clone, issued.copies[0].path) for _ in NAMES]
    trio = Trio(reports, [clone.key_hex] * 3)
    reply = trio.checkout(1)
    assert reply.error == ErrorCode.QUORUM_LOST and "CLONED_COPY" in reply.message
    lic = trio.license()
    assert (lic.available, lic.tmr_id, lic.quantity) == (False, None, 0)
    assert (lic.status, lic.reason) == ("1:(#8) 2:!#8 3:!#8", "CLONED_COPY")
    problems = [
        b["licenses"][f"{FIRM}:{PRODUCT}"]["problem"] for b in trio.leader.status()["backends"]
    ]
    assert problems == [None, "CLONED_COPY", "CLONED_COPY"]


def test_clones_of_two_copies_plus_a_stray_do_not_add_up(tmp_path: Path, vendor_set: Any) -> None:
    """Two clones of backend-1 and a clone of backend-2: two copies, one license (the third
    backend's clone adds nothing), and the server names the clone."""
    keyring, hosts, issued = vendor_set
    paths = [c.path for c in issued.copies]
    reports = [
        report(tmp_path, keyring, hosts[0], paths[0]),
        report(tmp_path, keyring, hosts[0], paths[0]),
        report(tmp_path, keyring, hosts[1], paths[1]),
    ]
    trio = Trio(reports, [hosts[0].key_hex, hosts[0].key_hex, hosts[1].key_hex])
    lic = trio.license()
    assert (lic.status, lic.reason) == ("1:#8 2:!#8 3:#8", "CLONED_COPY")


def test_a_copy_presented_by_another_key_is_not_counted(tmp_path: Path, vendor_set: Any) -> None:
    """backend-2's slot authenticates with key 2 but reports backend-3's copy (a backend that
    lies about its copy; backend-3 holds none): the copy is not counted."""
    keyring, hosts, issued = vendor_set
    reports = [
        report(tmp_path, keyring, h, c.path) for h, c in zip(hosts, issued.copies, strict=True)
    ]
    trio = Trio([reports[0], reports[2], None], [h.key_hex for h in hosts])
    reply = trio.checkout(1)
    assert reply.error == ErrorCode.QUORUM_LOST
    lic = trio.license()
    assert (lic.available, lic.reason) == (False, "WRONG_BACKEND_KEY")
    assert lic.status == "1:(#8) 2:!#8 3:-"


def test_the_operator_sees_the_clone_everywhere(tmp_path: Path, vendor_set: Any) -> None:
    """The reason is visible in `tmr client list`, `tmr ctl status` (the leader's status),
    WebAdmin's snapshot and /metrics."""
    keyring, hosts, issued = vendor_set
    clone = hosts[0]
    reports = [report(tmp_path, keyring, clone, issued.copies[0].path) for _ in NAMES]
    trio = Trio(reports, [clone.key_hex] * 3)
    status = trio.leader.status()
    # tmr ctl status: per backend, per license
    assert [b["licenses"][f"{FIRM}:{PRODUCT}"]["problem"] for b in status["backends"]] == [
        None,
        "CLONED_COPY",
        "CLONED_COPY",
    ]
    # tmr client list: the reason travels with the license entry and is printed
    entry = LicenseEntry.from_wire(status["licenses"][0])
    assert entry.reason == "CLONED_COPY"
    table = format_list(ListResult("131-0000001", "tmr-x", (entry,)))
    assert "1:(#8) 2:!#8 3:!#8 CLONED_COPY" in table
    # WebAdmin
    snap = build_snapshot(status, now_wall=1.7e9, lease=30.0)
    lic = snap["licenses"][0]
    assert lic["level"] == "error" and "CLONED_COPY" in lic["message"]
    assert [b["text"] for b in lic["backends"]] == ["(#8)", "!#8", "!#8"]
    assert lic["holders"] == 1
    # /metrics
    snap["published_at"] = 0.0
    text = generate_latest(ServerMetrics(lambda: snap, lambda: 0.0).registry).decode()
    got = {
        (s.labels.get("reason"), s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "tmr_license_copies_not_counted"
    }
    assert got == {("CLONED_COPY", 2.0), ("WRONG_BACKEND_KEY", 0.0), ("UNBOUND_COPY", 0.0)}


def test_a_server_naming_one_key_for_two_backends_is_refused(tmp_path: Path) -> None:
    key = generate_keypair().public
    other = generate_keypair().public
    text = 'name = "tmr-x"\nservice_key_file = "/s"\nnode_key_file = "/n"\n' + "".join(
        f'[[backends]]\nname = "b{i}"\nendpoint = "tcp://127.0.0.1:{i}"\npublic_key = "{k}"\n'
        for i, k in enumerate((key, key, other), start=1)
    )
    path = tmp_path / "server.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="backend public keys must be distinct"):
        load_server_config(path)
