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
