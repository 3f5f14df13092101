"""Backfills on Dask: a LocalCluster of 2 worker processes, a real PostgreSQL server and the
loopback AA server.

The server refuses requests beyond the cluster's in-flight cap (``concurrency_limit``, whose
count frees a request's place before its answer leaves, so it never races the client): none
may be refused. Every conversation carries a tag ``[<entity>/<id>]`` in its first message, so what the
server received can be matched with the ledger: sent once each, nothing lost when a worker
is killed or the quota runs out, nothing sent again by a re-run.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")
sa = pytest.importorskip("sqlalchemy")

import dask  # noqa: E402

from helpers import API_KEY  # noqa: E402
from memori_nb import SeedConfig, SeedData, TqdmProgress  # noqa: E402
from memori_nb.distributed import (Secret, seed_distributed, seed_shard,  # noqa: E402
                                   split_by_entity)
from memori_nb.errors import ConfigurationError, InvalidInputError  # noqa: E402
from memori_nb.testing import AugmentationServer, Fault  # noqa: E402

TAG = re.compile(r"\[([^\]/]+/[^\]]+)\]")
# Short leases, so a killed worker's claims and in-flight leases come back within the test.
LEASE = 2.0
IN_FLIGHT = 4


@pytest.fixture(scope="module")
def client():
    # The scheduler (in this process) checks leases often enough for 2 s leases.
    with dask.config.set({"distributed.scheduler.locks.lease-validation-interval": "0.2s",
                          "distributed.scheduler.allowed-failures": 5}):
        cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=2,
                                           dashboard_address=":0")
        with distributed.Client(cluster) as running:
            yield running
        cluster.close()


def backfill(entities: int, per_entity: int, *, trigger: str | None = None) -> list[SeedData]:
    """``entities`` users with ``per_entity`` tagged conversations each; ``trigger`` is put
    in the fifth conversation of the first user."""
    seeds = []
    for e in range(entities):
        conversations = []
        for c in range(per_entity):
            extra = f" {trigger}" if trigger and e == 0 and c == 4 else ""
            conversations.append({"id": f"c{c}", "messages": [
                {"role": "user", "content": f"[u{e}/c{c}] I live in Porto and I love "
                                            f"hiking, note {c}.{extra}"},
                {"role": "assistant", "content": "Noted."}]})
        seeds.append(SeedData.for_conversations(entity_id=f"u{e}", conversations=conversations))
    return seeds


def tags_sent(server: AugmentationServer, *, answered: bool = False) -> list[str]:
    """The tag of every request the server received (only those it answered, if asked)."""
    tags = []
    for request in server.requests:
        if answered and request.fault is not None:
            continue
        messages = (request.body or {}).get("conversation", {}).get("messages", [])
        found = TAG.search(messages[0]["content"]) if messages else None
        if found:
            tags.append(found[1])
    return tags


def ledger(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT entity_id, conversation_id FROM "
                                        "memori_nb_seeded_conversations")).all()
    finally:
        engine.dispose()
    return [f"{entity}/{conversation}" for entity, conversation in rows]


def runs(url: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT run_id, status FROM memori_nb_runs")).all()
    finally:
        engine.dispose()
    return dict(rows)


def seed(client, seeds, url, server, **kwargs):
    kwargs.setdefault("progress", False)
    return seed_distributed(seeds, conn=url, client=client, api_key=API_KEY,
                            base_url=server.url, max_in_flight=IN_FLIGHT,
                            lease_seconds=LEASE, **kwargs)


def test_every_conversation_is_seeded_once_and_a_rerun_sends_nothing(client, pg_url):
    seeds = backfill(8, 15)
    before = client.run_on_scheduler(calls_left_on_scheduler)
    out = io.StringIO()
    # The server refuses (429) any request beyond IN_FLIGHT at once: none may be refused.
    with AugmentationServer(api_key=API_KEY, latency=0.01,
                            concurrency_limit=IN_FLIGHT) as server:
        result = seed(client, seeds, pg_url, server,
                      progress=TqdmProgress(file=out, notebook=False))
        assert (result.total, result.successful, result.failed) == (120, 120, 0)
        sent = tags_sent(server)
        assert len(sent) == server.request_count == 120
        assert sorted(sent) == sorted(ledger(pg_url))
        assert server.refused_count == 0  # the cap held for the cluster
        assert len(result.run_ids) == 4 and len(set(result.run_ids)) == 4  # a run per shard
        # Results in input order, as a local run gives them.
        assert [(r.entity_id, r.conversation_id) for r in result.results] == [
            (s.entity_id, c["id"]) for s in seeds for c in s.conversations]
        assert "120/120" in out.getvalue()  # one bar for the cluster, and the summing-up line
        assert str(result) in out.getvalue() and "120 succeeded" in str(result)

        again = seed(client, seeds, pg_url, server)
        assert server.request_count == 120  # nothing sent again
        assert (again.skipped, again.successful) == (120, 0)
        assert {r.reason for r in again.results} == {"already seeded"}
    # The calls' semaphores, events and queues are gone from the scheduler.
    assert client.run_on_scheduler(calls_left_on_scheduler) == before


def calls_left_on_scheduler(dask_scheduler) -> list[str]:
    """The names of memori_nb's semaphores, events and queues the scheduler still holds."""
    extensions = dask_scheduler.extensions
    names = [*extensions["semaphores"].max_leases, *extensions["events"]._events,
             *extensions["queues"].queues]
    return sorted(name for name in names if str(name).startswith("memori_nb-"))


