"""Timestamps: every form people's data has, and a day/month order never guessed per value."""

from datetime import datetime, timezone

import pandas as pd
import pytest

from memori_nb import SeedData
from memori_nb.sources.dataframe import from_dataframe
from memori_nb.timestamps import (AmbiguousTimestampsError, TimestampEvidence, TimestampRule,
                                  read_timestamp)
from memori_nb.validation import check_conversations

UTC = timezone.utc
DAY_FIRST = TimestampRule(dayfirst=True)
MONTH_FIRST = TimestampRule(dayfirst=False)


@pytest.mark.parametrize(("value", "rule", "expected"), [
    ("2024-03-02T09:14:00Z", TimestampRule(), datetime(2024, 3, 2, 9, 14)),
    ("2024-03-02T10:14:00+01:00", TimestampRule(), datetime(2024, 3, 2, 9, 14)),
    ("2024-03-02 09:14:00", TimestampRule(), datetime(2024, 3, 2, 9, 14)),
    (1709370840, TimestampRule(), datetime(2024, 3, 2, 9, 14)),
    (1709370840000, TimestampRule(), datetime(2024, 3, 2, 9, 14)),
    ("1709370840", TimestampRule(), datetime(2024, 3, 2, 9, 14)),
    ("1709370840000", TimestampRule(), datetime(2024, 3, 2, 9, 14)),
    ("Sat, 02 Mar 2024 10:14:00 +0100", TimestampRule(), datetime(2024, 3, 2, 9, 14)),
    ("1:56 pm on 8 May, 2023", TimestampRule(), datetime(2023, 5, 8, 13, 56)),
    ("2023/07/12 (Wed) 10:14", TimestampRule(), datetime(2023, 7, 12, 10, 14)),
    ("12.01.2024, 13:42:02", DAY_FIRST, datetime(2024, 1, 12, 13, 42, 2)),
    ("12.01.2024, 13:42:02", MONTH_FIRST, datetime(2024, 12, 1, 13, 42, 2)),
    ("01/12/24 1:42 PM", MONTH_FIRST, datetime(2024, 1, 12, 13, 42)),
    ("31.12.2023 23:59:59+02:00", DAY_FIRST, datetime(2023, 12, 31, 21, 59, 59)),
    ("12.01.2024 13:42", TimestampRule(format="%d.%m.%Y %H:%M"), datetime(2024, 1, 12, 13, 42)),
    # A source's format holds for year-first text too (never read as ISO 8601 instead).
    ("2024-02-03 09:14", TimestampRule(format="%Y-%d-%m %H:%M"), datetime(2024, 3, 2, 9, 14)),
    (" 2024-03-02T09:14:00Z\n", TimestampRule(), datetime(2024, 3, 2, 9, 14)),
])
def test_every_form_is_read_as_utc(value, rule, expected):
    assert read_timestamp(value, rule) == expected.replace(tzinfo=UTC)


@pytest.mark.parametrize(("value", "rule"), [
    ("03/04/2024", TimestampRule()),            # could be either: never guessed
    ("13/01/2024", MONTH_FIRST),                # contradicts the column's rule: not swapped
    ("May 8", TimestampRule()),                 # no year: dateutil would take this year
    ("8 May 2023 10:00 EST", TimestampRule()),  # a zone name it cannot place
    ("next tuesday", TimestampRule()),
    (1e20, TimestampRule()),                     # no unit makes this a chat's time
    (True, TimestampRule()),
    ("9999-12-31T23:59:59-01:00", TimestampRule()),  # past the calendar's end in UTC
])
def test_what_cannot_be_read_for_sure_is_not_read(value, rule):
    assert read_timestamp(value, rule) is None


def test_the_rule_comes_from_the_values_only_when_they_prove_it():
    evidence = TimestampEvidence()
    for value in ("12.01.2024, 13:42:02", "29.12.2023, 22:42:04", "2024-01-01"):
        evidence.add(value)
    assert evidence.rule("chats.csv") == DAY_FIRST
    evidence = TimestampEvidence()
    evidence.add("12/01/2024")
    evidence.add("12/31/2024")
    assert evidence.rule("x") == MONTH_FIRST


def test_undecided_or_contradictory_dates_ask_the_user():
    evidence = TimestampEvidence()
    evidence.add("03/04/2024")
    with pytest.raises(AmbiguousTimestampsError, match="chats.csv: 1 date could be day/month "
                                                       "or month/day.*dayfirst"):
        evidence.rule("chats.csv")
    assert evidence.rule("chats.csv", dayfirst=True) == DAY_FIRST
    evidence.add("13/01/2024")
    evidence.add("01/13/2024")
    with pytest.raises(AmbiguousTimestampsError, match="both day first .* and month first"):
        evidence.rule("chats.csv")


def test_scanning_a_files_text_finds_its_dates():
    evidence = TimestampEvidence()
    evidence.scan_text('{"t": "12.01.2024, 13:42", "v": "version 1.2.3", "u": "29.12.2023"}')
    assert (evidence.day_first, evidence.undecided) == (1, 1)


