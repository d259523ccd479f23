"""common/ahead.py: a producer thread ahead of its consumer."""

from __future__ import annotations

import os
import threading
import time

import pytest

from common.ahead import ahead


def test_items_arrive_in_order_and_the_producer_runs_in_its_own_thread():
    seen = []

    def items():
        for i in range(20):
            seen.append(threading.current_thread().name)
            yield i

    assert list(ahead(items(), 3, name="producer")) == list(range(20))
    assert set(seen) == {"producer"}


def test_the_producer_stays_at_most_depth_items_ahead():
    made = []

    def items():
        for i in range(100):
            made.append(i)
            yield i

    it = ahead(items(), 2)
    assert next(it) == 0
    time.sleep(0.1)  # time enough to run away (100 items take microseconds), were it unbounded
    assert len(made) <= 1 + 2 + 1  # the one taken, a full queue, one blocked in put
    it.close()


def test_a_producer_error_is_raised_in_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise RuntimeError("decoder broke")

    got = []
    with pytest.raises(RuntimeError, match="decoder broke"):
        for x in ahead(items(), 4):
            got.append(x)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    it = ahead(endless(), 2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()  # joins the producer
    assert threading.active_count() == before


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        list(ahead([1], 0))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="OS thread names: Linux")
def test_the_producer_thread_has_its_name_in_the_os_too():
    def items():
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
            yield f.read().strip()

    assert list(ahead(items(), 1, name="frvsr-flow")) == ["frvsr-flow"]
