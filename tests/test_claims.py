"""Issue 14, exactly-once across workers: claims in the shared SQL store (SQLite and a real
PostgreSQL), and the engine claiming each window before it sends it (loopback server)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("onnxruntime")

from helpers import API_KEY  # noqa: E402
from memori_nb import ConfigurationError, SeedConfig, SeedData  # noqa: E402
from memori_nb.backends import MemoriBackend  # noqa: E402
from memori_nb.embeddings import Embedder  # noqa: E402
from memori_nb.engine import seed_all  # noqa: E402
from memori_nb.models import CLAIMED_ELSEWHERE, ClaimSettings  # noqa: E402
from memori_nb.stores import DuckDBStore, SqlStore  # noqa: E402
from memori_nb.testing import AugmentationServer, Fault  # noqa: E402


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Journals of PostgreSQL stores go to the user's cache: keep them in the test's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'memori.db'}"
    return request.getfixturevalue("pg_url")


def open_store(url: str, embedder: Embedder) -> SqlStore:
    store = SqlStore(url, embedder=embedder)
    store.build()
    return store


def keys(n: int, entity: str = "u1") -> list[tuple[str, str, str]]:
    return [(entity, f"c{i}", f"hash{i}") for i in range(n)]


def claims_of(store: SqlStore) -> dict[str, int]:
    """How many claims each worker holds."""
    frame = store.sql("SELECT worker, count(*) AS n FROM memori_nb_claims GROUP BY worker")
    return dict(zip(frame.worker, frame.n))


def expire(store: SqlStore, worker: str) -> None:
    """Move a worker's lease an hour into the past, as if it died an hour ago."""
    with store._transaction() as cursor:
        for table in ("memori_nb_claim_leases", "memori_nb_claims"):
            store._run(cursor, f"UPDATE {table} SET lease_until = lease_until - 3600 "
                               f"WHERE worker = ?", [worker])


# --- the store ------------------------------------------------------------------------------------

def test_a_claim_is_held_by_one_worker_until_released(db_url, embedder):
    store = open_store(db_url, embedder)
    ks = keys(5)
    assert store.claim(ks[:3], worker="a", lease_seconds=60) == {0, 1, 2}
    # b gets only what a does not hold; a key twice in one call is one claim.
    assert store.claim(ks + [ks[4]], worker="b", lease_seconds=60) == {3, 4, 5}
    # A worker's own claims are its again (its lease extended).
    assert store.claim(ks, worker="a", lease_seconds=60) == {0, 1, 2}
    assert claims_of(store) == {"a": 3, "b": 2}
    store.release_claims("a")
    assert claims_of(store) == {"b": 2}
    assert store.claim(ks, worker="b", lease_seconds=60) == {0, 1, 2, 3, 4}
    assert store.claim([], worker="b", lease_seconds=60) == set()
    store.close()


def test_an_expired_lease_is_taken_over_and_renewal_extends_it(db_url, embedder):
    store = open_store(db_url, embedder)
    ks = keys(4)
    assert store.claim(ks[:2], worker="dead", lease_seconds=60) == {0, 1}
    assert store.claim(ks[2:], worker="alive", lease_seconds=60) == {0, 1}
    expire(store, "dead")
    expire(store, "alive")
    assert store.renew_claims("alive", 60) == 2  # renewed in time: still its claims
    assert store.claim(ks, worker="new", lease_seconds=60) == {0, 1}  # the dead one's
    assert claims_of(store) == {"alive": 2, "new": 2}
    assert store.renew_claims("dead", 60) == 0  # nothing left to renew
    store.close()


def test_leases_run_by_the_database_clock(db_url, embedder):
    """A short lease really runs out, and a renewed one really holds."""
    store = open_store(db_url, embedder)
    ks = keys(2)
    assert store.claim(ks[:1], worker="brief", lease_seconds=0.05) == {0}
    assert store.claim(ks[1:], worker="renewed", lease_seconds=0.05) == {0}
    assert store.renew_claims("renewed", 3600) == 1
    time.sleep(0.3)
    assert store.claim(ks, worker="other", lease_seconds=60) == {0}
    store.close()


def test_concurrent_workers_never_hold_one_conversation_both(db_url, embedder):
    """Four workers, each with its own connection, claim the same 600 conversations at once
    in their own orders, round after round: every conversation has exactly one holder."""
    stores = [open_store(db_url, embedder) for _ in range(4)]
    ks = keys(600)
    for round_ in range(4):
        start = threading.Barrier(len(stores))

        def claim(index: int) -> set[tuple[str, str, str]]:
            mine = ks[:]
            random.Random(round_ * 10 + index).shuffle(mine)
            start.wait()
            # In two calls, as an engine claims window after window.
            held = set()
            for part in (mine[:300], mine[300:]):
                held |= {part[i] for i in stores[index].claim(
                    part, worker=f"w{index}", lease_seconds=60)}
            return held

        with ThreadPoolExecutor(len(stores)) as pool:
            held = list(pool.map(claim, range(len(stores))))
        assert sum(len(h) for h in held) == len(ks)
        assert set().union(*held) == set(ks)
        assert claims_of(stores[0]) == {f"w{i}": len(h) for i, h in enumerate(held) if h}
        for index, store in enumerate(stores):
            store.release_claims(f"w{index}")
        assert claims_of(stores[0]) == {}
    for store in stores:
        store.close()


