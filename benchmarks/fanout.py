"""Fan-out: one reminder to N Telegram and N Slack recipients, sent by a real `fpbot run`.

The store holds the demo plus 2N members, each with a focal point: even ones on Telegram,
odd ones on Slack (a roster mixes platforms), and a deadline falling due within the hour, so
that the scheduler's first sweep owes each of them one reminder. One `fpbot run` process
(Telegram polling, Slack sending without Socket Mode) sends them through the fake Bot API
and the fake Slack Web API of `tests/fakes`, both enforcing the platforms' published limits
(PLATFORM-LIMITS.md): Telegram 30 messages a second overall after a burst of 30, Slack's
chat.postMessage 300 a minute per workspace after a burst of 50 (its "several hundred a
minute"; one a second per channel is never reached, each person being their own DM), and
views.publish, which the bot calls after every notice to refresh the person's App Home,
Tier 4 (100 a minute after a burst of 17).

Per platform it reports the time from the process's first API call to the last reminder
accepted, against the floor the limits set ((N - burst) / rate), the 429s received (those
more than a second after the first reminder: past the first burst), and the recipients
left without a reminder or reminded twice; then again with the process killed (SIGKILL)
once N of the 2N have their reminder, and started again. Baseline, in the same rounds:
a bare paced sender, the libraries' own (PTB's `AIORateLimiter`; slack_sdk with a leaky
bucket at the workspace rate), sending the same N messages through the same fakes. A round
also runs `fpbot run` with Telegram alone, to tell its own pace from what sharing the sender
with Slack costs it.

On SQLite (one process sends; `opts.pg_url` is not used). A full round takes minutes: the
floors alone are 32 s (Telegram) and 190 s (Slack) for 1,000 recipients.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from telegram.ext import AIORateLimiter, ExtBot
from telegram.request import HTTPXRequest

from benchmarks._fanout_processes import BotProcess
from benchmarks._fanout_seed import add_members, demo_store
from benchmarks.common import Figure, Options
from storage.db import Database
from storage.deadlines import audience, sync_deadline
from storage.models import DeadlineKind, Identity, RoleName
from tests.fakes.slack_api import TEAM_ID, FakeSlackAPI, SlackLimits
from tests.fakes.telegram_api import FakeBotAPI, TelegramLimits

BENCHMARK = "fan-out"
RECIPIENTS, QUICK_RECIPIENTS = 1_000, 100  # per platform
TOKEN = "123:fanout"
SLACK_TOKEN = "xoxb-fanout"
FIRST_CHAT = 700_000  # Telegram chats 700000, 700001, ...
FIRST_USER = 7_000_000  # Slack users U7000000, U7000001, ...
TITLE = "Contributions to the fan-out newsletter"
BURST_WINDOW = 1.0  # 429s within this many seconds of the first reminder: the first burst
SETTLE = 3.0  # seconds waited after the last reminder: a duplicate shows up by then
TARGET_RATIO = 1.10
IN_FLIGHT = 16  # the baseline senders' concurrent requests (the bot's sender allows 16)
RETRIES = 10  # a baseline message's tries before its sender gives up
PLATFORMS = ("telegram", "slack")
NAMES = {"telegram": "Telegram", "slack": "Slack"}


def floor(platform: str, n: int) -> float:
    """The fewest seconds the fakes' limits allow for `n` messages to `n` recipients."""
    if platform == "telegram":
        tg = TelegramLimits()
        return max(n - tg.burst, 0) / tg.per_second
    slack = SlackLimits()
    return max(n - slack.burst(slack.post_per_minute), 0) / (slack.post_per_minute / 60)


@dataclass(frozen=True)
class Recipients:
    telegram: list[int]
    slack: list[str]

    def of(self, platform: str) -> list[Any]:
        return list(self.telegram) if platform == "telegram" else list(self.slack)


def recipients(n: int, *, slack: bool = True) -> Recipients:
    return Recipients([FIRST_CHAT + i for i in range(n)],
                      [f"U{FIRST_USER + i}" for i in range(n if slack else 0)])


