"""A bounded, thread-safe, least-recently-used map, for what a process may keep in memory.

The components keep values that cannot change once the database holds them: invocation
rows (call and arguments), final statuses (a final status has no way out), results read
ahead with the status that announced them. Only values read back from the database go in:
a row this process is writing may belong to a transaction that is rolled back, and must not
become visible through a cache. The map is reset in a forked child (a lock held by another
thread of the parent would never be released there).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict


class BoundedCache[K, V]:
    """At most ``capacity`` entries; the least recently used one goes first.

    :param capacity: the largest number of entries kept; 0 keeps none.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, int(capacity))
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The entry of ``key``, now the most recently used, or None."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key``, evicting the least recently used entries over capacity."""
        if self.capacity == 0:
            return
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        """Remove and return the entry of ``key``, if any."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            return self._entries.pop(key, None)

    def discard_many(self, keys: list[K]) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def clear(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            self._entries.clear()

    def _after_fork(self) -> None:
        # A lock held by another thread of the parent at fork time would never be released.
        self._lock = threading.Lock()
        self._pid = os.getpid()
