"""Waiting and stopping without hanging: the service's shutdown must end.

On Python 3.11, `asyncio.wait_for(aw, timeout)` swallows a cancellation that arrives in the
one loop iteration after `aw` finished and before wait_for resumed: it returns the result
instead of raising CancelledError (fixed in 3.12, which builds wait_for on asyncio.timeout).
A loop whose task is cancelled there goes round once more and, if it then awaits something
without a bound (an event only the stopped link would set, an empty queue), `await task` in
its stop() never returns. `wait_event` and `within` use asyncio.timeout, which passes an
outside cancellation on; `stop_tasks` bounds a stop() even if a task still swallows one.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# A cancelled task of ours ends within a few loop iterations (an executor call or a
# database statement in flight is its longest wait), far below this.
STOP_GRACE_S = 5.0


async def wait_event(event: asyncio.Event, timeout: float) -> bool:  # noqa: ASYNC109
    """True once `event` is set, False after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def within(timeout: float, aw: Awaitable[T]) -> T:  # noqa: ASYNC109
    """`aw`, or TimeoutError after `timeout` seconds; a cancellation always propagates."""
    async with asyncio.timeout(timeout):
        return await aw


def _stack(task: asyncio.Task[Any]) -> str:
    out = io.StringIO()
    task.print_stack(file=out)
    return out.getvalue().strip()


async def stop_tasks(
    tasks: Iterable[asyncio.Task[Any]],
    what: str,
    *,
    grace: float = STOP_GRACE_S,
) -> list[asyncio.Task[Any]]:
    """Cancel `tasks` and wait for them, `grace` seconds at most per round; the tasks that
    would not end (returned) are logged as errors with where they are stuck.

    A task that swallowed the first cancellation is waiting somewhere else by then, so it
    is cancelled once more before giving up on it: the stop ends either way, and the log
    says which task to fix. Exceptions of the tasks are logged, not raised: a stop must
    reach the next part of the shutdown."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    for attempt in (1, 2):
        if not pending:
            break
        _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            log.error(
                "%s: task %s did not end %.0f s after being cancelled%s:\n%s",
                what,
                task.get_name(),
                grace,
                ", cancelling it again" if attempt == 1 else "; left behind",
                _stack(task),
            )
            if attempt == 1:
                task.cancel()
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("%s: task %s had failed", what, task.get_name(), exc_info=task.exception())
    return list(pending)