def test_build_adds_the_claims_tables_to_an_existing_database(tmp_path, embedder):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = open_store(url, embedder)
    with store._transaction() as cursor:  # as an earlier version left it
        store._run(cursor, "DROP TABLE memori_nb_claims")
        store._run(cursor, "DROP TABLE memori_nb_claim_leases")
    store.build()
    assert store.claim(keys(1), worker="a", lease_seconds=60) == {0}
    store.close()


# --- the engine -----------------------------------------------------------------------------------

def texts(n: int, entity: str) -> list[dict]:
    """n conversations, each with text no other has (the server sees which one it got)."""
    return [{"id": f"c{i}", "messages": [
        {"role": "user", "content": f"I am {entity} #{i}, I live in Porto and I love hiking."},
        {"role": "assistant", "content": "Nice!"}]} for i in range(n)]


def seeds(entities: int = 3, per_entity: int = 20) -> list[SeedData]:
    return [SeedData.for_conversations(entity_id=f"user-{e}",
                                       conversations=texts(per_entity, f"user-{e}"))
            for e in range(entities)]


def sent(server: AugmentationServer) -> Counter:
    """How often each conversation (its first message) reached the server."""
    return Counter(r.body["conversation"]["messages"][0]["content"] for r in server.requests
                   if r.body is not None)


def run(store, server, data, *, claims=None, batch_size=4, **kwargs):
    """One engine run in its own event loop (as a worker would), with its own client."""
    async def go():
        backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
        try:
            return await seed_all(data, backend=backend, store=store,
                                  config=SeedConfig(batch_size=batch_size), claims=claims,
                                  **kwargs)
        finally:
            await backend.aclose()
    return asyncio.run(go())


def test_a_forced_backfill_sends_again_what_was_seeded_before_it_once(db_url, embedder):
    """force with the backfill's start: what was seeded before it goes again; what a worker
    of the backfill seeded since (a shard redone, a claim another held) does not."""
    from datetime import datetime, timezone

    store = open_store(db_url, embedder)
    data = seeds(entities=1, per_entity=10)
    first_half = [SeedData.for_conversations(entity_id="user-0",
                                             conversations=texts(10, "user-0")[:5])]
    with AugmentationServer(api_key=API_KEY) as server:
        run(store, server, data)  # an earlier backfill: all 10 in the ledger
        time.sleep(0.05)
        started = datetime.now(timezone.utc)
        # A worker of the forced backfill sends half of them again...
        run(store, server, first_half, force=True,
            claims=ClaimSettings(worker="a", backfill_started=started))
        # ...and another worker, given them all (a shard redone), sends only the rest.
        result = run(store, server, data, force=True,
                     claims=ClaimSettings(worker="b", backfill_started=started))
        # Without the backfill's start, force sends everything.
        everything = run(store, server, data, force=True, claims=ClaimSettings(worker="c"))
    assert (result.successful, result.skipped) == (5, 5)
    assert {r.reason for r in result.results if r.status == "skipped"} == {"already seeded"}
    assert everything.successful == 10
    assert set(sent(server).values()) == {3}  # each: the earlier run, the backfill, the last
    with pytest.raises(ConfigurationError, match="aware datetime"):
        ClaimSettings(worker="d", backfill_started=datetime.now())
    store.close()


def test_two_workers_seeding_the_same_input_send_each_conversation_once(pg_url, embedder):
    # 200 conversations: windows of 64, 128 and 8, so both workers get some.
    data = seeds(entities=4, per_entity=50)
    with AugmentationServer(api_key=API_KEY, latency=0.01) as server:
        stores = [open_store(pg_url, embedder) for _ in range(2)]
        start = threading.Barrier(2)

        def worker(index: int):
            start.wait()
            return run(stores[index], server, data, claims=ClaimSettings(
                worker=f"worker-{index}", lease_seconds=30))

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(worker, range(2)))
        counts = sent(server)
    assert len(counts) == 200 and set(counts.values()) == {1}  # each sent, and only once
    assert sum(r.successful for r in results) == 200
    assert all(r.total == 200 and r.failed == 0 for r in results)
    # What one worker did not send, the other held or had seeded.
    for result in results:
        reasons = Counter(r.reason for r in result.results if r.status == "skipped")
        assert set(reasons) <= {CLAIMED_ELSEWHERE, "already seeded"}
        assert reasons[CLAIMED_ELSEWHERE] == result.claimed_elsewhere
    assert claims_of(stores[0]) == {}  # both released theirs
    ledger = stores[0].sql("SELECT count(*) AS n FROM memori_nb_seeded_conversations")
    assert ledger.n[0] == 200
    for store in stores:
        store.close()


