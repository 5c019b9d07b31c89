"""Numbers for people: money by currency exponent, durations, rates, sizes, masked emails."""

from __future__ import annotations

import math

import pytest

from metrics import format as fmt


@pytest.mark.parametrize("minor, currency, expected", [
    (123456, "usd", "$1,234.56"),
    (123456, "USD", "$1,234.56"),
    (250, "eur", "€2.50"),
    (1000, "jpy", "¥1,000"),          # no minor unit: 1000 is ¥1,000, not ¥10.00
    (-2500, "usd", "-$25.00"),
    (99, "sek", "0.99 SEK"),          # no symbol: the code follows
    (5000, "krw", "5,000 KRW"),       # zero-decimal without a symbol
    (2525.5, "usd", "$25.26"),        # an average can have a fraction of a cent
    (None, "usd", "–"),
])
def test_money_uses_each_currency_s_minor_unit(minor, currency, expected):
    assert fmt.money(minor, currency) == expected


def test_a_money_map_lists_currencies_apart_in_order():
    assert fmt.money_map({"usd": 100, "eur": 250, "jpy": 5000}) == "€2.50 · ¥5,000 · $1.00"
    assert fmt.money_map({}) == "–"
    assert fmt.money_map(None) == "–"


@pytest.mark.parametrize("ms, expected", [
    (None, "–"), (0, "0 ms"), (850, "850 ms"), (999.4, "999 ms"), (1000, "1.0 s"), (12500, "12.5 s"),
    (119_999, "120.0 s"), (120_000, "2 min"), (3_600_000, "60 min"), (7_200_000, "2.0 h"),
])
def test_durations_pick_a_readable_unit(ms, expected):
    assert fmt.duration(ms) == expected


def test_rates_are_percentages_and_null_is_a_dash_not_zero():
    assert fmt.rate(0.9876) == "98.8%"
    assert fmt.rate(1 / 3, 2) == "33.33%"
    assert fmt.rate(0.0) == "0.0%"
    assert fmt.rate(None) == "–"


def test_counts_and_sizes():
    assert fmt.count(1234567) == "1,234,567"
    assert fmt.count(0) == "0"
    assert fmt.count(None) == "–"
    assert fmt.size(512) == "512 B"
    assert fmt.size(1536) == "1.5 KiB"
    assert fmt.size(3 * 1024**3) == "3.0 GiB"
    assert fmt.size(None) == "–"


@pytest.mark.parametrize("email, expected", [
    ("jane.doe@example.com", "j***@example.com"),
    ("a@b.io", "a***@b.io"),
    ("no-at-sign", "n***"),
    ("", ""),
    (None, None),
])
def test_emails_are_masked_but_keep_their_domain(email, expected):
    assert fmt.mask_email(email) == expected


def test_a_count_with_a_noun_agrees_in_number():
    assert fmt.count(1, "refund") == "1 refund"
    assert fmt.count(0, "refund") == "0 refunds"
    assert fmt.count(1234, "probe") == "1,234 probes"
    assert fmt.count(None, "refund") == "–"


# -- whatever the platform stored: one readable text, never an exception ------------------

BAD = [5, 2.5, float("nan"), float("inf"), -float("inf"), 10**30, 1e308, {"a": 1}, ["usd"], [], "12", None, True,
       object()]


@pytest.mark.parametrize("currency", BAD, ids=repr)
def test_money_in_a_currency_that_is_not_text_reads_as_no_currency(currency):
    text = fmt.money(1500, currency)
    assert "15.00" in text or "1,500" in text


@pytest.mark.parametrize("amount", BAD, ids=repr)
def test_money_of_an_amount_that_is_not_a_finite_number_is_a_dash_or_the_number(amount):
    text = fmt.money(amount, "usd")
    assert isinstance(text, str) and text
    if not isinstance(amount, (int, float)) or isinstance(amount, bool) or not math.isfinite(amount):
        assert text == "–"


def test_a_huge_amount_keeps_every_digit():
    assert fmt.money(10**30, "usd") == "$" + f"{10**28:,}" + ".00"
    assert fmt.money(2**63 - 1, "jpy") == "¥" + f"{2**63 - 1:,}"


def test_money_map_with_keys_and_values_of_any_type():
    text = fmt.money_map({"usd": 100, 5: 200, "eur": float("nan"), None: "x"})
    assert "$1.00" in text and text.count(" · ") == 3


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_rates_durations_counts_and_sizes_of_any_value_are_text(value):
    for render in (fmt.rate, fmt.duration, fmt.count, fmt.size, fmt.mask_email):
        assert isinstance(render(value), (str, type(None))), render.__name__
    if isinstance(value, float) and not math.isfinite(value):
        assert fmt.rate(value) == fmt.duration(value) == fmt.count(value) == "–"
