"""Ingest: Telegram updates from the 78 focal points through a real `fpbot serve` (webhook) and
a real `fpbot run` (polling), against a bare PTB echo bot doing the same.

Every bot is a process of its own, and so is each fake Bot API (`benchmarks/fake_telegram.py`),
so the figures are the bot's alone. For each database (SQLite, then PostgreSQL):

- webhook: `fpbot serve` and the echo bot (`benchmarks/echo_bot.py`) run side by side, each
  with its own fake Bot API. In each of `opts.rounds` rounds the project, then the echo bot,
  is sent its share of 3,000 updates (`/help` mostly, and `/whoami`, `/troika`, `/meetings`,
  `/deadlines`; round robin over the 78 chats), 50 requests in flight, as Telegram would:
  POST /telegram/webhook with the secret header. A round ends when the fake has every reply.
  Measured: answers/s (updates / time to have all answered 200), latency of each request
  (client side), CPU time of the bot process (/proc) per update, time until every reply is out.
  Bot API calls per update count every call the process made in its life, start-up included.
- polling: `fpbot run` and the echo bot polling, one round of 300 updates queued in the fake
  at once: the time until every reply is out.

`--quick`: 80 updates a round (about one per focal point), 80 polled.

Each update must be answered, by the reply its command asks for (the "slow down" notice or
an apology does not count), nothing may go to a chat that did not write, the fake Bot API
must accept every call, and a process must live to the end and stop cleanly with nothing in
its log but warnings; otherwise the database's figures are reported as failed. Answers sent
twice and notices sent besides the answers are counted, as a figure of their own.

Telegram takes about 30 messages a second from a bot, and the project keeps to it (PTB's
AIORateLimiter); the echo bot, bare, does not. Time until every reply is out is therefore at
least updates / 30 s for the project: the note gives that floor.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import signal
import statistics
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp

from benchmarks.common import Figure, Options
from benchmarks.echo_bot import SECRET_HEADER
from benchmarks.fake_telegram import NOTICES, FakeTelegram, Stats, notice_texts
from benchmarks.processes import (
    BenchmarkFailed,
    Proc,
    Processes,
    clean_env,
    free_port,
    progress,
    wait_healthy,
)
from benchmarks.stores import demo_store, sqlite_url
from tests.fakes.telegram_api import FakeBotAPI

NAME = "ingest"
TOKEN = "123:ingest"
SECRET = "bench-ingest_hook"
IN_FLIGHT = 50
UPDATES = 3000  # webhook updates per database, shared out over the rounds
POLLING_UPDATES = 300
QUICK_UPDATES = 80  # about one per focal point
TELEGRAM_PACE = 30.0  # messages a second Telegram takes from one bot
COMMANDS = ["/help"] * 6 + ["/whoami", "/troika", "/meetings", "/deadlines"]
SETTLE = 1.0  # seconds after the last reply in which a duplicate would show
REDELIVERY = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # s before each redelivery of a webhook
# answered other than 200: Telegram backs off and tries again; after these, the update is lost


@dataclass
class Round:
    """One bot's figures in one round."""

    updates: int
    all_out_s: float
    cpu_s: float
    answers_per_s: float | None = None  # webhook only
    latencies_ms: list[float] = field(default_factory=list)
    redelivered: Counter[int] = field(default_factory=Counter)  # status -> answers not 200
    twice: int = 0  # answers sent more than once
    notices: Counter[str] = field(default_factory=Counter)  # notice key -> sent (not answers)

    @property
    def cpu_per_update(self) -> float:
        return self.cpu_s / self.updates

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Side:
    """One bot (the project or the echo bot) in one mode, over its whole life."""

    rounds: list[Round] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)  # accepted Bot API calls, by method
    refused: Counter[str] = field(default_factory=Counter)
    rss_idle_mib: float = 0.0
    rss_loaded_mib: float = 0.0

    @property
    def updates(self) -> int:
        return sum(r.updates for r in self.rounds)

    def median(self, value: str) -> float | None:
        """The median over the rounds of a Round attribute ("all_out_s", …)."""
        present = [v for r in self.rounds if (v := getattr(r, value)) is not None]
        return statistics.median(present) if present else None

    def latency(self, p: float) -> float | None:
        return statistics.median(r.percentile(p) for r in self.rounds) if self.rounds else None