def test_a_conversation_another_live_worker_holds_is_skipped_and_counted(db_url, embedder):
    data = seeds(entities=1, per_entity=6)
    store = open_store(db_url, embedder)
    other = SqlStore(db_url, embedder=embedder)
    assert other.claim(conversation_keys(data[0])[:2], worker="other",
                       lease_seconds=600) == {0, 1}
    with AugmentationServer(api_key=API_KEY) as server:
        result = run(store, server, data, claims=ClaimSettings(worker="me"))
        assert server.request_count == 4
        assert (result.successful, result.skipped, result.claimed_elsewhere) == (4, 2, 2)
        skipped = [r for r in result.results if r.status == "skipped"]
        assert {r.conversation_id for r in skipped} == {"c0", "c1"}
        assert {r.reason for r in skipped} == {CLAIMED_ELSEWHERE}
        assert result.summary_dict()["claimed_elsewhere"] == 2
        assert "2 skipped (being seeded by another run)" in str(result)
        # Forced, a run still leaves another worker's conversations alone.
        forced = run(store, server, data, claims=ClaimSettings(worker="me"), force=True)
        assert forced.claimed_elsewhere == 2 and server.request_count == 8
        # Once the other worker lets go, a run sends just those two.
        other.release_claims("other")
        again = run(store, server, data, claims=ClaimSettings(worker="me"))
        assert (again.successful, again.skipped, again.claimed_elsewhere) == (2, 4, 0)
        assert server.request_count == 10
    assert claims_of(store) == {}
    other.close()
    store.close()


def conversation_keys(seed: SeedData) -> list[tuple[str, str, str]]:
    """The (entity, conversation, content hash) keys the engine claims for ``seed``."""
    from memori_nb.validation import check_conversations

    return [(seed.entity_id, parsed.id, parsed.content_hash())
            for _, parsed in check_conversations(seed)]


def test_a_worker_that_seeded_and_let_go_meanwhile_is_not_sent_again(pg_url, embedder):
    """Between one worker's ledger look-up and its claim, another seeds the conversations
    and releases them: the claim succeeds, and the ledger, asked again, says seeded."""
    data = seeds(entities=1, per_entity=5)

    with AugmentationServer(api_key=API_KEY) as server:
        class SlowToClaim(SqlStore):
            """The real store; its first claim comes after another worker's whole run."""

            first = True

            def claim(self, keys, **kwargs):
                if self.first:
                    self.first = False
                    other = open_store(pg_url, embedder)
                    with ThreadPoolExecutor(1) as pool:  # its own thread and event loop
                        pool.submit(run, other, server, data,
                                    claims=ClaimSettings(worker="quick")).result()
                    other.close()
                return super().claim(keys, **kwargs)

        store = SlowToClaim(pg_url, embedder=embedder)
        result = run(store, server, data, claims=ClaimSettings(worker="slow"))
        assert server.request_count == 5  # the quick worker's, only
    assert result.successful == 0 and result.skipped == 5 and result.claimed_elsewhere == 0
    assert {r.reason for r in result.results} == {"already seeded"}
    store.close()


def test_claims_are_released_after_a_quota_stop(db_url, embedder):
    store = open_store(db_url, embedder)
    with AugmentationServer(api_key=API_KEY,
                            faults=lambda n, b: Fault.quota_exceeded()) as server:
        result = run(store, server, seeds(entities=1, per_entity=8),
                     claims=ClaimSettings(worker="me"))
    assert result.stopped_reason and result.successful == 0
    assert claims_of(store) == {}
    assert store.sql("SELECT count(*) AS n FROM memori_nb_claim_leases").n[0] == 0
    store.close()


def test_claims_are_released_after_a_cancel(pg_url, embedder):
    store = open_store(pg_url, embedder)
    data = seeds(entities=2, per_entity=10)
    with AugmentationServer(api_key=API_KEY, latency=30.0) as server:
        async def go():
            backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
            task = asyncio.create_task(seed_all(
                data, backend=backend, store=store, config=SeedConfig(batch_size=4),
                claims=ClaimSettings(worker="me", lease_seconds=30)))
            while server.in_flight < 4:  # claimed, and sending
                await asyncio.sleep(0.01)
            assert claims_of(store) == {"me": 20}
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await backend.aclose()
        asyncio.run(go())
    assert claims_of(store) == {}
    # Free for the next worker at once, not after the lease.
    every = [key for seed in data for key in conversation_keys(seed)]
    assert store.claim(every, worker="next", lease_seconds=60) == set(range(20))
    store.close()


