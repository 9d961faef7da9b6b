"""The report worker process (`tmr.report.offload`): low priority against every process of
the host, not only its own service's, and gone with its service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tmr.report.offload import AUTOGROUP, NICE, Offload

SERVICES = str(Path(__file__).resolve().parents[2] / "services")


def test_the_worker_runs_in_a_session_of_its_own_at_nice_19() -> None:
    offload = Offload()
    try:
        pid = offload.run(os.getpid)
        assert pid != os.getpid()
        assert offload.run(os.getsid, 0) == pid  # a session leader: an autogroup of its own
        assert offload.run(os.nice, 0) == NICE
        if Path(AUTOGROUP).exists():  # Linux with autogroups
            assert offload.run(Path(AUTOGROUP).read_text).strip().endswith(f"nice {NICE}")
    finally:
        offload.close()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_worker_exits_when_its_service_is_killed() -> None:
    script = (
        "import os, sys, time\n"
        "from tmr.report.offload import Offload\n"
        "o = Offload()\n"
        "print(o.run(os.getpid), flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": SERVICES}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        worker = int(proc.stdout.readline())
        assert _running(worker)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(worker), "the worker outlived its service"
    finally:
        proc.kill()
        proc.wait()
