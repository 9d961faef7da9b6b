"""The control-command registry of `tmr.serving.commands`, for both services' commands and
a toy service driven over a real control socket."""

from __future__ import annotations

import inspect
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import zmq

from tmr.backend import ctl_commands as backend_commands
from tmr.ctl import CtlError, CtlErrorCode, bind_ctl, ctl_request
from tmr.server import ctl_commands as server_commands
from tmr.serving.commands import Command, CommandRegistry, CtlCall, CtlServer, Json, ok
from tmr.serving.loop import ServiceLoop


def _command_classes(module: ModuleType) -> set[type[Any]]:
    return {
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Command) and cls is not Command and cls.__module__ == module.__name__
    }


@pytest.mark.parametrize(
    ("module", "registry", "names"),
    [
        (
            server_commands,
            server_commands.SERVER_COMMANDS,
            {
                "promote",
                "demote",
                "health",
                "status",
                "handles",
                "queue",
                "denials",
                "release",
                "usage",
                "reload",
            },
        ),
        (backend_commands, backend_commands.BACKEND_COMMANDS, {"status", "reload", "health"}),
    ],
)
def test_every_command_class_is_registered_once(
    module: ModuleType, registry: CommandRegistry[Any], names: set[str]
) -> None:
    classes = _command_classes(module)
    assert len(registry.names) == len(set(registry.names)) == len(classes)
    assert set(registry.names) == names == {cls.name for cls in classes}


class Counter:
    """A toy service: one number the commands change."""

    def __init__(self) -> None:
        self.value = 0
        self.later: CtlServer[Counter] | None = None


class Add(Command[Counter]):
    name = "add"

    def validate(self, request: Json) -> Json:
        n = request.get("n")
        if type(n) is not int:
            raise CtlError("add: 'n' must be an integer")
        return {"n": n}

    def execute(self, service: Counter, call: CtlCall) -> Json:
        service.value += call.args["n"]
        return ok(value=service.value)


class Later(Command[Counter]):
    """Answers through `CtlServer.answer`, later."""

    name = "later"

    def execute(self, service: Counter, call: CtlCall) -> None:
        return None


class Broken(Command[Counter]):
    name = "broken"

    def execute(self, service: Counter, call: CtlCall) -> Json:
        raise ZeroDivisionError("a bug")


REGISTRY: CommandRegistry[Counter] = CommandRegistry("counters", (Add, Later, Broken))


def test_a_name_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'add' registered twice"):
        CommandRegistry("counters", (Add, Later, Add))


def test_unknown_command_and_bad_arguments_are_typed_errors_that_change_nothing() -> None:
    svc = Counter()
    server = CtlServer(REGISTRY, svc)
    with pytest.raises(CtlError) as unknown:
        server.handle({"cmd": "sub", "n": 1}, 0.0)
    assert unknown.value.ctl_code is CtlErrorCode.UNKNOWN_COMMAND
    assert str(unknown.value) == "unknown command 'sub' (counters know add, later, broken)"
    for bad in ({"cmd": "add"}, {"cmd": "add", "n": "1"}, {"cmd": "add", "n": True}):
        with pytest.raises(CtlError) as exc:
            server.handle(bad, 0.0)
        assert exc.value.ctl_code is CtlErrorCode.BAD_REQUEST
    assert svc.value == 0 and not server.pending
    assert server.handle({"cmd": "add", "n": 2}, 0.0) == {"ok": True, "value": 2}


class Served:
    """The toy service's control socket served by a `ServiceLoop` in a thread."""

    def __init__(self, path: Path) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.path = path
        self.svc = Counter()
        self.server = CtlServer(REGISTRY, self.svc)
        self.loop = ServiceLoop()
        self.loop.serve_ctl(bind_ctl(self.ctx, path), self.server)
        self.answers: list[Json] = []  # answers of `later`, sent from the loop's thread
        self.loop.each_turn(self._answer_later)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)

    def _answer_later(self, now: float) -> None:
        while self.answers:
            self.server.answer(self.answers.pop())

    def answer(self, reply: Json) -> None:
        self.answers.append(reply)
        self.loop.wake()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "ctl.sock")
    s.thread.start()
    try:
        yield s
    finally:
        s.loop.stop()
        s.thread.join(timeout=10)
        assert not s.thread.is_alive()
        assert isinstance(s.server.sock, zmq.Socket)
        s.server.sock.close(linger=0)
        s.loop.close()
        s.ctx.term()


def _raw(path: Path, frames: list[bytes]) -> dict[str, Any]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{path}")
        sock.send_multipart(frames)
        assert sock.poll(10_000)
        reply = json.loads(sock.recv())
    finally:
        sock.close()
    assert isinstance(reply, dict)
    return reply


def test_malformed_requests_get_typed_errors_and_the_service_keeps_serving(
    served: Served,
) -> None:
    cases = {
        b"{not json": "BAD_REQUEST",
        b'{"cmd": 7}': "BAD_REQUEST",
        b'{"cmd": "add", "n": "x"}': "BAD_REQUEST",
        b'{"cmd": "format-disk"}': "UNKNOWN_COMMAND",
        b'{"cmd": "broken"}': "INTERNAL",
    }
    for frame, code in cases.items():
        reply = _raw(served.path, [frame])
        assert reply["ok"] is False and reply["code"] == code, (frame, reply)
    assert _raw(served.path, [b'{"cmd": "add", "n": 1}', b"x"])["code"] == "BAD_REQUEST"
    assert served.svc.value == 0 and not served.server.pending
    assert ctl_request(served.path, "add", n=5) == {"ok": True, "value": 5}


def test_a_command_answered_later_holds_the_socket_until_its_answer(served: Served) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    first = ctx.socket(zmq.REQ)
    first.setsockopt(zmq.LINGER, 0)
    try:
        first.connect(f"ipc://{served.path}")
        first.send(b'{"cmd": "later"}')
        deadline = time.monotonic() + 10
        while not served.server.pending:  # the loop took the request
            assert time.monotonic() < deadline
            time.sleep(0.005)
        served.answer({"ok": True, "late": 1})
        assert first.poll(10_000) and json.loads(first.recv()) == {"ok": True, "late": 1}
    finally:
        first.close()
    assert not served.server.pending
    assert served.server.answer({"ok": True}) is False  # no request waits: dropped
    assert ctl_request(served.path, "add", n=1) == {"ok": True, "value": 1}
