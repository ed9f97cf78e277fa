"""The processes a benchmark starts: started with their logs in files, measured from /proc,
and all stopped on the way out, whatever happened (no orphans).

    async with Processes(workdir) as procs:
        bot = await procs.start("fpbot-serve", [sys.executable, "-m", "bot.cli", "serve"], env)
        bot.cpu_seconds(), bot.rss_mib()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
PLATFORM_VARS = ("TELEGRAM_", "SLACK_", "DATABASE_URL", "FPBOT_", "PYTHONPATH")


class BenchmarkFailed(RuntimeError):
    """The benchmark saw something wrong (an update unanswered, a process gone): no figure.
    The message is one line for the table; `detail` (log tails) is for the console."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


_T0 = time.monotonic()


def progress(what: str) -> None:
    """One line on stderr: where a benchmark is, so that a long run shows it is alive."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {what}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**more: str) -> dict[str, str]:
    """This environment without any platform token or store URL, plus `more`; the repository
    on PYTHONPATH so that `python -m benchmarks.…` and `tests.fakes` import from any cwd, and
    faulthandler on, so that a process that crashes says where in its log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PLATFORM_VARS)}
    return {**env, "PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1", **more}


class Proc:
    """One started process, its log file, and what /proc says about it."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name, self.process, self.log = name, process, log

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (/proc/<pid>/stat utime + stime)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mib(self) -> float:
        """Resident set size now (/proc/<pid>/status VmRSS), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise BenchmarkFailed(f"{self.name}: no VmRSS in /proc/{self.pid}/status")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive:
            raise BenchmarkFailed(f"{self.name} exited with {self.process.returncode}",
                                  self.log_tail())

    async def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit code."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.kill()
        return await self.process.wait()

    def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()


class Processes:
    """Starts processes and stops every one still running when the block ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Proc] = []

    async def start(self, name: str, argv: Sequence[str], env: Mapping[str, str],
                    *, cwd: Path | None = None) -> Proc:
        n = sum(1 for p in self.started if p.name == name)
        log = self.workdir / f"{name}-{n}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd or self.workdir, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT)
        proc = Proc(name, process, log)
        self.started.append(proc)
        return proc

    async def python(self, name: str, module: str, *args: str, env: Mapping[str, str]) -> Proc:
        """`python -m module args` with this interpreter (the worktree's virtualenv)."""
        return await self.start(name, [sys.executable, "-m", module, *args], env)

    async def stop_all(self) -> None:
        running = [p for p in self.started if p.alive]
        await asyncio.gather(*(p.stop(timeout=10) for p in running), return_exceptions=True)
        for p in running:
            p.kill()

    async def __aenter__(self) -> Processes:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await asyncio.shield(self.stop_all())
        finally:
            for p in self.started:  # cancelled while stopping: leave none behind
                p.kill()


async def wait_healthy(proc: Proc, port: int, timeout: float = 60.0) -> None:
    """Wait until the HTTP server of `proc` on `port` answers GET /healthz with 200."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            proc.check_alive()
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(f"http://127.0.0.1:{port}/healthz",
                                    timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            if time.monotonic() > deadline:
                raise BenchmarkFailed(f"{proc.name} did not answer /healthz within {timeout:.0f} s",
                                      proc.log_tail())
            await asyncio.sleep(0.1)
