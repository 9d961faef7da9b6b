"""Attack: a FIFO (or a device) named ``*.tmrlic`` in a backend's license directory.

The loader opened every copy with a blocking open: a FIFO hung the backend's reload (and with
it the backend's whole poll loop) until something wrote to the FIFO. The loader must open
only regular files, never block, and name what it skipped."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster_helpers import LocalCluster
from tmr.ctl import ctl_request
from tmr.licensing.fileio import NotARegularFile, read_limited
from tmr.local.cluster import _alive


def _unblock(fifo: Path) -> None:
    """Open the FIFO for writing once, so a reader stuck in open() (old code) returns."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_read_limited_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.tmrlic"
    os.mkfifo(fifo)
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(read_limited(fifo, 1024))
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5.0)
    blocked = t.is_alive()
    _unblock(fifo)
    t.join(5.0)
    assert not blocked, "read_limited blocked on a FIFO"
    assert len(outcome) == 1 and isinstance(outcome[0], NotARegularFile)
    assert "FIFO" in str(outcome[0])


def test_read_limited_refuses_a_device_and_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotARegularFile):
        read_limited(Path("/dev/zero"), 1024)
    with pytest.raises(OSError):
        read_limited(tmp_path, 1024)


def test_read_limited_reads_at_most_limit_plus_one(tmp_path: Path) -> None:
    f = tmp_path / "big"
    f.write_bytes(b"a" * 10_000)
    assert read_limited(f, 100) == b"a" * 101
    assert read_limited(f, 20_000) == b"a" * 10_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("lic") / "cluster", quantity=3)
    try:
        yield c
    finally:
        c.stop_all()


def test_backend_reload_skips_a_fifo_and_names_it(cluster: LocalCluster) -> None:
    node = cluster.nodes["backend-1"]
    license_dir = Path(node["config"]).parent / "licenses"
    fifo = license_dir / "zz-attack.tmrlic"
    os.mkfifo(fifo)
    try:
        reply = ctl_request(Path(node["ctl_socket"]), "reload", timeout=10.0)
        assert reply["ok"] is True, reply
        assert reply["skipped"] == [{"file": str(fifo), "reason": "a FIFO, not a regular file"}]
        assert [lic["tmr_id"] for lic in reply["licenses"]] == [7]  # the real copy still loads
        status = cluster.ctl("backend-1", "status")
        assert [s["file"] for s in status["skipped"]] == [str(fifo)]
        log = Path(node["log"]).read_text()
        assert '"event":"license_file_skipped"' in log and str(fifo) in log
        assert _alive(node["pid"])
    finally:
        _unblock(fifo)
        fifo.unlink()