@dataclass
class Outcome:
    """What one platform's recipients got in one run."""

    n: int
    started: float | None = None  # monotonic: the sender's first API call, either platform
    counts: Counter[Any] = field(default_factory=Counter)
    first: float | None = None  # first and last reminder accepted (monotonic)
    last: float | None = None
    throttled: Counter[str] = field(default_factory=Counter)  # 429s by method
    calls: Counter[str] = field(default_factory=Counter)  # API calls accepted, by method
    beyond_burst: int = 0

    @property
    def lost(self) -> int:
        return self.n - len(self.counts)

    @property
    def duplicated(self) -> int:
        return sum(1 for c in self.counts.values() if c > 1)

    @property
    def seconds(self) -> float | None:
        """Time to the last reminder, when every recipient got one."""
        if self.lost or self.started is None or self.last is None:
            return None
        return self.last - self.started


class Tally:
    """Reminders the two fakes accepted for the recipients, read from their call logs as
    they grow (each call is looked at once)."""

    def __init__(self, telegram: FakeBotAPI, slack: FakeSlackAPI, people: Recipients) -> None:
        self.telegram, self.slack = telegram, slack
        self.wanted: dict[str, set[Any]] = {"telegram": set(people.telegram),
                                             "slack": set(people.slack)}
        self.outcomes = {p: Outcome(len(self.wanted[p])) for p in PLATFORMS}
        self.started: float | None = None
        self._seen = {"telegram": 0, "slack": 0}
        self.throttle_times: dict[str, list[float]] = {"telegram": [], "slack": []}

    def update(self) -> None:
        logs: list[tuple[str, list[Any]]] = [("telegram", self.telegram.calls),
                                             ("slack", self.slack.calls)]
        for platform, calls in logs:
            out = self.outcomes[platform]
            for call in calls[self._seen[platform]:]:
                self.started = call.at if self.started is None else min(self.started, call.at)
                if call.status == 429:
                    out.throttled[call.method] += 1
                    self.throttle_times[platform].append(call.at)
                    continue
                if call.status == 200:
                    out.calls[call.method] += 1
                chat = self._recipient(platform, call.method, call.params)
                if call.status != 200 or chat is None:
                    continue
                out.counts[chat] += 1
                out.first = call.at if out.first is None else out.first
                out.last = call.at
            self._seen[platform] = len(calls)

    def _recipient(self, platform: str, method: str, params: dict[str, Any]) -> Any:
        if platform == "telegram" and method == "sendMessage":
            chat = params.get("chat_id")
        elif platform == "slack" and method == "chat.postMessage":
            chat = params.get("channel")
        else:
            return None
        if chat in self.wanted[platform] and TITLE in str(params.get("text", "")):
            return chat
        return None

    def delivered(self) -> int:
        return sum(len(o.counts) for o in self.outcomes.values())

    def everyone(self) -> bool:
        return all(o.lost == 0 for o in self.outcomes.values())

    def finish(self) -> dict[str, Outcome]:
        self.update()
        for platform, out in self.outcomes.items():
            out.started = self.started
            if out.first is not None:
                out.beyond_burst = sum(1 for at in self.throttle_times[platform]
                                       if at > out.first + BURST_WINDOW)
        return self.outcomes

    async def wait(self, done: Callable[[], bool], timeout: float,
                   process: BotProcess | None = None) -> bool:
        """Poll until `done()`; False after `timeout` s or when `process` has died."""
        deadline = time.monotonic() + timeout
        while True:
            self.update()
            if done():
                return True
            if time.monotonic() > deadline or (process is not None and not process.running):
                return False
            await asyncio.sleep(0.01)


# -- the store -------------------------------------------------------------------------------

async def seed(db: Database, people: Recipients, now: datetime) -> None:
    """A member with a focal point for each recipient, alternately on Telegram and on Slack,
    and a deadline of every focal point falling due within the hour (set a week ago, so its
    reminders were all ahead then): each of them is owed one reminder now."""
    accounts: list[tuple[str, str, str]] = []  # platform, user id, chat id
    for k in range(max(len(people.telegram), len(people.slack))):
        if k < len(people.telegram):
            chat = str(people.telegram[k])
            accounts.append(("telegram", chat, chat))
        if k < len(people.slack):
            user = people.slack[k]
            accounts.append(("slack", f"{TEAM_ID}/{user}", user))
    persons = await add_members(db, len(accounts), now, submitted_every=0)
    identities = [Identity(person_id=person, platform=platform, user_id=user, chat_id=chat,
                           created_at=now)
                  for person, (platform, user, chat) in zip(persons, accounts, strict=True)]
    async with db.transaction() as session:
        session.add_all(identities)
        await sync_deadline(session, DeadlineKind.CUSTOM, None, now + timedelta(minutes=50),
                            TITLE, audience(roles=[RoleName.FOCAL_POINT]),
                            now=now - timedelta(days=8))