@dataclass
class Block:
    """Everything measured on one database."""

    database: str
    webhook: dict[str, Side] = field(default_factory=lambda: {"project": Side(), "echo": Side()})
    paced: Side = field(default_factory=Side)  # the echo bot pacing its replies, one round
    polling: dict[str, Side] = field(default_factory=lambda: {"project": Side(), "echo": Side()})
    error: str = ""
    per_round: int = 0
    polled: int = 0


_measured: dict[tuple[Options, tuple[str, ...], bool], list[Block]] = {}


# -- the load -------------------------------------------------------------------------------
def messages(chats: list[int], n: int, seed: int) -> list[tuple[int, str]]:
    """`n` (chat, command) pairs: round robin over the chats, commands mixed."""
    rng = random.Random(seed)
    return [(chats[i % len(chats)], rng.choice(COMMANDS)) for i in range(n)]


def webhook_bodies(load: list[tuple[int, str]], first_id: int) -> list[bytes]:
    builder = FakeBotAPI(TOKEN)  # the tests' own update shapes; never started
    return [json.dumps({"update_id": first_id + i, **builder.message_update(chat, text)}).encode()
            for i, (chat, text) in enumerate(load)]


async def post_all(bot: Proc, port: int, bodies: list[bytes]
                   ) -> tuple[float, list[float], Counter[int]]:
    """POST every body to the webhook, IN_FLIGHT at a time; (seconds, latencies ms, non-200).
    A connection refused by a bot that is gone fails at once, with the end of its log."""
    url = f"http://127.0.0.1:{port}/telegram/webhook"
    headers = {"Content-Type": "application/json", SECRET_HEADER: SECRET}
    latencies: list[float] = []
    refused: Counter[int] = Counter()
    pending = iter(bodies)
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def worker() -> None:
            for body in pending:  # one shared iterator: each body is taken once
                for pause in (*REDELIVERY, None):
                    began = time.perf_counter()
                    try:
                        async with http.post(url, data=body, headers=headers) as r:
                            await r.read()
                            status = r.status
                    except (aiohttp.ClientError, TimeoutError):
                        status = 0
                        bot.check_alive()
                    latencies.append((time.perf_counter() - began) * 1000)
                    if status == 200:
                        break
                    refused[status] += 1
                    if pause is None:
                        raise BenchmarkFailed(f"an update was refused {len(REDELIVERY) + 1} "
                                              f"times over {sum(REDELIVERY):.0f} s (all "
                                              f"refusals: {dict(refused)})")
                    await asyncio.sleep(pause)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return time.perf_counter() - began, latencies, refused


async def all_replies(fake: FakeTelegram, bot: Proc, before: Stats,
                      want: Counter[str], timeout: float) -> Stats:
    """Wait until each chat has its answers (counted from `before`; notices do not count)."""
    deadline = time.monotonic() + timeout
    while True:
        got = (await fake.stats()).since(before)
        if all(got.replies[chat] >= n for chat, n in want.items()):
            break
        bot.check_alive()
        if time.monotonic() > deadline:
            missing = sum(max(n - got.replies[chat], 0) for chat, n in want.items())
            raise BenchmarkFailed(f"{bot.name}: {missing} of {sum(want.values())} updates "
                                  f"unanswered after {timeout:.0f} s")
        await asyncio.sleep(0.05)
    return got


async def settled(fake: FakeTelegram, bot: Proc, before: Stats, want: Counter[str],
                  done: Round) -> Round:
    """After a pause in which a late duplicate would show: note the answers sent twice and
    the notices sent besides the answers (figures of their own); fail on a message to a chat
    that wrote nothing, or one the fake Bot API refused."""
    await asyncio.sleep(SETTLE)
    got = (await fake.stats()).since(before)
    strays = [chat for chat in {*got.replies, *got.notices} if chat not in want]
    if strays:
        raise BenchmarkFailed(f"{bot.name}: messages to {len(strays)} chats that wrote nothing")
    if got.refused:
        raise BenchmarkFailed(f"{bot.name}: the fake Bot API refused {dict(got.refused)}")
    done.twice = sum(max(got.replies[chat] - n, 0) for chat, n in want.items())
    starts = dict(zip(notice_texts(), NOTICES, strict=True))
    for text, n in got.kinds.items():
        key = next((key for start, key in starts.items() if text.startswith(start)), None)
        if key is not None:
            done.notices[key] += n
    return done