def test_a_worker_killed_mid_run_loses_nothing(client, pg_url):
    seeds = backfill(8, 40)
    total = 320
    with AugmentationServer(api_key=API_KEY, latency=0.03,
                            concurrency_limit=IN_FLIGHT) as server:
        killed = []

        def kill_one_worker() -> None:
            while server.request_count < 60:
                time.sleep(0.01)
            killed.append(next(iter(client.run(os.getpid).values())))
            os.kill(killed[0], signal.SIGKILL)

        killer = threading.Thread(target=kill_one_worker)
        killer.start()
        result = seed(client, seeds, pg_url, server)
        killer.join()
        seeded = ledger(pg_url)
        sent = tags_sent(server)
        assert sorted(seeded) == sorted(f"{s.entity_id}/{c['id']}" for s in seeds
                                        for c in s.conversations)
        assert result.failed == 0 and result.stopped_reason is None
        assert result.total == total
        assert set(sent) == set(seeded)
        # What the dead worker had in flight is sent again, nothing more.
        assert len(sent) - total <= IN_FLIGHT
        assert server.refused_count == 0
    # The worker did die mid-run: its runs (a shard per thread) are in the store, unfinished.
    assert killed[0] not in client.run(os.getpid).values()
    statuses = runs(pg_url)
    dead = set(statuses) - set(result.run_ids)
    assert 1 <= len(dead) <= 2 and all(statuses[run] != "completed" for run in dead)
    assert all(statuses[run] == "completed" for run in result.run_ids)


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_every_worker_and_keeps_what_finished(client, pg_url, request, presses):
    """A second Ctrl-C (stop waiting) still leaves every shard told to stop: the stop
    stays set for those that had not looked yet."""
    # Python's own Ctrl-C handler, also when pytest was started in the background (a shell
    # then has SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    seeds = backfill(8, 40)
    with AugmentationServer(api_key=API_KEY, latency=0.03,
                            concurrency_limit=IN_FLIGHT) as server:
        def press_ctrl_c() -> None:
            while server.request_count < 40:
                time.sleep(0.01)
            for _ in range(presses):
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                time.sleep(0.08)

        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        with pytest.raises(KeyboardInterrupt):
            seed(client, seeds, pg_url, server)
        presser.join()
        time.sleep(0.5)  # what was in flight when the shards stopped
        stopped_at = server.request_count
        time.sleep(2.0)  # time for more requests, were any worker still sending
        assert server.request_count == stopped_at < 320
        seeded = ledger(pg_url)
        sent = tags_sent(server)
        assert set(seeded) <= set(sent)
        assert len(sent) - len(seeded) <= IN_FLIGHT  # only what was in flight is unsaved
        # The workers are free, and the next run sends the rest, once.
        rest = seed(client, seeds, pg_url, server)
        assert rest.successful == 320 - len(seeded) and rest.failed == 0
        assert len(tags_sent(server)) - 320 <= IN_FLIGHT
    assert len(ledger(pg_url)) == 320


