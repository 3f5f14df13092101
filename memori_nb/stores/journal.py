"""The write-ahead journal: paid-for work on disk the moment it finishes.

A finished conversation waits a little in the batching writer before the store commits it, and
a chunked conversation's finished chunks are only worth something once the conversation ends.
A process killed (``kill -9``, out of memory, power to the container) in between would lose
work that was billed, and the next run would send it again. So each finished conversation and
each finished chunk is appended to a journal file first, one JSON line each, with one
``write`` call: the kernel keeps it when the process dies. A finished conversation's line is
followed by its messages' texts as they are (UTF-8, their size in the line): escaping them as
JSON costs several times as much as writing them. The file is also synced to the
disk every second (and at each store write), with the names of the files made since, which
bounds what a machine crash or a disk turning read-only can take.

Each run journals into ``<run_id>-<segment>.jsonl`` files in the store's journal directory and
holds ``<run_id>.lock`` for as long as it lives. Each store write starts a new segment; the
old one is synced and deleted by the write's thread once the store has committed everything
in it (both can take a while on a busy disk), so the journal on disk holds only what the
store has not committed yet. A clean end deletes the rest, after the chunk progress of the
conversations that did not finish went to the store. The next run on the store replays the
journals of runs whose lock is free (their process is gone) before it looks at the ledger,
so what they finished counts as seeded and is not sent again.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..models import Conversation, ConversationResult, Message
from .base import (PartialRecord, ResultRecord, extraction_from_dict, extraction_to_dict,
                   process_alive)
from .writer import write_records

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

# How long a run waits at most for another process replaying a dead run's journal.
REPLAY_WAIT_SECONDS = 30.0

Key = tuple[str, str, str]


class JournalError(StoreError):
    """The journal cannot be written (the store itself may be fine)."""


def journal_beside(database_file: str) -> Path:
    """The journal directory of a database file: beside it, so it moves with it."""
    return Path(f"{database_file}.memori_nb-journal")


def journal_in_cache(store_id: str) -> Path:
    """The journal directory of a database server, in the user's cache directory, named by
    the id the store keeps for itself (so two databases never share one)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "memori_nb" / "journal" / store_id


