"""The simulated Android phone (appliance.adbsim) behind a real ADB server on loopback, and
the phone line against it through adb-shell.

Fixtures:
  adb_device  -- function scope: a SimPhone served by AdbSimServer on 127.0.0.1 (random
                 port), authentication on, the owner "taps Allow" automatically unless a
                 test turns `phone.auto_accept` off
  phone_line  -- function scope: factory; `await phone_line(**config)` -> PhoneHarness with
                 a fresh store and a started PhoneLine (poll every 0.1 s)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appliance.adbsim import AdbSimServer, SimPhone
from appliance.line import LineEvent, LineState
from appliance.phone.config import PhoneConfig
from appliance.phone.line import PhoneLine
from appliance.store import Store
from appliance.store.models import InboxRow, OutboundRequest, OutboxRow, OutboxState
from tests.waiting import until


@dataclass
class AdbDevice:
    phone: SimPhone
    server: AdbSimServer
    key_path: Path

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
def adb_device(tmp_path: Path) -> Iterator[AdbDevice]:
    phone = SimPhone()
    phone.auto_accept = True
    server = AdbSimServer(phone).start()
    try:
        yield AdbDevice(phone, server, tmp_path / "keys" / "adbkey")
    finally:
        server.stop()




@dataclass
class PhoneHarness:
    device: AdbDevice
    store: Store
    line: PhoneLine
    events: list[LineEvent] = field(default_factory=list)

    @property
    def phone(self) -> SimPhone:
        return self.device.phone

    async def inbox(self, n: int, timeout: float = 15.0) -> list[InboxRow]:
        async def enough() -> list[InboxRow] | None:
            rows = await self.store.inbox.pending(limit=1000)
            return rows if len(rows) >= n else None

        rows: list[InboxRow] = await until(enough, timeout, f"{n} inbox rows")
        return rows

    async def send(
        self, body: str, dest: str = "+4915112345678", rid: str = "r1", **meta: Any
    ) -> int:
        row, _ = await self.store.outbox.enqueue(
            OutboundRequest(rid, self.line.id, dest, body, "@mum:test", meta=dict(meta)), 1
        )
        self.line.wake()
        return row.id

    async def state(self, row_id: int, *states: OutboxState, timeout: float = 15.0) -> OutboxRow:
        async def reached() -> OutboxRow | None:
            row = await self.store.outbox.get(row_id)
            return row if row is not None and row.state in states else None

        row: OutboxRow = await until(reached, timeout, f"row {row_id} in {states}")
        return row

    async def event(self, key: str, timeout: float = 15.0) -> LineEvent:
        def found() -> LineEvent | None:
            return next((e for e in self.events if e.key == key), None)

        event: LineEvent = await until(found, timeout, f"event {key}")
        return event

    async def line_state(self, *states: LineState, timeout: float = 15.0) -> None:
        await until(lambda: self.line.status().state in states, timeout, f"line in {states}")


@pytest.fixture
async def phone_line(tmp_path: Path, adb_device: AdbDevice) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[PhoneLine, Store]] = []

    async def make(*, start: bool = True, wait: bool = True, **config: Any) -> PhoneHarness:
        store = await Store.open(tmp_path / f"store{len(made)}.db")
        settings: dict[str, Any] = {
            "enabled": True,
            "transport": "tcp",
            "host": "127.0.0.1",
            "port": adb_device.port,
            "poll_interval": 0.1,
            "health_interval": 0.5,
            "auth_timeout": 2.0,
            "connect_timeout": 1.0,
            "command_timeout": 5.0,
            "retry_delay": 0.2,
            "provider_grace": 0.3,
            "ui_wait": 1.0,
        }
        settings.update(config)
        events: list[LineEvent] = []
        line = PhoneLine(
            "phone",
            PhoneConfig(**settings),
            store,
            key_path=adb_device.key_path,
            on_event=events.append,
        )
        made.append((line, store))
        harness = PhoneHarness(adb_device, store, line, events)
        if start:
            await line.start()
            if wait:
                assert await line.wait_connected(20), line.status().summary
                await harness.line_state(LineState.READY, LineState.DEGRADED)
        return harness

    yield make
    for line, store in made:
        await line.stop()
        await store.close()
