"""WebAdmin, /api/status, /metrics and `tmr report usage` on a real local cluster.

The page is checked in a real browser: Debian's headless Chromium driven by Playwright. The
test skips (with the reason) only when Chromium is not installed and cannot be installed.
Screenshots go to artifacts/ (gitignored).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_helpers import LocalCluster, eventually, wait_for
from tmr.cli.main import main as tmr_main
from tmr.errors import NoLicenseAvailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRM, PRODUCT = 6000123, 42
LICENSE = f"{FIRM}:{PRODUCT}"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UI_TIMEOUT_MS = 20_000


def _apt(*args: str) -> str:
    """Run apt-get; '' on success, else the tail of its output."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        r = subprocess.run(
            ["apt-get", *args], env=env, capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return "" if r.returncode == 0 else (r.stderr or r.stdout).strip()[-300:]


def chromium_path() -> str:
    """Debian's chromium; installed with apt-get if missing and we may (root); else skip."""
    found = shutil.which("chromium")
    if found:
        return found
    problem = "not installed, and apt-get needs root"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        problem = _apt("install", "-y", "-q", "chromium")
        if problem and not _apt("update", "-q"):
            problem = _apt("install", "-y", "-q", "chromium")
        found = shutil.which("chromium")
        if found:
            return found
    pytest.skip(f"Chromium cannot be installed here (apt-get install chromium): {problem}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TOKEN = secrets.token_urlsafe(32)


class WebCluster:
    def __init__(self, cluster: LocalCluster) -> None:
        self.c = cluster
        self.urls: dict[str, str] = {}
        self.headers = {"Authorization": f"Bearer {TOKEN}"}

    def enable_web(self) -> None:
        """`tmr local up` starts the servers without WebAdmin: restart them with it, behind a
        bearer token."""
        for name in ("tmr-a", "tmr-b"):
            port = _free_port()
            self.c.kill(name)
            cfg = Path(self.c.nodes[name]["config"])
            token_file = cfg.parent / f"{name}-web.token"
            token_file.write_text(TOKEN + "\n")
            token_file.chmod(0o600)
            text = re.sub(
                r"(?m)^web_listen = .*$", f'web_listen = "127.0.0.1:{port}"', cfg.read_text()
            )
            extra = f'vip = "127.0.0.1"\nweb_auth_token_file = "{token_file}"\n'
            cfg.write_text(text.replace("\n[[backends]]", f"{extra}\n[[backends]]", 1))
            self.c.start(name)
            self.urls[name] = f"http://127.0.0.1:{port}"
        self.c.promote("tmr-a")

    def get(self, name: str, path: str, *, auth: bool = True) -> tuple[int, bytes]:
        req = urllib.request.Request(self.urls[name] + path, headers=self.headers if auth else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def status(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.get(name, "/api/status")[1])
        return doc

    def metrics(self, name: str) -> dict[str, float]:
        out = {}
        for line in self.get(name, "/metrics")[1].decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out


def _ready(w: WebCluster) -> bool:
    """Both servers publish: the active one with the license, the standby knowing who leads."""
    a, b = w.status("tmr-a"), w.status("tmr-b")
    return (
        a["role"] == "active"
        and a["backends_up"] == 3
        and bool(a["licenses"])
        and b["backends_up"] == 3
        and (b["active"] or {}).get("server") == "tmr-a"
    )


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("webadmin") / "cluster", quantity=3)
    try:
        w = WebCluster(cluster)
        w.enable_web()
        wait_for("both servers to publish their status", lambda: _ready(w), 15)
        yield w
    finally:
        cluster.stop_all()


def test_api_status_and_metrics(web: WebCluster) -> None:
    st = web.status("tmr-a")
    assert st["role"] == "active" and st["server"] == "tmr-a" and st["serial"].startswith("131-")
    (lic,) = st["licenses"]
    assert (lic["key"], lic["tmr_id"], lic["quantity"], lic["status"]) == (
        LICENSE,
        7,
        3,
        "1:#7 2:#7 3:#7",
    )
    assert lic["level"] == "ok" and st["vip"] == {"address": "127.0.0.1", "held": True}
    text = json.dumps(st)
    assert "secret" not in text and "key_file" not in text and TOKEN not in text
    for path in ("/api/status", "/metrics", "/"):
        assert web.get("tmr-a", path, auth=False)[0] == 401, path
    for name in ("tmr-a", "tmr-b"):  # the token is in no log line
        assert TOKEN not in Path(web.c.nodes[name]["log"]).read_text(errors="replace")
    standby = web.status("tmr-b")
    assert standby["role"] == "standby" and standby["active"]["server"] == "tmr-a", standby

    lic_labels = f'{{firm="{FIRM}",product="{PRODUCT}"}}'
    before = web.metrics("tmr-a")
    assert before[f"tmr_license_quantity{lic_labels}"] == 3
    assert before['tmr_role{role="active"}'] == 1 and before["tmr_backends_up"] == 3
    assert before["tmr_quorum_margin"] == 1
    assert web.metrics("tmr-b")['tmr_role{role="standby"}'] == 1

    def counter(m: dict[str, float], name: str) -> float:
        return m.get(f"{name}{lic_labels}", 0.0)

    with web.c.client() as c:
        held = [c.checkout(FIRM, PRODUCT, 2), c.checkout(FIRM, PRODUCT, 1)]
        with pytest.raises(NoLicenseAvailable):
            c.checkout(FIRM, PRODUCT)
        wait_for(
            "seats in use to show in /metrics",
            lambda: web.metrics("tmr-a")[f"tmr_license_seats_in_use{lic_labels}"] == 3,
            10,
        )
        for h in held:
            h.release()
    after = web.metrics("tmr-a")
    assert counter(after, "tmr_checkouts_total") - counter(before, "tmr_checkouts_total") == 2
    assert counter(after, "tmr_releases_total") - counter(before, "tmr_releases_total") == 2
    assert counter(after, "tmr_denials_total") - counter(before, "tmr_denials_total") == 1
    errors = 'tmr_client_errors_total{code="NO_LICENSE_AVAILABLE"}'
    assert after[errors] - before.get(errors, 0.0) == 1
    assert after['tmr_replication_round_seconds_count{kind="accept"}'] >= 4
    assert after["tmr_replication_batch_ops_count"] >= 4
    assert after["tmr_replication_batch_ops_sum"] >= 4
    assert after["tmr_epoch"] >= 1


def test_report_usage(web: WebCluster, capsys: pytest.CaptureFixture[str]) -> None:
    start = dt.datetime.now(dt.UTC)
    with web.c.client() as c:
        a = c.checkout(FIRM, PRODUCT, 2)
        b = c.checkout(FIRM, PRODUCT, 1)
        with pytest.raises(NoLicenseAvailable):
            c.checkout(FIRM, PRODUCT)
        a.release()
        b.release()
    since = start.isoformat()
    args = ["report", "usage", "--cluster", str(web.c.root), "--from", since]
    assert tmr_main([*args, "--csv"]) == 0
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (row["firm"], row["product"], row["quantity"]) == (str(FIRM), str(PRODUCT), "3")
    assert (row["peak_seats"], row["checkouts"], row["releases"], row["expiries"]) == (
        "3",
        "2",
        "2",
        "0",
    )
    assert int(row["denials"]) >= 1 and float(row["seat_hours"]) > 0
    assert tmr_main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["backend"] for s in doc["sources"]] == ["backend-1", "backend-2", "backend-3"]
    assert doc["server"] == "tmr-a" and doc["complete"] is True
    assert tmr_main(args) == 0
    assert "PEAK" in capsys.readouterr().out

    # One backend down: the other two records still make the whole report.
    web.c.kill("backend-3")
    web.c.wait_backends("tmr-a", {"backend-1", "backend-2"})
    assert tmr_main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["backend"] for s in doc["sources"]] == ["backend-1", "backend-2"]
    assert doc["unavailable"] == [{"backend": "backend-3", "reason": "down"}]
    (lic,) = doc["licenses"]
    assert (lic["peak_seats"], lic["checkouts"], lic["releases"]) == (3, 2, 2)
    web.c.start("backend-3")
    web.c.wait_backends("tmr-a", {"backend-1", "backend-2", "backend-3"})


