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


# --- the master's heartbeat state ----------------------------------------------------------------


class Master:
    """What the master says is down; ``None`` makes it unreachable."""

    def __init__(self) -> None:
        self.down: frozenset[str] | None = frozenset()
        self.asked = 0

    async def __call__(self) -> frozenset[str]:
        from distdb.errors import MasterUnavailable

        self.asked += 1
        if self.down is None:
            raise MasterUnavailable("the master is unreachable")
        return self.down


@pytest.fixture
def every(settings, clock):
    from ..breaker import Breakers

    settings.DISTDB_BREAKER_MASTER_STATES_S = 10.0
    return Breakers(clock=clock)


async def test_a_server_the_master_reports_down_is_probed_and_fails_fast_without_an_answer(
    every, probe
):
    breaker = every.get_for("tablet-1", "http://t1", probe)
    master = Master()
    master.down = frozenset({"tablet-1"})
    every.consult_master(master)
    await settle()
    assert probe.urls == ["http://t1"]
    assert breaker.state == "open"
    with pytest.raises(TabletUnavailable):
        breaker.check()


async def test_the_masters_word_alone_opens_nothing_if_the_server_answers(every, probe):
    breaker = every.get_for("tablet-1", "http://t1", probe)
    probe.answer = True  # its link is down, its data plane is not
    master = Master()
    master.down = frozenset({"tablet-1"})
    every.consult_master(master)
    await settle()
    assert probe.urls == ["http://t1"] and breaker.state == "closed"


async def test_the_master_is_asked_every_few_seconds_and_a_server_probed_once_per_report(
    every, probe, clock
):
    breaker = every.get_for("tablet-1", "http://t1", probe)
    probe.answer = True
    master = Master()
    master.down = frozenset({"tablet-1"})
    every.consult_master(master)
    await settle()
    every.consult_master(master)  # not due yet
    await settle()
    assert master.asked == 1
    clock.now += 10
    every.consult_master(master)  # due; still down: not probed again
    await settle()
    assert master.asked == 2 and probe.urls == ["http://t1"]
    assert breaker.state == "closed"


async def test_an_unreachable_master_changes_nothing(every, probe, clock):
    breaker = every.get_for("tablet-1", "http://t1", probe)
    master = Master()
    master.down = None
    every.consult_master(master)
    await settle()
    assert master.asked == 1 and probe.urls == [] and breaker.state == "closed"


async def test_a_breaker_made_after_the_master_reported_its_server_down_probes_at_once(
    every, probe
):
    master = Master()
    master.down = frozenset({"tablet-2"})
    every.consult_master(master)
    await settle()
    breaker = every.get_for("tablet-2", "http://t2", probe)
    await settle()
    assert probe.urls == ["http://t2"] and breaker.state == "open"


async def test_zero_turns_the_masters_reports_off(every, settings):
    settings.DISTDB_BREAKER_MASTER_STATES_S = 0
    master = Master()
    every.consult_master(master)
    await settle()
    assert master.asked == 0
