"""The fake Bot API of tests/fakes in a process of its own, so that its CPU is not the bot's
and its event loop is not the load generator's.

    python -m benchmarks.fake_telegram   # token from TELEGRAM_TOKEN; BENCH_NOTICES, a JSON
                                         # list: how the bot's notices start (see below)

prints one JSON line, {"url": <Bot API base>, "control": <control base>}, then serves until
SIGTERM or SIGINT. The Bot API is `tests.fakes.telegram_api.FakeBotAPI` itself; the control
server beside it (another port) lets the benchmark drive it from outside:

    POST /push   {"messages": [[update_id, chat_id, text], ...]}   queue updates for getUpdates
    GET  /stats  calls by method (accepted and refused), accepted sendMessage calls per chat
                 (answers, and apart from them notices: texts starting like one of
                 BENCH_NOTICES), the start of each text sent, the monotonic time of the last
                 answer (?brief: without the counts per chat and per text)

`FakeTelegram` is the benchmark's client of both. The process shares CLOCK_MONOTONIC with
the benchmark (Linux), so reply times compare with the benchmark's `time.monotonic()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks.processes import BenchmarkFailed, Proc, Processes, clean_env
from tests.fakes.telegram_api import FakeBotAPI

TEXT_PREFIX = 40  # characters of each reply kept to tell replies apart
NOTICES = ("delivery.slow_down", "errors.internal", "errors.store_unavailable")


def notice_texts() -> list[str]:
    """How the messages start that the bot sends besides answers (slow down, an apology for
    a bug, an apology for the store being down), rendered by the bot's own renderer."""
    from messages import Renderer

    renderer = Renderer()
    return [renderer.render(key, "en", "html")[:30] for key in NOTICES]


class CountingBotAPI(FakeBotAPI):
    """FakeBotAPI that tallies what it answered as it goes, instead of keeping every call."""

    def __init__(self, token: str, notices: Sequence[str] = ()) -> None:
        super().__init__(token)
        self.notice_starts = tuple(notices)
        self.accepted: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()  # chat_id -> answers (accepted sendMessage)
        self.notices: Counter[str] = Counter()  # chat_id -> notices
        self.kinds: Counter[str] = Counter()  # the start of each reply text
        self.last_reply = 0.0
        self.polls = 0  # getUpdates calls received (a long-poll is answered only later)

    async def _dispatch(self, request: web.Request) -> web.Response:
        if request.match_info["method"].lower() == "getupdates":
            self.polls += 1
        response = await super()._dispatch(request)
        for call in self.calls:
            if call.status != 200:
                self.refused[f"{call.method}[{call.status}]"] += 1
                continue
            self.accepted[call.method] += 1
            if call.method.lower() == "sendmessage":
                text, chat = str(call.params.get("text", "")), str(call.params.get("chat_id"))
                self.kinds[text[:TEXT_PREFIX]] += 1
                if self.notice_starts and text.startswith(self.notice_starts):
                    self.notices[chat] += 1
                    continue
                self.replies[chat] += 1
                self.last_reply = time.monotonic()
        self.calls.clear()  # tallied; 100,000 calls must not pile up in memory
        self.messages.clear()
        return response

    def stats(self, brief: bool = False) -> dict[str, Any]:
        """What was answered; `brief`: without the per-chat and per-text counts."""
        return {"accepted": dict(self.accepted), "refused": dict(self.refused),
                "replies": {} if brief else dict(self.replies),
                "notices": {} if brief else dict(self.notices),
                "kinds": {} if brief else dict(self.kinds),
                "answered": len(self.replies), "last_reply": self.last_reply,
                "pending_updates": len(self._updates), "polls": self.polls}


