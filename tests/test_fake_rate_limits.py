"""The fakes' opt-in rate limits, seen through the real clients: python-telegram-bot's `Bot`
raises `RetryAfter` past Telegram's flood limits, slack_sdk's `AsyncWebClient` raises
`SlackApiError` "ratelimited" (HTTP 429, Retry-After) past Slack's; without limits nothing is
refused. A frozen clock stands in for time, so no test sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from telegram import Bot
from telegram.error import RetryAfter

from tests.fakes.slack_api import TIER_4, FakeSlackAPI, SlackLimits
from tests.fakes.telegram_api import FakeBotAPI, TelegramLimits

TOKEN = "123:limits"


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest_asyncio.fixture
async def telegram(ticks: Ticks) -> AsyncIterator[tuple[FakeBotAPI, Bot]]:
    async with FakeBotAPI(TOKEN, limits=TelegramLimits(clock=ticks)) as fake:
        async with Bot(TOKEN, base_url=f"{fake.url}/bot") as bot:
            yield fake, bot


@pytest_asyncio.fixture
async def slack(ticks: Ticks) -> AsyncIterator[tuple[FakeSlackAPI, AsyncWebClient]]:
    async with FakeSlackAPI(limits=SlackLimits(clock=ticks)) as fake:
        yield fake, AsyncWebClient(token=fake.token, base_url=f"{fake.url}/api/")


# -- Telegram -----------------------------------------------------------------------------------

async def test_telegram_takes_30_messages_at_once_and_refuses_the_31st(
        telegram: tuple[FakeBotAPI, Bot]) -> None:
    fake, bot = telegram
    for chat in range(1, 31):
        await bot.send_message(chat, "hello")
    with pytest.raises(RetryAfter) as refused:
        await bot.send_message(31, "hello")
    assert refused.value.retry_after == timedelta(seconds=1)
    assert fake.throttled == 1
    [call] = [c for c in fake.calls if c.status == 429]
    assert call.method == "sendMessage" and call.params["chat_id"] == 31


async def test_telegram_refills_30_a_second(telegram: tuple[FakeBotAPI, Bot],
                                            ticks: Ticks) -> None:
    fake, bot = telegram
    for chat in range(1, 31):
        await bot.send_message(chat, "hello")
    ticks.now += 0.1  # three messages' worth
    for chat in range(31, 34):
        await bot.send_message(chat, "hello")
    with pytest.raises(RetryAfter):
        await bot.send_message(34, "hello")
    assert fake.throttled == 1


async def test_one_telegram_chat_takes_a_burst_of_3_then_one_a_second(
        telegram: tuple[FakeBotAPI, Bot], ticks: Ticks) -> None:
    fake, bot = telegram
    for _ in range(3):
        await bot.send_message(42, "hello")
    with pytest.raises(RetryAfter) as refused:
        await bot.send_message(42, "one too many")
    assert refused.value.retry_after == timedelta(seconds=1)
    await bot.send_message(43, "another chat is not held back")
    ticks.now += 1.0
    await bot.send_message(42, "a second later")
    assert fake.throttled == 1
    assert [c.params["text"] for c in fake.calls_to("sendMessage") if c.status == 200
            and c.params["chat_id"] == 42] == ["hello"] * 3 + ["a second later"]


async def test_a_telegram_group_takes_20_a_minute(telegram: tuple[FakeBotAPI, Bot],
                                                  ticks: Ticks) -> None:
    fake, bot = telegram
    group = -100_123
    for _ in range(20):
        await bot.send_message(group, "hello")
        ticks.now += 0.1  # the overall limit is not what stops it
    with pytest.raises(RetryAfter) as refused:
        await bot.send_message(group, "one too many")
    assert refused.value.retry_after == timedelta(seconds=1)  # 3 s a message, 2 s gone by
    ticks.now += 3.0
    await bot.send_message(group, "three seconds later")
    assert fake.throttled == 1


async def test_telegram_limits_count_messages_only(telegram: tuple[FakeBotAPI, Bot]) -> None:
    fake, bot = telegram
    for chat in range(1, 31):
        await bot.send_message(chat, "hello")
    await bot.get_me()
    await bot.set_my_commands([("help", "what the bot does")])
    await bot.send_chat_action(1, "typing")
    with pytest.raises(RetryAfter):
        await bot.send_document(99, b"content", filename="a.txt")
    assert fake.throttled == 1


async def test_telegram_has_no_limits_unless_asked() -> None:
    async with FakeBotAPI(TOKEN) as fake:
        async with Bot(TOKEN, base_url=f"{fake.url}/bot") as bot:
            for n in range(50):
                await bot.send_message(42 + n % 2, f"message {n}")
    assert fake.throttled == 0
    assert all(c.status == 200 for c in fake.calls)


# -- Slack --------------------------------------------------------------------------------------

async def test_one_slack_channel_takes_a_burst_of_3_then_one_a_second(
        slack: tuple[FakeSlackAPI, AsyncWebClient], ticks: Ticks) -> None:
    fake, client = slack
    for _ in range(3):
        await client.chat_postMessage(channel="U1", text="hello")
    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(channel="U1", text="one too many")
    assert refused.value.response.status_code == 429
    assert refused.value.response["error"] == "ratelimited"
    assert refused.value.response.headers["Retry-After"] == "1"
    await client.chat_postMessage(channel="U2", text="another channel is not held back")
    ticks.now += 1.0
    await client.chat_postMessage(channel="U1", text="a second later")
    assert fake.throttled == 1


async def test_slack_posts_to_many_channels_meet_the_workspace_cap(
        slack: tuple[FakeSlackAPI, AsyncWebClient], ticks: Ticks) -> None:
    fake, client = slack
    for n in range(50):  # 300 a minute, 10 s of it at once
        await client.chat_postMessage(channel=f"U{n}", text="hello")
    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(channel="U50", text="one too many")
    assert refused.value.response.status_code == 429
    assert refused.value.response.headers["Retry-After"] == "1"  # 0.2 s, in whole seconds
    ticks.now += 1.0  # five a second
    for n in range(51, 56):
        await client.chat_postMessage(channel=f"U{n}", text="hello")
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="U56", text="one too many")
    assert fake.throttled == 2


async def test_a_tier_4_method_takes_its_burst_then_100_a_minute(
        slack: tuple[FakeSlackAPI, AsyncWebClient], ticks: Ticks) -> None:
    fake, client = slack
    view = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}
    burst = int(SlackLimits().burst(TIER_4))
    assert burst == 17
    for n in range(burst):
        await client.views_publish(user_id=f"U{n}", view=view)
    with pytest.raises(SlackApiError) as refused:
        await client.views_publish(user_id="U99", view=view)
    assert refused.value.response["error"] == "ratelimited"
    assert refused.value.response.headers["Retry-After"] == "1"  # 0.6 s to the next call
    ticks.now += 0.6
    await client.views_publish(user_id="U99", view=view)
    await client.chat_postMessage(channel="U99", text="other methods have their own quota")
    assert fake.throttled == 1
    assert [c.status for c in fake.calls_to("views.publish")] == [200] * burst + [429, 200]


async def test_slack_methods_without_a_tier_are_not_limited(
        slack: tuple[FakeSlackAPI, AsyncWebClient]) -> None:
    fake, client = slack
    for _ in range(30):
        await client.auth_test()
    assert fake.throttled == 0


async def test_slack_has_no_limits_unless_asked() -> None:
    async with FakeSlackAPI() as fake:
        client = AsyncWebClient(token=fake.token, base_url=f"{fake.url}/api/")
        for n in range(60):
            await client.chat_postMessage(channel=f"U{n % 2}", text=f"message {n}")
    assert fake.throttled == 0
    assert all(c.status == 200 for c in fake.calls)
