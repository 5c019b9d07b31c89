"""Windows and calendar periods (spec section 2), instants worked out by hand from the zone rules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from metrics.windows import (
    PRESETS, Window, calendar_month, iso, iso_week, last, month, parse_instant, today, utc, week,
)

UTC = timezone.utc


def z(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# (zone, at, today start, week start, month start), all UTC.
CASES = [
    # Thursday 2026-11-26 07:00 EST; Nov 1 00:00 was still EDT (-4): DST ended at 02:00 that Sunday.
    ("America/New_York", z(2026, 11, 26, 12), z(2026, 11, 26, 5), z(2026, 11, 23, 5), z(2026, 11, 1, 4)),
    # Thursday 21:00 in Tokyo (+9, no DST): midnights are 15:00Z the day before.
    ("Asia/Tokyo", z(2026, 11, 26, 12), z(2026, 11, 25, 15), z(2026, 11, 22, 15), z(2026, 10, 31, 15)),
    # The week after the autumn change: Monday 11-02 00:00 EST = 05:00Z, the 1st still 04:00Z.
    ("America/New_York", z(2026, 11, 4, 12), z(2026, 11, 4, 5), z(2026, 11, 2, 5), z(2026, 11, 1, 4)),
    # The week of the spring change (Sunday 03-08 02:00 -> 03:00): Monday 03-09 00:00 EDT = 04:00Z,
    # while March 1st 00:00 was EST = 05:00Z.
    ("America/New_York", z(2026, 3, 10, 12), z(2026, 3, 10, 4), z(2026, 3, 9, 4), z(2026, 3, 1, 5)),
    # Santiago skips its midnight on 2026-09-06 (00:00 -04 -> 01:00 -03): the day starts at 01:00 -03 = 04:00Z.
    ("America/Santiago", z(2026, 9, 6, 12), z(2026, 9, 6, 4), z(2026, 8, 31, 4), z(2026, 9, 1, 4)),
    # Just after UTC midnight it is still yesterday evening in New York.
    ("America/New_York", z(2026, 11, 26, 0, 30), z(2026, 11, 25, 5), z(2026, 11, 23, 5), z(2026, 11, 1, 4)),
]


@pytest.mark.parametrize("zone, at, day_start, week_start, month_start", CASES)
def test_calendar_periods_start_at_local_midnight_monday_and_the_first(zone, at, day_start, week_start, month_start):
    tz = ZoneInfo(zone)
    assert today(at, tz) == Window(day_start, at)
    assert week(at, tz) == Window(week_start, at)
    assert month(at, tz) == Window(month_start, at)


def test_the_previous_period_has_the_same_length_and_ends_where_the_current_starts():
    current = today(z(2026, 11, 26, 12), ZoneInfo("America/New_York"))  # [05:00Z, 12:00Z): 7 h
    assert current.previous() == Window(z(2026, 11, 25, 22), z(2026, 11, 26, 5))


def test_a_window_is_half_open():
    window = last(z(2026, 11, 26, 12), hours=24)
    assert window == Window(z(2026, 11, 25, 12), z(2026, 11, 26, 12))
    assert window.contains(z(2026, 11, 25, 12))
    assert not window.contains(z(2026, 11, 26, 12))
    assert window.range() == {"$gte": z(2026, 11, 25, 12), "$lt": z(2026, 11, 26, 12)}


def test_presets_are_the_last_day_week_and_month_ending_at_at():
    at, tz = z(2026, 11, 26, 12), ZoneInfo("UTC")
    assert PRESETS["24h"](at, tz).start == z(2026, 11, 25, 12)
    assert PRESETS["7d"](at, tz).start == z(2026, 11, 19, 12)
    assert PRESETS["30d"](at, tz).start == z(2026, 10, 27, 12)
    assert PRESETS["today"](at, tz).start == z(2026, 11, 26)


def test_a_window_refuses_naive_or_reversed_bounds():
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(datetime(2026, 1, 1), z(2026, 1, 2))
    with pytest.raises(ValueError, match="ends before"):
        Window(z(2026, 1, 2), z(2026, 1, 1))


def test_a_whole_iso_week_and_month_in_new_york_span_the_dst_change():
    tz = ZoneInfo("America/New_York")
    # ISO week 44 of 2026: Mon 10-26 00:00 EDT (04:00Z) to Mon 11-02 00:00 EST (05:00Z): 7 days + 1 hour.
    assert iso_week(2026, 44, tz) == Window(z(2026, 10, 26, 4), z(2026, 11, 2, 5))
    assert iso_week(2026, 44, tz).length == timedelta(days=7, hours=1)
    # November 2026: 11-01 04:00Z to 12-01 05:00Z; December wraps to January.
    assert calendar_month(2026, 11, tz) == Window(z(2026, 11, 1, 4), z(2026, 12, 1, 5))
    assert calendar_month(2026, 12, tz) == Window(z(2026, 12, 1, 5), z(2027, 1, 1, 5))


@pytest.mark.parametrize("text, expected", [
    ("2026-11-26T12:00:00Z", z(2026, 11, 26, 12)),
    ("2026-11-26T07:00:00-05:00", z(2026, 11, 26, 12)),
    ("2026-11-26T12:00:00.250Z", z(2026, 11, 26, 12, 0, 0, 250000)),
    ("2026-11-26", z(2026, 11, 26)),  # a bare date is UTC midnight
    (" 2026-11-26T12:00 ", z(2026, 11, 26, 12)),
])
def test_instants_are_parsed_to_aware_utc(text, expected):
    assert parse_instant(text) == expected
    assert parse_instant(text).tzinfo == UTC


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "", "12:00 tomorrow"])
def test_a_bad_instant_is_one_line_with_an_example(text):
    with pytest.raises(ValueError) as err:
        parse_instant(text)
    assert "\n" not in str(err.value) and "2026-11-26T12:00:00Z" in str(err.value)


def test_iso_writes_utc_with_z_and_milliseconds_only_when_present():
    assert iso(z(2026, 11, 26, 12)) == "2026-11-26T12:00:00Z"
    assert iso(z(2026, 11, 26, 12, 0, 0, 250000)) == "2026-11-26T12:00:00.250Z"
    assert iso(datetime(2026, 11, 26, 7, tzinfo=ZoneInfo("America/New_York"))) == "2026-11-26T12:00:00Z"
    assert iso(None) is None


def test_naive_datetimes_are_taken_as_utc():
    assert utc(datetime(2026, 11, 26, 12)) == z(2026, 11, 26, 12)


# -- previous periods (spec section 2: like with like) -------------------------------

from metrics.windows import CALENDAR, Window, previous_period  # noqa: E402


def _period(name, at, zone):
    from zoneinfo import ZoneInfo
    return CALENDAR[name](at, ZoneInfo(zone)), ZoneInfo(zone)


def test_today_compares_with_yesterday_until_the_same_local_time():
    at = datetime(2026, 11, 18, 14, 30, tzinfo=timezone.utc)  # 09:30 in New York
    now, tz = _period("today", at, "America/New_York")
    prev = previous_period("today", now, tz)
    assert prev.start == datetime(2026, 11, 17, 5, 0, tzinfo=timezone.utc)
    assert prev.end == datetime(2026, 11, 17, 14, 30, tzinfo=timezone.utc)


def test_today_after_the_dst_change_compares_local_clock_times():
    at = datetime(2026, 11, 2, 14, 30, tzinfo=timezone.utc)  # Monday 09:30 EST; Sunday was 25 hours long
    now, tz = _period("today", at, "America/New_York")
    prev = previous_period("today", now, tz)
    assert prev.start == datetime(2026, 11, 1, 4, 0, tzinfo=timezone.utc)   # Sunday 00:00 EDT
    assert prev.end == datetime(2026, 11, 1, 14, 30, tzinfo=timezone.utc)   # Sunday 09:30 EST


def test_week_to_date_compares_with_last_week_to_the_same_weekday_and_time():
    at = datetime(2026, 11, 18, 9, 30, tzinfo=timezone.utc)  # Wednesday
    now, tz = _period("week", at, "UTC")
    prev = previous_period("week", now, tz)
    assert (prev.start, prev.end) == (datetime(2026, 11, 9, tzinfo=timezone.utc), datetime(2026, 11, 11, 9, 30, tzinfo=timezone.utc))


def test_month_to_date_compares_with_the_previous_month_to_the_same_day_or_its_end():
    now, tz = _period("month", datetime(2026, 11, 18, 9, 30, tzinfo=timezone.utc), "Asia/Kolkata")
    prev = previous_period("month", now, tz)
    assert prev.start == datetime(2026, 9, 30, 18, 30, tzinfo=timezone.utc)  # 1 October 00:00 IST
    assert prev.end == datetime(2026, 10, 18, 9, 30, tzinfo=timezone.utc)
    march, tz = _period("month", datetime(2027, 3, 31, 12, 0, tzinfo=timezone.utc), "UTC")
    prev = previous_period("month", march, tz)
    assert (prev.start, prev.end) == (datetime(2027, 2, 1, tzinfo=timezone.utc), datetime(2027, 3, 1, tzinfo=timezone.utc))


def test_a_rolling_window_compares_with_the_same_length_just_before():
    w = Window(datetime(2026, 11, 17, 12, tzinfo=timezone.utc), datetime(2026, 11, 18, 12, tzinfo=timezone.utc))
    assert previous_period("24h", w, None) == w.previous()
