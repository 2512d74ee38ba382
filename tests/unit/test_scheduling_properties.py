"""Property tests: our scheduler against independent oracles on random expressions."""

from __future__ import annotations

import calendar
import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.errors import InvalidSchedule
from app.schedule import cron
from app.schedule.scheduling import next_run_at, next_run_times, validate_timezone

SETTINGS = settings(max_examples=200, deadline=None)
MINUTE = timedelta(minutes=1)


@st.composite
def field(
    draw: st.DrawFn, low: int, high: int, kinds: tuple[str, ...] = ("star", "value", "range", "N/S")
) -> tuple[str, set[int]]:
    """A cron field (1-3 comma-separated items) and, expanded independently, its values."""
    texts: list[str] = []
    values: set[int] = set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds))
        a = draw(st.integers(low, high - 1))
        # No one-value ranges such as "2-2": croniter 7.0 reads them as "*" (a croniter
        # bug; test_cron covers them by example).
        b = draw(st.integers(a + 1, high))
        step = draw(st.integers(1, high - low + 1))
        if kind == "star":
            texts.append(f"*/{step}")
            values |= set(range(low, high + 1, step))
        elif kind == "value":
            texts.append(str(a))
            values.add(a)
        elif kind == "range":
            texts.append(f"{a}-{b}/{step}")
            values |= set(range(a, b + 1, step))
        else:
            texts.append(f"{a}/{step}")
            values |= set(range(a, high + 1, step))
    return ",".join(texts), values


def plain_or_star(
    low: int, high: int, kinds: tuple[str, ...] = ("star", "value", "range", "N/S")
) -> st.SearchStrategy[tuple[str, set[int]]]:
    return st.one_of(st.just(("*", set(range(low, high + 1)))), field(low, high, kinds))


@st.composite
def plain_expressions(draw: st.DrawFn) -> str:
    """Expressions without L/W/#, whose day fields croniter reads the way cronie does."""
    minute = draw(plain_or_star(0, 59))[0]
    hour = draw(plain_or_star(0, 23))[0]
    month = draw(plain_or_star(1, 12))[0]
    dom, dom_values = draw(plain_or_star(1, 31))
    # croniter reads "1/2" in day-of-week as 1-6/2; we (like cronsim) read it as 1-7/2,
    # i.e. with Sunday, the same as cronie's own "1-7/2".
    dow, dow_values = draw(plain_or_star(0, 7, ("star", "value", "range")))
    # croniter folds a full set such as "1-31" into "*", cronie does not (it then ORs).
    assume(dom == "*" or len(dom_values) < 31)
    assume(dow == "*" or len({v % 7 for v in dow_values}) < 7)
    return f"{minute} {hour} {dom} {month} {dow}"


instants = st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31), timezones=st.just(UTC))


@SETTINGS
@given(plain_expressions(), instants)
def test_in_utc_we_agree_with_croniter_on_plain_expressions(
    expression: str, after: datetime
) -> None:
    try:
        ours = next_run_at(expression, "UTC", after)
    except InvalidSchedule as error:
        assume("never fires" not in error.message)
        raise
    # implement_cron_bug=True selects cronie's day rule for fields starting with "*".
    theirs = croniter(expression, after, implement_cron_bug=True).get_next(datetime)
    assert ours == theirs


# An independent reading of the day fields: nearest weekday as "closest Monday-Friday of
# the same month", nth weekday by counting from day 1.
DOM_SPECIALS = st.sampled_from(["L", "LW", "1W", "15W", "30W", "31W"])
DOW_SPECIALS = st.sampled_from(["5#3", "1#1", "0#5", "6#2", "5L", "0L", "7#4"])