class Journal:
    """The journal of one run (see the module docstring).

    With ``directory=None`` nothing goes to disk (a store in memory, or a backend that costs
    nothing to run again), but the chunk progress of unfinished conversations is still
    tracked, so a run that ends in the middle of one can keep it.

    Raises:
        JournalError: the journal cannot be created or written (disk full, read-only).
    """

    def __init__(self, directory: Path | None, run_id: str) -> None:
        self.directory, self.run_id = directory, run_id
        # Chunk progress of conversations in flight, by (entity, conversation, content).
        self.open_partials: dict[Key, PartialRecord] = {}
        self._segment = 0
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._size = 0
        self._segments: list[Path] = []
        # The newest segment whose name sync() has put on the disk (0: none, nor the lock's).
        self._named = 0
        # Segments rotated out, still open so that sync() puts them on the disk, until dropped.
        self._retired: dict[Path, int] = {}
        # After a failed append the file may end in half a line: nothing more goes after it.
        self._failure: JournalError | None = None
        if directory is not None:
            self._lock_fd = _take_lock(directory, run_id)
            self._open_segment()

    @property
    def on_disk(self) -> bool:
        return self.directory is not None

    # --- what the engine journals -------------------------------------------------------

    def finished(self, record: ResultRecord) -> None:
        """A conversation succeeded: journal all the store will need to write it."""
        self.open_partials.pop(_key_of(record), None)
        if self._fd is not None:
            data, text = _record_to_json(record)
            self._append({"done": data, "text": len(text)}, text)

    def chunk_done(self, partial: PartialRecord) -> None:
        """A chunk of a chunked conversation came back (``partial`` merges all so far)."""
        self.open_partials[partial.key] = partial
        if self._fd is not None:
            self._append({"chunk": _partial_to_json(partial)})

    # --- segments -----------------------------------------------------------------------

    def rotate(self) -> Path | None:
        """Start a new segment if the current one holds anything; the old one's path is
        returned, to :meth:`drop` once the store has committed everything handed to it so
        far. Quick: the old segment is synced by the next :meth:`sync`, not here."""
        if self._fd is None or self._size == 0:
            return None
        old, fd = self._segments[-1], self._fd
        self._open_segment()  # (when it fails, the old segment stays the current one)
        self._retired[old] = fd
        for partial in self.open_partials.values():  # still needed: carried over
            self._append({"chunk": _partial_to_json(partial)})
        return old

    def sync(self) -> None:
        """Ask the system to put the journal on the disk itself (it is safe from a killed
        process already; this covers a disk turning read-only, or power, up to now)."""
        newest = self._segment  # read first: a segment started meanwhile waits for the next
        for fd in self._open_files():
            try:
                os.fsync(fd)
            except OSError:
                pass  # the next append says what is wrong, in its own words
        if newest != self._named and self.directory is not None:
            # A file's own sync does not promise its name: after a power cut, a segment
            # started since the directory's last sync could be missing, with all it holds.
            # The first time, the lock's name and the directory's own (it may be new) too.
            if _sync_directory(self.directory) and (
                    self._named or _sync_directory(self.directory.parent)):
                self._named = newest

    def drop(self, segment: Path | None) -> None:
        """Delete a segment :meth:`rotate` returned (the store committed all it holds). One
        that cannot be deleted now (another program holds it open) is left to :meth:`close`;
        a replay of it finds its conversations seeded already."""
        if segment is not None:
            os.close(self._retired.pop(segment))
            if _unlink_if_possible(segment):
                self._segments.remove(segment)

    def close(self, *, delete: bool) -> None:
        """Close the files; with ``delete`` (everything reached the store) remove them too,
        else leave them for the next run to replay. A segment another program holds open
        stays, with the lock file, so that the next run's replay finds it (stored already)
        and removes it."""
        for fd in self._open_files():
            os.close(fd)
        self._retired, self._fd = {}, None
        if self.directory is None:
            return
        if delete:
            self._segments = [s for s in self._segments if not _unlink_if_possible(s)]
        all_gone = delete and not self._segments
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock (closed first: Windows cannot
            self._lock_fd = None      # delete an open file)
        if all_gone:
            _unlink_if_possible(self.directory / f"{self.run_id}.lock")
            _remove_if_empty(self.directory)

    def _open_files(self) -> list[int]:
        """The segments' open descriptors: those rotated out, then the current one."""
        return [*self._retired.values(), *([self._fd] if self._fd is not None else [])]

    def _open_segment(self) -> None:
        path = self.directory / f"{self.run_id}-{self._segment + 1:06d}.jsonl"
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise _journal_error(path, exc) from exc
        self._segment += 1  # counted once it exists: sync() names what is counted
        self._segments.append(path)
        self._size = 0

    def _append(self, entry: dict[str, Any], text: bytes | None = None) -> None:
        if self._failure is not None:
            raise self._failure
        # ASCII escapes: quicker to encode than UTF-8 text, and lone surrogates survive.
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode("ascii")
        if text is not None:
            line = b"%s%s\n" % (line, text)
        try:
            written = os.write(self._fd, line)
            if written != len(line):  # only on a full disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            self._failure = _journal_error(self._segments[-1], exc)
            raise self._failure from exc
        self._size += written


def replay(directory: Path | None, store: Any) -> int:
    """Put into the store what the journals of dead runs hold: their finished conversations
    (those the dead run had not committed), under the run that finished them, and the chunk progress of
    the conversations they had not finished. Returns how many conversations were written.

    A journal whose run still holds its lock (a live process) is left alone. A journal is
    deleted once replayed (a segment another program holds open stays, with its lock, for a
    later replay).
    """
    if directory is None or not directory.is_dir():
        return 0
    try:
        locks = sorted(directory.glob("*.lock"))
    except FileNotFoundError:
        return 0  # another run on this machine removed it, empty, just now
    written = 0
    for lock_path in locks:
        run_id = lock_path.stem
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            continue  # replayed and removed meanwhile by another process
        # Said while this process replays, unsaid once the store has what it held: one
        # that finds the lock held then waits, rather than take the dead run's
        # conversations for unseeded (and send them again).
        marker = directory / f"{run_id}.replaying.{os.getpid()}"
        try:
            if not _try_lock(fd) and not _wait_for_replay(fd, directory, run_id):
                continue  # its run is alive
            try:
                marker.touch()
            except FileNotFoundError:
                continue  # replayed meanwhile by another process, its folder removed
            segments = sorted(directory.glob(f"{run_id}-*.jsonl"))
            finished, partials = _read_segments(segments)
            written += _replay_run(store, run_id, finished, partials)
            # One another program holds open keeps the lock, for a later replay to remove.
            left = [s for s in segments if not _unlink_if_possible(s)]
        finally:
            marker.unlink(missing_ok=True)
            os.close(fd)
        if not left:
            _unlink_if_possible(lock_path)
    _remove_if_empty(directory)
    return written


def _wait_for_replay(fd: int, directory: Path, run_id: str) -> bool:
    """While another live process replays ``run_id``, wait for it to finish; True if the
    lock is then ours (nothing may be left to replay), False when the journal's own run
    holds it (alive)."""
    time.sleep(0.01)  # a replayer says so just after it takes the lock
    deadline = time.monotonic() + REPLAY_WAIT_SECONDS
    while _replaying(directory, run_id) and time.monotonic() < deadline:
        if _try_lock(fd):
            return True
        time.sleep(0.02)
    return _try_lock(fd)


def _replaying(directory: Path, run_id: str) -> bool:
    """Whether a live process says it replays ``run_id`` (a dead one's marker is removed)."""
    for marker in directory.glob(f"{run_id}.replaying.*"):
        pid = int(marker.suffix[1:]) if marker.suffix[1:].isdigit() else None
        if pid is not None and process_alive(pid):
            return True
        marker.unlink(missing_ok=True)
    return False


def _replay_run(store: Any, run_id: str, finished: dict[Key, ResultRecord],
                partials: dict[Key, PartialRecord]) -> int:
    keys = list(finished)
    # What the dead run committed before it died is in the ledger under its id. (Another
    # run's row for the same content does not count: a forced run replaces it.)
    seeded = store.already_seeded(keys, by_run=run_id) if keys else set()
    missing = [finished[key] for index, key in enumerate(keys) if index not in seeded]
    write_records(store, run_id, missing)
    for key, partial in partials.items():
        if key not in finished:
            store.save_partial(run_id, partial)
    return len(missing)


def _read_segments(segments: list[Path]) -> tuple[dict[Key, ResultRecord],
                                                  dict[Key, PartialRecord]]:
    finished: dict[Key, ResultRecord] = {}
    partials: dict[Key, PartialRecord] = {}
    for entry in _entries(segments):
        try:
            if "done" in entry:
                record = _record_from_json(entry["done"], entry.get("text"))
                finished[_key_of(record)] = record
            else:
                partial = _partial_from_json(entry["chunk"])
                known = partials.get(partial.key)
                if known is None or known.chunks_done <= partial.chunks_done:
                    partials[partial.key] = partial
        except (ValueError, KeyError, TypeError):
            # The last line of a killed process, cut short; or a line this version cannot
            # read: its conversation is sent again rather than block every later run.
            continue
    return finished, partials


def _entries(segments: list[Path]) -> Iterator[dict[str, Any]]:
    """Each entry of the segments, with the texts that follow its line (``"text"``) read."""
    for segment in segments:
        with open(segment, "rb") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                    size = entry.get("text")
                    if size is not None:
                        text = lines.read(size + 1)
                        if len(text) != size + 1 or not text.endswith(b"\n"):
                            continue  # the texts were cut short
                        entry["text"] = text[:-1].decode("utf-8", "surrogatepass")
                except (ValueError, AttributeError, TypeError):
                    continue  # see _read_segments
                yield entry


# --- locks ----------------------------------------------------------------------------------

def _take_lock(directory: Path, run_id: str) -> int | None:
    """Create and hold ``<run_id>.lock``. It is locked before it appears under its name, so
    a replaying process never mistakes a starting run for a dead one. (Windows cannot rename
    an open file: there it is locked right after it appears.)"""
    final = directory / f"{run_id}.lock"
    temporary = final if fcntl is None else directory / f".{run_id}.lock.tmp"
    for attempt in range(3):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT, 0o600)
            break
        except FileNotFoundError:
            continue  # another run removed the directory, empty, in between: make it again
        except OSError as exc:
            raise _journal_error(directory, exc) from exc
    else:
        raise _journal_error(directory, OSError("the directory keeps disappearing"))
    _try_lock(fd)  # a new file's lock: nobody else can hold it
    if temporary != final:
        os.replace(temporary, final)
    return fd


