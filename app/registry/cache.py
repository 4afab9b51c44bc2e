"""The LRU of loaded pipelines that every app instance keeps.

It lives apart from store.py so that opening a database does not import scikit-learn and
skops (180 MB with the pandas and pyarrow that scikit-learn imports): the API process and
an import job never load a model until they need one.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class ModelCache(Generic[T]):
    """A thread-safe LRU of loaded pipelines; loading happens outside the lock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a loader ran: a restart test reads it

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        pipeline = load()
        with self._lock:
            self.loads += 1
            self._entries[key] = pipeline
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return pipeline
