"""`fpbot run` and `fpbot serve` as real processes, against the fake Bot API: /start CODE gets a
welcome by polling and by webhook, and nothing the process logs shows the token.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from handlers.clock import SystemClock
from storage.db import Database
from storage.demo import load_demo
from storage.invitations import create_invitation
from storage.migrate import upgrade
from storage.models import Person
from tests.conftest import FP_CHILE
from tests.fakes.telegram_api import FakeBotAPI

TOKEN = "123:abc"
SECRET = "hook-secret_1"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(TOKEN) as server:
        yield server


async def demo_store(path: Path) -> tuple[str, str]:
    """A SQLite store with the demo people; returns its URL and an invitation code."""
    url = f"sqlite+aiosqlite:///{path}"
    db = Database(url)
    try:
        await upgrade(db)
        now = SystemClock().now()
        async with db.transaction() as session:
            await load_demo(session, now)
        async with db.transaction() as session:
            person = await session.scalar(select(Person).where(Person.email == FP_CHILE))
            assert person is not None
            code, _ = await create_invitation(session, person.id, "invite", now=now,
                                              ttl=timedelta(days=1))
    finally:
        await db.dispose()
    return url, code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fpbot(tmp_path: Path, env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TELEGRAM_", "SLACK_", "DATABASE_URL", "FPBOT_"))}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", *args, cwd=tmp_path, env={**clean, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def serving(port: int, timeout: float = 30) -> None:
    """Wait until an `fpbot serve` on `port` answers /healthz (a starting process's port:
    nothing to wait on but the port itself)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert loop.time() < deadline, f"fpbot serve on port {port} did not come up"
            await asyncio.sleep(0.1)


async def finish(proc: asyncio.subprocess.Process) -> str:
    """SIGTERM, wait, and return what the process logged."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    return err.decode()


async def test_fpbot_run_polls_and_welcomes(tmp_path: Path, fake: FakeBotAPI) -> None:
    url, code = await demo_store(tmp_path / "fpbot.db")
    proc = await fpbot(tmp_path, {"DATABASE_URL": url, "TELEGRAM_TOKEN": TOKEN,
                                  "TELEGRAM_API_URL": f"{fake.url}/bot",
                                  "FPBOT_LOG_LEVEL": "DEBUG"}, "run")
    try:
        fake.push_update(fake.message_update(42, f"/start {code}"))
        [welcome] = await fake.wait_for("sendMessage", timeout=20)
    finally:
        logged = await finish(proc)
    assert "Welcome, " in welcome.params["text"], logged
    assert proc.returncode == 0, logged
    assert "telegram adapter started (polling)" in logged
    assert TOKEN not in logged


async def test_fpbot_serve_takes_webhooks_and_welcomes(tmp_path: Path, fake: FakeBotAPI) -> None:
    url, code = await demo_store(tmp_path / "fpbot.db")
    port = free_port()
    proc = await fpbot(tmp_path, {"DATABASE_URL": url, "TELEGRAM_TOKEN": TOKEN,
                                  "TELEGRAM_API_URL": f"{fake.url}/bot",
                                  "TELEGRAM_WEBHOOK_SECRET": SECRET, "FPBOT_LOG_LEVEL": "DEBUG"},
                       "serve", "--port", str(port))
    update = {"update_id": 1, **fake.message_update(42, f"/start {code}")}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            forged = await client.post("/telegram/webhook", json=update)
            assert forged.status_code == 403
            ok = await client.post("/telegram/webhook", json=update,
                                   headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
            assert ok.status_code == 200
            [welcome] = await fake.wait_for("sendMessage", timeout=20)
    finally:
        logged = await finish(proc)
    assert "Welcome, " in welcome.params["text"], logged
    assert TOKEN not in logged and SECRET not in logged


async def test_fpbot_run_with_a_rejected_token_says_so_without_it(
        tmp_path: Path, fake: FakeBotAPI) -> None:
    url, _ = await demo_store(tmp_path / "fpbot.db")
    proc = await fpbot(tmp_path, {"DATABASE_URL": url, "TELEGRAM_TOKEN": "123:wrong",
                                  "TELEGRAM_API_URL": f"{fake.url}/bot",
                                  "FPBOT_LOG_LEVEL": "DEBUG"}, "run")
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    logged = err.decode()
    assert proc.returncode != 0
    assert "rejected TELEGRAM_TOKEN" in logged and "123:wrong" not in logged


async def test_fpbot_telegram_set_webhook(tmp_path: Path, fake: FakeBotAPI) -> None:
    from bot import cli

    if "telegram" not in cli.COMMANDS:
        pytest.skip("`fpbot telegram set-webhook` is not wired into bot/cli.py yet")
    url, _ = await demo_store(tmp_path / "fpbot.db")
    proc = await fpbot(tmp_path, {"DATABASE_URL": url, "TELEGRAM_TOKEN": TOKEN,
                                  "TELEGRAM_API_URL": f"{fake.url}/bot",
                                  "TELEGRAM_WEBHOOK_SECRET": SECRET},
                       "telegram", "set-webhook", "https://bot.example.org")
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert fake.webhook_url == "https://bot.example.org/telegram/webhook"
    assert fake.webhook_secret == SECRET
    assert "https://bot.example.org/telegram/webhook" in out.decode()
    assert TOKEN not in out.decode() + err.decode()
