"""Recovery after `kill -9`, measured from the outside with real `fpbot run` processes.

    python benchmarks/recovery.py [--people 2000] [--kill-after 700] [--database-url URL]

N people write `/help` to the bot at once (Telegram polling against the fake Bot API of
tests/fakes, in a process of its own); once `--kill-after` of them have been answered the
process is killed with SIGKILL and started again. The script waits until every person has an
answer, then reports how many were answered once, twice or never, and how long the restart
took to finish. Telegram's own pace applies (about 30 messages a second), so 2,000 answers
take a minute or so.

As a benchmark of the suite (`run(opts)`, `python -m benchmarks --only recovery`): the same,
on SQLite and on PostgreSQL, 600 people killed after 200 answers (100 and 35 with
`--quick`), once per database. Targets: the first pending reply out within 10 s of the
restart, the last one within 10 s of what Telegram's pace allows (pending / 30 s), none
never answered.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Figure, Options  # noqa: E402
from benchmarks.fake_telegram import FakeTelegram, notice_texts  # noqa: E402
from benchmarks.processes import (  # noqa: E402
    BenchmarkFailed,
    Processes,
    clean_env,
    progress,
)
from benchmarks.stores import demo_store, sqlite_url  # noqa: E402

NAME = "recovery"
TOKEN = "123:recovery"
FIRST_CHAT = 10_000
TELEGRAM_PACE = 30.0  # messages a second
GIVE_UP = 600.0  # seconds after the kill


@dataclass
class Recovery:
    """One kill and restart."""

    people: int
    answered_at_kill: int  # replies out when the process was killed
    kill_at: float  # seconds from the first start to the kill
    first_after_kill: float | None
    done_after_kill: float
    first_after_restart: float | None
    done_after_restart: float
    once: int
    twice: int
    never: int
    notices: int = 0  # apologies or "slow down" sent besides the answers

    @property
    def pending(self) -> int:
        return self.people - self.answered_at_kill


async def measure(people: int, kill_after: int, url: str, workdir: Path) -> Recovery:
    """Load the demo into `url`, start `fpbot run`, kill it after `kill_after` answers,
    start it again and wait until everyone is answered."""
    await demo_store(url, datetime.now(UTC), focal_points=False)
    chats = range(FIRST_CHAT, FIRST_CHAT + people)
    async with Processes(workdir) as procs:
        fake = await FakeTelegram.start(procs, "fake-recovery", TOKEN, notice_texts())
        try:
            env = clean_env(DATABASE_URL=url, TELEGRAM_TOKEN=TOKEN,
                            TELEGRAM_API_URL=fake.api_url, FPBOT_LOG_LEVEL="WARNING")
            await fake.push([(n + 1, chat, "/help") for n, chat in enumerate(chats)])
            began = time.monotonic()
            bot = await procs.python("fpbot-run", "bot.cli", "run", env=env)
            while (stats := await fake.stats(brief=True)).answered < kill_after:
                bot.check_alive()
                if time.monotonic() - began > GIVE_UP:
                    raise BenchmarkFailed(f"only {stats.answered} answered before the kill")
                await asyncio.sleep(0.01)
            bot.kill()  # SIGKILL
            await bot.process.wait()
            killed_at = time.monotonic()
            before = (await fake.stats(brief=True)).sent
            bot = await procs.python("fpbot-run", "bot.cli", "run", env=env)
            restarted_at = time.monotonic()
            first: float | None = None
            while (stats := await fake.stats(brief=True)).answered < people:
                if first is None and stats.sent > before:
                    first = stats.last_reply
                bot.check_alive()
                if time.monotonic() - killed_at > GIVE_UP:
                    break
                await asyncio.sleep(0.05)
            if first is None and stats.sent > before:
                first = stats.last_reply
            done = stats.last_reply
            await asyncio.sleep(2.0)  # anything sent twice shows up now
            final = await fake.stats()
            counts, notices = final.replies, sum(final.notices.values())
            await bot.stop()
        finally:
            await fake.close()
    once = sum(1 for c in chats if counts.get(str(c), 0) == 1)
    twice = sum(1 for c in chats if counts.get(str(c), 0) > 1)
    never = sum(1 for c in chats if counts.get(str(c), 0) == 0)
    return Recovery(people, before, killed_at - began,
                    None if first is None else first - killed_at, done - killed_at,
                    None if first is None else first - restarted_at, done - restarted_at,
                    once, twice, never, notices)


def figures(database: str, r: Recovery | None, error: str = "") -> list[Figure]:
    names = [f"restart → first pending reply ({database})",
             f"restart → last pending reply ({database})",
             f"answered never ({database})", f"answered more than once ({database})"]
    if r is None:
        return [Figure(NAME, name, None, note=error) for name in names]
    floor = r.pending / TELEGRAM_PACE
    run = f"{r.people} people, killed (SIGKILL) after {r.answered_at_kill} answers"
    return [
        Figure(NAME, names[0], r.first_after_restart, unit="s", target="< 10 s",
               met=r.first_after_restart is not None and r.first_after_restart < 10,
               note=f"{run}; from spawning the new process"),
        Figure(NAME, names[1], r.done_after_restart, unit="s",
               target=f"≤ {floor + 10:.0f} s (pace + 10 s)",
               met=r.never == 0 and r.done_after_restart <= floor + 10,
               note=f"{r.pending} pending at 30 messages/s take ≥ {floor:.0f} s"),
        Figure(NAME, names[2], r.never, unit="people", target="0", met=r.never == 0,
               note=f"{r.once} answered exactly once"),
        Figure(NAME, names[3], r.twice, unit="people",
               note="at-least-once window: sends Telegram took just before the kill; "
                    f"notices besides the answers: {r.notices}"),
    ]


async def run(opts: Options) -> list[Figure]:
    people, kill_after = (100, 35) if opts.quick else (600, 200)
    found: list[Figure] = []
    for database, url in (("SQLite", sqlite_url(opts.workdir / "recovery.db")),
                          ("PostgreSQL", opts.pg_url)):
        if url is None:
            found += figures(database, None, "no PostgreSQL to measure on")
            continue
        progress(f"recovery ({database}): {people} people, kill after {kill_after} answers")
        workdir = opts.workdir / f"recovery-{database.lower()}"
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            found += figures(database, await measure(people, kill_after, url, workdir))
        except BenchmarkFailed as exc:
            print(f"recovery ({database}) FAILED: {exc}\n{exc.detail}", file=sys.stderr)
            found += figures(database, None, f"FAILED: {exc}")
    return found


async def main(people: int, kill_after: int, url: str | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        r = await measure(people, kill_after, url or sqlite_url(workdir / "fpbot.db"), workdir)
    print(f"{people} people wrote; killed (SIGKILL) after {r.answered_at_kill} answers, "
          f"{r.kill_at:.1f} s in")
    print(f"after the restart: first answer {r.first_after_kill or 0:.1f} s after the kill, "
          f"all answered {r.done_after_kill:.1f} s after the kill")
    print(f"answered once: {r.once}   more than once: {r.twice}   never: {r.never}"
          + (f"   (and {r.notices} notices besides the answers)" if r.notices else ""))
    return 0 if r.never == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--kill-after", type=int, default=700)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.people, args.kill_after, args.database_url)))
