"""What the durable store holds: inbound and outbound messages and their states.

Transports (the SMS line, the phone line) hand InboundMessage to the store and take
OutboxRow from it; the bridge core reads inbox rows and enqueues OutboundRequest. Nothing
here knows about Matrix: `requested_by` and `delivered_ref` are opaque strings to the store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class InboxState(enum.StrEnum):
    RECEIVED = "received"  # durable, not yet handed on (to Matrix)
    DELIVERED = "delivered"  # handed on; delivered_ref says where
    QUARANTINED = "quarantined"  # could not be decoded; raw kept, a person is told


class OutboxState(enum.StrEnum):
    QUEUED = "queued"  # waiting its turn, or waiting for next_attempt_at after a retryable error
    SENDING = "sending"  # durably marked before the first byte of the first part went out
    SENT = "sent"  # every part accepted by the network (the modem returned a reference)
    DELIVERED = "delivered"  # status reports say every part arrived
    FAILED = "failed"  # permanent failure; `error` says why in plain words
    AMBIGUOUS = "ambiguous"  # interrupted mid-send: may or may not have gone; a person decides
    CANCELLED = "cancelled"  # a person chose not to resend an ambiguous or failed message

    @property
    def final(self) -> bool:
        return self in (OutboxState.DELIVERED, OutboxState.FAILED, OutboxState.CANCELLED)


class PartState(enum.StrEnum):
    PENDING = "pending"  # not yet accepted by the network
    SENT = "sent"  # accepted, reference known, no report yet
    TRYING = "trying"  # a status report said the SMSC is still trying (TP-ST 0x20-0x3F)
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class InboundMessage:
    """A complete message as a transport received it."""

    line_id: str
    conversation: str  # E.164 number, alphanumeric sender ("ACMEBANK"), or a line's group id
    sender: str  # who wrote it; equals conversation for a 1:1 chat
    body: str
    sent_at: int  # service-centre timestamp, milliseconds since the epoch, UTC
    # Stable across re-reads of the same message (a modem sweep, a phone poll): duplicates
    # are recognised by (line_id, dedup_key).
    dedup_key: str
    kind: str = "text"  # "text" | "quarantine" | "media"
    raw: bytes | None = None  # the original PDU(s) / payload, kept for quarantine and forensics
    note: str | None = None  # plain-words remark, e.g. "part 2 of 3 never arrived"
    meta: dict[str, Any] = field(default_factory=dict)  # transport extras (group name, members)


@dataclass(frozen=True)
class InboxRow:
    id: int
    message: InboundMessage
    state: InboxState
    received_at: int  # ms, when the store committed it
    delivered_ref: str | None = None


@dataclass(frozen=True)
class OutboundRequest:
    request_id: str  # idempotency key (the Matrix event id, or a bot command's id)
    line_id: str
    conversation: str
    body: str
    requested_by: str  # opaque to the store (a Matrix user id); used for daily caps
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxPart:
    index: int  # 0-based
    state: PartState
    reference: int | None = None  # TP-MR the modem returned for this part
    detail: str | None = None  # last status-report or error text for this part


@dataclass(frozen=True)
class OutboxRow:
    id: int
    request: OutboundRequest
    state: OutboxState
    attempts: int
    next_attempt_at: int  # ms
    error: str | None  # plain words, for a person
    parts: tuple[OutboxPart, ...]
    created_at: int  # ms
    updated_at: int  # ms
    reported_state: OutboxState | None  # the state the bridge last showed in the room


@dataclass(frozen=True)
class Fragment:
    """One part of a multipart message, held until the whole message can be stored."""

    line_id: str
    group_key: str  # the transport's name for the multipart set (sender, reference, total)
    index: int  # as the transport numbers parts (the SMS line counts from 1)
    total: int
    payload: str
    dedup_key: str  # stable across re-reads of this part from the modem
    received_at: int  # ms, when this part reached the store
    sent_at: int  # ms, service-centre timestamp of this part
