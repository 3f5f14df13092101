"""Sources: read conversations from files and frames into :class:`SeedData`."""

from .seed_file import load_seed_file, parse_seed_document

__all__ = ["load_seed_file", "parse_seed_document"]
