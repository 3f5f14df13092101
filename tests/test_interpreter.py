"""A run changes the collector's young threshold and the switch interval only while it runs,
and restores them exactly."""

from __future__ import annotations

import asyncio
import gc
import sys

from helpers import conversation
from memori_nb import Memori, SeedData
from memori_nb._interpreter import RUN_SWITCH_SECONDS, RUN_YOUNG_THRESHOLD, run_settings


def test_overlapping_runs_share_one_change_and_the_last_restores_it():
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    first, second = run_settings(), run_settings()
    first.__enter__()
    assert gc.get_threshold()[0] == max(before[0], RUN_YOUNG_THRESHOLD)
    assert sys.getswitchinterval() == min(interval, RUN_SWITCH_SECONDS)
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == max(before[0], RUN_YOUNG_THRESHOLD)
    assert sys.getswitchinterval() == min(interval, RUN_SWITCH_SECONDS)
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before and sys.getswitchinterval() == interval


def test_settings_changed_by_the_user_during_a_run_are_kept():
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        with run_settings():
            gc.set_threshold(1234, 5, 6)
            sys.setswitchinterval(0.002)
        assert gc.get_threshold() == (1234, 5, 6) and sys.getswitchinterval() == 0.002
    finally:
        gc.set_threshold(*before)
        sys.setswitchinterval(interval)


def test_concurrent_runs_in_one_loop_leave_the_interpreter_as_it_was():
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    interval = sys.getswitchinterval()

    async def both():
        m1 = Memori(conn=":memory:", backend="local")
        m2 = Memori(conn=":memory:", backend="local")
        data = SeedData.for_conversations(entity_id="u", conversations=[
            conversation(f"c{i}", "I live in Lisbon.") for i in range(50)])
        return await asyncio.gather(m1.seed(data), m2.seed(data))

    results = asyncio.run(both())
    assert [r.successful for r in results] == [50, 50]
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
    assert sys.getswitchinterval() == interval


def test_an_input_set_aside_is_given_back_and_the_collector_is_as_before():
    from memori_nb._interpreter import input_set_aside

    enabled, frozen = gc.isenabled(), gc.get_freeze_count()
    with input_set_aside(lambda: [{"id": i} for i in range(1000)]) as built:
        assert len(built) == 1000 and gc.isenabled() == enabled
        assert gc.get_freeze_count() >= frozen + 1000  # out of the collector's sight
    assert gc.isenabled() == enabled and gc.get_freeze_count() == frozen


def test_an_input_that_cannot_be_built_leaves_the_collector_as_it_was():
    from memori_nb._interpreter import input_set_aside

    enabled, frozen = gc.isenabled(), gc.get_freeze_count()

    def fail():
        raise ValueError("unreadable")

    try:
        with input_set_aside(fail):
            raise AssertionError("not reached")
    except ValueError:
        pass
    assert gc.isenabled() == enabled and gc.get_freeze_count() == frozen
