"""Strict SMS PDU codec (3GPP TS 23.040 transfer layer, TS 23.038 alphabets).

All PDUs here carry the SMSC prefix (length octet, then the SMSC address) the way modems print
them for AT+CMGL/AT+CMGR and expect them for AT+CMGS. Every malformed input raises
:class:`PduError`, never IndexError/UnicodeError, because the modem line must be able to
quarantine a bad PDU and go on.

Policies where the spec leaves room:

* Received UCS-2 is decoded as UTF-16-BE (phones send emoji as surrogate pairs); a lone
  surrogate becomes U+FFFD so the text is always a valid, encodable ``str``.
* Unknown GSM-7 escapes decode per TS 23.038 (see :func:`appliance.sms.gsm7.decode`).
* A concatenation element with total 0, seq 0 or seq > total is ignored as TS 23.040
  9.2.3.24.1 says; the part is then delivered on its own rather than lost.
* Two-digit years map to 1990-2089.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from appliance.sms import gsm7


class PduError(ValueError):
    """A PDU (or an encode request) that cannot be represented or parsed."""


@dataclass(frozen=True)
class Concat:
    """Concatenated-SMS information element: 8-bit (IEI 0x00) or 16-bit (IEI 0x08) ref."""

    ref: int
    total: int
    seq: int
    bits: int = 8


@dataclass(frozen=True)
class Deliver:
    """SMS-DELIVER. ``data`` is the user data after the UDH: octets for 8-bit and UCS-2,
    unpacked septet values (one per byte) for GSM-7, since packed septets do not start on
    an octet boundary after a header."""

    smsc: str | None
    sender: str
    sender_type: str
    timestamp_ms: int
    text: str
    encoding: str
    concat: Concat | None
    data: bytes
    pid: int
    dcs: int
    message_class: int | None
    status_report_indication: bool
    more_messages: bool


@dataclass(frozen=True)
class Submit:
    """SMS-SUBMIT as the modem would send it; ``validity`` is set only for the relative
    format."""

    dest: str
    text: str
    encoding: str
    concat: Concat | None
    reference: int
    request_status: bool
    validity: int | None
    smsc: str | None


_COMPLETED = {
    0x00: "delivered",
    0x01: "passed to the phone, but the network could not confirm delivery",
    0x02: "delivered (replaced an earlier message)",
}
_TRYING = {
    0x20: "the network is congested; it is still trying",
    0x21: "the phone is busy; the network is still trying",
    0x22: "the phone was switched off; the network is still trying",
    0x23: "the service was refused for now; the network is still trying",
    0x24: "the requested service quality is not available; the network is still trying",
    0x25: "the phone reported an error; the network is still trying",
}
_PERMANENT = {
    0x40: "rejected by the network: a network error",
    0x41: "rejected by the network: the recipient cannot receive texts",
    0x42: "rejected by the recipient's phone",
    0x43: "rejected by the network: unknown recipient",
    0x44: "rejected by the network: the requested service quality is not available",
    0x45: "rejected by the network: no route to the recipient's network",
    0x46: "not delivered: it expired before the phone could be reached",
    0x47: "not delivered: it was deleted by the sender",
    0x48: "not delivered: it was deleted by the network operator",
    0x49: "not delivered: the network no longer knows the message",
}
_GAVE_UP = {
    0x60: "not delivered: the network was congested and gave up",
    0x61: "not delivered: the phone was busy and the network gave up",
    0x62: "not delivered: the phone stayed switched off and the network gave up",
    0x63: "not delivered: the service was refused and the network gave up",
    0x64: "not delivered: the requested service quality was not available",
    0x65: "not delivered: the phone reported an error and the network gave up",
}


@dataclass(frozen=True)
class StatusReport:
    """SMS-STATUS-REPORT for one submitted part, matched by ``reference`` and ``recipient``."""

    smsc: str | None
    reference: int
    recipient: str
    scts_ms: int
    discharge_ms: int
    status: int

    @property
    def state(self) -> str:
        # TS 23.040 9.2.3.15: bits 6-5 give the class; reserved codes >= 0x80 have no
        # defined meaning, and calling them delivered would hide a failure from a person.
        if self.status <= 0x1F:
            return "delivered"
        if self.status <= 0x3F:
            return "trying"
        return "failed"

    @property
    def detail(self) -> str:
        s = self.status
        if s <= 0x1F:
            return _COMPLETED.get(s, "delivered")
        if s <= 0x3F:
            return _TRYING.get(s, "not delivered yet; the network is still trying")
        if s <= 0x5F:
            return _PERMANENT.get(s, f"rejected by the network (code {s:#04x})")
        if s <= 0x7F:
            return _GAVE_UP.get(s, f"not delivered: the network gave up (code {s:#04x})")
        return f"failed: the network sent an unknown status (code {s:#04x})"


# --- limits (TS 23.040 9.2.3.16, 9.2.3.24) -----------------------------------------------

_GSM7_SINGLE = 160
_GSM7_PART = 153  # 160 minus the 7 septets a 6-octet concatenation UDH occupies
_GSM7_PART16 = 152  # a 7-octet UDH (16-bit reference) occupies 8 septets
_UCS2_SINGLE = 70
_UCS2_PART = 67  # (140 - 6) // 2
_UCS2_PART16 = 66  # (140 - 7) // 2
_OCTET_SINGLE = 140
_OCTET_PART = 134
_OCTET_PART16 = 133
_SR_OCTETS = 143  # 164-octet TPDU minus the smallest status-report header
_MAX_PARTS = 255
_MAX_ADDR_DIGITS = 20  # TP-OA/TP-DA: at most 10 octets of digits

_TON_NAMES = (
    "unknown",
    "international",
    "national",
    "network_specific",
    "subscriber",
    "alphanumeric",
    "abbreviated",
    "reserved",
)
_TON_INTERNATIONAL = 1
_TON_ALPHANUMERIC = 5

_BCD_DIGITS = "0123456789*#abc"
_HEX = re.compile(r"[0-9A-Fa-f]*")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


# --- reading ------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def octet(self, what: str) -> int:
        if self.pos >= len(self.buf):
            raise PduError(f"truncated: missing {what}")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise PduError(f"truncated: {what} needs {n} octets")
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise PduError(f"{len(self.buf) - self.pos} octets of trailing data")


def _to_bytes(pdu: str | bytes) -> bytes:
    if isinstance(pdu, str):
        text = pdu.strip()
        if not _HEX.fullmatch(text):
            raise PduError("not a hex string")
        if len(text) % 2:
            raise PduError("odd number of hex digits")
        raw = bytes.fromhex(text)
    elif isinstance(pdu, bytes | bytearray | memoryview):
        raw = bytes(pdu)
    else:
        raise PduError(f"expected hex str or bytes, got {type(pdu).__name__}")
    if not raw:
        raise PduError("empty PDU")
    return raw


def _bcd_digits(data: bytes, ndigits: int) -> str:
    out: list[str] = []
    for i in range(ndigits):
        nib = (data[i // 2] >> (4 * (i % 2))) & 0x0F
        if nib == 0x0F:
            # Some networks count the filler in the length; it is harmless at the very end.
            if i == ndigits - 1:
                break
            raise PduError("filler nibble inside an address")
        out.append(_BCD_DIGITS[nib])
    return "".join(out)


def _read_smsc(r: _Reader) -> str | None:
    n = r.octet("SMSC length")
    if n == 0:
        return None
    if n > 11:
        raise PduError(f"SMSC length {n} exceeds 11 octets")
    toa = r.octet("SMSC type of address")
    body = r.take(n - 1, "SMSC address")
    ndigits = 2 * len(body)
    if body and body[-1] >> 4 == 0x0F:
        ndigits -= 1
    digits = _bcd_digits(body, ndigits)
    if not digits:
        return None
    return "+" + digits if (toa >> 4) & 0x07 == _TON_INTERNATIONAL else digits


def _read_address(r: _Reader, what: str) -> tuple[str, str]:
    ndigits = r.octet(f"{what} length")
    if ndigits > _MAX_ADDR_DIGITS:
        raise PduError(f"{what} length {ndigits} exceeds {_MAX_ADDR_DIGITS}")
    # Bit 7 of the type of address should be 1 but carries no meaning; a sender that
    # clears it has still said everything needed, so the message is not refused for it.
    toa = r.octet(f"{what} type of address")
    ton = (toa >> 4) & 0x07
    body = r.take((ndigits + 1) // 2, what)
    if ton == _TON_ALPHANUMERIC:
        # The length counts semi-octets actually used by the packed septets.
        septets = gsm7.unpack(body, ndigits * 4 // 7)
        return gsm7.decode(septets), _TON_NAMES[ton]
    digits = _bcd_digits(body, ndigits)
    if ton == _TON_INTERNATIONAL and digits:
        digits = "+" + digits
    return digits, _TON_NAMES[ton]


def _bcd(value: int) -> int:
    return (value % 10) << 4 | (value // 10)


def _read_timestamp(r: _Reader, what: str) -> int:
    raw = r.take(7, what)
    fields: list[int] = []
    for b in raw[:6]:
        lo, hi = b & 0x0F, b >> 4
        if lo > 9 or hi > 9:
            raise PduError(f"{what} has a non-decimal digit")
        fields.append(lo * 10 + hi)
    tz = raw[6]
    tz_tens, tz_units = tz & 0x07, tz >> 4
    if tz_units > 9:
        raise PduError(f"{what} has a non-decimal time zone")
    quarters = tz_tens * 10 + tz_units
    if tz & 0x08:
        quarters = -quarters
    yy, month, day, hour, minute, second = fields
    year = 1900 + yy if yy >= 90 else 2000 + yy
    try:
        local = _dt.datetime(year, month, day, hour, minute, second, tzinfo=_dt.UTC)
    except ValueError as e:
        raise PduError(f"{what} is not a valid date: {e}") from None
    utc = local - _dt.timedelta(minutes=15 * quarters)
    return (utc - _EPOCH) // _dt.timedelta(milliseconds=1)


def _dcs_info(dcs: int) -> tuple[str, int | None]:
    """Alphabet and message class for a TP-DCS octet (TS 23.038 clause 4)."""
    group = dcs >> 4
    if group <= 0x7:
        if dcs & 0x20:
            raise PduError("compressed user data is not supported")
        cls = dcs & 0x03 if dcs & 0x10 else None
        alphabet = (dcs >> 2) & 0x03
        # Reserved alphabet 11 is to be read as the default alphabet.
        return ("gsm7", "8bit", "ucs2", "gsm7")[alphabet], cls
    if group == 0xF:
        return ("8bit" if dcs & 0x04 else "gsm7"), dcs & 0x03
    if group == 0xE:
        return "ucs2", None
    # 1100/1101 message waiting groups are GSM-7; 1000-1011 are reserved and, per
    # TS 23.038, read as the default alphabet.
    return "gsm7", None


def _parse_udh(udh: bytes) -> Concat | None:
    concat: Concat | None = None
    i = 0
    while i < len(udh):
        if i + 2 > len(udh):
            raise PduError("truncated information element in UDH")
        iei, iedl = udh[i], udh[i + 1]
        ie = udh[i + 2 : i + 2 + iedl]
        if len(ie) != iedl:
            raise PduError("information element overruns the UDH")
        i += 2 + iedl
        if iei in (0x00, 0x08):
            if iedl != (3 if iei == 0x00 else 4):
                raise PduError("concatenation element has the wrong length")
            if iei == 0x00:
                ref, bits = ie[0], 8
            else:
                ref, bits = ie[0] << 8 | ie[1], 16
            total, seq = ie[-2], ie[-1]
            if total == 0 or seq == 0 or seq > total:
                continue
            concat = Concat(ref=ref, total=total, seq=seq, bits=bits)
    return concat


def _read_user_data(
    r: _Reader, encoding: str, has_udh: bool, max_octets: int = _OCTET_SINGLE
) -> tuple[str, bytes, Concat | None]:
    udl = r.octet("TP-UDL")
    if encoding == "gsm7":
        max_septets = max_octets * 8 // 7
        if udl > max_septets:
            raise PduError(f"TP-UDL {udl} exceeds {max_septets} septets")
        ud = r.take((udl * 7 + 7) // 8, "user data")
    else:
        if udl > max_octets:
            raise PduError(f"TP-UDL {udl} exceeds {max_octets} octets")
        ud = r.take(udl, "user data")
    concat: Concat | None = None
    header_octets = 0
    if has_udh:
        if not ud:
            raise PduError("UDH indicated but user data is empty")
        header_octets = ud[0] + 1
        if header_octets > len(ud):
            raise PduError("UDH length exceeds the user data")
        concat = _parse_udh(ud[1:header_octets])
    if encoding == "gsm7":
        header_septets = (header_octets * 8 + 6) // 7
        if header_septets > udl:
            raise PduError("UDH length exceeds TP-UDL")
        fill = header_septets * 7 - header_octets * 8
        septets = gsm7.unpack(ud[header_octets:], udl - header_septets, fill)
        return gsm7.decode(septets), septets, concat
    body = ud[header_octets:]
    if encoding == "ucs2":
        if len(body) % 2:
            raise PduError("UCS-2 user data has an odd number of octets")
        return body.decode("utf-16-be", "replace"), body, concat
    return "", body, concat


# --- public decoding ----------------------------------------------------------------------


def decode(pdu: str | bytes) -> Deliver | StatusReport:
    """Decode an SMS-DELIVER or SMS-STATUS-REPORT as listed by the modem (SMSC prefix)."""
    r = _Reader(_to_bytes(pdu))
    smsc = _read_smsc(r)
    first = r.octet("first octet")
    mti = first & 0x03
    if mti == 0x00:
        return _decode_deliver(r, smsc, first)
    if mti == 0x02:
        return _decode_status_report(r, smsc, first)
    raise PduError(f"unexpected message type {mti:#04b} for a received PDU")


def _decode_deliver(r: _Reader, smsc: str | None, first: int) -> Deliver:
    sender, sender_type = _read_address(r, "TP-OA")
    pid = r.octet("TP-PID")
    dcs = r.octet("TP-DCS")
    encoding, cls = _dcs_info(dcs)
    ts = _read_timestamp(r, "TP-SCTS")
    text, data, concat = _read_user_data(r, encoding, bool(first & 0x40))
    r.end()
    return Deliver(
        smsc=smsc,
        sender=sender,
        sender_type=sender_type,
        timestamp_ms=ts,
        text=text,
        encoding=encoding,
        concat=concat,
        data=data,
        pid=pid,
        dcs=dcs,
        message_class=cls,
        status_report_indication=bool(first & 0x20),
        # TP-MMS is inverted: 0 means more messages are waiting at the SC.
        more_messages=not first & 0x04,
    )


def _decode_status_report(r: _Reader, smsc: str | None, first: int) -> StatusReport:
    reference = r.octet("TP-MR")
    recipient, _ = _read_address(r, "TP-RA")
    scts = _read_timestamp(r, "TP-SCTS")
    discharge = _read_timestamp(r, "TP-DT")
    status = r.octet("TP-ST")
    if r.pos < len(r.buf):
        # Optional TP-PI and the fields it announces; anything else is trailing junk.
        pi = r.octet("TP-PI")
        ext = pi
        while ext & 0x80:
            ext = r.octet("TP-PI extension")
        if pi & 0x01:
            r.octet("TP-PID")
        encoding = "gsm7"
        if pi & 0x02:
            dcs = r.octet("TP-DCS")
            # The report's own text is never shown; compressed data only has to be
            # measured (in octets), not refused, so the delivery state still arrives.
            encoding = "8bit" if dcs < 0x80 and dcs & 0x20 else _dcs_info(dcs)[0]
        if pi & 0x04:
            # The report's shorter header leaves room for up to 143 octets.
            _read_user_data(r, encoding, bool(first & 0x40), _SR_OCTETS)
    r.end()
    return StatusReport(
        smsc=smsc,
        reference=reference,
        recipient=recipient,
        scts_ms=scts,
        discharge_ms=discharge,
        status=status,
    )


def decode_submit(pdu: str | bytes) -> Submit:
    """Decode an SMS-SUBMIT as written to AT+CMGS (SMSC prefix included)."""
    r = _Reader(_to_bytes(pdu))
    smsc = _read_smsc(r)
    first = r.octet("first octet")
    if first & 0x03 != 0x01:
        raise PduError("not an SMS-SUBMIT")
    reference = r.octet("TP-MR")
    dest, _ = _read_address(r, "TP-DA")
    r.octet("TP-PID")
    encoding, _ = _dcs_info(r.octet("TP-DCS"))
    vpf = (first >> 3) & 0x03
    validity: int | None = None
    if vpf == 0x02:
        validity = r.octet("TP-VP")
    elif vpf != 0x00:
        # Enhanced and absolute formats are 7 octets; we never send them, only skip them.
        r.take(7, "TP-VP")
    text, _, concat = _read_user_data(r, encoding, bool(first & 0x40))
    r.end()
    return Submit(
        dest=dest,
        text=text,
        encoding=encoding,
        concat=concat,
        reference=reference,
        request_status=bool(first & 0x20),
        validity=validity,
        smsc=smsc,
    )


def tpdu_length(pdu: bytes) -> int:
    """Octets after the SMSC prefix: the <length> AT+CMGS wants."""
    if not pdu:
        raise PduError("empty PDU")
    n = len(pdu) - 1 - pdu[0]
    if n <= 0:
        raise PduError("PDU has no TPDU after the SMSC prefix")
    return n


# --- splitting ----------------------------------------------------------------------------


def _split_gsm7(text: str, part_septets: int = _GSM7_PART) -> list[str]:
    if gsm7.septet_length(text) <= _GSM7_SINGLE:
        return [text]
    parts: list[str] = []
    start = 0
    used = 0
    for i, ch in enumerate(text):
        cost = gsm7.char_septets(ch)
        # An extension character moves whole to the next part; an escape alone would
        # decode to a space.
        if used + cost > part_septets:
            parts.append(text[start:i])
            start, used = i, 0
        used += cost
    parts.append(text[start:])
    return parts


def _units(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _split_ucs2(text: str, part_units: int = _UCS2_PART) -> list[str]:
    # A Python str holds an astral character as one code point, so a surrogate pair can
    # never be cut here: it costs 2 units and moves whole.
    if sum(_units(ch) for ch in text) <= _UCS2_SINGLE:
        return [text]
    parts: list[str] = []
    start = 0
    used = 0
    for i, ch in enumerate(text):
        cost = _units(ch)
        if used + cost > part_units:
            parts.append(text[start:i])
            start, used = i, 0
        used += cost
    parts.append(text[start:])
    return parts


def split(text: str) -> tuple[str, list[str]]:
    """Choose the alphabet and cut ``text`` into SMS parts (TS 23.040 concatenation)."""
    if gsm7.is_gsm7(text):
        return "gsm7", _split_gsm7(text)
    return "ucs2", _split_ucs2(text)


# --- encoding -----------------------------------------------------------------------------


def _encode_bcd(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes(int(digits[i + 1], 16) << 4 | int(digits[i], 16) for i in range(0, len(digits), 2))


def _split_number(number: str, what: str) -> tuple[int, str]:
    """(type of address, digits) for "+49..." or plain digits."""
    toa = 0x91 if number.startswith("+") else 0x81
    digits = number[1:] if number.startswith("+") else number
    if not digits or not digits.isascii() or not digits.isdigit():
        raise PduError(f"{what} {number!r} is not a phone number")
    if len(digits) > _MAX_ADDR_DIGITS:
        raise PduError(f"{what} has more than {_MAX_ADDR_DIGITS} digits")
    return toa, digits


def _encode_smsc(smsc: str | None) -> bytes:
    if smsc is None:
        return b"\x00"
    toa, digits = _split_number(smsc, "SMSC")
    if len(digits) > 20:
        raise PduError("SMSC has more than 20 digits")
    body = _encode_bcd(digits)
    return bytes([len(body) + 1, toa]) + body


def _encode_number(number: str, what: str) -> bytes:
    toa, digits = _split_number(number, what)
    return bytes([len(digits), toa]) + _encode_bcd(digits)


def _is_number(s: str) -> bool:
    digits = s[1:] if s.startswith("+") else s
    return bool(digits) and digits.isascii() and digits.isdigit()


def _encode_alphanumeric(name: str) -> bytes:
    if not name or not gsm7.is_gsm7(name):
        raise PduError(f"alphanumeric sender {name!r} is not GSM 7-bit text")
    septets = gsm7.encode(name)
    if len(septets) > 11:
        raise PduError("alphanumeric sender longer than 11 septets")
    packed = gsm7.pack(septets)
    semi_octets = (len(septets) * 7 + 3) // 4
    return bytes([semi_octets, 0xD0]) + packed


def _encode_timestamp(timestamp_ms: int, tz_quarters: int) -> bytes:
    if not -79 <= tz_quarters <= 79:
        raise PduError("time zone out of range (-79..79 quarter hours)")
    try:
        local = _EPOCH + _dt.timedelta(seconds=timestamp_ms // 1000, minutes=15 * tz_quarters)
    except OverflowError:
        raise PduError("timestamp out of range") from None
    if not 1990 <= local.year <= 2089:
        raise PduError("timestamp outside 1990-2089")
    fields = (local.year % 100, local.month, local.day, local.hour, local.minute, local.second)
    q = abs(tz_quarters)
    tz = (q % 10) << 4 | (q // 10) | (0x08 if tz_quarters < 0 else 0)
    return bytes(_bcd(v) for v in fields) + bytes([tz])


def _udh(ref: int, total: int, seq: int, bits: int = 8) -> bytes:
    if bits == 16:
        return bytes([6, 0x08, 4, (ref >> 8) & 0xFF, ref & 0xFF, total, seq])
    return bytes([5, 0x00, 3, ref & 0xFF, total, seq])


def _user_data(encoding: str, payload: str | bytes, udh: bytes) -> bytes:
    """TP-UDL followed by TP-UD for one part."""
    if encoding == "gsm7":
        assert isinstance(payload, str)
        septets = gsm7.encode(payload)
        header_septets = (len(udh) * 8 + 6) // 7
        fill = header_septets * 7 - len(udh) * 8
        udl = header_septets + len(septets)
        if udl > _GSM7_SINGLE:
            raise PduError("GSM 7-bit part longer than 160 septets")
        return bytes([udl]) + udh + gsm7.pack(septets, fill)
    if encoding == "ucs2":
        assert isinstance(payload, str)
        try:
            body = payload.encode("utf-16-be")
        except UnicodeEncodeError:
            raise PduError("the text contains an invalid character (lone surrogate)") from None
    else:
        assert isinstance(payload, bytes)
        body = payload
    if len(udh) + len(body) > _OCTET_SINGLE:
        raise PduError("part longer than 140 octets")
    return bytes([len(udh) + len(body)]) + udh + body


def _dcs_for(encoding: str) -> int:
    return {"gsm7": 0x00, "8bit": 0x04, "ucs2": 0x08}[encoding]


def _check_octet(value: int, what: str) -> None:
    if not 0 <= value <= 0xFF:
        raise PduError(f"{what} must be 0..255")


def encode_submit(
    dest: str,
    text: str,
    *,
    concat_ref: int = 0,
    request_status: bool = True,
    smsc: str | None = None,
    reference: int = 0,
    validity: int | None = 0xA7,
) -> list[bytes]:
    """SMS-SUBMIT PDUs (SMSC prefix included), one per part of :func:`split`."""
    if not _is_number(dest):
        raise PduError(f"cannot send to {dest!r}: not a phone number")
    _check_octet(reference, "reference")
    if validity is not None:
        _check_octet(validity, "validity")
    encoding, parts = split(text)
    if len(parts) > _MAX_PARTS:
        raise PduError(
            f"the message is too long: it needs {len(parts)} parts, at most {_MAX_PARTS} fit"
        )
    prefix = _encode_smsc(smsc)
    da = _encode_number(dest, "destination")
    first = 0x01
    if validity is not None:
        first |= 0x10
    if request_status:
        first |= 0x20
    vp = b"" if validity is None else bytes([validity])
    out: list[bytes] = []
    for seq, part in enumerate(parts, 1):
        udh = _udh(concat_ref, len(parts), seq) if len(parts) > 1 else b""
        fo = first | (0x40 if udh else 0)
        head = bytes([fo, reference]) + da + bytes([0x00, _dcs_for(encoding)]) + vp
        out.append(prefix + head + _user_data(encoding, part, udh))
    return out


def encode_deliver(
    sender: str,
    text: str,
    *,
    timestamp_ms: int,
    smsc: str | None = "+4915200000000",
    encoding: str | None = None,
    concat_ref: int | None = None,
    tz_quarters: int = 0,
    data: bytes | None = None,
) -> list[bytes]:
    """SMS-DELIVER PDUs as a network would hand them over (for the simulator and tests).

    ``concat_ref`` above 255 selects the 16-bit reference element (IEI 0x08), which some
    networks use, so the receiving side can be tested against both; parts are then one
    septet/unit/octet shorter.
    """
    ref = 0 if concat_ref is None else concat_ref
    if not 0 <= ref <= 0xFFFF:
        raise PduError("concat_ref must be 0..65535")
    bits = 16 if ref > 0xFF else 8
    octet_part = _OCTET_PART16 if bits == 16 else _OCTET_PART
    oa = _encode_number(sender, "sender") if _is_number(sender) else _encode_alphanumeric(sender)
    payloads: list[str | bytes]
    if encoding == "8bit" or (encoding is None and data is not None):
        if data is None:
            raise PduError("8-bit encoding needs data")
        encoding = "8bit"
        if len(data) <= _OCTET_SINGLE:
            payloads = [data]
        else:
            payloads = [data[i : i + octet_part] for i in range(0, len(data), octet_part)]
    else:
        if encoding is None:
            encoding = "gsm7" if gsm7.is_gsm7(text) else "ucs2"
        if encoding == "gsm7":
            if not gsm7.is_gsm7(text):
                raise PduError("text is not GSM 7-bit")
            payloads = list(_split_gsm7(text, _GSM7_PART16 if bits == 16 else _GSM7_PART))
        elif encoding == "ucs2":
            payloads = list(_split_ucs2(text, _UCS2_PART16 if bits == 16 else _UCS2_PART))
        else:
            raise PduError(f"unknown encoding {encoding!r}")
    if len(payloads) > _MAX_PARTS:
        raise PduError(
            f"the message is too long: it needs {len(payloads)} parts, at most {_MAX_PARTS} fit"
        )
    prefix = _encode_smsc(smsc)
    ts = _encode_timestamp(timestamp_ms, tz_quarters)
    dcs = _dcs_for(encoding)
    out: list[bytes] = []
    for seq, payload in enumerate(payloads, 1):
        udh = _udh(ref, len(payloads), seq, bits) if len(payloads) > 1 else b""
        # TP-MMS set: no more messages waiting.
        fo = 0x04 | (0x40 if udh else 0)
        head = bytes([fo]) + oa + bytes([0x00, dcs]) + ts
        out.append(prefix + head + _user_data(encoding, payload, udh))
    return out


def encode_status_report(
    reference: int,
    recipient: str,
    status: int,
    *,
    scts_ms: int,
    discharge_ms: int,
    smsc: str | None = "+4915200000000",
) -> bytes:
    """An SMS-STATUS-REPORT as the network sends it for a submitted part."""
    _check_octet(reference, "reference")
    _check_octet(status, "status")
    return (
        _encode_smsc(smsc)
        + bytes([0x06, reference])
        + _encode_number(recipient, "recipient")
        + _encode_timestamp(scts_ms, 0)
        + _encode_timestamp(discharge_ms, 0)
        + bytes([status])
    )