def _sync_directory(directory: Path) -> bool:
    """Put a directory's entries (the names of files made in it) on the disk; False when
    that failed (tried again at the next sync; the next append says what is wrong)."""
    if os.name == "nt":
        return True  # a directory cannot be opened there; NTFS journals names itself
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def _unlink_if_possible(path: Path) -> bool:
    """Delete a file; False when it cannot be deleted now (another program holds it open,
    on Windows). What is left is replayed by the next run, which finds it stored already."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # other runs' journals are in it


def _try_lock(fd: int) -> bool:
    """Take the lock without waiting; False when another process holds it. The system
    frees it when its process ends, however it ends."""
    if fcntl is None:
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _journal_error(path: Path, exc: OSError) -> JournalError:
    reason = exc.strerror or str(exc)
    return JournalError(f"cannot write the journal at {path}: {reason}")


# --- JSON forms -----------------------------------------------------------------------------

def _key_of(record: ResultRecord) -> Key:
    return (record.result.entity_id, record.result.conversation_id, record.content_hash)


_RESULT_FIELDS = [f.name for f in fields(ConversationResult)]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _record_to_json(record: ResultRecord) -> tuple[dict[str, Any], bytes]:
    """The record as JSON values, and its messages' texts as one UTF-8 string."""
    conversation = record.conversation
    result = record.result
    data = {
        "result": {name: getattr(result, name) for name in _RESULT_FIELDS},
        "content_hash": record.content_hash, "process_id": record.process_id,
        "extraction": extraction_to_dict(record.extraction), "conversation": None}
    if conversation is None:
        return data, b""
    messages = conversation.messages
    contents = [m.content for m in messages]
    data["conversation"] = {
        "id": conversation.id, "title": conversation.title,
        "warnings": conversation.warnings, "roles": [m.role for m in messages],
        "lengths": [len(content) for content in contents],
        "times": _times_to_json([m.timestamp for m in messages])}
    return data, "".join(contents).encode("utf-8", "surrogatepass")