def test_claims_are_renewed_while_the_run_goes(pg_url, embedder):
    """A lease of 0.6 s outlives itself many times over a run of several seconds: renewed
    every 0.2 s, no other worker can take the conversations in flight."""
    store = open_store(pg_url, embedder)
    rival = open_store(pg_url, embedder)
    data = seeds(entities=1, per_entity=4)
    content = conversation_keys(data[0])
    with AugmentationServer(api_key=API_KEY, latency=2.0) as server:
        async def go():
            backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
            task = asyncio.create_task(seed_all(
                data, backend=backend, store=store, config=SeedConfig(batch_size=2),
                claims=ClaimSettings(worker="me", lease_seconds=0.6)))
            while server.in_flight < 2:
                await asyncio.sleep(0.01)
            taken = []
            for _ in range(5):  # 1.5 s: over twice the lease
                await asyncio.sleep(0.3)
                taken += await asyncio.to_thread(rival.claim, content, worker="rival",
                                                 lease_seconds=60)
            result = await task
            await backend.aclose()
            return taken, result
        taken, result = asyncio.run(go())
        assert server.request_count == 4
    assert taken == [] and result.successful == 4
    rival.close()
    store.close()


def test_a_run_without_claims_is_as_before(db_url, embedder):
    store = open_store(db_url, embedder)
    with AugmentationServer(api_key=API_KEY) as server:
        result = run(store, server, seeds(entities=2, per_entity=3))
        assert server.request_count == 6
    assert result.successful == 6 and result.claimed_elsewhere == 0
    assert "claimed_elsewhere" not in result.summary_dict()
    assert store.sql("SELECT count(*) AS n FROM memori_nb_claims").n[0] == 0
    store.close()


def test_claims_need_a_store_that_can_hold_them(server):
    store = DuckDBStore(":memory:")
    with pytest.raises(ConfigurationError, match=r"DuckDBStore\(':memory:'\)"):
        run(store, server, seeds(entities=1, per_entity=1), claims=ClaimSettings(worker="me"))
    assert server.request_count == 0


@pytest.mark.parametrize("bad", [dict(worker=""), dict(worker="w", lease_seconds=0),
                                 dict(worker="w", lease_seconds="60")])
def test_claim_settings_are_checked(bad):
    with pytest.raises(ConfigurationError, match="ClaimSettings"):
        ClaimSettings(**bad)


# --- plain runs (no claims=) on one database at once ---------------------------------------------

def in_threads(*calls):
    """Run the calls at once, each on a thread of its own; their results."""
    start = threading.Barrier(len(calls))

    def call(function):
        start.wait()
        return function()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(call, calls))


@pytest.mark.parametrize("force", [False, True])
def test_two_plain_runs_at_once_send_each_conversation_once(db_url, embedder, force):
    """Two runs of the same input into one database at once, neither given claims=: they
    split the conversations as workers do (each claims under its run id), so nothing is
    sent (billed) twice; forced, each conversation goes again once, not once per run."""
    data = seeds(entities=2, per_entity=60)
    everything = {c["messages"][0]["content"] for s in data for c in texts(60, s.entity_id)}
    stores = [open_store(db_url, embedder) for _ in range(2)]
    with AugmentationServer(api_key=API_KEY, latency=0.02) as server:
        if force:
            run(stores[0], server, data)  # seeded once before
        results = in_threads(*(lambda store=store: run(store, server, data, force=force)
                               for store in stores))
        counts = sent(server)
    assert set(counts) == everything
    assert set(counts.values()) == {2 if force else 1}
    assert sum(r.successful for r in results) == 120
    seeded_by = {}
    for result in results:
        assert (result.total, result.failed, result.stopped_reason) == (120, 0, None)
        reasons = Counter(r.reason for r in result.results if r.status == "skipped")
        assert set(reasons) <= {CLAIMED_ELSEWHERE, "already seeded"}
        assert reasons[CLAIMED_ELSEWHERE] == result.claimed_elsewhere
        for r in result.results:
            if r.status == "succeeded":
                assert seeded_by.setdefault((r.entity_id, r.conversation_id),
                                            result.run_id) == result.run_id
    assert len(seeded_by) == 120  # each succeeded in exactly one of the two runs
    ledger = stores[0].sql("SELECT entity_id, conversation_id, run_id FROM "
                           "memori_nb_seeded_conversations")
    assert dict(zip(zip(ledger.entity_id, ledger.conversation_id), ledger.run_id)) == seeded_by
    assert stores[0].sql("SELECT count(*) AS n FROM memori_conversation").n[0] == 120
    runs = stores[0].runs().set_index("run_id")
    for result in results:
        assert runs.status[result.run_id] == "completed"
        assert runs.successful[result.run_id] == result.successful
    assert claims_of(stores[0]) == {}  # both released theirs
    for store in stores:
        store.close()


