"""`textbridge phone-sim`: the simulated phone on a TCP port, for the demo and by hand.

Reads commands on stdin, one a line, and answers on stdout:
  rcs <number> <text>                    an RCS message arrives
  sms <number> <text>                    an SMS arrives (also in the SMS store)
  group <name> <sender> <m1,m2,...> <text>  a group message arrives
  lock | unlock | crash | layout | fix   faults on and off
  sent                                   what was sent through the UI so far
"""

from __future__ import annotations

import argparse
import sys

from appliance.adbsim.device import SimPhone
from appliance.adbsim.server import AdbSimServer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument(
        "--ask", action="store_true", help="ask before allowing a new key (default: allow)"
    )


def handle(phone: SimPhone, line: str) -> str:
    parts = line.strip().split(" ")
    what = parts[0] if parts else ""
    if what in ("rcs", "sms") and len(parts) >= 3:
        phone.receive(parts[1], " ".join(parts[2:]), rcs=what == "rcs")
        return "ok"
    if what == "group" and len(parts) >= 5:
        members = tuple(parts[3].split(","))
        phone.receive(parts[2], " ".join(parts[4:]), group=parts[1], members=members)
        return "ok"
    if what == "allow":
        phone.accept_pending_key()
        return "ok"
    toggles = {
        "lock": ("locked", True),
        "unlock": ("locked", False),
    }
    if what in toggles:
        attr, value = toggles[what]
        setattr(phone, attr, value)
        return "ok"
    if what == "crash":
        phone.crash_messages()
        return "ok"
    if what in ("layout", "fix"):
        phone.faults.layout_changed = what == "layout"
        return "ok"
    if what == "sent":
        return "\n".join(f"{','.join(s.recipients)}: {s.text!r}" for s in phone.sent) or "none"
    return "unknown command (rcs, sms, group, allow, lock, unlock, crash, layout, fix, sent)"


def run(args: argparse.Namespace) -> int:
    phone = SimPhone()
    phone.auto_accept = not args.ask
    server = AdbSimServer(phone, host=args.host, port=args.port).start()
    print(f"simulated phone listening on {args.host}:{server.port}", flush=True)
    try:
        for line in sys.stdin:
            if line.strip():
                print(handle(phone, line), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
