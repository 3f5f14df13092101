"""Memori's SQL schema (revision 2, as the Memori SDK 3.3 builds it), for SQLite and PostgreSQL.

The tables, columns, types and constraint names follow the SDK's, so that an app's Memori SDK
reads what memori_nb writes and its own ``build()`` finds nothing to change. Tables are
written here as a small spec and rendered per dialect.
"""

from __future__ import annotations

SCHEMA_REVISION = 2

# Column kinds per dialect. Every table also gets id, uuid, date_created and date_updated.
_TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "uuid": "TEXT", "xid": "TEXT",
               "ref": "INTEGER", "text": "TEXT", "name": "TEXT", "blob": "BLOB",
               "count": "INTEGER", "time": "TEXT", "uniq": "TEXT",
               "created": "TEXT NOT NULL DEFAULT (datetime('now'))", "version": "INTEGER"},
    "postgresql": {"id": "BIGSERIAL PRIMARY KEY", "uuid": "VARCHAR(36)", "xid": "VARCHAR(100)",
                   "ref": "BIGINT", "text": "TEXT", "name": "VARCHAR(255)", "blob": "BYTEA",
                   "count": "BIGINT", "time": "TIMESTAMP", "uniq": "CHAR(64)",
                   "created": "TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP",
                   "version": "BIGINT"},
}
# The longest external (entity, process) id and subject/object name PostgreSQL holds.
MAX_EXTERNAL_ID = 100
MAX_NAME = 255

# (table, revision, columns as "name kind [null]", unique constraints, foreign keys).
# A unique constraint is (name, columns); a foreign key is (name, columns, table(columns)).
_TABLES: list[tuple[str, int, list[str], list[tuple[str, str]], list[tuple[str, str, str]]]] = [
    ("memori_entity", 1, ["external_id xid"],
     [("uk_memori_entity_external_id", "external_id"), ("uk_memori_entity_uuid", "uuid")], []),
    ("memori_process", 1, ["external_id xid"],
     [("uk_memori_process_external_id", "external_id"), ("uk_memori_process_uuid", "uuid")], []),
    ("memori_session", 1, ["entity_id ref null", "process_id ref null"],
     [("uk_memori_session_entity_id", "entity_id, id"),
      ("uk_memori_session_process_id", "process_id, id"), ("uk_memori_session_uuid", "uuid")],
     [("fk_memori_sess_entity", "entity_id", "memori_entity (id)"),
      ("fk_memori_sess_process", "process_id", "memori_process (id)")]),
    ("memori_conversation", 1, ["session_id ref", "summary text null"],
     [("uk_memori_conversation_session_id", "session_id"),
      ("uk_memori_conversation_uuid", "uuid")],
     [("fk_memori_conv_session", "session_id", "memori_session (id)")]),
    ("memori_conversation_message", 1,
     ["conversation_id ref", "role name", "type name null", "content text"],
     [("uk_memori_conversation_message_conversation_id", "conversation_id, id"),
      ("uk_memori_conversation_message_uuid", "uuid")],
     [("fk_memori_conv_msg_conv", "conversation_id", "memori_conversation (id)")]),
    ("memori_entity_fact", 1,
     ["entity_id ref", "content text", "content_embedding blob", "num_times count",
      "date_last_time time", "uniq uniq"],
     [("uk_memori_entity_fact_entity_id", "entity_id, id"),
      ("uk_memori_entity_fact_entity_id_uniq", "entity_id, uniq"),
      ("uk_memori_entity_fact_uuid", "uuid")],
     [("fk_memori_ent_fact_entity", "entity_id", "memori_entity (id)")]),
    ("memori_process_attribute", 1,
     ["process_id ref", "content text", "num_times count", "date_last_time time", "uniq uniq"],
     [("uk_memori_process_attribute_process_id", "process_id, id"),
      ("uk_memori_process_attribute_process_id_uniq", "process_id, uniq"),
      ("uk_memori_process_attribute_uuid", "uuid")],
     [("fk_memori_proc_attribute", "process_id", "memori_process (id)")]),
    ("memori_subject", 1, ["name name", "type name", "uniq uniq"],
     [("uk_memori_subject_uniq", "uniq"), ("uk_memori_subject_uuid", "uuid")], []),
    ("memori_predicate", 1, ["content text", "uniq uniq"],
     [("uk_memori_predicate_uniq", "uniq"), ("uk_memori_predicate_uuid", "uuid")], []),
    ("memori_object", 1, ["name name", "type name", "uniq uniq"],
     [("uk_memori_object_uniq", "uniq"), ("uk_memori_object_uuid", "uuid")], []),
    ("memori_knowledge_graph", 1,
     ["entity_id ref", "subject_id ref", "predicate_id ref", "object_id ref",
      "num_times count", "date_last_time time"],
     [("uk_memori_knowledge_graph_entity_id", "entity_id, id"),
      ("uk_memori_knowledge_graph_entity_subject_predicate_object",
       "entity_id, subject_id, predicate_id, object_id"),
      ("uk_memori_knowledge_graph_object_id", "object_id, id"),
      ("uk_memori_knowledge_graph_predicate_id", "predicate_id, id"),
      ("uk_memori_knowledge_graph_subject_id", "subject_id, id"),
      ("uk_memori_knowledge_graph_uuid", "uuid")],
     [("fk_memori_know_graph_entity", "entity_id", "memori_entity (id)"),
      ("fk_memori_know_graph_object", "object_id", "memori_object (id)"),
      ("fk_memori_know_graph_predicate", "predicate_id", "memori_predicate (id)"),
      ("fk_memori_know_graph_subject", "subject_id", "memori_subject (id)")]),
    ("memori_entity_fact_mention", 2, ["entity_id ref", "fact_id ref", "conversation_id ref"],
     [("uk_memori_entity_fact_mention_uuid", "uuid"),
      ("uk_memori_entity_fact_mention", "entity_id, fact_id, conversation_id")],
     [("fk_memori_ent_fact_mention_entity_fact", "entity_id, fact_id",
       "memori_entity_fact (entity_id, id)"),
      ("fk_memori_ent_fact_mention_conversation", "conversation_id",
       "memori_conversation (id)")]),
]