def test_two_seed_commands_at_once_bill_each_conversation_once(tmp_path):
    """The command line: the same `seed` twice at once into one SQLite file sends each
    conversation once; the second says what the first held."""
    import json

    source = tmp_path / "chats.json"
    source.write_text(json.dumps({"entity_id": "u1", "conversations": [
        {"id": f"c{i:03d}", "messages": [{"role": "user",
                                          "content": f"conv{i:03d} I just bought a Tesla"}]}
        for i in range(100)]}))
    env = {**os.environ, "MEMORI_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    # Each run takes some 10 s (20 rounds of 0.5 s), so they surely overlap.
    with AugmentationServer(api_key=API_KEY, latency=0.5) as server:
        command = [sys.executable, "-m", "memori_nb", "seed", str(source), "--db",
                   f"sqlite:///{tmp_path}/memori.db", "--base-url", server.url, "--json",
                   "--batch-size", "5"]
        runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [run.communicate(timeout=120) for run in runs]
        counts = sent(server)
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert len(counts) == 100 and set(counts.values()) == {1}
    summaries = [json.loads(out) for out, _ in outputs]
    assert sum(s["successful"] for s in summaries) == 100
    for summary in summaries:
        assert summary["total"] == 100 and summary["failed"] == 0
        # What a run did not send, the other held (or had seeded and let go).
        assert summary["successful"] + summary["skipped"] == 100
        assert summary.get("claimed_elsewhere", 0) <= summary["skipped"]
    assert max(s.get("claimed_elsewhere", 0) for s in summaries) > 0  # they did overlap


def test_a_killed_plain_runs_claims_do_not_hold_up_the_next_run_on_this_machine(
        tmp_path, embedder):
    """kill -9 of a plain run: the next run here frees its claims at once (its process is
    gone) rather than wait out the lease, replays its journal, and sends again only what
    was in flight, as before runs claimed."""
    url = f"sqlite:///{tmp_path}/memori.db"
    data = seeds(entities=1, per_entity=60)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, os
        from memori_nb import SeedConfig, SeedData
        from memori_nb.backends import MemoriBackend
        from memori_nb.engine import seed_all
        from memori_nb.stores import SqlStore
        conversations = {texts(60, "user-0")!r}
        async def main():
            backend = MemoriBackend(api_key=os.environ["KEY"], base_url=os.environ["URL"])
            await seed_all([SeedData.for_conversations(entity_id="user-0",
                                                       conversations=conversations)],
                           backend=backend, store=SqlStore({url!r}),
                           config=SeedConfig(batch_size=4))
        asyncio.run(main())
    """))
    env = {**os.environ, "KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    store = open_store(url, embedder)
    with AugmentationServer(api_key=API_KEY, latency=0.05) as server:
        env["URL"] = server.url
        doomed = subprocess.Popen([sys.executable, str(script)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while server.request_count < 20 or sum(claims_of(store).values()) < 60:
            assert doomed.poll() is None, doomed.communicate()
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.005)
        [dead_run] = claims_of(store)  # it claims under its run id
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        while server.in_flight:
            time.sleep(0.01)
        result = run(store, server, data)  # at once: well within the 60 s lease
        counts = sent(server)
    assert result.claimed_elsewhere == 0 and result.failed == 0
    assert result.successful + result.skipped == 60
    assert len(counts) == 60
    assert sum(n > 1 for n in counts.values()) <= 4  # what was in flight, no more
    assert store.sql("SELECT count(*) AS n FROM memori_nb_seeded_conversations").n[0] == 60
    status = store.runs().set_index("run_id").status
    assert status[dead_run] == "unfinished" and status[result.run_id] == "completed"
    assert claims_of(store) == {}
    store.close()


def test_build_frees_the_claims_of_dead_or_ended_plain_runs_only(db_url, embedder):
    """A run still `running` whose process on this machine is gone loses its claims at
    once; so does one that ended (cancelled while a claim was on its way in, the claim
    landing after its release); one on another host cannot be checked, so its claims run
    out with their lease."""
    from memori_nb.stores.base import this_process

    host, _ = this_process()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store = open_store(db_url, embedder)
    ks = keys(6)
    assert store.claim(ks[:2], worker="dead-here", lease_seconds=600) == {0, 1}
    assert store.claim(ks[2:4], worker="elsewhere", lease_seconds=600) == {0, 1}
    assert store.claim(ks[4:], worker="interrupted", lease_seconds=600) == {0, 1}
    with store._transaction() as cursor:
        store._many(cursor, "INSERT INTO memori_nb_runs (run_id, status, host, pid) VALUES "
                            "(?, ?, ?, ?)",
                    [("dead-here", "running", host, gone.pid),
                     ("elsewhere", "running", "another-host", gone.pid),
                     ("interrupted", "interrupted", host, os.getpid())])
    store.build()
    assert claims_of(store) == {"elsewhere": 2}
    status = store.runs().set_index("run_id").status
    assert (status["dead-here"], status["elsewhere"]) == ("unfinished", "running")
    assert store.claim(ks, worker="next", lease_seconds=60) == {0, 1, 4, 5}
    store.close()


def test_workers_build_a_new_postgresql_database_at_once(pg_url, embedder):
    """Workers starting together on an empty database each build it: no one's CREATE
    trips over another's."""
    stores = [SqlStore(pg_url, embedder=embedder) for _ in range(4)]
    start = threading.Barrier(len(stores))

    def build(store: SqlStore) -> None:
        start.wait()
        store.build()

    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(build, stores))
    assert stores[0].claim(keys(1), worker="a", lease_seconds=60) == {0}
    assert len(stores[0].sql("SELECT * FROM memori_nb_store")) == 1
    for store in stores:
        store.close()


