"""The licensing commands end to end through `tmr.cli.main.main`."""

from __future__ import annotations

import json
import stat
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
        lines = err.strip().splitlines()
        assert lines and all(line.startswith("tmr: error: ") for line in lines), err
        assert match in err, err
        return err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    monkeypatch.chdir(tmp_path)
    return Cli(capsys)


def setup_backends(cli: Cli) -> list[dict[str, str]]:
    docs = []
    for i in (1, 2, 3):
        key = cli.json("keygen", "--out", f"b{i}.key")
        Path(f"mid{i}").write_text(f"{i:032x}\n")
        doc = cli.json(
            "backend", "fingerprint", "--key", f"b{i}.key", "--machine-id-file", f"mid{i}"
        )
        assert doc["public_key"] == key["public_key"]
        Path(f"fp{i}.json").write_text(json.dumps(doc))
        docs.append(doc)
    return docs


def issue(cli: Cli, tmr_id: int, quantity: int, *extra: str) -> dict[str, Any]:
    fps = [a for i in (1, 2, 3) for a in ("--fingerprint", f"fp{i}.json")]
    summary: dict[str, Any] = cli.json(
        "vendor", "issue", "--dir", "vendor", "--product-code", "1001", "--quantity",
        str(quantity), "--tmr-id", str(tmr_id), *fps, "--out", "out", *extra,
    )  # fmt: skip
    return summary


def test_vendor_workflow(cli: Cli) -> None:
    init = cli.json("vendor", "init", "--dir", "vendor", "--firm-code", "6000123", "--name", "Acme")
    assert init["firm_code"] == 6000123 and len(init["public_key"]) == 64
    assert stat.S_IMODE(Path("vendor/vendor.key").stat().st_mode) == 0o600
    cli.fails("vendor", "init", "--dir", "vendor", "--firm-code", "6000123", match="--force")
    docs = setup_backends(cli)

    v7 = issue(cli, 7, 20, "--feature", "edition=pro", "--expires", "2099-12-31")
    assert {k: v7[k] for k in ("firm_code", "product_code", "tmr_id", "quantity")} == {
        "firm_code": 6000123,
        "product_code": 1001,
        "tmr_id": 7,
        "quantity": 20,
    }
    assert len(v7["set_id"]) == 32
    assert [c["serial"] for c in v7["copies"]] == [d["serial"] for d in docs]
    assert [c["fingerprint"] for c in v7["copies"]] == [d["fingerprint"] for d in docs]
    paths = [c["path"] for c in v7["copies"]]
    assert paths[0].endswith(f"/out/6000123-1001-7-{docs[0]['serial']}.tmrlic")

    out, _ = cli(
        "license", "verify", "--vendor-key", "vendor/vendor.pub", "--fingerprint", "fp1.json",
        "--key", "b1.key", paths[0],
    )  # fmt: skip
    assert out.startswith("OK ") and "#7 LQ 20" in out and "product-key opens" in out
    cli("license", "verify", "--vendor-key", "vendor/vendor.pub", "--fingerprint",
        docs[1]["fingerprint"], paths[1])  # fmt: skip

    # all three files against backend 1: two are for other backends
    err = cli.fails(
        "license", "verify", "--vendor-key", "vendor/vendor.pub", "--fingerprint", "fp1.json",
        *paths, match="WRONG_FINGERPRINT",
    )  # fmt: skip
    assert len(err.strip().splitlines()) == 2

    shown = cli.json("license", "inspect", paths[2])
    assert shown["tmr_id"] == 7 and shown["features"] == {"edition": "pro"}
    assert shown["expires_at"] == "2100-01-01T00:00:00Z"
    assert "sealed_product_key" not in shown

    cli.fails("vendor", "issue", "--dir", "vendor", "--product-code", "1001", "--quantity", "20",
              "--tmr-id", "7", "--fingerprint", "fp1.json", "--fingerprint", "fp2.json",
              "--fingerprint", "fp3.json", "--out", "out", match="needs #8")  # fmt: skip
    cli.fails("vendor", "issue", "--dir", "vendor", "--product-code", "1001", "--quantity", "20",
              "--tmr-id", "8", "--fingerprint", "fp1.json", "--fingerprint", "fp1.json",
              "--fingerprint", "fp3.json", "--out", "out", match="fingerprint repeats")  # fmt: skip

    v8 = issue(cli, 8, 30)
    assert v8["tmr_id"] == 8 and v8["set_id"] != v7["set_id"]
    new = v8["copies"][0]["path"]
    cli("license", "verify", "--vendor-key", "vendor/vendor.pub", "--fingerprint", "fp1.json",
        "--installed-tmr-id", "8", new)  # fmt: skip
    cli.fails("license", "verify", "--vendor-key", "vendor/vendor.pub", "--fingerprint",
              "fp1.json", "--installed-tmr-id", "8", paths[0], match="ROLLBACK")  # fmt: skip


