"""`textbridge phone`: pair with the phone and say, in plain words, what state it is in.

For the first set-up on a Pi (and the HIL bench): creates the ADB key if needed, prints the
fingerprint the phone will show in "Allow USB debugging?", waits for the tap, and reports
what the phone line would report. No store, no Matrix.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from appliance.phone.adb import AdbLink, Target
from appliance.phone.device import Phone
from appliance.phone.errors import PhoneError
from appliance.phone.keys import ensure_key, fingerprint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transport", choices=["usb", "tcp"], default="usb")
    parser.add_argument("--serial", default=None, help="USB serial, when several phones")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument(
        "--key",
        type=Path,
        default=Path("/var/lib/textbridge/phone_adbkey"),
        help="the appliance's ADB key (created 0600 if missing)",
    )
    parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for Allow on the phone"
    )


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    ensure_key(args.key)
    print(f"Textbridge's key fingerprint: {fingerprint(args.key)}")
    print('If the phone asks "Allow USB debugging?", check it shows this fingerprint, tick')
    print('"Always allow from this computer" and tap Allow.')
    target = Target(args.transport, args.serial, args.host, args.port)
    link = AdbLink(target, args.key, auth_timeout=args.wait)
    try:
        await link.connect()
        health = await Phone(link).health()
    except PhoneError as exc:
        print(exc.plain)
        return 1
    finally:
        await link.close()
        link.shutdown()
    print(f"Connected: {health.model}, Android {health.android}.")
    problems = []
    if not health.messages_installed:
        problems.append("Google Messages is not installed.")
    elif not health.is_default_sms:
        problems.append("Google Messages is not the default SMS app.")
    elif not health.messages_running:
        problems.append("Google Messages is not running (it starts with the line).")
    if health.locked:
        problems.append("The screen is locked; set the screen lock to None.")
    for problem in problems:
        print(problem)
    if not problems:
        print("The phone is ready for Textbridge.")
    return 1 if problems else 0
