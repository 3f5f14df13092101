"""memori_nb: notebook-first memory seeding.

Bulk-import historical chat conversations into a memory layer: each conversation is
augmented into facts (subject-predicate-object triples), a summary and process attributes,
stored per user in DuckDB.

Example:
    >>> import asyncio
    >>> from memori_nb import Memori, SeedData
    >>> m = Memori(conn=":memory:", backend="local")
    >>> data = SeedData.for_conversations(entity_id="user-1", conversations=[
    ...     {"id": "c1", "messages": [{"role": "user", "content": "I have a dog named Rex."}]}])
    >>> asyncio.run(m.seed(data)).total_triples >= 1
    True
"""

from ._version import __version__
from .backends import LocalBackend, MemoriBackend, OpenAIBackend
from .client import Memori
from .plots import plot_chunking_stats
from .pricing import Pricing, estimate_tokens
from .stats import chunking_stats, stats_totals
from .distributed import seed_distributed
from .errors import (AugmentationError, ConfigurationError, InvalidInputError,
                     MemoriNbError, MissingApiKeyError, RunInterrupted, StoreError)
from .models import (Conversation, ConversationResult, Extraction, Message, SeedConfig,
                     SeedData, SeedResult, Triple, Usage)
from .notebook import (entity_summaries, facts, failures, results, runs, seed_dataframe,
                       seed_dataframe_async, triples)
from .panel import SeedPanel, seed_panel
from .plan import Plan, plan
from .progress import TqdmProgress
from .sources import (FORMATS, detect_format, from_dataframe, load_seed_file, read_source,
                      to_seeds)
from .stores import DuckDBStore

__all__ = [
    "AugmentationError",
    "ConfigurationError",
    "Conversation",
    "ConversationResult",
    "DuckDBStore",
    "Extraction",
    "FORMATS",
    "InvalidInputError",
    "LocalBackend",
    "Memori",
    "MemoriBackend",
    "MemoriNbError",
    "Message",
    "MissingApiKeyError",
    "OpenAIBackend",
    "Plan",
    "Pricing",
    "RunInterrupted",
    "SeedConfig",
    "SeedData",
    "SeedPanel",
    "SeedResult",
    "StoreError",
    "TqdmProgress",
    "Triple",
    "Usage",
    "__version__",
    "chunking_stats",
    "detect_format",
    "entity_summaries",
    "estimate_tokens",
    "facts",
    "failures",
    "from_dataframe",
    "load_seed_file",
    "plan",
    "plot_chunking_stats",
    "read_source",
    "results",
    "runs",
    "seed_dataframe",
    "seed_dataframe_async",
    "seed_distributed",
    "seed_panel",
    "stats_totals",
    "to_seeds",
    "triples",
]
