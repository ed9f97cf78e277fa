"""Fixtures: a migrated store on SQLite and on PostgreSQL, a frozen clock, and a chat transcript.

Every test that takes `db` runs twice: on a fresh SQLite file and on the PostgreSQL named by
TEST_DATABASE_URL (started by tests/run.sh). With FPBOT_REQUIRE_POSTGRES=1 a missing
PostgreSQL fails the run instead of skipping it.

Rules every test lives under (see tests/message_coverage.py and tests/fakes/validate.py):

- Every reply is rendered. `Transcript` renders each reply and each notice queued for someone
  else in plain, Telegram HTML and Slack mrkdwn as it records it (button labels, form
  questions, hints and field errors too), so a broken template fails any test that reaches it.
- Every message key is said. While the suite runs, the contexts the bot's own code renders
  each key with are collected. When the WHOLE suite runs (no paths, -k, -m, --lf), every key
  of every locale is rendered again with those contexts in every format, and the run fails
  naming each key no test made the bot say. A new key therefore needs one test that makes the
  bot say it (through `chat.say`, an adapter test, or any call of the bot's code that renders
  it); rendering it by hand in a test does not count. FPBOT_MESSAGE_COVERAGE=1 forces the
  check on a partial run, =0 turns it off.
- Every payload is accepted. The fake Bot API and the fake Slack API check each payload with
  the platforms' own validators and answer an invalid one with the platform's error; the test
  that sent it fails at teardown, unless it takes the refusal with `validate.take_refusals()`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from handlers import COMMANDS, FORMS, FREE_TEXT
from handlers.clock import FrozenClock
from handlers.dispatch import Core
from handlers.types import Incoming, Outgoing
from messages import Renderer
from storage.db import Database
from storage.demo import load_demo
from storage.migrate import upgrade
from storage.models import Base, OutboxItem
from tests.fakes import validate
from tests.message_coverage import RenderLog, render_everywhere, unsaid

os.environ.setdefault("PTB_TIMEDELTA", "true")

PG_URL = os.environ.get("TEST_DATABASE_URL", "")
REQUIRE_PG = os.environ.get("FPBOT_REQUIRE_POSTGRES") == "1"
# Berlin, the second annual meeting, is weeks away: Spain, Germany and Namibia form the troika.
T0 = datetime(2018, 3, 1, 9, 0, tzinfo=UTC)

RENDERED = RenderLog()
TESTS_DIR = Path(__file__).resolve().parent


# -- every message key said, every payload accepted ------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    RENDERED.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    RENDERED.uninstall()


def _whole_suite(config: pytest.Config) -> bool:
    forced = os.environ.get("FPBOT_MESSAGE_COVERAGE", "")
    if forced in ("0", "1"):
        return forced == "1"
    opt = config.option
    if opt.keyword or opt.markexpr or getattr(opt, "lf", False) or getattr(opt, "deselect", None):
        return False
    return all(Path(arg).resolve() in (TESTS_DIR, TESTS_DIR.parent) for arg in config.args)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist (`-n`), in the controller: where each worker leaves what it said (only
    on a run that checks the catalog)."""
    if _whole_suite(node.config):
        node.workerinput["fpbot_said_dir"] = str(_said_dir(node.config))


