"""Waiting for a condition in async tests (and the hardware tests in hil/)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(
    check: Callable[[], Any], timeout: float = 15.0, what: str = "", interval: float = 0.02
) -> Any:
    """Call `check` (sync or async) until it returns something truthy, and return that;
    fail the test after `timeout` seconds, naming `what` it waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or check}")
