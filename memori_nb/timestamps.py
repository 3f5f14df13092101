"""Reading message times: every reader uses these rules, and a day/month order is never
guessed value by value.

Read everywhere: datetimes; ISO 8601; epoch seconds, milliseconds, microseconds or
nanoseconds (numbers or numeric strings, told apart by size); RFC 2822
(``Tue, 02 Jan 2024 13:42:02 +0100``); dates with a month name (``1:56 pm on 8 May, 2023``);
year-first numeric dates (``2023/07/12 (Wed) 10:14``); and day/month numeric dates
(``12.01.2024, 13:42:02``, ``01/12/2024 1:42 PM``) under one order for the whole column or
file. Times with a zone are converted to UTC; times without one are taken as UTC.

Day or month first is decided once per column or file (:class:`TimestampEvidence`): from the
values when that is certain (some value has a first number over 12: day first; some has a
second number over 12: month first), or from the user (``dayfirst=`` or a ``strptime``
``timestamp_format=``). When no value decides it, the reader stops and asks
(:class:`AmbiguousTimestampsError`). A value that cannot be read is a problem for that
message only: its time is left empty, with a warning.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import InvalidInputError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Epoch numbers are told apart by size: from this magnitude on, the unit is smaller
# (1e11 seconds is the year 5138; 1e11 milliseconds is 1973). Below 1e8 (1973 in seconds)
# a number is not taken for a time: "20240112", "2024" or an Excel serial 45303.5 are not.
_EPOCH_UNITS = ((1e17, 1e-9), (1e14, 1e-6), (1e11, 1e-3), (1e8, 1.0))
_EPOCH_YEARS = (1970, 2200)
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
# A numeric date: day/month/year in either order, or year/month/day; then maybe a time.
_NUMERIC_DATE = re.compile(
    r"(?P<a>\d{1,4})(?P<sep>[./-])(?P<b>\d{1,2})(?P=sep)(?P<c>\d{1,4})"
    r"(?:\s*\([A-Za-z]{2,9}\.?\))?(?:[\sT,]+(?P<time>.*))?", re.S)
_TIME = re.compile(
    r"(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d{1,9}))?)?\s*"
    r"(?P<ampm>[ap]\.?\s?m\.?)?\s*(?P<zone>Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?", re.I)
# Two-digit years: below this, 20xx; otherwise 19xx.
_TWO_DIGIT_PIVOT = 70
_EXAMPLES = 3
_WEEKDAY = re.compile(r"^(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+", re.I)
# Strict RFC 2822 only: email.utils ignores AM/PM and zones it does not know.
_RFC_2822 = re.compile(r"(?:[A-Z][a-z]{2},\s*)?\d{1,2}\s+[A-Z][a-z]{2}\s+\d{4}\s+"
                       r"\d{2}:\d{2}(?::\d{2})?\s+(?:[+-]\d{4}|GMT|UT|UTC|Z)")
# "GMT+1" / "UTC-05:00" as an offset: dateutil reads a sign after GMT the POSIX way (inverted).
_GMT_OFFSET = re.compile(r"(?:GMT|UTC)\s*([+-])(\d{1,2})(?::?(\d{2}))?\b")


@dataclass(frozen=True, slots=True)
class TimestampRule:
    """How one column or file writes its dates.

    ``dayfirst``: True for day/month/year, False for month/day/year, None when no value of
    the source needs it. ``format``: a ``strptime`` format every text value follows (then
    ``dayfirst`` is not used for text values).
    """

    dayfirst: bool | None = None
    format: str | None = None


class AmbiguousTimestampsError(InvalidInputError):
    """Dates of a source could be day/month or month/day and nothing says which."""


@dataclass(slots=True)
class TimestampEvidence:
    """What a source's values say about day/month order; :meth:`rule` decides it.

    Feed it every timestamp value of one column or file (:meth:`add`), or the text of the
    file itself (:meth:`scan_text`, which finds numeric dates anywhere in it).
    """

    day_first: int = 0
    month_first: int = 0
    undecided: int = 0
    examples_day: tuple[str, ...] = ()
    examples_month: tuple[str, ...] = ()
    examples_undecided: tuple[str, ...] = ()

    def add(self, value: Any, count: int = 1) -> None:
        """Count ``value`` (seen ``count`` times) if it is a day/month numeric date."""
        if isinstance(value, str):
            if value[:4].isdigit():  # a year (or an epoch number) first: never day/month
                return
            match = _NUMERIC_DATE.match(_WEEKDAY.sub("", value.strip(), count=1))
            if match and len(match.group("a")) <= 2:
                first = int(match.group("a"))
                if len(match.group("c")) == 2 and first > 12:
                    # "24/01/12": day first, or a two-digit year first: it proves nothing.
                    self._count(1, 2, value, count)
                else:
                    self._count(first, int(match.group("b")), value, count)

    def scan_text(self, text: str) -> None:
        """Count every day/month numeric date in ``text`` (a whole file, or a chunk of it)."""
        for match in _SCAN.finditer(text):
            self._count(int(match.group(1)), int(match.group(3)), match.group(0))

    def _count(self, first: int, second: int, value: str, count: int = 1) -> None:
        if first > 12 and second <= 12:
            self.day_first += count
            if len(self.examples_day) < _EXAMPLES:
                self.examples_day += (value,)
        elif second > 12 and first <= 12:
            self.month_first += count
            if len(self.examples_month) < _EXAMPLES:
                self.examples_month += (value,)
        elif first <= 12 and second <= 12 and first != second:
            self.undecided += count
            if len(self.examples_undecided) < _EXAMPLES:
                self.examples_undecided += (value,)

    def rule(self, source: str, *, dayfirst: bool | None = None,
             format: str | None = None) -> TimestampRule:
        """The rule for the source: the user's when given, else what the values prove.

        Raises:
            AmbiguousTimestampsError: values both ways, or only values that could be
                either, and the user said nothing.
        """
        if format is not None or dayfirst is not None:
            return TimestampRule(dayfirst=dayfirst, format=format)
        how = ("pass dayfirst=True (day/month/year) or dayfirst=False (month/day/year), "
               "or timestamp_format= (CLI: --dayfirst / --monthfirst / --timestamp-format)")
        if self.day_first and self.month_first:
            raise AmbiguousTimestampsError(
                f"{source}: dates are written both day first ({_show(self.examples_day)}) "
                f"and month first ({_show(self.examples_month)}); {how}")
        if self.day_first:
            return TimestampRule(dayfirst=True)
        if self.month_first:
            return TimestampRule(dayfirst=False)
        if self.undecided:
            dates = "1 date" if self.undecided == 1 else f"{self.undecided:,} dates"
            raise AmbiguousTimestampsError(
                f"{source}: {dates} could be day/month or month/day "
                f"({_show(self.examples_undecided)}) and none shows which; {how}")
        return TimestampRule()


# Numeric day/month dates anywhere in a text (a file's bytes decoded): not part of a longer
# number, with a plausible year after them.
_SCAN = re.compile(r"(?<![\d./-])(\d{1,2})([./-])(\d{1,2})\2(?:\d{4}|\d{2})(?![\d./-])")


def read_timestamp(value: Any, rule: TimestampRule = TimestampRule()) -> datetime | None:
    """A timezone-aware UTC datetime for ``value``, or None when it is not a date and time.

    Example:
        >>> read_timestamp("12.01.2024, 13:42:02", TimestampRule(dayfirst=True)).isoformat()
        '2024-01-12T13:42:02+00:00'
    """
    if type(value) is str and value[4:5] == "-" and rule.format is None:
        # Year first (ISO 8601, as most exports write it): read at once, a third of the
        # general path's cost. Anything fromisoformat refuses takes the general path.
        try:
            return _as_utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    if type(value).__module__ == "numpy":  # numpy scalars, e.g. from DataFrame.iterrows()
        value = _from_numpy(value)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return _from_epoch(float(value))
    elif isinstance(value, str):
        moment = _from_text(value.strip(), rule)
        if moment is None:
            return None
    else:
        to_pydatetime = getattr(value, "to_pydatetime", None)  # pandas Timestamp
        if to_pydatetime is None:
            return None
        moment = to_pydatetime()
    if moment != moment or not isinstance(moment, datetime):  # NaT
        return None
    return _as_utc(moment)


def _as_utc(moment: datetime) -> datetime | None:
    """``moment`` in UTC (a naive one is taken as UTC); None past the calendar's ends."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except (OverflowError, ValueError):  # at the very ends of the calendar
        return None


