"""GSM 03.38 (3GPP TS 23.038) default alphabet, its extension table and septet packing.

Encoding is strict (a character outside the alphabet raises ``ValueError``); decoding is
total, because received text comes from arbitrary networks and phones and must never crash
the line.
"""

from __future__ import annotations

ESC = 0x1B

# Index = septet value. Position 0x1B is the escape to the extension table, never a character.
BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(BASIC) == 128

EXTENSION: dict[int, str] = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_ENCODE: dict[str, bytes] = {ch: bytes([i]) for i, ch in enumerate(BASIC) if i != ESC}
_ENCODE.update({ch: bytes([ESC, code]) for code, ch in EXTENSION.items()})


def is_gsm7(text: str) -> bool:
    """True if every character is in the default alphabet or its extension table."""
    return all(ch in _ENCODE for ch in text)


def char_septets(ch: str) -> int:
    """Septets one character costs: 1 (basic), 2 (extension); ValueError if not encodable."""
    try:
        return len(_ENCODE[ch])
    except KeyError:
        raise ValueError(f"character {ch!r} is not in the GSM 7-bit alphabet") from None


def septet_length(text: str) -> int:
    return sum(char_septets(ch) for ch in text)


def encode(text: str) -> bytes:
    """Text to septet values, one per byte (unpacked)."""
    try:
        return b"".join(_ENCODE[ch] for ch in text)
    except KeyError:
        bad = next(ch for ch in text if ch not in _ENCODE)
        raise ValueError(f"character {bad!r} is not in the GSM 7-bit alphabet") from None


def decode(septets: bytes) -> str:
    """Septet values (one per byte, 0-127) to text. Total: never raises for 7-bit values.

    TS 23.038 6.2.1.1: an escape followed by a code the extension table does not define is
    shown as the basic-table character for that code; escape-escape (reserved for a further
    table) and a dangling escape at the end are shown as a space.
    """
    out: list[str] = []
    i = 0
    n = len(septets)
    while i < n:
        s = septets[i] & 0x7F
        i += 1
        if s != ESC:
            out.append(BASIC[s])
            continue
        if i >= n:
            out.append(" ")
            break
        nxt = septets[i] & 0x7F
        i += 1
        if nxt in EXTENSION:
            out.append(EXTENSION[nxt])
        elif nxt == ESC:
            out.append(" ")
        else:
            out.append(BASIC[nxt])
    return "".join(out)


def pack(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets LSB-first into octets, after ``fill_bits`` zero bits.

    Fill bits align the first septet after a user data header to a septet boundary
    (TS 23.040 9.2.3.24).
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError("fill_bits must be 0..6")
    out = bytearray()
    acc = 0
    nacc = fill_bits
    for s in septets:
        if s > 0x7F:
            raise ValueError("septet value out of range")
        acc |= s << nacc
        nacc += 7
        if nacc >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nacc -= 8
    if nacc:
        out.append(acc)
    return bytes(out)


def unpack(data: bytes, count: int, fill_bits: int = 0) -> bytes:
    """Inverse of :func:`pack`: ``count`` septets from ``data`` after ``fill_bits`` bits."""
    if not 0 <= fill_bits <= 6 or count < 0:
        raise ValueError("bad septet count or fill bits")
    if fill_bits + 7 * count > 8 * len(data):
        raise ValueError("not enough data for the septet count")
    out = bytearray()
    acc = 0
    nacc = -fill_bits
    it = iter(data)
    while len(out) < count:
        if nacc < 7:
            b = next(it)
            # A negative count means fill bits still to drop from the first octet.
            acc |= b >> fill_bits if nacc < 0 else b << nacc
            nacc += 8
            continue
        out.append(acc & 0x7F)
        acc >>= 7
        nacc -= 7
    return bytes(out)