def test_conversations_a_dead_worker_claimed_are_sent_once_its_lease_runs_out(client, pg_url):
    from memori_nb.models import Conversation
    from memori_nb.stores import SqlStore
    from memori_nb.validation import check_conversations

    seeds = backfill(4, 10)
    # A worker that died holding claims on 5 conversations of each user, leased for 5 s.
    store = SqlStore(pg_url)
    store.build()
    keys = [(s.entity_id, parsed.id, parsed.content_hash())
            for s in seeds for _, parsed in check_conversations(s)
            if isinstance(parsed, Conversation) and int(parsed.id[1:]) < 5]
    assert len(store.claim(keys, worker="dead-host:1:gone", lease_seconds=5.0)) == 20
    store.close()
    with AugmentationServer(api_key=API_KEY, latency=0.01) as server:
        result = seed(client, seeds, pg_url, server)
        sent = tags_sent(server)
    assert (result.successful, result.claimed_elsewhere) == (40, 0)
    assert sorted(sent) == sorted(ledger(pg_url)) and len(sent) == 40  # each once
    # Each shard ran again (every LEASE seconds) until the dead worker's lease ran out.
    assert len(result.run_ids) >= 2 * len(result.shards)
    assert all(shard.claimed_elsewhere == 0 for shard in result.shards)


def test_a_quota_stop_in_one_worker_stops_every_worker(client, pg_url):
    seeds = backfill(8, 40, trigger="[quota]")
    exhausted = [True]

    def faults(number, body):
        messages = body.get("conversation", {}).get("messages", []) if body else []
        if exhausted[0] and messages and "[quota]" in messages[0]["content"]:
            return Fault.quota_exceeded()
        return None

    with AugmentationServer(api_key=API_KEY, latency=0.03, faults=faults) as server:
        result = seed(client, seeds, pg_url, server)
        assert "quota" in result.stopped_reason
        # Every shard's run stopped: the one told by the service, and the others.
        assert all(shard.stopped_reason for shard in result.shards)
        assert result.failed == 0 and result.skipped > 0
        assert result.successful + result.skipped == result.total == 320
        answered = tags_sent(server, answered=True)
        assert sorted(answered) == sorted(ledger(pg_url))  # nothing answered is lost
        assert len(answered) == result.successful
        skipped = [r for r in result.results if r.status == "skipped"]
        assert all(r.reason.startswith("run stopped (quota exhausted)") for r in skipped)

        exhausted[0] = False  # the quota is back: the next run sends the rest, once
        before = server.request_count
        rest = seed(client, seeds, pg_url, server)
        assert rest.stopped_reason is None and rest.successful == result.skipped
        assert server.request_count - before == result.skipped
        assert len(ledger(pg_url)) == 320


def test_requests_per_minute_is_one_budget_for_the_cluster(client):
    from memori_nb.distributed import ClusterLimits, _shared_limits

    # 6 requests per 5-second window (a minute would make a slow test).
    limits = ClusterLimits(name=f"rpm-test-{os.getpid()}-{time.time_ns()}",
                           max_in_flight=8, requests_per_minute=6, lease_timeout=LEASE,
                           window_seconds=5.0)

    async def send_many(url: str, worker: int) -> None:
        # Defined here so Dask sends it by value; it runs on a worker's event loop.
        from memori_nb.backends import MemoriBackend
        from memori_nb.backends.base import AugmentationRequest
        from memori_nb.distributed import ClusterBackend
        from memori_nb.models import Message

        backend = await ClusterBackend(MemoriBackend(api_key=API_KEY, base_url=url),
                                       limits).open()
        try:
            for n in range(5):
                request = AugmentationRequest(
                    entity_id="u", conversation_id=f"w{worker}-{n}",
                    messages=(Message(role="user", content="I live in Porto."),))
                await backend.ready(request)
                await backend.augment(request)
        finally:
            await backend.aclose()

    def lease_timeouts(dask_scheduler) -> dict:
        return dict(dask_scheduler.extensions["semaphores"].lease_timeouts)

    with AugmentationServer(api_key=API_KEY) as server, _shared_limits(client, limits) as call:
        workers = list(client.scheduler_info(n_workers=-1)["workers"])
        futures = call.futures
        futures += [client.submit(send_many, server.url, i, workers=[address], pure=False)
                    for i, address in enumerate(workers)]
        deadline = time.monotonic() + 60
        while server.request_count < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # time for more, were each worker given its own budget (10 then)
        sent = server.request_count
        client.gather(futures)  # the other 4 go once the first leases come back
        assert server.request_count == 10
        # A dead worker's in-flight leases come back after the lease; its per-minute ones
        # not before the window they were taken in.
        timeouts = client.run_on_scheduler(lease_timeouts)
        assert timeouts[limits.in_flight_name] == LEASE
        assert timeouts[limits.rate_name] == 5.0
    assert sent == 6  # 6 a window for both workers together, not 6 each
    # Gone from the scheduler: the in-flight cap at once, the budget once its last
    # window's leases came back (without a warning about leases still held).
    assert limits.in_flight_name not in client.run_on_scheduler(lease_timeouts)
    deadline = time.monotonic() + 20
    while limits.rate_name in client.run_on_scheduler(lease_timeouts):
        assert time.monotonic() < deadline, "the per-minute semaphore stayed"
        time.sleep(0.5)