# -- one run of the project, one of the baseline ------------------------------------------------

@dataclass
class Run:
    outcomes: dict[str, Outcome]
    problem: str = ""  # why the run did not finish ("" when it did)
    after_restart: float | None = None  # kill runs: seconds from the restart to the last one
    delivered_at_kill: int = 0


async def project(n: int, folder: Path, timeout: float, *, kill: bool = False,
                  slack_too: bool = True) -> Run:
    """One `fpbot run` sending the reminders to n people on Telegram and (`slack_too`) n on
    Slack; with `kill`, SIGKILLed once half of them have theirs, and started again."""
    now = datetime.now(UTC)
    db = await demo_store(f"sqlite+aiosqlite:///{folder / 'fpbot.db'}", now)
    people = recipients(n, slack=slack_too)
    try:
        await seed(db, people, now)
    finally:
        await db.dispose()
    async with FakeBotAPI(TOKEN, limits=TelegramLimits()) as tg, \
            FakeSlackAPI(token=SLACK_TOKEN, limits=SlackLimits()) as slack:
        env = {"DATABASE_URL": db.url, "TELEGRAM_TOKEN": TOKEN,
               "TELEGRAM_API_URL": f"{tg.url}/bot", "FPBOT_LOG_LEVEL": "WARNING"}
        if slack_too:
            env |= {"SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_API_URL": f"{slack.url}/api/"}
        tally = Tally(tg, slack, people)
        half = (len(people.telegram) + len(people.slack)) // 2
        log = folder / "fpbot.log"
        run = Run(tally.outcomes)
        async with BotProcess(folder, env, "run", log=log) as first:
            goal = (lambda: tally.delivered() >= half) if kill else tally.everyone
            if not await tally.wait(goal, timeout, first):
                run.problem = _unfinished(tally, timeout, first)
                tally.finish()
                return run
            if kill:
                await first.kill()
                run.delivered_at_kill = tally.delivered()
            else:
                await asyncio.sleep(SETTLE)  # anything sent twice shows up now
        if kill:
            restarted = time.monotonic()
            async with BotProcess(folder, env, "run", log=log) as second:
                if not await tally.wait(tally.everyone, timeout, second):
                    run.problem = _unfinished(tally, timeout, second, restarted=True)
                else:
                    run.after_restart = max(o.last or restarted
                                            for o in tally.outcomes.values()) - restarted
                    await asyncio.sleep(SETTLE)
        tally.finish()
    return run


def _unfinished(tally: Tally, timeout: float, process: BotProcess,
                restarted: bool = False) -> str:
    tally.update()
    got = ", ".join(f"{NAMES[p]} {len(o.counts)}/{o.n}" for p, o in tally.outcomes.items()
                    if o.n)
    why = (f"the process exited (status {process.returncode})" if not process.running
           else f"not done within {timeout:.0f} s")
    where = " after the restart" if restarted else ""
    return f"{why}{where} ({got}); its log: {process.tail(600)!r}"


async def baseline(n: int, timeout: float) -> Run:
    """The same n messages per platform from bare paced senders, both platforms at once."""
    people = recipients(n)
    async with FakeBotAPI(TOKEN, limits=TelegramLimits()) as tg, \
            FakeSlackAPI(token=SLACK_TOKEN, limits=SlackLimits()) as slack:
        tally = Tally(tg, slack, people)
        text = f"Reminder: {TITLE}"
        try:
            await asyncio.wait_for(asyncio.gather(
                _telegram_sender(tg.url, people.telegram, text),
                _slack_sender(slack.url, people.slack, text)), timeout)
        except TimeoutError:
            return Run(tally.finish(), f"the baseline senders took over {timeout:.0f} s")
        except Exception as exc:  # a sender gave up: said in the figures, not a traceback
            return Run(tally.finish(), f"a baseline sender failed: {type(exc).__name__}: {exc}")
        await asyncio.sleep(0.1)
        return Run(tally.finish())


