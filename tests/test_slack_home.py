"""App Home refreshes queue off the send path: coalesced per person, bounded, dropped on stop."""

from __future__ import annotations

import asyncio

from bot.adapters.slack_home import HomeRefresh, Whose


class Publisher:
    """Records each publish; a gate holds them until the test opens it."""

    def __init__(self) -> None:
        self.published: list[Whose] = []
        self.running = 0
        self.most = 0
        self.gate = asyncio.Event()
        self.started = asyncio.Condition()

    async def __call__(self, whose: Whose) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        async with self.started:
            self.started.notify_all()
        try:
            await self.gate.wait()
            if whose[1] == "broken":
                raise RuntimeError("views.publish failed")
            self.published.append(whose)
        finally:
            self.running -= 1

    async def until_running(self, count: int) -> None:
        async with self.started:
            await self.started.wait_for(lambda: self.running >= count)


async def test_many_asks_for_one_person_publish_once_each_the_latest_state() -> None:
    publish = Publisher()
    homes = HomeRefresh(publish, lanes=2)
    for _ in range(5):
        homes.want(("account", "a"))
    homes.want(("chat", "U2"))
    homes.want(("account", "a"))  # already queued: no second entry

    publish.gate.set()
    await homes.drained()

    assert sorted(publish.published) == [("account", "a"), ("chat", "U2")]


async def test_no_more_lanes_publish_at_once_than_it_has() -> None:
    publish = Publisher()
    homes = HomeRefresh(publish, lanes=2)
    for n in range(10):
        homes.want(("account", str(n)))

    await publish.until_running(2)
    assert homes.due == 8, "two publishing, the rest waiting"
    publish.gate.set()
    await homes.drained()

    assert publish.most == 2 and len(publish.published) == 10


async def test_a_failed_publish_holds_back_none_of_the_others() -> None:
    publish = Publisher()
    homes = HomeRefresh(publish, lanes=1)
    for whose in (("account", "broken"), ("account", "b"), ("account", "c")):
        homes.want(whose)

    publish.gate.set()
    await homes.drained()

    assert publish.published == [("account", "b"), ("account", "c")]


async def test_closing_drops_the_queue_and_lets_the_publish_under_way_finish() -> None:
    publish = Publisher()
    homes = HomeRefresh(publish, lanes=1)
    for n in range(5):
        homes.want(("account", str(n)))
    await publish.until_running(1)

    closing = asyncio.create_task(homes.close(grace=5))
    await asyncio.sleep(0)  # let close() drop the queue before the gate opens
    publish.gate.set()
    await closing
    homes.want(("account", "late"))  # asked after the stop: ignored

    assert publish.published == [("account", "0")]
    assert homes.due == 0
    await homes.drained()
