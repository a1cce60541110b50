"""A client for the bridge's control socket (served by appliance/control.py): the web service
and the command-line tools use it; it imports nothing of the appliance."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp


class ControlUnavailable(Exception):
    """The bridge is not running (or not yet listening): say so, don't crash the page."""


class ControlError(Exception):
    """The bridge answered with an error; `message` is plain words for a person."""

    def __init__(self, status: int, message: str, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


class ControlClient:
    def __init__(self, socket_path: Path, *, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if not self.socket_path.exists():
            raise ControlUnavailable("The bridge is not running yet.")
        # A connector per call: calls are rare (a page view) and this keeps the client free
        # of any event loop, so one instance serves the whole web service.
        connector = aiohttp.UnixConnector(path=str(self.socket_path))
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
                ) as session,
                session.request(method, f"http://bridge{path}", json=body) as resp,
            ):
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = {}
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ControlUnavailable(f"The bridge did not answer ({type(exc).__name__}).") from None
        if not isinstance(data, dict):
            data = {}
        if status >= 400:
            raise ControlError(status, str(data.get("error") or f"error {status}"), data)
        return data

    async def status(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/status")

    async def sim(self, line_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/lines/{quote(line_id, safe='')}/sim")

    async def enter_pin(self, line_id: str, pin: str) -> dict[str, Any]:
        return await self._call("POST", f"/v1/lines/{quote(line_id, safe='')}/pin", {"pin": pin})

    async def test_sms(self, line_id: str, to: str, text: str) -> str:
        data = await self._call(
            "POST", f"/v1/lines/{quote(line_id, safe='')}/test-sms", {"to": to, "text": text}
        )
        return str(data["request_id"])

    async def outbox(self, request_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/outbox/{quote(request_id, safe='')}")

    async def stats(self, days: int = 14) -> dict[str, Any]:
        return await self._call("GET", f"/v1/stats?days={int(days)}")

    async def activity(self, limit: int = 10) -> list[dict[str, Any]]:
        """The last texts in and out: time, direction, line, state, masked number."""
        data = await self._call("GET", f"/v1/activity?limit={int(limit)}")
        texts = data.get("texts", [])
        return [t for t in texts if isinstance(t, dict)] if isinstance(texts, list) else []

    async def notice(self, topic: str, key: str, text: str, severity: str = "warning") -> bool:
        """Tell the appliance's owners in their chat, once per (topic, key)."""
        reply = await self._call(
            "POST", "/v1/notices",
            {"topic": topic, "key": key, "text": text, "severity": severity},
        )
        return bool(reply.get("sent"))
