"""The phone line end to end: the real adb-shell client, over TCP, against the simulated
phone's adbd (appliance.adbsim), into a real store -- and back out through Messages' UI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from typing import Any

from appliance.line import LineState, Severity
from appliance.phone.notifications import thread_id
from appliance.store.models import OutboundRequest, OutboxState, PartState
from tests.plugins.phone import until

ANNA = "+4915112345678"
BEN = "+4915112345679"
CARLA = "+4917000000001"


async def test_inbound_rcs_one_to_one(phone_line: Any) -> None:
    h = await phone_line()
    sent = h.phone.receive(ANNA, "Kommst du heute? 🎉", rcs=True)
    rows = await h.inbox(1)
    msg = rows[0].message
    assert (msg.conversation, msg.sender, msg.body) == (ANNA, ANNA, "Kommst du heute? 🎉")
    assert msg.sent_at == sent.time
    assert msg.line_id == "phone"
    assert msg.meta["source"] == "notification"
    assert "group_name" not in msg.meta


async def test_inbound_group_has_stable_id_name_and_members(phone_line: Any) -> None:
    h = await phone_line()
    members = (ANNA, BEN, CARLA)
    h.phone.receive(ANNA, "Wer bringt Kuchen?", group="Familie", members=members)
    h.phone.receive(BEN, "Ich!", group="Familie", members=members)
    rows = await h.inbox(2)
    conv = h.phone.conversation_of(*members, title="Familie")
    assert conv is not None
    expected = thread_id(f"com.google.android.apps.messaging|{conv.thread}|")
    by_sender = {r.message.sender: r.message for r in rows}
    assert set(by_sender) == {ANNA, BEN}
    for msg in by_sender.values():
        assert msg.conversation == expected
        assert msg.meta["group_name"] == "Familie"
    # Every member, from the phone's conversation, not only the two who wrote.
    assert by_sender[BEN].meta["members"] == sorted(members)
    assert by_sender[BEN].meta["members_complete"] is True
    # A later message in the same thread keeps the id.
    h.phone.receive(CARLA, "Und ich Sahne", group="Familie", members=members)
    rows = await h.inbox(3)
    assert {r.message.conversation for r in rows} == {expected}


async def test_several_between_polls_none_missed_none_doubled(phone_line: Any) -> None:
    h = await phone_line(poll_interval=1.0)
    texts = [f"Nachricht {i}" for i in range(6)]
    for i, text in enumerate(texts):
        h.phone.receive(ANNA if i % 2 else BEN, text, at=1_790_000_000_000 + i)
    rows = await h.inbox(6)
    assert sorted(r.message.body for r in rows) == sorted(texts)
    polls = h.line.polls
    await until(lambda: h.line.polls >= polls + 3, what="three more polls")
    # The notifications still show all six; re-reading them stored nothing new.
    assert len(await h.store.inbox.pending(limit=100)) == 6


async def test_same_text_twice_at_different_times_is_two_messages(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.receive(ANNA, "ok", at=1_790_000_000_000)
    h.phone.receive(ANNA, "ok", at=1_790_000_060_000)
    rows = await h.inbox(2)
    assert len({r.message.dedup_key for r in rows}) == 2


async def test_tricky_texts_survive_the_dump(phone_line: Any) -> None:
    h = await phone_line()
    texts = [
        "zwei\nZeilen\n      android.title=String (fake)",
        "a, time=5, sender=Mallory}]",
        "Klammern ) ( und [0] Bundle[{",
        "  ",
    ]
    for i, text in enumerate(texts):
        h.phone.receive(ANNA, text, at=1_790_000_000_000 + i)
    rows = await h.inbox(len(texts))
    assert sorted(r.message.body for r in rows) == sorted(texts)
    assert {r.message.sender for r in rows} == {ANNA}


async def test_sms_while_conversation_open_is_backfilled_from_the_sms_store(
    phone_line: Any,
) -> None:
    h = await phone_line(leave_open_conversations=False)
    h.phone.open_conversation((CARLA,))
    h.phone.receive(CARLA, "Bist du da?", rcs=False)
    assert h.phone._notification_records() == []  # nothing to see in notifications
    rows = await h.inbox(1)
    msg = rows[0].message
    assert (msg.conversation, msg.sender, msg.body) == (CARLA, CARLA, "Bist du da?")
    assert msg.meta["source"] == "sms-store"


async def test_open_conversation_is_closed_and_reported(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.open_conversation((ANNA,))
    event = await h.event("conversation-open")
    assert "home screen" in event.text
    await until(lambda: h.phone.screen == "home", what="back to the home screen")
    h.phone.receive(ANNA, "RCS nach dem Schliessen", rcs=True)
    rows = await h.inbox(1)
    assert rows[0].message.body == "RCS nach dem Schliessen"
    # Opened again later (after a health check saw it closed): told again, once per
    # occurrence, without "resolved" noise.
    await asyncio.sleep(1.2)
    h.phone.open_conversation((BEN,))
    await until(
        lambda: sum(e.key == "conversation-open" for e in h.events) == 2, what="second notice"
    )
    assert not any(e.key == "conversation-open-resolved" for e in h.events)


async def test_sms_seen_in_notification_and_store_is_stored_once(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.receive(BEN, "einmal bitte", rcs=False)
    await h.inbox(1)
    await until(lambda: h.line.polls >= 10, what="polls past the provider grace")
    rows = await h.store.inbox.pending(limit=10)
    assert [r.message.body for r in rows] == ["einmal bitte"]


async def test_sms_store_not_readable_is_reported_and_notifications_still_work(
    phone_line: Any, adb_device: Any
) -> None:
    adb_device.phone.faults.provider_denied = True
    h = await phone_line()
    event = await h.event("provider")
    assert event.severity == Severity.WARNING
    assert "conversation is open" in event.text
    h.phone.receive(ANNA, "trotzdem da")
    assert (await h.inbox(1))[0].message.body == "trotzdem da"
    assert h.line.status().details["sms_store"] == "not readable"


async def test_media_message_arrives_with_a_note(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.receive(ANNA, "Photo", mime="image/jpeg")
    msg = (await h.inbox(1))[0].message
    assert msg.body == "Photo"
    assert msg.meta["media_type"] == "image/jpeg"
    assert msg.note and "picture" in msg.note


HOSTILE = [
    "it's \"quoted\" and 'single'",
    "$(reboot); reboot; `reboot` && reboot | reboot > /sdcard/x",
    "Emoji 😀👍🏽 and ümlauts € \\ backslash",
    "line one\nline two\n\nline four\ttab",
    "$HOME ${PATH} $((1+1)) ~ * ? [a] # comment",
]


async def test_outbound_goes_through_the_ui_exactly(phone_line: Any) -> None:
    h = await phone_line()
    ids = []
    for i, body in enumerate(HOSTILE):
        ids.append(await h.send(body, rid=f"r{i}"))
        await h.state(ids[-1], OutboxState.SENT)
    assert [s.text for s in h.phone.sent] == HOSTILE
    assert all(s.recipients == (ANNA,) for s in h.phone.sent)
    assert h.phone.rebooted == 0
    # Only our commands ran: no `reboot`, no stray words turned into commands.
    ran = {argv[0] for argv in h.phone.executed}
    assert ran <= {
        "getprop",
        "pm",
        "pidof",
        "settings",
        "dumpsys",
        "svc",
        "input",
        "am",
        "uiautomator",
        "cat",
        "content",
        "monkey",
    }, ran
    starts = [argv for argv in h.phone.executed if argv[:2] == ["am", "start"]]
    assert [a[a.index("sms_body") + 1] for a in starts] == HOSTILE
    taps = [argv for argv in h.phone.executed if argv[:2] == ["input", "tap"]]
    assert taps == [["input", "tap", "1017", "2169"]] * len(HOSTILE)
    # Sent through the UI, the texts are in the conversation, and the phone went home.
    conv = h.phone.conversation_of(ANNA)
    assert conv is not None and [m.text for m in conv.history if m.sender is None] == HOSTILE
    await until(lambda: h.phone.screen == "home", what="back home after sending")


async def test_outbound_to_a_group_addresses_its_members(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.receive(BEN, "Hallo Gruppe", group="Team", members=(BEN, CARLA))
    h.phone.receive(CARLA, "Hallo", group="Team", members=(BEN, CARLA))
    rows = await h.inbox(2)
    group = rows[0].message.conversation
    row_id = await h.send("Antwort an alle", dest=group)
    await h.state(row_id, OutboxState.SENT)
    assert h.phone.sent[-1].text == "Antwort an alle"
    assert set(h.phone.sent[-1].recipients) == {BEN, CARLA}


async def test_reply_to_a_name_fails_in_plain_words(phone_line: Any) -> None:
    h = await phone_line()
    row_id = await h.send("hi", dest="ACMEBANK")
    row = await h.state(row_id, OutboxState.FAILED)
    assert row.error and "name, not a phone number" in row.error
    assert h.phone.sent == []


async def test_layout_changed_is_an_error_not_a_blind_tap(phone_line: Any) -> None:
    h = await phone_line(max_send_attempts=20)
    h.phone.faults.layout_changed = True
    row_id = await h.send("bitte nicht blind tippen")
    event = await h.event("layout")
    assert event.severity == Severity.ERROR and "nothing was sent" in event.text
    row = await h.store.outbox.get(row_id)
    assert row is not None and row.state in (OutboxState.QUEUED, OutboxState.SENDING)
    assert not any(argv[:2] == ["input", "tap"] for argv in h.phone.executed)
    assert h.phone.sent == []
    # Messages fixed (or Textbridge updated): the queued text goes, once.
    h.phone.faults.layout_changed = False
    await h.state(row_id, OutboxState.SENT)
    assert [s.text for s in h.phone.sent] == ["bitte nicht blind tippen"]
    await h.event("layout-resolved")


async def test_locked_phone_keeps_the_message_queued(phone_line: Any) -> None:
    h = await phone_line(max_send_attempts=50)
    h.phone.locked = True
    event = await h.event("locked")
    assert "locked" in event.text and "Unlock" in event.text
    await h.line_state(LineState.DEGRADED)
    row_id = await h.send("nach dem Entsperren")
    await asyncio.sleep(1.0)
    row = await h.store.outbox.get(row_id)
    assert row is not None and row.state == OutboxState.QUEUED
    assert h.phone.sent == []
    # Inbound still works while locked: notifications are there.
    h.phone.receive(ANNA, "auch gesperrt lesbar")
    assert (await h.inbox(1))[0].message.body == "auch gesperrt lesbar"
    h.phone.locked = False
    await h.state(row_id, OutboxState.SENT)
    assert [s.text for s in h.phone.sent] == ["nach dem Entsperren"]
    await h.event("locked-resolved")


async def test_locked_between_check_and_send_is_caught_before_any_tap(phone_line: Any) -> None:
    h = await phone_line(health_interval=60.0, max_send_attempts=50)
    h.phone.locked = True  # the health check has not run again yet
    row_id = await h.send("gesperrt")
    await h.event("locked")
    row = await h.store.outbox.get(row_id)
    assert row is not None and row.state == OutboxState.QUEUED
    assert not any(argv[:2] == ["input", "tap"] for argv in h.phone.executed)


async def test_disconnect_before_the_tap_requeues_and_sends_once(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.faults.disconnect_on = "am start"
    row_id = await h.send("kurz weg")
    await h.event("unplugged")
    await h.state(row_id, OutboxState.SENT, timeout=30)
    assert [s.text for s in h.phone.sent] == ["kurz weg"]
    await h.event("unplugged-resolved")


async def test_disconnect_during_the_tap_is_ambiguous_never_resent(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.faults.disconnect_on = "input tap"
    h.phone.faults.after_effect = True  # the tap reached the phone, the answer did not
    row_id = await h.send("vielleicht weg")
    row = await h.state(row_id, OutboxState.AMBIGUOUS)
    assert row.error and "could not see whether" in row.error
    assert [s.text for s in h.phone.sent] == ["vielleicht weg"]
    await h.line_state(LineState.READY, timeout=30)
    await asyncio.sleep(1.0)
    assert len(h.phone.sent) == 1
    still = await h.store.outbox.get(row_id)
    assert still is not None and still.state == OutboxState.AMBIGUOUS


async def test_tap_that_does_nothing_is_not_counted_as_sent(phone_line: Any) -> None:
    h = await phone_line(max_send_attempts=2)
    h.phone.faults.tap_ignored = True
    row_id = await h.send("klemmt")
    row = await h.state(row_id, OutboxState.FAILED, timeout=30)
    assert row.error and "still in Google Messages' compose box" in row.error
    assert h.phone.sent == []


async def test_disconnect_mid_poll_then_recovery_misses_nothing(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.receive(ANNA, "vorher")
    await h.inbox(1)
    h.phone.faults.disconnect_on = "dumpsys notification"
    h.phone.faults.after_effect = True
    h.phone.receive(BEN, "waehrend der Trennung")
    event = await h.event("unplugged")
    assert "USB" in event.text or "phone" in event.text
    rows = await h.inbox(2, timeout=30)
    assert sorted(r.message.body for r in rows) == ["vorher", "waehrend der Trennung"]
    await h.event("unplugged-resolved")


async def test_unplugged_cable_then_plugged_back(phone_line: Any, adb_device: Any) -> None:
    h = await phone_line()
    adb_device.server.unplug()
    h.phone.receive(CARLA, "nach dem Einstecken")
    rows = await h.inbox(1, timeout=30)
    assert rows[0].message.body == "nach dem Einstecken"


async def test_unauthorized_until_allowed_on_the_phone(phone_line: Any, adb_device: Any) -> None:
    adb_device.phone.auto_accept = False
    h = await phone_line(wait=False)
    event = await h.event("unauthorized")
    assert event.severity == Severity.ERROR
    assert "Allow" in event.text and "USB debugging" in event.text
    assert h.line.status().state == LineState.DOWN
    await until(lambda: adb_device.phone.pending_key is not None, what="the Allow question")
    # Our key: created at first use, private half 0600, the phone was offered its public half.
    key = adb_device.key_path
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    pub = key.with_name(key.name + ".pub").read_bytes()
    assert adb_device.phone.pending_key == pub
    adb_device.phone.accept_pending_key()
    await h.event("unauthorized-resolved", timeout=30)
    await h.line_state(LineState.READY, timeout=30)
    # From now on the signature alone is enough: no new question on the phone.
    before = adb_device.server.auth_ok
    adb_device.server.unplug()
    await until(lambda: adb_device.server.auth_ok > before, timeout=30, what="re-auth")
    assert adb_device.phone.pending_key is None


async def test_a_revoked_key_asks_again(phone_line: Any, adb_device: Any) -> None:
    h = await phone_line()
    adb_device.phone.auto_accept = False
    adb_device.phone.revoke_keys()
    failed = adb_device.server.auth_failed
    adb_device.server.unplug()
    await h.event("unauthorized", timeout=30)
    assert adb_device.server.auth_failed > failed  # the old signature was checked and refused


async def test_offline_device_is_reported(phone_line: Any, adb_device: Any) -> None:
    adb_device.phone.faults.offline = True
    h = await phone_line(wait=False)
    event = await h.event("offline", timeout=30)
    assert event.severity == Severity.ERROR and "offline" in event.text
    assert h.line.status().state == LineState.DOWN
    adb_device.phone.faults.offline = False
    await h.event("offline-resolved", timeout=30)


async def test_messages_crash_is_recovered_and_nothing_lost(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.crash_messages()
    h.phone.receive(ANNA, "als Messages abgestuerzt war")
    rows = await h.inbox(1, timeout=30)
    assert rows[0].message.body == "als Messages abgestuerzt war"
    assert int(h.line.status().details["count_messages_restarts"]) >= 1


async def test_messages_that_keeps_crashing_is_reported(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.faults.crash_again = True
    h.phone.crash_messages()
    event = await h.event("messages-stopped", timeout=30)
    assert "keeps stopping" in event.text
    await h.line_state(LineState.DEGRADED)
    h.phone.faults.crash_again = False
    await h.event("messages-stopped-resolved", timeout=30)


async def test_messages_not_default_sms_app(phone_line: Any, adb_device: Any) -> None:
    adb_device.phone.faults.default_sms = "com.android.mms"
    h = await phone_line(wait=False)
    event = await h.event("messages", timeout=30)
    assert "default SMS app" in event.text
    assert h.line.status().state == LineState.DOWN
    adb_device.phone.faults.default_sms = "com.google.android.apps.messaging"
    await h.event("messages-resolved", timeout=30)
    await h.line_state(LineState.READY, timeout=30)


async def test_messages_not_installed(phone_line: Any, adb_device: Any) -> None:
    adb_device.phone.faults.messages_installed = False
    h = await phone_line(wait=False)
    event = await h.event("messages", timeout=30)
    assert "not installed" in event.text


async def test_parcelled_notifications_are_reported_not_guessed(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.faults.parcelled_notifications = True
    h.phone.receive(ANNA, "versteckt")
    event = await h.event("unreadable")
    assert event.severity == Severity.WARNING
    assert await h.store.inbox.pending() == []


async def test_interrupted_send_from_a_previous_run_becomes_ambiguous(
    phone_line: Any, tmp_path: Any
) -> None:
    h = await phone_line(start=False)
    row_id = await h.send("vor dem Absturz")
    await h.store.outbox.mark_sending(row_id)
    await h.store.close()
    from appliance.store import Store

    h.store = await Store.open(tmp_path / "store0.db")
    h.line.store = h.store
    await h.line.start()
    row = await h.state(row_id, OutboxState.AMBIGUOUS)
    assert row.error
    await asyncio.sleep(0.5)
    assert h.phone.sent == []


async def test_messages_wait_while_unauthorized_and_arrive_after_allow(
    phone_line: Any, adb_device: Any
) -> None:
    adb_device.phone.auto_accept = False
    h = await phone_line(wait=False)
    await h.event("unauthorized")
    h.phone.receive(ANNA, "vor dem Erlauben")
    row_id = await h.send("raus nach dem Erlauben")
    await asyncio.sleep(0.5)
    assert await h.store.inbox.pending() == [] and h.phone.sent == []
    await until(lambda: adb_device.phone.pending_key is not None, what="the Allow question")
    adb_device.phone.accept_pending_key()
    assert (await h.inbox(1, timeout=30))[0].message.body == "vor dem Erlauben"
    await h.state(row_id, OutboxState.SENT, timeout=30)


async def test_outbound_waits_while_messages_is_not_default(
    phone_line: Any, adb_device: Any
) -> None:
    adb_device.phone.faults.default_sms = "com.android.mms"
    h = await phone_line(wait=False)
    await h.event("messages")
    row_id = await h.send("spaeter")
    await asyncio.sleep(0.5)
    row = await h.store.outbox.get(row_id)
    assert row is not None and row.state == OutboxState.QUEUED and h.phone.sent == []
    adb_device.phone.faults.default_sms = "com.google.android.apps.messaging"
    await h.state(row_id, OutboxState.SENT, timeout=30)


async def test_group_reply_before_members_are_known_fails_clearly(phone_line: Any) -> None:
    h = await phone_line()
    row_id = await h.send("an wen?", dest="group:0123456789abcdef")
    row = await h.state(row_id, OutboxState.FAILED)
    assert row.error and "members" in row.error


async def test_group_reply_with_members_from_the_bridge(phone_line: Any) -> None:
    h = await phone_line()
    row_id = await h.send("neue Gruppe", dest="group:feedfacecafebeef", members=[BEN, CARLA])
    await h.state(row_id, OutboxState.SENT)
    assert set(h.phone.sent[-1].recipients) == {BEN, CARLA}


async def test_bodies_never_reach_the_log(phone_line: Any, caplog: Any) -> None:
    caplog.set_level("DEBUG", logger="appliance")
    h = await phone_line()
    h.phone.receive(ANNA, "geheimer Eingang 4711")
    await h.inbox(1)
    row_id = await h.send("geheimer Ausgang 4712")
    await h.state(row_id, OutboxState.SENT)
    ours = [r for r in caplog.records if r.name.startswith("appliance")]
    assert ours, "the line logs something"
    text = "\n".join(r.getMessage() for r in ours)
    assert "4711" not in text and "4712" not in text
    assert ANNA not in text  # numbers only masked


async def test_screen_kept_on_and_woken_before_sending(phone_line: Any) -> None:
    h = await phone_line()
    assert h.phone.stay_on  # `svc power stayon usb` at connect
    h.phone.awake = False  # someone pressed the power button
    row_id = await h.send("aufwachen")
    await h.state(row_id, OutboxState.SENT)
    assert h.phone.sent[-1].text == "aufwachen"


async def test_multipart_row_is_sent_once_with_every_part_marked(phone_line: Any) -> None:
    h = await phone_line()
    row, _ = await h.store.outbox.enqueue(
        OutboundRequest("multi", "phone", ANNA, "x" * 400, "@mum:test"), 3
    )
    h.line.wake()
    done = await h.state(row.id, OutboxState.SENT)
    assert [p.state for p in done.parts] == [PartState.SENT] * 3
    assert [s.text for s in h.phone.sent] == ["x" * 400]


async def test_stop_is_quick_even_when_the_phone_hangs(phone_line: Any) -> None:
    h = await phone_line(command_timeout=30.0)
    h.phone.faults.hang_on = "dumpsys notification"
    await until(lambda: h.phone.hanging > 0, what="a poll stuck on the phone")
    started = asyncio.get_running_loop().time()
    await h.line.stop()
    assert asyncio.get_running_loop().time() - started < 3.0
    h.phone.release()


async def test_screen_gone_after_the_tap_is_ambiguous_not_resent(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.faults.tap_goes_home = True
    row_id = await h.send("wohin damit?")
    row = await h.state(row_id, OutboxState.AMBIGUOUS)
    assert row.error and "compose box was gone" in row.error
    await asyncio.sleep(1.0)
    taps = [argv for argv in h.phone.executed if argv[:2] == ["input", "tap"]]
    assert len(taps) == 1  # never tapped a second time on its own


async def test_traffic_both_ways_at_once(phone_line: Any) -> None:
    h = await phone_line()
    ids = [await h.send(f"raus {i}", dest=CARLA if i % 2 else BEN, rid=f"t{i}") for i in range(6)]
    for i in range(20):
        h.phone.receive(ANNA, f"rein {i}", at=1_790_000_000_000 + i, rcs=i % 3 != 0)
        await asyncio.sleep(0.02)
    rows = await h.inbox(20, timeout=30)
    assert sorted(r.message.body for r in rows) == sorted(f"rein {i}" for i in range(20))
    for row_id in ids:
        await h.state(row_id, OutboxState.SENT, timeout=30)
    assert sorted(s.text for s in h.phone.sent) == sorted(f"raus {i}" for i in range(6))
    # Per conversation, in the order they were written.
    to_ben = [s.text for s in h.phone.sent if s.recipients == (BEN,)]
    assert to_ben == ["raus 0", "raus 2", "raus 4"]


async def test_group_reply_reaches_every_member_when_only_one_has_written(
    phone_line: Any,
) -> None:
    """Issue 18: one member wrote, the reply went to that member alone as a 1:1 text. The
    members come from the phone's conversation (its telephony thread), not from senders."""
    h = await phone_line()
    h.phone.receive(BEN, "Group hello", group="Family Weekend", members=(BEN, CARLA))
    (row,) = await h.inbox(1)
    assert row.message.meta["members"] == sorted([BEN, CARLA])
    assert row.message.meta["members_complete"] is True
    row_id = await h.send("Antwort an alle", dest=row.message.conversation)
    await h.state(row_id, OutboxState.SENT)
    assert set(h.phone.sent[-1].recipients) == {BEN, CARLA}
    conv = h.phone.conversation_of(BEN, CARLA, title="Family Weekend")
    assert conv is not None and conv.history[-1].text == "Antwort an alle"


