"""Stopping tasks must end even when a task swallows its cancellation (appliance/tasks.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import pytest

from appliance.tasks import stop_tasks, wait_event


async def _swallowing_loop(woken: asyncio.Event, never: asyncio.Event) -> None:
    """The shape that hung a teardown: the first cancellation lost inside a bounded wait,
    then a wait without a bound."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), 5.0)
        await never.wait()


async def _cancelled_just_after_a_wake(task: asyncio.Task[None], woken: asyncio.Event) -> None:
    await asyncio.sleep(0.1)
    woken.set()
    await asyncio.sleep(0)  # the wait has its event; the task has not resumed yet


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps the cancel on 3.12")
async def test_a_swallowed_cancellation_is_cancelled_again_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    woken, never = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_swallowing_loop(woken, never), name="swallower")
    await _cancelled_just_after_a_wake(task, woken)
    started = asyncio.get_running_loop().time()
    with caplog.at_level(logging.ERROR, logger="appliance.tasks"):
        left = await stop_tasks([task], "test", grace=0.3)
    assert left == []
    assert task.cancelled()
    assert asyncio.get_running_loop().time() - started < 2.0
    (record,) = [r for r in caplog.records if "swallower" in r.getMessage()]
    assert "cancelling it again" in record.getMessage()
    assert "never.wait()" in record.getMessage()  # where it was stuck


async def test_a_task_that_refuses_to_end_is_left_behind_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="appliance.tasks"):
        left = await stop_tasks([task], "test", grace=0.2)
    assert left == [task]
    assert any("left behind" in r.getMessage() for r in caplog.records)
    release.set()
    task.cancel()
    await asyncio.wait([task], timeout=2.0)
    assert task.done()


async def test_a_loop_on_wait_event_ends_when_cancelled_as_the_event_is_set() -> None:
    woken = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            await wait_event(woken, 5.0)
            woken.clear()
            rounds += 1

    task = asyncio.create_task(loop())
    await _cancelled_just_after_a_wake(task, woken)
    task.cancel()
    await asyncio.wait([task], timeout=1.0)
    assert task.cancelled()


async def test_wait_event_times_out_and_sees_a_set_event() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.05) is False
    event.set()
    assert await wait_event(event, 0.05) is True
