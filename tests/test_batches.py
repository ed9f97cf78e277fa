"""Group commit (`bot.delivery.batches`): what its callers are told is what is written."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bot.delivery.batches import GroupCommit


async def test_what_a_cancelled_writer_had_in_hand_or_in_line_is_never_written_later() -> None:
    """The writer is cancelled while the store hangs (a bot stopping): the batch it was
    writing and the items in line behind it are all told "cancelled", and a later writer
    writes only what came after (it wrote those told "cancelled" too)."""
    written: list[list[str]] = []
    hang = asyncio.Event()

    async def write(items: Sequence[str]) -> list[str]:
        written.append(list(items))
        if items[0] == "a":
            await hang.wait()  # the store hangs on the first batch
        return [f"{item} kept" for item in items]

    batch = GroupCommit(write, name="test")
    first = asyncio.ensure_future(batch("a"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # "a" is being written
    second = batch.submit("b")  # in line behind it
    assert written == [["a"]]
    assert batch.task is not None
    batch.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch.task
    assert second.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await first

    assert await batch("c") == "c kept"
    assert written == [["a"], ["c"]]
