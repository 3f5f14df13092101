"""The store half of the benchmarks' floors: every message appended to a new DuckDB table in
one bulk insert, the least any pipeline does to keep what it reads."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd


def append_messages(seeds: list[dict], path: str | Path) -> None:
    """Append every message of ``seeds`` (seed-file documents: ``entity_id`` and
    ``conversations``) to a new table in the DuckDB file ``path``, in one insert."""
    columns: dict[str, list] = {k: [] for k in ("entity_id", "conversation_id", "position",
                                               "role", "content")}
    for seed in seeds:
        for conversation in seed["conversations"]:
            messages = conversation["messages"]
            count = len(messages)
            columns["entity_id"] += [seed["entity_id"]] * count
            columns["conversation_id"] += [conversation["id"]] * count
            columns["position"] += range(count)
            columns["role"] += [m["role"] for m in messages]
            columns["content"] += [m["content"] for m in messages]
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE messages (entity_id VARCHAR, conversation_id VARCHAR, "
                    "position INTEGER, role VARCHAR, content VARCHAR)")
        con.register("rows", pd.DataFrame(columns))
        con.execute("INSERT INTO messages SELECT * FROM rows")