def test_the_key_shows_in_no_task_repr_log_or_output(client, pg_url, capfd):
    seeds = backfill(4, 10)
    # A database password travels masked too (the test server trusts any password).
    url = f"{pg_url}?password=db-s3cret-pass"
    seen: list[str] = []

    def tasks_on_scheduler(dask_scheduler=None):
        out = []
        for key, state in dask_scheduler.tasks.items():
            if "memori_nb" in str(key):
                out += [str(key), repr(state), repr(state.run_spec), str(state.run_spec)]
                out.append(pickle.dumps(state.run_spec).decode("latin-1"))
        return out

    with AugmentationServer(api_key=API_KEY, latency=0.05) as server:
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                seen.extend(client.run_on_scheduler(tasks_on_scheduler))
                time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            result = seed(client, seeds, url, server,
                          progress=TqdmProgress(file=sys.stderr, notebook=False))
        finally:
            done.set()
            watcher.join()
        assert result.successful == 40
        # The key reached the server, so it did travel.
        assert server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert any("memori_nb-shard" in text for text in seen)
    logs = [line for worker in client.get_worker_logs().values() for _, line in worker]
    logs += [line for _, line in client.get_scheduler_logs()]
    captured = capfd.readouterr()
    everything = "\n".join([*seen, *logs, captured.out, captured.err, repr(result),
                            str(result)])
    for part in (API_KEY, API_KEY[:12], API_KEY[-12:], "db-s3cret-pass"):
        assert part not in everything


def write_parquet_parts(folder, seeds: list[SeedData], parts: int) -> None:
    """``seeds`` as ``parts`` Parquet files (user, chat, role, content), each entity's
    conversations spread over every file."""
    import duckdb
    import pandas as pd

    for part in range(parts):
        rows = pd.DataFrame([{"user": seed.entity_id, "chat": c["id"], "role": m["role"],
                              "content": m["content"]}
                             for seed in seeds for n, c in enumerate(seed.conversations)
                             if n % parts == part for m in c["messages"]])
        duckdb.from_df(rows).write_parquet(str(folder / f"part-{part}.parquet"))


