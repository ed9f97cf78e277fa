"""Group commit: store writes that arrive together share one transaction.

On SQLite every transaction takes the write lock in turn, and on either store each commit
costs a round of driver work. A burst of small writes of one kind (requests kept in the
inbox, messages marked sent) is therefore written as one batch: each caller waits for the
commit of the batch it joined, and learns its own result, or the batch's failure. Nothing is
reported written before its transaction has committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    done: asyncio.Future[R]


def _retrieved(future: asyncio.Future[R]) -> None:
    """Mark a failure as seen even when its caller gave up waiting (no asyncio warning)."""
    if not future.cancelled():
        future.exception()


class GroupCommit(Generic[T, R]):
    """`await batch(item)`: `item` written by `write`, together with the items that arrive
    while the previous batch is being written (up to `limit` per transaction).

    `write(items)` writes the items in one transaction and returns one result per item, in
    order; if it raises, every caller of that batch gets the exception.
    """

    def __init__(self, write: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *,
                 name: str, limit: int = 200) -> None:
        self._write = write
        self._name = name
        self._limit = limit
        self._waiting: list[_Waiting[T, R]] = []
        self.task: asyncio.Task[None] | None = None  # the writer, while there is work

    async def __call__(self, item: T) -> R:
        return await asyncio.shield(self.submit(item))  # giving up does not undo the write

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue `item`; the future of its result (a caller that waits for it with
        `asyncio.wait` needs no task or shield of its own: the webhook's hot path)."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)
        self._waiting.append(_Waiting(item, done))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name=self._name)
        return done

    async def _run(self) -> None:
        while self._waiting:
            batch = self._waiting[:self._limit]
            del self._waiting[:self._limit]
            try:
                results = await self._write([w.item for w in batch])
            except asyncio.CancelledError:  # a hung store at shutdown: none of it written
                for w in (*batch, *self._waiting):
                    w.done.cancel()
                self._waiting.clear()  # told "cancelled": not written by a later writer
                raise
            except Exception as exc:  # the store failed: each caller decides what then
                for w in batch:
                    if not w.done.done():
                        w.done.set_exception(exc)
                continue
            for w, result in zip(batch, results, strict=True):
                if not w.done.done():
                    w.done.set_result(result)
