"""Server-side checks for every form field, with messages a non-technical person can act on.

Each checker returns the cleaned value or raises Invalid with the text shown next to the
field. The browser's own checks (maxlength, pattern) are a convenience only; these decide.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable
from typing import TypeVar

from appliance.wireguard import tunnel as wg_tunnel

_T = TypeVar("_T")

USERNAME_RE = re.compile(r"[a-z0-9._=-]{1,64}")
HOSTNAME_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# Localparts the appliance keeps for itself: its admin account, the bridge bot and its ghosts.
RESERVED_USERNAMES = frozenset(
    {"admin", "root", "textbridge", "textbridgebot", "bot", "bridge", "sms", "system", "server"}
)
RESERVED_PREFIXES = ("sms_", "textbridge", "_")
MIN_PASSWORD = 10
MAX_PASSWORD = 256


class Invalid(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch)[0] == "C" for ch in text)


def display_name(raw: str, *, label: str = "name") -> str:
    value = raw.strip()
    if not value:
        raise Invalid(f"Please type a {label}.")
    if len(value) > 64:
        raise Invalid(f"That {label} is too long: at most 64 letters, please.")
    if _has_control(value):
        raise Invalid(f"The {label} contains invisible control characters. Please retype it.")
    for ch in value:
        cat = unicodedata.category(ch)
        if not (cat[0] in "LMN" or ch in " .'-"):
            raise Invalid(
                f"Please use only letters, numbers, spaces and . ' - in the {label} "
                f"(not {ch!r})."
            )
    return value


def username(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise Invalid("Please choose a username.")
    if len(value) > 64:
        raise Invalid("That username is too long: at most 64 characters.")
    if value != value.lower() and USERNAME_RE.fullmatch(value.lower()):
        raise Invalid(f"Usernames use small letters only: try “{value.lower()}”.")
    if not USERNAME_RE.fullmatch(value):
        raise Invalid(
            "A username may only use small letters a-z, digits 0-9 and . _ = - "
            "(no spaces or accents)."
        )
    if value in RESERVED_USERNAMES or value.startswith(RESERVED_PREFIXES):
        raise Invalid("That username is kept for the appliance itself. Please pick another.")
    return value


def new_password(raw: str, again: str, *, user: str = "") -> str:
    if _has_control(raw):
        raise Invalid("The password contains invisible control characters. Please retype it.")
    if len(raw) < MIN_PASSWORD:
        raise Invalid(f"The password is too short: use at least {MIN_PASSWORD} characters.")
    if len(raw) > MAX_PASSWORD:
        raise Invalid(f"The password is too long: at most {MAX_PASSWORD} characters.")
    if len(set(raw)) < 4:
        raise Invalid("That password is too easy to guess: mix more different characters.")
    if user and user.lower() in raw.lower():
        raise Invalid("The password must not contain the username.")
    if raw != again:
        raise Invalid("The two passwords are not the same. Please type it twice exactly.")
    return raw


def hostname(raw: str) -> str:
    value = raw.strip().lower().rstrip(".")
    if not value:
        raise Invalid("Please type a name such as family-smith.net.")
    if len(value) > 253:
        raise Invalid("That name is too long.")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        raise Invalid("Please type a name, not a number address.")
    labels = value.split(".")
    if len(labels) < 2 or not all(HOSTNAME_LABEL_RE.fullmatch(lb) for lb in labels):
        raise Invalid(
            "That is not a valid domain name. Use letters, digits and hyphens, with dots "
            "between the parts, like family-smith.net."
        )
    if labels[-1].isdigit():
        raise Invalid("The last part of a domain name cannot be only digits.")
    return value


def pin(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[0-9]{4,8}", value):
        raise Invalid("A SIM PIN is 4 to 8 digits, found on the card the SIM came on.")
    return value


def phone_number(raw: str) -> str:
    """An international number in E.164. Short codes are refused on purpose: they can be
    premium services that charge per message."""
    value = re.sub(r"[\s()/.-]", "", raw.strip())
    if value.startswith("00"):
        value = "+" + value[2:]
    if not value:
        raise Invalid("Please type a phone number.")
    if not re.fullmatch(r"\+[1-9][0-9]{6,14}", value):
        raise Invalid(
            "Please type the full number with the country code, e.g. +49 170 1234567. "
            "Short codes are not allowed here because they can cost money."
        )
    return value


def message_text(raw: str, *, limit: int = 160) -> str:
    value = raw.replace("\r\n", "\n").strip()
    if not value:
        raise Invalid("Please type a short message.")
    if len(value) > limit:
        raise Invalid(f"The message is too long: at most {limit} characters.")
    if any(unicodedata.category(ch)[0] == "C" and ch != "\n" for ch in value):
        raise Invalid("The message contains invisible control characters. Please retype it.")
    return value


def whole_number(raw: str, *, low: int, high: int, what: str) -> int:
    value = raw.strip()
    if not re.fullmatch(r"[0-9]{1,7}", value):
        raise Invalid(f"Please type {what} as a whole number between {low} and {high}.")
    number = int(value)
    if not low <= number <= high:
        raise Invalid(f"Please type {what} between {low} and {high}.")
    return number


def passphrase(raw: str) -> str:
    if _has_control(raw):
        raise Invalid("The passphrase contains invisible control characters.")
    if len(raw) < 12:
        raise Invalid("Use a passphrase of at least 12 characters: it protects every secret.")
    if len(raw) > 1024:
        raise Invalid("That passphrase is too long.")
    return raw



def _from_wireguard(check: Callable[[str], _T], raw: str) -> _T:
    try:
        return check(raw)
    except wg_tunnel.Invalid as exc:
        raise Invalid(exc.message) from exc


def wireguard_endpoint_host(raw: str) -> str:
    """The home's public name or address, for phones away (appliance/wireguard/tunnel.py)."""
    return _from_wireguard(wg_tunnel.endpoint_host, raw)


def wireguard_port(raw: str) -> int:
    return _from_wireguard(wg_tunnel.endpoint_port, raw)


def wireguard_device_name(raw: str) -> str:
    return _from_wireguard(wg_tunnel.device_name, raw)
