"""The table pager: pages of a DataFrame behind real Previous / Next buttons (no browser)."""

from __future__ import annotations

import doctest
import subprocess
import sys

import pandas as pd
import pytest

import memori_nb.pager
from memori_nb.pager import TablePager


def numbers(count: int) -> pd.DataFrame:
    return pd.DataFrame({"n": range(count), "name": [f"row-{i}" for i in range(count)]})


def shown(pager: TablePager) -> list[str]:
    """The row names in the table a user sees."""
    return [name for name in pager.frame["name"] if f"<td>{name}</td>" in pager.table.value]


def test_the_first_page_shows_its_rows_the_label_and_the_buttons():
    pager = TablePager(numbers(45), title="Numbers")
    assert shown(pager) == [f"row-{i}" for i in range(20)]
    assert "<b>Numbers</b>" in pager.table.value
    assert pager.label.value == "rows 1–20 of 45"
    assert pager.previous_button.disabled and not pager.next_button.disabled
    assert pager.widget.children[1].layout.display != "none"
    assert (pager.page, pager.pages) == (1, 3)


def test_clicking_next_and_previous_walks_through_every_row():
    pager = TablePager(numbers(45))
    seen = shown(pager)
    pager.next_button.click()
    assert pager.label.value == "rows 21–40 of 45" and shown(pager)[0] == "row-20"
    assert not pager.previous_button.disabled
    seen += shown(pager)
    pager.next_button.click()
    assert pager.label.value == "rows 41–45 of 45" and pager.next_button.disabled
    seen += shown(pager)
    assert seen == list(pager.frame["name"])  # every row once, in order
    pager.previous_button.click()
    assert pager.page == 2 and shown(pager)[0] == "row-20"


def test_next_and_previous_from_code_stay_inside_the_pages_and_return_the_rows():
    pager = TablePager(numbers(45))
    assert pager.previous()["n"].tolist() == list(range(20))  # already first: stays
    assert pager.next()["n"].tolist() == list(range(20, 40))
    assert pager.next()["n"].tolist() == list(range(40, 45))
    assert pager.next()["n"].tolist() == list(range(40, 45))  # already last: stays
    assert pager.page == 3


def test_setting_the_page_jumps_and_refuses_a_page_that_does_not_exist():
    pager = TablePager(numbers(1234))
    pager.page = 51
    assert pager.label.value == "rows 1,001–1,020 of 1,234"
    pager.page = pager.pages
    assert pager.label.value == "rows 1,221–1,234 of 1,234"
    for page in (0, 63):
        with pytest.raises(ValueError, match="pages run from 1 to 62"):
            pager.page = page
    assert pager.page == 62
    assert repr(pager) == "<TablePager rows 1,221–1,234 of 1,234, page 62 of 62>"


def test_one_page_needs_no_buttons():
    pager = TablePager(numbers(3), title="Few")
    assert shown(pager) == ["row-0", "row-1", "row-2"]
    assert pager.widget.children[1].layout.display == "none"
    assert pager.previous_button.disabled and pager.next_button.disabled


def test_a_last_page_of_one_row_and_an_empty_frame_read_well():
    pager = TablePager(numbers(21))
    pager.next()
    assert pager.label.value == "row 21 of 21"
    empty = TablePager(numbers(0))
    assert (empty.pages, empty.describe(), len(empty.rows)) == (1, "no rows", 0)


def test_page_size_and_render_are_the_callers():
    pager = TablePager(numbers(10), page_size=4,
                       render=lambda rows, title: f"{title}:{','.join(rows['name'])}")
    pager.page = 3
    assert pager.table.value == ":row-8,row-9" and pager.label.value == "rows 9–10 of 10"
    with pytest.raises(ValueError, match="page_size must be at least 1"):
        TablePager(numbers(10), page_size=0)


def test_the_pager_displays_as_a_widget():
    bundle = TablePager(numbers(3))._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data


def test_docstring_examples_run():
    failures, tried = doctest.testmod(memori_nb.pager)
    assert tried and failures == 0


def test_importing_the_pager_does_not_import_ipywidgets():
    code = ("import sys, memori_nb.pager; "
            "assert 'ipywidgets' not in sys.modules, 'ipywidgets imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