def _record_from_json(data: dict[str, Any], text: str | None) -> ResultRecord:
    result = data["result"]
    result = ConversationResult(**{**result, "warnings": tuple(result["warnings"])})
    conversation = data["conversation"]
    if conversation is not None:
        conversation = Conversation(
            id=conversation["id"], title=conversation["title"],
            warnings=tuple(conversation["warnings"]),
            messages=tuple(_messages_from_json(conversation, text)))
    return ResultRecord(result, data["content_hash"], data["process_id"],
                        extraction_from_dict(data["extraction"]), conversation)


def _messages_from_json(conversation: dict[str, Any], text: str | None) -> Iterator[Message]:
    if "messages" in conversation:  # written by an earlier version: texts in the line
        for role, content, said in conversation["messages"]:
            yield Message(role=role, content=content, timestamp=_time_from_json(said))
        return
    times = conversation["times"] or [None] * len(conversation["roles"])
    start = 0
    for role, length, said in zip(conversation["roles"], conversation["lengths"], times,
                                  strict=True):
        yield Message(role=role, content=text[start:start + length],
                      timestamp=_time_from_json(said))
        start += length
    if start != len(text):
        raise ValueError("the texts do not add up to what the line says")


def _partial_to_json(partial: PartialRecord) -> dict[str, Any]:
    return {**{f.name: getattr(partial, f.name) for f in fields(PartialRecord)},
            "extraction": extraction_to_dict(partial.extraction)}


def _partial_from_json(data: dict[str, Any]) -> PartialRecord:
    return PartialRecord(**{**data, "extraction": extraction_from_dict(data["extraction"])})


def _times_to_json(times: list[Any]) -> list[Any] | None:
    """Each message's time: microseconds since 1970 for a UTC datetime (what the readers
    make), else as :func:`_time_to_json` writes it; None when no message has one."""
    if times.count(None) == len(times):
        return None
    utc = timezone.utc
    return [(said - _EPOCH) // _MICROSECOND
            if type(said) is datetime and said.tzinfo is utc else _time_to_json(said)
            for said in times]


def _time_to_json(value: Any) -> Any:
    """A datetime as ISO text; anything else (a caller's own Message may hold a string, a
    number, a numpy time) as ``[value]``, for the store to read as it would have."""
    if value is None or (isinstance(value, datetime) and value != value):  # None, NaT
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (str, int, float)):
        return [value]
    return [str(value)]


def _time_from_json(value: Any) -> Any:
    if type(value) is int:
        return _EPOCH + value * _MICROSECOND
    if isinstance(value, list):
        return value[0]
    return None if value is None else datetime.fromisoformat(value)
