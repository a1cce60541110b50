"""The phone line's sending half: the outbox rows of the phone line, typed into Google
Messages' compose screen (a text) or shared into it (a file), and the send button tapped
only when the screen is exactly as expected.

A row is marked SENDING durably first; anything failing before the tap puts it back in the
queue (nothing left the phone), a failure after the tap makes it AMBIGUOUS for a person to
decide, never a second send on our own. A group is addressed to all of its members or not
at all (appliance/phone/groups.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from appliance.line import LineReporting, LineState, Severity
from appliance.log import mask_number
from appliance.phone.adb import PushFailed
from appliance.phone.config import PhoneConfig
from appliance.phone.device import LOCKED, Phone
from appliance.phone.errors import (
    LayoutChanged,
    MessagesMissing,
    PhoneError,
    PhoneLocked,
    SendNotConfirmed,
)
from appliance.phone.groups import Groups
from appliance.store import Store
from appliance.store.errors import StoreStateError
from appliance.store.models import OutboxRow, PartState
from appliance.tasks import wait_event

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 3600.0


class PhoneSending(LineReporting):
    """Mixed into PhoneLine, which owns the state declared here."""

    id: str
    config: PhoneConfig
    store: Store
    _phone: Phone | None
    _ui: asyncio.Lock
    _sendable: asyncio.Event
    _wake: asyncio.Event
    _reconnect: asyncio.Event
    _stopping: bool
    _queue_depth: int
    _groups: Groups
    _stale_files: set[str]
    _address: Callable[[str], str]
    _learn_group: Callable[[str], Awaitable[bool]]

    async def _sender(self) -> None:
        while True:
            await self._sendable.wait()
            rows = await self.store.outbox.ready(self.id, int(self._clock() * 1000))
            self._queue_depth = len(rows)
            for row in rows:
                if self._stopping or not self._sendable.is_set():
                    break
                try:
                    await self._send(row)
                except PhoneError as exc:
                    # The link broke: the supervisor reconnects; the row's state is settled.
                    self._record_error(exc.plain)
                    self._sendable.clear()
                    self._reconnect.set()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # A bug with one row must not stop every later message; the row stays in
                    # whatever state the store has (SENDING becomes AMBIGUOUS at restart).
                    log.exception("sending outbox row %d failed", row.id)
                    self._record_error("Sending a message failed unexpectedly.")
            self._wake.clear()
            await wait_event(self._wake, 1.0 if rows else 5.0)

    async def _recipients(self, row: OutboxRow) -> list[str] | str:
        """The numbers to address, or why there are none. A group is addressed only with
        all of its members: to some of them, it would reach each as a private text."""
        conv = row.request.conversation
        if conv.startswith("group:"):
            members = row.request.meta.get("members")
            if not members:
                known = self._groups.get(conv)
                if known is not None and not known.complete:
                    await self._learn_group(conv)
                if known is None:
                    return (
                        "Textbridge does not know this group's members (nobody has written "
                        "in it since the appliance started), so nothing was sent. Answer it "
                        "on the phone, or retry once someone in the group has written."
                    )
                if not known.complete:
                    return (
                        "Textbridge could not read from the phone who is in this group, only "
                        "who has written in it; sent to them alone, the text would reach "
                        "each of them as a private text and miss the others, so nothing was "
                        "sent. Answer this group on the phone itself."
                    )
                members = known.members
            numbers = [self._address(str(m)) for m in members]
            if any(not n.startswith("+") for n in numbers):
                return "Some of this group's members are known only by name, not by number."
            return numbers
        number = self._address(conv)
        if not number.startswith("+") and not number.isdigit():
            return f"{conv} is a name, not a phone number, so it cannot be texted back."
        return [number]

    async def _send_error(self, row: OutboxRow, exc: PhoneError, *, tapped: bool) -> bool:
        """Settle a text or file whose send raised: after the tap it may have left, so it
        is ambiguous (never sent again by itself); before, it is retried. Returns True when
        the link must be dropped (the caller re-raises); a screen that is not as expected,
        Messages missing, a locked phone or a refused push keep the link."""
        if tapped:
            await self._ambiguous(row, exc)
        else:
            await self._retry(row, exc)
        if not isinstance(exc, (LayoutChanged, MessagesMissing, PhoneLocked, PushFailed)):
            return True
        if not tapped:
            if isinstance(exc, PhoneLocked):
                self._sendable.clear()
                self._set(LineState.DEGRADED, LOCKED)
            if not isinstance(exc, PushFailed):  # the row's own error says it; not the line's
                self._announce(exc.key, Severity.ERROR, exc.plain)
        return False

    async def _send(self, row: OutboxRow) -> None:
        phone = self._phone
        if phone is None:
            return
        recipients = await self._recipients(row)
        if isinstance(recipients, str):
            await self.store.outbox.mark_failed(row.id, recipients)
            return
        attachment = row.request.meta.get("attachment")
        if isinstance(attachment, dict):
            await self._send_media(phone, row, recipients, attachment)
            return
        text = row.request.body
        async with self._ui:
            if not await self._claim(row):
                return
            tapped = False
            try:
                await phone.wake_screen()
                if await phone.locked():
                    raise PhoneLocked(LOCKED)
                screen = await phone.open_compose(recipients, text)
                button = screen.send_button()
                tapped = True
                await phone.tap(*button.center)
                outcome = await phone.confirm_sent(text)
            except SendNotConfirmed as exc:
                # The text is still sitting in the compose box: it did not leave.
                await self._retry(row, exc)
                return
            except PhoneError as exc:
                if await self._send_error(row, exc, tapped=tapped):
                    raise
                return
            await self._mark_tapped_sent(row, button.network)
            self._resolved("layout", "Sending through Google Messages works again.")
            self._count("sent")
            log.info("message to %s sent (%s)", _mask_all(recipients), outcome.confirmed_by)
            with contextlib.suppress(PhoneError):
                await phone.go_home()

    async def _send_media(
        self, phone: Phone, row: OutboxRow, recipients: list[str], attachment: dict[str, object]
    ) -> None:
        """A file from the store's attachments: pushed into Textbridge's folder on the
        phone, made visible to the media store, shared into Messages' conversation with the
        recipients, and sent by the same no-blind-tap rule as a text. The pushed copy is
        deleted afterwards, whatever happened."""
        name = str(attachment.get("file", ""))
        mime = str(attachment.get("type", "application/octet-stream"))
        try:
            data = await self.store.attachments.get(name)
        except ValueError:
            data = None
        if data is None:
            await self.store.outbox.mark_failed(
                row.id, "The file to send is no longer on the appliance; nothing was sent."
            )
            return
        async with self._ui:
            if not await self._claim(row):
                return
            tapped = False
            path: str | None = None
            try:
                try:
                    await phone.wake_screen()
                    if await phone.locked():
                        raise PhoneLocked(LOCKED)
                    path = await phone.push_file(data, _device_name(row.id, attachment))
                    uri = await phone.media_uri(path, mime)
                    screen = await phone.open_share(recipients, uri, mime)
                    button = screen.send_button()
                    tapped = True
                    await phone.tap(*button.center)
                    outcome = await phone.confirm_media_sent()
                finally:
                    if path is not None:
                        try:
                            await phone.remove_file(path)
                        except PhoneError:
                            self._stale_files.add(path)
            except SendNotConfirmed as exc:
                await self._retry(row, exc)
                return
            except PhoneError as exc:
                if await self._send_error(row, exc, tapped=tapped):
                    raise
                return
            await self._mark_tapped_sent(row, button.network)
            await self.store.attachments.delete(name)
            self._resolved("layout", "Sending through Google Messages works again.")
            self._count("sent_media")
            log.info("file to %s sent (%s)", _mask_all(recipients), outcome.confirmed_by)
            with contextlib.suppress(PhoneError):
                await phone.go_home()

    async def _claim(self, row: OutboxRow) -> bool:
        """SENDING, durably, before the first tap; False if the bridge handed the row to
        another line (or it was cancelled) meanwhile."""
        try:
            await self.store.outbox.mark_sending(row.id, line_id=self.id)
        except StoreStateError:
            log.info("outbox row %d is no longer this line's to send", row.id)
            return False
        return True

    async def _mark_tapped_sent(self, row: OutboxRow, network: str | None) -> None:
        """Messages took the text: every part is sent (the phone gives no part references,
        so each part's index stands in), and the row records the network the button said."""
        for part in row.parts:
            if part.state == PartState.PENDING:
                await self.store.outbox.mark_part_sent(row.id, part.index, part.index & 0xFF)
        await self.store.outbox.mark_sent(row.id, meta={"network": network} if network else None)

    async def _retry(self, row: OutboxRow, exc: PhoneError) -> None:
        attempts = row.attempts + 1
        if attempts >= self.config.max_send_attempts:
            reason = f"{exc.plain} Gave up after {attempts} attempts."
            await self.store.outbox.mark_failed(row.id, reason)
            self._record_error(reason)
            return
        delay = min(self.config.retry_delay * (2 ** (attempts - 1)), MAX_RETRY_DELAY)
        await self.store.outbox.mark_retry(row.id, f"{exc.plain} Trying again soon.", delay)
        self._record_error(exc.plain)

    async def _ambiguous(self, row: OutboxRow, exc: PhoneError) -> None:
        text = (
            "The send button on the phone was tapped, but Textbridge could not see whether "
            f"the message left ({exc.plain}). Check the phone; say retry to send it again, "
            "or cancel."
        )
        await self.store.outbox.mark_ambiguous(row.id, text)
        self._record_error(text)
        log.warning("outbox row %d is ambiguous after the tap", row.id)


def _device_name(row_id: int, attachment: dict[str, object]) -> str:
    """A name for the pushed copy: ours (row id), with a tame extension, nothing else of
    what the sender called it."""
    ext = str(attachment.get("name", "")).rpartition(".")[2].lower()
    if not (ext.isascii() and ext.isalnum() and 0 < len(ext) <= 5):
        ext = "bin"
    return f"tb-{int(row_id)}.{ext}"


def _mask_all(numbers: list[str]) -> str:
    return ", ".join(mask_number(n) for n in numbers)
