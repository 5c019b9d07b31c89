"""Time windows (spec section 2): half-open ``[start, end)``, UTC inside.

Calendar periods (today, week, month) start at local midnight in the
configured zone.  A calendar period compares with the previous one up to the
same elapsed local time (today until 09:30 against yesterday until 09:30;
month to the 18th 09:30 against the previous month to its 18th 09:30, or its
end when shorter), as Stripe's dashboard does: :func:`previous_period`.  A
rolling window compares with the window of the same length just before it
(:meth:`Window.previous`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

UTC = timezone.utc


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __post_init__(self):
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end < self.start:
            raise ValueError("window ends before it starts")

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def previous(self) -> "Window":
        """Same length, ending where this one starts."""
        return Window(self.start - self.length, self.start)

    def range(self) -> dict:
        """The MongoDB range condition for this window."""
        return {"$gte": self.start.astimezone(UTC), "$lt": self.end.astimezone(UTC)}

    def contains(self, when: datetime) -> bool:
        return self.start <= when < self.end


def utc(when: datetime) -> datetime:
    """An aware UTC datetime; naive input is taken to be UTC (as pymongo returns it)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """ISO-8601 to an aware UTC datetime; a bare date or time without zone is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO-8601 instant: {text!r} (example: 2026-11-26T12:00:00Z)") from None
    return utc(value)


def iso(when: datetime | None) -> str | None:
    """``2026-11-26T12:00:00Z`` (milliseconds only when present)."""
    if when is None:
        return None
    when = utc(when)
    if when.microsecond:
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


# How far back the newest records are looked for, narrowest first.  SecantusDB
# reads every document an index range covers before it sorts, so a sorted read
# of "everything before at" costs the whole history; each wider range is read
# only when the narrower one held too few records.
NEWEST_LOOKBACKS = (timedelta(minutes=15), timedelta(hours=1), timedelta(days=1), timedelta(days=7),
                    timedelta(days=60), None)


def newest_before(read: Callable[[dict], list], at: datetime, enough: int = 1) -> list:
    """The newest records before ``at``, by ``read(range)`` over ranges bounded in time.

    ``read`` takes a range on the time field (``{"$gte", "$lt"}``, the last one
    ``{"$lt": at}`` alone) and returns at most ``enough`` records newest first;
    the first range that holds ``enough`` gives the answer.
    """
    for lookback in NEWEST_LOOKBACKS:
        found = read({"$lt": at} if lookback is None else {"$gte": at - lookback, "$lt": at})
        if len(found) >= enough:
            break
    return found


def last(at: datetime, **delta) -> Window:
    """``[at - delta, at)``: "24h" is ``last(at, hours=24)``."""
    return Window(at - timedelta(**delta), at)


def _local_start(at: datetime, tz: ZoneInfo, unit: str) -> datetime:
    local = utc(at).astimezone(tz)
    day = local.date()
    if unit == "week":
        day = day - timedelta(days=day.weekday())
    elif unit == "month":
        day = day.replace(day=1)
    # Midnight does not exist on a few zones' DST days (Santiago, Havana: 00:00 -> 01:00).  fold=0
    # gives it the offset from before the gap, which lands on the day's first real instant.
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def today(at: datetime, tz: ZoneInfo) -> Window:
    return Window(_local_start(at, tz, "day"), utc(at))


def week(at: datetime, tz: ZoneInfo) -> Window:
    return Window(_local_start(at, tz, "week"), utc(at))


def month(at: datetime, tz: ZoneInfo) -> Window:
    return Window(_local_start(at, tz, "month"), utc(at))


CALENDAR = {"today": today, "week": week, "month": month}


def _local(when: datetime, tz: ZoneInfo) -> datetime:
    return utc(when).astimezone(tz)


def _at_local(day, clock, tz: ZoneInfo) -> datetime:
    """A local date and wall-clock time as UTC (a time in a DST gap takes the offset from before it)."""
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


def previous_period(name: str, window: Window, tz: ZoneInfo) -> Window:
    """The period a calendar period compares with: the previous one, up to the same local time.

    ``name`` is ``today``, ``week`` or ``month`` (``CALENDAR``); ``window`` is
    the current period as it stands, ``[its start, at)``.  Any other name is a
    rolling window: the same length just before.
    """
    if name not in CALENDAR:
        return window.previous()
    end = _local(window.end, tz)
    if name == "today":
        day = end.date() - timedelta(days=1)
        start, stop = day, day
    elif name == "week":
        monday = end.date() - timedelta(days=end.weekday())
        start, stop = monday - timedelta(days=7), end.date() - timedelta(days=7)
    else:
        first = end.date().replace(day=1)
        prev_first = (first - timedelta(days=1)).replace(day=1)
        start = prev_first
        try:
            stop = prev_first.replace(day=end.day)
        except ValueError:  # the 31st against a 30-day month: the whole previous month
            return Window(_at_local(prev_first, datetime.min.time(), tz), _at_local(first, datetime.min.time(), tz))
    begin = _at_local(start, datetime.min.time(), tz)
    finish = _at_local(stop, end.time().replace(tzinfo=None), tz)
    return Window(begin, max(begin, finish))

# The dashboard's range picker; "custom" is built from two dates by the caller.
PRESETS = {
    "today": lambda at, tz: today(at, tz),
    "24h": lambda at, tz: last(at, hours=24),
    "7d": lambda at, tz: last(at, days=7),
    "30d": lambda at, tz: last(at, days=30),
}


def iso_week(year: int, week_no: int, tz: ZoneInfo) -> Window:
    """A whole ISO week ``[Monday 00:00, next Monday 00:00)`` in ``tz``."""
    monday = datetime.fromisocalendar(year, week_no, 1)
    start = monday.replace(tzinfo=tz).astimezone(UTC)
    end = (monday + timedelta(days=7)).replace(tzinfo=tz).astimezone(UTC)
    return Window(start, end)


def calendar_month(year: int, month_no: int, tz: ZoneInfo) -> Window:
    start = datetime(year, month_no, 1, tzinfo=tz)
    nxt = datetime(year + (month_no == 12), month_no % 12 + 1, 1, tzinfo=tz)
    return Window(start.astimezone(UTC), nxt.astimezone(UTC))
