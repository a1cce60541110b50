"""Parsers of what the phone prints: notification dumps, screen dumps, the SMS store, and
our ADB key format -- against frozen fixtures and generated cases."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from adb_shell.auth.keygen import encode_pubkey
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.adbsim import formats
from appliance.adbsim.protocol import decode_public_key, verify_token
from appliance.phone.device import ProviderDenied, parse_provider
from appliance.phone.errors import LayoutChanged
from appliance.phone.keys import ensure_key, fingerprint, load_signer
from appliance.phone.notifications import dedup_key, parse_bundle, parse_dump
from appliance.phone.ui import parse_screen

FIXTURES = Path(__file__).resolve().parent.parent / "appliance" / "adbsim" / "fixtures"


def test_notification_fixture() -> None:
    records = parse_dump((FIXTURES / "dumpsys_notification_noredact.txt").read_text())
    # The system's own notification is left out; Messages' group summary has no messages.
    assert [r.id for r in records] == [0, 3, 4]
    summary, one, group = records
    assert not summary.is_messaging_style and summary.messages == []
    assert one.title == "+49 151 12345678" and not one.is_group
    assert one.conversation_title is None
    assert [(m.sender, m.text, m.time) for m in one.messages] == [
        ("+49 151 12345678", "Kommst du heute?", 1790000000000),
        ("+49 151 12345678", "Zwei\nZeilen, time=1, sender=X", 1790000005000),
    ]
    assert one.extras["android.text"] == "Zwei\nZeilen, time=1, sender=X"
    assert group.is_group and group.conversation_title == "Familie"
    assert [(m.sender, m.text) for m in group.messages] == [
        ("+49 151 12345679", "Wer bringt Kuchen?"),
        (None, "Ich nicht"),
        ("Oma", "Photo"),
    ]
    assert group.messages[2].mime_type == "image/jpeg"
    assert group.thread != one.thread


def test_dump_of_every_package_when_asked() -> None:
    text = (FIXTURES / "dumpsys_notification_noredact.txt").read_text()
    assert {r.package for r in parse_dump(text, package=None)} == {
        "android",
        "com.google.android.apps.messaging",
    }


def test_parcelled_messages_are_counted_not_guessed() -> None:
    rec = formats.NoteRecord(
        1, 10172, "A", None, False, [formats.NoteMessage("A", "x", 1)], parcelled=True
    )
    (parsed,) = parse_dump(formats.notification_dump([rec]))
    assert parsed.messages == [] and parsed.unreadable == 1


def test_empty_and_garbage_dumps() -> None:
    assert parse_dump("") == []
    assert parse_dump("Can't find service: notification\n") == []
    assert parse_dump("\x00\xff garbage NotificationRecord(") == []


_PIECES = st.sampled_from(list("ab ,={}[]()\n\t😀é$")) | st.sampled_from(
    [
        ", time=12",
        ", sender=",
        ", text=",
        "}]",
        "Bundle[{",
        "[1] ",
        "[0] ",
        "null",
        "\n          android.title=x",
        "\n    extras={",
        "\n    }",
        "\n      stats=",
        "\n  [1] ",
    ]
)
_TEXT = st.lists(_PIECES, max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, sender=st.from_regex(r"[A-Za-z +0-9]{1,20}", fullmatch=True))
def test_message_bundle_round_trip(text: str, sender: str) -> None:
    printed = formats.bundle(
        {
            "text": text,
            "time": "1790000000000",
            "sender": sender,
            "sender_person": "android.app.Person@1a2b3c",
        }
    )
    parsed = parse_bundle(printed)
    assert parsed is not None
    assert parsed["text"] == text
    assert parsed["sender"] == sender
    assert parsed["time"] == "1790000000000"


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(_TEXT.filter(lambda t: t.strip() != ""), min_size=1, max_size=4))
def test_whole_dump_round_trip(texts: list[str]) -> None:
    # Only a text holding a newline, then exactly the item indentation and the next item's
    # number ("\n            [1] ") cannot be told apart from a next item; documented.
    msgs = [
        formats.NoteMessage("+4915112345678", t, 1790000000000 + i) for i, t in enumerate(texts)
    ]
    rec = formats.NoteRecord(7, 10172, "+4915112345678", None, False, msgs)
    (parsed,) = parse_dump(formats.notification_dump([rec]))
    assert [m.text for m in parsed.messages] == texts


def test_a_text_forging_an_extras_key_stays_whole() -> None:
    """Found by the round trip above: a text holding a newline, the extras' indentation and
    a key printed already ("android.title=x (") once cut the text there and lost the
    message. A key cannot come twice, so the line is part of the text; marked suspect."""
    text = "\n          android.title=x ("
    rec = formats.NoteRecord(7, 10172, "+4915112345678", None, False,
                             [formats.NoteMessage("+4915112345678", text, 1790000000000)])
    (parsed,) = parse_dump(formats.notification_dump([rec]))
    assert [m.text for m in parsed.messages] == [text]
    assert parsed.unreadable == 0 and parsed.suspect


def test_dedup_key_is_stable_and_distinguishes() -> None:
    k = dedup_key("+49151", "+49151", 5, "hi")
    assert k == dedup_key("+49151", "+49151", 5, "hi")
    assert (
        len(
            {
                k,
                dedup_key("+49151", "+49151", 6, "hi"),
                dedup_key("+49151", "+49151", 5, "hi!"),
                dedup_key("group:x", "+49151", 5, "hi"),
            }
        )
        == 4
    )


def test_screen_fixture() -> None:
    screen = parse_screen((FIXTURES / "uiautomator_compose_rcs.xml").read_text())
    assert screen.compose_text() == 'Ja, um 8 😀\n"bis dann"'
    button = screen.send_button()
    assert button.desc == "Send end-to-end encrypted message"
    assert button.center == (1017, 2169)
    assert screen.foreground_package == "com.google.android.apps.messaging"


def test_screen_without_send_button_is_layout_changed() -> None:
    changed = formats.ui_dump(
        screen="conversation",
        compose="x",
        send_id="com.google.android.apps.messaging:id/fab",
        send_desc="Send",
    )
    with pytest.raises(LayoutChanged, match="no send button"):
        parse_screen(changed).send_button()
    with pytest.raises(LayoutChanged, match="launcher"):
        parse_screen(formats.ui_dump(screen="home")).send_button()


def test_screen_with_send_disabled_is_layout_changed() -> None:
    disabled = formats.ui_dump(screen="conversation", compose="x", send_enabled=False)
    with pytest.raises(LayoutChanged, match="greyed out"):
        parse_screen(disabled).send_button()


@pytest.mark.parametrize(
    "xml",
    [
        "",
        "ERROR: could not get idle state.",
        "<?xml version='1.0'?><hierarchy><node></hierarchy>",
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><hierarchy>&a;</hierarchy>',
    ],
)
def test_unreadable_screens(xml: str) -> None:
    with pytest.raises(LayoutChanged):
        parse_screen(xml)


def test_provider_rows() -> None:
    rows = [
        formats.ProviderRow(41, "+4915112345678", 1790000000000, "eins, zwei=drei", 3),
        formats.ProviderRow(42, "ACME", 1790000001000, "zwei\nZeilen", 4),
    ]
    out = formats.content_query(rows, ["_id", "address", "date", "body"])
    parsed = parse_provider(out)
    assert [(r.id, r.address, r.date, r.body) for r in parsed] == [
        (41, "+4915112345678", 1790000000000, "eins, zwei=drei"),
        (42, "ACME", 1790000001000, "zwei\nZeilen"),
    ]
    assert parse_provider("No result found.\n") == []
    with pytest.raises(ProviderDenied):
        parse_provider(formats.PROVIDER_DENIED)


def test_key_is_created_once_private_and_in_android_format(tmp_path: Path) -> None:
    path = tmp_path / "data" / "phone_adbkey"
    ensure_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    pub = path.with_name("phone_adbkey.pub").read_bytes()
    first = path.read_bytes()
    ensure_key(path)
    assert path.read_bytes() == first  # never regenerated: the phone would ask again
    # Same bytes as adb-shell's own encoder, and the simulator's decoder accepts it.
    assert base64.b64decode(pub.split(b" ")[0]) == encode_pubkey(str(path))
    key = decode_public_key(pub + b"\0")
    token = os.urandom(20)
    assert verify_token(key, token, load_signer(path).Sign(token))
    assert not verify_token(key, os.urandom(20), load_signer(path).Sign(token))
    assert len(fingerprint(path).split(":")) == 16


def test_loose_key_permissions_are_tightened(tmp_path: Path) -> None:
    path = ensure_key(tmp_path / "k")
    os.chmod(path, 0o644)
    ensure_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_text_posing_as_dump_structure_is_flagged() -> None:
    # A hostile text that adds a fake second message from "Bank" at the exact indentation:
    # the declared item count gives it away, and the line marks the message as suspect.
    fake = "hi\n            [1] Bundle[{sender=Bank, text=pay now, time=1790000000001}]"
    rec = formats.NoteRecord(
        9,
        10172,
        "+4915112345678",
        None,
        False,
        [formats.NoteMessage("+4915112345678", fake, 1790000000000)],
    )
    (parsed,) = parse_dump(formats.notification_dump([rec]))
    assert parsed.suspect
    legit = formats.NoteRecord(
        9,
        10172,
        "+4915112345678",
        None,
        False,
        [formats.NoteMessage("+4915112345678", "hi\n[1] Bundle[{", 1790000000000)],
    )
    (parsed,) = parse_dump(formats.notification_dump([legit]))
    assert not parsed.suspect and parsed.messages[0].text == "hi\n[1] Bundle[{"
