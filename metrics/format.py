"""Numbers for people, and customer emails masked: one place for every consumer
(terminal, dashboard, Slack, reports) so they all read the same."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# ISO 4217 exponents differ: JPY has no minor unit, so 1000 is ¥1,000, not ¥10.00.
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$", "chf": "CHF ", "inr": "₹"}


def money(minor: int | float | None, currency: str) -> str:
    """``money(123456, "usd")`` -> ``$1,234.56``."""
    if minor is None:
        return "–"
    cur = currency.lower()
    # Decimal, rounding half up: an average of 2525.5 cents shows as $25.26, where binary
    # floats would give $25.25, and int64 amounts beyond 2**53 stay exact.
    exponent = Decimal(1) if cur in ZERO_DECIMAL else Decimal("0.01")
    value = (Decimal(str(minor)) * exponent).quantize(exponent, rounding=ROUND_HALF_UP)
    symbol = SYMBOLS.get(cur)
    text = f"{abs(value):,}"
    sign = "-" if value < 0 else ""
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {cur.upper()}"


def money_map(amounts: dict[str, int | float] | None) -> str:
    """``{"usd": 100, "eur": 250}`` -> ``$1.00 · €2.50``; nothing -> ``–``."""
    if not amounts:
        return "–"
    return " · ".join(money(v, c) for c, v in sorted(amounts.items()))


def duration(ms: float | None) -> str:
    """``850`` -> ``850 ms``; ``12500`` -> ``12.5 s``; ``None`` -> ``–``."""
    if ms is None:
        return "–"
    if abs(ms) < 1000:
        return f"{ms:,.0f} ms"
    if abs(ms) < 120_000:
        return f"{ms / 1000:,.1f} s"
    if abs(ms) < 7_200_000:
        return f"{ms / 60_000:,.0f} min"
    return f"{ms / 3_600_000:,.1f} h"


def rate(value: float | None, digits: int = 1) -> str:
    """``0.9876`` -> ``98.8%``; ``None`` (nothing to divide) -> ``–``."""
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def count(value: int | None, noun: str | None = None) -> str:
    """``1,234``; with a noun, ``1 refund`` / ``3 refunds`` (nouns that take an s)."""
    if value is None:
        return "–"
    return f"{value:,}" if noun is None else f"{value:,} {noun}{'' if value == 1 else 's'}"


def size(num_bytes: int | None) -> str:
    if num_bytes is None:
        return "–"
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TiB"  # pragma: no cover


def mask_email(email: object) -> str | None:
    """``jane.doe@example.com`` -> ``j***@example.com`` (the domain stays: it helps triage)."""
    if email is None:
        return None
    text = str(email)
    local, at, domain = text.partition("@")
    if not at:
        return (text[:1] + "***") if text else text
    return f"{local[:1]}***@{domain}"
