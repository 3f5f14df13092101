"""Sources: read conversations from files and frames into :class:`SeedData`.

:func:`to_seeds` is the one way in: any supported input (a path, a DataFrame, SeedData or a
list of them) becomes SeedData, for the API, the notebook helpers, the panel and the CLI.
:func:`read_source` reads any supported file (:data:`FORMATS`), telling the format with
:func:`detect_format`; each reader streams, so files of millions of conversations can be
seeded with ``await m.seed(read_source(path), keep_results=False)``.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InvalidInputError
from ..models import SeedData
from .chatgpt import parse_chatgpt_conversation, read_chatgpt_export
from .claude import parse_claude_conversation, read_claude_export
from .dataframe import from_dataframe
from .detect import FORMATS, detect_format, read_source
from .formats import read_langchain, read_sharegpt
from .jsonl import read_jsonl
from .seed_file import load_seed_file, parse_seed_document
from .tabular import read_table



def to_seeds(data: Any, *, format: str | None = None, entity_id: str | None = None,
             dayfirst: bool | None = None, timestamp_format: str | None = None,
             role_map: dict[str, str | None] | None = None,
             **columns: Any) -> list[SeedData] | Iterable[SeedData]:
    """Any supported input as SeedData: the one way in, whatever the input.

    Args:
        data: a file path (any of :data:`FORMATS`, see :func:`read_source`), a DataFrame
            (see :func:`from_dataframe`), a :class:`SeedData`, or a list or iterable of them.
        format: the file's format, when detection is not wanted.
        entity_id: whose conversations these are, for inputs that do not say.
        dayfirst, timestamp_format: how numeric dates are written, when the values do not
            show it (see :mod:`memori_nb.timestamps`).
        role_map: more role names, e.g. ``{"agent": "assistant"}``.
        **columns: column names for DataFrames and Parquet/CSV (``conversation_col=`` ...).

    Returns:
        A list of SeedData, or a stream of them for large files.

    Raises:
        InvalidInputError: the input is of no supported kind, or its reader refuses it.
    """
    reading = dict(dayfirst=dayfirst, timestamp_format=timestamp_format, role_map=role_map)
    if isinstance(data, SeedData):
        return [data]
    if isinstance(data, pd.DataFrame):
        return from_dataframe(data, entity_id=entity_id, **reading, **columns)
    if isinstance(data, (str, Path)):
        return read_source(data, format=format, entity_id=entity_id, **reading, **columns)
    if isinstance(data, (list, tuple)):
        for item in data:
            if not isinstance(item, SeedData):
                raise InvalidInputError(f"a list to seed holds SeedData (from "
                                        f"SeedData.for_conversations), got "
                                        f"{type(item).__name__}")
        return list(data)
    if isinstance(data, Iterable) and not isinstance(data, (bytes, dict)):
        return data  # streamed: checked one by one as the engine reaches them
    raise InvalidInputError(f"cannot seed a {type(data).__name__}: pass SeedData (from "
                            f"SeedData.for_conversations), a list of them, a DataFrame or a "
                            f"file path")


__all__ = [
    "FORMATS",
    "detect_format",
    "from_dataframe",
    "load_seed_file",
    "parse_chatgpt_conversation",
    "parse_claude_conversation",
    "parse_seed_document",
    "read_chatgpt_export",
    "read_claude_export",
    "read_jsonl",
    "read_langchain",
    "read_sharegpt",
    "read_source",
    "read_table",
    "to_seeds",
]