async def webhook_round(bot: Proc, port: int, fake: FakeTelegram,
                        load: list[tuple[int, str]], first_id: int) -> Round:
    bodies = webhook_bodies(load, first_id)
    want = Counter(str(chat) for chat, _ in load)
    before = await fake.stats()
    cpu = bot.cpu_seconds()
    began = time.monotonic()
    seconds, latencies, refused = await post_all(bot, port, bodies)
    got = await all_replies(fake, bot, before, want, timeout=60 + len(load) / 10)
    spent = bot.cpu_seconds() - cpu
    return await settled(fake, bot, before, want, Round(
        len(load), got.last_reply - began, spent, len(load) / seconds, latencies, refused))


async def polling_round(bot: Proc, fake: FakeTelegram, load: list[tuple[int, str]],
                        first_id: int) -> Round:
    want = Counter(str(chat) for chat, _ in load)
    before = await fake.stats()
    cpu = bot.cpu_seconds()
    began = time.monotonic()
    await fake.push([(first_id + i, chat, text) for i, (chat, text) in enumerate(load)])
    got = await all_replies(fake, bot, before, want, timeout=60 + len(load) / 10)
    spent = bot.cpu_seconds() - cpu
    return await settled(fake, bot, before, want, Round(len(load), got.last_reply - began, spent))


async def stopped_cleanly(bot: Proc) -> None:
    """SIGTERM; the bot must stop by itself (uvicorn re-raises the SIGTERM it handled, so a
    served bot ends "killed by SIGTERM" after a clean shutdown), nothing worse than warnings
    logged."""
    code = await bot.stop()
    log = bot.log.read_text(errors="replace")
    if code not in (0, -signal.SIGTERM) or "Traceback" in log or " ERROR " in log:
        raise BenchmarkFailed(f"{bot.name} stopped with {code} or logged an error",
                              bot.log_tail())


# -- one database -----------------------------------------------------------------------------
async def measure_database(opts: Options, database: str, url: str, *,
                           polling: bool) -> Block:
    block = Block(database)
    rounds = max(opts.rounds, 1)
    block.per_round = QUICK_UPDATES if opts.quick else math.ceil(UPDATES / rounds)
    block.polled = QUICK_UPDATES if opts.quick else POLLING_UPDATES
    progress(f"ingest ({database}): loading the store")
    chats = await demo_store(url, datetime.now(UTC))
    workdir = opts.workdir / f"ingest-{database.lower()}"
    workdir.mkdir(parents=True, exist_ok=True)
    async with Processes(workdir) as procs:
        notices = notice_texts()
        fakes = {"project": await FakeTelegram.start(procs, "fake-project", TOKEN, notices),
                 "echo": await FakeTelegram.start(procs, "fake-echo", TOKEN, notices)}
        try:
            await _webhook(procs, block, fakes, url, chats, rounds)
            if polling:
                await _polling(procs, block, fakes, url, chats)
        finally:
            for fake in fakes.values():
                await fake.close()
    return block


def _env(fake: FakeTelegram, **more: str) -> dict[str, str]:
    return clean_env(TELEGRAM_TOKEN=TOKEN, TELEGRAM_API_URL=fake.api_url,
                     TELEGRAM_WEBHOOK_SECRET=SECRET, FPBOT_LOG_LEVEL="WARNING", **more)


async def _webhook(procs: Processes, block: Block, fakes: dict[str, FakeTelegram], url: str,
                   chats: list[int], rounds: int) -> None:
    ports = {"project": free_port(), "echo": free_port()}
    bots = {"project": await procs.python("fpbot-serve", "bot.cli", "serve", "--port",
                                          str(ports["project"]),
                                          env=_env(fakes["project"], DATABASE_URL=url)),
            "echo": await procs.python("echo-webhook", "benchmarks.echo_bot", "--port",
                                       str(ports["echo"]), env=_env(fakes["echo"]))}
    progress(f"ingest ({block.database}): starting fpbot serve and the echo bot")
    for side, bot in bots.items():
        await wait_healthy(bot, ports[side])
    await asyncio.sleep(2.0)  # start-up done: what an idle bot holds
    for side, bot in bots.items():
        block.webhook[side].rss_idle_mib = bot.rss_mib()
    for r in range(rounds):
        load = messages(chats, block.per_round, seed=r)
        for side in ("project", "echo"):
            progress(f"ingest ({block.database}): webhook round {r + 1}/{rounds}, {side}, "
                     f"{block.per_round} updates")
            block.webhook[side].rounds.append(await webhook_round(
                bots[side], ports[side], fakes[side], load, 1_000_000 + r * block.per_round))
    for side, bot in bots.items():
        block.webhook[side].rss_loaded_mib = bot.rss_mib()
        stats = await fakes[side].stats()
        block.webhook[side].calls, block.webhook[side].refused = stats.accepted, stats.refused
        progress(f"ingest ({block.database}): stopping {bot.name}")
        await stopped_cleanly(bot)
    await _paced_echo(procs, block, fakes["echo"], chats)


