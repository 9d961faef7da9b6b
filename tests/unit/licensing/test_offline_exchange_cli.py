"""The offline exchange through `tmr.cli.main.main`: the commands each party runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tmr.cli.main import main


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *argv: str, rc: int = 0) -> tuple[str, str]:
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        assert code == rc, (argv, out, err)
        assert "Traceback" not in err
        return out, err

    def json(self, *argv: str) -> Any:
        return json.loads(self(*argv)[0])

    def fails(self, *argv: str, match: str) -> str:
        _, err = self(*argv, rc=1)
        assert err.startswith("tmr: error: ") and match in err, err
        return err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    monkeypatch.chdir(tmp_path)
    return Cli(capsys)


def _backend(i: int) -> list[str]:
    return ["--key", f"b{i}/node.key", "--machine-id-file", f"b{i}/mid"]


def _customer_request(cli: Cli) -> None:
    for i in (1, 2, 3):
        Path(f"b{i}/lic").mkdir(parents=True)
        Path(f"b{i}/mid").write_text(f"{i:032x}\n")
        cli("keygen", "--out", f"b{i}/node.key")
        cli(
            "backend", "fingerprint", *_backend(i), "--signed", "--vendor-key", "v/vendor.pub",
            "--container-serial", "131-0000042", "--out", f"b{i}/fp.json",
        )  # fmt: skip
    fps = [a for i in (1, 2, 3) for a in ("--fingerprint", f"b{i}/fp.json")]
    out = cli.json("license", "request", *fps, "--out", "req.json")
    assert out["container_serial"] == "131-0000042" and len(out["backends"]) == 3


def _issue(cli: Cli, tmr_id: int, rc: int = 0) -> tuple[str, str]:
    return cli(
        "vendor", "issue", "--dir", "v", "--request", "req.json", "--product-code", "42",
        "--quantity", "30", "--tmr-id", str(tmr_id), "--out", f"upd{tmr_id}.json", rc=rc,
    )  # fmt: skip


def test_offline_flow_both_parties(cli: Cli) -> None:
    cli("vendor", "init", "--dir", "v", "--firm-code", "6000123")
    _customer_request(cli)
    _issue(cli, 7)
    for i in (1, 2, 3):
        out = cli.json(
            "license", "install-update", "--update", "upd7.json", *_backend(i),
            "--license-dir", f"b{i}/lic", "--vendor-key", "v/vendor.pub",
        )  # fmt: skip
        assert (out["set_index"], out["tmr_id"], out["changed"]) == (i, 7, True)
        cli(
            "backend", "receipt", *_backend(i), "--license-dir", f"b{i}/lic",
            "--vendor-key", "v/vendor.pub", "--product-code", "42", "--out", f"b{i}/r.json",
        )  # fmt: skip
    rcpts = [a for i in (3, 1, 2) for a in ("--receipt", f"b{i}/r.json")]
    cli("license", "receipt", *rcpts, "--out", "rcpt.json")
    assert cli.json("vendor", "installed", "--dir", "v") == []
    out = cli.json("vendor", "confirm", "--dir", "v", "rcpt.json")
    assert out["confirmed"] and out["tmr_id"] == 7
    cli.fails("vendor", "confirm", "--dir", "v", "rcpt.json", match="ALREADY_CONFIRMED")
    installed = cli.json("vendor", "installed", "--dir", "v")
    assert [(r["product_code"], r["tmr_id"], r["set_id"]) for r in installed] == [
        (42, 7, out["set_id"])
    ]


def test_tampered_request_and_update_get_typed_errors(cli: Cli) -> None:
    cli("vendor", "init", "--dir", "v", "--firm-code", "6000123")
    _customer_request(cli)
    good = Path("req.json").read_text()
    req = json.loads(good)
    req["backends"][0]["body"]["serial"] = "130-0000001"
    Path("req.json").write_text(json.dumps(req))
    _, err = _issue(cli, 7, rc=1)
    assert "BAD_PROOF" in err and not Path("upd7.json").exists()
    Path("req.json").write_text(good[:200])
    _, err = _issue(cli, 7, rc=1)
    assert "MALFORMED" in err
    Path("req.json").write_text(good)
    _issue(cli, 7)
    upd = Path("upd7.json").read_text()
    Path("upd7.json").write_text(upd.replace('\\"quantity\\":30', '\\"quantity\\":31', 1))
    cli.fails(
        "license", "install-update", "--update", "upd7.json", *_backend(1),
        "--license-dir", "b1/lic", "--vendor-key", "v/vendor.pub", match="INCONSISTENT",
    )  # fmt: skip
    assert list(Path("b1/lic").iterdir()) == []


def test_vendor_issue_needs_a_request_or_fingerprints(cli: Cli) -> None:
    cli("vendor", "init", "--dir", "v", "--firm-code", "6000123")
    cli.fails(
        "vendor", "issue", "--dir", "v", "--product-code", "1", "--quantity", "1",
        "--tmr-id", "1", "--out", "x", match="--request",
    )  # fmt: skip


def test_update_file_must_be_a_file_before_anything_is_issued(cli: Cli) -> None:
    cli("vendor", "init", "--dir", "v", "--firm-code", "6000123")
    _customer_request(cli)
    Path("outdir").mkdir()
    for out in ("outdir", "missing/upd.json"):
        cli.fails(
            "vendor", "issue", "--dir", "v", "--request", "req.json", "--product-code", "42",
            "--quantity", "30", "--tmr-id", "7", "--out", out, match="existing directory",
        )  # fmt: skip
    assert not Path("v/products").exists()  # nothing issued, TMR ID #7 still free
    _issue(cli, 7)
