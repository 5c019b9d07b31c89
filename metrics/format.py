"""Numbers for people, and customer emails masked: one place for every consumer
(terminal, dashboard, Slack, reports) so they all read the same."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, localcontext
from numbers import Real

# ISO 4217 exponents differ: JPY has no minor unit, so 1000 is ¥1,000, not ¥10.00.
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$", "chf": "CHF ", "inr": "₹"}
# ISO 4217's code for "no currency": what a currency field that is not text reads as.
NO_CURRENCY = "xxx"
DASH = "–"


def number(value: object) -> float | int | None:
    """``value`` when it is a finite number (not a bool), else ``None``: whatever the platform stored."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def currency_code(currency: object) -> str:
    """A currency as lower-case text; anything that is not text is ``xxx`` (no currency)."""
    return currency.strip().lower() or NO_CURRENCY if isinstance(currency, str) else NO_CURRENCY


def money(minor: object, currency: object) -> str:
    """``money(123456, "usd")`` -> ``$1,234.56``; not a finite number -> ``–``."""
    minor = number(minor)
    if minor is None:
        return DASH
    cur = currency_code(currency)
    # Decimal, rounding half up: an average of 2525.5 cents shows as $25.26, where binary
    # floats would give $25.25, and int64 amounts beyond 2**53 stay exact (however many digits).
    exponent = Decimal(1) if cur in ZERO_DECIMAL else Decimal("0.01")
    with localcontext() as ctx:
        ctx.prec = 400
        value = (Decimal(str(minor)) * exponent).quantize(exponent, rounding=ROUND_HALF_UP)
        text = f"{abs(value):,f}"
    symbol = SYMBOLS.get(cur)
    sign = "-" if value < 0 else ""
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {cur.upper()}"


def money_map(amounts: object) -> str:
    """``{"usd": 100, "eur": 250}`` -> ``$1.00 · €2.50``; nothing -> ``–``."""
    if not amounts or not isinstance(amounts, dict):
        return DASH
    return " · ".join(money(v, c) for c, v in sorted(amounts.items(), key=lambda kv: str(kv[0])))


def duration(ms: object) -> str:
    """``850`` -> ``850 ms``; ``12500`` -> ``12.5 s``; ``None`` -> ``–``."""
    ms = number(ms)
    if ms is None:
        return DASH
    if abs(ms) < 1000:
        return f"{ms:,.0f} ms"
    if abs(ms) < 120_000:
        return f"{ms / 1000:,.1f} s"
    if abs(ms) < 7_200_000:
        return f"{ms / 60_000:,.0f} min"
    return f"{ms / 3_600_000:,.1f} h"


def rate(value: object, digits: int = 1) -> str:
    """``0.9876`` -> ``98.8%``; ``None`` (nothing to divide) -> ``–``."""
    value = number(value)
    return DASH if value is None else f"{value * 100:.{digits}f}%"


def count(value: object, noun: str | None = None) -> str:
    """``1,234``; with a noun, ``1 refund`` / ``3 refunds`` (nouns that take an s)."""
    value = number(value)
    if value is None:
        return DASH
    shown = f"{value:,}" if isinstance(value, int) or not float(value).is_integer() else f"{int(value):,}"
    return shown if noun is None else f"{shown} {noun}{'' if value == 1 else 's'}"


def size(num_bytes: object) -> str:
    value = number(num_bytes)
    if value is None:
        return DASH
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
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
