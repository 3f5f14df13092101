"""The seed JSON file: ``{"entity_id", "process_id"?, "conversations": [...]}``.

A file may also hold a JSON list of such objects, one per entity (the shipped sample does).
The conversations are kept raw: :mod:`memori_nb.validation` judges them when seeding, as for
every source. Day/month order of numeric dates is decided once for the whole file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._interpreter import paused_gc
from ..errors import InvalidInputError
from ..models import SeedData
from ..timestamps import TimestampEvidence
from ..validation import id_text, timestamp_evidence
from ._runs import read_options
from .jsonl import json_problem


def load_seed_file(path: str | Path, *, dayfirst: bool | None = None,
                   timestamp_format: str | None = None,
                   role_map: Mapping[str, str | None] | None = None) -> list[SeedData]:
    """Read a seed JSON file into one :class:`SeedData` per entity.

    Args:
        path: the ``.json`` file.
        dayfirst: True when numeric dates are day/month/year, False for month/day/year;
            by default decided from the file's dates (asked for when they do not show it).
        timestamp_format: a ``strptime`` format the file's text timestamps follow instead.
        role_map: more role names, e.g. ``{"agent": "assistant", "note": None}`` (None
            leaves such messages out).

    Raises:
        InvalidInputError: the file cannot be read, is not JSON (or is nested too deeply
            to read), or has the wrong shape (the message is one line naming the file and
            the problem); or its dates could be day/month or month/day and nothing says
            which (:class:`~memori_nb.timestamps.AmbiguousTimestampsError`).

    Example:
        >>> from importlib.resources import files
        >>> seeds = load_seed_file(files("memori_nb") / "data" / "sample_conversations.json")
        >>> len(seeds) >= 2
        True
    """
    try:
        with open(path, "rb") as handle, paused_gc():
            document = json.load(handle)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot read the file ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}: not valid JSON ({json_problem(exc)})") from exc
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise InvalidInputError(f"{path}: not readable JSON ({exc})") from None
    except RecursionError:  # its traceback would be thousands of lines: none kept
        raise InvalidInputError(f"{path}: JSON nested too deeply to read") from None
    return parse_seed_document(document, source=str(path), dayfirst=dayfirst,
                               timestamp_format=timestamp_format, role_map=role_map)


def parse_seed_document(document: Any, *, source: str = "input", dayfirst: bool | None = None,
                        timestamp_format: str | None = None,
                        role_map: Mapping[str, str | None] | None = None) -> list[SeedData]:
    """Turn a parsed seed document (object or list of objects) into SeedData, with one
    timestamp rule for the whole document (see :func:`load_seed_file`)."""
    entries = document if isinstance(document, list) else [document]
    if not entries:
        raise InvalidInputError(f"{source}: the list of entities is empty")
    for index, entry in enumerate(entries):
        where = f"{source}" if len(entries) == 1 and not isinstance(document, list) else (
            f"{source}: entry {index}")
        if not isinstance(entry, dict):
            raise InvalidInputError(
                f"{where}: expected an object with 'entity_id' and 'conversations', "
                f"got {type(entry).__name__}")
        for key in ("entity_id", "conversations"):
            if key not in entry:
                raise InvalidInputError(f"{where}: missing '{key}'")
        if not isinstance(entry["conversations"], list):
            raise InvalidInputError(f"{where}: 'conversations' must be a list, got "
                                    f"{type(entry['conversations']).__name__}")
    evidence = None
    if dayfirst is None and timestamp_format is None:
        evidence = TimestampEvidence()
        for entry in entries:
            timestamp_evidence(entry["conversations"], evidence)
    options = read_options(evidence, source, dayfirst=dayfirst,
                           timestamp_format=timestamp_format, role_map=role_map)
    seeds = []
    for index, entry in enumerate(entries):
        entity = entry["entity_id"]
        try:
            seeds.append(SeedData.for_conversations(
                entity_id=text if (text := id_text(entity)) is not None else entity,
                conversations=entry["conversations"],
                process_id=entry.get("process_id"), options=options))
        except InvalidInputError as exc:
            where = source if not isinstance(document, list) else f"{source}: entry {index}"
            raise InvalidInputError(f"{where}: {exc}") from exc
    return seeds