async def _telegram_sender(url: str, chats: list[int], text: str) -> None:
    """PTB's own pacing: AIORateLimiter (30/s overall), RetryAfter retried."""
    request = HTTPXRequest(connection_pool_size=IN_FLIGHT, pool_timeout=120.0)
    bot = ExtBot(TOKEN, base_url=f"{url}/bot", request=request,
                 rate_limiter=AIORateLimiter(max_retries=5))
    async with bot:
        await asyncio.gather(*(bot.send_message(chat, text) for chat in chats))


async def _slack_sender(url: str, users: list[str], text: str) -> None:
    """slack_sdk behind a leaky bucket at the workspace's chat.postMessage rate; a 429 is
    waited out (Retry-After) and the message goes through the bucket again (retried in
    place, it would lose every race against the paced ones)."""
    limits = SlackLimits()
    burst = limits.burst(limits.post_per_minute)
    limiter = AsyncLimiter(burst, burst / (limits.post_per_minute / 60))
    slots = asyncio.Semaphore(IN_FLIGHT)
    async with aiohttp.ClientSession() as session:
        client = AsyncWebClient(token=SLACK_TOKEN, base_url=f"{url}/api/", session=session)

        async def post(user: str) -> None:
            for _ in range(RETRIES):
                async with slots, limiter:
                    try:
                        await client.chat_postMessage(channel=user, text=text)
                        return
                    except SlackApiError as exc:
                        if exc.response.status_code != 429:
                            raise
                        wait = float(exc.response.headers.get("Retry-After", 1))
                await asyncio.sleep(wait)
            raise RuntimeError(f"chat.postMessage to {user}: still 429 after {RETRIES} tries")

        await asyncio.gather(*(post(user) for user in users))


# -- rounds and figures -----------------------------------------------------------------------