@st.composite
def day_expressions(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    dom_items = draw(st.lists(st.one_of(DOM_SPECIALS, st.integers(1, 31).map(str)),
                              min_size=1, max_size=3))
    dow_items = draw(st.lists(st.one_of(DOW_SPECIALS, st.integers(0, 7).map(str)),
                              min_size=1, max_size=2))
    nearest = [item for item in dom_items if item.endswith("W") and item != "LW"]
    if nearest:
        dom_items = nearest[:1]  # NW stands alone in its field
    if draw(st.booleans()):
        dom_items = ["*"]
    elif draw(st.booleans()):
        dow_items = ["*"]
    hour = draw(st.integers(0, 23))
    minute = draw(st.integers(0, 59))
    return f"{minute} {hour} {','.join(dom_items)} * {','.join(dow_items)}", dom_items, dow_items


def day_matches(day: date, dom_items: list[str], dow_items: list[str]) -> bool:
    last = calendar.monthrange(day.year, day.month)[1]
    weekdays = [d for d in range(1, last + 1) if date(day.year, day.month, d).weekday() < 5]
    cron_dow = (day.weekday() + 1) % 7

    def dom_item(item: str) -> bool:
        if item == "*":
            return True
        if item == "L":
            return day.day == last
        if item == "LW":
            return day.day == weekdays[-1]
        if item.endswith("W"):
            wanted = int(item[:-1])
            return wanted <= last and day.day == min(weekdays, key=lambda d: abs(d - wanted))
        return day.day == int(item)

    def dow_item(item: str) -> bool:
        if item == "*":
            return True
        if "#" in item:
            weekday, nth = item.split("#")
            return cron_dow == int(weekday) % 7 and (day.day - 1) // 7 + 1 == int(nth)
        if item.endswith("L"):
            return cron_dow == int(item[:-1]) % 7 and day.day + 7 > last
        return cron_dow == int(item) % 7

    dom_ok = any(dom_item(item) for item in dom_items)
    dow_ok = any(dow_item(item) for item in dow_items)
    if dom_items[0].startswith("*") or dow_items[0].startswith("*"):
        return dom_ok and dow_ok
    return dom_ok or dow_ok


@SETTINGS
@given(day_expressions(), instants)
def test_in_utc_special_day_syntax_agrees_with_a_day_by_day_oracle(
    case: tuple[str, list[str], list[str]], after: datetime
) -> None:
    expression, dom_items, dow_items = case
    minute, hour = int(expression.split()[0]), int(expression.split()[1])
    day = after.date()
    for _ in range(800):
        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
        if candidate > after and day_matches(day, dom_items, dow_items):
            break
        day += timedelta(days=1)
    else:
        assume(False)
    assert next_run_at(expression, "UTC", after) == candidate


# Transitions of 2026 (UTC), including 30-minute, 45-minute-offset and 2-hour shifts and
# a zone that skips midnight.
TRANSITIONS = {
    "America/New_York": [datetime(2026, 3, 8, 7), datetime(2026, 11, 1, 6)],
    "Europe/London": [datetime(2026, 3, 29, 1), datetime(2026, 10, 25, 1)],
    "Australia/Lord_Howe": [datetime(2026, 4, 4, 15), datetime(2026, 10, 3, 15, 30)],
    "Pacific/Chatham": [datetime(2026, 4, 4, 14), datetime(2026, 9, 26, 14)],
    "America/Santiago": [datetime(2026, 4, 5, 3), datetime(2026, 9, 6, 4)],
    "Antarctica/Troll": [datetime(2026, 3, 29, 1), datetime(2026, 10, 25, 1)],
    "America/St_Johns": [datetime(2026, 3, 8, 5, 30), datetime(2026, 11, 1, 4, 30)],
    "Europe/Dublin": [datetime(2026, 3, 29, 1), datetime(2026, 10, 25, 1)],
    "Asia/Kolkata": [datetime(2026, 6, 1)],
}


@st.composite
def near_transitions(draw: st.DrawFn) -> tuple[str, datetime]:
    zone = draw(st.sampled_from(sorted(TRANSITIONS)))
    moment = draw(st.sampled_from(TRANSITIONS[zone]))
    shift = timedelta(seconds=draw(st.integers(-30 * 3600, 6 * 3600)))
    return zone, (moment + shift).replace(tzinfo=UTC)


def oracle(minutes: set[int], hours: set[int], fixed: bool, zone: ZoneInfo,
           after: datetime) -> datetime:
    """The DST rules restated minute by minute over real instants."""
    moment = after.replace(second=0, microsecond=0) + MINUTE
    while True:
        local = moment.astimezone(zone)
        if local.minute in minutes and local.hour in hours and not (fixed and local.fold):
            return moment
        previous = (moment - MINUTE).astimezone(zone)
        if fixed and local.utcoffset() > previous.utcoffset():
            wall = previous.replace(tzinfo=None) + MINUTE
            while wall < local.replace(tzinfo=None):
                if wall.minute in minutes and wall.hour in hours:
                    return moment
                wall += MINUTE
        moment += MINUTE


@settings(max_examples=150, deadline=None)
@given(plain_or_star(0, 59), plain_or_star(0, 23), near_transitions())
def test_around_dst_transitions_we_agree_with_a_minute_by_minute_oracle(
    minute: tuple[str, set[int]], hour: tuple[str, set[int]], place: tuple[str, datetime]
) -> None:
    (minute_text, minutes), (hour_text, hours) = minute, hour
    zone_name, after = place
    zone = validate_timezone(zone_name)
    fixed = not (minute_text.startswith("*") or hour_text.startswith("*"))
    expected = []
    moment = after
    for _ in range(3):
        moment = oracle(minutes, hours, fixed, zone, moment)
        expected.append(moment)
    assert next_run_times(f"{minute_text} {hour_text} * * *", zone_name, after, 3) == expected


ZONES = [*sorted(TRANSITIONS), "UTC", "Asia/Tehran", "Africa/Casablanca", "Australia/Sydney"]


@SETTINGS
@given(day_expressions(), st.sampled_from(ZONES), instants)
def test_fire_times_increase_and_match_the_local_wall_clock(
    case: tuple[str, list[str], list[str]], zone_name: str, after: datetime
) -> None:
    expression = case[0]
    spec = cron.parse(expression)
    zone = validate_timezone(zone_name)
    times = next_run_times(expression, zone_name, after, 5)
    assert after < times[0]
    assert all(earlier < later for earlier, later in itertools.pairwise(times))
    for moment in times:
        local = moment.astimezone(zone)
        if cron.matches(spec, local):
            continue
        # Only a fixed-time job may fire off its wall time: at the end of a DST gap.
        previous = (moment - MINUTE).astimezone(zone)
        assert spec.fixed_time and local.utcoffset() > previous.utcoffset()
