"""Recovery after `kill -9`, measured from the outside with real `fpbot run` processes.

    python benchmarks/recovery.py [--people 2000] [--kill-after 700] [--database-url URL]

N people write `/help` to the bot at once (Telegram polling against the fake Bot API of
tests/fakes); once `--kill-after` of them have been answered the process is killed with
SIGKILL and started again. The script waits until every person has an answer, then reports
how many were answered once, twice or never, and how long the restart took to finish.
Telegram's own pace applies (about 30 messages a second), so 2,000 answers take a minute or so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from handlers.clock import SystemClock  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.demo import load_demo  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.fakes.telegram_api import FakeBotAPI  # noqa: E402

TOKEN = "123:recovery"
FIRST_CHAT = 10_000


def answered(fake: FakeBotAPI) -> Counter[int]:
    return Counter(int(c.params["chat_id"]) for c in fake.calls_to("sendMessage")
                   if c.status == 200)


async def start(workdir: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TELEGRAM_", "SLACK_", "DATABASE_URL", "FPBOT_"))}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", cwd=workdir, env={**clean, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def main(people: int, kill_after: int, url: str | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = url or f"sqlite+aiosqlite:///{workdir / 'fpbot.db'}"
        db = Database(url)
        await upgrade(db)
        async with db.transaction() as session:
            await load_demo(session, SystemClock().now())
        await db.dispose()
        async with FakeBotAPI(TOKEN) as fake:
            env = {"DATABASE_URL": url, "TELEGRAM_TOKEN": TOKEN,
                   "TELEGRAM_API_URL": f"{fake.url}/bot", "FPBOT_LOG_LEVEL": "WARNING"}
            chats = range(FIRST_CHAT, FIRST_CHAT + people)
            for chat in chats:
                fake.push_update(fake.message_update(chat, "/help"))
            began = time.monotonic()
            proc = await start(workdir, env)
            while sum(1 for n in answered(fake).values() if n) < kill_after:
                await asyncio.sleep(0.01)
            proc.kill()
            await proc.wait()
            killed_at = time.monotonic()
            before = sum(answered(fake).values())
            proc = await start(workdir, env)
            first_after: float | None = None
            while len(answered(fake)) < people:
                if first_after is None and sum(answered(fake).values()) > before:
                    first_after = time.monotonic() - killed_at
                if time.monotonic() - killed_at > 600:
                    break
                await asyncio.sleep(0.05)
            done_after = time.monotonic() - killed_at
            await asyncio.sleep(2.0)  # anything sent twice shows up now
            proc.terminate()
            await proc.wait()
        counts = answered(fake)
    once = sum(1 for c in chats if counts[c] == 1)
    twice = sum(1 for c in chats if counts[c] > 1)
    never = sum(1 for c in chats if counts[c] == 0)
    print(f"{people} people wrote; killed (SIGKILL) after {before} answers, "
          f"{killed_at - began:.1f} s in")
    print(f"after the restart: first answer {first_after or 0:.1f} s after the kill, "
          f"all answered {done_after:.1f} s after the kill")
    print(f"answered once: {once}   more than once: {twice}   never: {never}")
    return 0 if never == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--kill-after", type=int, default=700)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.people, args.kill_after, args.database_url)))
