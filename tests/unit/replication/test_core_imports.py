"""The sans-I/O protocol core imports without the I/O and crypto libraries (docs/design.md §2)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("zmq", "cryptography", "msgpack", "prometheus_client", "sqlite3")


def test_the_protocol_core_loads_no_io_or_crypto_library() -> None:
    code = (
        "import sys\n"
        "import tmr.replication.leader, tmr.replication.acceptor\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"the protocol core loaded {out.stdout.strip()}"


def test_the_licensing_package_still_exports_its_names() -> None:
    import tmr.licensing as lic

    for name in lic.__all__:
        assert getattr(lic, name) is not None
