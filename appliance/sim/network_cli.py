"""`textbridge network`: play the phone network of a running `textbridge modem-sim`.

Usage: `network send --from +4915112345678 --text "hi"`, `network sent` (what the modem sent,
decoded, with each part's TP-MR reference), `network report --reference 3 --status 0`,
`network auto-report --status 0 --delay 3` (or `--off`: the network then reports only when
told), `network status`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import urllib.error
import urllib.request
from typing import Any

# Kept free of aiohttp (the server side imports it): this client starts in a fraction of
# the time, which the demo and the tests call many times.
ENV_CONTROL = "TEXTBRIDGE_SIM_CONTROL"
DEFAULT_CONTROL = "127.0.0.1:8765"


def parse_control(value: str) -> tuple[str, int]:
    """Split a "host:port" with a loopback host; raises ValueError otherwise."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{value!r} is not host:port")
    host = host.strip("[]") or "127.0.0.1"
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the control server only listens on loopback, not {host}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control",
        default=None,
        help=f"host:port of the simulator's control API (default ${ENV_CONTROL} or "
        f"{DEFAULT_CONTROL})",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    send = sub.add_parser("send", help="deliver a text to the modem")
    send.add_argument("--from", dest="sender", required=True, help="sender's number or name")
    send.add_argument("--text", required=True)
    sub.add_parser("sent", help="print what the modem sent, decoded, with its references")
    report = sub.add_parser("report", help="send a status report for a sent part")
    report.add_argument(
        "--reference", type=int, required=True, help="the part's TP-MR (see `network sent`)"
    )
    report.add_argument("--status", type=lambda v: int(v, 0), default=0, help="TP-ST")
    auto = sub.add_parser("auto-report", help="report every sent part by itself, or stop")
    how = auto.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--status",
        type=lambda v: int(v, 0),
        help="TP-ST to report: 0 delivered, 0x41 failed for good, 0x20 still trying",
    )
    how.add_argument("--off", action="store_true", help="send no reports unless told")
    auto.add_argument("--delay", type=float, default=None, help="seconds after sending")
    sub.add_parser("status", help="print the simulator's state")
    # The demo's simulated Android phone (RCS and SMS through Google Messages).
    psend = sub.add_parser("phone-send", help="a message reaches the tethered phone (demo)")
    psend.add_argument("--from", dest="sender", required=True, help="sender's number")
    psend.add_argument("--text", required=True)
    psend.add_argument("--sms", action="store_true", help="plain SMS instead of RCS")
    psend.add_argument("--group", default=None, help="a group conversation's name")
    psend.add_argument("--members", default=None, help="the group's numbers, comma-separated")
    sub.add_parser("phone-sent", help="print what the phone sent (demo)")


def _call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    # The base is always http://<loopback>:<port>, checked by parse_control.
    request = urllib.request.Request(  # noqa: S310
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
        return json.loads(response.read())


def sent_with_references(parts: list[dict[str, Any]]) -> list[tuple[str, list[int], str]]:
    """(destination, TP-MR of each part, whole text) per message in the order sent: the
    parts of a multipart message are put together by (destination, concatenation
    reference, total), as the receiving phone does."""
    order: list[tuple[str, int, int] | int] = []
    groups: dict[tuple[str, int, int], dict[int, dict[str, Any]]] = {}
    for i, part in enumerate(parts):
        concat = part.get("concat")
        if not concat or int(concat["total"]) <= 1:
            order.append(i)
            continue
        key = (str(part["dest"]), int(concat["ref"]), int(concat["total"]))
        if key not in groups:
            groups[key] = {}
            order.append(key)
        groups[key][int(concat["seq"])] = part
    out: list[tuple[str, list[int], str]] = []
    for item in order:
        if isinstance(item, int):
            p = parts[item]
            out.append((str(p["dest"]), [int(p["reference"])], str(p["text"])))
            continue
        got = [groups[item][n] for n in sorted(groups[item])]
        text = "".join(str(p["text"]) for p in got)
        out.append((item[0], [int(p["reference"]) for p in got], text))
    return out


def run(args: argparse.Namespace) -> int:
    address = args.control or os.environ.get(ENV_CONTROL) or DEFAULT_CONTROL
    try:
        host, port = parse_control(address)
    except ValueError as exc:
        print(f"network: {exc}")
        return 2
    base = f"http://{host}:{port}"
    try:
        if args.action == "send":
            result = _call(base, "POST", "/deliver", {"sender": args.sender, "text": args.text})
            where = ", ".join(str(i) for i in result["indexes"]) or "none yet"
            print(f"delivered to the modem (storage index {where}; pending {result['pending']})")
        elif args.action == "sent":
            result = _call(base, "GET", "/sent")
            for dest, refs, text in sent_with_references(result["parts"]):
                words = "reference" if len(refs) == 1 else "references"
                print(f"{dest}\t{words} {','.join(str(r) for r in refs)}\t{text}")
        elif args.action == "auto-report":
            status = None if args.off else args.status
            body: dict[str, Any] = {"fault": "auto_report", "status": status}
            if args.delay is not None:
                body["delay"] = args.delay
            _call(base, "POST", "/fault", body)
            if status is None:
                print("the network sends no status reports now (network report sends one)")
            else:
                print(f"the network reports every sent part with status {status:#04x}")
        elif args.action == "phone-send":
            members = [m for m in (args.members or "").split(",") if m]
            _call(
                base,
                "POST",
                "/phone/receive",
                {
                    "sender": args.sender,
                    "text": args.text,
                    "rcs": not args.sms,
                    "group": args.group,
                    "members": members or None,
                },
            )
            print("delivered to the phone; it shows up at the next poll")
        elif args.action == "phone-sent":
            for message in _call(base, "GET", "/phone/sent")["messages"]:
                print(f"{','.join(message['to'])}\t{message['text']}")
        elif args.action == "report":
            _call(base, "POST", "/report", {"reference": args.reference, "status": args.status})
            print(f"status report {args.status:#04x} sent for reference {args.reference}")
        else:
            print(json.dumps(_call(base, "GET", "/status"), indent=2))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        print(f"network: the simulator refused: {detail}")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"network: cannot reach the simulator at {base} ({exc}); is modem-sim running?")
        return 1
    return 0