async def serve(token: str, notices: Sequence[str]) -> None:
    fake = CountingBotAPI(token, notices)
    await fake.start()

    async def push(request: web.Request) -> web.Response:
        body = await request.json()
        for update_id, chat_id, text in body["messages"]:
            fake.push_update({"update_id": update_id, **fake.message_update(chat_id, text)})
        return web.json_response({"pushed": len(body["messages"])})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(fake.stats(brief="brief" in request.query))

    control = web.Application()
    control.router.add_post("/push", push)
    control.router.add_get("/stats", stats)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    print(json.dumps({"url": fake.url, "control": f"http://127.0.0.1:{port}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await fake.stop()


@dataclass
class Stats:
    """What the fake had answered at one moment."""

    accepted: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)  # chat -> answers
    kinds: Counter[str] = field(default_factory=Counter)
    notices: Counter[str] = field(default_factory=Counter)  # chat -> notices
    last_reply: float = 0.0
    pending_updates: int = 0
    polls: int = 0
    answered: int = 0  # chats with at least one answer

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Stats:
        return cls(Counter(data["accepted"]), Counter(data["refused"]), Counter(data["replies"]),
                   Counter(data["kinds"]), Counter(data["notices"]), float(data["last_reply"]),
                   int(data["pending_updates"]), int(data["polls"]), int(data["answered"]))

    def since(self, before: Stats) -> Stats:
        """What happened between `before` and this."""
        return Stats(self.accepted - before.accepted, self.refused - before.refused,
                     self.replies - before.replies, self.kinds - before.kinds,
                     self.notices - before.notices, self.last_reply, self.pending_updates,
                     self.polls - before.polls, len(+(self.replies - before.replies)))

    @property
    def calls(self) -> int:
        return sum(self.accepted.values())

    @property
    def sent(self) -> int:
        """sendMessage calls accepted: answers and notices."""
        return self.accepted["sendMessage"]


class FakeTelegram:
    """The benchmark's handle on a fake Bot API process."""

    def __init__(self, proc: Proc, url: str, control: str, token: str) -> None:
        self.proc, self.url, self.control, self.token = proc, url, control, token
        self._http: aiohttp.ClientSession | None = None

    @property
    def api_url(self) -> str:
        """TELEGRAM_API_URL for a bot using this fake."""
        return f"{self.url}/bot"

    @classmethod
    async def start(cls, procs: Processes, name: str, token: str,
                    notices: Sequence[str] = ()) -> FakeTelegram:
        """Start the fake; texts starting like one of `notices` are counted apart."""
        proc = await procs.python(name, "benchmarks.fake_telegram",
                                  env=clean_env(TELEGRAM_TOKEN=token,
                                                BENCH_NOTICES=json.dumps(list(notices))))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            line = proc.log.read_text().partition("\n")[0] if proc.log.exists() else ""
            if line.startswith("{"):
                break
            proc.check_alive()
            if loop.time() > deadline:
                raise BenchmarkFailed(f"{name} did not start", proc.log_tail())
            await asyncio.sleep(0.05)
        where = json.loads(line)
        return cls(proc, where["url"], where["control"], token)

    async def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._http

    async def stats(self, brief: bool = False) -> Stats:
        """What the fake has answered; `brief`: no per-chat or per-text counts (cheap)."""
        self.proc.check_alive()
        http = await self._session()
        async with http.get(f"{self.control}/stats", params={"brief": "1"} if brief else {}) as r:
            return Stats.of(await r.json())

    async def push(self, messages: list[tuple[int, int, str]]) -> None:
        """Queue message updates (update_id, chat_id, text) for getUpdates."""
        http = await self._session()
        async with http.post(f"{self.control}/push", json={"messages": messages}) as r:
            if r.status != 200:
                raise BenchmarkFailed(f"the fake Bot API refused the updates: {r.status}")

    async def wait_polling(self, bot: Proc, before: Stats, timeout: float = 60.0) -> None:
        """Wait until `bot`, started after `before`, long-polls getUpdates (it is then ready)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (await self.stats()).polls == before.polls:
            bot.check_alive()
            if loop.time() > deadline:
                raise BenchmarkFailed(f"{bot.name} never polled within {timeout:.0f} s",
                                      bot.log_tail())
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        with contextlib.suppress(Exception):
            await self.proc.stop()


if __name__ == "__main__":
    asyncio.run(serve(os.environ.get("TELEGRAM_TOKEN", "123:abc"),
                      json.loads(os.environ.get("BENCH_NOTICES", "[]"))))