def test_verify_reports_tampering_and_unknown_firm(cli: Cli) -> None:
    cli("vendor", "init", "--dir", "vendor", "--firm-code", "6000123")
    cli("vendor", "init", "--dir", "other", "--firm-code", "6000999")
    setup_backends(cli)
    path = Path(issue(cli, 1, 5)["copies"][0]["path"])
    verify = ("license", "verify", "--vendor-key", "vendor/vendor.pub", "--fingerprint", "fp1.json")
    data = path.read_bytes()
    Path("tampered.tmrlic").write_bytes(data.replace(b'"quantity":5', b'"quantity":9'))
    cli.fails(*verify, "tampered.tmrlic", match="BAD_SIGNATURE")
    Path("truncated.tmrlic").write_bytes(data[:100])
    cli.fails(*verify, "truncated.tmrlic", match="MALFORMED")
    Path("huge.tmrlic").write_bytes(b"x" * 100_000)
    cli.fails(*verify, "huge.tmrlic", match="limit is 65536")
    cli.fails(*verify, "missing.tmrlic", match="UNREADABLE")
    cli.fails("license", "verify", "--vendor-key", "other/vendor.pub", "--fingerprint",
              "fp1.json", str(path), match="UNKNOWN_FIRM")  # fmt: skip
    cli.fails("license", "verify", "--vendor-key", "vendor/vendor.pub", "--fingerprint",
              "fp1.json", "--key", "b2.key", str(path), match="WRONG_BACKEND_KEY")  # fmt: skip
    cli.fails("license", "inspect", "truncated.tmrlic", match="MALFORMED")
    cli.fails("license", "verify", "--vendor-key", "nope.pub", "--fingerprint", "fp1.json",
              str(path), match="cannot read vendor key")  # fmt: skip


def test_keygen_and_fingerprint(cli: Cli) -> None:
    out = cli.json("keygen", "--out", "node.key")
    assert stat.S_IMODE(Path("node.key").stat().st_mode) == 0o600
    assert Path("node.key.pub").read_text().strip() == out["public_key"]
    cli.fails("keygen", "--out", "node.key", match="already exists")
    assert cli.json("keygen", "--out", "node.key", "--force")["public_key"] != out["public_key"]
    Path("mid").write_text("abc\n")
    fp = cli.json(
        "backend", "fingerprint", "--key", "node.key.pub", "--machine-id-file", "mid",
        "--serial", "130-0000001",
    )  # fmt: skip
    assert fp["serial"] == "130-0000001" and len(fp["fingerprint"]) == 64
    cli.fails("backend", "fingerprint", "--key", "node.key", "--serial", "131-1",
              "--machine-id-file", "mid", match="130-NNNNNNN")  # fmt: skip
    cli.fails("backend", "fingerprint", "--key", "nokey", "--machine-id-file", "mid",
              match="cannot read key file")  # fmt: skip
    cli.fails("backend", "fingerprint", "--key", "node.key", "--machine-id-file", "none",
              match="cannot read machine-id")  # fmt: skip


def test_issue_input_errors(cli: Cli) -> None:
    cli.fails("vendor", "issue", "--dir", "vendor", "--product-code", "1", "--quantity", "1",
              "--tmr-id", "1", "--fingerprint", "x", "--out", "out",
              match="tmr vendor init")  # fmt: skip
    cli("vendor", "init", "--dir", "vendor", "--firm-code", "6000123")
    setup_backends(cli)
    Path("bad.json").write_text('{"serial": "130-1"}')
    fps = ["--fingerprint", "fp1.json", "--fingerprint", "fp2.json"]
    base = ["vendor", "issue", "--dir", "vendor", "--product-code", "1", "--quantity", "1",
            "--tmr-id", "1", "--out", "out"]  # fmt: skip
    cli.fails(*base, *fps, "--fingerprint", "bad.json", match="bad.json")
    cli.fails(*base, *fps, "--fingerprint", "nope.json", match="cannot read fingerprint")
    cli.fails(*base, *fps, match="needs 3 fingerprints")
    full = [*fps, "--fingerprint", "fp3.json"]
    cli.fails(*base, *full, "--expires", "2001-01-01", match="in the past")
    cli.fails(*base, *full, "--expires", "soon", match="ISO-8601")
    cli.fails(*base, *full, "--feature", "x", match="NAME=VALUE")
    Path("afile").touch()
    cli.fails(*base, *full, "--out", "afile", match="afile: File exists")
    cli.fails("keygen", "--out", "afile/node.key", match="afile/node.key: Not a directory")
    with pytest.raises(SystemExit):  # argparse: not an integer
        main([*base[:4], "one", *base[5:], *full])
