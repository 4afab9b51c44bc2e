"""Persist fitted pipelines with skops (never pickle) and keep loaded versions in an LRU cache."""

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np
import skops.io
from sklearn.pipeline import Pipeline


class UntrustedArtifact(Exception):
    """A stored artifact names types we did not put there; it is not loaded."""


def dump_pipeline(pipeline: Pipeline) -> bytes:
    content: bytes = skops.io.dumps(pipeline)
    return content


def load_pipeline(content: bytes) -> Pipeline:
    untrusted = skops.io.get_untrusted_types(data=content)
    if untrusted:
        raise UntrustedArtifact(f"artifact contains untrusted types: {untrusted}")
    pipeline = skops.io.loads(content, trusted=[])
    if not isinstance(pipeline, Pipeline):
        raise UntrustedArtifact("artifact is not a scikit-learn Pipeline")
    return pipeline


def dump_array(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def load_array(content: bytes) -> np.ndarray:
    return np.asarray(np.load(io.BytesIO(content), allow_pickle=False))


class ModelCache:
    """A thread-safe LRU of loaded pipelines; loading happens outside the lock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, Pipeline] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a loader ran: a restart test reads it

    def get(self, key: Hashable, load: Callable[[], Pipeline]) -> Pipeline:
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