async def test_group_reply_is_refused_when_the_phone_does_not_show_the_members(
    phone_line: Any,
) -> None:
    """Never to a subset: RCS groups the phone keeps out of its conversation list, and two
    groups that both fit what is known, get FAILED with words saying why and what to do."""
    h = await phone_line()
    h.phone.faults.rcs_threads_hidden = True
    h.phone.receive(BEN, "Group hello", group="Family Weekend", members=(BEN, CARLA))
    (row,) = await h.inbox(1)
    assert row.message.meta["members"] == [BEN]
    assert row.message.meta["members_complete"] is False
    row_id = await h.send("an wen?", dest=row.message.conversation)
    failed = await h.state(row_id, OutboxState.FAILED)
    assert failed.error is not None
    assert "private text" in failed.error and "on the phone" in failed.error
    assert h.phone.sent == []

    # Readable, but two groups with Ben whose last message is the same: no guess either.
    h.phone.faults.rcs_threads_hidden = False
    h.phone.receive(BEN, "Wer kommt?", group="Chor", members=(BEN, ANNA))
    h.phone.receive(BEN, "Wer kommt?", group="Team", members=(BEN, CARLA))
    rows = await h.inbox(3)
    chor = next(r for r in rows if r.message.meta["group_name"] == "Chor")
    assert chor.message.meta["members_complete"] is False
    row_id = await h.send("ich", dest=chor.message.conversation, rid="r2")
    await h.state(row_id, OutboxState.FAILED)
    assert h.phone.sent == []


