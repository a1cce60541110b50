"""Phone numbers as the bridge sees them: one canonical spelling per contact.

A text from "0151 12345678" and one from "+49 1511 2345678" are the same person, so every
number is read into E.164 with the line's home country before it names a portal or a ghost.
What is not a phone number (a short code such as 80888, an alphanumeric sender such as
"ACMEBANK") is kept as it came but flagged, because it cannot be normalised and, for
sending, usually costs more or cannot be replied to at all.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType, shortnumberinfo

# Sending to these costs more than a normal text, often a lot more, and is a classic way
# to run up a bill (a "reply STOP" trap, a premium quiz number). UNKNOWN is every number
# the metadata cannot place: a premium range with a digit too many or too few (German 0900
# numbers have a fixed length, so +49 900 1234567 8 is no valid number, yet a network may
# still route it), a short code dialled with the country code, a range too new to know.
# Refusing those is the cheap mistake; sending to them may be the expensive one.
_COSTLY_TYPES = frozenset(
    {PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST, PhoneNumberType.UNKNOWN}
)
_DIGITS = re.compile(r"[0-9]+")
# What people type around a number: spaces, dashes, dots, brackets, a slash (DE style).
_DECORATION = re.compile(r"[\s\-./()\u00a0]")


class NumberKind(enum.StrEnum):
    E164 = "e164"  # a full international number
    SHORT = "short"  # a short code (80888, 11880): national, not E.164
    ALPHANUMERIC = "alphanumeric"  # a sender name ("ACMEBANK"); cannot be replied to
    UNKNOWN = "unknown"  # looked like digits but is no valid number


@dataclass(frozen=True)
class Normalized:
    value: str  # E.164 ("+4915112345678") or, when flagged, the input as it came (trimmed)
    kind: NumberKind

    @property
    def flagged(self) -> bool:
        """True when `value` is not E.164 (so it was kept as-is)."""
        return self.kind is not NumberKind.E164

    def __str__(self) -> str:
        return self.value


def _compact(number: str) -> str:
    return _DECORATION.sub("", number.strip())


# Parsing costs about 60 us here (several times that on a Pi) and the bridge reads the same
# few numbers for every text (portal, ghost, display name), so results are kept.
@functools.lru_cache(maxsize=4096)
def normalize(number: str, home_country: str) -> Normalized:
    """Read `number` as a person or a network wrote it; national numbers use `home_country`."""
    raw = number.strip()
    compact = _compact(raw)
    if not compact:
        return Normalized(raw, NumberKind.UNKNOWN)
    international = compact.startswith(("+", "00"))
    digits = compact[1:] if compact.startswith("+") else compact
    if not _DIGITS.fullmatch(digits):
        return Normalized(raw, NumberKind.ALPHANUMERIC)
    try:
        parsed = phonenumbers.parse(compact, home_country)
    except phonenumbers.NumberParseException:
        return Normalized(compact, NumberKind.UNKNOWN)
    if phonenumbers.is_valid_number(parsed):
        return Normalized(
            phonenumbers.format_number(parsed, PhoneNumberFormat.E164), NumberKind.E164
        )
    if not international and shortnumberinfo.is_possible_short_number(parsed):
        return Normalized(compact, NumberKind.SHORT)
    if international and phonenumbers.is_possible_number(parsed):
        # A plan the metadata does not know yet (new ranges appear); the network gave it
        # in international form, so E.164 is still the right spelling.
        return Normalized(
            phonenumbers.format_number(parsed, PhoneNumberFormat.E164), NumberKind.E164
        )
    return Normalized(compact, NumberKind.UNKNOWN)


@functools.lru_cache(maxsize=4096)
def format_display(number: str, home_country: str) -> str:
    """A readable form for room names and notices: "+49 1511 2345678"; flagged values as-is."""
    normalized = normalize(number, home_country)
    if normalized.kind is not NumberKind.E164:
        return normalized.value
    try:
        parsed = phonenumbers.parse(normalized.value, None)
    except phonenumbers.NumberParseException:  # pragma: no cover - E.164 always parses
        return normalized.value
    return str(phonenumbers.format_number(parsed, PhoneNumberFormat.INTERNATIONAL))


def is_premium_or_short(number: str, country: str) -> bool:
    """True when sending a text to `number` may cost more than a normal one (premium rate,
    shared cost, a short code, a number of no known type) or cannot reach a person (an
    alphanumeric name, garbage).

    The cost guard errs on refusing: a refused text is a notice in the chat, a premium one
    is money gone.
    """
    normalized = normalize(number, country)
    if normalized.kind is not NumberKind.E164:
        return True
    parsed = phonenumbers.parse(normalized.value, None)
    # By the number's type, never by its length: number_type() answers UNKNOWN for
    # anything is_valid_number() rejects, so an invalid number is refused too.
    return phonenumbers.number_type(parsed) in _COSTLY_TYPES


def is_international(number: str, country: str) -> bool:
    """True when `number` is a phone number outside `country` (texts abroad cost more)."""
    normalized = normalize(number, country)
    if normalized.kind is not NumberKind.E164:
        return False
    parsed = phonenumbers.parse(normalized.value, None)
    region = phonenumbers.region_code_for_number(parsed)
    if region is None:
        return True
    return str(region) != country.upper()
