"""mautrix's AppService with two changes the "nothing lost" rule needs, and a health route.

1. Events are handled before the transaction is answered (mautrix's default hands them to
   background tasks and answers 200 at once), so a crash cannot drop a message that the
   homeserver believes delivered.
2. If handling fails in a way a retry can fix (the store is busy, the disk is full), the
   transaction is answered 500 and not remembered, so the homeserver sends it again.
   mautrix would log the error and answer 200, losing the events.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from mautrix.appservice import AppService
from mautrix.appservice.state_store import ASStateStore
from mautrix.client.state_store import MemoryStateStore

log = logging.getLogger(__name__)

_REMEMBERED_TRANSACTIONS = 10_000


class RetryLater(Exception):
    """Raised by an event handler: the event must be offered again (answer 500)."""


class MemoryASStateStore(MemoryStateStore, ASStateStore):
    """Room state cache in memory: everything in it can be fetched again after a restart,
    and the default file store would write mx-state.json into the working directory."""

    def __init__(self) -> None:
        MemoryStateStore.__init__(self)
        ASStateStore.__init__(self)


class BridgeAppService(AppService):
    def __init__(self, *, health: Callable[[], dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.synchronous_handlers = True
        self._health = health
        self.app.router.add_route("GET", "/health", self._http_health)

    async def _http_health(self, _: web.Request) -> web.Response:
        report = self._health()
        return web.json_response(report, status=200 if report.get("ok") else 503)

    async def _http_handle_transaction(self, request: web.Request) -> web.Response:
        transaction_id, data = await self._read_transaction_header(request)
        events = data.pop("events", None)
        if not isinstance(events, list):
            return web.json_response(
                {"errcode": "M_BAD_JSON", "error": "missing events"}, status=400
            )
        try:
            await self.handle_transaction(transaction_id, events=events, extra_data=data)  # type: ignore[arg-type]
        except Exception:
            log.exception(
                "appservice transaction %s not handled; the homeserver will retry", transaction_id
            )
            return web.Response(
                status=500,
                content_type="application/json",
                text=json.dumps({"errcode": "M_UNKNOWN", "error": "try again later"}),
            )
        self.transactions.add(transaction_id)
        if len(self.transactions) > _REMEMBERED_TRANSACTIONS:
            # A replay of a forgotten id is harmless: events handled before are recorded in
            # bridge.db and texts are idempotent by event id.
            self.transactions.clear()
        return web.json_response({})