async def _paced_echo(procs: Processes, block: Block, fake: FakeTelegram,
                      chats: list[int]) -> None:
    """The echo bot pacing its replies as the project must (PTB's AIORateLimiter, 30/s):
    one round of the first round's load, for the CPU a paced reply costs."""
    port = free_port()
    bot = await procs.python("echo-paced", "benchmarks.echo_bot", "--port", str(port),
                             "--paced", env=_env(fake))
    await wait_healthy(bot, port)
    progress(f"ingest ({block.database}): webhook, echo paced at 30/s, "
             f"{block.per_round} updates")
    block.paced.rounds.append(await webhook_round(bot, port, fake,
                                                  messages(chats, block.per_round, seed=0),
                                                  3_000_000))
    await stopped_cleanly(bot)


async def _polling(procs: Processes, block: Block, fakes: dict[str, FakeTelegram], url: str,
                   chats: list[int]) -> None:
    before = {side: await fake.stats() for side, fake in fakes.items()}
    bots = {"project": await procs.python("fpbot-run", "bot.cli", "run",
                                          env=_env(fakes["project"], DATABASE_URL=url)),
            "echo": await procs.python("echo-polling", "benchmarks.echo_bot", "--polling",
                                       env=_env(fakes["echo"]))}
    progress(f"ingest ({block.database}): starting fpbot run and the polling echo bot")
    for side, bot in bots.items():
        await fakes[side].wait_polling(bot, before[side])
    load = messages(chats, block.polled, seed=99)
    for side in ("project", "echo"):
        progress(f"ingest ({block.database}): polling, {side}, {block.polled} updates")
        block.polling[side].rounds.append(
            await polling_round(bots[side], fakes[side], load, 5_000_000))
    for side, bot in bots.items():
        stats = (await fakes[side].stats()).since(before[side])
        block.polling[side].calls, block.polling[side].refused = stats.accepted, stats.refused
        progress(f"ingest ({block.database}): stopping {bot.name}")
        await stopped_cleanly(bot)


async def measure(opts: Options, databases: tuple[str, ...] = ("SQLite", "PostgreSQL"),
                  polling: bool = True) -> list[Block]:
    """Run the load on each database (once per options: memory reuses it)."""
    key = (opts, databases, polling)
    if key not in _measured:
        blocks = []
        for database in databases:
            if database == "SQLite":
                url = sqlite_url(opts.workdir / "ingest.db")
            elif opts.pg_url:
                url = opts.pg_url
            else:
                blocks.append(Block(database, error="no PostgreSQL to measure on"))
                continue
            try:
                blocks.append(await measure_database(opts, database, url, polling=polling))
            except BenchmarkFailed as exc:
                print(f"ingest ({database}) FAILED: {exc}\n{exc.detail}", file=sys.stderr)
                blocks.append(Block(database, error=f"FAILED: {exc}"))
            except Exception as exc:  # kept too: memory must not run it all again
                traceback.print_exc()
                blocks.append(Block(database, error=f"FAILED: {type(exc).__name__}: {exc}"))
        _measured[key] = blocks
    return _measured[key]


def reuse(opts: Options) -> list[Block] | None:
    """What `measure` already found with these options (webhook on both databases), if any."""
    for (o, databases, _), blocks in _measured.items():
        if o == opts and "SQLite" in databases:
            return blocks
    return None


