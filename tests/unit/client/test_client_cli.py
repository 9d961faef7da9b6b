"""`tmr client ...` against the fake server."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_tmr_server import FIRM, PRODUCT, FakeServer

from tmr.cli import client_cmds
from tmr.client import NodeKeys, generate_keypair
from tmr.errors import ConfigError, ErrorCode, TmrError, UsageError
from tmr.protocol.client_api import (
    CheckoutRequest,
    ErrorReply,
    HeartbeatRequest,
    OkReply,
    ReleaseRequest,
    ReleaseResult,
    Request,
)

MakeServer = Callable[..., FakeServer]


def run(argv: list[str]) -> int:
    """Parse and run like `tmr` does, with only the client commands registered."""
    parser = argparse.ArgumentParser(prog="tmr")
    sub = parser.add_subparsers(dest="command", required=True)
    client_cmds.register(sub, {})
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


def conn(server: FakeServer, keys: NodeKeys) -> list[str]:
    return ["client", "--endpoint", server.endpoint, "--server-key", keys.public]


def test_list_table_and_json(
    make_server: MakeServer, service_keys: NodeKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_server(name="tmr1")
    assert run([*conn(server, service_keys), "list"]) == 0
    out = capsys.readouterr().out
    assert "Virtual container 131-0000001 (server tmr1)" in out
    assert "1:#8 2:#8 3:(#7)" in out
    assert "#8" in out and "never" in out and "edition=pro" in out
    # options may also follow the action
    assert run(["client", "list", "-e", server.endpoint, "--server-key", service_keys.public,
                "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["serial"] == "131-0000001"
    assert doc["licenses"][0]["firm"] == FIRM


def test_status_table_and_json(
    make_server: MakeServer, service_keys: NodeKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_server(name="tmr1")
    assert run([*conn(server, service_keys), "status"]) == 0
    out = capsys.readouterr().out
    assert "role" in out and "active" in out and "1/tmr1" in out
    assert "BACKEND" in out and "b3" in out
    assert run([*conn(server, service_keys), "--json", "status"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["role"] == "active" and doc["epoch"] == [1, "tmr1"]


def test_cluster_file(
    make_server: MakeServer,
    service_keys: NodeKeys,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    standby = make_server(role="standby")
    active = make_server()
    cluster = {
        "service_public_key": service_keys.public,
        "client_endpoints": [standby.endpoint, active.endpoint],
        "nodes": [],
    }
    (tmp_path / "cluster.json").write_text(json.dumps(cluster))
    assert run(["client", "--cluster", str(tmp_path), "--json", "list"]) == 0
    assert json.loads(capsys.readouterr().out)["serial"] == "131-0000001"
    assert run(["client", "--cluster", str(tmp_path / "cluster.json"), "list"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("TMR_CLUSTER", str(tmp_path))
    assert run(["client", "status"]) == 0
    assert "active" in capsys.readouterr().out


def test_environment_endpoints(
    make_server: MakeServer,
    service_keys: NodeKeys,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = make_server()
    monkeypatch.delenv("TMR_CLUSTER", raising=False)
    monkeypatch.setenv("TMR_ENDPOINTS", f" {server.endpoint} ,")
    monkeypatch.setenv("TMR_SERVER_KEY", service_keys.public)
    assert run(["client", "--json", "status"]) == 0
    assert json.loads(capsys.readouterr().out)["server"] == "fake"


def test_checkout_hold_and_release(
    make_server: MakeServer, service_keys: NodeKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_server(lease=0.3)
    argv = [*conn(server, service_keys), "--json", "--client-id", "cli-test"]
    assert run([*argv, "checkout", "--firm", str(FIRM), "--product", str(PRODUCT),
                "--seats", "2", "--hold", "0.4"]) == 0  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["checkout", "released"]
    assert lines[0]["seats"] == 2 and lines[0]["lease"] == 0.3
    assert server.in_use == 0
    assert server.seen("heartbeat")  # held for > lease/3
    (checkout,) = server.seen("checkout")
    assert isinstance(checkout, CheckoutRequest) and checkout.cid == "cli-test"


def test_checkout_until_sigterm(
    make_server: MakeServer, service_keys: NodeKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_server()

    def terminate_when_held() -> None:
        server.wait_for(lambda: server.in_use == 1)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_held)
    killer.start()
    code = run([*conn(server, service_keys), "checkout", "--firm", str(FIRM),
                "--product", str(PRODUCT)])  # fmt: skip
    killer.join()
    assert code == 0
    out = capsys.readouterr().out
    assert "checked out 1 seat(s)" in out and "released handle" in out
    assert server.in_use == 0
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_checkout_seat_lost_exits_3(
    make_server: MakeServer, service_keys: NodeKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_server(lease=0.3)

    def expire_when_held() -> None:
        server.wait_for(lambda: server.in_use == 1)
        server.forget(next(iter(server.handles)))

    threading.Thread(target=expire_when_held).start()
    code = run([*conn(server, service_keys), "checkout", "--firm", str(FIRM),
                "--product", str(PRODUCT), "--hold", "20"])  # fmt: skip
    assert code == client_cmds.EXIT_LOST
    assert "was lost: the server no longer holds its seats" in capsys.readouterr().err


def test_checkout_whose_key_is_refused_while_held_exits_3_saying_why(
    make_server: MakeServer, service_keys: NodeKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reload took the client's key off the server's allowlist: the heartbeat is refused."""

    def hook(req: Request, server: FakeServer) -> object:
        if isinstance(req, HeartbeatRequest):
            return ErrorReply(req.rid, ErrorCode.UNAUTHORIZED, "not in client_allowlist")
        return None

    server = make_server(lease=0.3, hook=hook)
    code = run([*conn(server, service_keys), "--json", "checkout", "--firm", str(FIRM),
                "--product", str(PRODUCT), "--hold", "20"])  # fmt: skip
    assert code == client_cmds.EXIT_LOST
    captured = capsys.readouterr()
    lost = [json.loads(line) for line in captured.out.splitlines()][-1]
    assert lost["event"] == "lost" and "no longer admits this client's key" in lost["reason"]
    assert "was lost: the server no longer admits this client's key" in captured.err


