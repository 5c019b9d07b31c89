"""Report periods: ISO weeks and calendar months in the configured time zone.

A week runs Monday 00:00 to the next Monday 00:00 local time (an hour longer
or shorter the week the clocks change); it is compared with the ISO week
before it.  A month is compared with the calendar month before it.  Only a
period that has ended is reported (:func:`require_complete`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from metrics.windows import Window, calendar_month, iso_week, utc

Kind = Literal["weekly", "monthly"]


class PeriodError(ValueError):
    """A week or month the report cannot be built for, worded for the person who asked."""


@dataclass(frozen=True)
class Period:
    kind: Kind
    label: str  # "2026-W47", "2026-10"
    window: Window
    previous_label: str
    previous: Window
    timezone: str

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def first_day(self) -> date:
        return self.window.start.astimezone(self.tz).date()

    @property
    def last_day(self) -> date:
        return (self.window.end.astimezone(self.tz) - timedelta(microseconds=1)).date()

    @property
    def noun(self) -> str:
        return "week" if self.kind == "weekly" else "month"

    @property
    def title(self) -> str:
        """``Week 2026-W47: Mon 16 Nov – Sun 22 Nov 2026``."""
        first, last = self.first_day, self.last_day
        if self.kind == "weekly":
            return f"Week {self.label}: {first:%a %d %b} – {last:%a %d %b %Y}"
        return f"Month {self.label}: {first:%d %b} – {last:%d %b %Y}"


WEEK_RE = re.compile(r"^\s*(\d{4})-?W(\d{1,2})\s*$", re.IGNORECASE)
MONTH_RE = re.compile(r"^\s*(\d{4})-(\d{1,2})\s*$")


def week_period(year: int, week_no: int, tz: ZoneInfo) -> Period:
    try:
        monday = date.fromisocalendar(year, week_no, 1)
    except ValueError:
        raise PeriodError(f"{year}-W{week_no:02d} is not an ISO week "
                          f"({year} has {date(year, 12, 28).isocalendar().week} weeks)") from None
    prev_year, prev_week, _ = (monday - timedelta(days=7)).isocalendar()
    return Period("weekly", f"{year}-W{week_no:02d}", iso_week(year, week_no, tz),
                  f"{prev_year}-W{prev_week:02d}", iso_week(prev_year, prev_week, tz), tz.key)


def month_period(year: int, month_no: int, tz: ZoneInfo) -> Period:
    if not 1 <= month_no <= 12:
        raise PeriodError(f"{year}-{month_no:02d} is not a month (01 to 12)")
    prev_year, prev_month = (year - 1, 12) if month_no == 1 else (year, month_no - 1)
    return Period("monthly", f"{year}-{month_no:02d}", calendar_month(year, month_no, tz),
                  f"{prev_year}-{prev_month:02d}", calendar_month(prev_year, prev_month, tz), tz.key)


def parse_week(text: str, tz: ZoneInfo) -> Period:
    """``2026-W47`` (or ``2026W47``) to its period in ``tz``."""
    match = WEEK_RE.match(text or "")
    if not match:
        raise PeriodError(f"not an ISO week: {text!r} (example: 2026-W47)")
    return week_period(int(match[1]), int(match[2]), tz)


def parse_month(text: str, tz: ZoneInfo) -> Period:
    """``2026-10`` to its period in ``tz``."""
    match = MONTH_RE.match(text or "")
    if not match:
        raise PeriodError(f"not a month: {text!r} (example: 2026-10)")
    return month_period(int(match[1]), int(match[2]), tz)


def last_complete_week(at: datetime, tz: ZoneInfo) -> Period:
    """The latest ISO week that ended at or before ``at`` (local time)."""
    year, week_no, _ = (utc(at).astimezone(tz).date() - timedelta(days=7)).isocalendar()
    return week_period(year, week_no, tz)


def last_complete_month(at: datetime, tz: ZoneInfo) -> Period:
    local = utc(at).astimezone(tz).date()
    year, month_no = (local.year - 1, 12) if local.month == 1 else (local.year, local.month - 1)
    return month_period(year, month_no, tz)


def require_complete(period: Period, at: datetime) -> Period:
    """Refuse a period that has not ended: its numbers would change after the report went out."""
    if period.window.end > utc(at):
        ends = period.window.end.astimezone(period.tz)
        raise PeriodError(f"{period.label} has not ended yet (it ends {ends:%a %d %b %Y %H:%M} {period.timezone})")
    return period
