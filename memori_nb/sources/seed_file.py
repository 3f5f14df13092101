"""The seed JSON file: ``{"entity_id", "process_id"?, "conversations": [...]}``.

A file may also hold a JSON list of such objects, one per entity (the shipped sample does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._gc import paused_gc
from ..errors import InvalidInputError
from ..models import SeedData


def load_seed_file(path: str | Path) -> list[SeedData]:
    """Read a seed JSON file into one :class:`SeedData` per entity.

    Raises:
        InvalidInputError: the file cannot be read, is not JSON, or has the wrong shape
            (the message is one line naming the file and the problem).

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
        raise InvalidInputError(f"{path}: not valid JSON (line {exc.lineno}, column "
                                f"{exc.colno}: {exc.msg})") from exc
    return parse_seed_document(document, source=str(path))


def parse_seed_document(document: Any, *, source: str = "input") -> list[SeedData]:
    """Turn a parsed seed document (object or list of objects) into SeedData."""
    entries = document if isinstance(document, list) else [document]
    if not entries:
        raise InvalidInputError(f"{source}: the list of entities is empty")
    seeds = []
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
        try:
            seeds.append(SeedData.for_conversations(
                entity_id=entry["entity_id"], conversations=entry["conversations"],
                process_id=entry.get("process_id")))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from exc
    return seeds
