"""What a Matrix message becomes as SMS text, and reading contacts from vCards."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from appliance.bridge import contacts
from appliance.bridge.outbound import sms_parts
from appliance.bridge.portal import escape_localpart
from appliance.bridge.text import html_to_text, plain_text, strip_reply_fallback


def test_html_is_reduced_to_readable_text() -> None:
    assert html_to_text("<p>Hello <b>there</b></p><p>second</p>") == "Hello there\nsecond"
    assert html_to_text("a<br>b<br/>c") == "a\nb\nc"
    assert html_to_text("<ol><li>one</li><li>two</li></ol>") == "1. one\n2. two"
    assert html_to_text("<ul><li>x</li></ul>") == "• x"
    assert html_to_text('<a href="https://x.example/a">the list</a>') == (
        "the list (https://x.example/a)"
    )
    assert html_to_text('<a href="https://x.example">https://x.example</a>') == "https://x.example"
    # A mention pill is its name; the matrix.to link is no use on a phone.
    assert html_to_text('<a href="https://matrix.to/#/@a:b">Anna</a> hi') == "Anna hi"
    assert html_to_text("5 &lt; 6 &amp; &quot;ok&quot;") == '5 < 6 & "ok"'
    assert html_to_text('<img alt=":)" src="mxc://x/y">') == ":)"
    assert html_to_text("<script>x</script>") == "x"  # never executed, just text


def test_reply_fallbacks_are_stripped() -> None:
    html = "<mx-reply><blockquote><a>In reply to</a> old</blockquote></mx-reply>new text"
    assert html_to_text(html) == "new text"
    assert strip_reply_fallback("> <@a:b> old\n> older\n\nnew\n> kept") == "new\n> kept"
    assert strip_reply_fallback("no quote") == "no quote"
    reply = {
        "msgtype": "m.text",
        "body": "> <@a:b> old\n\nnew",
        "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}},
    }
    assert plain_text(reply) == "new"
    # A message that merely starts with ">" and is no reply keeps it.
    assert plain_text({"msgtype": "m.text", "body": "> quote of my own"}) == "> quote of my own"


def test_formatted_body_wins_over_body_only_when_it_says_so() -> None:
    assert plain_text({"body": "**x**", "formatted_body": "<b>x</b>"}) == "**x**"
    assert (
        plain_text(
            {"body": "**x**", "format": "org.matrix.custom.html", "formatted_body": "<b>x</b>"}
        )
        == "x"
    )
    assert plain_text({"body": 5}) == ""


@given(st.text(max_size=200))
def test_any_html_gives_text_not_an_exception(raw: str) -> None:
    assert isinstance(html_to_text(raw), str)


def test_sms_parts_follow_the_encoding() -> None:
    assert sms_parts("") == 1
    assert sms_parts("a" * 160) == 1
    assert sms_parts("a" * 161) == 2
    assert sms_parts("ü" * 70) == 1  # in GSM-7
    assert sms_parts("Ж" * 70) == 1  # UCS-2
    assert sms_parts("Ж" * 71) == 2


def test_localparts_are_escaped_and_distinct() -> None:
    assert escape_localpart("ACMEBANK") == "acmebank"
    assert escape_localpart("DHL Paket") == "dhl=20paket"
    assert escape_localpart("Ö") == "=c3=b6"  # case folded first: ACME and Acme are one
    assert escape_localpart("a=b") != escape_localpart("a b")


def test_vcards_of_several_versions() -> None:
    text = (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Anna Beispiel\r\nTEL;TYPE=CELL:+49 151 1234\r\n"
        " 5678\r\nTEL;TYPE=HOME:030 123456\r\nEND:VCARD\r\n"
        "BEGIN:VCARD\nVERSION:4.0\nN:Doe;John;;;\nTEL;VALUE=uri:tel:+1-202-555-0143\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:2.1\nFN;ENCODING=QUOTED-PRINTABLE;CHARSET=UTF-8:J=C3=B6rg=20=\n"
        "M=C3=BCller\nitem1.TEL:0171 7654321\nEND:VCARD\n"
        "BEGIN:VCARD\nFN:Escaped\\, Name\nTEL:1\nEND:VCARD\n"
        "BEGIN:VCARD\nFN:No number\nEND:VCARD\n"
    )
    cards = contacts.parse(text)
    assert cards == [
        contacts.Card("Anna Beispiel", ("+49 151 12345678", "030 123456")),
        contacts.Card("John Doe", ("+1-202-555-0143",)),
        contacts.Card("Jörg Müller", ("0171 7654321",)),
        contacts.Card("Escaped, Name", ("1",)),
    ]
    assert contacts.looks_like_vcard("begin:vcard\n...")
    assert not contacts.looks_like_vcard("hello")
    assert contacts.parse("END:VCARD\nTEL:1\nBEGIN:VCARD") == []


def test_clean_name_drops_bidi_and_invisible_characters_and_keeps_joiners() -> None:
    from appliance.bridge.text import clean_name

    assert clean_name("\u202eOma\u200b Erna\ufeff\u2066\u2067\u2068\u2069") == "Oma Erna"
    assert clean_name("+49\u202e 151\u00a0 1234") == "+49 151 1234"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467 Familie"  # one emoji, ZWJs inside
    assert clean_name(family) == family
    assert (
        clean_name("\u0645\u06cc\u200c\u062e\u0648\u0627\u0645")
        == "\u0645\u06cc\u200c\u062e\u0648\u0627\u0645"
    )
    flag = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    assert clean_name(f"{flag} Fans\n\t\x00") == f"{flag} Fans"
    assert clean_name("\u202e\u200b") == ""