async def test_a_sent_row_says_whether_messages_sent_rcs_or_sms(phone_line: Any) -> None:
    """The send button's description tells: the send status shows the real network."""
    h = await phone_line()
    h.phone.receive(ANNA, "per RCS", rcs=True)
    h.phone.receive(BEN, "per SMS", rcs=False)
    await h.inbox(2)
    rcs = await h.send("an Anna", dest=ANNA, rid="r1")
    sms = await h.send("an Ben", dest=BEN, rid="r2")
    assert (await h.state(rcs, OutboxState.SENT)).request.meta["network"] == "rcs"
    assert (await h.state(sms, OutboxState.SENT)).request.meta["network"] == "sms"


async def test_a_group_that_grew_is_read_again_before_a_reply(phone_line: Any) -> None:
    h = await phone_line()
    h.phone.receive(BEN, "Hallo", group="Chor", members=(BEN, CARLA))
    (first,) = await h.inbox(1)
    assert first.message.meta["members"] == sorted([BEN, CARLA])
    conv = h.phone.conversation_of(BEN, CARLA, title="Chor")
    assert conv is not None
    conv.members = (BEN, CARLA, ANNA)  # Anna was added on the phone, and writes
    h.phone.receive(ANNA, "Ich bin neu", group="Chor", members=conv.members)
    rows = await h.inbox(2)
    new = next(r for r in rows if r.message.sender == ANNA)
    assert new.message.meta["members"] == sorted([ANNA, BEN, CARLA])
    row_id = await h.send("Willkommen", dest=new.message.conversation)
    await h.state(row_id, OutboxState.SENT)
    assert set(h.phone.sent[-1].recipients) == {ANNA, BEN, CARLA}


async def test_stop_right_after_a_wake_ends(phone_line: Any) -> None:
    """As the SMS line's: a wake in the stop's loop iteration must not keep the sender
    going (asyncio.wait_for on 3.11 swallowed that cancellation)."""
    h = await phone_line()
    await asyncio.sleep(0.5)  # the sender is idle, waiting for a wake
    h.line.wake()
    await asyncio.sleep(0)
    stop = asyncio.create_task(h.line.stop())
    done, _ = await asyncio.wait([stop], timeout=3.0)
    if not done:
        stop.cancel()  # reaches the stuck sender, so the fixture's stop can end
        with contextlib.suppress(BaseException):
            await stop
    assert done, "PhoneLine.stop() did not end"
