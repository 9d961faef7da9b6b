"""Helpers shared by the licensing tests: a vendor, three backends, issued license sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tmr.isv import IssuedSet, VendorProfile, init_vendor, issue_set
from tmr.keys import NodeKeys, generate_keypair
from tmr.licensing import FingerprintDoc, VendorKeyring
from tmr.licensing.fingerprint import make_fingerprint_doc

FIRM = 6_000_123
PRODUCT = 1001
NOW = 1_800_000_000.0  # fixed "now" for issuing and verifying


@dataclass(frozen=True)
class Node:
    keys: NodeKeys
    machine_id: str
    doc: FingerprintDoc

    @property
    def fingerprint(self) -> str:
        return self.doc.fingerprint


def make_nodes(n: int = 3) -> list[Node]:
    nodes = []
    for i in range(n):
        keys = generate_keypair()
        machine_id = f"{i:032x}"
        nodes.append(Node(keys, machine_id, make_fingerprint_doc(keys.public, machine_id)))
    return nodes


@dataclass(frozen=True)
class World:
    """A vendor and three backends; ``issue`` makes a set and returns it."""

    vendor: VendorProfile
    nodes: list[Node]
    keyring: VendorKeyring
    out: Path

    def issue(
        self,
        tmr_id: int,
        quantity: int = 20,
        *,
        expires: int | None = None,
        features: dict[str, str] | None = None,
        product_code: int = PRODUCT,
    ) -> IssuedSet:
        return issue_set(
            self.vendor,
            product_code=product_code,
            quantity=quantity,
            tmr_id=tmr_id,
            fingerprints=[n.doc for n in self.nodes],
            out_dir=self.out,
            expires=expires,
            features=features,
            now=NOW,
        )

    def copies(self, issued: IssuedSet) -> list[bytes]:
        return [c.path.read_bytes() for c in issued.copies]


def make_world(root: Path) -> World:
    vendor = init_vendor(root / "vendor", FIRM, "Acme")
    return World(vendor, make_nodes(), VendorKeyring.of(vendor.public), root / "out")