# -- the figures ----------------------------------------------------------------------------
def figures(block: Block) -> list[Figure]:
    db = block.database
    names = [f"webhook answers/s ({db})", f"webhook latency p50 ({db})",
             f"webhook latency p95 ({db})", f"webhook latency p99 ({db})",
             f"CPU per update ({db})", f"Bot API calls per update ({db})",
             f"webhook: all replies out ({db})", f"polling: all replies out ({db})",
             f"messages besides one answer per update ({db})"]
    if block.error:
        return [Figure(NAME, name, None, note=block.error) for name in names]
    project, echo = block.webhook["project"], block.webhook["echo"]
    answers = project.median("answers_per_s")
    echo_answers = echo.median("answers_per_s")
    p99 = project.latency(99)
    cpu, echo_cpu = project.median("cpu_per_update"), echo.median("cpu_per_update")
    calls = sum(project.calls.values()) / project.updates
    echo_calls = sum(echo.calls.values()) / echo.updates
    others = ", ".join(f"{method} {n}" for method, n in project.calls.most_common()
                       if method != "sendMessage")
    redelivered = sum((r.redelivered for r in project.rounds), Counter[int]())
    shape = (f"{len(project.rounds)} round(s) of {block.per_round} updates, {IN_FLIGHT} in "
             f"flight, medians")
    floor = block.per_round / TELEGRAM_PACE
    figs = [
        Figure(NAME, names[0], answers, echo_answers, "/s", "≥ 0.5× echo",
               None if answers is None or not echo_answers else answers >= 0.5 * echo_answers,
               shape + (f"; answered other than 200 and redelivered: {dict(redelivered)}"
                        if redelivered else "")),
        Figure(NAME, names[1], project.latency(50), echo.latency(50), "ms", note="client side"),
        Figure(NAME, names[2], project.latency(95), echo.latency(95), "ms", note="client side"),
        Figure(NAME, names[3], p99, echo.latency(99), "ms", "< 100 ms",
               None if p99 is None else p99 < 100, "client side, per HTTP request"),
        Figure(NAME, names[4], _ms(cpu), _ms(echo_cpu), "ms", "≤ 4× echo",
               None if cpu is None or not echo_cpu else cpu <= 4 * echo_cpu,
               "bot process utime+stime until its last reply is out, per update"),
    ]
    paced_cpu = block.paced.median("cpu_per_update")
    if paced_cpu is not None:
        figs.append(Figure(
            NAME, f"CPU per update, against the echo bot paced at 30/s ({db})", _ms(cpu),
            _ms(paced_cpu), "ms",
            note=f"the same figure against the echo bot with PTB's AIORateLimiter, which "
                 f"replies at Telegram's pace as the project does (1 round of "
                 f"{block.per_round} updates; all its replies out in "
                 f"{_fmt(block.paced.median('all_out_s'))} s)"))
    figs += [
        Figure(NAME, names[5], calls, echo_calls, "calls", "≤ 1.05", calls <= 1.05,
               f"{sum(project.calls.values())} calls for {project.updates} updates over the "
               f"process's life; besides sendMessage: {others or 'none'}"),
        Figure(NAME, names[6], project.median("all_out_s"), echo.median("all_out_s"), "s",
               note=f"first request to last reply, per round; Telegram's pace (30/s) makes "
                    f"it ≥ {floor:.0f} s for the project, which keeps to it"),
    ]
    pp, pe = block.polling["project"], block.polling["echo"]
    figs.append(extras(names[8], [*project.rounds, *pp.rounds], [*echo.rounds, *pe.rounds]))
    if pp.rounds:
        pcalls = ", ".join(f"{m} {n}" for m, n in pp.calls.most_common() if m != "sendMessage")
        pcpu, ecpu = (_fmt(_ms(side.median("cpu_per_update"))) for side in (pp, pe))
        figs.append(Figure(NAME, names[7], pp.median("all_out_s"), pe.median("all_out_s"), "s",
                           note=f"{block.polled} updates queued at once, 1 round; floor at 30/s: "
                                f"{block.polled / TELEGRAM_PACE:.0f} s; CPU per update {pcpu} ms "
                                f"(echo {ecpu}); calls besides sendMessage: {pcalls or 'none'}"))
    return figs


def extras(name: str, project: list[Round], echo: list[Round]) -> Figure:
    """Answers sent twice and notices (apologies, "slow down") over every round."""
    def count(rounds: list[Round]) -> tuple[int, Counter[str]]:
        return sum(r.twice for r in rounds), sum((r.notices for r in rounds), Counter[str]())

    twice, notices = count(project)
    echo_twice, echo_notices = count(echo)
    total = twice + sum(notices.values())
    what = ", ".join(f"{key} {n}" for key, n in notices.most_common()) or "no notices"
    return Figure(NAME, name, total, echo_twice + sum(echo_notices.values()), "messages", "0",
                  total == 0, f"all rounds, webhook and polling: {twice} answers sent twice; "
                              f"{what}")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


async def run(opts: Options) -> list[Figure]:
    return [fig for block in await measure(opts) for fig in figures(block)]
