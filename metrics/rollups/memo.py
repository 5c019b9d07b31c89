"""What a process has read of its rollups, kept until the buckets it came from change.

A page, an alert cycle or a report reads the same closed buckets again and
again, and a closed bucket rarely changes (a late refund, a repair).  Each
entry names the bucket document it was read from or depends on (``under``:
a ``rollup_buckets`` ``_id``).  A change stream on ``rollup_buckets`` names
every bucket document any process wrote since the last refresh, and only
the entries under those are forgotten, so a refresh costs one ``getMore``
and a page view after it reads only what changed: the newest hour, mostly.

Where that change stream cannot be opened (a standalone ``mongod``, a user
without the privilege), every entry is forgotten at each refresh, as if
nothing were kept.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Hashable, Iterable, TypeVar

from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from metrics.db import describe_error

log = logging.getLogger("paywatch.rollups")

T = TypeVar("T")
# Change events that end a stream: what it followed is gone.
INVALIDATING = {"drop", "dropDatabase", "rename", "invalidate"}
# More bucket writes than this between two refreshes is a build or a repair of much of the
# history: forgetting everything and following from now costs less than reading them all.
CHANGES_PER_REFRESH = 2_000


class Memo:
    """Reads of ``buckets`` (and of the raw documents under them), by key, at most ``limit`` entries;
    a refresh waits ``await_ms`` for a change that has not come."""

    def __init__(self, buckets: Collection, limit: int, await_ms: int):
        self.buckets = buckets
        self.limit = limit
        self.await_ms = await_ms
        self._entries: dict[Hashable, object] = {}
        self._under: dict[str, set] = {}  # bucket id -> the keys read under it
        self._tags: dict[Hashable, str] = {}  # key -> its bucket id
        self._lock = threading.Lock()
        self._epoch = 0  # moves at every forgetting: a read that began before it is not kept
        self._stream = None
        self._warned = False

    def get(self, key: Hashable, read: Callable[[], T], under: str) -> T:
        return self.many({key: under}, lambda missing: {key: read()})[key]

    def many(self, wanted: dict[Hashable, str], read: Callable[[list], dict]) -> dict:
        """``wanted``: key -> the bucket ``_id`` it depends on.  ``read(missing)`` answers every
        key not remembered; what it answers is remembered unless something was forgotten meanwhile."""
        with self._lock:
            out = {k: self._entries[k] for k in wanted if k in self._entries}
            epoch = self._epoch
        missing = [k for k in wanted if k not in out]
        if not missing:
            return out
        found = read(missing)
        with self._lock:
            if epoch == self._epoch:
                for key in missing:
                    self._keep(key, found[key], wanted[key])
        out.update(found)
        return out

    def _keep(self, key: Hashable, value: object, under: str) -> None:
        while len(self._entries) >= self.limit:
            self._drop(next(iter(self._entries)))  # the oldest entry
        self._entries[key] = value
        self._under.setdefault(under, set()).add(key)
        self._tags[key] = under

    def _drop(self, key: Hashable) -> None:
        self._entries.pop(key, None)
        under = self._tags.pop(key, None)
        if under is not None:
            keys = self._under.get(under)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._under[under]

    def forget(self, under: Iterable[str] | None = None) -> None:
        """Everything, or what was read under these bucket ids."""
        with self._lock:
            self._epoch += 1
            if under is None:
                self._entries, self._under, self._tags = {}, {}, {}
                return
            for bucket_id in under:
                for key in list(self._under.get(bucket_id, ())):
                    self._drop(key)

    def follow(self) -> None:
        """At a refresh: forget what was read under the buckets written since the last one."""
        if self._stream is None:
            self._open()
            return
        changed: list[str] = []
        try:
            while (change := self._stream.try_next()) is not None:
                if change["operationType"] in INVALIDATING or len(changed) >= CHANGES_PER_REFRESH:
                    raise _StartOver
                changed.append(change["documentKey"]["_id"])
        except (PyMongoError, _StartOver):
            self.close()
            self._open()
            return
        self.forget(changed)

    def _open(self) -> None:
        # Opened before anything is kept, so no write after a read can go unseen.
        try:
            self._stream = self.buckets.watch([{"$project": {"fullDocument": 0, "updateDescription": 0}}],
                                              max_await_time_ms=self.await_ms)
        except PyMongoError as exc:
            self._stream = None
            if not self._warned:
                log.info("rollups: no change stream on %s (%s); what was read is forgotten at every refresh",
                         self.buckets.name, describe_error(exc))
                self._warned = True
        self.forget()

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except PyMongoError:
                pass


class _StartOver(Exception):
    pass
