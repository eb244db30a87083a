"""Batches made on a background thread while the model trains, so that a step never waits for
its batches to be cut from the token store, padded (and page-locked for the GPU)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetched(Generic[T]):
    """Iterates `items` a few ahead on a daemon thread; an error there is raised here, at the
    item it happened at. Use it as a context manager: leaving early stops the thread."""

    def __init__(self, items: Iterator[T], depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._fill, args=(items,), name="minitx-batches", daemon=True
        )
        self._thread.start()

    def _fill(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_Failed(error))

    def _put(self, item) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetched[T]:
        return self

    def __next__(self) -> T:
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # a later call ends too
            raise StopIteration
        if isinstance(item, _Failed):
            raise item.error
        return item

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopped.set()
        self._thread.join()
