"""What every line (a way out to the phone network) offers the bridge core.

A line is transport only: it moves InboundMessage into the store and OutboxRow out of it,
and reports its health in plain words. It knows nothing of Matrix.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class LineState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"  # can send and receive
    DEGRADED = "degraded"  # working with a problem a person should know (weak signal, storage full)
    DOWN = "down"  # cannot send or receive; `summary` says why and what to do


@dataclass(frozen=True)
class LineCapabilities:
    groups: bool = False
    media: bool = False
    rcs: bool = False


@dataclass(frozen=True)
class LineStatus:
    line_id: str
    kind: str  # "modem" | "phone"
    state: LineState
    summary: str  # one sentence for a person: "Connected to Vodafone.de, signal good (4 of 5)."
    operator: str | None = None
    signal_percent: int | None = None  # 0..100, None when unknown
    registered: bool = False
    own_number: str | None = None
    queue_depth: int = 0
    last_error: str | None = None  # plain words
    last_error_at: float | None = None  # unix time
    details: dict[str, str] = field(default_factory=dict)  # model, IMEI tail, port, storage use


class Severity(enum.StrEnum):
    INFO = "info"  # e.g. "The SMS line is working again."
    WARNING = "warning"  # degraded; sending may be delayed
    ERROR = "error"  # a person must act (enter the PIN, re-plug the modem, top up)


@dataclass(frozen=True)
class LineEvent:
    line_id: str
    severity: Severity
    text: str  # plain words, shown as-is in the owner's management room
    key: str  # stable identifier of the condition ("sim-pin", "unplugged"), to avoid repeats


LineEventHandler = Callable[[LineEvent], None]


class Line(Protocol):
    id: str
    kind: str
    capabilities: LineCapabilities

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> LineStatus: ...

    def wake(self) -> None:
        """New outbox rows for this line exist; look now instead of at the next poll."""
