"""The udev rule that names the modem's AT port: evaluated for the sticks we support.

udev itself cannot run here (no devices), so this reads the rule the way udev does for the
keys it uses (ENV matches, ENV assignments, SYMLINK+=, GOTO/LABEL) and evaluates it against
the properties each stick's AT port and other ports get from the usb_id builtin.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RULES = (
    Path(__file__).resolve().parent.parent / "overlays/etc/udev/rules.d/70-textbridge-modem.rules"
)
KEY = re.compile(r'\s*([A-Z_]+)(?:\{([A-Za-z_]+)\})?\s*(==|!=|\+=|=)\s*"([^"]*)"\s*')


def parse(text: str) -> list[list[tuple[str, str | None, str, str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keys = []
        for part in line.split(","):
            match = KEY.fullmatch(part)
            assert match, f"cannot read {part!r} in {line!r}"
            name, attr, op, value = match.groups()
            keys.append((name, attr, op, value))
        rules.append(keys)
    return rules


def evaluate(props: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The device's ENV after the rules, and the symlinks they gave it."""
    env = dict(props)
    links: list[str] = []
    rules = parse(RULES.read_text())
    goto: str | None = None
    for keys in rules:
        if goto is not None:
            if keys[0][0] == "LABEL" and keys[0][3] == goto:
                goto = None
            continue
        matched = True
        for name, attr, op, value in keys:
            if op not in ("==", "!="):
                continue
            if name == "ENV":
                actual = env.get(attr or "", "")
            elif name in ("ACTION", "SUBSYSTEM", "SUBSYSTEMS"):
                actual = env.get(name, "")
            else:
                raise AssertionError(f"match on {name} not modelled")
            ok = any(re.fullmatch(p.replace("*", ".*"), actual) for p in value.split("|"))
            if ok != (op == "=="):
                matched = False
                break
        if not matched:
            continue
        for name, attr, op, value in keys:
            if name == "ENV" and op == "=":
                env[attr or ""] = value
            elif name == "SYMLINK" and op == "+=":
                links.append(value)
            elif name == "GOTO":
                goto = value
            elif name == "IMPORT":
                assert value == "usb_id"
    return env, links


def tty(vendor: str, model: str, interface: str, action: str = "add") -> dict[str, str]:
    return {
        "ACTION": action,
        "SUBSYSTEM": "tty",
        "SUBSYSTEMS": "usb",
        "ID_VENDOR_ID": vendor,
        "ID_MODEL_ID": model,
        "ID_USB_INTERFACE_NUM": interface,
    }


@pytest.mark.parametrize(
    ("vendor", "model", "at_interface"),
    [
        ("2c7c", "0125", "02"),  # Quectel EC25 / EG25-G
        ("12d1", "1506", "00"),  # Huawei E3372, stick mode
        ("1e0e", "9001", "02"),  # SIMCom SIM7600
        ("1199", "9071", "03"),  # Sierra EM7455
        ("1199", "68c0", "03"),  # Sierra MC7304
    ],
)
def test_only_the_at_port_gets_the_stable_name(vendor: str, model: str, at_interface: str) -> None:
    for interface in ("00", "01", "02", "03", "04"):
        env, links = evaluate(tty(vendor, model, interface))
        assert env.get("ID_MM_DEVICE_IGNORE") == "1", interface
        expected = ["textbridge-modem"] if interface == at_interface else []
        assert links == expected, interface


def test_other_devices_are_left_alone() -> None:
    env, links = evaluate(tty("0403", "6001", "00"))  # an FTDI adapter
    assert links == [] and "ID_MM_DEVICE_IGNORE" not in env
    env, links = evaluate({**tty("2c7c", "0125", "02"), "SUBSYSTEM": "net"})
    assert links == []
    env, links = evaluate(tty("2c7c", "0125", "02", action="remove"))
    assert links == []