def test_a_day_first_frame_is_read_day_first_and_keeps_its_order():
    # A real chat export's dates: 44% could be read either way; one value proves the order.
    df = pd.DataFrame({"conversation_id": ["c1"] * 3, "role": ["user", "assistant", "user"],
                       "content": ["first", "second", "third"],
                       "timestamp": ["12.01.2024, 13:42:02", "12.01.2024, 13:43:10",
                                     "29.01.2024, 08:00:00"]})
    [seed] = from_dataframe(df, entity_id="u1")
    [(_, conversation)] = list(check_conversations(seed))
    assert [m.content for m in conversation.messages] == ["first", "second", "third"]
    assert conversation.messages[0].timestamp == datetime(2024, 1, 12, 13, 42, 2, tzinfo=UTC)


def test_an_ambiguous_frame_asks_and_dayfirst_answers():
    df = pd.DataFrame({"conversation_id": ["c1", "c1"], "role": ["user", "assistant"],
                       "content": ["a", "b"], "timestamp": ["03/04/2024", "05/04/2024"]})
    with pytest.raises(AmbiguousTimestampsError, match="column 'timestamp'"):
        from_dataframe(df, entity_id="u1")
    [seed] = from_dataframe(df, entity_id="u1", dayfirst=False)
    [(_, conversation)] = list(check_conversations(seed))
    assert conversation.messages[0].timestamp.month == 3


def test_seed_data_built_in_code_is_judged_on_its_own_dates():
    data = SeedData.for_conversations(entity_id="u", conversations=[
        {"id": "c1", "messages": [{"role": "user", "content": "a", "timestamp": "03/04/2024"}]}])
    with pytest.raises(AmbiguousTimestampsError, match="entity 'u'"):
        list(check_conversations(data))
    data = SeedData.for_conversations(entity_id="u", dayfirst=True, conversations=data.data)
    [(_, conversation)] = list(check_conversations(data))
    assert conversation.messages[0].timestamp.month == 4


@pytest.mark.parametrize(("value", "rule", "expected"), [
    ("Jan 12, 2024, 1:42 PM", TimestampRule(), datetime(2024, 1, 12, 13, 42)),
    ("Mar 3, 2024 12:15 AM", TimestampRule(), datetime(2024, 3, 3, 0, 15)),
    ("January 12, 2024 13:42 +05:30", TimestampRule(), datetime(2024, 1, 12, 8, 12)),
    ("12 Jan 2024 13:42 GMT-5", TimestampRule(), datetime(2024, 1, 12, 18, 42)),
    ("Fri, 12.01.2024 13:42", DAY_FIRST, datetime(2024, 1, 12, 13, 42)),
    ("20240112", TimestampRule(), datetime(2024, 1, 12)),
    # An hour without minutes keeps its hour (it was once read as midnight).
    ("March 4, 2024 3pm", TimestampRule(), datetime(2024, 3, 4, 15)),
    ("Tuesday, March 5, 2024 at 9 AM", TimestampRule(), datetime(2024, 3, 5, 9)),
    ("3pm on 8 May, 2023", TimestampRule(), datetime(2023, 5, 8, 15)),
    ("8 May 2023 3 pm", TimestampRule(), datetime(2023, 5, 8, 15)),
    ("8 May 2023 12 am", TimestampRule(), datetime(2023, 5, 8, 0)),
    ("8 May 2023 12 pm", TimestampRule(), datetime(2023, 5, 8, 12)),
    ("8 May 2023 3pm +0200", TimestampRule(), datetime(2023, 5, 8, 13)),
    ("8 May 2023", TimestampRule(), datetime(2023, 5, 8)),  # no time at all: midnight
])
def test_forms_that_once_read_wrong_read_right(value, rule, expected):
    assert read_timestamp(value, rule) == expected.replace(tzinfo=UTC)


@pytest.mark.parametrize("value", ["45303.57", "12", "2024", pd.NaT,
                                   "0001-01-01T00:00:00+01:00", "1" + "0" * 400])
def test_numbers_too_small_and_times_off_the_calendar_are_not_times(value):
    assert read_timestamp(value) is None


def test_numpy_scalars_are_read():
    import numpy as np

    assert read_timestamp(np.int64(1709370840)) == datetime(2024, 3, 2, 9, 14, tzinfo=UTC)
    assert read_timestamp(np.datetime64("2024-03-02T09:14")) == datetime(2024, 3, 2, 9, 14,
                                                                         tzinfo=UTC)


def test_a_two_digit_year_first_proves_nothing_and_a_weekday_does_not_hide_a_date():
    evidence = TimestampEvidence()
    evidence.add("24/01/12 10:00")
    with pytest.raises(AmbiguousTimestampsError):
        evidence.rule("x")
    evidence = TimestampEvidence()
    evidence.add("Mon, 29.01.2024 08:00")
    assert evidence.rule("x") == DAY_FIRST