# --- claims and the journal (a killed worker) ----------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
LEASE = 4.0  # long enough for the survivor's first run to find the claims still held


def test_a_killed_workers_conversations_are_finished_by_another_billing_only_what_was_in_flight(
        pg_url, tmp_path, embedder):
    """kill -9 of a worker mid-run: its claims hold until the lease runs out (the other
    worker skips them meanwhile), then the other takes them over; what the killed one
    finished but had not written comes from its journal, so only what was in flight is sent
    again."""
    data = seeds(entities=1, per_entity=60)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, os
        from memori_nb import SeedConfig, SeedData
        from memori_nb.backends import MemoriBackend
        from memori_nb.engine import seed_all
        from memori_nb.models import ClaimSettings
        from memori_nb.stores import SqlStore
        conversations = {texts(60, "user-0")!r}
        LEASE = {LEASE}
        async def main():
            backend = MemoriBackend(api_key=os.environ["KEY"], base_url=os.environ["URL"])
            await seed_all([SeedData.for_conversations(entity_id="user-0",
                                                       conversations=conversations)],
                           backend=backend, store=SqlStore(os.environ["DB"]),
                           config=SeedConfig(batch_size=4),
                           claims=ClaimSettings(worker="doomed", lease_seconds=LEASE))
        asyncio.run(main())
    """))
    env = {**os.environ, "KEY": API_KEY, "DB": pg_url, "PYTHONPATH": str(ROOT)}
    store = open_store(pg_url, embedder)
    with AugmentationServer(api_key=API_KEY, latency=0.05) as server:
        env["URL"] = server.url
        doomed = subprocess.Popen([sys.executable, str(script)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        # Killed well before its first write (3 s after the first answer), once it has
        # claimed all 60 (its windows of conversations grow 8, 16, 32...).
        while server.request_count < 20 or claims_of(store).get("doomed", 0) < 60:
            assert doomed.poll() is None, doomed.communicate()
            assert time.monotonic() < deadline, "the worker never got going"
            time.sleep(0.005)
        doomed.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        doomed.wait()
        while server.in_flight:
            time.sleep(0.01)
        before = sent(server)
        # At once: what the killed worker finished comes from its journal (it had written
        # nothing yet), and the rest of its claims still hold and are left alone.
        waiting = run(store, server, data, claims=ClaimSettings(worker="survivor"))
        assert sent(server) == before and waiting.skipped == 60
        replayed = 60 - waiting.claimed_elsewhere
        assert 0 < replayed <= server.request_count
        time.sleep(max(0.0, killed + LEASE + 0.2 - time.monotonic()))  # the lease runs out
        result = run(store, server, data, claims=ClaimSettings(worker="survivor"))
        after = sent(server)
    twice = [text for text, n in after.items() if n > 1]
    assert len(twice) <= 4  # the killed worker's requests in flight, no more
    assert set(after) == {c["messages"][0]["content"] for c in texts(60, "user-0")}
    assert result.claimed_elsewhere == 0 and result.failed == 0
    ledger = store.sql("SELECT count(*) AS n FROM memori_nb_seeded_conversations")
    assert ledger.n[0] == 60
    assert claims_of(store) == {}  # the dead worker's too: taken over, then released
    store.close()


def test_a_dead_workers_journal_is_replayed_before_its_claims_are_taken_over_mid_run(
        pg_url, embedder):
    """A worker dies while another's run goes on; when the survivor takes over its claims,
    what the dead one finished and journaled is written first, not sent again."""
    data = seeds(entities=1, per_entity=3)
    [finished, *_] = conversation_keys(data[0])

    with AugmentationServer(api_key=API_KEY) as server:
        class DiesMeanwhile(SqlStore):
            """The real store; before its first claim, another worker claims the input,
            finishes one conversation (journaled, not written) and dies."""

            first = True

            def claim(self, keys, **kwargs):
                if self.first:
                    self.first = False
                    assert super().claim(keys, worker="dead", lease_seconds=60)
                    expire(self, "dead")
                    dead_journal(self, data[0], finished)
                return super().claim(keys, **kwargs)

        store = DiesMeanwhile(pg_url, embedder=embedder)
        result = run(store, server, data, claims=ClaimSettings(worker="survivor"))
        assert server.request_count == 2
    [skipped] = [r for r in result.results if r.status == "skipped"]
    assert skipped.conversation_id == finished[1] and skipped.reason == "already seeded"
    runs = store.sql("SELECT run_id, conversation_id FROM memori_nb_seeded_conversations")
    assert dict(zip(runs.conversation_id, runs.run_id))[finished[1]] == "deadrun"
    store.close()


def dead_journal(store: SqlStore, seed: SeedData, key: tuple[str, str, str]) -> None:
    """The journal a killed run leaves on this machine: one conversation finished."""
    from memori_nb.models import ConversationResult, Extraction
    from memori_nb.stores.base import ResultRecord
    from memori_nb.stores.journal import Journal
    from memori_nb.validation import check_conversations

    [conversation] = [parsed for _, parsed in check_conversations(seed)
                      if parsed.id == key[1]]
    journal = Journal(store.journal_dir(), "deadrun")
    journal.finished(ResultRecord(
        ConversationResult(conversation_id=key[1], entity_id=key[0], status="succeeded",
                           triples_count=0), key[2], None,
        Extraction(facts=("user lives in Porto",)), conversation))
    journal.close(delete=False)  # killed: the files stay, the lock is free


def test_a_run_whose_claims_cannot_be_renewed_stops_sending(pg_url, embedder):
    """Once renewal has failed for a whole lease, other workers may take the claims over:
    the run sends nothing more (what is in flight still comes back and is kept)."""
    store = open_store(pg_url, embedder)
    with AugmentationServer(api_key=API_KEY, latency=2.0) as server:
        async def go():
            backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
            task = asyncio.create_task(seed_all(
                seeds(entities=1, per_entity=6), backend=backend, store=store,
                config=SeedConfig(batch_size=2),
                claims=ClaimSettings(worker="me", lease_seconds=0.3)))
            while server.in_flight < 2:
                await asyncio.sleep(0.01)
            other = open_store(pg_url, embedder)
            with other._transaction() as cursor:  # renewals fail from now on
                other._run(cursor, "DROP TABLE memori_nb_claim_leases")
            other.close()
            result = await task
            await backend.aclose()
            return result
        result = asyncio.run(go())
        assert server.request_count == 2
    assert "could not be renewed" in result.stopped_reason
    assert (result.successful, result.skipped) == (2, 4)
    assert {r.reason for r in result.results if r.status == "skipped"} == {
        "run stopped (claims lost) before it was sent"}
    store.close()


def test_a_worker_releasing_while_another_claims_never_deadlocks(pg_url, embedder):
    """A refused claim keeps its row locked until its transaction ends, so the release
    locks in the order claims do. The releasing worker claimed window after window in an
    order of its input, not of the keys (here: the highest first)."""
    releasing, claiming = open_store(pg_url, embedder), open_store(pg_url, embedder)
    ks = keys(20_000)
    for _ in range(4):
        for window in range(5):
            releasing.claim(ks[::-1][window * 4000:(window + 1) * 4000], worker="done",
                            lease_seconds=60)
        start = threading.Barrier(2)

        def release() -> None:
            start.wait()
            releasing.release_claims("done")

        def claim() -> set[int]:
            start.wait()
            return claiming.claim(ks, worker="next", lease_seconds=60)

        with ThreadPoolExecutor(2) as pool:
            released, claimed = pool.submit(release), pool.submit(claim)
            released.result()  # neither raises StoreError (deadlock detected)
            claimed.result()
        assert set(claims_of(claiming)) <= {"next"}
        claiming.release_claims("next")
    releasing.close()
    claiming.close()


def test_workers_writing_the_same_new_memories_at_once_never_deadlock(pg_url, embedder):
    """Two workers' batches bring the same new subjects and objects, each in its own order
    (the order their conversations stated them): both are written, neither aborted."""
    from memori_nb.models import Conversation, ConversationResult, Extraction, Message, Triple
    from memori_nb.stores.base import ResultRecord

    stores = [open_store(pg_url, embedder) for _ in range(2)]
    names = [f"Place {i:03d}" for i in range(300)]

    def batch(worker: int, round_: int) -> list[ResultRecord]:
        order = names if worker == 0 else names[::-1]
        triples = tuple(Triple(subject_name=f"{name} r{round_}", subject_type="place",
                               predicate=f"near r{round_}", object_name=f"{name}!",
                               object_type="place") for name in order)
        conversation = Conversation(id=f"w{worker}-r{round_}", messages=(
            Message(role="user", content=f"places, worker {worker}, round {round_}"),))
        return [ResultRecord(ConversationResult(conversation_id=conversation.id,
                                                entity_id=f"user-{worker}", status="succeeded",
                                                triples_count=len(triples)),
                             conversation.content_hash(), None,
                             Extraction(triples=triples), conversation)]

    for round_ in range(4):
        start = threading.Barrier(2)

        def write(worker: int) -> None:
            records = batch(worker, round_)
            start.wait()
            stores[worker].write(f"run-{worker}", records)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(write, range(2)))  # a deadlock would raise StoreError here
    graph = stores[0].sql("SELECT count(*) AS n FROM memori_knowledge_graph")
    assert graph.n[0] == 2 * 4 * 300  # one per entity, round and place
    for store in stores:
        store.close()


def test_a_run_that_kept_no_results_still_says_why_it_skipped():
    from memori_nb.models import SeedResult

    result = SeedResult(run_id="r", total=9, successful=4, failed=0, skipped=5,
                        total_triples=8, duration_ms=1200, claimed_elsewhere=2)
    assert str(result) == ("Seeded 9 conversations in 1.2 s: 4 succeeded, 3 already seeded, "
                           "2 skipped (being seeded by another run); 8 triples")


def test_a_journal_another_process_is_replaying_is_waited_for_not_skipped(tmp_path, embedder):
    """Two shards meet a dead worker's journal at once: the one that finds it locked by
    the other's replay waits for it, so it never takes the dead run's finished (billed)
    conversations for unsent."""
    import fcntl

    from memori_nb.stores.journal import replay

    store = SqlStore(f"sqlite:///{tmp_path}/memori.db", embedder=embedder)
    store.build()
    data = seeds(entities=1, per_entity=2)
    finished = conversation_keys(data[0])[0]
    dead_journal(store, data[0], finished)
    directory = store.journal_dir()
    # The other shard (a thread here: flock holds per open file) takes the lock and says
    # it replays, then lets go without writing anything, as if it had died meanwhile.
    fd = os.open(directory / "deadrun.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    marker = directory / f"deadrun.replaying.{os.getpid()}"
    marker.touch()

    def let_go() -> None:
        time.sleep(0.5)
        marker.unlink()
        os.close(fd)

    other = threading.Thread(target=let_go)
    started = time.monotonic()
    other.start()
    written = replay(directory, store)
    other.join()
    assert time.monotonic() - started >= 0.45  # it waited for the other replay
    assert written == 1 and store.already_seeded([finished]) == {0}
    store.close()


def test_a_run_that_stalls_past_its_lease_goes_on_when_nobody_took_its_claims(tmp_path,
                                                                              embedder):
    """A notebook cell that blocks the loop longer than the lease, with no other run on the
    database: the claims are renewed when the loop wakes, all still the run's, and it sends
    the rest (each conversation once) instead of stopping as if they were taken over."""
    lease = 0.5
    stalled = threading.Event()

    class StallsOnce(MemoriBackend):
        async def augment(self, request):
            extraction = await super().augment(request)
            if not stalled.is_set():
                stalled.set()
                # The loop is blocked meanwhile; the worker then goes straight to its next
                # conversation, before the renewal task has run.
                time.sleep(3 * lease)
            return extraction

    store = SqlStore(f"sqlite:///{tmp_path}/memori.db", embedder=embedder)
    with AugmentationServer(api_key=API_KEY, latency=0.01) as server:
        async def go():
            backend = StallsOnce(api_key=API_KEY, base_url=server.url)
            try:
                return await seed_all(seeds(entities=1, per_entity=6), backend=backend,
                                      store=store, config=SeedConfig(batch_size=1),
                                      claims=ClaimSettings(worker="me", lease_seconds=lease))
            finally:
                await backend.aclose()
        result = asyncio.run(go())
        counts = sent(server)
    store.close()
    assert result.stopped_reason is None
    assert result.successful == 6 and len(counts) == 6 and set(counts.values()) == {1}


def test_a_worker_that_stalls_past_its_lease_sends_nothing_more(tmp_path, embedder):
    """A worker whose loop stalls longer than its lease (a long synchronous call, a paused
    VM) finds its claims taken over when it wakes: it stops rather than send them too."""
    lease = 1.0
    url = f"sqlite:///{tmp_path}/memori.db"
    data = seeds(entities=1, per_entity=8)
    stalled = threading.Event()

    class StallsOnce(MemoriBackend):
        async def augment(self, request):
            if not stalled.is_set():
                stalled.set()
                time.sleep(2.5 * lease)  # the event loop is blocked meanwhile
            return await super().augment(request)

    def worker(name: str, backend_class) -> object:
        store = SqlStore(url, embedder=embedder)
        store.build()

        async def go():
            backend = backend_class(api_key=API_KEY, base_url=server.url)
            try:
                return await seed_all(data, backend=backend, store=store,
                                      config=SeedConfig(batch_size=1),
                                      claims=ClaimSettings(worker=name, lease_seconds=lease))
            finally:
                await backend.aclose()
        try:
            return asyncio.run(go())
        finally:
            store.close()

    with AugmentationServer(api_key=API_KEY, latency=0.01) as server:
        results = {}
        stalling = threading.Thread(target=lambda: results.update(a=worker("a", StallsOnce)))
        stalling.start()
        stalled.wait(10)
        time.sleep(lease + 0.3)  # a's lease has run out while it stalls
        results["b"] = worker("b", MemoriBackend)
        stalling.join()
        counts = sent(server)
    assert results["b"].successful == 8
    assert "claims" in results["a"].stopped_reason
    # Only what a had in flight when it stalled went twice.
    assert sum(counts.values()) <= 8 + 1 and len(counts) == 8
