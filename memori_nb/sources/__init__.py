"""Sources: read conversations from files and frames into :class:`SeedData`.

:func:`read_source` reads any supported file (:data:`FORMATS`), telling the format with
:func:`detect_format`; each reader streams, so files of millions of conversations can be
seeded with ``await m.seed(read_source(path), keep_results=False)``.
"""

from .chatgpt import parse_chatgpt_conversation, read_chatgpt_export
from .claude import parse_claude_conversation, read_claude_export
from .detect import FORMATS, detect_format, read_source
from .jsonl import read_jsonl
from .seed_file import load_seed_file, parse_seed_document
from .tabular import read_table

__all__ = [
    "FORMATS",
    "detect_format",
    "load_seed_file",
    "parse_chatgpt_conversation",
    "parse_claude_conversation",
    "parse_seed_document",
    "read_chatgpt_export",
    "read_claude_export",
    "read_jsonl",
    "read_source",
    "read_table",
]