def test_page_in_chromium(web: WebCluster) -> None:
    exe = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    expect = sync_api.expect
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(
                viewport={"width": 1200, "height": 820}, extra_http_headers=web.headers
            )
            page.goto(web.urls["tmr-a"] + "/")
            row = page.locator(f'tr[data-license="{LICENSE}"]')
            expect(row).to_have_attribute("data-level", "ok", timeout=UI_TIMEOUT_MS)
            chips = row.locator(".chip")
            expect(chips).to_have_text(["1:#7", "2:#7", "3:#7"])
            expect(page.locator("#role")).to_have_text("active")
            expect(page.locator("#serial")).to_have_text(re.compile(r"131-\d{7}"))
            with web.c.client(client_id="cad-ws-17/4242/ab12", user="alice.cad") as c:
                held = c.checkout(FIRM, PRODUCT, 2)
                handle = page.locator(f'tr[data-handle="{held.id}"]')
                expect(handle).to_contain_text("cad-ws-17", timeout=UI_TIMEOUT_MS)
                expect(handle.locator("td.user")).to_have_text("alice.cad")
                expect(row.locator(".in-use")).to_have_text("2", timeout=UI_TIMEOUT_MS)

                web.c.kill("backend-3")
                expect(row.locator('.chip[data-backend="3"]')).to_have_text(
                    "3:-", timeout=UI_TIMEOUT_MS
                )
                expect(row).to_have_attribute("data-level", "warning")
                expect(page.locator('.banner[data-level="warning"]')).to_contain_text(
                    "one more failure"
                )
                expect(page.locator('tr[data-backend="backend-3"]')).to_have_attribute(
                    "data-up", "false"
                )
                page.screenshot(path=str(ARTIFACTS / "webadmin-backend-down.png"), full_page=True)

                web.c.kill("backend-2")
                expect(row).to_have_attribute("data-level", "error", timeout=UI_TIMEOUT_MS)
                expect(page.locator('.banner[data-level="error"]')).to_contain_text("QUORUM_LOST")

                web.c.start("backend-2")
                web.c.start("backend-3")
                expect(chips).to_have_text(["1:#7", "2:#7", "3:#7"], timeout=UI_TIMEOUT_MS)
                expect(row).to_have_attribute("data-level", "ok")
                page.screenshot(path=str(ARTIFACTS / "webadmin-active.png"), full_page=True)
                held.release()

                # An authenticated administrator frees a handle (like lmremove).
                expect(page.locator("#mode")).to_have_text("administrator view")
                other = c.checkout(FIRM, PRODUCT)
                row2 = page.locator(f'tr[data-handle="{other.id}"]')
                page.once("dialog", lambda dialog: dialog.accept())
                row2.locator("button.release").click(timeout=UI_TIMEOUT_MS)
                expect(page.locator("#release-result")).to_have_attribute(
                    "data-result", "released", timeout=UI_TIMEOUT_MS
                )
                expect(row2).to_have_count(0, timeout=UI_TIMEOUT_MS)
                log = Path(web.c.nodes["tmr-a"]["log"]).read_text(errors="replace")
                removed = [json.loads(x) for x in log.splitlines() if "handle_removed" in x]
                assert [(e["handle"], e["by"]) for e in removed] == [(other.id, "web:token")]

            page.goto(web.urls["tmr-b"] + "/")
            expect(page.locator("#role")).to_have_text("standby", timeout=UI_TIMEOUT_MS)
            expect(page.locator('.banner[data-level="info"]')).to_contain_text(
                "the active server is tmr-a"
            )
            expect(page.locator(f'tr[data-license="{LICENSE}"] .in-use')).to_have_text("\u2013")
            page.screenshot(path=str(ARTIFACTS / "webadmin-standby.png"), full_page=True)
        finally:
            browser.close()
    eventually(
        "backends up again",
        lambda: web.c.wait_backends("tmr-a", {"backend-1", "backend-2", "backend-3"}),
    )
