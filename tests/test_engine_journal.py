"""The journal's texts, written beside their line rather than escaped in it: they come back
exactly, and a record cut short by a kill costs only itself."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from memori_nb.models import Conversation, ConversationResult, Extraction, Message
from memori_nb.stores.base import ResultRecord
from memori_nb.stores.journal import Journal, _read_segments

UTC = timezone.utc
ODD_TEXTS = ["line one\nline two\r\n", '{"done":{"result":{}},"text":3}\n', "寿司 🍣 \u2028",
             "lone \ud800 surrogate", "", "tab\there", "x" * 70_000]


def record(cid: str, texts: list[str], times: list) -> ResultRecord:
    conv = Conversation(id=cid, title="t", messages=tuple(
        Message(role=("user", "assistant")[i % 2], content=text, timestamp=said)
        for i, (text, said) in enumerate(zip(texts, times))))
    return ResultRecord(ConversationResult(conversation_id=cid, entity_id="u1",
                                           status="succeeded", warnings=("w",)),
                        conv.content_hash(), None, Extraction(facts=(f"fact {cid}",)), conv)


def journal_of(tmp_path, *records: ResultRecord) -> list:
    journal = Journal(tmp_path / "journal", "run")
    for each in records:
        journal.finished(each)
    segments = list(journal._segments)
    journal.close(delete=False)
    return segments


def test_texts_and_times_come_back_exactly(tmp_path):
    times = [datetime(2024, 3, 5, 14, 30, 0, 123456, tzinfo=UTC),
             datetime(1901, 1, 1, tzinfo=UTC), None,
             datetime(2024, 3, 5, 16, 30, tzinfo=timezone(timedelta(hours=2))),
             datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "5 March 2024", 17]
    sent = [record("a", ODD_TEXTS, times), record("b", ["no times"], [None]),
            record("c", ["said at 0", "and 0.0"], [0, 0.0])]
    finished, _ = _read_segments(journal_of(tmp_path, *sent))
    for each in sent:
        back = finished["u1", each.result.conversation_id, each.content_hash]
        assert back.conversation == each.conversation
        assert [m.timestamp for m in back.conversation.messages] == [
            m.timestamp for m in each.conversation.messages]
        assert back.extraction == each.extraction and back.result == each.result


def test_a_record_cut_short_costs_only_itself(tmp_path):
    first = record("a", ["I live in Lisbon."], [None])
    last = record("b", ODD_TEXTS, [None] * len(ODD_TEXTS))
    [segment] = journal_of(tmp_path, first, last)
    whole = segment.read_bytes()
    for cut in (len(whole) - 1, len(whole) - 50_000, whole.rindex(b'{"done"') + 40):
        segment.write_bytes(whole[:cut])  # a kill in the middle of the last write
        finished, _ = _read_segments([segment])
        assert [key[1] for key in finished] == ["a"]


def test_a_journal_of_the_earlier_line_only_form_is_still_replayed(tmp_path):
    said = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)
    line = {"done": {"result": {"conversation_id": "c1", "entity_id": "u1",
                                "status": "succeeded", "warnings": []},
                     "content_hash": "h", "process_id": None,
                     "extraction": {"triples": [], "facts": ["f"], "summary": None,
                                    "attributes": []},
                     "conversation": {"id": "c1", "title": None, "warnings": [],
                                      "messages": [["user", "hi", said.isoformat()],
                                                   ["assistant", "yo", ["5 March"]]]}}}
    segment = tmp_path / "old.jsonl"
    segment.write_text(json.dumps(line) + "\n")
    finished, _ = _read_segments([segment])
    back = finished["u1", "c1", "h"].conversation
    assert [(m.content, m.timestamp) for m in back.messages] == [("hi", said),
                                                                 ("yo", "5 March")]