async def run(opts: Options) -> list[Figure]:
    n = QUICK_RECIPIENTS if opts.quick else RECIPIENTS
    floors = {p: floor(p, n) for p in PLATFORMS}
    timeout = 120 + 6 * max(floors.values())
    rounds = max(opts.rounds, 1)
    runs: dict[str, list[Run]] = {what: [] for what in KINDS}
    folder = Path(tempfile.mkdtemp(prefix="fanout-", dir=opts.workdir))
    kept: list[Path] = []
    try:
        for r in range(rounds):
            for what in KINDS if r % 2 == 0 else KINDS[::-1]:  # interleaved, alternating
                if what == "baseline":
                    runs[what].append(await baseline(n, timeout))
                    continue
                place = folder / f"{what}-{r}"
                place.mkdir()
                try:
                    done = await project(n, place, timeout, kill=what == "kill",
                                         slack_too=what != "alone")
                except Exception as exc:  # said in the figures (the processes are ended)
                    done = Run({p: Outcome(n) for p in PLATFORMS},
                               f"the run failed: {type(exc).__name__}: {exc}")
                runs[what].append(done)
                if done.problem and (place / "fpbot.log").exists():  # kept for the reader
                    kept.append(opts.workdir / f"fanout-{what}-{r}.log")
                    shutil.copy(place / "fpbot.log", kept[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return figures(n, floors, runs, kept)


KINDS = ("baseline", "project", "alone", "kill")  # the runs of a round
LIMITS = {"telegram": "Telegram 30 msg/s after a burst of 30",
          "slack": "chat.postMessage 300/min after a burst of 50, views.publish (Tier 4) "
                   "100/min after a burst of 17"}


def _median(values: list[float | None]) -> float | None:
    """The median, or None when any run has no figure (a run that failed)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


def _calls(outcomes: list[Outcome]) -> str:
    """API calls accepted per run, by method (the median run's counts)."""
    if not outcomes:
        return "none"
    methods = sorted({m for o in outcomes for m in o.calls})
    return ", ".join(f"{m} {statistics.median([o.calls[m] for o in outcomes]):.0f}"
                     for m in methods) or "none"


def figures(n: int, floors: dict[str, float], runs: dict[str, list[Run]],
            kept: list[Path]) -> list[Figure]:
    problems = [f"{what} round {i}: {r.problem}" for what, rs in runs.items()
                for i, r in enumerate(rs) if r.problem]
    trouble = "; ".join(problems) + (f"; logs kept: {', '.join(map(str, kept))}"
                                     if kept else "")
    failed = f"; FAILED: {trouble}" if problems else ""
    rounds = len(runs["project"])
    out: list[Figure] = []

    def timing(label: str, platform: str, kind: str, how: str) -> Figure:
        mine = [r.outcomes[platform] for r in runs[kind]]
        base = [r.outcomes[platform] for r in runs["baseline"]]
        seconds = _median([o.seconds for o in mine])
        limit = TARGET_RATIO * floors[platform]
        unfinished = any(r.problem for r in runs[kind])
        return Figure(
            BENCHMARK, label, seconds, _median([o.seconds for o in base]), "s",
            f"≤ {TARGET_RATIO:.2f}× the floor of {floors[platform]:.1f} s",
            False if unfinished else None if seconds is None else seconds <= limit,
            f"median of {len(mine)}; {how}; from the process's first API call to the last "
            f"reminder accepted; limits: {LIMITS[platform]}; floor = (N - burst) / rate; "
            f"API calls accepted: {_calls(mine)}; baseline: a bare paced sender (PTB "
            f"AIORateLimiter; slack_sdk + aiolimiter) through the same fake"
            + (failed if seconds is None else ""))

    out.append(timing(f"Telegram alone: one reminder to {n:,} people, time to the last",
                      "telegram", "alone", "`fpbot run` with only Telegram configured"))
    for p in PLATFORMS:
        name = NAMES[p]
        mine = [r.outcomes[p] for r in runs["project"]]
        base = [r.outcomes[p] for r in runs["baseline"]]
        killed = [r.outcomes[p] for r in runs["kill"]]
        out.append(timing(f"{name} beside {NAMES[PLATFORMS[1 - PLATFORMS.index(p)]]}: one "
                          f"reminder to {n:,} people, time to the last", p, "project",
                          f"one `fpbot run` sending {n:,} Telegram and {n:,} Slack reminders "
                          "at once (a roster mixing both)"))
        by_method = Counter[str]()
        for o in mine:
            by_method.update(o.throttled)
        beyond = _median([float(o.beyond_burst) for o in mine])
        unfinished = any(r.problem for r in runs["project"])
        out.append(Figure(
            BENCHMARK, f"{name}: 429s past the first burst", beyond,
            _median([float(o.beyond_burst) for o in base]), "429s", "0",
            False if unfinished else None if beyond is None else beyond == 0,
            f"median of {rounds} runs sending both platforms; past = more than "
            f"{BURST_WINDOW:.0f} s after the first reminder; all 429s per run: "
            f"{[sum(o.throttled.values()) for o in mine]}, by method over the runs: "
            f"{dict(by_method) or 'none'}"
            + ("; Telegram alone, all 429s per run: "
               f"{[sum(r.outcomes[p].throttled.values()) for r in runs['alone']]}"
               if p == "telegram" else "")
            + (failed if unfinished else "")))
        for label, kind, base_of, note in (
                ("lost", "project", base, "recipients left without their reminder"),
                ("reminded twice or more", "project", base,
                 "recipients who got it more than once"),
                (f"lost after kill -9 at recipient {n:,} and a restart", "kill", [],
                 "recipients without their reminder once the restarted process is done"),
                (f"reminded twice after kill -9 at recipient {n:,} and a restart", "kill", [],
                 "recipients who got it more than once, the kill and restart included")):
            lost = label.startswith("lost")
            outcomes = killed if kind == "kill" else mine
            unfinished = any(r.problem for r in runs[kind])

            def count(o: Outcome, lost: bool = lost) -> int:
                return o.lost if lost else o.duplicated

            worst = max((count(o) for o in outcomes), default=None)
            base_worst = max((count(o) for o in base_of), default=None)
            out.append(Figure(
                BENCHMARK, f"{name}: {label}", None if worst is None else float(worst),
                None if base_worst is None else float(base_worst), "people", "0",
                None if worst is None else worst == 0 and not unfinished,
                f"worst of {len(outcomes)} runs: {note}; per run: "
                f"{[count(o) for o in outcomes]}"
                + (f"; killed when {[r.delivered_at_kill for r in runs['kill']]} of the "
                   f"{2 * n:,} had theirs" if kind == "kill" else "")
                + (failed if unfinished else "")))
    restarts = _median([r.after_restart for r in runs["kill"]])
    out.append(Figure(
        BENCHMARK, "after kill -9: time from the restart to the last reminder", restarts,
        None, "s", "", None,
        f"median of {len(runs['kill'])}; both platforms; the restarted process sends what "
        f"the killed one had not (about half of the {2 * n:,})"
        + (failed if restarts is None else "")))
    return out
