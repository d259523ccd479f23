"""``ahead``: run an iterator in a thread of its own, at most ``depth`` items ahead of its consumer.

For work that releases the GIL (torch operators, codecs): the producer's items are ready when the consumer
asks, and the two run on two cores. An exception in the producer is raised in the consumer at the item where
it happened; a consumer that stops early (``close()``, an exception, garbage collection) stops the producer.

``name_os_thread`` gives such a thread its name in the OS too (the pipeline's stage threads use it).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` in the OS as well (Linux keeps 15 characters), as Python does itself only
    from 3.14: ``top -H`` shows it, and the threads it starts afterwards (OpenMP workers, codec threads) inherit
    it, so their CPU time can be told apart by name (``bench.budget``). Does nothing where the OS has no such name."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write(name[:15])
    except OSError:  # not Linux, or /proc not mounted: the name is only Python's
        pass


def ahead(items: Iterable[T], depth: int, name: str = "ahead") -> Iterator[T]:
    """``items``, produced in a daemon thread at most ``depth`` (>= 1) items before they are taken."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        name_os_thread(name)
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            put(_Failed(e))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
