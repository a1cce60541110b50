"""Reading contacts from vCards (what phones export: one .vcf with many cards).

Only what the bridge needs: the name to show (FN, else N) and the phone numbers (TEL).
Handles folded lines, vCard 2.1 quoted-printable, grouped properties ("item1.TEL") and
the escapes of vCard 3/4; anything else in a card is ignored.
"""

from __future__ import annotations

import quopri
import re
from dataclasses import dataclass

_BEGIN = re.compile(r"^BEGIN:VCARD\s*$", re.IGNORECASE)
_END = re.compile(r"^END:VCARD\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Card:
    name: str
    numbers: tuple[str, ...]


def looks_like_vcard(text: str) -> bool:
    return "BEGIN:VCARD" in text.upper()


def _unfold(text: str) -> list[str]:
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += raw[1:]
        elif lines and lines[-1].endswith("=") and "QUOTED-PRINTABLE" in lines[-1].upper():
            # vCard 2.1 soft line break inside a quoted-printable value.
            lines[-1] = lines[-1][:-1] + raw
        else:
            lines.append(raw)
    return lines


def _unescape(value: str) -> str:
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append("\n" if nxt in "nN" else nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _value(params: list[str], raw: str) -> str:
    upper = [p.upper() for p in params]
    if "ENCODING=QUOTED-PRINTABLE" in upper or "QUOTED-PRINTABLE" in upper:
        charset = "utf-8"
        for p in params:
            if p.upper().startswith("CHARSET="):
                charset = p.split("=", 1)[1]
        try:
            return quopri.decodestring(raw.encode("ascii", "replace")).decode(charset, "replace")
        except LookupError:
            return quopri.decodestring(raw.encode("ascii", "replace")).decode("utf-8", "replace")
    return _unescape(raw)


def parse(text: str) -> list[Card]:
    cards: list[Card] = []
    inside = False
    fn = ""
    n = ""
    numbers: list[str] = []
    for line in _unfold(text):
        if _BEGIN.match(line):
            inside, fn, n, numbers = True, "", "", []
            continue
        if _END.match(line):
            if inside:
                name = fn.strip() or n.strip()
                if name and numbers:
                    cards.append(Card(name=name, numbers=tuple(numbers)))
            inside = False
            continue
        if not inside or ":" not in line:
            continue
        head, raw = line.split(":", 1)
        prop, *params = head.split(";")
        prop = prop.rsplit(".", 1)[-1].upper()  # "item1.TEL" -> "TEL"
        if prop == "FN":
            fn = _value(params, raw)
        elif prop == "N":
            # N is "family;given;additional;prefix;suffix"; shown as "given family".
            parts = [p.strip() for p in _value(params, raw).split(";")]
            family = parts[0] if parts else ""
            given = parts[1] if len(parts) > 1 else ""
            n = " ".join(p for p in (given, family) if p)
        elif prop == "TEL":
            value = _value(params, raw).strip()
            if value.lower().startswith("tel:"):
                value = value[4:]
            if value:
                numbers.append(value)
    return cards