def test_a_parquet_folder_is_read_by_the_workers_not_here(client, pg_url, tmp_path,
                                                          monkeypatch):
    """Each worker reads its own files (an entity's rows in every file: claims keep each
    conversation to one sender); this process reads none, and gets the counts back, the
    rows staying in the store."""
    import memori_nb.distributed as here
    from memori_nb import Memori

    write_parquet_parts(tmp_path, backfill(3, 8), parts=3)

    def no_reading_here(*args, **kwargs):
        raise AssertionError("the source was read in the calling process")

    monkeypatch.setattr(here, "_read", no_reading_here)  # (each file's first one is, to check)
    with AugmentationServer(api_key=API_KEY) as server:
        result = seed(client, str(tmp_path), pg_url, server, entity_col="user",
                      conversation_col="chat")
        assert (result.total, result.successful, result.failed) == (24, 24, 0)
        sent = tags_sent(server)
        assert sorted(sent) == sorted(ledger(pg_url)) and len(sent) == 24  # each once
    assert result.results == () and len(result.shards) == 3  # a file each
    m = Memori(conn=pg_url)
    rows = pd.concat([m.results(run_id) for run_id in result.run_ids])
    assert (rows.status == "succeeded").sum() == 24
    m.close()
    # A re-run sends nothing, and says so in its counts.
    with AugmentationServer(api_key=API_KEY) as server:
        again = seed(client, str(tmp_path), pg_url, server, entity_col="user",
                     conversation_col="chat")
        assert server.request_count == 0
        # Forced: each conversation once more, however the shards met them.
        forced = seed(client, str(tmp_path), pg_url, server, entity_col="user",
                      conversation_col="chat", force=True, keep_results=True)
        assert sorted(tags_sent(server)) == sorted(ledger(pg_url))
    assert (again.total, again.skipped, again.successful) == (24, 24, 0)
    assert (forced.total, forced.successful) == (24, 24)
    # Asked for, each conversation's result comes back, as from a local run.
    frame = forced.to_frame()
    assert len(frame) == 24 and set(frame.status) == {"succeeded"}
    assert sorted(f"{e}/{c}" for e, c in zip(frame.entity_id, frame.conversation_id)) == \
        sorted(ledger(pg_url))


def test_files_a_dead_worker_claimed_are_sent_once_its_lease_runs_out(client, pg_url,
                                                                      tmp_path):
    """Read by the workers, a shard finds what another worker held in the store (its
    results are not kept), and seeds it after the lease; counted once."""
    from memori_nb.models import Conversation
    from memori_nb.sources import to_seeds
    from memori_nb.stores import SqlStore
    from memori_nb.validation import check_conversations

    write_parquet_parts(tmp_path, backfill(4, 10), parts=2)
    files = sorted(str(path) for path in tmp_path.glob("*.parquet"))
    keys = [(s.entity_id, parsed.id, parsed.content_hash())
            for path in files for s in to_seeds(path, entity_col="user", conversation_col="chat")
            for _, parsed in check_conversations(s)
            if isinstance(parsed, Conversation) and int(parsed.id[1:]) < 3]
    store = SqlStore(pg_url)
    store.build()
    assert len(store.claim(keys, worker="dead-host:1:gone", lease_seconds=3.0)) == 12
    store.close()
    with AugmentationServer(api_key=API_KEY, latency=0.01) as server:
        result = seed(client, files, pg_url, server, entity_col="user",
                      conversation_col="chat")
        sent = tags_sent(server)
    assert (result.total, result.successful, result.skipped) == (40, 40, 0)
    assert result.claimed_elsewhere == 0
    assert sorted(sent) == sorted(ledger(pg_url)) and len(sent) == 40
    assert len(result.run_ids) >= 2 * len(result.shards)


def test_a_file_its_worker_could_not_read_is_refused_before_anything_is_sent(client, pg_url,
                                                                          tmp_path):
    """Each file is opened here first: a broken one, or options its format refuses, fail
    the call before any shard sends (and leave nothing on the scheduler)."""
    import json

    write_parquet_parts(tmp_path, backfill(2, 6), parts=1)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file" * 10)
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(json.dumps({"user": "u9", "id": "c1", "messages": [
        {"role": "user", "content": "[u9/c1] I live in Lisbon"}]}) + "\n")
    good = str(tmp_path / "part-0.parquet")
    before = client.run_on_scheduler(calls_left_on_scheduler)
    with AugmentationServer(api_key=API_KEY) as server:
        with pytest.raises(InvalidInputError, match="broken.parquet: not a readable Parquet"):
            seed(client, [good, str(broken)], pg_url, server, entity_col="user",
                 conversation_col="chat")
        with pytest.raises(InvalidInputError, match="more.jsonl"):
            seed(client, [good, str(jsonl)], pg_url, server, entity_col="user",
                 conversation_col="chat")
        assert server.request_count == 0
    assert client.run_on_scheduler(calls_left_on_scheduler) == before


