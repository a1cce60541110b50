"""appliance.phonenum: one spelling per contact, and the cost guard."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.phonenum import NumberKind, format_display, is_premium_or_short, normalize


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("0151 12345678", "DE", "+4915112345678"),
        ("+49 1511 2345678", "DE", "+4915112345678"),
        ("004915112345678", "DE", "+4915112345678"),
        ("0151/123-456 78", "DE", "+4915112345678"),
        ("(0151) 12345678", "DE", "+4915112345678"),
        ("07911 123456", "GB", "+447911123456"),
        ("+447911123456", "DE", "+447911123456"),
        ("(202) 555-0143", "US", "+12025550143"),
    ],
)
def test_national_and_international_spellings_meet(raw: str, country: str, expected: str) -> None:
    n = normalize(raw, country)
    assert n.value == expected
    assert n.kind is NumberKind.E164
    assert not n.flagged


def test_home_country_decides_how_a_national_number_is_read() -> None:
    assert normalize("07911 123456", "GB").value == "+447911123456"
    assert normalize("07911 123456", "DE").value != "+447911123456"


@pytest.mark.parametrize("raw", ["ACMEBANK", "DHL Paket", "Vodafone", "ING-DiBa"])
def test_alphanumeric_senders_are_kept_and_flagged(raw: str) -> None:
    n = normalize(raw, "DE")
    assert n.value == raw
    assert n.kind is NumberKind.ALPHANUMERIC
    assert n.flagged


@pytest.mark.parametrize("raw", ["80888", "11880", "22222", "112"])
def test_short_codes_are_kept_and_flagged(raw: str) -> None:
    n = normalize(raw, "DE")
    assert n.value == raw
    assert n.kind is NumberKind.SHORT


def test_garbage_is_unknown_not_an_exception() -> None:
    assert normalize("", "DE").kind is NumberKind.UNKNOWN
    assert normalize("   ", "DE").kind is NumberKind.UNKNOWN
    assert normalize("+", "DE").flagged


@pytest.mark.parametrize(
    ("number", "country", "blocked"),
    [
        ("+4915112345678", "DE", False),  # mobile
        ("030 1234567", "DE", False),  # Berlin landline
        ("0900 1234567", "DE", True),  # premium rate
        ("+49 900 1234567", "DE", True),
        ("+1 900 555 0123", "DE", True),  # US premium, spelled internationally
        ("0180 1234567", "DE", True),  # shared cost
        ("80888", "DE", True),  # short code
        ("11880", "DE", True),
        ("ACMEBANK", "DE", True),  # cannot be texted
        ("+447911123456", "DE", False),
    ],
)
def test_cost_guard(number: str, country: str, blocked: bool) -> None:
    assert is_premium_or_short(number, country) is blocked


def test_display_form_is_international_and_readable() -> None:
    assert format_display("015112345678", "DE") == "+49 1511 2345678"
    assert format_display("ACMEBANK", "DE") == "ACMEBANK"


@given(st.from_regex(r"\+49 ?1[5-7][0-9] ?[0-9]{7,8}", fullmatch=True))
def test_normalising_twice_changes_nothing(raw: str) -> None:
    first = normalize(raw, "DE")
    again = normalize(first.value, "DE")
    assert again == first


@given(st.text(max_size=30))
def test_any_input_gives_an_answer(raw: str) -> None:
    n = normalize(raw, "DE")
    assert isinstance(n.value, str)
    if n.kind is NumberKind.E164:
        assert n.value.startswith("+") and n.value[1:].isdigit()
    assert isinstance(is_premium_or_short(raw, "DE"), bool)


def test_international_is_another_country_than_the_lines() -> None:
    from appliance.phonenum import is_international

    assert not is_international("+4915112345678", "DE")
    assert not is_international("015112345678", "DE")
    assert is_international("+447700900123", "DE")
    assert is_international("+4915112345678", "GB")
    assert not is_international("ACMEBANK", "DE")  # not a number at all: other rules apply


# -- the cost guard against every costly range phonenumbers knows (issue 12, item 1) ----

def _costly_examples() -> list[tuple[str, str, str]]:
    import phonenumbers
    from phonenumbers import PhoneNumberFormat, PhoneNumberType

    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                e164 = phonenumbers.format_number(example, PhoneNumberFormat.E164)
                name = "premium" if kind == PhoneNumberType.PREMIUM_RATE else "shared"
                out.append((region, name, e164))
    return out


COSTLY_EXAMPLES = _costly_examples()


def test_phonenumbers_ships_costly_examples() -> None:
    # The parametrised tests below are only worth something if there are many of them.
    assert len(COSTLY_EXAMPLES) > 150
    assert ("DE", "premium", "+499001234567") in COSTLY_EXAMPLES


@pytest.mark.parametrize(("region", "kind", "e164"), COSTLY_EXAMPLES)
def test_every_regions_costly_example_is_blocked(region: str, kind: str, e164: str) -> None:
    assert is_premium_or_short(e164, region)
    # Whatever the line's home country: the number is spelled internationally.
    assert is_premium_or_short(e164, "DE")
    assert is_premium_or_short(e164, "US")


def _variants(e164: str) -> list[str]:
    """The number with up to three digits cut off or added: a premium range reached with a
    digit too many or too few is still routed by many networks."""
    out = []
    for cut in (1, 2, 3):
        if len(e164) - cut > 4:
            out.append(e164[:-cut])
    for extra in ("0", "5", "00", "78", "123"):
        out.append(e164 + extra)
    return out


@pytest.mark.parametrize(("region", "kind", "e164"), COSTLY_EXAMPLES)
def test_length_variants_of_costly_examples_are_blocked(
    region: str, kind: str, e164: str
) -> None:
    import phonenumbers
    from phonenumbers import PhoneNumberType

    ordinary = {PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE,
                PhoneNumberType.FIXED_LINE_OR_MOBILE}
    for variant in _variants(e164):
        parsed = phonenumbers.parse(variant, None)
        if phonenumbers.is_valid_number(parsed) and phonenumbers.number_type(parsed) in ordinary:
            # A few cut-off premium numbers are someone's landline or mobile in the
            # metadata (Irish 1520 1234 is a Dublin number): those are ordinary texts.
            continue
        assert is_premium_or_short(variant, region), variant


@pytest.mark.parametrize(
    "number", ["+4990012345678", "+49900123456789", "+49900123456", "+4990012345",
               "0900 12345678", "0900 123456789", "+49 900 1234567 8", "004990012345678"],
)
def test_german_0900_of_any_length_is_blocked(number: str) -> None:
    # The reported bypass: one digit more than the valid 0900 length got through.
    assert is_premium_or_short(number, "DE")
