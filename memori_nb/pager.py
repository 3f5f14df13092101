"""Page through a DataFrame in a notebook: one page of rows, Previous / Next buttons.

:class:`TablePager` shows a DataFrame a page at a time as an HTML table, with Previous and
Next buttons and a "rows 21–40 of 1,234" label between them. The buttons are real
ipywidgets, so a click reaches the kernel; each is also a method (:meth:`TablePager.next`,
:meth:`TablePager.previous`, the settable :attr:`TablePager.page`), so code and tests page
without a browser. The frame is kept whole: every row is on some page.

ipywidgets is imported only when a pager is built, so ``import memori_nb`` stays light.

Example (in a notebook cell)::

    from memori_nb.pager import TablePager
    pager = TablePager(df, title="Results")
    pager          # shows rows 1–20 and the buttons
    pager.next()   # the same as clicking Next; returns the rows now shown
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

import pandas as pd

__all__ = ["DEFAULT_PAGE_SIZE", "TablePager"]

#: Rows on a page unless ``page_size=`` says otherwise.
DEFAULT_PAGE_SIZE = 20


def render_table(rows: pd.DataFrame, title: str) -> str:
    """A page's rows as an HTML table under a bold title (the default ``render``)."""
    heading = f"<p><b>{html.escape(title)}</b></p>" if title else ""
    return heading + rows.to_html(index=False, border=0, na_rep="")


class TablePager:
    """A DataFrame shown a page at a time, with Previous / Next buttons and a row label.

    Evaluate the pager in a cell to show it (or put :attr:`widget` in a layout). Clicking
    Next is :meth:`next`, Previous is :meth:`previous`; ``pager.page = 5`` jumps. The
    buttons and the label are hidden when every row fits on one page.

    Args:
        frame: the rows to page through (kept whole as :attr:`frame`).
        title: shown above the table.
        page_size: rows on a page (at least 1).
        render: ``render(rows, title) -> html`` draws a page; :func:`render_table` by
            default.

    Attributes:
        frame, title, page_size: as passed.
        table: the ``HTML`` widget holding the page's table.
        previous_button, next_button: the buttons.
        label: the ``HTML`` widget saying "rows 21–40 of 1,234".
        widget: the whole pager (a ``VBox``).

    Raises:
        ValueError: ``page_size`` is less than 1.

    Example:
        >>> import pandas as pd
        >>> pager = TablePager(pd.DataFrame({"n": range(45)}), title="Numbers")
        >>> pager.pages, pager.describe()
        (3, 'rows 1–20 of 45')
        >>> pager.next()["n"].tolist()[:3]
        [20, 21, 22]
        >>> pager.page = 3
        >>> pager.describe(), pager.next_button.disabled
        ('rows 41–45 of 45', True)
    """

    def __init__(self, frame: pd.DataFrame, *, title: str = "",
                 page_size: int = DEFAULT_PAGE_SIZE,
                 render: Callable[[pd.DataFrame, str], str] = render_table) -> None:
        import ipywidgets as widgets

        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        self.frame, self.title, self.page_size, self._render = frame, title, page_size, render
        self.table = widgets.HTML()
        self.previous_button = widgets.Button(description="Previous", icon="chevron-left",
                                              tooltip="The previous page of rows")
        self.next_button = widgets.Button(description="Next", icon="chevron-right",
                                          tooltip="The next page of rows")
        self.label = widgets.HTML(layout=widgets.Layout(margin="0 12px"))
        self.previous_button.on_click(lambda _: self.previous())
        self.next_button.on_click(lambda _: self.next())
        # Buttons only where there is somewhere to go: one page needs no navigation.
        self._navigation = widgets.HBox(
            [self.previous_button, self.label, self.next_button],
            layout=widgets.Layout(align_items="center",
                                  display="flex" if self.pages > 1 else "none"))
        self.widget = widgets.VBox([self.table, self._navigation])
        self._page = 1
        self._draw()

    @property
    def pages(self) -> int:
        """How many pages the rows take (1 for an empty frame)."""
        return max(1, math.ceil(len(self.frame) / self.page_size))

    @property
    def page(self) -> int:
        """The page shown, from 1 to :attr:`pages`; set it to jump to a page.

        Raises:
            ValueError: (on setting) the page is not between 1 and :attr:`pages`.
        """
        return self._page

    @page.setter
    def page(self, number: int) -> None:
        if not 1 <= number <= self.pages:
            raise ValueError(f"page {number} does not exist: pages run from 1 to "
                             f"{self.pages:,}")
        self._page = int(number)
        self._draw()

    @property
    def rows(self) -> pd.DataFrame:
        """The rows on the page shown."""
        start = (self._page - 1) * self.page_size
        return self.frame.iloc[start:start + self.page_size]

    def next(self) -> pd.DataFrame:
        """Show the next page (what the Next button does); on the last page, stay there.

        Returns:
            The rows now shown.
        """
        if self._page < self.pages:
            self.page = self._page + 1
        return self.rows

    def previous(self) -> pd.DataFrame:
        """Show the previous page (what the Previous button does); on the first, stay.

        Returns:
            The rows now shown.
        """
        if self._page > 1:
            self.page = self._page - 1
        return self.rows

    def describe(self) -> str:
        """Which rows are shown: ``"rows 21–40 of 1,234"``, ``"row 1,234 of 1,234"``, or
        ``"no rows"``."""
        total = len(self.frame)
        if not total:
            return "no rows"
        first = (self._page - 1) * self.page_size + 1
        last = min(first + self.page_size - 1, total)
        if first == last:
            return f"row {first:,} of {total:,}"
        return f"rows {first:,}–{last:,} of {total:,}"

    def _draw(self) -> None:
        self.table.value = self._render(self.rows, self.title)
        self.label.value = html.escape(self.describe())
        self.previous_button.disabled = self._page <= 1
        self.next_button.disabled = self._page >= self.pages

    def close(self) -> None:
        """Close the pager's widgets (the kernel keeps a widget until it is closed)."""
        for widget in (self.table, self.previous_button, self.next_button, self.label,
                       self._navigation, self.widget):
            widget.close()

    # --- display --------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        title = f"{self.title}: " if self.title else ""
        return f"<TablePager {title}{self.describe()}, page {self._page:,} of {self.pages:,}>"
