"""playbooks/rolling_upgrade.yml to a newer build of the package, with the workload running.

The newer build is the same sources with the version bumped (X.Y.Z -> X.Y.Z.post1), built into
a copy of the scenario's wheelhouse, so the playbook installs a different wheel on every host:
backends one at a time, the standby server, a switchover, the former active server, the client.
The SDK's retries (same request id) may hide a request that met a restarting server, but no
checkout, heartbeat or release may fail with a service error, no seat may be lost, and the
checker must be clean. Every host must end on the new version.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.lab.labctl import BACKENDS, CLIENT, REPO, SERVERS, TMR, Lab, check, say

# a service error or an unknown outcome of any operation, or a lost handle, is a violation
FAIL_ON = "unknown,QUORUM_LOST,NOT_ACTIVE,UNKNOWN_HANDLE,TIMEOUT,BAD_REQUEST,lost:ok"


def newer_sources(dest: Path) -> str:
    """A copy of the project with its version bumped; returns the new version."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "CHANGELOG.md"):
        if (REPO / f).exists():
            shutil.copy2(REPO / f, dest / f)
    # the pinned, hashed dependencies and build backend (build-wheelhouse.sh needs them)
    shutil.copytree(REPO / "requirements", dest / "requirements")
    shutil.copytree(
        REPO / "services",
        dest / "services",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    # the one version: tmr.__version__, which pyproject.toml reads (dynamic)
    init = dest / "services" / "tmr" / "__init__.py"
    text = init.read_text()
    old = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    assert old, "no __version__ in services/tmr/__init__.py"
    new = f"{old.group(1)}.post1"
    init.write_text(text.replace(old.group(0), f'__version__ = "{new}"'))
    return new


def versions(lab: Lab) -> dict[str, str]:
    out = {}
    for h in (*SERVERS, *BACKENDS, CLIENT):
        out[h] = lab.sh(h, f"{TMR} --version").stdout.strip().removeprefix("tmr ")
    return out


@pytest.mark.timeout(1200)
def test_rolling_upgrade_under_load() -> None:
    lab = Lab()
    lab.wait_healthy(180)
    before = versions(lab)
    say(f"installed: {before}")
    assert len(set(before.values())) == 1, before

    build = REPO / "build" / lab.name
    src = build / "newer-src"
    new_version = newer_sources(src)
    assert new_version not in before.values()
    wheelhouse = build / "wheelhouse-newer"
    if wheelhouse.exists():
        shutil.rmtree(wheelhouse)
    shutil.copytree(build / "wheelhouse", wheelhouse)
    say(f"newer build {new_version} from {src}")

    wl = lab.start_workload(
        "rolling-upgrade", duration=1200, clients=20, seed=11, extra=["--at-end", "abandon"]
    )
    lab.wait_for("the workload is running", lambda: wl.granted_since(wl.started) >= 20, 60)
    active_before = lab.active()
    lab.mark("rolling_upgrade.yml starts")
    lab.playbook(
        "rolling_upgrade.yml",
        "-e",
        f"tmr_common_source_dir={src}",
        "-e",
        f"tmr_common_wheelhouse_dir={wheelhouse}",
        "-e",
        "tmr_common_build_wheelhouse=true",
        timeout=1000,
    )
    lab.mark("rolling_upgrade.yml done")
    active_after = lab.wait_healthy()
    t = lab.mark("upgraded cluster serving")
    wl.wait_granted(t, n=10, timeout=60)

    history = wl.stop()
    handles = wl.handles()
    report = check(history, lq=20, handles=handles, events=lab.events, fail_on=FAIL_ON)
    after = versions(lab)
    say(f"installed after the upgrade: {after}")
    summary = {
        "from": sorted(set(before.values())),
        "to": new_version,
        "versions": after,
        "active": [active_before, active_after],
        "ops": report["run"]["ops"],
        "counts": report["counts"],
        "longest_gap": report["unavailability"]["longest_gap"],
    }
    (lab.artifacts / "rolling-upgrade-summary.json").write_text(json.dumps(summary, indent=1))
    assert report["ok"], f"checker violations: {report['violations'][:5]}"
    assert set(after.values()) == {new_version}, after
    assert active_after != active_before, "the upgrade should have switched the servers over"
    # the package really changed on disk, not only its metadata
    proc = subprocess.run(
        ["podman", "exec", lab.container(SERVERS[0]), TMR, "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert new_version in proc.stdout
