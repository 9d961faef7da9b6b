"""When the server's loop hands the web thread a new status snapshot (`WebRuntime.publish_due`):
fast while someone looks at the page or the API, slower while nobody does, at once when the
role, epoch or backends up change; and who builds it (`WebAdmin.publish`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from tmr.web.runtime import IDLE_PUBLISH_INTERVAL, WebRuntime
from tmr.web.server import WebAdmin

FAST = 0.5


class _Web:
    def __init__(self) -> None:
        self.looking = False

    def wants_handles(self) -> bool:
        return self.looking


def _runtime() -> tuple[WebRuntime, _Web]:
    rt = WebRuntime.__new__(WebRuntime)  # only the schedule: no sockets, no threads
    rt.cfg = SimpleNamespace(web_publish_interval=FAST)  # type: ignore[assignment]
    web = _Web()
    rt.web = web  # type: ignore[assignment]
    rt._last_publish = float("-inf")
    rt._headline = None
    return rt, web


def _published(rt: WebRuntime, now: float, headline: Any) -> bool:
    if rt.publish_due(now, headline):
        rt._last_publish = now  # what `publish` records
        return True
    return False


def test_nobody_looking_publishes_at_the_idle_interval() -> None:
    rt, _ = _runtime()
    head = ("active", 3, (True, True, True))
    assert _published(rt, 0.0, head)
    assert not _published(rt, FAST + 0.01, head)
    assert not _published(rt, IDLE_PUBLISH_INTERVAL - 0.01, head)
    assert _published(rt, IDLE_PUBLISH_INTERVAL, head)


def test_someone_looking_publishes_at_the_configured_interval() -> None:
    rt, web = _runtime()
    web.looking = True
    head = ("active", 3, (True, True, True))
    assert _published(rt, 0.0, head)
    assert not _published(rt, FAST - 0.01, head)
    assert _published(rt, FAST, head)


def test_a_changed_headline_publishes_at_once() -> None:
    rt, _ = _runtime()
    assert _published(rt, 0.0, ("standby", None, (True, True, True)))
    assert _published(rt, 0.01, ("takeover", None, (True, True, True)))
    assert _published(rt, 0.02, ("takeover", None, (True, False, True)))
    assert not _published(rt, 0.03, ("takeover", None, (True, False, True)))


def test_no_web_thread_never_publishes() -> None:
    rt, _ = _runtime()
    rt.web = None
    assert not rt.publish_due(0.0, "x")


def test_the_document_is_built_by_its_first_reader_only() -> None:
    """`WebAdmin.publish` with a builder: nothing is built while nobody reads; the first read
    builds it once, stamped with the time it was published; a newer publish replaces one
    nobody read without building it."""
    now = [10.0]
    web = WebAdmin("127.0.0.1:0", CollectorRegistry(), clock=lambda: now[0])
    built: list[str] = []

    def builder(name: str) -> Any:
        def build() -> dict[str, Any]:
            built.append(name)
            return {"name": name}

        return build

    web.publish(builder("first"))
    now[0] = 12.0
    web.publish(builder("second"))
    assert built == []
    now[0] = 13.0
    snap = web.snapshot()
    assert snap == {"name": "second", "published_at": 12.0}
    assert web.snapshot() is snap and built == ["second"]
    web.publish({"name": "plain"})  # a document built by the caller is kept as it is
    assert web.snapshot() == {"name": "plain", "published_at": 13.0}
