"""What every line (a way out to the phone network) offers the bridge core.

A line is transport only: it moves InboundMessage into the store and OutboxRow out of it,
and reports its health in plain words. It knows nothing of Matrix.
"""

from __future__ import annotations

import enum
import logging
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
    media_max_bytes: int = 0  # the biggest file the line sends (with media=True)


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
    # Whether a text handed to the line now would go out now. None: READY or DEGRADED
    # means yes (a modem with a weak signal still sends); a line whose DEGRADED states
    # stop sending (a locked phone) says so. The bridge routes around a line that cannot.
    can_send: bool | None = None

    @property
    def sending(self) -> bool:
        if self.can_send is not None:
            return self.can_send
        return self.state in (LineState.READY, LineState.DEGRADED)


def display_name(status: LineStatus) -> str:
    """What a parent calls the line: "Modem, SIM +49 151 0000001" or "Phone, Pixel 7". The
    id ("sms", "phone") stays what commands and the config use."""
    from appliance.phonenum import format_display

    if status.kind == "phone":
        model = status.details.get("model", "").strip()
        return f"Phone, {model}" if model else "Phone"
    if status.own_number:
        return f"Modem, SIM {format_display(status.own_number, 'ZZ')}"
    return "Modem"


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


class Announcer:
    """Tells people about a line's conditions once each, and again when they clear.

    A condition (`key`) is announced the first time it is seen; repeats are dropped until it
    is resolved, which sends an INFO event keyed `<key>-resolved`. Both lines use this so a
    flapping modem or phone never floods a family's chat.
    """

    def __init__(self, line_id: str, handler: LineEventHandler | None) -> None:
        self.line_id = line_id
        self.handler = handler
        self.active: set[str] = set()

    def announce(self, key: str, severity: Severity, text: str) -> None:
        if key in self.active:
            return
        self.active.add(key)
        self.emit(LineEvent(self.line_id, severity, text, key))

    def resolved(self, key: str, text: str) -> None:
        if key in self.active:
            self.active.discard(key)
            self.emit(LineEvent(self.line_id, Severity.INFO, text, f"{key}-resolved"))

    def forget(self, key: str) -> None:
        """Clear a condition silently (it will be announced again if it comes back)."""
        self.active.discard(key)

    def emit(self, event: LineEvent) -> None:
        if self.handler is None:
            return
        try:
            self.handler(event)
        except Exception:
            logging.getLogger(__name__).exception("line event handler failed")


@dataclass
class LineHealth:
    """What a line knows of its own health, for status() and the chat."""

    state: LineState = LineState.STARTING
    summary: str = "Starting."
    last_error: str | None = None
    last_error_at: float | None = None
    counters: dict[str, int] = field(default_factory=dict)


class LineReporting:
    """The state-and-events half every line shares: a line sets `_health` (a LineHealth),
    `_announcer` and `_clock` in its constructor and reports through these methods."""

    _health: LineHealth
    _announcer: Announcer
    _clock: Callable[[], float]

    def _count(self, name: str) -> None:
        self._health.counters[name] = self._health.counters.get(name, 0) + 1

    def _set(self, state: LineState, summary: str) -> None:
        self._health.state = state
        self._health.summary = summary

    def _record_error(self, text: str) -> None:
        self._health.last_error = text
        self._health.last_error_at = self._clock()

    def _down(self, text: str, *, key: str, severity: Severity = Severity.ERROR) -> None:
        self._set(LineState.DOWN, text)
        self._record_error(text)
        self._announce(key, severity, text)

    def _announce(self, key: str, severity: Severity, text: str) -> None:
        self._announcer.announce(key, severity, text)

    def _resolved(self, key: str, text: str) -> None:
        self._announcer.resolved(key, text)
