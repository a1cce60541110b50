"""Fuzzing the PDU decoders: whatever the modem hands us, the only exception is PduError.

A seeded loop (reproducible, fast) mutates valid PDUs of every kind the codec knows and mixes
in random bytes and broken hex; a smaller hypothesis run explores structure-free input.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sms import pdu
from appliance.sms.pdu import Deliver, PduError, StatusReport, Submit

TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _seeds() -> tuple[list[bytes], list[bytes]]:
    received: list[bytes] = [
        bytes.fromhex(
            "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"
        ),
        bytes.fromhex("00" "04" "07D0D4F29C0E" "00" "00" "6230510102030A" "0AE8329BFD4697D9EC37"),
        bytes.fromhex(
            "07919471220700F0" "60" "0D91945111325476F8" "00" "18" "52211332959540"
            "11" "06080412340201" "004800690020D83DDE00"
        ),
        bytes.fromhex(
            "07919471220700F0" "46" "2A" "0D91945111325476F8" "62102030405000"
            "62102030405100" "00" "07" "00" "04" "09" "050003010201" "616263"
        ),
    ]
    received += pdu.encode_deliver("+4915112345678", "Grüße € {x} " * 20, timestamp_ms=TS)
    received += pdu.encode_deliver("Bank", "Ж😀" * 30, timestamp_ms=TS, tz_quarters=-14)
    received += pdu.encode_deliver("0301234", "", timestamp_ms=TS, data=bytes(range(200)))
    received += pdu.encode_deliver("Shop", "€[x]" * 50, timestamp_ms=TS, concat_ref=0xBEEF)
    received.append(
        pdu.encode_status_report(5, "+4915112345678", 0x62, scts_ms=TS, discharge_ms=TS)
    )
    sent: list[bytes] = [bytes.fromhex("0011000B916407281553F80000AA0AE8329BFD4697D9EC37")]
    sent += pdu.encode_submit("+4915112345678", "Hello [world] ~ € " * 12, concat_ref=77)
    sent += pdu.encode_submit("0301234567", "😀 emoji " * 12, smsc="+49172270000", validity=None)
    return received, sent


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    buf = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 2:
            del buf[rng.randrange(len(buf) + 1) :]
        elif op == 3:
            buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
        elif op == 4 and buf:
            del buf[rng.randrange(len(buf))]
        else:
            # Length and header fields are the interesting targets: push them to edges.
            if buf:
                i = rng.randrange(min(len(buf), 24))
                buf[i] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0x8C, 0xA0, 0xFF, buf[i] + 1 & 0xFF))
    return bytes(buf)


def _input(rng: random.Random, seeds: list[bytes]) -> str | bytes:
    kind = rng.randrange(10)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 200))
    if kind == 1:
        raw = _mutate(rng, rng.choice(seeds)).hex()
        i = rng.randrange(len(raw) + 1)
        return raw[:i] + rng.choice(["", "g", " ", "\x00", "é", "0", "\ud800"]) + raw[i:]
    data = _mutate(rng, rng.choice(seeds))
    return data.hex() if kind < 5 else data


def _exercise(result: Deliver | StatusReport | Submit) -> None:
    """Touch everything a caller would, so lazy failures surface here."""
    if isinstance(result, StatusReport):
        assert result.state in ("delivered", "trying", "failed")
        assert result.detail
        return
    result.text.encode("utf-8")  # no lone surrogates can leak into the bridge
    if isinstance(result, Deliver):
        result.sender.encode("utf-8")
        assert result.encoding in ("gsm7", "ucs2", "8bit")
    if result.concat is not None:
        assert 1 <= result.concat.seq <= result.concat.total


def _run(call: Callable[[str | bytes], Deliver | StatusReport | Submit], inp: str | bytes) -> str:
    try:
        result = call(inp)
    except PduError as e:
        assert str(e)
        return "error"
    _exercise(result)
    return "ok"


def test_seeded_fuzz_only_raises_pdu_error() -> None:
    rng = random.Random(0x5EED)
    received, sent = _seeds()
    seeds = received + sent
    outcomes: Counter[str] = Counter()
    for _ in range(40_000):
        inp = _input(rng, seeds)
        outcomes["decode " + _run(pdu.decode, inp)] += 1
        outcomes["submit " + _run(pdu.decode_submit, inp)] += 1
    # The mutations must reach past the first checks, or this test proves little.
    assert outcomes["decode ok"] > 500
    assert outcomes["submit ok"] > 100
    assert outcomes["decode error"] > 1000


def test_every_truncation_of_valid_pdus_is_rejected() -> None:
    received, sent = _seeds()
    for seed, call in [(s, pdu.decode) for s in received] + [(s, pdu.decode_submit) for s in sent]:
        full = call(seed)
        for cut in range(len(seed)):
            try:
                short = call(seed[:cut])
            except PduError:
                continue
            # Only a status report may legitimately end early: everything after TP-ST is
            # optional, and then the mandatory fields must be unchanged.
            assert isinstance(full, StatusReport) and short == full, seed[:cut].hex()


@settings(max_examples=2_000, deadline=None)
@given(st.one_of(st.binary(max_size=180), st.text(max_size=120)))
def test_hypothesis_structure_free_input(inp: str | bytes) -> None:
    _run(pdu.decode, inp)
    _run(pdu.decode_submit, inp)


@settings(max_examples=2_000, deadline=None)
@given(
    head=st.sampled_from(["00", "07919471220700F0"]),
    fo=st.integers(0, 255),
    body=st.binary(max_size=170),
)
def test_hypothesis_plausible_headers(head: str, fo: int, body: bytes) -> None:
    inp = bytes.fromhex(head) + bytes([fo]) + body
    _run(pdu.decode, inp)
    _run(pdu.decode_submit, inp)
