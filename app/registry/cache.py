"""The LRU of loaded pipelines, one per database, that requests and jobs of a process share.

It lives apart from store.py so that importing it does not import scikit-learn and skops
(180 MB with the pandas and pyarrow that scikit-learn imports): the API process and an
import job never load a model until they need one.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# A process serves one database; tests open many (each its own, so version ids repeat across
# them). The caches of the least recently used databases beyond this many are dropped.
MAX_DATABASES = 4


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


_shared: OrderedDict[tuple[str, int], ModelCache[Any]] = OrderedDict()
_shared_lock = threading.Lock()


def shared_cache(database_url: str, size: int) -> ModelCache[Any]:
    """This process's cache of the pipelines loaded from one database (keyed by model version
    id there): every request and job of the process that reads that database finds what
    another one loaded. Another database gets its own cache, so an id never names two models."""
    key = (database_url, size)
    with _shared_lock:
        cache = _shared.get(key)
        if cache is None:
            cache = _shared[key] = ModelCache(size)
        _shared.move_to_end(key)
        while len(_shared) > MAX_DATABASES:
            _shared.popitem(last=False)
        return cache
