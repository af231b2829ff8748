"""The internal APIs' one thread hop per call (``distdb.internal_http.run_sync``/``run_read``):
the outcome, the request's context, and cancellation as ``loop.run_in_executor`` had them."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from distdb.internal_http import run_read, run_sync

# Each worker first drops a connection the database closed (close_old_connections), which
# may touch a connection an earlier test left in that thread.
pytestmark = pytest.mark.django_db(transaction=True)

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="")


async def test_the_result_and_the_context_come_through_a_worker():
    marker.set("request-7")

    def work(a: int, b: int) -> tuple[int, str, str]:
        return a + b, marker.get(), threading.current_thread().name

    total, seen, thread = await run_sync(work, 2, 3)
    assert (total, seen) == (5, "request-7")
    assert thread.startswith("distdb-db")


async def test_an_error_in_the_worker_is_raised_to_the_caller():
    def fail() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        await run_sync(fail)


async def test_reads_run_in_their_own_pool(settings):
    settings.DISTDB_READ_THREADS = 1
    name = await run_read(lambda: threading.current_thread().name)
    assert name.startswith("distdb-read")


async def test_a_call_cancelled_before_a_worker_took_it_is_not_run(settings):
    settings.DISTDB_READ_THREADS = 1
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def block() -> None:
        started.set()
        release.wait(5)

    blocker = asyncio.ensure_future(run_read(block))  # holds the one reads thread
    await asyncio.to_thread(started.wait, 5)
    queued = asyncio.ensure_future(run_read(lambda: ran.append("queued")))
    await asyncio.sleep(0.05)
    queued.cancel()
    release.set()
    await blocker
    await run_read(lambda: None)  # the pool has gone past the cancelled call
    assert queued.cancelled() and ran == []


async def test_a_call_cancelled_while_running_runs_to_its_end_quietly(settings):
    settings.DISTDB_READ_THREADS = 1
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def slow() -> None:
        started.set()
        release.wait(5)
        finished.append(True)

    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    call = asyncio.ensure_future(run_read(slow))
    await asyncio.to_thread(started.wait, 5)
    call.cancel()
    release.set()
    await run_read(lambda: None)  # after slow, in the same one thread
    await asyncio.sleep(0.05)  # its outcome reached the loop and was dropped
    assert call.cancelled() and finished == [True]
    assert errors == []  # no "invalid state" from settling a cancelled future
