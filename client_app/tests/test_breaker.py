"""The circuit breaker per tablet server (client_app.breaker), on a fake clock and probe."""

from __future__ import annotations

import asyncio

import pytest

from distdb.errors import TabletUnavailable

from ..breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Probe:
    """A probe whose answer the test sets; it records the URLs it was sent to."""

    def __init__(self) -> None:
        self.answer = False
        self.urls: list[str] = []

    async def __call__(self, url: str) -> bool:
        self.urls.append(url)
        return self.answer


def timeout() -> TabletUnavailable:
    return TabletUnavailable(
        "tablet-1 did not answer within 5.00 s", server="tablet-1", reason="timeout"
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def breaker(clock, probe) -> Breaker:
    return Breaker("tablet-1", "http://t1", open_s=2.0, probe=probe, clock=clock)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_closed_breaker_lets_calls_through(breaker):
    breaker.check()
    assert breaker.state == "closed"


async def test_after_a_timeout_calls_fail_fast_with_a_retryable_503(breaker):
    breaker.failed(timeout())
    assert breaker.state == "open"
    with pytest.raises(TabletUnavailable) as caught:
        breaker.check()
    err = caught.value
    assert err.status == 503 and err.retryable
    assert err.detail["reason"] == "circuit_open" and err.detail["server"] == "tablet-1"
    assert err.headers() == {"Retry-After": "2"}
    assert getattr(err, "not_sent", False)  # never sent: the engine may re-route it


async def test_errors_other_than_timeouts_leave_it_closed(breaker):
    breaker.failed(TabletUnavailable("refused", server="tablet-1", reason="connect"))
    breaker.failed(TabletUnavailable("garbled", server="tablet-1"))
    breaker.check()
    assert breaker.state == "closed"


async def test_no_probe_before_the_open_period_ends(breaker, clock, probe):
    breaker.failed(timeout())
    clock.now += 1.9
    with pytest.raises(TabletUnavailable):
        breaker.check()
    await settle()
    assert probe.urls == []


async def test_a_failed_probe_keeps_it_open_for_another_period(breaker, clock, probe):
    breaker.failed(timeout())
    clock.now += 2.0
    with pytest.raises(TabletUnavailable):
        breaker.check()  # the call that finds the period over still fails fast...
    await settle()
    assert probe.urls == ["http://t1"]  # ...and starts one probe in the background
    assert breaker.state == "open"
    clock.now += 1.0
    with pytest.raises(TabletUnavailable):
        breaker.check()
    await settle()
    assert probe.urls == ["http://t1"]


async def test_a_successful_probe_closes_it(breaker, clock, probe):
    breaker.failed(timeout())
    clock.now += 2.5
    probe.answer = True
    with pytest.raises(TabletUnavailable):
        breaker.check()
    await settle()
    assert breaker.state == "closed"
    breaker.check()


async def test_only_one_probe_runs_at_a_time(clock):
    started = asyncio.Event()
    release = asyncio.Event()
    calls = []

    async def slow_probe(url: str) -> bool:
        calls.append(url)
        started.set()
        await release.wait()
        return True

    breaker = Breaker("tablet-1", "http://t1", open_s=1.0, probe=slow_probe, clock=clock)
    breaker.failed(timeout())
    clock.now += 1.0
    for _ in range(3):
        with pytest.raises(TabletUnavailable):
            breaker.check()
    await started.wait()
    assert calls == ["http://t1"]
    release.set()
    await settle()
    assert breaker.state == "closed"


async def test_a_success_from_a_call_sent_before_it_opened_closes_it(breaker):
    breaker.failed(timeout())
    breaker.succeeded()
    assert breaker.state == "closed"