def _from_numpy(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (datetime64 as a pandas Timestamp)."""
    if type(value).__name__ == "datetime64":
        import pandas as pd

        return pd.Timestamp(value) if value == value else None
    return value.item()


def _from_epoch(number: float) -> datetime | None:
    if not math.isfinite(number):
        return None
    for threshold, unit in _EPOCH_UNITS:
        if abs(number) >= threshold:
            try:
                moment = _EPOCH + timedelta(seconds=number * unit)
            except (OverflowError, ValueError):
                return None
            # Outside these years a number is not a chat message's time, whatever its unit.
            return moment if _EPOCH_YEARS[0] <= moment.year <= _EPOCH_YEARS[1] else None
    return None


def _from_text(text: str, rule: TimestampRule) -> datetime | None:
    if not text:
        return None
    if rule.format is not None:
        try:
            return datetime.strptime(text, rule.format)
        except ValueError:
            return None
    if _NUMBER.fullmatch(text):
        try:
            moment = _from_epoch(float(text))
        except OverflowError:
            return None
        if moment is not None:
            return moment
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    # A weekday in front ("Fri, 12.01.2024 13:42") must not take the date past the rule.
    match = _NUMERIC_DATE.fullmatch(_WEEKDAY.sub("", text, count=1))
    if match:
        return _from_numeric(match, rule)
    if _RFC_2822.fullmatch(text):
        try:
            return parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            pass
    return _from_words(_GMT_OFFSET.sub(
        lambda m: f"{m.group(1)}{int(m.group(2)):02d}:{m.group(3) or '00'}", text))


def _from_numeric(match: re.Match, rule: TimestampRule) -> datetime | None:
    a, b, c = match.group("a"), int(match.group("b")), match.group("c")
    if len(a) == 4:
        year, month, day = int(a), b, int(c)
    elif len(c) in (2, 4):
        first = int(a)
        dayfirst = rule.dayfirst
        if dayfirst is None:
            # No rule was needed for the source: only a value that cannot be read two
            # ways is read. Anything else is left unread rather than guessed.
            if first > 12 >= b:
                dayfirst = True
            elif b > 12 >= first or first == b:
                dayfirst = False
            else:
                return None
        day, month = (first, b) if dayfirst else (b, first)
        year = int(c) if len(c) == 4 else int(c) + (2000 if int(c) < _TWO_DIGIT_PIVOT else 1900)
    else:
        return None
    try:
        moment = datetime(year, month, day)
    except ValueError:
        return None
    time_text = (match.group("time") or "").strip()
    if not time_text:
        return moment
    time = _TIME.fullmatch(time_text)
    if time is None:
        return None
    hour, minute = int(time.group("h")), int(time.group("m"))
    second = int(time.group("s") or 0)
    micros = int((time.group("f") or "0")[:6].ljust(6, "0"))
    ampm = (time.group("ampm") or "").lower().replace(".", "").replace(" ", "")
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    try:
        moment = moment.replace(hour=hour, minute=minute, second=second, microsecond=micros)
    except ValueError:
        return None
    zone = (time.group("zone") or "").upper()
    if zone and zone not in ("Z", "UTC", "GMT"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        return moment.replace(tzinfo=timezone(sign * offset))
    return moment.replace(tzinfo=timezone.utc) if zone else moment


_SENTINELS = (datetime(1901, 2, 3, 4, 5, 6), datetime(1902, 3, 4, 5, 6, 7))


def _from_words(text: str) -> datetime | None:
    """Dates with a month name ("8 May 2023", "1:56 pm on 8 May, 2023"), through dateutil.

    A value missing its year, month or day is not a date: dateutil would fill the gap from
    today. It is parsed against two different defaults and kept only when both agree.
    """
    from dateutil import parser

    cleaned = re.sub(r"\s+(?:on|at)\s+", " ", text)
    if not re.search(r"[A-Za-z]{3}", cleaned) or not re.search(r"\d", cleaned):
        return None
    results = []
    with warnings.catch_warnings():
        # An unknown zone name would be dropped with a warning, the time taken as UTC: wrong.
        warnings.simplefilter("error")
        for default in _SENTINELS:
            try:
                results.append(parser.parse(cleaned, default=default))
            except (ValueError, OverflowError, TypeError, Warning):
                return None
    first, second = results
    if (first.year, first.month, first.day) != (second.year, second.month, second.day):
        return None
    # A part of the time missing from the text differs between the two defaults: it is 0,
    # each part on its own ("3pm" is 15:00, not midnight; "8 May 2023" is midnight).
    return first.replace(hour=first.hour if first.hour == second.hour else 0,
                         minute=first.minute if first.minute == second.minute else 0,
                         second=first.second if first.second == second.second else 0)


def _show(examples: tuple[str, ...]) -> str:
    return ", ".join(repr(e) for e in examples)