def test_seed_shard_reads_an_export_folder(tmp_path):
    import json

    folder = tmp_path / "claude-export"
    folder.mkdir()
    (folder / "conversations.json").write_text(json.dumps([{
        "uuid": "c1", "name": "Porto", "chat_messages": [
            {"sender": "human", "text": "I live in Porto.", "created_at": "2024-01-01T10:00:00Z"},
            {"sender": "assistant", "text": "Noted.",
             "created_at": "2024-01-01T10:00:01Z"}]}]))
    with AugmentationServer(api_key=API_KEY) as server:
        result = seed_shard(str(folder), conn=f"sqlite:///{tmp_path / 'm.db'}",
                            api_key=API_KEY, base_url=server.url, entity_id="u1")
    assert (result.total, result.successful) == (1, 1)


def test_a_list_of_files_that_names_a_missing_one_is_refused_here(client, pg_url, tmp_path):
    write_parquet_parts(tmp_path, backfill(1, 2), parts=1)
    with pytest.raises(InvalidInputError, match="no such file: .*nowhere.parquet"):
        seed_distributed([str(tmp_path / "part-0.parquet"), str(tmp_path / "nowhere.parquet")],
                         conn=pg_url, client=client, api_key=API_KEY,
                         base_url="http://127.0.0.1:9")


def test_secret_hides_the_key_in_reprs_and_pickles():
    key = Secret(API_KEY)
    assert API_KEY not in repr(key) and API_KEY not in str(key)
    data = pickle.dumps(key)
    assert API_KEY.encode() not in data
    assert pickle.loads(data).reveal() == API_KEY


def test_shards_keep_each_entity_together():
    seeds = backfill(5, 3) + backfill(2, 6)  # u0 and u1 appear twice
    shards = split_by_entity(seeds, 3)
    owner = {}
    for number, indices in enumerate(shards):
        for index in indices:
            assert owner.setdefault(seeds[index].entity_id, number) == number
    assert sorted(i for indices in shards for i in indices) == list(range(len(seeds)))


def test_settings_are_refused_with_the_reason(client, tmp_path):
    seeds = backfill(2, 2)
    with pytest.raises(ConfigurationError, match="SQLite takes one writer"):
        seed_distributed(seeds, conn=f"sqlite:///{tmp_path / 'm.db'}", client=client,
                         backend="local", progress=False)
    with pytest.raises(ConfigurationError, match="URL of a SQL database"):
        seed_distributed(seeds, conn=str(tmp_path / "m.duckdb"), client=client,
                         backend="local", progress=False)
    with pytest.raises(ConfigurationError, match="max_in_flight"):
        seed_distributed(seeds, conn="postgresql+psycopg://u@h/db", client=client,
                         backend="local", max_in_flight=0, progress=False)


def test_seed_shard_takes_a_batch_of_rows_as_ray_and_spark_pass_it(pg_url):
    import pandas as pd

    rows = pd.DataFrame([{"user_id": f"u{u}", "chat_id": f"c{c}", "role": role,
                          "content": f"[u{u}/c{c}] I live in Porto, note {c}." if role == "user"
                          else "Noted."}
                         for u in range(2) for c in range(3) for role in ("user", "assistant")])
    with AugmentationServer(api_key=API_KEY) as server:
        result = seed_shard(rows, conn=pg_url, api_key=API_KEY, base_url=server.url,
                            seed_config=SeedConfig(batch_size=2), entity_col="user_id",
                            conversation_col="chat_id")
        assert result.successful == 6 and server.request_count == 6
        again = seed_shard(rows, conn=pg_url, api_key=API_KEY, base_url=server.url,
                           entity_col="user_id", conversation_col="chat_id")
        assert again.skipped == 6 and server.request_count == 6
    assert sorted(ledger(pg_url)) == sorted(f"u{u}/c{c}" for u in range(2) for c in range(3))


def test_dask_is_imported_only_when_used_and_its_absence_is_explained():
    code = ("import sys, memori_nb, memori_nb.distributed\n"
            "print(any(m == 'dask' or m.startswith(('dask.', 'distributed')) "
            "for m in sys.modules))\n"
            "sys.modules['distributed'] = None\n"
            "try:\n"
            "    memori_nb.distributed.seed_distributed([], conn='postgresql://h/db')\n"
            "except memori_nb.ConfigurationError as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ}).stdout
    assert out.splitlines()[0] == "False"
    assert "pip install 'memori_nb[dask]'" in out
