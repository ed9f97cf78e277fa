"""Real `fpbot` processes for the benchmarks, started the way `tests/test_telegram_cli.py::fpbot`
starts them (`python -m bot.cli`, a clean environment) but logging to a file (a pipe nobody
reads fills up and stalls a process that logs every 429), and always ended: `async with`
kills whatever is still running on the way out, error or not, so no benchmark leaves an orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

PREFIXES = ("TELEGRAM_", "SLACK_", "DATABASE_URL", "FPBOT_")  # never inherited from our env


class BotProcess:
    """One `fpbot <args>` process in `folder`, with `env` on top of a clean environment."""

    def __init__(self, folder: Path, env: dict[str, str], *args: str, log: Path) -> None:
        self.folder, self.env, self.args, self.log = folder, env, args, log
        self.proc: asyncio.subprocess.Process | None = None
        self._out: IO[bytes] | None = None

    async def start(self) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
        self._out = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", *self.args, cwd=self.folder,
            env={**clean, "PYTHONFAULTHANDLER": "1", **self.env},  # a crash shows where
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._out, stderr=asyncio.subprocess.STDOUT)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        """Its exit status (negative: the signal that ended it), None while it runs."""
        return self.proc.returncode if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL (`kill -9`), and reap it."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM and wait `grace` seconds for a clean stop; SIGKILL after that."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                await self.kill()
        return self.proc.returncode

    def tail(self, chars: int = 1500) -> str:
        """The end of what the process logged."""
        if self._out is not None:
            self._out.flush()
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-chars:]

    async def __aenter__(self) -> BotProcess:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                await self.stop()
            else:
                await self.kill()
        finally:
            if self._out is not None:
                self._out.close()
                self._out = None
