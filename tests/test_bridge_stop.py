"""The bridge's stop() ends whatever its loops are doing at that moment (a test teardown
once hung in it for ever)."""

from __future__ import annotations

import asyncio
import contextlib
from types import CoroutineType
from typing import Any

from appliance.bridge.core import Bridge
from appliance.line import LineEvent, Severity
from tests.plugins.bridge import BridgeStack


def _showing() -> CoroutineType[Any, Any, Any] | None:
    """The running `_show_line_event` coroutine, in whichever task it runs."""
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        while coro is not None:
            if getattr(coro, "cr_code", None) is Bridge._show_line_event.__code__:
                return coro  # type: ignore[no-any-return]
            coro = getattr(coro, "cr_await", None)
    return None


async def test_stop_in_the_iteration_a_line_notice_went_out_ends(
    bridge_stack: BridgeStack,
) -> None:
    """On Python 3.11 asyncio.wait_for returned the finished notice instead of the stop's
    cancellation; the line-event loop went back to waiting on its empty queue, with no
    timer, and Bridge.stop() awaited it for ever."""
    stack = bridge_stack
    await stack.start()
    await stack.ready()
    bridge = stack.bridge
    assert bridge is not None
    bridge.on_line_event(LineEvent("modem", Severity.ERROR, "The SIM card needs its PIN.", "pin"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    showing = None
    # One loop iteration per step, so the stop comes in the iteration the notice ended.
    while showing is None or showing.cr_frame is not None:
        assert loop.time() < deadline, "the notice was not sent"
        showing = showing or _showing()
        await asyncio.sleep(0)
    stop = asyncio.create_task(stack.stop())
    done, _ = await asyncio.wait([stop], timeout=10.0)
    if not done:
        stop.cancel()  # reaches the stuck loop, so the fixture's teardown can end
        with contextlib.suppress(BaseException):
            await stop
    assert done, "Bridge.stop() did not end"
