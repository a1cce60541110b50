"""PDU codec benchmark: cost per call of decode, encode and split on a Pi-sized budget.

The SMS line decodes every listed PDU on each poll and the simulator decodes every submit, so
the codec must stay far below a millisecond per part. Prints microseconds per call and calls
per second for typical messages (single GSM-7, 3-part GSM-7, 4-part UCS-2 with emoji,
status report, and the rejection of a malformed PDU).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.sms import pdu

TS = 1_767_225_600_000
LONG_GSM = "Dinner at 7? Bring the {big} pot & 2€ for parking. " * 9
LONG_UCS2 = "Бабушка 😀 приедет завтра в 10 утра. " * 7


def _per_call(fn: Callable[[], object], min_time: float = 0.3) -> float:
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / n
        n *= 2


def _reject(raw: bytes) -> Callable[[], object]:
    def run() -> object:
        try:
            return pdu.decode(raw)
        except pdu.PduError as e:
            return e

    return run


def main() -> None:
    single = pdu.encode_deliver("+4915112345678", "See you soon", timestamp_ms=TS)[0]
    gsm_parts = pdu.encode_deliver("+4915112345678", LONG_GSM, timestamp_ms=TS, concat_ref=1)
    ucs_parts = pdu.encode_deliver("Bank", LONG_UCS2, timestamp_ms=TS, concat_ref=2)
    report = pdu.encode_status_report(1, "+4915112345678", 0, scts_ms=TS, discharge_ms=TS)
    single_hex = single.hex().upper()
    cases: list[tuple[str, Callable[[], object]]] = [
        ("decode single GSM-7 (hex)", lambda: pdu.decode(single_hex)),
        (f"decode {len(gsm_parts)}-part GSM-7", lambda: [pdu.decode(p) for p in gsm_parts]),
        (f"decode {len(ucs_parts)}-part UCS-2", lambda: [pdu.decode(p) for p in ucs_parts]),
        ("decode status report", lambda: pdu.decode(report)),
        ("reject truncated PDU", _reject(single[:-3])),
        ("split long GSM-7", lambda: pdu.split(LONG_GSM)),
        ("encode_submit long GSM-7", lambda: pdu.encode_submit("+4915112345678", LONG_GSM)),
        ("encode_submit long UCS-2", lambda: pdu.encode_submit("+4915112345678", LONG_UCS2)),
        (
            "decode_submit long UCS-2",
            lambda: [pdu.decode_submit(p) for p in pdu.encode_submit("+49151", LONG_UCS2)],
        ),
    ]
    print(f"{'case':<32} {'us/call':>10} {'calls/s':>10}")
    print("-" * 54)
    for name, fn in cases:
        t = _per_call(fn)
        print(f"{name:<32} {t * 1e6:>10.1f} {1 / t:>10.0f}")


if __name__ == "__main__":
    main()
