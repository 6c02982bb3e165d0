"""The host's dispatcher: which idle consumer a notification wakes (no database involved)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pynenc_postgres.db import dispatch
from pynenc_postgres.db.dispatch import Dispatcher
from pynenc_postgres.db.notify import (
    BLOCKING,
    EVERYONE,
    ROUTES,
    Event,
    parse_payload,
    route_payload,
)

KEY = "default:app"


class Process:
    """A process of the host, as the dispatcher sees it: what it was sent."""

    def __init__(self, alive: bool = True) -> None:
        self.alive = alive
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> bool:
        if self.alive:
            self.messages.append(message)
        return self.alive

    def wakes(self) -> list[int]:
        return [m["s"] for m in self.messages if m["t"] == "wake"]


def host(*processes: Process) -> Dispatcher:
    dispatcher = Dispatcher()
    for process in processes:
        dispatcher.join(process)
    return dispatcher


def test_a_routed_invocation_wakes_one_idle_consumer_the_most_recently_idle() -> None:
    a, b = Process(), Process()
    dispatcher = host(a, b)
    dispatcher.idle(a, 1, KEY, since_claim=0.0, lease=60)
    dispatcher.idle(b, 2, KEY, since_claim=0.0, lease=60)

    dispatcher.notified(Event(ROUTES, KEY, 1))
    assert (a.wakes(), b.wakes()) == ([], [2])
    dispatcher.notified(Event(ROUTES, KEY, 1))
    assert (a.wakes(), b.wakes()) == ([1], [2])
    assert dispatcher.waiting(KEY) == 0


def test_a_batch_wakes_as_many_as_it_routed_and_keeps_the_rest_as_hints() -> None:
    a = Process()
    dispatcher = host(a)
    for seat in (1, 2):
        dispatcher.idle(a, seat, KEY, since_claim=0.0, lease=60)
    dispatcher.notified(Event(ROUTES, KEY, 3))
    assert sorted(a.wakes()) == [1, 2]
    # A consumer whose empty claim began before the third one arrived is woken at once...
    dispatcher.idle(a, 3, KEY, since_claim=10.0, lease=60)
    assert sorted(a.wakes()) == [1, 2, 3]
    # ...and with no hint left, the next one waits.
    dispatcher.idle(a, 4, KEY, since_claim=10.0, lease=60)
    assert dispatcher.waiting(KEY) == 1


def test_a_hint_older_than_an_empty_claim_is_dropped() -> None:
    """That claim saw the row (committed before its notification) and found none."""
    a = Process()
    dispatcher = host(a)
    dispatcher.idle(a, 9, KEY, since_claim=0.0, lease=60)
    dispatcher.cancel(a, 9, KEY)  # it took work on its own: nobody idle
    dispatcher.notified(Event(ROUTES, KEY, 1))  # a hint
    time.sleep(0.01)
    dispatcher.idle(a, 1, KEY, since_claim=0.0, lease=60)  # claim began after the hint
    assert a.wakes() == []
    assert dispatcher.waiting(KEY) == 1
    dispatcher.idle(a, 2, KEY, since_claim=10.0, lease=60)  # and it is gone for good
    assert a.wakes() == []


def test_routes_to_a_queue_nobody_here_consumes_are_not_kept() -> None:
    a = Process()
    dispatcher = host(a)
    dispatcher.notified(Event(ROUTES, "other:app", 5))
    dispatcher.idle(a, 1, "other:app", since_claim=10.0, lease=60)
    assert a.wakes() == []


def test_a_consumer_whose_lease_ran_out_is_not_woken() -> None:
    a = Process()
    dispatcher = host(a)
    dispatcher.idle(a, 1, KEY, since_claim=0.0, lease=0.0)
    dispatcher.notified(Event(ROUTES, KEY, 1))
    assert a.wakes() == []
    dispatcher.idle(a, 2, KEY, since_claim=10.0, lease=60)  # the hint goes to the next
    assert a.wakes() == [2]


def test_a_wake_not_acknowledged_goes_to_another_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "ACK_TIMEOUT_SEC", 0.01)
    a, b = Process(), Process()
    dispatcher = host(a, b)
    dispatcher.idle(a, 1, KEY, since_claim=0.0, lease=60)
    dispatcher.idle(b, 2, KEY, since_claim=0.0, lease=60)
    dispatcher.notified(Event(ROUTES, KEY, 1))
    assert b.wakes() == [2]
    time.sleep(0.02)
    dispatcher.expire()
    assert a.wakes() == [1]
    # An acknowledged wake stays given.
    dispatcher.ack(a, 1)
    time.sleep(0.02)
    dispatcher.expire()
    assert (a.wakes(), b.wakes()) == ([1], [2])


def test_a_process_gone_with_a_wake_hands_it_on() -> None:
    a, b = Process(), Process()
    dispatcher = host(a, b)
    dispatcher.idle(a, 1, KEY, since_claim=0.0, lease=60)
    dispatcher.idle(b, 2, KEY, since_claim=0.0, lease=60)
    dispatcher.notified(Event(ROUTES, KEY, 1))
    assert b.wakes() == [2]
    dispatcher.leave(b)
    assert a.wakes() == [1]


def test_a_process_that_cannot_be_told_is_dropped_and_its_wake_handed_on() -> None:
    a, dead = Process(), Process()
    dispatcher = host(a, dead)
    dispatcher.idle(a, 1, KEY, since_claim=0.0, lease=60)
    dispatcher.idle(dead, 2, KEY, since_claim=0.0, lease=60)
    dead.alive = False
    dispatcher.notified(Event(ROUTES, KEY, 1))
    assert a.wakes() == [1]


def test_everyone_looks_again_when_notifications_become_live() -> None:
    a, b = Process(), Process()
    dispatcher = host(a, b)
    dispatcher.idle(a, 1, KEY, since_claim=0.0, lease=60)
    dispatcher.set_live(True)
    for process in (a, b):
        assert process.messages[-2:] == [{"t": "live", "v": True}, {"t": "gen"}]
    assert dispatcher.waiting(KEY) == 0
    dispatcher.notified(Event(BLOCKING, "app"))
    dispatcher.notified(Event(EVERYONE))
    for process in (a, b):
        assert process.messages[-2:] == [{"t": "blk", "a": "app"}, {"t": "gen"}]


def test_payloads_say_what_was_routed() -> None:
    assert parse_payload(route_payload(KEY)) == Event(ROUTES, KEY, 1)
    assert parse_payload(route_payload(KEY, 7)) == Event(ROUTES, KEY, 7)
    assert parse_payload("!app:with:colons") == Event(BLOCKING, "app:with:colons")
    assert parse_payload("") == Event(EVERYONE)
    assert parse_payload("#x:broken") == Event(EVERYONE)
    assert route_payload("q:" + "é" * 5000) == ""  # over 8,000 bytes: everyone looks
