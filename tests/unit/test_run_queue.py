"""The delivery engine's decisions (tasks.run_queue), on a clock driven by hand."""

from __future__ import annotations

from tasks.run_queue import DatabaseWait, RunQueue


def test_messages_start_in_arrival_order_on_free_threads_only() -> None:
    queue: RunQueue[str] = RunQueue(capacity=3, spare=2)
    queue.arrive(["a1", "a2", "a3", "a4"], now=0.0)

    assert queue.to_start(10) == ["a1", "a2", "a3"]
    assert (queue.busy, len(queue), queue.free()) == (3, 1, 0)
    assert queue.to_start(10) == []
    queue.ended(None)
    assert queue.to_start(10) == ["a4"]


def test_while_every_thread_is_taken_each_waiting_message_is_tried_once_on_a_spare() -> None:
    queue: RunQueue[str] = RunQueue(capacity=2, spare=2)
    queue.arrive(["a1", "a2", "a3", "b1", "c1"], now=0.0)
    assert queue.to_start(10) == ["a1", "a2"]
    queue.started("a")
    queue.started("a")

    # Two spare threads: the first two messages not tried yet, counted busy.
    assert queue.to_try_spare() == ["a3", "b1"]
    assert (queue.busy, queue.tenants()) == (4, ["a"])
    # a3 is of a tenant with threads here: the claim refused it, it waits again, first.
    queue.put_back(["a3"], now=0.5)
    queue.started("b")
    assert queue.busy == 3
    # c1 is tried next; a3 never again.
    assert queue.to_try_spare() == ["c1"]
    queue.put_back(["c1"], now=0.5)
    assert queue.to_try_spare() == []
    # No spare room left at all: nothing is tried.
    queue.arrive(["d1"], now=0.6)
    queue.busy = 4
    assert queue.to_try_spare() == []


def test_no_spare_is_tried_while_a_thread_is_free() -> None:
    queue: RunQueue[str] = RunQueue(capacity=2, spare=2)
    queue.arrive(["a1"], now=0.0)
    assert queue.to_try_spare() == []
    assert queue.to_start(10) == ["a1"]


def test_a_message_that_waited_park_after_s_without_a_free_thread_is_parked() -> None:
    queue: RunQueue[str] = RunQueue(capacity=1, spare=0, park_after_s=1.0)
    queue.arrive(["a1", "a2"], now=10.0)
    queue.to_start(10)
    queue.arrive(["a3"], now=10.5)

    assert queue.wake_in_s(10.25) == 0.75  # a2 is due to be parked at 11.0
    assert queue.to_park(10.99) == []
    assert queue.to_park(11.0) == ["a2"]
    assert queue.wake_in_s(11.0) == 0.5  # a3's turn at 11.5
    # A free thread: nothing is parked, however long it waited; it starts instead.
    queue.ended("a")
    assert queue.to_park(20.0) == []
    assert queue.to_start(10) == ["a3"]


def test_parked_runs_are_taken_with_a_free_thread_and_no_message_waiting() -> None:
    queue: RunQueue[str] = RunQueue(capacity=2, spare=0, pull_idle_s=1.0)
    assert queue.may_pull(0.0)
    queue.pulled(0, now=0.0)  # the take found none: not again for pull_idle_s
    assert (queue.may_pull(0.5), queue.wake_in_s(0.5)) == (False, 0.5)
    assert queue.may_pull(1.0)
    queue.pulled(1, now=1.0)  # it found some: again at once, while threads are free
    assert (queue.busy, queue.may_pull(1.0), queue.wake_in_s(1.0)) == (1, True, 0.0)
    queue.arrive(["m1"], now=1.0)
    assert not queue.may_pull(1.0)  # a message waits: it goes first
    assert queue.to_start(10) == ["m1"]
    assert not queue.may_pull(1.0)  # no free thread
    assert queue.wake_in_s(1.0) is None  # nothing to wake for: a finish wakes the engine


def test_take_all_empties_the_queue_for_a_shutdown() -> None:
    queue: RunQueue[str] = RunQueue(capacity=1, spare=1)
    queue.arrive(["a1", "a2"], now=0.0)
    assert queue.take_all() == ["a1", "a2"]
    assert len(queue) == 0


def test_after_the_database_failed_the_next_try_waits_doubling_up_to_five_seconds() -> None:
    wait = DatabaseWait()
    assert not wait.waiting(0.0)
    assert [wait.failed(0.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert (wait.waiting(4.99), wait.waiting(5.0), wait.until) == (True, False, None)
    wait.answered()
    assert wait.failed(10.0) == 0.5
