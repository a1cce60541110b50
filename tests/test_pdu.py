"""SMS PDU codec: hand-built vectors from TS 23.040/23.038, split limits, round-trip properties."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.sms import gsm7, pdu
from appliance.sms.pdu import Concat, Deliver, PduError, StatusReport


def utc_ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp()) * 1000


# --- known vectors, assembled octet by octet from the spec -------------------------------

# The widely published SMS-DELIVER example: SMSC +31624000000, sender +31641600986,
# SCTS 02-08-26 19:37:41 with time zone octet 0x08, 12 septets "How are you?".
CLASSIC = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"


def test_classic_deliver() -> None:
    m = pdu.decode(CLASSIC)
    assert isinstance(m, Deliver)
    assert m.smsc == "+31624000000"
    assert m.sender == "+31641600986"
    assert m.sender_type == "international"
    assert m.text == "How are you?"
    assert m.encoding == "gsm7"
    assert m.concat is None
    assert m.pid == 0 and m.dcs == 0 and m.message_class is None
    # TZ octet 0x08 is swapped semi-octets "80": sign bit set, zero quarters -> UTC.
    assert m.timestamp_ms == utc_ms(2002, 8, 26, 19, 37, 41)
    assert m.status_report_indication is False
    assert m.more_messages is False  # TP-MMS (bit 2) set means no more messages


def test_input_forms_are_equivalent() -> None:
    ref = pdu.decode(CLASSIC)
    assert pdu.decode(f"  {CLASSIC.lower()}\r\n") == ref
    assert pdu.decode(bytes.fromhex(CLASSIC)) == ref


def test_alphanumeric_sender_negative_timezone_no_smsc() -> None:
    # SMSC 00; TP-OA 07 D0 "Test" (7 semi-octets); "hellohello" packed E8329BFD4697D9EC37;
    # SCTS 2026-03-15 10:20:30 at -5h: -20 quarters -> tens 2 | sign 8 = 0xA, units 0.
    vector = "00" "04" "07D0D4F29C0E" "00" "00" "6230510102030A" "0AE8329BFD4697D9EC37"
    m = pdu.decode(vector)
    assert isinstance(m, Deliver)
    assert m.smsc is None
    assert m.sender == "Test"
    assert m.sender_type == "alphanumeric"
    assert m.text == "hellohello"
    assert m.timestamp_ms == utc_ms(2026, 3, 15, 15, 20, 30)


def test_encode_deliver_matches_hand_built_vector() -> None:
    (raw,) = pdu.encode_deliver(
        "Test",
        "hellohello",
        timestamp_ms=utc_ms(2026, 3, 15, 15, 20, 30),
        tz_quarters=-20,
        smsc=None,
    )
    assert raw.hex().upper() == "000407D0D4F29C0E00006230510102030A0AE8329BFD4697D9EC37"


def test_ucs2_emoji_16bit_concat_class0() -> None:
    vector = (
        "0791947122070 0F0".replace(" ", "")
        + "60"  # UDHI | SRI, TP-MMS clear -> more messages waiting
        + "0D91945111325476F8"
        + "00"
        + "18"  # UCS-2, class 0
        + "52211332959540"  # 2025-12-31 23:59:59 +1h
        + "11"
        + "06080412340201"
        + "004800690020D83DDE00"
    )
    m = pdu.decode(vector)
    assert isinstance(m, Deliver)
    assert m.smsc == "+49172270000"
    assert m.sender == "+4915112345678"
    assert m.text == "Hi 😀"
    assert m.encoding == "ucs2"
    assert m.message_class == 0
    assert m.concat == Concat(ref=0x1234, total=2, seq=1, bits=16)
    assert m.status_report_indication is True
    assert m.more_messages is True
    assert m.timestamp_ms == utc_ms(2025, 12, 31, 22, 59, 59)
    assert m.data == bytes.fromhex("004800690020D83DDE00")


def test_gsm7_with_8bit_concat_and_fill_bit() -> None:
    # 6-octet UDH = 48 bits, so one fill bit precedes the first septet; "hellohello"
    # shifted left by one bit is D06536FB8D2EB3D96F. UDL counts 7 header septets + 10.
    vector = (
        "00" "44" "0AA13010325476" "00" "00" "42209221000000"
        "11" "050003A70202" "D06536FB8D2EB3D96F"
    )
    m = pdu.decode(vector)
    assert isinstance(m, Deliver)
    assert m.sender == "0301234567"
    assert m.sender_type == "national"
    assert m.text == "hellohello"
    assert m.concat == Concat(ref=0xA7, total=2, seq=2, bits=8)
    assert m.timestamp_ms == utc_ms(2024, 2, 29, 12, 0, 0)


def test_8bit_data_class1() -> None:
    m = pdu.decode("00" "04" "0481" "2143" "00" "F5" "42209221000000" "04" "010203FF")
    assert isinstance(m, Deliver)
    assert m.sender == "1234"
    assert m.sender_type == "unknown"
    assert m.encoding == "8bit"
    assert m.text == ""
    assert m.data == b"\x01\x02\x03\xff"
    assert m.message_class == 1


def test_extension_and_unknown_escapes_decode_totally() -> None:
    # ESC 0x65 = €, ESC 0x41 (undefined) = basic 'A', ESC ESC = space, dangling ESC = space.
    septets = bytes([0x1B, 0x65, 0x1B, 0x41, 0x1B, 0x1B, 0x61, 0x1B])
    assert gsm7.decode(septets) == "€A a "
    udl = f"{len(septets):02X}"
    vector = "00" "04" "0481" "2143" "00" "00" "42209221000000" + udl + gsm7.pack(septets).hex()
    m = pdu.decode(vector)
    assert isinstance(m, Deliver)
    assert m.text == "€A a "


def test_lone_surrogate_in_ucs2_becomes_replacement_char() -> None:
    m = pdu.decode("00" "04" "0481" "2143" "00" "08" "42209221000000" "04" "D8000041")
    assert isinstance(m, Deliver)
    assert m.text == "\ufffdA"
    m.text.encode("utf-8")  # must not raise later in the pipeline


STATUS_HEAD = "07919471220700F0" "06" "2A" "0D91945111325476F8" "62102030405000" "62102030405100"


@pytest.mark.parametrize(
    ("status", "state", "detail_part"),
    [
        (0x00, "delivered", "delivered"),
        (0x01, "delivered", "could not confirm"),
        (0x02, "delivered", "replaced"),
        (0x1F, "delivered", "delivered"),
        (0x20, "trying", "congested"),
        (0x22, "trying", "the phone was switched off; the network is still trying"),
        (0x3F, "trying", "still trying"),
        (0x41, "failed", "cannot receive"),
        (0x43, "failed", "rejected by the network: unknown recipient"),
        (0x46, "failed", "expired"),
        (0x5A, "failed", "rejected"),
        (0x62, "failed", "switched off and the network gave up"),
        (0x7F, "failed", "gave up"),
        (0x80, "failed", "unknown status"),
        (0xFF, "failed", "unknown status"),
    ],
)
def test_status_report_classes(status: int, state: str, detail_part: str) -> None:
    m = pdu.decode(STATUS_HEAD + f"{status:02X}")
    assert isinstance(m, StatusReport)
    assert m.smsc == "+49172270000"
    assert m.reference == 0x2A
    assert m.recipient == "+4915112345678"
    assert m.scts_ms == utc_ms(2026, 1, 2, 3, 4, 5)
    assert m.discharge_ms == utc_ms(2026, 1, 2, 3, 4, 15)
    assert m.status == status
    assert m.state == state
    assert detail_part in m.detail


def test_status_report_with_parameter_indicator() -> None:
    # TP-PI 0x03: PID and DCS follow, no user data.
    m = pdu.decode(STATUS_HEAD + "00" "03" "00" "00")
    assert isinstance(m, StatusReport) and m.state == "delivered"
    with pytest.raises(PduError):
        pdu.decode(STATUS_HEAD + "00" "03" "00")  # PI promises a DCS that is missing
    # Compressed user data (DCS 0x20) in a report is skipped by its octet length.
    m = pdu.decode(STATUS_HEAD + "46" "06" "20" "02" "ABCD")
    assert isinstance(m, StatusReport) and m.state == "failed"
    # TP-PI 0x04: user data only, DCS defaults to GSM-7; up to 163 septets fit a report.
    ud = gsm7.pack(gsm7.encode("x" * 163)).hex()
    m = pdu.decode(STATUS_HEAD + "00" "04" "A3" + ud)
    assert isinstance(m, StatusReport)
    with pytest.raises(PduError, match="163 septets"):
        pdu.decode(STATUS_HEAD + "00" "04" "A4" + ud + "00")


# The widely published SMS-SUBMIT example: to +46708251358, VP 0xAA, "hellohello".
CLASSIC_SUBMIT = "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"


def test_classic_submit_encodes_byte_exact() -> None:
    parts = pdu.encode_submit("+46708251358", "hellohello", request_status=False, validity=0xAA)
    assert [p.hex().upper() for p in parts] == [CLASSIC_SUBMIT]
    assert pdu.tpdu_length(parts[0]) == len(CLASSIC_SUBMIT) // 2 - 1


def test_multipart_submit_part_with_fill_bit_byte_exact() -> None:
    parts = pdu.encode_submit(
        "+46708251358",
        "a" * 153 + "hellohello",
        concat_ref=0x1A7,  # only the low octet goes into the 8-bit element
        request_status=False,
        validity=0xAA,
    )
    assert len(parts) == 2
    # FO 0x51 = SUBMIT | VPF relative | UDHI; UDL 0x11 = 7 header septets + 10.
    assert parts[1].hex().upper() == (
        "00" "51" "00" "0B916407281553F8" "00" "00" "AA" "11" "050003A70202" "D06536FB8D2EB3D96F"
    )


def test_classic_submit_decodes() -> None:
    s = pdu.decode_submit(CLASSIC_SUBMIT)
    assert s == pdu.Submit(
        dest="+46708251358",
        text="hellohello",
        encoding="gsm7",
        concat=None,
        reference=0,
        request_status=False,
        validity=0xAA,
        smsc=None,
    )


def test_submit_options() -> None:
    (p,) = pdu.encode_submit(
        "0301234567", "x", smsc="+49172270000", reference=0x42, validity=None
    )
    assert p.hex().upper().startswith("07919471220700F0" "21" "42" "0A81" "3010325476" "0000" "01")
    s = pdu.decode_submit(p)
    assert (s.dest, s.reference, s.validity, s.request_status) == ("0301234567", 0x42, None, True)
    assert s.smsc == "+49172270000"
    assert pdu.tpdu_length(p) == len(p) - 8


def test_submit_skips_absolute_validity() -> None:
    s = pdu.decode_submit("00" "19" "00" "0481" "2143" "00" "00" "62102030405000" "0131")
    assert s.validity is None and s.text == "1"


def test_encode_status_report_round_trip() -> None:
    raw = pdu.encode_status_report(
        7, "+4915112345678", 0x22, scts_ms=utc_ms(2026, 5, 1, 8, 0, 0),
        discharge_ms=utc_ms(2026, 5, 1, 8, 0, 9),
    )
    m = pdu.decode(raw)
    assert isinstance(m, StatusReport)
    assert (m.reference, m.recipient, m.status, m.state) == (7, "+4915112345678", 0x22, "trying")
    assert m.scts_ms == utc_ms(2026, 5, 1, 8, 0, 0)
    assert m.discharge_ms == utc_ms(2026, 5, 1, 8, 0, 9)


# --- malformed input ----------------------------------------------------------------------


def _deliver(ud_hex: str, fo: str = "44", dcs: str = "00") -> str:
    return "00" + fo + "0481" "2143" "00" + dcs + "42209221000000" + ud_hex


@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("zz", "hex"),
        ("07 91", "hex"),
        ("079", "odd"),
        (CLASSIC[:-2], "truncated"),
        (CLASSIC + "00", "trailing"),
        (CLASSIC[:20], "truncated"),
        ("0C" + CLASSIC[2:], "SMSC length"),
        (CLASSIC_SUBMIT, "message type"),
        ("0003", "message type"),
        (_deliver("08" "0600050102014142", dcs="04"), "overruns"),  # IE runs past UDHL
        (_deliver("08" "050003010201" "4142" "99", dcs="04"), "trailing"),
        (_deliver("04" "08060003", dcs="04"), "UDH length exceeds"),
        (_deliver("07" "06000401020101", dcs="04"), "concatenation element"),
        (_deliver("00", dcs="08"), "UDH indicated"),
        (_deliver("01" "00"), "UDH length exceeds TP-UDL"),  # 1 header octet = 2 septets
        (_deliver("03616263", fo="04", dcs="08"), "odd"),
        (_deliver("A1" + "00" * 141, fo="04"), "160"),
        (_deliver("8D" + "00" * 141, fo="04", dcs="04"), "140"),
        (_deliver("0100", fo="04", dcs="20"), "compressed"),
        ("00" "04" "0481" "2143" "00" "00" "42319221000000" "00", "date"),
        ("00" "04" "0481" "2143" "00" "00" "4A209221000000" "00", "non-decimal"),
        ("00" "04" "0481" "2F43" "00" "00" "42209221000000" "00", "filler"),
        ("00" "04" "1581" + "11" * 11 + "00" "00" "42209221000000" "00", "exceeds"),
    ],
)
def test_malformed_raises_pdu_error(vector: str, reason: str) -> None:
    with pytest.raises(PduError, match=reason):
        pdu.decode(vector)


def test_decode_submit_rejects_other_types() -> None:
    with pytest.raises(PduError, match="SMS-SUBMIT"):
        pdu.decode_submit(CLASSIC)
    with pytest.raises(PduError, match="trailing"):
        pdu.decode_submit(CLASSIC_SUBMIT + "FF")


def test_non_text_input_type() -> None:
    with pytest.raises(PduError):
        pdu.decode(12345)  # type: ignore[arg-type]


def test_lenient_where_nothing_is_ambiguous() -> None:
    # Type of address without bit 7, and a filler counted in the address length.
    m = pdu.decode("00" "04" "0511" "2143F5" "00" "00" "42209221000000" "00")
    assert isinstance(m, Deliver)
    assert (m.sender, m.sender_type, m.text) == ("+12345", "international", "")
    m = pdu.decode("00" "04" "0691" "2143F5" "00" "00" "42209221000000" "00")
    assert isinstance(m, Deliver) and m.sender == "+12345"


def test_invalid_concat_values_are_ignored_not_fatal() -> None:
    # Total 0 must be ignored (TS 23.040 9.2.3.24.1); the text itself still arrives.
    m = pdu.decode(_deliver("09" "050003070000" "616263", dcs="04"))
    assert isinstance(m, Deliver)
    assert m.concat is None and m.data == b"abc"


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: pdu.encode_submit("Google", "hi"), "not a phone number"),
        (lambda: pdu.encode_submit("+", "hi"), "not a phone number"),
        (lambda: pdu.encode_submit("+4915x", "hi"), "not a phone number"),
        (lambda: pdu.encode_submit("1" * 21, "hi"), "20 digits"),
        (lambda: pdu.encode_submit("+49151", "hi", reference=256), "reference"),
        (lambda: pdu.encode_submit("+49151", "\ud800"), "surrogate"),
        (lambda: pdu.encode_submit("+49151", "a" * 153 * 256), "parts"),
        (lambda: pdu.encode_deliver("TwelveChars!", "x", timestamp_ms=0), "11 septets"),
        (lambda: pdu.encode_deliver("Ab😀", "x", timestamp_ms=0), "GSM 7-bit"),
        (lambda: pdu.encode_deliver("123", "x", timestamp_ms=utc_ms(2026, 1, 1), tz_quarters=80),
         "time zone"),
        (lambda: pdu.encode_deliver("123", "x", timestamp_ms=utc_ms(2090, 1, 1)), "1990-2089"),
        (lambda: pdu.encode_deliver("123", "€", timestamp_ms=utc_ms(2026, 1, 1),
                                    encoding="gsm7"[:4] + "x"), "unknown encoding"),
        (lambda: pdu.encode_deliver("123", "Ж", timestamp_ms=utc_ms(2026, 1, 1),
                                    encoding="gsm7"), "not GSM"),
        (lambda: pdu.encode_deliver("123", "", timestamp_ms=utc_ms(2026, 1, 1),
                                    encoding="8bit"), "needs data"),
        (lambda: pdu.encode_status_report(1, "+49151", 256, scts_ms=utc_ms(2026, 1, 1),
                                          discharge_ms=utc_ms(2026, 1, 1)), "status"),
    ],
)
def test_encode_rejects(call: object, reason: str) -> None:
    assert callable(call)
    with pytest.raises(PduError, match=reason):
        call()


def test_tpdu_length_rejects_prefix_only() -> None:
    with pytest.raises(PduError):
        pdu.tpdu_length(b"")
    with pytest.raises(PduError):
        pdu.tpdu_length(b"\x07\x91\x94\x71")


# --- split boundaries ---------------------------------------------------------------------


def test_split_empty() -> None:
    assert pdu.split("") == ("gsm7", [""])
    (p,) = pdu.encode_submit("+49151", "")
    s = pdu.decode_submit(p)
    assert s.text == "" and s.concat is None


def test_split_gsm7_160_161() -> None:
    assert pdu.split("a" * 160) == ("gsm7", ["a" * 160])
    assert pdu.split("a" * 161) == ("gsm7", ["a" * 153, "a" * 8])
    assert pdu.split("€" * 80) == ("gsm7", ["€" * 80])  # 160 septets
    enc, parts = pdu.split("€" * 80 + "a")
    assert enc == "gsm7" and parts == ["€" * 76, "€" * 4 + "a"]


def test_split_gsm7_escape_straddles_boundary() -> None:
    text = "a" * 152 + "€" + "b" * 10
    enc, parts = pdu.split(text)
    assert enc == "gsm7"
    # The escape would be septet 153 and the € code septet 154: both move.
    assert parts == ["a" * 152, "€" + "b" * 10]
    pdus = pdu.encode_submit("+49151", text, concat_ref=300)
    decoded = [pdu.decode_submit(p) for p in pdus]
    assert [d.text for d in decoded] == parts
    assert [d.concat for d in decoded] == [Concat(44, 2, 1), Concat(44, 2, 2)]


def test_split_ucs2_70_71() -> None:
    assert pdu.split("Ж" * 70) == ("ucs2", ["Ж" * 70])
    assert pdu.split("Ж" * 71) == ("ucs2", ["Ж" * 67, "Ж" * 4])
    assert pdu.split("😀" * 35) == ("ucs2", ["😀" * 35])  # 70 UTF-16 units
    assert pdu.split("😀" * 36) == ("ucs2", ["😀" * 33, "😀" * 3])


def test_split_ucs2_surrogate_pair_straddles_boundary() -> None:
    text = "Ж" * 66 + "😀" + "Ж" * 10
    enc, parts = pdu.split(text)
    assert enc == "ucs2"
    assert parts == ["Ж" * 66, "😀" + "Ж" * 10]
    pdus = pdu.encode_submit("+49151", text)
    decoded = [pdu.decode_submit(p) for p in pdus]
    assert "".join(d.text for d in decoded) == text
    # Part 1 TP-UDL (after SMSC, FO, MR, 5-octet DA, PID, DCS, VP): 6 UDH + 132 text octets.
    assert pdus[0][1 + 1 + 1 + 5 + 2 + 1] == 6 + 132


def test_one_non_gsm_char_switches_whole_text_to_ucs2() -> None:
    enc, parts = pdu.split("a" * 100 + "ł")
    assert enc == "ucs2" and [len(p) for p in parts] == [67, 34]


def test_deliver_16bit_reference_parts() -> None:
    # With an 8-bit reference the € would still fit part 1 (151 + 2 = 153 septets); the
    # 7-octet UDH leaves 152, so it moves.
    text = "a" * 151 + "€" + "b" * 10
    pdus = pdu.encode_deliver("+49151", text, timestamp_ms=utc_ms(2026, 1, 1), concat_ref=0x1234)
    msgs = [pdu.decode(p) for p in pdus]
    assert [(m.text, m.concat) for m in msgs if isinstance(m, Deliver)] == [
        ("a" * 151, Concat(0x1234, 2, 1, 16)),
        ("€" + "b" * 10, Concat(0x1234, 2, 2, 16)),
    ]
    eight = pdu.encode_deliver("+49151", text, timestamp_ms=utc_ms(2026, 1, 1), concat_ref=0x34)
    first = pdu.decode(eight[0])
    assert isinstance(first, Deliver) and first.text == "a" * 151 + "€"
    # 7-octet UDH: UDHL 06, IEI 08, IEDL 04, ref 12 34, total, seq.
    assert bytes.fromhex("0608041234020 1".replace(" ", "")) in pdus[0]


def test_8bit_deliver_multipart() -> None:
    data = bytes(range(256)) + bytes(44)
    pdus = pdu.encode_deliver(
        "+4915112345678", "", timestamp_ms=utc_ms(2026, 1, 1), data=data, concat_ref=9
    )
    msgs = [pdu.decode(p) for p in pdus]
    assert all(isinstance(m, Deliver) and m.encoding == "8bit" for m in msgs)
    assert b"".join(m.data for m in msgs if isinstance(m, Deliver)) == data
    assert [m.concat for m in msgs if isinstance(m, Deliver)] == [
        Concat(9, 3, 1), Concat(9, 3, 2), Concat(9, 3, 3)
    ]


# --- properties ---------------------------------------------------------------------------

GSM_CHARS = [c for c in gsm7.BASIC if c != "\x1b"] + list(gsm7.EXTENSION.values())
gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=480)
bmp_text = st.text(
    alphabet=st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=300
)
emoji_text = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
        st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)),
        st.sampled_from(["€", "a", "Ж"]),
    ),
    max_size=250,
)
# Dense escapes / surrogate pairs around the part boundaries.
edge_text = st.one_of(
    st.text(alphabet=st.sampled_from("a€{"), min_size=70, max_size=480),
    st.text(alphabet=st.sampled_from("Ж😀"), min_size=30, max_size=240),
)
any_text = st.one_of(gsm_text, bmp_text, emoji_text, edge_text)

PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _units(text: str) -> int:
    return len(text.encode("utf-16-be")) // 2


def _check_limits(encoding: str, parts: list[str]) -> None:
    if encoding == "gsm7":
        sizes = [gsm7.septet_length(p) for p in parts]
        limit = 160 if len(parts) == 1 else 153
    else:
        sizes = [_units(p) for p in parts]
        limit = 70 if len(parts) == 1 else 67
    assert all(s <= limit for s in sizes)
    if len(parts) > 1:
        assert all(p for p in parts)
        # Greedy filling: a part is only cut short when the next char would not fit.
        for p, nxt in itertools.pairwise(parts):
            need = gsm7.char_septets(nxt[0]) if encoding == "gsm7" else _units(nxt[0])
            size = gsm7.septet_length(p) if encoding == "gsm7" else _units(p)
            assert size + need > limit


@PROPS
@given(text=any_text, ref=st.integers(0, 0xFFFF), mr=st.integers(0, 255))
def test_submit_round_trip(text: str, ref: int, mr: int) -> None:
    encoding, parts = pdu.split(text)
    assert "".join(parts) == text
    assert encoding == ("gsm7" if gsm7.is_gsm7(text) else "ucs2")
    _check_limits(encoding, parts)
    pdus = pdu.encode_submit("+4915112345678", text, concat_ref=ref, reference=mr)
    assert len(pdus) == len(parts)
    decoded = [pdu.decode_submit(p) for p in pdus]
    assert "".join(d.text for d in decoded) == text
    for i, d in enumerate(decoded, 1):
        assert d.dest == "+4915112345678" and d.encoding == encoding and d.reference == mr
        assert d.validity == 0xA7 and d.request_status is True and d.smsc is None
        if len(parts) == 1:
            assert d.concat is None
        else:
            assert d.concat == Concat(ref & 0xFF, len(parts), i, 8)
    for p in pdus:
        assert pdu.tpdu_length(p) == len(p) - 1
        # FO, MR, 9-octet DA, PID, DCS, VP, UDL, then at most 140 octets of user data.
        assert pdu.tpdu_length(p) <= 15 + 140


senders = st.one_of(
    st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
    st.from_regex(r"[0-9]{1,20}", fullmatch=True),
    st.text(alphabet=st.sampled_from("ABCXYZabcxyz -_&@£"), min_size=1, max_size=11).filter(
        lambda s: not s.isdigit()
    ),
)


@PROPS
@given(
    sender=senders,
    text=any_text,
    ts=st.integers(utc_ms(1991, 1, 1), utc_ms(2088, 12, 31)),
    tz=st.integers(-79, 79),
    ref=st.integers(0, 0xFFFF),
    smsc=st.sampled_from([None, "+4915200000000", "+491722700001"]),
)
def test_deliver_round_trip(
    sender: str, text: str, ts: int, tz: int, ref: int, smsc: str | None
) -> None:
    pdus = pdu.encode_deliver(
        sender, text, timestamp_ms=ts, tz_quarters=tz, concat_ref=ref, smsc=smsc
    )
    msgs = [pdu.decode(p) for p in pdus]
    assert all(isinstance(m, Deliver) for m in msgs)
    delivers = [m for m in msgs if isinstance(m, Deliver)]
    assert "".join(m.text for m in delivers) == text
    for i, m in enumerate(delivers, 1):
        assert m.sender == sender
        assert m.smsc == smsc
        assert m.timestamp_ms == ts // 1000 * 1000
        bits = 16 if ref > 0xFF else 8
        assert m.concat == (None if len(pdus) == 1 else Concat(ref, len(pdus), i, bits))
        limit = {"gsm7": 160, "ucs2": 70}[m.encoding]
        if len(pdus) > 1:
            limit = {"gsm7": 153, "ucs2": 67}[m.encoding] - (bits == 16)
        size = gsm7.septet_length(m.text) if m.encoding == "gsm7" else _units(m.text)
        assert size <= limit
        assert m.more_messages is False


@settings(max_examples=300, deadline=None)
@given(septets=st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b)),
       fill=st.integers(0, 6))
def test_pack_unpack_inverse(septets: bytes, fill: int) -> None:
    packed = gsm7.pack(septets, fill)
    assert len(packed) == (fill + 7 * len(septets) + 7) // 8
    assert gsm7.unpack(packed, len(septets), fill) == septets