def _said_dir(config: pytest.Config) -> Path:
    if _SAID_DIR not in config.stash:
        config.stash[_SAID_DIR] = Path(tempfile.mkdtemp(prefix="fpbot-said."))
    return config.stash[_SAID_DIR]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On a whole, passing run: fail if a message key was never said or fails to render.

    Under pytest-xdist each worker renders what it said and leaves the keys and any failure
    in a file; the controller, which runs no test, puts them together."""
    config = session.config
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        if "fpbot_said_dir" in worker:
            said = {"said": sorted(RENDERED.contexts),
                    "problems": RENDERED.render_problems(Renderer())}
            folder = Path(worker["fpbot_said_dir"])
            (folder / f"{worker['workerid']}.json").write_text(json.dumps(said))
        return
    folder = config.stash.get(_SAID_DIR, None)  # the workers' files, under xdist
    try:
        if exitstatus != 0 or session.testsfailed or not _whole_suite(config):
            return
        if folder is not None:
            keys, problems = set(), []
            for found in sorted(folder.glob("*.json")):
                part = json.loads(found.read_text())
                keys.update(part["said"])
                problems += part["problems"]
            problems = unsaid(Renderer(), keys) + problems
        else:
            problems = RENDERED.catalog_problems(Renderer())
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    config.stash[_CATALOG] = problems
    if problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_CATALOG = pytest.StashKey[list[str]]()
_SAID_DIR = pytest.StashKey[Path]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    problems = config.stash.get(_CATALOG, None)
    if problems is None:
        return
    if not problems:
        terminalreporter.write_line("message catalog: every key said and rendered in every "
                                    "locale and format")
        return
    terminalreporter.section("message catalog", red=True)
    for problem in problems:
        terminalreporter.write_line(problem)
    terminalreporter.write_line(f"{len(problems)} problem(s): each key needs a test that makes "
                                "the bot say it (see tests/conftest.py)", red=True)


@pytest.fixture(autouse=True)
def nothing_left_open() -> Iterator[None]:
    """A store connection that a test or the bot left open is found in that very test: when
    an SQLite connection's worker thread still runs after every other fixture's teardown, the
    garbage is collected here, and the connection's ResourceWarning fails this test instead of
    whichever later test the garbage collector happened to run in."""
    yield
    if any(t.name.endswith("(_connection_worker_thread)") for t in threading.enumerate()):
        gc.collect()


@pytest.fixture(autouse=True)
def replies_render_and_platforms_accept_them() -> Iterator[None]:
    """A reply that does not render, or a payload the fake Telegram or Slack refused, fails
    the test that caused it."""
    validate.take_refusals()
    RENDERED.take_broken()
    yield
    broken = RENDERED.take_broken()
    if broken:
        pytest.fail("a reply of the core does not render:\n  " + "\n  ".join(broken),
                    pytrace=False)
    refusals = validate.take_refusals()
    if refusals:
        pytest.fail("the platform refused what the bot sent:\n" + "\n".join(
            f"  {r.platform} {r.method}: {r.error}" for r in refusals), pytrace=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(make_url(PG_URL).set(drivername="postgresql")
                                 .render_as_string(hide_password=False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion from sync code, even while a test's loop is running."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A database of this test session's own on the test PostgreSQL, migrated once."""
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("FPBOT_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set")
        pytest.skip("no TEST_DATABASE_URL: PostgreSQL tests run under tests/run.sh")
    name = f"fpbot_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    _run(_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    async def migrate() -> None:
        database = Database(url, pooled=False)
        await upgrade(database)
        await database.dispose()

    _run(migrate())
    yield url
    _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Database]:
    """A migrated, empty store: a fresh SQLite file, or this session's PostgreSQL emptied."""
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'fpbot.db'}")
        await upgrade(database)
    else:
        database = Database(request.getfixturevalue("pg_url"), pooled=False)
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        async with database.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
async def demo_db(db: Database, clock: FrozenClock) -> Database:
    """The store with the 78 members, the 2017-2019 chairs and the demo people."""
    async with db.transaction() as session:
        _, report = await load_demo(session, clock.now())
    assert report.ok, report.errors
    return db


@pytest.fixture
def renderer() -> Renderer:
    return Renderer()


@pytest.fixture
def core(demo_db: Database, clock: FrozenClock, renderer: Renderer) -> Core:
    return Core(demo_db, COMMANDS, FORMS, clock=clock, renderer=renderer, free_text=FREE_TEXT)


class Transcript:
    """A conversation with the core, read like a chat: `say`, then look at the replies.

    Each reply, and each notice the turn queued for someone else, is rendered as it is
    recorded in every format (`render_everywhere`): a broken template fails the test here.
    """

    def __init__(self, core: Core, renderer: Renderer) -> None:
        self.core = core
        self.renderer = renderer
        self.replies: list[Outgoing] = []
        self.notices: list[Outgoing] = []  # queued for others by the last turn
        self.texts: list[dict[str, str]] = []  # the replies, rendered: {format: text}
        self._outbox_seen = 0

    async def say(self, text: str = "", *, as_: str, platform: str = "console",
                  private: bool = True, **fields: Any) -> list[Outgoing]:
        """Send `text` from the account `as_` (on the console: a roster e-mail binds itself)."""
        if platform == "console" and "@" in as_:
            await self.core.console_identity(as_)
        inc = Incoming(platform=platform, user_id=as_, chat_id=as_, text=text,
                       private=private, **fields)
        replies = await self.core.handle(inc)
        self.texts = [render_everywhere(self.renderer, r, _locale_of(r)) for r in replies]
        self.replies = replies
        self.notices = await self._queued_notices()
        return self.replies

    async def _queued_notices(self) -> list[Outgoing]:
        async with self.core.db.transaction() as session:
            rows = list(await session.scalars(
                select(OutboxItem).where(OutboxItem.id > self._outbox_seen).order_by(OutboxItem.id)))
        if rows:
            self._outbox_seen = rows[-1].id
        notices = [Outgoing.from_dict(row.message) for row in rows]
        for notice in notices:
            render_everywhere(self.renderer, notice, _locale_of(notice))
        return notices

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.replies]

    def last(self) -> Outgoing:
        assert self.replies, "the bot said nothing"
        return self.replies[-1]

    def text(self, index: int = -1, fmt: str = "plain") -> str:
        """A reply as a person reads it, in `fmt` (with any field errors, as adapters show it)."""
        return self.texts[index][fmt]


def _locale_of(out: Outgoing) -> str:
    return str(out.context.get("locale") or "en")


@pytest.fixture
def chat(core: Core, renderer: Renderer) -> Transcript:
    return Transcript(core, renderer)


FP_CHILE = "fp.chile@demo.invalid"
COORDINATOR = "coordinator@demo.invalid"
FP_GERMANY = "fp.germany@demo.invalid"