_INDEXES = [
    ("idx_memori_entity_fact_entity_id_freq",
     "memori_entity_fact (entity_id, num_times DESC, date_last_time DESC)"),
    ("idx_memori_entity_fact_embedding_search", "memori_entity_fact (entity_id, id)"),
    ("idx_memori_ent_fact_mention_entity_conversation",
     "memori_entity_fact_mention (entity_id, conversation_id)"),
]

MEMORI_TABLES = tuple(table for table, *_ in _TABLES)


def memori_ddl(dialect: str) -> list[str]:
    """The statements that create Memori's schema at :data:`SCHEMA_REVISION` (idempotent)."""
    types = _TYPES[dialect]
    statements = [f"CREATE TABLE IF NOT EXISTS memori_schema_version("
                  f"num {types['version']} NOT NULL PRIMARY KEY)"]
    for table, _revision, columns, uniques, foreign_keys in _TABLES:
        lines = [f"id {types['id']}", f"uuid {types['uuid']} NOT NULL"]
        for column in columns:
            name, kind, *null = column.split()
            lines.append(f"{name} {types[kind]} {'DEFAULT NULL' if null else 'NOT NULL'}")
        lines += [f"date_created {types['created']}", f"date_updated {types['time']} DEFAULT NULL"]
        lines += [f"CONSTRAINT {name} UNIQUE ({cols})" for name, cols in uniques]
        lines += [f"CONSTRAINT {name} FOREIGN KEY ({cols}) REFERENCES {target} ON DELETE CASCADE"
                  for name, cols, target in foreign_keys]
        statements.append(f"CREATE TABLE IF NOT EXISTS {table}(\n    "
                          + ",\n    ".join(lines) + "\n)")
    statements += [f"CREATE INDEX IF NOT EXISTS {name} ON {target}" for name, target in _INDEXES]
    return statements
