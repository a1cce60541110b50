"""The outbox against a small model of it, driven by hypothesis (RuleBasedStateMachine).

Every rule calls the real store and the model; a call the model says is not allowed must
raise StoreStateError and change nothing. After every step all rows, ready() and
unreported() must agree with the model. References are drawn from a tiny range so that
status reports hit TP-MR collisions (wraparound) all the time.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from appliance.store import INTERRUPTED_ERROR, Store, StoreStateError
from appliance.store.models import OutboundRequest, OutboxState, PartState
from appliance.store.outbox import FAILED_BY_REPORT

Q = OutboxState
P = PartState
LINE = "sms"
CONVS = ("+4915100000000", "+4915100000001", "+4915100000002")
T = TypeVar("T")


@dataclass
class MPart:
    state: PartState = P.PENDING
    ref: int | None = None
    sent_at: int | None = None
    detail: str | None = None


@dataclass
class MRow:
    id: int
    rid: str
    conv: str
    state: OutboxState
    parts: list[MPart]
    next_at: int
    attempts: int = 0
    error: str | None = None
    reported: OutboxState | None = None
    by: str = "@a"
    created: int = 0


@dataclass
class Model:
    rows: dict[int, MRow] = field(default_factory=dict)

    def by_rid(self, rid: str) -> MRow | None:
        return next((r for r in self.rows.values() if r.rid == rid), None)

    def ready(self, now: int) -> list[int]:
        heads: dict[str, int] = {}
        for r in sorted(self.rows.values(), key=lambda r: r.id):
            if r.state in (Q.QUEUED, Q.SENDING) and r.conv not in heads:
                heads[r.conv] = r.id
        return sorted(
            i
            for i in heads.values()
            if self.rows[i].state == Q.QUEUED and self.rows[i].next_at <= now
        )


def derive(row: MRow) -> tuple[OutboxState, str | None]:
    if all(p.state == P.DELIVERED for p in row.parts):
        return Q.DELIVERED, None
    failed = [p for p in row.parts if p.state == P.FAILED]
    if failed:
        return Q.FAILED, failed[0].detail or FAILED_BY_REPORT
    return Q.SENT, None


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="store-model-"))
        self.now = 1_000_000
        self.store = self.run(Store.open(self.dir / "s.db", clock=lambda: self.now))
        self.model = Model()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def expect_refusal(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            self.run(coro)
        except StoreStateError:
            return
        raise AssertionError("the store allowed a transition the model forbids")

    def row(self, row_id: int) -> MRow | None:
        return self.model.rows.get(row_id)

    # -- rules ----------------------------------------------------------------------------

    @rule(
        rid=st.sampled_from([f"r{i}" for i in range(8)]),
        conv=st.sampled_from(CONVS),
        parts=st.integers(1, 3),
        by=st.sampled_from(["@a", "@b"]),
    )
    def enqueue(self, rid: str, conv: str, parts: int, by: str) -> None:
        row, created = self.run(
            self.store.outbox.enqueue(OutboundRequest(rid, LINE, conv, "x", by), parts)
        )
        existing = self.model.by_rid(rid)
        if existing is not None:
            assert not created and row.id == existing.id
            return
        assert created and row.id == max(self.model.rows, default=0) + 1
        self.model.rows[row.id] = MRow(
            row.id,
            rid,
            conv,
            Q.QUEUED,
            [MPart() for _ in range(parts)],
            self.now,
            by=by,
            created=self.now,
        )

    def mark_sending(self, row_id: int) -> None:
        m = self.row(row_id)
        if m is None or m.state != Q.QUEUED:
            return self.expect_refusal(self.store.outbox.mark_sending(row_id))
        self.run(self.store.outbox.mark_sending(row_id))
        m.state = Q.SENDING
        return None

    def mark_part_sent(self, row_id: int, index: int, ref: int) -> None:
        m = self.row(row_id)
        if (
            m is None
            or m.state != Q.SENDING
            or index >= len(m.parts)
            or m.parts[index].state != P.PENDING
        ):
            return self.expect_refusal(self.store.outbox.mark_part_sent(row_id, index, ref))
        self.run(self.store.outbox.mark_part_sent(row_id, index, ref))
        m.parts[index] = MPart(P.SENT, ref, self.now, None)
        return None

    def mark_sent(self, row_id: int) -> None:
        m = self.row(row_id)
        if m is None or m.state != Q.SENDING or any(p.state == P.PENDING for p in m.parts):
            return self.expect_refusal(self.store.outbox.mark_sent(row_id))
        self.run(self.store.outbox.mark_sent(row_id))
        m.state, m.error = derive(m)
        return None

    def mark_retry(self, row_id: int, delay: float) -> None:
        m = self.row(row_id)
        if m is None or m.state != Q.SENDING:
            return self.expect_refusal(self.store.outbox.mark_retry(row_id, "busy", delay))
        self.run(self.store.outbox.mark_retry(row_id, "busy", delay))
        m.state, m.attempts, m.error = Q.QUEUED, m.attempts + 1, "busy"
        m.next_at = self.now + round(delay * 1000)
        return None

    def mark_failed(self, row_id: int) -> None:
        m = self.row(row_id)
        if m is None or m.state not in (Q.QUEUED, Q.SENDING):
            return self.expect_refusal(self.store.outbox.mark_failed(row_id, "no"))
        self.run(self.store.outbox.mark_failed(row_id, "no"))
        m.state, m.error = Q.FAILED, "no"
        return None

    def mark_ambiguous(self, row_id: int) -> None:
        m = self.row(row_id)
        if m is None or m.state != Q.SENDING:
            return self.expect_refusal(self.store.outbox.mark_ambiguous(row_id))
        self.run(self.store.outbox.mark_ambiguous(row_id))
        m.state, m.error = Q.AMBIGUOUS, INTERRUPTED_ERROR
        return None

    def resolve(self, row_id: int, action: str) -> None:
        m = self.row(row_id)
        call = self.store.outbox.resolve(row_id, action)  # type: ignore[arg-type]
        if m is None or m.state not in (Q.AMBIGUOUS, Q.FAILED):
            return self.expect_refusal(call)
        self.run(call)
        if action == "cancel":
            m.state = Q.CANCELLED
        else:
            m.state, m.attempts, m.error, m.next_at = Q.QUEUED, 0, None, self.now
            m.parts = [MPart() for _ in m.parts]
        return None

    @rule(
        ref=st.integers(0, 3),
        recipient=st.sampled_from([None, *CONVS]),
        state=st.sampled_from([P.TRYING, P.DELIVERED, P.FAILED]),
        detail=st.sampled_from([None, "why"]),
    )
    def status_report(
        self, ref: int, recipient: str | None, state: PartState, detail: str | None
    ) -> None:
        got = self.run(self.store.outbox.apply_status_report(LINE, ref, recipient, state, detail))
        candidates = sorted(
            (
                (p.sent_at or 0, r.id, i)
                for r in self.model.rows.values()
                for i, p in enumerate(r.parts)
                if p.ref == ref and (recipient is None or r.conv == recipient)
            ),
            reverse=True,
        )
        open_ = [c for c in candidates if self.rows_part(c).state in (P.SENT, P.TRYING)]
        if not open_:
            if candidates and self.rows_part(candidates[0]).state == state:
                assert got is not None and got.id == candidates[0][1]
            else:
                assert got is None
            return
        _, row_id, index = open_[0]
        assert got is not None and got.id == row_id
        m = self.model.rows[row_id]
        m.parts[index].state, m.parts[index].detail = state, detail
        if m.state == Q.SENT:
            m.state, m.error = derive(m)

    def rows_part(self, c: tuple[int, int, int]) -> MPart:
        return self.model.rows[c[1]].parts[c[2]]

    @rule(row_id=st.integers(1, 9))
    def mark_reported(self, row_id: int) -> None:
        m = self.row(row_id)
        if m is None:
            return self.expect_refusal(self.store.outbox.mark_reported(row_id, Q.QUEUED))
        self.run(self.store.outbox.mark_reported(row_id, m.state))
        m.reported = m.state
        return None

    @rule(
        call=st.sampled_from(
            [
                "mark_sending",
                "mark_part_sent",
                "mark_sent",
                "mark_retry",
                "mark_failed",
                "mark_ambiguous",
                "resend",
                "cancel",
            ]
        ),
        row_id=st.integers(1, 9),
        index=st.integers(0, 3),
        ref=st.integers(0, 3),
        delay=st.sampled_from([0.0, 0.25, 1.0, 30.0]),
    )
    def poke(self, call: str, row_id: int, index: int, ref: int, delay: float) -> None:
        """Any transition on any row id, valid or not (ids may not even exist)."""
        if call == "mark_part_sent":
            self.mark_part_sent(row_id, index, ref)
        elif call == "mark_retry":
            self.mark_retry(row_id, delay)
        elif call in ("resend", "cancel"):
            self.resolve(row_id, call)
        else:
            getattr(self, call)(row_id)

    @rule(
        steps=st.integers(1, 6),
        pick=st.integers(0, 50),
        ref=st.integers(0, 3),
        state=st.sampled_from([P.TRYING, P.DELIVERED, P.DELIVERED, P.FAILED]),
        action=st.sampled_from(["resend", "cancel"]),
        report_recipient=st.booleans(),
    )
    def drive(
        self,
        steps: int,
        pick: int,
        ref: int,
        state: PartState,
        action: str,
        report_recipient: bool,
    ) -> None:
        """The natural next steps for an existing row, so that runs get deep into the machine
        instead of mostly bouncing off invalid transitions."""
        live = sorted(i for i, r in self.model.rows.items() if not r.state.final)
        if not live:
            return
        m = self.model.rows[live[pick % len(live)]]
        for step in range(steps):
            self.step(m, pick + step, ref, state, action, report_recipient)

    def step(
        self, m: MRow, pick: int, ref: int, state: PartState, action: str, report_recipient: bool
    ) -> None:
        self.now += 1  # parts sent in different milliseconds, so "newest" means something
        pending = [i for i, p in enumerate(m.parts) if p.state == P.PENDING]
        if m.state == Q.QUEUED:
            self.mark_sending(m.id)
        elif m.state == Q.SENDING and pick % 7 == 6:
            # What goes wrong while sending: a retryable error, a modem that stops answering.
            (self.mark_ambiguous if pick % 2 else lambda i: self.mark_retry(i, 0.0))(m.id)
        elif m.state == Q.SENDING and pending:
            self.mark_part_sent(m.id, pending[0], ref % 2)  # two references: many collisions
        elif m.state == Q.SENDING:
            self.mark_sent(m.id)
        elif m.state == Q.SENT:
            part = m.parts[pick % len(m.parts)]
            assert part.ref is not None
            self.status_report(part.ref, m.conv if report_recipient else None, state, None)
        elif m.state in (Q.AMBIGUOUS, Q.FAILED):
            self.resolve(m.id, action)

    @rule(ms=st.sampled_from([0, 1, 250, 1000, 30_000]))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule()
    def restart(self) -> None:
        self.run(self.store.close())
        self.store = self.run(Store.open(self.dir / "s.db", clock=lambda: self.now))
        recovered = self.run(self.store.outbox.recover_interrupted())
        sending = sorted(i for i, r in self.model.rows.items() if r.state == Q.SENDING)
        assert [r.id for r in recovered] == sending
        for i in sending:
            self.model.rows[i].state = Q.AMBIGUOUS
            self.model.rows[i].error = INTERRUPTED_ERROR

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def rows_match(self) -> None:
        for m in self.model.rows.values():
            row = self.run(self.store.outbox.get(m.id))
            assert row is not None
            assert (row.request.request_id, row.request.conversation) == (m.rid, m.conv)
            assert (row.state, row.attempts, row.next_attempt_at, row.error) == (
                m.state,
                m.attempts,
                m.next_at,
                m.error,
            ), (row, m)
            assert [(p.state, p.reference, p.detail) for p in row.parts] == [
                (p.state, p.ref, p.detail) for p in m.parts
            ], (row, m)
            assert row.reported_state == m.reported
        assert self.run(self.store.outbox.get(len(self.model.rows) + 1)) is None

    @invariant()
    def ready_matches(self) -> None:
        got = [r.id for r in self.run(self.store.outbox.ready(LINE, self.now))]
        assert got == self.model.ready(self.now)

    @invariant()
    def unreported_and_caps_match(self) -> None:
        got = [r.id for r in self.run(self.store.outbox.unreported(limit=1000))]
        assert got == sorted(i for i, r in self.model.rows.items() if r.reported != r.state)
        for by in ("@a", "@b"):
            want = sum(1 for r in self.model.rows.values() if r.by == by and r.state != Q.CANCELLED)
            assert self.run(self.store.outbox.count_requested(by, 0)) == want


OutboxMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOutboxModel = OutboxMachine.TestCase