def test_checkout_whose_release_finds_the_seat_gone_exits_3(
    make_server: MakeServer, service_keys: NodeKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server answers the final release with `released: false` (the lease ran out
    between two heartbeats): the seats were lost, not released."""

    def hook(req: Request, server: FakeServer) -> object:
        if isinstance(req, ReleaseRequest):
            return OkReply(req.rid, ReleaseResult(False))
        return None

    server = make_server(hook=hook)
    code = run([*conn(server, service_keys), "--json", "checkout", "--firm", str(FIRM),
                "--product", str(PRODUCT), "--hold", "0"])  # fmt: skip
    assert code == client_cmds.EXIT_LOST
    captured = capsys.readouterr()
    events = [json.loads(line)["event"] for line in captured.out.splitlines()]
    assert events == ["checkout", "lost"]
    assert "was lost" in captured.err


def test_checkout_refused_raises_typed_error(
    make_server: MakeServer, service_keys: NodeKeys
) -> None:
    server = make_server(quantity=1)
    with pytest.raises(TmrError, match="all in use"):
        run([*conn(server, service_keys), "checkout", "--firm", str(FIRM),
             "--product", str(PRODUCT), "--seats", "2", "--hold", "0"])  # fmt: skip


def test_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TMR_CLUSTER", "TMR_ENDPOINTS", "TMR_SERVER_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UsageError, match="no endpoint"):
        run(["client", "list"])
    with pytest.raises(UsageError, match="no server key"):
        run(["client", "-e", "tcp://127.0.0.1:1", "list"])
    with pytest.raises(ConfigError, match="cannot read cluster file"):
        run(["client", "--cluster", str(tmp_path), "list"])
    (tmp_path / "cluster.json").write_text('{"client_endpoints": []}')
    with pytest.raises(ConfigError, match="client_endpoints"):
        run(["client", "--cluster", str(tmp_path), "list"])
    (tmp_path / "cluster.json").write_text("[1]")
    with pytest.raises(ConfigError, match="JSON object"):
        run(["client", "--cluster", str(tmp_path), "list"])
    with pytest.raises(ConfigError):
        run(["client", "-e", "tcp://127.0.0.1:1", "--server-key", "nope", "list"])
    with pytest.raises(SystemExit):
        run(["client", "-e", "tcp://127.0.0.1:1", "checkout", "--firm", "x"])


def test_client_key_file(
    make_server: MakeServer,
    service_keys: NodeKeys,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = make_server()
    keys = generate_keypair()
    key_file = tmp_path / "client.key"
    key_file.write_text(json.dumps({"public": keys.public, "secret": keys.secret}))
    pub_file = tmp_path / "service.pub"
    pub_file.write_text(service_keys.public)
    argv = ["client", "-e", server.endpoint, "--server-key", str(pub_file)]
    assert run([*argv, "--client-key", str(key_file), "--json", "status"]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "active"


def test_format_table() -> None:
    text = client_cmds.format_table(("A", "BB"), [("xxx", "y"), ("z", "")])
    assert text.splitlines() == ["A    BB", "xxx  y", "z"]
