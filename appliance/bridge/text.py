"""Turning a Matrix message into the plain text an SMS can carry.

A phone shows characters, nothing else: formatting is reduced to readable text (lists keep
their bullets, links keep their address), and the reply fallback (the quoted original that
clients put in front of a reply, both as "> " lines in `body` and as <mx-reply> in HTML) is
removed, because the recipient would otherwise pay for a copy of the message they sent.
"""

from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser
from typing import Any

_BLOCK = frozenset(
    {"p", "div", "blockquote", "pre", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "table"}
)
_MANY_BLANK = re.compile(r"\n{3,}")


class _TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0  # depth inside <mx-reply>, whose content is the reply fallback
        self._lists: list[list[int]] = []  # a counter per open <ol>, -1 for <ul>
        self._href: list[str | None] = []
        self._link_text: list[int] = []

    def _newline(self) -> None:
        if self.out and not "".join(self.out[-2:]).endswith("\n"):
            self.out.append("\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "mx-reply":
            self._skip += 1
            return
        if self._skip:
            return
        if tag == "br":
            self.out.append("\n")
        elif tag in _BLOCK:
            self._newline()
            if tag == "ol":
                self._lists.append([0])
            elif tag == "ul":
                self._lists.append([-1])
            elif tag == "blockquote":
                self.out.append("> ")
        elif tag == "li":
            self._newline()
            if self._lists and self._lists[-1][0] >= 0:
                self._lists[-1][0] += 1
                self.out.append(f"{self._lists[-1][0]}. ")
            else:
                self.out.append("• ")
        elif tag == "a":
            self._href.append(dict(attrs).get("href"))
            self._link_text.append(len(self.out))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag == "mx-reply":
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag in _BLOCK:
            if tag in ("ol", "ul") and self._lists:
                self._lists.pop()
            self._newline()
        elif tag == "a" and self._href:
            href = self._href.pop()
            start = self._link_text.pop()
            text = "".join(self.out[start:]).strip()
            # A mention or a link whose text is its address needs no repeat; any other
            # link would lose where it points.
            if (
                href
                and not href.startswith("https://matrix.to/")
                and href
                not in (
                    text,
                    f"mailto:{text}",
                    f"http://{text}",
                    f"https://{text}",
                )
            ):
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def html_to_text(formatted: str) -> str:
    parser = _TextOf()
    parser.feed(formatted)
    parser.close()
    text = "".join(parser.out)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _MANY_BLANK.sub("\n\n", text).strip()


def strip_reply_fallback(body: str) -> str:
    """Drop the leading "> " quote block (and the blank line after it) of a reply."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith(">"):
        return body
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    if i < len(lines) and lines[i] == "":
        i += 1
    return "\n".join(lines[i:])


def is_reply(content: dict[str, Any]) -> bool:
    relates = content.get("m.relates_to")
    return isinstance(relates, dict) and isinstance(relates.get("m.in_reply_to"), dict)


def plain_text(content: dict[str, Any]) -> str:
    """The text of an m.text / m.notice / m.emote content as a phone should show it."""
    formatted = content.get("formatted_body")
    if content.get("format") == "org.matrix.custom.html" and isinstance(formatted, str):
        text = html_to_text(formatted)
        if text:
            return text
    body = content.get("body")
    if not isinstance(body, str):
        return ""
    if is_reply(content):
        body = strip_reply_fallback(body)
    return body.strip()


def quote(text: str, limit: int = 60) -> str:
    """A short one-line excerpt for notices: “Hello there…”."""
    one_line = " ".join(text.split())
    if len(one_line) > limit:
        one_line = one_line[: limit - 1].rstrip() + "…"
    return f"“{one_line}”"


def escape(text: str) -> str:
    return html.escape(text, quote=False)


# Joiners that build a written form (emoji sequences, Persian and Indic words): kept.
_JOINERS = frozenset({"\u200c", "\u200d"})


def clean_name(name: str) -> str:
    """A name fit to show as a person or room: no control or invisible format characters
    (bidi overrides and isolates U+202A-202E, U+2066-2069, marks, U+200B, U+FEFF), so a
    name from a vCard or a notification cannot turn a number or a file name around or
    hide what it is; runs of spaces become one. Joiners of emoji and scripts stay."""
    kept = []
    for ch in unicodedata.normalize("NFC", name):
        cat = unicodedata.category(ch)
        if cat[0] == "Z":
            kept.append(" ")
        elif cat[0] != "C" or ch in _JOINERS or 0xE0020 <= ord(ch) <= 0xE007F:
            kept.append(ch)  # (tags U+E0020-E007F spell subdivision flags)
    return " ".join("".join(kept).split())
